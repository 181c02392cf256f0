#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The alert outbox in the state file: written with the transition that causes it, kept
//! across a restart, removed once delivered, bounded.

use std::path::PathBuf;
use std::sync::Arc;

use keyward_core::classify::Class;
use keyward_core::health::{Actor, Health, ScopeKey, Timestamp, Transition, TransitionSink};
use keyward_store::{OutboxEntry, OutboxRule, SqliteStore, StoreError};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyward-outbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One message per disable, to one destination.
#[derive(Debug)]
struct OnDisable;

impl OutboxRule for OnDisable {
    fn entries(&self, t: &Transition) -> Vec<OutboxEntry> {
        match &t.to {
            Health::Disabled { .. } => vec![OutboxEntry {
                destination: "ops".into(),
                event: "credential.disabled".into(),
                body: format!("{{\"scope\":\"{}\"}}", t.scope),
            }],
            _ => Vec::new(),
        }
    }
}

fn disable(id: &str, seq: u64) -> Transition {
    Transition {
        seq,
        at: Timestamp(1_000 + seq),
        scope: ScopeKey::Credential(id.into()),
        from: Health::Healthy,
        to: Health::Disabled {
            class: Class::AuthPermanent,
            since: Timestamp(1_000 + seq),
            evidence: "401".into(),
            fingerprint: None,
            recheck_at: None,
            by_operator: false,
        },
        why: "test".into(),
        actor: Actor::Probe,
        fingerprint: None,
        durable: true,
        deny: None,
    }
}

fn success(id: &str, seq: u64) -> Transition {
    Transition {
        to: Health::Healthy,
        from: Health::Cooling {
            until: Timestamp(5),
            class: Class::RateLimit,
        },
        durable: false,
        ..disable(id, seq)
    }
}

#[test]
fn a_disable_and_its_alert_are_stored_together_and_survive_a_restart() {
    let dir = tempdir("restart");
    let path = dir.join("state.db");
    {
        let (store, _) = SqliteStore::open(&path).unwrap();
        let outbox = store.outbox();
        outbox.set_rule(Arc::new(OnDisable), 100);
        store.enqueue(disable("a", 1)).wait().unwrap();
        store.enqueue(success("b", 2)).wait().unwrap();
        let due = outbox.due(Timestamp(u64::MAX / 2), "ops", 10).unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].event, "credential.disabled");
        assert_eq!(due[0].body, "{\"scope\":\"credential/a\"}");
        assert_eq!(due[0].created, Timestamp(1_001));
    }
    // Restarted: the row is still there (nothing delivered it).
    let (store, _) = SqliteStore::open(&path).unwrap();
    let outbox = store.outbox();
    let due = outbox.due(Timestamp(u64::MAX / 2), "ops", 10).unwrap();
    assert_eq!(due.len(), 1);
    // A failed delivery: not due before its retry time, due after it, attempts counted.
    outbox.retry_at(due[0].id, Timestamp(5_000)).unwrap();
    assert!(outbox.due(Timestamp(4_999), "ops", 10).unwrap().is_empty());
    let again = outbox.due(Timestamp(5_000), "ops", 10).unwrap();
    assert_eq!(again[0].attempts, 1);
    // Delivered: removed.
    outbox.remove(again[0].id).unwrap();
    assert!(outbox.is_empty().unwrap());
}

#[test]
fn the_outbox_is_bounded_and_counts_what_it_drops() {
    let dir = tempdir("bounded");
    let (store, _) = SqliteStore::open(&dir.join("state.db")).unwrap();
    let outbox = store.outbox();
    outbox.set_rule(Arc::new(OnDisable), 3);
    for i in 0..5 {
        store.enqueue(disable(&format!("k{i}"), i)).wait().unwrap();
    }
    outbox
        .enqueue(
            vec![OutboxEntry {
                destination: "ops".into(),
                event: "incident.started".into(),
                body: "{}".into(),
            }],
            Timestamp(9_000),
        )
        .unwrap();
    assert_eq!(outbox.len().unwrap(), 3);
    assert_eq!(outbox.dropped(), 3);
    // The newest are kept.
    let events: Vec<String> = outbox
        .due(Timestamp(u64::MAX / 2), "ops", 10)
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(
        events,
        [
            "{\"scope\":\"credential/k3\"}",
            "{\"scope\":\"credential/k4\"}",
            "{}"
        ]
    );
}

#[test]
fn a_handle_does_not_keep_the_store_alive() {
    let dir = tempdir("weak");
    let (store, _) = SqliteStore::open(&dir.join("state.db")).unwrap();
    let outbox = store.outbox();
    drop(store);
    assert!(matches!(outbox.len(), Err(StoreError::Stopped)));
    // And the file can be opened again: the writer ended and released it.
    let (_store, _) = SqliteStore::open(&dir.join("state.db")).unwrap();
}

#[test]
fn each_destination_has_its_own_queue_and_pruning_drops_the_unknown_and_the_old() {
    let dir = tempdir("prune");
    let (store, _) = SqliteStore::open(&dir.join("state.db")).unwrap();
    let outbox = store.outbox();
    let entry = |destination: &str| OutboxEntry {
        destination: destination.into(),
        event: "incident.started".into(),
        body: "{}".into(),
    };
    outbox
        .enqueue(vec![entry("dead"); 5], Timestamp(1_000))
        .unwrap();
    outbox
        .enqueue(vec![entry("ops")], Timestamp(2_000))
        .unwrap();
    outbox
        .enqueue(vec![entry("gone")], Timestamp(3_000))
        .unwrap();
    // A destination's many rows do not hide another's.
    let ops = outbox.due(Timestamp(9_000), "ops", 2).unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].destination, "ops");
    // "gone" left the config; rows created before 1_500 are too old.
    let (unknown, expired) = outbox
        .prune(vec!["dead".into(), "ops".into()], Timestamp(1_500))
        .unwrap();
    assert_eq!((unknown, expired), (1, 5));
    assert_eq!(outbox.len().unwrap(), 1);
}
