//! The health state machine of one scope. Hand-written because it is the product's core
//! promise: a revoked key leaves rotation after one confirmation probe, a spurious 401
//! disables nothing, a cooldown never shrinks on a repeat failure, every retry is bounded.
//!
//! ```text
//!             failure (Cool, ≥ threshold)           cooldown over: one trial
//!   Healthy ───────────────────────────► Cooling ─────────────────────────► Probing(trial)
//!      ▲ ▲  ◄──────── success ─────────────┘ ▲ ◄── trial fails (longer) ───────┘ │
//!      │ └──────────────────── trial succeeds ┴────────────────────────────────────┘
//!      │
//!      │ failure (Confirm: auth_permanent, billing, model_not_found; repeated refreshes)
//!      ├────────────► Suspect ──(probe leased)──► Probing ──confirmed──► Disabled
//!      │                ▲  ◄────── inconclusive (later) ──┘   │             │
//!      └──────────────────────── refuted ─────────────────────┘             │
//!      └───────── re-check succeeds / operator reset / new secret ──────────┘
//! ```
//!
//! Nothing reaches `Disabled` except a confirmed probe or an operator.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::policy::{Effect, Policy};
use crate::classify::{Class, Confidence};

/// The state of one scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// In rotation.
    #[default]
    Healthy,
    /// Out of rotation until `until`; then one trial request under a lease.
    Cooling {
        until: Timestamp,
        #[serde(with = "class_name")]
        class: Class,
    },
    /// No user traffic; waiting for its confirmation probe (due at `probe_at`).
    Suspect {
        #[serde(with = "class_name")]
        class: Class,
        since: Timestamp,
        evidence: String,
        probe_at: Timestamp,
    },
    /// One probe (or, after a cooldown, one trial request) holds the lease.
    Probing {
        #[serde(with = "class_name")]
        class: Class,
        since: Timestamp,
        evidence: String,
        lease_until: Timestamp,
        /// A trial request after a cooldown rather than a confirmation probe.
        trial: bool,
    },
    /// Out of rotation until a re-check, an operator or a new secret says otherwise.
    Disabled {
        #[serde(with = "class_name")]
        class: Class,
        since: Timestamp,
        evidence: String,
        /// The fingerprint of the secret this applies to (a new secret starts healthy).
        fingerprint: Option<String>,
        /// When the background re-check is due (`None`: never, e.g. an operator's disable).
        recheck_at: Option<Timestamp>,
        by_operator: bool,
    },
}

impl Health {
    /// The state's name: `healthy`, `cooling`, `suspect`, `probing`, `disabled`.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Cooling { .. } => "cooling",
            Health::Suspect { .. } => "suspect",
            Health::Probing { .. } => "probing",
            Health::Disabled { .. } => "disabled",
        }
    }

    /// The class behind a non-healthy state.
    pub fn class(&self) -> Option<Class> {
        match self {
            Health::Healthy => None,
            Health::Cooling { class, .. }
            | Health::Suspect { class, .. }
            | Health::Probing { class, .. }
            | Health::Disabled { class, .. } => Some(*class),
        }
    }

    /// Whether user traffic may use the scope right now (a due cooldown admits one
    /// trial; see [`Record::admit`]).
    pub fn admits_traffic(&self, now: Timestamp) -> bool {
        match self {
            Health::Healthy => true,
            Health::Cooling { until, .. } => *until <= now,
            _ => false,
        }
    }

    /// When the scope may next take traffic, if it will by itself.
    pub fn recovers_at(&self) -> Option<Timestamp> {
        match self {
            Health::Healthy => None,
            Health::Cooling { until, .. } => Some(*until),
            Health::Suspect { probe_at, .. } => Some(*probe_at),
            Health::Probing { lease_until, .. } => Some(*lease_until),
            Health::Disabled { .. } => None,
        }
    }
}

/// Who caused a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A request's verdict or success.
    Traffic,
    /// A probe's outcome.
    Probe,
    /// Provider-incident detection.
    Incident,
    /// An operator (admin API or CLI).
    Operator,
    /// Configuration: a new secret, a reload.
    Config,
}

/// A probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The same evidence again: the property that failed is really gone.
    Confirmed { evidence: String },
    /// The probe succeeded: the verdict was spurious.
    Refuted,
    /// Network, 5xx, 429, or a scope the probe itself lacks: try again later.
    Inconclusive { why: String },
}

/// What happened to a scope, for [`Record::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A classified failure.
    Failure {
        class: Class,
        confidence: Confidence,
        retry_after: Option<Duration>,
        evidence: &'a str,
    },
    /// A successful response.
    Success,
    /// A probe (or trial) takes the lease.
    LeaseTaken,
    /// A probe's outcome.
    Probe(ProbeOutcome),
    /// The operator puts the scope back in rotation.
    Reset,
    /// The operator takes the scope out of rotation.
    Disable { reason: &'a str },
    /// The credential's secret changed (new fingerprint).
    NewSecret { fingerprint: &'a str },
    /// The OAuth token endpoint rejected the credential's grant (`invalid_grant`, a
    /// reused refresh token) after the stored tokens were re-read: definitive, no probe
    /// can bring it back; only a new login can.
    GrantRevoked { evidence: &'a str },
}

/// One scope's health and the counters that drive it. Counters live in memory; only the
/// [`Health`] is persisted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub health: Health,
    /// Consecutive failures of circuit classes.
    pub strikes: u32,
    /// For a shared scope (an endpoint, a provider×model): which credentials the current
    /// run of strikes came from. Kept by the engine, cleared with the strikes.
    pub strikers: Strikers,
    /// `auth_transient` failures since the last success.
    pub refresh_strikes: u32,
    /// Inconclusive probes in a row.
    pub inconclusive: u32,
    /// Failed re-checks of the current disable.
    pub rechecks: u32,
    /// A re-check of a disabled scope is in flight until this time.
    pub recheck_lease: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub since: Timestamp,
}

/// Which credentials a shared scope's current run of strikes came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strikers {
    /// No strike since the last success.
    #[default]
    None,
    /// Every strike came from this credential (its id).
    One(Arc<str>),
    /// Strikes came from more than one credential.
    Several,
}

impl Strikers {
    /// Adds a strike by `credential`.
    pub fn add(&mut self, credential: &Arc<str>) {
        *self = match std::mem::take(self) {
            Strikers::None => Strikers::One(credential.clone()),
            Strikers::One(c) if c == *credential => Strikers::One(c),
            _ => Strikers::Several,
        };
    }
}

/// The result of applying an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The state before, when it changed.
    pub from: Option<Health>,
    /// Why, for the transition log.
    pub why: String,
    /// The scope now wants a confirmation probe.
    pub wants_probe: bool,
}

impl Record {
    /// A record in `health` since `since`.
    pub fn new(health: Health, since: Timestamp) -> Record {
        Record {
            health,
            since,
            ..Record::default()
        }
    }

    /// Whether user traffic may use the scope now. A due cooldown admits traffic; the
    /// engine turns the first such request into the one trial under a lease.
    pub fn admits(&self, now: Timestamp) -> bool {
        self.health.admits_traffic(now)
    }

    /// Applies `event` at `now`. `fingerprint` is the credential's current fingerprint (for
    /// a disable record), `roll` in `[0, 1)` picks the backoff jitter. Returns what changed.
    #[allow(clippy::too_many_lines)] // the state machine: one arm per event, each with its transitions
    pub fn apply(
        &mut self,
        event: &Event<'_>,
        policy: &Policy,
        now: Timestamp,
        fingerprint: Option<&str>,
        roll: f64,
    ) -> Option<Step> {
        let before = self.health.clone();
        let mut wants_probe = false;
        let why: String = match event {
            Event::Failure {
                class,
                retry_after,
                evidence,
                confidence,
            } => {
                let cp = policy.for_class(*class);
                match cp.effect {
                    Effect::None => return None,
                    Effect::Refresh => {
                        self.refresh_strikes = self.refresh_strikes.saturating_add(1);
                        let in_rotation = matches!(
                            self.health,
                            Health::Healthy
                                | Health::Cooling { .. }
                                | Health::Probing { trial: true, .. }
                        );
                        if !in_rotation
                            || self.refresh_strikes < policy.refresh_strikes_before_probe
                        {
                            return None;
                        }
                        // Refreshing did not help, repeatedly: ask a probe, never disable.
                        wants_probe = true;
                        self.health = suspect(*class, now, evidence, policy);
                        format!(
                            "{class} ×{} since the last success: probing",
                            self.refresh_strikes
                        )
                    }
                    Effect::Confirm => match self.health {
                        Health::Healthy
                        | Health::Cooling { .. }
                        | Health::Probing { trial: true, .. } => {
                            wants_probe = true;
                            self.health = suspect(*class, now, evidence, policy);
                            format!(
                                "{class} ({} confidence): out of rotation until a probe confirms",
                                confidence.as_str()
                            )
                        }
                        // Already out of rotation: one probe at a time, nothing new.
                        _ => return None,
                    },
                    Effect::Cool => {
                        let trial = matches!(self.health, Health::Probing { trial: true, .. });
                        if !matches!(self.health, Health::Healthy | Health::Cooling { .. })
                            && !trial
                        {
                            return None;
                        }
                        self.strikes = self.strikes.saturating_add(1);
                        if self.strikes < cp.threshold && !trial {
                            return None;
                        }
                        let over = self.strikes.saturating_sub(cp.threshold).saturating_add(1);
                        let mut delay = cp.backoff.delay(over, roll);
                        if let Some(ra) = retry_after.filter(|_| cp.honour_retry_after) {
                            delay = ra.min(policy.max_retry_after).max(Duration::from_millis(1));
                        }
                        let mut until = now.plus(delay);
                        // A repeat failure extends a cooldown, never shortens it.
                        if let Health::Cooling {
                            until: existing, ..
                        } = self.health
                        {
                            if existing > until {
                                until = existing;
                            }
                        }
                        if self.health
                            == (Health::Cooling {
                                until,
                                class: *class,
                            })
                        {
                            return None;
                        }
                        self.health = Health::Cooling {
                            until,
                            class: *class,
                        };
                        format!(
                            "{class} ×{}: cooling for {}",
                            self.strikes,
                            humantime::format_duration(round_ms(until.since(now)))
                        )
                    }
                }
            }
            Event::Success => {
                self.last_success = Some(now);
                self.strikes = 0;
                self.strikers = Strikers::None;
                self.refresh_strikes = 0;
                match self.health {
                    Health::Cooling { .. } | Health::Probing { trial: true, .. } => {
                        self.health = Health::Healthy;
                        "success".to_owned()
                    }
                    // Out of rotation: only the probe decides, not a late in-flight success.
                    _ => return None,
                }
            }
            Event::LeaseTaken => match &self.health {
                Health::Suspect {
                    class,
                    since,
                    evidence,
                    probe_at,
                } if *probe_at <= now => {
                    self.health = Health::Probing {
                        class: *class,
                        since: *since,
                        evidence: evidence.clone(),
                        lease_until: now.plus(policy.probe_lease),
                        trial: false,
                    };
                    "confirmation probe started".to_owned()
                }
                Health::Probing {
                    class,
                    since,
                    evidence,
                    lease_until,
                    trial,
                } if *lease_until <= now => {
                    // The previous holder's lease lapsed.
                    self.health = Health::Probing {
                        class: *class,
                        since: *since,
                        evidence: evidence.clone(),
                        lease_until: now.plus(policy.probe_lease),
                        trial: *trial,
                    };
                    "probe lease lapsed; probe restarted".to_owned()
                }
                Health::Cooling { until, class } if *until <= now => {
                    self.health = Health::Probing {
                        class: *class,
                        since: now,
                        evidence: String::new(),
                        lease_until: now.plus(policy.probe_lease),
                        trial: true,
                    };
                    "cooldown over: one trial request".to_owned()
                }
                Health::Disabled {
                    recheck_at: Some(at),
                    ..
                } if *at <= now => {
                    self.recheck_lease = Some(now.plus(policy.probe_lease));
                    return None;
                }
                _ => return None,
            },
            Event::Probe(outcome) => self.apply_probe(outcome, policy, now, fingerprint)?,
            Event::Reset => {
                if self.health == Health::Healthy && self.strikes == 0 {
                    return None;
                }
                self.clear();
                self.health = Health::Healthy;
                "reset by an operator".to_owned()
            }
            Event::Disable { reason } => {
                self.health = Health::Disabled {
                    class: before.class().unwrap_or(Class::AuthPermanent),
                    since: now,
                    evidence: format!("operator: {reason}"),
                    fingerprint: fingerprint.map(str::to_owned),
                    recheck_at: None,
                    by_operator: true,
                };
                format!("disabled by an operator: {reason}")
            }
            Event::GrantRevoked { evidence } => {
                if matches!(self.health, Health::Disabled { .. }) {
                    return None;
                }
                self.health = Health::Disabled {
                    class: Class::AuthPermanent,
                    since: now,
                    evidence: (*evidence).to_owned(),
                    fingerprint: fingerprint.map(str::to_owned),
                    recheck_at: None,
                    by_operator: false,
                };
                format!("OAuth grant revoked: {evidence}")
            }
            Event::NewSecret { fingerprint: fp } => {
                if self.health == Health::Healthy {
                    return None;
                }
                if let Health::Disabled {
                    fingerprint: Some(old),
                    ..
                } = &self.health
                {
                    if old == fp {
                        return None;
                    }
                }
                self.clear();
                self.health = Health::Healthy;
                "a new secret was configured".to_owned()
            }
        };
        if self.health == before {
            return None;
        }
        self.since = now;
        Some(Step {
            from: Some(before),
            why,
            wants_probe,
        })
    }

    fn apply_probe(
        &mut self,
        outcome: &ProbeOutcome,
        policy: &Policy,
        now: Timestamp,
        fingerprint: Option<&str>,
    ) -> Option<String> {
        // A re-check of a disable.
        if let Health::Disabled {
            class,
            by_operator: false,
            since,
            evidence,
            fingerprint: fp,
            ..
        } = &self.health
        {
            let (class, since, evidence, fp) = (*class, *since, evidence.clone(), fp.clone());
            self.recheck_lease = None;
            return Some(match outcome {
                ProbeOutcome::Refuted => {
                    self.clear();
                    self.health = Health::Healthy;
                    "re-check succeeded: back in rotation".to_owned()
                }
                ProbeOutcome::Confirmed { .. } => {
                    self.rechecks = self.rechecks.saturating_add(1);
                    self.health = Health::Disabled {
                        class,
                        since,
                        evidence,
                        fingerprint: fp,
                        recheck_at: Some(now.plus(policy.recheck_after(class, self.rechecks))),
                        by_operator: false,
                    };
                    "re-check: still failing".to_owned()
                }
                ProbeOutcome::Inconclusive { why } => {
                    self.health = Health::Disabled {
                        class,
                        since,
                        evidence,
                        fingerprint: fp,
                        recheck_at: Some(now.plus(policy.probe_retry)),
                        by_operator: false,
                    };
                    format!("re-check inconclusive ({why})")
                }
            });
        }
        let Health::Probing {
            class,
            since,
            evidence,
            trial: false,
            ..
        } = &self.health
        else {
            return None;
        };
        let (class, since, evidence) = (*class, *since, evidence.clone());
        Some(match outcome {
            ProbeOutcome::Confirmed {
                evidence: probe_evidence,
            } => {
                // A refresh-driven probe confirms only a permanent failure.
                let class = if class == Class::AuthTransient {
                    Class::AuthPermanent
                } else {
                    class
                };
                self.inconclusive = 0;
                self.rechecks = 0;
                self.health = Health::Disabled {
                    class,
                    since: now,
                    evidence: if probe_evidence.is_empty() {
                        evidence
                    } else {
                        probe_evidence.clone()
                    },
                    fingerprint: fingerprint.map(str::to_owned),
                    recheck_at: Some(now.plus(policy.recheck_after(class, 0))),
                    by_operator: false,
                };
                format!("{class} confirmed by probe")
            }
            ProbeOutcome::Refuted => {
                self.inconclusive = 0;
                self.refresh_strikes = 0;
                self.strikes = 1;
                self.health = Health::Healthy;
                format!("probe refuted {class}: back in rotation")
            }
            ProbeOutcome::Inconclusive { why } => {
                self.inconclusive = self.inconclusive.saturating_add(1);
                let wait = policy
                    .probe_retry
                    .saturating_mul(1u32 << self.inconclusive.saturating_sub(1).min(16))
                    .min(policy.probe_retry_max);
                self.health = Health::Suspect {
                    class,
                    since,
                    evidence,
                    probe_at: now.plus(wait),
                };
                format!(
                    "probe inconclusive ({why}); again in {}",
                    humantime::format_duration(wait)
                )
            }
        })
    }

    fn clear(&mut self) {
        self.strikes = 0;
        self.strikers = Strikers::None;
        self.refresh_strikes = 0;
        self.inconclusive = 0;
        self.rechecks = 0;
        self.recheck_lease = None;
    }
}

pub(crate) fn suspect(class: Class, now: Timestamp, evidence: &str, policy: &Policy) -> Health {
    let wait = match class {
        Class::AuthPermanent | Class::AuthTransient => policy.auth_confirm_delay,
        _ => Duration::ZERO,
    };
    Health::Suspect {
        class,
        since: now,
        evidence: evidence.to_owned(),
        probe_at: now.plus(wait),
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `Class` as its snake_case name in persisted health.
mod class_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::classify::Class;

    pub(super) fn serialize<S: Serializer>(c: &Class, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Class, D::Error> {
        let name = String::deserialize(d)?;
        Class::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown failure class {name:?}")))
    }
}
