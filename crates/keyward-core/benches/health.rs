//! Selection plus bookkeeping for one request: select candidates on a route, admit the
//! first, record its success. 1,000 credentials over 50 routes (20 per route, across 10
//! endpoints), one in ten disabled, a few cooling. Goal: median ≤ 2 µs on the 2-core dev
//! machine, and no store write on the success path.
//!
//! Run: `cargo bench -p keyward-core --bench health`

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keyward_core::classify::Provider;
use keyward_core::health::{
    Ack, CredentialSpec, HealthEngine, ManualClock, Policy, RequestSpec, RouteSpec, Selection,
    TargetSpec, Timestamp, Transition, TransitionSink,
};

fn main() {
    divan::main();
}

#[derive(Debug, Default)]
struct CountingSink(AtomicUsize);

impl TransitionSink for CountingSink {
    fn enqueue(&self, _t: Transition) -> Ack {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ack::done()
    }
}

struct Setup {
    engine: HealthEngine,
    routes: Vec<RouteSpec>,
    sink: Arc<CountingSink>,
}

fn setup() -> Setup {
    let clock = ManualClock::at(Timestamp(1_751_278_440_000));
    let sink = Arc::new(CountingSink::default());
    let engine = HealthEngine::new(Policy::default(), Arc::new(clock), sink.clone(), 9);
    let creds: Vec<CredentialSpec> = (0..1000)
        .map(|i| CredentialSpec {
            id: format!("cred-{i:04}").into(),
            provider: Provider::OpenAi,
            endpoint: format!("endpoint-{}", i % 10).into(),
            bucket: Some(format!("org-{}", i % 25).into()),
            fingerprint: format!("fp-{i}").into(),
            priority: i % 3,
            models: None,
        })
        .collect();
    let routes: Vec<RouteSpec> = (0..50)
        .map(|r| {
            let endpoint = format!("endpoint-{}", r % 10);
            let ids = creds
                .iter()
                .filter(|c| *c.endpoint == *endpoint)
                .skip((r / 10) * 20)
                .take(20)
                .map(|c| c.id.clone())
                .collect();
            RouteSpec::new(vec![TargetSpec {
                endpoint: endpoint.into(),
                model: format!("model-{r}").into(),
                credentials: ids,
            }])
        })
        .collect();
    engine.configure(creds);
    for i in (0..1000).step_by(10) {
        engine.disable(&format!("cred-{i:04}"), "benchmark");
    }
    let before = sink.0.load(Ordering::Relaxed);
    let s = Setup {
        engine,
        routes,
        sink,
    };
    s.sink.0.store(before, Ordering::Relaxed);
    s
}

/// A request's engine work on its success path, routes in turn: select, admit the first
/// candidate, record its success (which must not write to the store).
fn admit_and_succeed(bencher: divan::Bencher, s: &Setup) {
    let req = RequestSpec::default();
    let writes_before = s.sink.0.load(Ordering::Relaxed);
    let mut r = 0usize;
    bencher.bench_local(|| {
        r = (r + 7) % s.routes.len();
        let route = &s.routes[r];
        let Selection::Candidates(c) = s.engine.select(route, &req) else {
            return;
        };
        if let Some(a) = s.engine.admit(route, &c[0], &req) {
            s.engine.record_success(black_box(a), None);
        }
    });
    assert_eq!(
        s.sink.0.load(Ordering::Relaxed),
        writes_before,
        "the success path must not write"
    );
}

/// Selection alone, routes in turn.
fn select_in_turn(bencher: divan::Bencher, s: &Setup) {
    let req = RequestSpec::default();
    let mut r = 0usize;
    bencher.bench_local(|| {
        r = (r + 7) % s.routes.len();
        black_box(s.engine.select(&s.routes[r], &req))
    });
}

#[divan::bench]
fn select_admit_success(bencher: divan::Bencher) {
    admit_and_succeed(bencher, &setup());
}

#[divan::bench]
fn select_only(bencher: divan::Bencher) {
    select_in_turn(bencher, &setup());
}

/// The scale of issue 21: 2,000 credentials (100 on each of 20 endpoints, one in ten
/// disabled) under 200 routes, each with two targets of 10 credentials (20 candidates),
/// the shape `bench/scale_config.py` writes for the reload and startup measurements.
fn setup_200x2000() -> Setup {
    let clock = ManualClock::at(Timestamp(1_751_278_440_000));
    let sink = Arc::new(CountingSink::default());
    let engine = HealthEngine::new(Policy::default(), Arc::new(clock), sink.clone(), 9);
    let id = |e: usize, i: usize| format!("c{e:02}-{i:03}");
    let creds: Vec<CredentialSpec> = (0..20)
        .flat_map(|e| (0..100).map(move |i| (e, i)))
        .map(|(e, i)| CredentialSpec {
            id: id(e, i).into(),
            provider: Provider::Anthropic,
            endpoint: format!("ep{e:02}").into(),
            bucket: Some(format!("org-{}", (e * 100 + i) % 50).into()),
            fingerprint: format!("fp-{e}-{i}").into(),
            priority: 0,
            models: None,
        })
        .collect();
    let routes: Vec<RouteSpec> = (0..200)
        .map(|r| {
            let slice = (r / 20) % 10;
            RouteSpec::new(
                [r % 20, (r + 1) % 20]
                    .into_iter()
                    .map(|e| TargetSpec {
                        endpoint: format!("ep{e:02}").into(),
                        model: "claude-bench".into(),
                        credentials: (0..10).map(|i| id(e, slice * 10 + i).into()).collect(),
                    })
                    .collect(),
            )
        })
        .collect();
    engine.configure(creds);
    for e in 0..20 {
        for i in (0..100).step_by(10) {
            engine.disable(&id(e, i), "benchmark");
        }
    }
    Setup {
        engine,
        routes,
        sink,
    }
}

#[divan::bench]
fn select_admit_success_200x2000(bencher: divan::Bencher) {
    admit_and_succeed(bencher, &setup_200x2000());
}

#[divan::bench]
fn select_only_200x2000(bencher: divan::Bencher) {
    select_in_turn(bencher, &setup_200x2000());
}

/// Reconfiguring the engine with 2,000 credentials, as a reload of that config does (the
/// rest of a reload — reading and validating the file, building the gateway — is timed
/// end to end by `bench/scale.sh`).
#[divan::bench(sample_count = 20)]
fn configure_2000(bencher: divan::Bencher) {
    let s = setup_200x2000();
    let creds: Vec<CredentialSpec> = (0..2000)
        .map(|n| CredentialSpec {
            id: format!("c{:02}-{:03}", n / 100, n % 100).into(),
            provider: Provider::Anthropic,
            endpoint: format!("ep{:02}", n / 100).into(),
            bucket: Some(format!("org-{}", n % 50).into()),
            fingerprint: format!("fp-{}-{}", n / 100, n % 100).into(),
            priority: 0,
            models: None,
        })
        .collect();
    bencher.bench_local(|| s.engine.configure(black_box(creds.clone())));
}
