//! Credential health: what a classified failure means for later requests.
//!
//! [`state`] is the per-scope state machine, [`policy`] the per-class numbers, [`engine`]
//! keeps every scope's record, takes verdicts, successes and probe outcomes, detects
//! provider-wide auth incidents, and selects candidates for requests; [`budget`] bounds
//! retries per request and across the gateway.

pub mod budget;
pub mod clock;
pub mod engine;
pub use engine::NullSink;
pub mod policy;
pub mod scope;
pub mod state;

pub use clock::{Clock, ManualClock, Timestamp};
pub use engine::{
    Ack, AttemptScope, Candidate, CandidateState, CredentialSpec, DisabledInfo, Headroom,
    HealthEngine, IncidentEvent, IncidentInfo, ProbeKind, ProbeRequest, RequestSpec, RouteSpec,
    Selection, SinkError, Skipped, TargetSpec, Transition, TransitionSink, Unavailable,
};
pub use policy::{Backoff, ClassPolicy, Effect, Policy};
pub use scope::ScopeKey;
pub use state::{Actor, Event, Health, ProbeOutcome, Record, Step, Strikers};
