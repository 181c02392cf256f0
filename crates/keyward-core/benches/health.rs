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

#[divan::bench]
fn select_admit_success(bencher: divan::Bencher) {
    let s = setup();
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

#[divan::bench]
fn select_only(bencher: divan::Bencher) {
    let s = setup();
    let req = RequestSpec::default();
    let mut r = 0usize;
    bencher.bench_local(|| {
        r = (r + 7) % s.routes.len();
        black_box(s.engine.select(&s.routes[r], &req))
    });
}
