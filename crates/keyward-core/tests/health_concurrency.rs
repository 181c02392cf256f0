#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! 100 concurrent requests hit a route whose first key is revoked. Exactly one
//! confirmation probe is asked for, every request is served by the healthy key, and once
//! the first verdict on the revoked key is recorded no new attempt is admitted on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use keyward_core::classify::{classify, Attempt, Provider};
use keyward_core::health::{
    CredentialSpec, HealthEngine, ManualClock, Policy, ProbeRequest, RequestSpec, RouteSpec,
    Selection, TargetSpec, Timestamp,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    AdmitRevoked,
    VerdictRevoked,
}

#[test]
fn one_probe_and_no_attempt_after_the_first_verdict_under_concurrency() {
    let clock = ManualClock::at(Timestamp(1_751_278_440_000));
    let engine = HealthEngine::new(
        Policy::default(),
        Arc::new(clock.clone()),
        Arc::new(keyward_core::health::engine::NullSink),
        1,
    );
    let spec = |id: &str, priority| CredentialSpec {
        id: id.into(),
        provider: Provider::Anthropic,
        endpoint: "anthropic".into(),
        bucket: None,
        fingerprint: format!("fp-{id}").into(),
        priority,
        models: None,
    };
    // The revoked key has the higher priority: every request tries it first.
    engine.configure(vec![spec("revoked", 10), spec("good", 0)]);
    let route = Arc::new(RouteSpec::new(vec![TargetSpec {
        endpoint: "anthropic".into(),
        model: "m".into(),
        credentials: vec!["revoked".into(), "good".into()],
    }]));
    let verdict = classify(&Attempt::response(
        Provider::Anthropic,
        401,
        br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
    ));
    // Engine order of admissions and verdicts on the revoked key: each is taken together
    // with its log entry under this lock, so the log is the engine's order.
    let order: Arc<Mutex<Vec<Mark>>> = Arc::new(Mutex::new(Vec::new()));
    let probes: Arc<Mutex<Vec<ProbeRequest>>> = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(101));

    // A prober polling for due probes the whole time.
    let polls = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (engine, probes, stop, polls) =
            (engine.clone(), probes.clone(), stop.clone(), polls.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                probes.lock().unwrap().extend(engine.due_probes());
                polls.fetch_add(1, Ordering::SeqCst);
                std::thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..100)
        .map(|_| {
            let (engine, route, order, served, barrier, verdict) = (
                engine.clone(),
                route.clone(),
                order.clone(),
                served.clone(),
                barrier.clone(),
                verdict.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let req = RequestSpec::default();
                let Selection::Candidates(cands) = engine.select(&route, &req) else {
                    panic!("no candidates")
                };
                for c in cands {
                    let admitted = {
                        let mut log = order.lock().unwrap();
                        let a = engine.admit(&route, &c, &req);
                        if a.as_ref().is_some_and(|a| &*a.credential() == "revoked") {
                            log.push(Mark::AdmitRevoked);
                        }
                        a
                    };
                    let Some(a) = admitted else { continue };
                    if &*a.credential() == "revoked" {
                        std::thread::yield_now(); // the upstream call
                        let mut log = order.lock().unwrap();
                        engine.record_failure(a, &verdict);
                        log.push(Mark::VerdictRevoked);
                    } else {
                        engine.record_success(a, None);
                        served.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                panic!("request not served");
            })
        })
        .collect();
    barrier.wait();
    for w in workers {
        w.join().unwrap();
    }
    // Past the auth settle delay: the probe becomes due; the prober keeps polling.
    clock.advance(Duration::from_secs(16));
    let seen = polls.load(Ordering::SeqCst);
    while polls.load(Ordering::SeqCst) < seen + 1000 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();

    assert_eq!(
        served.load(Ordering::SeqCst),
        100,
        "every caller was served by the healthy key"
    );
    let log = order.lock().unwrap();
    let first_verdict = log
        .iter()
        .position(|m| *m == Mark::VerdictRevoked)
        .expect("the revoked key was tried");
    let late = log[first_verdict..]
        .iter()
        .filter(|m| **m == Mark::AdmitRevoked)
        .count();
    assert_eq!(
        late, 0,
        "attempts admitted on the revoked key after its first verdict: {late}"
    );
    let probes = probes.lock().unwrap();
    assert_eq!(
        probes.len(),
        1,
        "exactly one confirmation probe: {probes:?}"
    );
    assert_eq!(&*probes[0].credential, "revoked");
}
