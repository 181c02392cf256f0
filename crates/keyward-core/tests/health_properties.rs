#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Properties of the health engine over random sequences of verdicts, successes, probe
//! outcomes, operator actions and time:
//! - a disabled or suspect scope never gets user traffic;
//! - nothing is disabled except by a confirmed probe or an operator;
//! - attempts per request never exceed the cap;
//! - cooldowns never shrink on a repeat failure;
//! - an auth failure burst across many keys of one provider disables none.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_core::classify::{
    classify, Attempt, CredentialKind, Failure, Phase, Provider, TransportError,
};
use keyward_core::health::budget::RequestBudget;
use keyward_core::health::{
    Ack, Actor, CredentialSpec, Health, HealthEngine, ManualClock, Policy, ProbeOutcome,
    RequestSpec, RouteSpec, ScopeKey, Selection, TargetSpec, Timestamp, Transition, TransitionSink,
};
use proptest::prelude::*;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Transition>>);

impl TransitionSink for Recorder {
    fn enqueue(&self, t: Transition) -> Ack {
        self.0.lock().unwrap().push(t);
        Ack::done()
    }
}

fn failures() -> Vec<Failure> {
    let a = |p, s: u16, b: &str| classify(&Attempt::response(p, s, b.as_bytes()));
    let mut rate = a(
        Provider::Anthropic,
        429,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#,
    );
    rate.retry_after = Some(Duration::from_secs(7));
    vec![
        a(
            Provider::Anthropic,
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        ),
        a(
            Provider::Anthropic,
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low"}}"#,
        ),
        rate,
        a(
            Provider::Anthropic,
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#,
        ),
        a(
            Provider::Anthropic,
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        a(
            Provider::Anthropic,
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
        ),
        a(
            Provider::Anthropic,
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
        ),
        a(
            Provider::Anthropic,
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#,
        ),
        a(Provider::Anthropic, 403, "Forbidden"),
        classify(
            &Attempt::response(
                Provider::OpenAi,
                401,
                br#"{"error":{"code":"token_expired","message":"x"}}"#,
            )
            .credential(CredentialKind::OAuth),
        ),
        classify(&Attempt::transport(
            Provider::Anthropic,
            TransportError::Timeout,
            Phase::BeforeHeaders,
        )),
        classify(&Attempt::transport(
            Provider::Anthropic,
            TransportError::Reset,
            Phase::BeforeHeaders,
        )),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// A request: select, admit in order, each attempt fails with `failures[i]` or succeeds.
    Request {
        outcomes: Vec<Option<usize>>,
    },
    Advance(u64),
    Probe(u8),
    Reset(usize),
    Disable(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(prop::option::weighted(0.6, 0..12usize), 1..8).prop_map(|outcomes| Op::Request { outcomes }),
        2 => prop::sample::select(vec![1u64, 5, 10, 30, 120, 1800, 3600, 7200]).prop_map(Op::Advance),
        2 => (0u8..3).prop_map(Op::Probe),
        1 => (0usize..4).prop_map(Op::Reset),
        1 => (0usize..4).prop_map(Op::Disable),
    ]
}

const IDS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const MAX_ATTEMPTS: u32 = 4;

fn setup() -> (ManualClock, Arc<Recorder>, HealthEngine, RouteSpec) {
    let clock = ManualClock::at(Timestamp(1_751_278_440_000));
    let sink = Arc::new(Recorder::default());
    let engine = HealthEngine::new(Policy::default(), Arc::new(clock.clone()), sink.clone(), 3);
    engine.configure(
        IDS.iter()
            .map(|id| CredentialSpec {
                id: (*id).into(),
                provider: Provider::Anthropic,
                endpoint: "anthropic".into(),
                bucket: None,
                fingerprint: format!("fp-{id}").into(),
                priority: 0,
                models: None,
            })
            .collect(),
    );
    let route = RouteSpec::new(vec![TargetSpec {
        endpoint: "anthropic".into(),
        model: "m".into(),
        credentials: IDS.iter().map(|i| (*i).into()).collect(),
    }]);
    (clock, sink, engine, route)
}

fn out_of_rotation(h: &Health) -> bool {
    matches!(
        h,
        Health::Suspect { .. } | Health::Disabled { .. } | Health::Probing { trial: false, .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn health_invariants_hold_over_random_histories(ops in prop::collection::vec(op(), 1..60)) {
        let (clock, sink, engine, route) = setup();
        let fs = failures();
        let mut confirmed = 0usize;
        for op in ops {
            match op {
                Op::Request { outcomes } => {
                    let mut budget = RequestBudget::new(MAX_ATTEMPTS, engine.now().plus(Duration::from_secs(60)));
                    let mut attempts = 0;
                    if let Selection::Candidates(cands) = engine.select(&route, &RequestSpec::default()) {
                        for (cand, outcome) in cands.iter().zip(outcomes.iter().cycle()) {
                            if !budget.take(engine.now()) { break; }
                            let Some(a) = engine.admit(&route, cand, &RequestSpec::default()) else { continue };
                            attempts += 1;
                            let cred = a.credential();
                            // No user traffic on a scope out of rotation.
                            let h = engine.health(&ScopeKey::Credential(cred.clone())).unwrap();
                            prop_assert!(!out_of_rotation(&h), "admitted {cred} while {h:?}");
                            if let Some(h) = engine.health(&ScopeKey::CredentialModel(cred.clone(), "m".into())) {
                                prop_assert!(!out_of_rotation(&h), "admitted {cred} while model scope {h:?}");
                            }
                            match outcome {
                                None => { engine.record_success(a, None); break; }
                                Some(i) => {
                                    let before = engine.snapshot();
                                    engine.record_failure(a, &fs[*i]);
                                    // Cooldowns never shrink.
                                    for (k, h, _) in engine.snapshot() {
                                        if let (Health::Cooling { until: after, .. }, Some((_, Health::Cooling { until: prior, .. }, _))) =
                                            (&h, before.iter().find(|(kk, _, _)| *kk == k))
                                        {
                                            prop_assert!(after >= prior, "{k}: cooldown shrank from {prior} to {after}");
                                        }
                                    }
                                }
                            }
                        }
                    }
                    prop_assert!(attempts <= MAX_ATTEMPTS);
                }
                Op::Advance(s) => clock.advance(Duration::from_secs(s)),
                Op::Probe(kind) => {
                    for p in engine.due_probes() {
                        let outcome = match kind {
                            0 => { confirmed += 1; ProbeOutcome::Confirmed { evidence: "same again".into() } }
                            1 => ProbeOutcome::Refuted,
                            _ => ProbeOutcome::Inconclusive { why: "503".into() },
                        };
                        engine.record_probe(&p, outcome).wait().unwrap();
                    }
                }
                Op::Reset(i) => { engine.reset(IDS[i]); }
                Op::Disable(i) => { engine.disable(IDS[i], "test"); }
            }
            // Nothing is disabled except by a confirmed probe, an operator, or an auth
            // incident that outlasted `incident_max` (every key rejected all along).
            for t in sink.0.lock().unwrap().iter() {
                if matches!(t.to, Health::Disabled { .. }) && !matches!(t.from, Health::Disabled { .. }) {
                    prop_assert!(matches!(t.actor, Actor::Probe | Actor::Operator)
                        || (t.actor == Actor::Incident && t.why.contains("outlasted")), "{t:?}");
                    if t.actor == Actor::Probe {
                        prop_assert!(confirmed > 0, "disabled by a probe that was never confirmed: {t:?}");
                    }
                    prop_assert!(t.durable);
                }
            }
        }
    }

    #[test]
    fn an_auth_burst_across_a_providers_keys_disables_none(
        order in Just(IDS.to_vec()).prop_shuffle(),
        gaps in prop::collection::vec(0u64..5, 4),
        probes in prop::collection::vec(0u8..3, 1..6),
    ) {
        let (clock, sink, engine, route) = setup();
        let revoked = &failures()[0];
        for (id, gap) in order.iter().zip(gaps) {
            clock.advance(Duration::from_secs(gap));
            if let Selection::Candidates(cands) = engine.select(&route, &RequestSpec::default()) {
                for c in cands {
                    if let Some(a) = engine.admit(&route, &c, &RequestSpec::default()) {
                        if &*a.credential() == *id { engine.record_failure(a, revoked); break; }
                    }
                }
            }
            // Whatever the prober does meanwhile, including confirming.
            for kind in &probes {
                for p in engine.due_probes() {
                    let o = match kind { 0 => ProbeOutcome::Confirmed { evidence: "401".into() }, 1 => ProbeOutcome::Refuted, _ => ProbeOutcome::Inconclusive { why: "x".into() } };
                    engine.record_probe(&p, o);
                }
            }
        }
        // Four keys failing auth within seconds of each other: an incident, not four
        // revocations. Nothing is disabled, whatever the prober reported meanwhile.
        prop_assert!(engine.incident_active("anthropic"));
        let disabled: Vec<_> = sink.0.lock().unwrap().iter().filter(|t| matches!(t.to, Health::Disabled { .. })).cloned().collect();
        prop_assert!(disabled.is_empty(), "disabled in a burst: {disabled:?}");
        for id in IDS {
            let h = engine.health(&ScopeKey::Credential(id.into()));
            prop_assert!(!matches!(h, Some(Health::Disabled { .. })), "{} is {:?}", id, h);
        }
    }
}
