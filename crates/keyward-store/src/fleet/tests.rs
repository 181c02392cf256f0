//! The merge rules', state encoding's and URL redaction's tests.

use keyward_core::classify::Class;
use keyward_core::health::{Actor, ScopeKey, Timestamp};

use super::merge::{merge, same_state};
use super::scripts::{decode, encode};
use super::*;

fn t(from: Health, to: Health, actor: Actor) -> Transition {
    Transition {
        seq: 1,
        at: Timestamp(1_000),
        scope: ScopeKey::Credential("k".into()),
        from,
        to,
        why: "test".into(),
        actor,
        fingerprint: Some("fp".into()),
        durable: false,
        deny: None,
    }
}

fn cooling(until: u64) -> Health {
    Health::Cooling {
        until: Timestamp(until),
        class: Class::RateLimit,
    }
}

fn disabled(by_operator: bool) -> Health {
    Health::Disabled {
        class: Class::AuthPermanent,
        since: Timestamp(1),
        evidence: "401".into(),
        fingerprint: Some("fp".into()),
        recheck_at: None,
        by_operator,
    }
}

#[test]
fn a_cooldown_is_never_shortened() {
    let mine = t(Health::Healthy, cooling(5_000), Actor::Traffic);
    assert_eq!(merge(&mine, &cooling(9_000)), None);
    assert_eq!(merge(&mine, &cooling(2_000)), Some(cooling(5_000)));
    assert_eq!(merge(&mine, &Health::Healthy), Some(cooling(5_000)));
}

#[test]
fn stronger_evidence_wins_and_progress_from_a_stale_state_is_absorbed() {
    let disable = t(cooling(1), disabled(false), Actor::Probe);
    assert_eq!(merge(&disable, &cooling(9_000)), Some(disabled(false)));
    let recovery = t(cooling(1), Health::Healthy, Actor::Traffic);
    assert_eq!(merge(&recovery, &disabled(false)), None);
    assert_eq!(merge(&recovery, &Health::Healthy), None);
    let suspect = Health::Suspect {
        class: Class::AuthPermanent,
        since: Timestamp(1),
        evidence: "401".into(),
        probe_at: Timestamp(2),
    };
    let lease = t(
        suspect.clone(),
        Health::Probing {
            class: Class::AuthPermanent,
            since: Timestamp(1),
            evidence: "401".into(),
            lease_until: Timestamp(3),
            trial: false,
        },
        Actor::Probe,
    );
    assert_eq!(merge(&lease, &Health::Healthy), None);
    assert!(same_state(&lease.from, &suspect));
}

#[test]
fn nothing_automatic_overrides_an_operator_disable() {
    let mine = t(Health::Healthy, disabled(false), Actor::Probe);
    assert_eq!(merge(&mine, &disabled(true)), None);
}

#[test]
fn states_round_trip_and_healthy_is_empty() {
    assert_eq!(encode(&Health::Healthy, Timestamp(5)), "");
    let s = encode(&cooling(7), Timestamp(5));
    assert_eq!(decode(&s), Some((cooling(7), Timestamp(5))));
    assert_eq!(decode("not json"), None);
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("redis://:hunter2@127.0.0.1:6379/0"),
        "redis://…@127.0.0.1:6379/0"
    );
    assert_eq!(
        redact_url("redis://127.0.0.1:6379"),
        "redis://127.0.0.1:6379"
    );
}
