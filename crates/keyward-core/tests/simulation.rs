#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
//! Deterministic simulation of the health engine (in the style of FoundationDB's
//! simulation and TigerBeetle's VOPR): one seed decides everything — the topology, the
//! world's schedule of revocations, rotations, outages, rate limits and credit, the
//! traffic, every latency — and the real [`HealthEngine`] is driven through it on a
//! [`ManualClock`]. No sockets, no threads, no wall clock: a seed replays exactly.
//!
//! The *world* is the truth (which key is revoked, which endpoint is in an auth outage);
//! the engine only sees what the gateway would see: classified failures (built with the
//! real classifier from realistic provider responses), successes and probe outcomes.
//! Requests are concurrent: each is select → admit → (time passes, other requests and
//! probes interleave) → the world answers at completion → record, with the gateway's
//! failover loop (`serve_inner`) mirrored: bounded attempts, one retry on the same
//! credential when the policy says so, an OAuth refresh on an expired token, one
//! re-selection, one wait for an imminent recovery. Probes are whatever `due_probes`
//! returns, run against the world, with the gateway's control call on a healthy sibling
//! for a confirmed auth verdict.
//!
//! Invariants, checked after every step (see `docs/health.md`, "Simulation"):
//! - (a) a request fails only if no candidate could have served it: none of its route's
//!   candidates had been answering correctly in the world for `CLEAN_MS` (longer than
//!   every legitimate recovery; after a top-up, `billing_recheck`; on an endpoint too
//!   small to show an incident, the hourly re-check), or its attempt cap was spent;
//! - (b) a revoked credential gets no request admitted after its first failure was
//!   recorded (only those in flight then), and its probes stay bounded (at most one per
//!   `probe_retry`, plus one);
//! - (c) an auth outage of every key of an endpoint (with at least `incident_credentials`
//!   keys that take traffic: routed, not disabled before it began) disables nothing while
//!   it lasts less than `incident_max`, and traffic resumes within `incident_cooldown`
//!   (+ probe delay) after it heals;
//! - (d) a single spurious 401 disables nothing;
//! - (e) every caller-facing "unavailable" names every candidate of the route;
//! - (f) replaying the persisted transitions, in order, into a fresh engine (`restore`)
//!   gives the state `snapshot` shows;
//! - (g) no valid credential is left disabled outside an outage (an outage longer than
//!   `incident_max` may disable keys, which come back within `incident_recheck` after it
//!   heals), and nothing is disabled for a transient class;
//! - (h) engine consistency: every credential's in-flight count equals the attempts the
//!   simulation holds on it, and no request makes more than `MAX_ATTEMPTS` attempts;
//! - (r) a caller is told "do not retry" only when no candidate is merely suspect while
//!   valid in the world (its probe would put it back within seconds).
//!
//! Running it:
//! - `cargo test -p keyward-core --test simulation` runs `DEFAULT_SEEDS` seeds;
//! - `KEYWARD_SIM_SEEDS=<count>` runs a longer campaign (`KEYWARD_SIM_FIRST=<n>` moves
//!   its start);
//! - `KEYWARD_SIM_SEED=<n>` replays one seed alone, with a step-by-step trace on
//!   `KEYWARD_SIM_TRACE=1`;
//! - `KEYWARD_SIM_LIST=1` prints every failing seed's violations (not the first few).
//!
//! A failing seed prints itself, the first violation of each invariant, and the one-line
//! replay command. Checks listed in `KNOWN_FAILING` are still run and reported, but do
//! not fail the default run; `KEYWARD_SIM_ENFORCE=<letters>` makes those listed fail it,
//! `KEYWARD_SIM_STRICT=1` every one.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use keyward_core::classify::{classify, Attempt, Class, CredentialKind, Failure, Provider};
use keyward_core::health::budget::RequestBudget;
use keyward_core::health::{
    Ack, AttemptScope, Candidate, CredentialSpec, Health, HealthEngine, ManualClock, Policy,
    ProbeKind, ProbeOutcome, ProbeRequest, RequestSpec, RouteSpec, ScopeKey, Selection, TargetSpec,
    Timestamp, Transition, TransitionSink, Unavailable,
};

/// Seeds in the default `cargo test` run (sized to about a minute in the test profile on
/// a 2-core machine; see the module doc).
const DEFAULT_SEEDS: u64 = 2000;

/// Invariants that still fail on some schedules of the current engine: checked and
/// reported, not failing the default run. `KEYWARD_SIM_ENFORCE=<letters>` makes the listed
/// ones fail it (`KEYWARD_SIM_ENFORCE=c`), `KEYWARD_SIM_STRICT=1` all of them. Remove a
/// letter once its cause is fixed. Over the 2,000 default seeds:
/// - (c) 18 seeds, (g) 15, (a) 1 — a provider auth outage mixed with real revocations or
///   other failures: the incident probe (one key per `incident_cooldown`, taking turns)
///   may spend turns on keys that are really revoked, so a valid key comes back later
///   than one cooldown after the heal (206, 264, 753); a suspect confirmed during an
///   outage while no healthy sibling of its kind is left for the control call is disabled
///   on the hourly curve (204, 432, 626, 795); a key an outage kept rejected past
///   `incident_max` is disabled and back only at its re-check, which may fall more than
///   `incident_recheck` after the heal when the outage outlasted the sweep (113, 342).
/// - (r) 117 seeds — by design (issue 15's decision table): a suspect after a
///   high-confidence revocation verdict counts as permanent, so a one-key route answers
///   `x-should-retry: false` even when that 401 was an outage's and its probe will
///   refute it seconds later. The check stays to measure how often that happens.
///
/// Fixed since the first run: (f) the stores now follow the engine's denylist decision
/// (`Transition::deny`); (h) a reload carries in-flight counts over; (c) an incident
/// past `incident_max` probes every suspect once instead of disabling on the bound.
const KNOWN_FAILING: &[char] = &['a', 'c', 'g', 'r'];

/// The gateway's default attempt cap (`limits.max_attempts`).
const MAX_ATTEMPTS: u32 = 6;
/// The gateway's default request deadline.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// The gateway waits once for a recovery this close (`MAX_WAIT_FOR_RECOVERY`).
const MAX_WAIT_FOR_RECOVERY: Duration = Duration::from_secs(10);
/// The prober's tick.
const PROBE_TICK_MS: u64 = 500;
/// The longest a call (request attempt or probe) takes in the simulated world.
const MAX_LATENCY_MS: u64 = 3_000;
/// How long a candidate must have answered correctly in the world to count as one that
/// "could have served" a request (a): longer than every legitimate way back — an
/// inconclusive probe's longest retry (`probe_retry_max`, 5 min), the incident re-check
/// (5 min) — plus probe latency.
const CLEAN_MS: u64 = 400_000;
/// Slack for "within X after it heals": a prober tick, a probe and its control call.
const SLACK_MS: u64 = 2 * PROBE_TICK_MS + 2 * MAX_LATENCY_MS + 1_000;
/// The incident bounds of the target engine (policy fields `incident_max` and
/// `incident_recheck`, defaults).
const INCIDENT_MAX_MS: u64 = 120_000;
const INCIDENT_RECHECK_MS: u64 = 300_000;

const T0: u64 = 1_751_278_440_000;

// ---------------------------------------------------------------------------------------
// Randomness: SplitMix64, one stream per seed.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// The persisted transitions.

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Transition>>);

impl TransitionSink for Recorder {
    fn enqueue(&self, t: Transition) -> Ack {
        self.0.lock().unwrap().push(t);
        Ack::done()
    }
}

// ---------------------------------------------------------------------------------------
// Provider responses: what the world answers, as the wire would carry it.

const ANTHROPIC_INVALID: &str =
    r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
const ANTHROPIC_TOKEN_EXPIRED: &str = r#"{"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired. Please obtain a new token or refresh your existing token."}}"#;
const ANTHROPIC_OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const ANTHROPIC_RATE: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
const ANTHROPIC_CREDIT: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;
const OPENAI_INVALID: &str = r#"{"error":{"message":"Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const OPENAI_TOKEN_EXPIRED: &str = r#"{"error":{"message":"Provided authentication token is expired. Please try signing in again.","type":null,"code":"token_expired","param":null}}"#;
const OPENAI_OVERLOADED: &str = r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#;
const OPENAI_RATE: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 500, Used 500, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
const OPENAI_CREDIT: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

/// Why the world refused a call (the simulation's own label, for traces and checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Revoked,
    Outage,
    TokenExpired,
    Spurious,
    Overloaded,
    RateLimited,
    NoCredit,
}

/// A provider's answer to a call that failed: status, headers, body.
fn response(
    provider: Provider,
    kind: CredentialKind,
    why: Refusal,
    retry_after_s: u64,
    now_ms: u64,
) -> Failure {
    let anthropic = provider == Provider::Anthropic;
    let (status, body) = match (why, anthropic) {
        (Refusal::Revoked | Refusal::Outage | Refusal::Spurious, true) => (401, ANTHROPIC_INVALID),
        (Refusal::Revoked | Refusal::Outage | Refusal::Spurious, false) => (401, OPENAI_INVALID),
        (Refusal::TokenExpired, true) => (401, ANTHROPIC_TOKEN_EXPIRED),
        (Refusal::TokenExpired, false) => (401, OPENAI_TOKEN_EXPIRED),
        (Refusal::Overloaded, true) => (529, ANTHROPIC_OVERLOADED),
        (Refusal::Overloaded, false) => (503, OPENAI_OVERLOADED),
        (Refusal::RateLimited, true) => (429, ANTHROPIC_RATE),
        (Refusal::RateLimited, false) => (429, OPENAI_RATE),
        (Refusal::NoCredit, true) => (400, ANTHROPIC_CREDIT),
        (Refusal::NoCredit, false) => (429, OPENAI_CREDIT),
    };
    let retry = retry_after_s.to_string();
    let headers: Vec<(&str, &str)> = if why == Refusal::RateLimited {
        vec![("retry-after", retry.as_str())]
    } else {
        Vec::new()
    };
    classify(
        &Attempt::response(provider, status, body.as_bytes())
            .credential(kind)
            .headers(&headers)
            .at(UNIX_EPOCH + Duration::from_millis(T0 + now_ms)),
    )
}

// ---------------------------------------------------------------------------------------
// Topology and world.

#[derive(Debug, Clone)]
struct Endpoint {
    id: Arc<str>,
    provider: Provider,
    models: Vec<Arc<str>>,
    /// Provider-wide auth outages, in order.
    outages: Vec<Outage>,
    overload_until: u64,
    /// The last time anything about this endpoint was wrong in the world.
    last_bad: u64,
}

impl Endpoint {
    fn in_outage(&self) -> bool {
        self.outages.last().is_some_and(|o| o.end.is_none())
    }
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    start: u64,
    end: Option<u64>,
    /// The fewest keys the endpoint had in rotation-capable states (configured, not
    /// disabled) while it lasted.
    min_keys: usize,
}

#[derive(Debug, Clone)]
struct Cred {
    id: Arc<str>,
    endpoint: usize,
    oauth: bool,
    fingerprint: Arc<str>,
    configured: bool,
    revoked_at: Option<u64>,
    rate_until: u64,
    no_credit: bool,
    /// When credit last ran out (for billing disables).
    credit_out_at: Option<u64>,
    token_expired: bool,
    spurious_pending: bool,
    spurious_at: Option<u64>,
    added_at: u64,
    last_bad: u64,
    /// (b): when the engine first heard of the revocation (a recorded failure).
    first_failure_after_revoke: Option<u64>,
    probes_after_first_failure: u64,
    /// Attempts the simulation holds on it (admitted, not yet recorded or dropped).
    held: u32,
    /// Since when the engine has had it disabled, without a break.
    disabled_from: Option<u64>,
}

#[derive(Debug, Clone)]
struct Target {
    endpoint: usize,
    model: Arc<str>,
    creds: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Traffic,
    KeyValidity,
    MinimalRequest,
}

// ---------------------------------------------------------------------------------------
// Events.

#[derive(Debug, Clone)]
enum Ev {
    Arrival,
    /// Request `req`'s attempt completes (or its wait for a recovery ends).
    Resume(usize),
    ProbeTick,
    ProbeDone(usize),
    World(WorldEv),
    /// (c): traffic must be back on the endpoint by now, after outage `index` healed.
    ResumeCheck {
        endpoint: usize,
        outage: usize,
    },
}

#[derive(Debug, Clone)]
enum WorldEv {
    Revoke(usize),
    OutageStart(usize),
    OutageEnd(usize),
    Overload {
        endpoint: usize,
        for_ms: u64,
    },
    RateLimit {
        cred: usize,
        for_ms: u64,
    },
    CreditOut(usize),
    TopUp(usize),
    Spurious(usize),
    TokenExpiry(usize),
    /// Rotation: a new key for `old`'s endpoint joins every target `old` is in; `old` is
    /// revoked `revoke_after` later and (maybe) removed from the configuration later still.
    Rotate {
        old: usize,
        revoke_after: u64,
        remove_after: Option<u64>,
    },
    Remove(usize),
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Min-heap on (time, insertion order).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

// ---------------------------------------------------------------------------------------
// Requests and probes in flight.

#[derive(Debug)]
struct Request {
    route: usize,
    spec: RequestSpec,
    cands: Option<Vec<Candidate>>,
    i: usize,
    budget: RequestBudget,
    deadline: Timestamp,
    retried_same: bool,
    refreshed: bool,
    waited: bool,
    failed_once: bool,
    attempt: Option<(AttemptScope, usize)>,
    done: bool,
}

#[derive(Debug)]
struct PendingProbe {
    probe: ProbeRequest,
    cred: usize,
}

/// The first violation of each invariant in one seed.
#[derive(Debug, Default)]
struct Violations(BTreeMap<char, String>);

// ---------------------------------------------------------------------------------------
// The simulation.

struct Sim {
    rng: Rng,
    trace: bool,
    now: u64,
    horizon: u64,
    clock: ManualClock,
    sink: Arc<Recorder>,
    engine: HealthEngine,
    /// The engine's policy.
    policy: Policy,
    /// The design's numbers the invariants are stated in (the default policy), whatever
    /// policy the engine runs.
    design: Policy,
    endpoints: Vec<Endpoint>,
    creds: Vec<Cred>,
    /// Each route's targets (credential indices).
    routes: Vec<Vec<Target>>,
    specs: Vec<RouteSpec>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    requests: Vec<Request>,
    probes: Vec<Option<PendingProbe>>,
    violations: Violations,
    /// (f): transitions replayed so far, as the store would hold them.
    replayed: usize,
    replay: BTreeMap<ScopeKey, (Health, Timestamp)>,
    denylist: BTreeMap<String, (String, String)>,
    arrival_mean_ms: u64,
    stats: Stats,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    requests: u64,
    served: u64,
    failed: u64,
    attempts: u64,
    probes: u64,
    steps: u64,
}

impl Sim {
    fn new(seed: u64, trace: bool, policy: Policy) -> Sim {
        let mut rng = Rng::new(seed);
        let clock = ManualClock::at(Timestamp(T0));
        let sink = Arc::new(Recorder::default());
        let engine = HealthEngine::new(
            policy.clone(),
            Arc::new(clock.clone()),
            sink.clone(),
            rng.next(),
        );
        // Endpoints: 1–3, often two of the same provider kind.
        let n_ep = rng.range(1, 3) as usize;
        let first = *rng.pick(&[Provider::Anthropic, Provider::OpenAi]);
        let mut endpoints = Vec::new();
        for e in 0..n_ep {
            let provider = if e == 0 || rng.chance(60) {
                first
            } else {
                *rng.pick(&[Provider::Anthropic, Provider::OpenAi])
            };
            let n_models = rng.range(1, 2);
            endpoints.push(Endpoint {
                id: format!("ep{e}").into(),
                provider,
                models: (0..n_models).map(|m| Arc::from(format!("m{m}"))).collect(),
                outages: Vec::new(),
                overload_until: 0,
                last_bad: 0,
            });
        }
        let mut creds = Vec::new();
        for (e, _) in endpoints.iter().enumerate() {
            let n = rng.range(1, 8);
            for _ in 0..n {
                let oauth = rng.chance(10);
                push_cred(&mut creds, e, oauth, 0);
            }
        }
        // Routes: 1–3, each 1–3 targets over (endpoint, model, a subset of its keys).
        let n_routes = rng.range(1, 3) as usize;
        let mut routes = Vec::new();
        for _ in 0..n_routes {
            let n_t = rng.range(1, 3) as usize;
            let mut targets: Vec<Target> = Vec::new();
            for _ in 0..n_t {
                let e = rng.below(n_ep as u64) as usize;
                let model = rng.pick(&endpoints[e].models).clone();
                if targets.iter().any(|t| t.endpoint == e && t.model == model) {
                    continue;
                }
                let pool: Vec<usize> = (0..creds.len())
                    .filter(|&c| creds[c].endpoint == e)
                    .collect();
                let mut chosen: Vec<usize> = if rng.chance(60) {
                    pool.clone()
                } else {
                    pool.iter().copied().filter(|_| rng.chance(60)).collect()
                };
                if chosen.is_empty() {
                    chosen.push(*rng.pick(&pool));
                }
                targets.push(Target {
                    endpoint: e,
                    model,
                    creds: chosen,
                });
            }
            routes.push(targets);
        }
        let long_outage = rng.chance(25);
        let horizon = if long_outage { 720_000 } else { 300_000 };
        let arrival_mean_ms = *rng.pick(&[150, 400, 1_000, 3_000]);
        let mut sim = Sim {
            rng,
            trace,
            now: 0,
            horizon,
            clock,
            sink,
            engine,
            policy,
            design: Policy::default(),
            endpoints,
            creds,
            routes,
            specs: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            requests: Vec::new(),
            probes: Vec::new(),
            violations: Violations::default(),
            replayed: 0,
            replay: BTreeMap::new(),
            denylist: BTreeMap::new(),
            arrival_mean_ms,
            stats: Stats::default(),
        };
        sim.configure();
        sim.schedule_world(long_outage);
        sim.at(0, Ev::Arrival);
        sim.at(PROBE_TICK_MS, Ev::ProbeTick);
        sim
    }

    /// The random schedule of world events.
    fn schedule_world(&mut self, long_outage: bool) {
        let active = self.horizon * 6 / 10;
        let n_events = self.rng.range(2, 8);
        let n_ep = self.endpoints.len() as u64;
        for _ in 0..n_events {
            let t = self.rng.range(5_000, active);
            let e = self.rng.below(n_ep) as usize;
            let keys: Vec<usize> = (0..self.creds.len())
                .filter(|&c| self.creds[c].endpoint == e)
                .collect();
            let c = *self.rng.pick(&keys);
            match self.rng.below(11) {
                // Several revocations within seconds, across routes and endpoints.
                0 => {
                    let n = self.rng.range(1, 3);
                    let mut at = t;
                    for _ in 0..n {
                        let c = self.rng.below(self.creds.len() as u64) as usize;
                        self.at(at, Ev::World(WorldEv::Revoke(c)));
                        at += self.rng.range(0, 5_000);
                    }
                }
                1 => {
                    let remove = self.rng.chance(50).then(|| self.rng.range(30_000, 120_000));
                    let revoke_after = self.rng.range(1_000, 20_000);
                    self.at(
                        t,
                        Ev::World(WorldEv::Rotate {
                            old: c,
                            revoke_after,
                            remove_after: remove,
                        }),
                    );
                }
                2 => self.at(t, Ev::World(WorldEv::Spurious(c))),
                // A provider-wide auth outage that heals (short: under incident_max).
                3 => {
                    let len = self.rng.range(5_000, INCIDENT_MAX_MS - 20_000);
                    self.at(t, Ev::World(WorldEv::OutageStart(e)));
                    self.at(t + len, Ev::World(WorldEv::OutageEnd(e)));
                }
                // Every key of an endpoint revoked at once.
                4 => {
                    for k in keys {
                        self.at(t, Ev::World(WorldEv::Revoke(k)));
                    }
                }
                5 => {
                    let for_ms = self.rng.range(1_000, 90_000);
                    self.at(t, Ev::World(WorldEv::RateLimit { cred: c, for_ms }));
                }
                6 => {
                    let for_ms = self.rng.range(1_000, 30_000);
                    self.at(
                        t,
                        Ev::World(WorldEv::Overload {
                            endpoint: e,
                            for_ms,
                        }),
                    );
                }
                7 => {
                    self.at(t, Ev::World(WorldEv::CreditOut(c)));
                    if self.rng.chance(70) {
                        let after = self.rng.range(5_000, 60_000);
                        self.at(t + after, Ev::World(WorldEv::TopUp(c)));
                    }
                }
                8 => self.at(t, Ev::World(WorldEv::TokenExpiry(c))),
                // Spurious 401s on several keys at once (a provider hiccup).
                9 => {
                    for k in keys {
                        if self.rng.chance(50) {
                            self.at(t, Ev::World(WorldEv::Spurious(k)));
                        }
                    }
                }
                _ => {
                    let for_ms = self.rng.range(1_000, 10_000);
                    self.at(
                        t,
                        Ev::World(WorldEv::Overload {
                            endpoint: e,
                            for_ms,
                        }),
                    );
                }
            }
        }
        if long_outage {
            let e = self.rng.below(n_ep) as usize;
            let t = self.rng.range(5_000, 60_000);
            let len = self.rng.range(INCIDENT_MAX_MS + 10_000, 300_000);
            self.at(t, Ev::World(WorldEv::OutageStart(e)));
            self.at(t + len, Ev::World(WorldEv::OutageEnd(e)));
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn ts(&self) -> Timestamp {
        Timestamp(T0 + self.now)
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            println!("[{:>7.3}s] {}", self.now as f64 / 1000.0, what());
        }
    }

    fn violate(&mut self, inv: char, msg: String) {
        // The trace shows each invariant's first violation (later steps often repeat it).
        if self.trace && !self.violations.0.contains_key(&inv) {
            println!(
                "[{:>7.3}s] VIOLATION ({inv}) {msg}",
                self.now as f64 / 1000.0
            );
        }
        let now = self.now;
        self.violations
            .0
            .entry(inv)
            .or_insert_with(|| format!("at {:.3}s: {msg}", now as f64 / 1000.0));
    }

    /// Loads the configured credentials and rebuilds the route specs.
    fn configure(&mut self) {
        let specs: Vec<CredentialSpec> = self
            .creds
            .iter()
            .filter(|c| c.configured)
            .map(|c| CredentialSpec {
                id: c.id.clone(),
                provider: self.endpoints[c.endpoint].provider,
                endpoint: self.endpoints[c.endpoint].id.clone(),
                bucket: None,
                fingerprint: c.fingerprint.clone(),
                priority: 0,
                models: None,
            })
            .collect();
        self.engine.configure(specs);
        self.specs = self
            .routes
            .iter()
            .map(|targets| {
                RouteSpec::new(
                    targets
                        .iter()
                        .map(|t| TargetSpec {
                            endpoint: self.endpoints[t.endpoint].id.clone(),
                            model: t.model.clone(),
                            credentials: t
                                .creds
                                .iter()
                                .filter(|&&c| self.creds[c].configured)
                                .map(|&c| self.creds[c].id.clone())
                                .collect(),
                        })
                        .collect(),
                )
            })
            .collect();
    }

    fn cred_index(&self, id: &str) -> Option<usize> {
        self.creds.iter().position(|c| &*c.id == id)
    }

    /// The world's answer to a call with credential `c` (`None`: success).
    fn world(&mut self, c: usize, call: Call) -> Option<Refusal> {
        let now = self.now;
        let cred = &self.creds[c];
        let ep = &self.endpoints[cred.endpoint];
        let why = if cred.revoked_at.is_some() {
            Some(Refusal::Revoked)
        } else if ep.in_outage() {
            Some(Refusal::Outage)
        } else if call == Call::Traffic && cred.token_expired {
            Some(Refusal::TokenExpired)
        } else if call == Call::Traffic && cred.spurious_pending {
            Some(Refusal::Spurious)
        } else if ep.overload_until > now {
            Some(Refusal::Overloaded)
        } else if call != Call::KeyValidity && cred.rate_until > now {
            Some(Refusal::RateLimited)
        } else if call != Call::KeyValidity && cred.no_credit {
            Some(Refusal::NoCredit)
        } else {
            None
        };
        if why == Some(Refusal::Spurious) {
            self.creds[c].spurious_pending = false;
        }
        if why.is_some() {
            self.creds[c].last_bad = self.creds[c].last_bad.max(now);
        }
        why
    }

    /// Whether the world would serve credential `c` now, and has for `CLEAN_MS`.
    fn clean(&self, c: usize) -> bool {
        let cred = &self.creds[c];
        let ep = &self.endpoints[cred.endpoint];
        let mut quiet_since = cred.last_bad.max(ep.last_bad).max(cred.added_at);
        // An endpoint with fewer keys than an incident needs cannot tell an outage from
        // revocations: its keys may be disabled until the hourly re-check (by design).
        let recheck = self.design.auth_recheck_min.as_millis() as u64;
        for o in &ep.outages {
            if o.min_keys < self.design.incident_credentials as usize {
                quiet_since = quiet_since.max(o.end.unwrap_or(self.now) + recheck);
            }
        }
        cred.configured
            && cred.revoked_at.is_none()
            && !ep.in_outage()
            && ep.overload_until <= self.now
            && cred.rate_until <= self.now
            && !cred.no_credit
            && !cred.token_expired
            && !cred.spurious_pending
            && self.now >= quiet_since + CLEAN_MS
    }

    fn failure_for(&self, c: usize, why: Refusal) -> Failure {
        let cred = &self.creds[c];
        let provider = self.endpoints[cred.endpoint].provider;
        let kind = if cred.oauth {
            CredentialKind::OAuth
        } else {
            CredentialKind::ApiKey
        };
        let retry = cred.rate_until.saturating_sub(self.now).div_ceil(1000);
        response(provider, kind, why, retry, self.now)
    }

    fn latency(&mut self) -> u64 {
        // Mostly fast, sometimes slow: long attempts overlap revocations.
        if self.rng.chance(80) {
            self.rng.range(50, 800)
        } else {
            self.rng.range(800, MAX_LATENCY_MS)
        }
    }

    // -----------------------------------------------------------------------------------
    // The run.

    fn run(&mut self) {
        while let Some(s) = self.queue.pop() {
            if s.at > self.horizon + 60_000 {
                break;
            }
            self.now = self.now.max(s.at);
            self.clock.set(self.ts());
            self.stats.steps += 1;
            match s.ev {
                Ev::Arrival => self.arrival(),
                Ev::Resume(r) => self.resume(r),
                Ev::ProbeTick => self.probe_tick(),
                Ev::ProbeDone(p) => self.probe_done(p),
                Ev::World(w) => self.world_event(w),
                Ev::ResumeCheck { endpoint, outage } => self.resume_check(endpoint, outage),
            }
            self.check();
        }
    }

    fn arrival(&mut self) {
        if self.now < self.horizon {
            // Exponential-ish inter-arrival, with bursts of concurrency.
            let gap = if self.rng.chance(10) {
                0
            } else {
                self.rng.range(1, 2 * self.arrival_mean_ms)
            };
            self.at(self.now + gap, Ev::Arrival);
        }
        let route = self.rng.below(self.routes.len() as u64) as usize;
        let session = self.rng.chance(30).then(|| self.rng.below(4));
        let deadline = self.ts().plus(REQUEST_DEADLINE);
        self.requests.push(Request {
            route,
            // Half the sessions are under way (a session header or a later turn): they
            // stick to the credential that last served them.
            spec: RequestSpec {
                session,
                sticky: session.is_some_and(|s| s % 2 == 0),
                bucket: None,
                // As the gateway asks: no more candidates than the attempt cap.
                limit: Some(MAX_ATTEMPTS as usize),
            },
            cands: None,
            i: 0,
            budget: RequestBudget::new(MAX_ATTEMPTS, deadline),
            deadline,
            retried_same: false,
            refreshed: false,
            waited: false,
            failed_once: false,
            attempt: None,
            done: false,
        });
        self.stats.requests += 1;
        let r = self.requests.len() - 1;
        self.drive(r);
    }

    /// The gateway's failover loop, from wherever request `r` stands until it starts an
    /// attempt (scheduling its completion), waits, or ends.
    fn drive(&mut self, r: usize) {
        loop {
            if self.requests[r].cands.is_none() {
                let route = self.requests[r].route;
                let spec = self.requests[r].spec.clone();
                let (sel, _) = self.engine.select_explained(&self.specs[route], &spec);
                match sel {
                    Selection::Candidates(c) => {
                        self.requests[r].cands = Some(c);
                        self.requests[r].i = 0;
                        self.requests[r].retried_same = false;
                        self.requests[r].refreshed = false;
                    }
                    Selection::Unavailable(u) => {
                        self.check_unavailable(route, &u);
                        let deadline = self.requests[r].deadline;
                        if let Some(wait) = recovery_wait(&u, self.ts(), deadline)
                            .filter(|_| !self.requests[r].waited)
                        {
                            self.requests[r].waited = true;
                            self.log(|| format!("req {r}: unavailable, waiting {wait:?}"));
                            self.at(self.now + wait.as_millis() as u64, Ev::Resume(r));
                            return;
                        }
                        self.finish(r, false, "unavailable");
                        return;
                    }
                }
            }
            let route = self.requests[r].route;
            let cands = self.requests[r].cands.clone().unwrap_or_default();
            while self.requests[r].i < cands.len() {
                let cand = cands[self.requests[r].i];
                let now = self.ts();
                if !self.requests[r].budget.take(now) {
                    self.finish(r, false, "attempt cap or deadline");
                    return;
                }
                let spec = self.requests[r].spec.clone();
                let Some(attempt) = self.engine.admit(&self.specs[route], &cand, &spec) else {
                    self.requests[r].i += 1;
                    continue;
                };
                let Some(c) = self.cred_index(&attempt.credential()) else {
                    self.requests[r].i += 1;
                    continue;
                };
                // (b): nothing admitted on a revoked key once its first failure is known.
                if let (Some(rev), Some(first)) = (
                    self.creds[c].revoked_at,
                    self.creds[c].first_failure_after_revoke,
                ) {
                    let id = self.creds[c].id.clone();
                    self.violate(
                        'b',
                        format!(
                            "request admitted on `{id}`, revoked at {:.3}s, after its first failure was recorded at {:.3}s",
                            rev as f64 / 1000.0,
                            first as f64 / 1000.0
                        ),
                    );
                }
                self.creds[c].held += 1;
                self.stats.attempts += 1;
                let lat = self.latency();
                self.log(|| {
                    format!(
                        "req {r}: attempt {} on `{}` (target {}){}",
                        self.requests[r].budget.attempts(),
                        self.creds[c].id,
                        cand.target,
                        if attempt.trial { " [trial]" } else { "" }
                    )
                });
                self.requests[r].attempt = Some((attempt, c));
                self.at(self.now + lat, Ev::Resume(r));
                return;
            }
            // Every candidate of this selection was tried: select again, once.
            if !self.requests[r].failed_once || self.requests[r].waited {
                self.finish(r, false, "every candidate failed");
                return;
            }
            let spec = self.requests[r].spec.clone();
            match self.engine.select(&self.specs[route], &spec) {
                Selection::Candidates(_) if self.requests[r].budget.attempts() < MAX_ATTEMPTS => {
                    self.requests[r].waited = true;
                    self.requests[r].cands = None;
                }
                Selection::Unavailable(u) => {
                    self.check_unavailable(route, &u);
                    let deadline = self.requests[r].deadline;
                    if let Some(wait) = recovery_wait(&u, self.ts(), deadline)
                        .filter(|_| self.requests[r].budget.attempts() < MAX_ATTEMPTS)
                    {
                        self.requests[r].waited = true;
                        self.requests[r].cands = None;
                        self.at(self.now + wait.as_millis() as u64, Ev::Resume(r));
                        return;
                    }
                    self.finish(r, false, "unavailable after failures");
                    return;
                }
                Selection::Candidates(_) => {
                    self.finish(r, false, "attempt cap");
                    return;
                }
            }
        }
    }

    /// An attempt of request `r` completes (or its wait ends).
    fn resume(&mut self, r: usize) {
        let Some((attempt, c)) = self.requests[r].attempt.take() else {
            // A wait for a recovery ended.
            self.drive(r);
            return;
        };
        self.creds[c].held -= 1;
        let answer = self.world(c, Call::Traffic);
        let Some(why) = answer else {
            self.log(|| format!("req {r}: served by `{}`", self.creds[c].id));
            self.engine.record_success(attempt, None);
            self.finish(r, true, "served");
            return;
        };
        let failure = self.failure_for(c, why);
        self.requests[r].failed_once = true;
        self.log(|| {
            format!(
                "req {r}: `{}` refused ({why:?}) → {} {:?}",
                self.creds[c].id, failure.class, failure.scope
            )
        });
        let auth = matches!(failure.class, Class::AuthTransient | Class::AuthPermanent);
        // An OAuth access token rejected: refresh once and retry on the same credential
        // (no verdict yet); during an incident, fail over instead.
        if self.creds[c].oauth
            && auth
            && !self.requests[r].refreshed
            && failure.class == Class::AuthTransient
        {
            self.requests[r].refreshed = true;
            drop(attempt);
            let id = self.creds[c].id.clone();
            if self.engine.note_auth_rejection(&id) {
                self.log(|| {
                    format!("req {r}: token of `{id}` rejected during an incident: failing over")
                });
                self.requests[r].i += 1;
            } else {
                self.log(|| format!("req {r}: token of `{id}` refreshed"));
                self.creds[c].token_expired = false;
            }
            self.drive(r);
            return;
        }
        if auth
            && self.creds[c].revoked_at.is_some()
            && self.creds[c].first_failure_after_revoke.is_none()
        {
            self.creds[c].first_failure_after_revoke = Some(self.now);
        }
        let advice = self.engine.record_failure(attempt, &failure);
        if advice.retry_same && !self.requests[r].retried_same {
            self.requests[r].retried_same = true;
        } else {
            self.requests[r].i += 1;
        }
        self.drive(r);
    }

    fn finish(&mut self, r: usize, ok: bool, how: &str) {
        self.requests[r].done = true;
        self.requests[r].cands = None;
        if ok {
            self.stats.served += 1;
            return;
        }
        self.stats.failed += 1;
        self.log(|| format!("req {r}: FAILED ({how})"));
        // (a): it failed although a candidate could have served it.
        if self.requests[r].budget.attempts() >= MAX_ATTEMPTS {
            return;
        }
        let route = self.requests[r].route;
        let mut clean = Vec::new();
        for t in &self.routes[route] {
            for &c in &t.creds {
                if self.clean(c) && !clean.contains(&c) {
                    clean.push(c);
                }
            }
        }
        if !clean.is_empty() {
            let states: Vec<String> = clean
                .iter()
                .map(|&c| {
                    let h = self
                        .engine
                        .health(&ScopeKey::Credential(self.creds[c].id.clone()))
                        .unwrap_or_default();
                    format!("`{}` ({})", self.creds[c].id, h.name())
                })
                .collect();
            let eps: Vec<String> = self
                .endpoints
                .iter()
                .filter_map(|e| {
                    self.engine
                        .health(&ScopeKey::Endpoint(e.id.clone()))
                        .filter(|h| *h != Health::Healthy)
                        .map(|h| format!("{}: {}", e.id, h.name()))
                })
                .collect();
            self.violate(
                'a',
                format!(
                    "request {r} on route {route} failed ({how}) after {} attempt(s) although {} had answered correctly for {}s [endpoint states: {}]",
                    self.requests[r].budget.attempts(),
                    states.join(", "),
                    CLEAN_MS / 1000,
                    if eps.is_empty() { "all healthy".into() } else { eps.join(", ") }
                ),
            );
        }
    }

    // -----------------------------------------------------------------------------------
    // Probes, as the gateway's prober runs them.

    fn probe_tick(&mut self) {
        if self.now < self.horizon + 50_000 {
            self.at(self.now + PROBE_TICK_MS, Ev::ProbeTick);
        }
        for probe in self.engine.due_probes() {
            let Some(c) = self.cred_index(&probe.credential) else {
                continue;
            };
            self.stats.probes += 1;
            self.log(|| {
                format!(
                    "probe of `{}` ({:?}, {}{})",
                    probe.credential,
                    probe.kind,
                    probe.class,
                    if probe.recheck {
                        ", re-check"
                    } else if probe.incident {
                        ", incident"
                    } else {
                        ""
                    }
                )
            });
            if self.creds[c].revoked_at.is_some()
                && self.creds[c].first_failure_after_revoke.is_some()
            {
                self.creds[c].probes_after_first_failure += 1;
            }
            self.probes.push(Some(PendingProbe { probe, cred: c }));
            let p = self.probes.len() - 1;
            let lat = self.latency();
            self.at(self.now + lat, Ev::ProbeDone(p));
        }
    }

    fn probe_done(&mut self, p: usize) {
        let Some(PendingProbe { probe, cred: c }) = self.probes[p].take() else {
            return;
        };
        let call = match probe.kind {
            ProbeKind::KeyValidity => Call::KeyValidity,
            ProbeKind::MinimalRequest => Call::MinimalRequest,
        };
        let outcome = match self.world(c, call) {
            None => ProbeOutcome::Refuted,
            Some(why) => {
                let f = self.failure_for(c, why);
                let same = (f.class == probe.class && f.class != Class::AuthTransient)
                    || (probe.class == Class::AuthTransient && f.class == Class::AuthPermanent);
                if same {
                    ProbeOutcome::Confirmed {
                        evidence: format!("confirmed by probe: {why:?}"),
                    }
                } else {
                    ProbeOutcome::Inconclusive {
                        why: format!("probe got {} instead", f.class),
                    }
                }
            }
        };
        let outcome = self.control(&probe, c, outcome);
        self.log(|| format!("probe of `{}` → {outcome:?}", probe.credential));
        if let Err(e) = self.engine.record_probe(&probe, outcome).wait() {
            panic!("the recorder never fails: {e}");
        }
    }

    /// The gateway's control call: a confirmed auth verdict stands only if a healthy
    /// sibling of the same endpoint and kind passes the same check.
    fn control(&mut self, probe: &ProbeRequest, c: usize, outcome: ProbeOutcome) -> ProbeOutcome {
        let auth = matches!(probe.class, Class::AuthPermanent | Class::AuthTransient);
        // An incident's probe has no control: every sibling is failing too.
        if probe.incident || !(auth && matches!(outcome, ProbeOutcome::Confirmed { .. })) {
            return outcome;
        }
        let snapshot = self.engine.snapshot();
        let healthy = |id: &Arc<str>| {
            snapshot.iter().any(|(k, h, _)| {
                matches!(k, ScopeKey::Credential(i) if i == id) && *h == Health::Healthy
            })
        };
        let me = &self.creds[c];
        let sibling = self
            .creds
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                *i != c
                    && s.configured
                    && s.endpoint == me.endpoint
                    && s.oauth == me.oauth
                    && healthy(&s.id)
            })
            .max_by_key(|(_, s)| {
                (
                    self.engine.last_success(&s.id),
                    std::cmp::Reverse(s.id.clone()),
                )
            })
            .map(|(i, _)| i);
        let Some(s) = sibling else {
            return outcome;
        };
        let sid = self.creds[s].id.clone();
        match self.world(s, Call::KeyValidity) {
            Some(why) => {
                let f = self.failure_for(s, why);
                if matches!(f.class, Class::AuthPermanent | Class::AuthTransient) {
                    self.engine.note_auth_rejection(&sid);
                    ProbeOutcome::Inconclusive {
                        why: format!("the control probe on healthy `{sid}` failed auth too"),
                    }
                } else {
                    outcome
                }
            }
            None => outcome,
        }
    }

    // -----------------------------------------------------------------------------------
    // The world changes.

    fn world_event(&mut self, w: WorldEv) {
        self.log(|| format!("WORLD {w:?}"));
        let now = self.now;
        match w {
            // API keys are revoked; an OAuth grant's end shows at its refresh (out of scope).
            WorldEv::Revoke(c) => {
                if self.creds[c].revoked_at.is_none() && !self.creds[c].oauth {
                    self.creds[c].revoked_at = Some(now);
                    self.creds[c].last_bad = self.creds[c].last_bad.max(now);
                }
            }
            WorldEv::OutageStart(e) => {
                if !self.endpoints[e].in_outage() {
                    let keys = self.usable_keys(e, &self.engine.snapshot(), now);
                    self.endpoints[e].outages.push(Outage {
                        start: now,
                        end: None,
                        min_keys: keys,
                    });
                }
                self.endpoints[e].last_bad = self.endpoints[e].last_bad.max(now);
            }
            WorldEv::OutageEnd(e) => {
                let ep = &mut self.endpoints[e];
                if let Some(last) = ep.outages.last_mut() {
                    if last.end.is_none() {
                        last.end = Some(now);
                        ep.last_bad = ep.last_bad.max(now);
                        let index = ep.outages.len() - 1;
                        let bound = self.design.incident_cooldown.as_millis() as u64 + SLACK_MS;
                        self.at(
                            now + bound,
                            Ev::ResumeCheck {
                                endpoint: e,
                                outage: index,
                            },
                        );
                    }
                }
            }
            WorldEv::Overload { endpoint, for_ms } => {
                let ep = &mut self.endpoints[endpoint];
                ep.overload_until = ep.overload_until.max(now + for_ms);
                ep.last_bad = ep.last_bad.max(ep.overload_until);
            }
            WorldEv::RateLimit { cred, for_ms } => {
                let c = &mut self.creds[cred];
                c.rate_until = c.rate_until.max(now + for_ms);
                c.last_bad = c.last_bad.max(c.rate_until);
            }
            WorldEv::CreditOut(c) => {
                self.creds[c].no_credit = true;
                self.creds[c].credit_out_at = Some(now);
                self.creds[c].last_bad = self.creds[c].last_bad.max(now);
            }
            // A billing disable is re-probed every `billing_recheck` (by design): until then
            // the key does not count as one that could serve (a).
            WorldEv::TopUp(c) => {
                self.creds[c].no_credit = false;
                self.creds[c].last_bad = self.creds[c]
                    .last_bad
                    .max(now + self.design.billing_recheck.as_millis() as u64);
            }
            WorldEv::Spurious(c) => {
                if self.creds[c].revoked_at.is_none() {
                    self.creds[c].spurious_pending = true;
                    self.creds[c].spurious_at = Some(now);
                    self.creds[c].last_bad = self.creds[c].last_bad.max(now);
                }
            }
            WorldEv::TokenExpiry(c) => {
                if self.creds[c].oauth {
                    self.creds[c].token_expired = true;
                    self.creds[c].last_bad = self.creds[c].last_bad.max(now);
                }
            }
            WorldEv::Rotate {
                old,
                revoke_after,
                remove_after,
            } => {
                if !self.creds[old].configured {
                    return;
                }
                let e = self.creds[old].endpoint;
                let oauth = self.creds[old].oauth;
                push_cred(&mut self.creds, e, oauth, now);
                let new = self.creds.len() - 1;
                for targets in &mut self.routes {
                    for t in targets.iter_mut() {
                        if let Some(pos) = t.creds.iter().position(|&k| k == old) {
                            t.creds.insert(pos + 1, new);
                        }
                    }
                }
                self.configure();
                self.at(now + revoke_after, Ev::World(WorldEv::Revoke(old)));
                if let Some(after) = remove_after {
                    self.at(now + revoke_after + after, Ev::World(WorldEv::Remove(old)));
                }
            }
            WorldEv::Remove(c) => {
                self.creds[c].configured = false;
                self.configure();
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Invariants.

    /// (c), second half: traffic is back on the endpoint after outage `outage` healed.
    fn resume_check(&mut self, e: usize, outage: usize) {
        let o = self.endpoints[e].outages[outage];
        let (start, min_keys) = (o.start, o.min_keys);
        let Some(end) = o.end else { return };
        if end - start >= INCIDENT_MAX_MS || min_keys < self.design.incident_credentials as usize {
            return;
        }
        // Only if the world would serve some key of it now, and nothing else went wrong.
        if self.endpoints[e].in_outage() || self.endpoints[e].overload_until > self.now {
            return;
        }
        let valid: Vec<usize> = (0..self.creds.len())
            .filter(|&c| {
                let k = &self.creds[c];
                k.configured
                    && k.endpoint == e
                    && k.revoked_at.is_none()
                    && k.rate_until <= self.now
                    && !k.no_credit
            })
            .collect();
        if valid.is_empty() {
            return;
        }
        let now = self.ts();
        let mut states = Vec::new();
        for &c in &valid {
            let h = self
                .engine
                .health(&ScopeKey::Credential(self.creds[c].id.clone()))
                .unwrap_or_default();
            if h.admits_traffic(now) {
                return;
            }
            states.push(format!("`{}` {}", self.creds[c].id, h.name()));
        }
        let ep_state = self
            .engine
            .health(&ScopeKey::Endpoint(self.endpoints[e].id.clone()))
            .unwrap_or_default();
        self.violate(
            'c',
            format!(
                "auth outage on {} ({:.1}s–{:.1}s, {}s) healed {}s ago and no valid key is back in rotation: {} (endpoint {})",
                self.endpoints[e].id,
                start as f64 / 1000.0,
                end as f64 / 1000.0,
                (end - start) / 1000,
                (self.now - end) / 1000,
                states.join(", "),
                ep_state.name()
            ),
        );
    }

    /// Keys of endpoint `e` configured, routed (an unrouted key takes no traffic to fail)
    /// and not disabled before `from`: those an outage starting at `from` can show on.
    fn usable_keys(
        &self,
        e: usize,
        snapshot: &[(ScopeKey, Health, Timestamp)],
        from: u64,
    ) -> usize {
        self.creds
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                c.configured
                    && c.endpoint == e
                    && self.routes.iter().flatten().any(|t| t.creds.contains(i))
            })
            .map(|(_, c)| c)
            .filter(|c| {
                !snapshot.iter().any(|(k, h, _)| {
                    matches!(k, ScopeKey::Credential(id) if *id == c.id)
                        && matches!(h, Health::Disabled { since, .. } if since.0 < T0 + from)
                })
            })
            .count()
    }

    /// (e): the caller's "unavailable" names every candidate of the route with the state
    /// that keeps it out, and says "do not retry" only when every candidate stands
    /// rejected by a permanent verdict outside any incident. (r): a "do not retry" while
    /// some candidate is only suspect (its probe is minutes away at most) and valid in
    /// the world (neither revoked nor out of credit, its endpoint's auth working) tells
    /// the caller to give up on a key that comes back by itself.
    fn check_unavailable(&mut self, route: usize, u: &Unavailable) {
        let mut expected: Vec<Arc<str>> = self.specs[route]
            .targets
            .iter()
            .flat_map(|t| t.credentials.iter().cloned())
            .collect();
        let mut named: Vec<Arc<str>> = u.candidates.iter().map(|c| c.credential.clone()).collect();
        // A credential kept out by one scope is named once, whatever targets share it.
        expected.sort();
        expected.dedup();
        named.sort();
        named.dedup();
        if expected != named {
            self.violate(
                'e',
                format!(
                    "unavailable on route {route} names {named:?} ({} considered); the route's candidates are {expected:?}",
                    u.total
                ),
            );
        }
        for c in &u.candidates {
            let engine = c.scope.strip_prefix("credential/").map(|id| {
                self.engine
                    .health(&ScopeKey::Credential(id.into()))
                    .unwrap_or_default()
            });
            let wrong = c.state == "healthy"
                || engine.as_ref().is_some_and(|h| h.name() != c.state)
                || (c.permanent && c.incident);
            if wrong {
                self.violate(
                    'e',
                    format!(
                        "unavailable on route {route} says `{}` is {} ({}, permanent {}, incident {}); the engine has it {}",
                        c.credential,
                        c.state,
                        c.scope,
                        c.permanent,
                        c.incident,
                        engine.map_or("-", |h| h.name())
                    ),
                );
            }
        }
        if !u.retryable() {
            if u.candidates.iter().any(|c| c.incident || !c.permanent) {
                self.violate(
                    'e',
                    format!(
                        "unavailable on route {route} says do not retry although a candidate is transient or an incident covers it"
                    ),
                );
            }
            let valid: Vec<String> = u
                .candidates
                .iter()
                .filter_map(|c| {
                    let k = &self.creds[self.cred_index(&c.credential)?];
                    let ok = matches!(c.state, "suspect" | "probing")
                        && k.revoked_at.is_none()
                        && !k.no_credit
                        && !self.endpoints[k.endpoint].in_outage();
                    ok.then(|| {
                        format!(
                            "`{}` ({} {}: {})",
                            c.credential,
                            c.state,
                            c.class.map_or("-".into(), |c| c.to_string()),
                            c.evidence
                        )
                    })
                })
                .collect();
            if !valid.is_empty() {
                self.violate(
                    'r',
                    format!(
                        "unavailable on route {route} says do not retry while {} valid in the world",
                        valid.join(", ")
                    ),
                );
            }
        }
    }

    fn check(&mut self) {
        let snapshot = self.engine.snapshot();
        let now = self.ts();
        for e in 0..self.endpoints.len() {
            if let Some(start) = self.endpoints[e]
                .outages
                .last()
                .filter(|o| o.end.is_none())
                .map(|o| o.start)
            {
                let keys = self.usable_keys(e, &snapshot, start);
                if let Some(o) = self.endpoints[e].outages.last_mut() {
                    o.min_keys = o.min_keys.min(keys);
                }
            }
        }
        // (h): in-flight counts match the attempts held.
        for c in 0..self.creds.len() {
            if !self.creds[c].configured {
                continue;
            }
            let held = self.creds[c].held;
            let engine = self.engine.inflight(&self.creds[c].id);
            if held != engine {
                let id = self.creds[c].id.clone();
                self.violate(
                    'h',
                    format!("`{id}` has {engine} attempts in flight in the engine, {held} held by requests"),
                );
            }
        }
        // When each credential was first seen disabled (a disable's own `since` moves on
        // with every inconclusive re-check).
        let mut disabled = vec![false; self.creds.len()];
        for (key, health, _) in &snapshot {
            if let (ScopeKey::Credential(id), Health::Disabled { .. }) = (key, health) {
                if let Some(c) = self.cred_index(id) {
                    disabled[c] = true;
                }
            }
        }
        for (c, d) in disabled.into_iter().enumerate() {
            let from = &mut self.creds[c].disabled_from;
            *from = if d {
                Some(from.unwrap_or(self.now))
            } else {
                None
            };
        }
        for (key, health, _) in &snapshot {
            let ScopeKey::Credential(id) = key else {
                continue;
            };
            let Health::Disabled {
                class, by_operator, ..
            } = health
            else {
                continue;
            };
            if *by_operator {
                continue;
            }
            let Some(c) = self.cred_index(id) else {
                continue;
            };
            let since = Timestamp(T0 + self.creds[c].disabled_from.unwrap_or(self.now));
            self.check_disabled(c, *class, since, now);
        }
        // (b): probes of a revoked key stay bounded.
        for c in 0..self.creds.len() {
            if let Some(first) = self.creds[c].first_failure_after_revoke {
                let allowed = 2 + (self.now - first) / self.design.probe_retry.as_millis() as u64;
                if self.creds[c].probes_after_first_failure > allowed {
                    let id = self.creds[c].id.clone();
                    let n = self.creds[c].probes_after_first_failure;
                    self.violate(
                        'b',
                        format!(
                            "revoked `{id}` was probed {n} times in the {}s since its first failure",
                            (self.now - first) / 1000
                        ),
                    );
                }
            }
        }
        self.check_replay(&snapshot);
    }

    /// (c), (d), (g): a disabled credential is one the world justifies.
    fn check_disabled(&mut self, c: usize, class: Class, since: Timestamp, now: Timestamp) {
        let cred = &self.creds[c];
        let id = cred.id.clone();
        let e = cred.endpoint;
        let since_ms = since.0.saturating_sub(T0);
        match class {
            Class::AuthPermanent | Class::AuthTransient => {
                if cred.revoked_at.is_some() {
                    return;
                }
                let ep = &self.endpoints[e];
                // The outage that explains it: the last one that started before the disable.
                let outage = ep
                    .outages
                    .iter()
                    .rev()
                    .find(|o| o.start <= since_ms)
                    .copied();
                if let Some(Outage {
                    start,
                    end,
                    min_keys,
                }) = outage
                {
                    // An endpoint with fewer keys than an incident needs cannot tell an
                    // outage from revocations: (c) and (g) do not apply to it.
                    let big = min_keys >= self.design.incident_credentials as usize;
                    let lasted = end.unwrap_or(self.now) - start;
                    // The way back is counted from the end of the endpoint's latest outage
                    // (a later one may hold a re-check up); none while one lasts.
                    let healed = ep.outages.last().and_then(|o| o.end);
                    match end {
                        None if lasted < INCIDENT_MAX_MS && big => self.violate(
                            'c',
                            format!(
                                "`{id}` (valid) disabled at {:.1}s, {}s into an auth outage of {} (incident_max {}s)",
                                since_ms as f64 / 1000.0,
                                since_ms.saturating_sub(start) / 1000,
                                ep.id,
                                INCIDENT_MAX_MS / 1000
                            ),
                        ),
                        None => {}
                        Some(end) if lasted < INCIDENT_MAX_MS && big => self.violate(
                            'c',
                            format!(
                                "`{id}` (valid) disabled at {:.1}s by an auth outage of {} that lasted {}s (< incident_max {}s)",
                                since_ms as f64 / 1000.0,
                                ep.id,
                                (end - start) / 1000,
                                INCIDENT_MAX_MS / 1000
                            ),
                        ),
                        Some(_) if big && healed.is_some_and(|h| self.now > h + INCIDENT_RECHECK_MS + SLACK_MS) => {
                            self.violate(
                                'g',
                                format!(
                                    "`{id}` (valid) disabled since {:.1}s, still {}s after the auth outage of {} healed (incident_recheck {}s; the outage that disabled it lasted {}s)",
                                    since_ms as f64 / 1000.0,
                                    (self.now - healed.unwrap_or(self.now)) / 1000,
                                    ep.id,
                                    INCIDENT_RECHECK_MS / 1000,
                                    lasted / 1000
                                ),
                            );
                        }
                        Some(_) => {}
                    }
                    return;
                }
                if cred.spurious_at.is_some_and(|s| s <= since_ms) {
                    self.violate(
                        'd',
                        format!(
                            "`{id}` (valid) disabled at {:.1}s after a spurious 401 at {:.1}s",
                            since_ms as f64 / 1000.0,
                            cred.spurious_at.unwrap_or(0) as f64 / 1000.0
                        ),
                    );
                    return;
                }
                let _ = now;
                self.violate(
                    'g',
                    format!(
                        "`{id}` (valid, never in an outage) disabled for {class} at {:.1}s",
                        since_ms as f64 / 1000.0
                    ),
                );
            }
            Class::Billing => {
                if cred.credit_out_at.is_none() {
                    self.violate(
                        'g',
                        format!("`{id}` disabled for billing but never ran out of credit"),
                    );
                }
            }
            Class::ModelNotFound => {
                self.violate('g', format!("`{id}` disabled for model_not_found"));
            }
            other => {
                self.violate(
                    'g',
                    format!("`{id}` disabled for a transient class: {other}"),
                );
            }
        }
    }

    /// (f): the persisted transitions, replayed into a fresh engine, give the same state.
    fn check_replay(&mut self, snapshot: &[(ScopeKey, Health, Timestamp)]) {
        let transitions = self.sink.0.lock().unwrap();
        if transitions.len() == self.replayed {
            return;
        }
        for t in &transitions[self.replayed..] {
            // As the stores do: the denylist changes as the transition says.
            if let (ScopeKey::Credential(id), Some(fp)) = (&t.scope, &t.fingerprint) {
                match t.deny {
                    Some(true) => {
                        self.denylist
                            .insert(fp.to_string(), (id.to_string(), "revoked".into()));
                    }
                    Some(false) => {
                        self.denylist.remove(&**fp);
                    }
                    None => {}
                }
            }
            self.replay.insert(t.scope.clone(), (t.to.clone(), t.at));
        }
        self.replayed = transitions.len();
        drop(transitions);
        let fresh = HealthEngine::new(
            self.policy.clone(),
            Arc::new(self.clock.clone()),
            Arc::new(keyward_core::health::NullSink),
            1,
        );
        let specs: Vec<CredentialSpec> = self
            .creds
            .iter()
            .filter(|c| c.configured)
            .map(|c| CredentialSpec {
                id: c.id.clone(),
                provider: self.endpoints[c.endpoint].provider,
                endpoint: self.endpoints[c.endpoint].id.clone(),
                bucket: None,
                fingerprint: c.fingerprint.clone(),
                priority: 0,
                models: None,
            })
            .collect();
        fresh.restore(
            self.replay
                .iter()
                .map(|(k, (h, at))| (k.clone(), h.clone(), *at))
                .collect(),
            self.denylist
                .iter()
                .map(|(fp, (c, why))| (fp.clone(), c.clone(), why.clone()))
                .collect(),
        );
        fresh.configure(specs);
        let restored: HashMap<ScopeKey, Health> = fresh
            .snapshot()
            .into_iter()
            .map(|(k, h, _)| (k, h))
            .collect();
        let live: HashMap<&ScopeKey, &Health> = snapshot.iter().map(|(k, h, _)| (k, h)).collect();
        let mut diffs = Vec::new();
        for (k, h) in &live {
            let r = restored.get(*k).cloned().unwrap_or_default();
            if r != **h {
                diffs.push(format!(
                    "{k:?}: live {} / replayed {}",
                    describe(h),
                    describe(&r)
                ));
            }
        }
        for (k, r) in &restored {
            if !live.contains_key(k) && *r != Health::Healthy {
                diffs.push(format!("{k:?}: live healthy / replayed {}", describe(r)));
            }
        }
        if !diffs.is_empty() {
            diffs.sort();
            self.violate(
                'f',
                format!(
                    "replaying {} persisted transitions gives another state: {}",
                    self.replayed,
                    diffs.join("; ")
                ),
            );
        }
    }
}

fn describe(h: &Health) -> String {
    match h {
        Health::Disabled { class, .. }
        | Health::Suspect { class, .. }
        | Health::Probing { class, .. }
        | Health::Cooling { class, .. } => format!("{} ({class})", h.name()),
        Health::Healthy => "healthy".into(),
    }
}

fn push_cred(creds: &mut Vec<Cred>, e: usize, oauth: bool, now: u64) {
    let n = creds.iter().filter(|c| c.endpoint == e).count();
    let id: Arc<str> = format!("ep{e}-k{n}").into();
    creds.push(Cred {
        fingerprint: format!("fp-{id}").into(),
        id,
        endpoint: e,
        oauth,
        configured: true,
        revoked_at: None,
        rate_until: 0,
        no_credit: false,
        credit_out_at: None,
        token_expired: false,
        spurious_pending: false,
        spurious_at: None,
        added_at: now,
        last_bad: 0,
        first_failure_after_revoke: None,
        probes_after_first_failure: 0,
        held: 0,
        disabled_from: None,
    });
}

/// The gateway's `recovery_wait`.
fn recovery_wait(u: &Unavailable, now: Timestamp, deadline: Timestamp) -> Option<Duration> {
    // Only a transient cause is worth waiting for (a revocation's probe is not).
    let at = u.retry_at()?;
    let wait = at.since(now);
    (wait <= MAX_WAIT_FOR_RECOVERY && at < deadline).then(|| wait + Duration::from_millis(5))
}

// ---------------------------------------------------------------------------------------
// Running seeds.

struct Outcome {
    seed: u64,
    violations: Violations,
    stats: Stats,
}

fn run_seed(seed: u64, trace: bool) -> Outcome {
    run_seed_with(seed, trace, Policy::default())
}

fn run_seed_with(seed: u64, trace: bool, policy: Policy) -> Outcome {
    let mut sim = Sim::new(seed, trace, policy);
    if trace {
        println!(
            "seed {seed}: {} endpoints {:?}, {} credentials, {} routes, horizon {}s, mean gap {}ms",
            sim.endpoints.len(),
            sim.endpoints
                .iter()
                .map(|e| (e.id.to_string(), e.provider))
                .collect::<Vec<_>>(),
            sim.creds.len(),
            sim.routes.len(),
            sim.horizon / 1000,
            sim.arrival_mean_ms
        );
        for (i, r) in sim.routes.iter().enumerate() {
            let t: Vec<String> = r
                .iter()
                .map(|t| {
                    format!(
                        "{}/{} [{}]",
                        sim.endpoints[t.endpoint].id,
                        t.model,
                        t.creds
                            .iter()
                            .map(|&c| sim.creds[c].id.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                })
                .collect();
            println!("  route {i}: {}", t.join(" → "));
        }
    }
    sim.run();
    // (h): idle at the end: nothing held, nothing in flight.
    for c in 0..sim.creds.len() {
        if sim.creds[c].configured && sim.engine.inflight(&sim.creds[c].id) != 0 {
            let id = sim.creds[c].id.clone();
            sim.violate(
                'h',
                format!("`{id}` still has attempts in flight when idle"),
            );
        }
    }
    Outcome {
        seed,
        violations: sim.violations,
        stats: sim.stats,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn simulation() {
    let trace = std::env::var("KEYWARD_SIM_TRACE").is_ok_and(|v| v == "1");
    let strict = std::env::var("KEYWARD_SIM_STRICT").is_ok_and(|v| v == "1");
    // `KEYWARD_SIM_LIST=1`: every failing seed's violations, not the first few.
    let list = std::env::var("KEYWARD_SIM_LIST").is_ok_and(|v| v == "1");
    // `KEYWARD_SIM_ENFORCE=cfg`: these known-failing checks fail the run too.
    let enforce: Vec<char> = std::env::var("KEYWARD_SIM_ENFORCE")
        .map(|v| v.chars().collect())
        .unwrap_or_default();
    let seeds: Vec<u64> = match env_u64("KEYWARD_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("KEYWARD_SIM_FIRST").unwrap_or(0);
            let n = env_u64("KEYWARD_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            (first..first + n).collect()
        }
    };
    let mut total = Stats::default();
    let mut failing: BTreeMap<char, Vec<u64>> = BTreeMap::new();
    let mut report = String::new();
    let mut blocking = 0;
    for &seed in &seeds {
        let o = run_seed(seed, trace);
        total.requests += o.stats.requests;
        total.served += o.stats.served;
        total.failed += o.stats.failed;
        total.attempts += o.stats.attempts;
        total.probes += o.stats.probes;
        total.steps += o.stats.steps;
        if o.violations.0.is_empty() {
            continue;
        }
        let mut block = false;
        for (inv, msg) in &o.violations.0 {
            let seeds = failing.entry(*inv).or_default();
            if seeds.len() < 8 || list {
                let _ = writeln!(report, "seed {} ({inv}): {msg}", o.seed);
            }
            seeds.push(o.seed);
            block |= strict || enforce.contains(inv) || !KNOWN_FAILING.contains(inv);
        }
        if block {
            blocking += 1;
        }
    }
    println!(
        "simulation: {} seeds, {} steps, {} requests ({} served, {} failed), {} attempts, {} probes",
        seeds.len(),
        total.steps,
        total.requests,
        total.served,
        total.failed,
        total.attempts,
        total.probes
    );
    if failing.is_empty() {
        return;
    }
    let mut summary = String::new();
    for (inv, s) in &failing {
        let known = if KNOWN_FAILING.contains(inv) {
            " (known failing)"
        } else {
            ""
        };
        let _ = writeln!(
            summary,
            "invariant ({inv}){known}: {} seed(s), first: {:?}",
            s.len(),
            &s[..s.len().min(12)]
        );
    }
    let replay = failing
        .values()
        .next()
        .and_then(|s| s.first())
        .copied()
        .unwrap_or(0);
    println!("{report}{summary}replay one: KEYWARD_SIM_SEED={replay} KEYWARD_SIM_TRACE=1 cargo test -p keyward-core --test simulation -- --nocapture");
    assert!(
        blocking == 0,
        "{blocking} seed(s) violate invariants (see above); replay: KEYWARD_SIM_SEED={replay} KEYWARD_SIM_TRACE=1 cargo test -p keyward-core --test simulation -- --nocapture"
    );
}

/// The world's responses mean what the simulation says they mean, to the real classifier.
#[test]
fn world_responses_classify_as_intended() {
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let api = CredentialKind::ApiKey;
        let oauth = CredentialKind::OAuth;
        let c = |kind, why| response(provider, kind, why, 7, 0);
        assert_eq!(
            c(api, Refusal::Revoked).class,
            Class::AuthPermanent,
            "{provider:?}"
        );
        assert_eq!(
            c(api, Refusal::Outage).class,
            Class::AuthPermanent,
            "{provider:?}"
        );
        assert_eq!(
            c(oauth, Refusal::TokenExpired).class,
            Class::AuthTransient,
            "{provider:?}"
        );
        assert_eq!(
            c(api, Refusal::Overloaded).class,
            Class::Overloaded,
            "{provider:?}"
        );
        let rate = c(api, Refusal::RateLimited);
        assert_eq!(rate.class, Class::RateLimit, "{provider:?}");
        assert_eq!(
            rate.retry_after,
            Some(Duration::from_secs(7)),
            "{provider:?}"
        );
        assert_eq!(
            c(api, Refusal::NoCredit).class,
            Class::Billing,
            "{provider:?}"
        );
        assert_eq!(
            c(api, Refusal::Revoked).scope,
            keyward_core::classify::Scope::Credential,
            "{provider:?}"
        );
    }
}

/// The simulation is deterministic: one seed, one history.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17] {
        let a = run_seed(seed, false);
        let b = run_seed(seed, false);
        assert_eq!(a.stats.steps, b.stats.steps);
        assert_eq!(a.stats.attempts, b.stats.attempts);
        assert_eq!(a.stats.probes, b.stats.probes);
        assert_eq!(a.violations.0, b.violations.0);
    }
}

/// The invariants can fail: a broken policy or a broken store is caught within a few
/// seeds, each by the invariant that names its damage.
#[test]
fn invariants_catch_broken_engines() {
    use keyward_core::health::Effect;
    let caught = |policy: &Policy, inv: char| {
        (0..80).any(|seed| {
            run_seed_with(seed, false, policy.clone())
                .violations
                .0
                .contains_key(&inv)
        })
    };
    // The old gateways' mistake: an auth failure is a cooldown, so a revoked key keeps
    // getting traffic after its first failure.
    let mut p = Policy::default();
    p.auth_permanent.effect = Effect::Cool;
    p.auth_permanent.threshold = 3;
    assert!(caught(&p, 'b'), "(b) missed a revoked key kept in rotation");
    // No incident detection: an outage on every key is taken for revocations.
    let p = Policy {
        incident_credentials: 1_000,
        ..Policy::default()
    };
    assert!(
        caught(&p, 'c'),
        "(c) missed an outage that disabled every key"
    );
    // Rate limits and overload that cool for hours, whatever the provider says.
    let mut p = Policy::default();
    for c in [&mut p.rate_limit, &mut p.overloaded] {
        c.honour_retry_after = false;
        c.threshold = 1;
        c.backoff.base = Duration::from_secs(3 * 3600);
        c.backoff.max = Duration::from_secs(3 * 3600);
    }
    assert!(
        caught(&p, 'a'),
        "(a) missed requests failing beside a usable key"
    );
}

/// (f) can fail: a store that lost the later half of its transitions replays into
/// another state.
#[test]
fn replay_check_catches_lost_transitions() {
    let caught = (0..40).any(|seed| {
        let mut sim = Sim::new(seed, false, Policy::default());
        sim.run();
        sim.violations.0.remove(&'f');
        let all = sim.sink.0.lock().unwrap().clone();
        let kept: Vec<Transition> = all.iter().take(all.len() / 2).cloned().collect();
        *sim.sink.0.lock().unwrap() = kept;
        sim.replay.clear();
        sim.denylist.clear();
        sim.replayed = 0;
        let snapshot = sim.engine.snapshot();
        sim.check_replay(&snapshot);
        sim.violations.0.contains_key(&'f')
    });
    assert!(
        caught,
        "replaying half of the transitions went unnoticed in 40 seeds"
    );
}
