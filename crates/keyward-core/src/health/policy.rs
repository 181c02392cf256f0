//! What each failure class does to health, with every number configurable.
//!
//! Defaults follow DESIGN.md: credential-shaped failures (`auth_permanent`, `billing`,
//! `model_not_found`) make their scope suspect and ask for a confirmation probe; capacity
//! and transport failures open a short, capped circuit after a few consecutive failures;
//! rate limits cool until their reset; the caller's own errors touch nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::Class;

/// How a class affects the health of its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Nothing: the request was at fault (bad request, context overflow, content filter).
    None,
    /// Count a strike; after `threshold` consecutive strikes, cool with the backoff curve.
    Cool,
    /// Fail over now, take the scope out of rotation and ask for a confirmation probe.
    /// Only a confirmed probe disables.
    Confirm,
    /// Refresh the credential and retry once; repeated strikes lead to a probe, never
    /// straight to a disable.
    Refresh,
}

/// A capped, jittered exponential backoff: `base × 2^(strikes-1)`, at most `max`, with up to
/// `jitter` (a fraction) added.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// First cooldown.
    #[serde(with = "humantime_serde_ms")]
    pub base: Duration,
    /// Longest cooldown.
    #[serde(with = "humantime_serde_ms")]
    pub max: Duration,
    /// Fraction of random extra delay (0.0–1.0), so that replicas and keys do not retry in
    /// lockstep.
    pub jitter: f64,
}

impl Backoff {
    /// The cooldown after `strikes` consecutive failures, with `roll` in `[0, 1)` choosing
    /// the jitter (passed in so the policy stays pure and tests deterministic).
    pub fn delay(&self, strikes: u32, roll: f64) -> Duration {
        let exp = strikes.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let extra = raw.mul_f64(self.jitter.clamp(0.0, 1.0) * roll.clamp(0.0, 1.0));
        raw.saturating_add(extra).min(self.max)
    }
}

/// Policy for one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPolicy {
    /// The health effect.
    pub effect: Effect,
    /// Consecutive failures before a `Cool` effect opens the circuit (1 = at once).
    pub threshold: u32,
    /// The cooldown curve.
    pub backoff: Backoff,
    /// Whether the same credential may be tried again within the same request (after the
    /// backoff or a refresh) before failing over.
    pub retry_same: bool,
    /// Whether a `retry_after` the provider gives sets the cooldown (capped by
    /// [`Policy::max_retry_after`]).
    pub honour_retry_after: bool,
    /// Touch this scope instead of the one the classifier chose (e.g. treat every rate
    /// limit as bucket-wide for providers that share limits across an org).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::classify::Scope>,
}

/// The whole health policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub auth_transient: ClassPolicy,
    pub auth_permanent: ClassPolicy,
    pub billing: ClassPolicy,
    pub rate_limit: ClassPolicy,
    pub overloaded: ClassPolicy,
    pub timeout: ClassPolicy,
    pub network: ClassPolicy,
    pub server_error: ClassPolicy,
    pub bad_request: ClassPolicy,
    pub context_overflow: ClassPolicy,
    pub model_not_found: ClassPolicy,
    pub content_filter: ClassPolicy,
    /// Sanity cap on a provider's `retry_after`.
    #[serde(with = "humantime_serde_ms")]
    pub max_retry_after: Duration,
    /// How long a probe may hold its lease before another may start.
    #[serde(with = "humantime_serde_ms")]
    pub probe_lease: Duration,
    /// Delay before retrying an inconclusive probe (doubles, capped at `probe_retry_max`).
    #[serde(with = "humantime_serde_ms")]
    pub probe_retry: Duration,
    #[serde(with = "humantime_serde_ms")]
    pub probe_retry_max: Duration,
    /// Re-probe interval for `billing` and `model_not_found` disables.
    #[serde(with = "humantime_serde_ms")]
    pub billing_recheck: Duration,
    /// First and longest background re-check interval for `auth_permanent` disables.
    #[serde(with = "humantime_serde_ms")]
    pub auth_recheck_min: Duration,
    #[serde(with = "humantime_serde_ms")]
    pub auth_recheck_max: Duration,
    /// How long an auth suspect waits before its confirmation probe. The key is already out
    /// of rotation, so traffic pays nothing; the wait lets a provider-wide incident show
    /// itself before any probe could "confirm" it.
    #[serde(with = "humantime_serde_ms")]
    pub auth_confirm_delay: Duration,
    /// `auth_transient` strikes without a success before the credential is probed.
    pub refresh_strikes_before_probe: u32,
    /// Provider-wide auth incident on one endpoint: this many distinct credentials of the
    /// endpoint failing auth within `incident_window`, with no credential of the endpoint
    /// succeeding since the first of those failures, is an incident, not a set of
    /// revocations (healthy siblings that answer refute it)…
    pub incident_credentials: u32,
    #[serde(with = "humantime_serde_ms")]
    pub incident_window: Duration,
    /// …during which nothing is disabled, and one of its credentials is probed this often
    /// to learn when it ends (a success anywhere on the endpoint ends it)…
    #[serde(with = "humantime_serde_ms")]
    pub incident_cooldown: Duration,
    /// …for at most this long: an incident whose every probe is still rejected after it
    /// is every key of the endpoint revoked at once, and its credentials are disabled…
    #[serde(with = "humantime_serde_ms")]
    pub incident_max: Duration,
    /// …and re-checked this soon (doubling up to `auth_recheck_max`), so that a provider
    /// outage that outlasted `incident_max` heals by itself.
    #[serde(with = "humantime_serde_ms")]
    pub incident_recheck: Duration,
}

const fn cool(threshold: u32, base_ms: u64, max_ms: u64, retry_same: bool) -> ClassPolicy {
    ClassPolicy {
        effect: Effect::Cool,
        threshold,
        backoff: Backoff {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
            jitter: 0.2,
        },
        retry_same,
        honour_retry_after: true,
        scope: None,
    }
}

const fn effect_only(effect: Effect, retry_same: bool) -> ClassPolicy {
    ClassPolicy {
        effect,
        threshold: 1,
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(20),
            jitter: 0.2,
        },
        retry_same,
        honour_retry_after: false,
        scope: None,
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            auth_transient: effect_only(Effect::Refresh, true),
            auth_permanent: effect_only(Effect::Confirm, false),
            billing: effect_only(Effect::Confirm, false),
            // Per-key limits: cool at once until the reset, up to a minute without a hint.
            rate_limit: cool(1, 1_000, 60_000, false),
            // Circuits on provider×model and endpoint: capped low so a recovered provider
            // is back within seconds.
            overloaded: cool(2, 1_000, 20_000, false),
            timeout: cool(2, 2_000, 20_000, false),
            network: cool(3, 1_000, 20_000, true),
            server_error: cool(3, 1_000, 20_000, true),
            bad_request: effect_only(Effect::None, false),
            context_overflow: effect_only(Effect::None, false),
            model_not_found: effect_only(Effect::Confirm, false),
            content_filter: effect_only(Effect::None, false),
            max_retry_after: Duration::from_secs(3600),
            probe_lease: Duration::from_secs(30),
            probe_retry: Duration::from_secs(10),
            probe_retry_max: Duration::from_secs(300),
            billing_recheck: Duration::from_secs(30 * 60),
            auth_recheck_min: Duration::from_secs(3600),
            auth_recheck_max: Duration::from_secs(24 * 3600),
            auth_confirm_delay: Duration::from_secs(15),
            refresh_strikes_before_probe: 3,
            incident_credentials: 3,
            incident_window: Duration::from_secs(60),
            incident_cooldown: Duration::from_secs(30),
            incident_max: Duration::from_secs(120),
            incident_recheck: Duration::from_secs(300),
        }
    }
}

impl Policy {
    /// The policy for `class`.
    pub fn for_class(&self, class: Class) -> &ClassPolicy {
        match class {
            Class::AuthTransient => &self.auth_transient,
            Class::AuthPermanent => &self.auth_permanent,
            Class::Billing => &self.billing,
            Class::RateLimit => &self.rate_limit,
            Class::Overloaded => &self.overloaded,
            Class::Timeout => &self.timeout,
            Class::Network => &self.network,
            Class::ServerError => &self.server_error,
            Class::BadRequest => &self.bad_request,
            Class::ContextOverflow => &self.context_overflow,
            Class::ModelNotFound => &self.model_not_found,
            Class::ContentFilter => &self.content_filter,
        }
    }

    /// The re-check interval of a disable after `rechecks` earlier re-checks failed.
    pub fn recheck_after(&self, class: Class, rechecks: u32) -> Duration {
        match class {
            Class::AuthPermanent => self
                .auth_recheck_min
                .saturating_mul(1u32 << rechecks.min(16))
                .min(self.auth_recheck_max),
            _ => self.billing_recheck,
        }
    }
}

/// Durations in config as humantime strings ("30s", "1h", "250ms").
mod humantime_serde_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. \"30s\", \"5m\", \"1h\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(20),
            jitter: 0.2,
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(b.delay(6, 0.0), Duration::from_secs(20));
        assert_eq!(b.delay(60, 0.99), Duration::from_secs(20));
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(1100));
    }

    #[test]
    fn auth_recheck_grows_from_an_hour_to_a_day() {
        let p = Policy::default();
        assert_eq!(
            p.recheck_after(Class::AuthPermanent, 0),
            Duration::from_secs(3600)
        );
        assert_eq!(
            p.recheck_after(Class::AuthPermanent, 1),
            Duration::from_secs(7200)
        );
        assert_eq!(
            p.recheck_after(Class::AuthPermanent, 10),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            p.recheck_after(Class::Billing, 5),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn credential_classes_confirm_and_caller_classes_do_nothing() {
        let p = Policy::default();
        for c in [Class::AuthPermanent, Class::Billing, Class::ModelNotFound] {
            assert_eq!(p.for_class(c).effect, Effect::Confirm, "{c}");
            assert!(!p.for_class(c).retry_same, "{c}");
        }
        for c in [
            Class::BadRequest,
            Class::ContextOverflow,
            Class::ContentFilter,
        ] {
            assert_eq!(p.for_class(c).effect, Effect::None, "{c}");
        }
        for c in [
            Class::Overloaded,
            Class::Timeout,
            Class::Network,
            Class::ServerError,
        ] {
            assert!(p.for_class(c).backoff.max <= Duration::from_secs(20), "{c}");
        }
    }
}
