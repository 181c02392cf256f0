#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]
//! Fleet mode against a real `redis-server` (started per test on a loopback port):
//! versioned transitions under concurrent writers, leases outliving a dead holder only
//! until they lapse, a replica cut off from Redis catching up on what was published
//! meanwhile, and a Redis that lost its data re-seeded from the replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::classify::{Class, Provider};
use keyward_core::health::{
    Actor, CredentialSpec, Health, HealthEngine, ManualClock, Policy, ScopeKey, Timestamp,
    Transition, TransitionSink,
};
use keyward_sim::redis_server::RedisServer;
use keyward_store::{FleetConfig, Lease, RedisStore};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server (scripts/test.sh installs it)")
}

async fn replica(url: &str, name: &str) -> (RedisStore, HealthEngine) {
    replica_with_ca(url, name, None).await
}

async fn replica_with_ca(
    url: &str,
    name: &str,
    ca_pem: Option<Vec<u8>>,
) -> (RedisStore, HealthEngine) {
    let (store, loaded) = RedisStore::connect(FleetConfig {
        url: url.to_owned(),
        prefix: "test".into(),
        replica: name.into(),
        timeout: Duration::from_millis(500),
        ca_pem,
    })
    .await
    .unwrap();
    let engine = HealthEngine::new(
        Policy::default(),
        Arc::new(ManualClock::at(T0)),
        Arc::new(store.clone()),
        7,
    );
    engine.configure(vec![CredentialSpec {
        id: "k".into(),
        provider: Provider::Anthropic,
        endpoint: "anthropic".into(),
        bucket: None,
        fingerprint: "fp-k".into(),
        priority: 0,
        models: None,
    }]);
    engine.restore(loaded.records, loaded.denylist);
    store.attach(engine.clone());
    (store, engine)
}

fn cooling(until: u64) -> Health {
    Health::Cooling {
        until: Timestamp(until),
        class: Class::RateLimit,
    }
}

fn disabled() -> Health {
    Health::Disabled {
        class: Class::AuthPermanent,
        since: T0,
        evidence: "401 invalid x-api-key".into(),
        fingerprint: Some("fp-k".into()),
        recheck_at: None,
        by_operator: false,
    }
}

fn transition(seq: u64, from: Health, to: Health) -> Transition {
    Transition {
        seq,
        at: T0,
        scope: ScopeKey::Credential("k".into()),
        from,
        to,
        why: format!("verdict {seq}"),
        actor: Actor::Traffic,
        fingerprint: Some("fp-k".into()),
        durable: false,
        deny: None,
    }
}

/// Polls `f` until it holds, for at most `limit`.
async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// (version, kind, replica) of every log entry of `scope`, oldest first.
async fn log_of(url: &str, scope: &str) -> Vec<(u64, String, String)> {
    let mut c = raw(url).await;
    let all: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("test:log")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    all.into_iter()
        .filter_map(|(_, f)| {
            let get = |k: &str| {
                f.chunks(2)
                    .find(|p| p[0] == k)
                    .map(|p| p[1].clone())
                    .unwrap_or_default()
            };
            (get("scope") == scope)
                .then(|| (get("v").parse().unwrap(), get("kind"), get("replica")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_no_transition_and_never_shorten_a_cooldown() {
    let server = redis();
    let url = server.url();
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(replica(&url, name).await);
    }
    let (_watching, watcher) = replica(&url, "watcher").await;
    // Each replica records 100 cooldown verdicts on the same scope at once, each ending
    // at a different time; every replica believes it moves from healthy.
    let mut latest = 0;
    let mut tasks = Vec::new();
    let start = Arc::new(tokio::sync::Barrier::new(3));
    for (r, (store, _)) in replicas.iter().enumerate() {
        let store = store.clone();
        let start = start.clone();
        let ends: Vec<u64> = (0..100u64)
            .map(|i| T0.0 + 1_000 + i * 37 + r as u64 * 11)
            .collect();
        latest = latest.max(*ends.iter().max().unwrap());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for (i, until) in ends.into_iter().enumerate() {
                drop(store.enqueue(transition(i as u64, Health::Healthy, cooling(until))));
            }
            store.flush().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = log_of(&url, "credential/k").await;
    // Nothing lost: every verdict is in the log, applied or absorbed.
    assert_eq!(log.len(), 300, "{log:?}");
    // Applied transitions have versions 1, 2, 3… with no gap and no repeat.
    let versions: Vec<u64> = log
        .iter()
        .filter(|(_, kind, _)| kind == "transition")
        .map(|(v, _, _)| *v)
        .collect();
    assert!(!versions.is_empty());
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    // Verdicts computed from a state the fleet had left were merged, not lost: those
    // that would have shortened the cooldown in force are logged as absorbed.
    assert!(log.iter().any(|(_, kind, _)| kind == "absorbed"), "{log:?}");
    // The cooldown that ends last is the one in force, in Redis and on every replica.
    let mut c = raw(&url).await;
    let stored: String = redis::cmd("HGET")
        .arg("test:health")
        .arg("credential/k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(stored.contains(&latest.to_string()), "{stored}");
    // A replica that only watched converges on it (and one that joins later loads it).
    let key = ScopeKey::Credential("k".into());
    eventually(
        Duration::from_secs(5),
        "the watching replica converges",
        || watcher.health(&key) == Some(cooling(latest)),
    )
    .await;
    let (_, late) = replica(&url, "late").await;
    assert_eq!(late.health(&key), Some(cooling(latest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_dead_replica_lapses_and_no_sooner() {
    let server = redis();
    let url = server.url();
    let (a, _) = replica(&url, "a").await;
    let (b, _) = replica(&url, "b").await;
    let ttl = Duration::from_millis(800);
    let Lease::Held(_) = a.lease("probe:credential/k", ttl).await else {
        panic!("the first replica gets the lease");
    };
    let taken_at = Instant::now();
    assert_eq!(b.lease("probe:credential/k", ttl).await, Lease::Taken);
    // The holder dies without releasing it.
    drop(a);
    loop {
        match b.lease("probe:credential/k", ttl).await {
            Lease::Held(token) => {
                let waited = taken_at.elapsed();
                assert!(waited >= ttl - Duration::from_millis(100), "{waited:?}");
                assert!(waited < ttl + Duration::from_secs(1), "{waited:?}");
                b.release("probe:credential/k", &token).await;
                break;
            }
            Lease::Taken => tokio::time::sleep(Duration::from_millis(20)).await,
            Lease::Unavailable => panic!("redis is up"),
        }
    }
    // Released: the next holder gets it at once.
    assert!(matches!(
        b.lease("probe:credential/k", ttl).await,
        Lease::Held(_)
    ));
}

/// A TCP forwarder that can cut a replica off from Redis and let it back.
struct Partition {
    addr: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Partition {
    async fn new(upstream: u16) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (o, c) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut cut = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut out) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Partition { addr, open, cut }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_redis_catches_up_and_its_own_transitions_arrive() {
    let server = redis();
    let (a, engine_a) = replica(&server.url(), "a").await;
    let partition = Partition::new(server.port()).await;
    let (b, engine_b) = replica(&partition.url(), "b").await;
    let key = ScopeKey::Credential("k".into());
    let model_key = ScopeKey::CredentialModel("k".into(), "m".into());
    partition.cut();
    eventually(Duration::from_secs(10), "b reports the degradation", || {
        b.status().degraded_since.is_some()
    })
    .await;
    // While b is cut off: a disables k; b records a verdict of its own on another scope.
    drop(a.enqueue(transition(1, Health::Healthy, disabled())));
    a.flush().await;
    let model_verdict = Transition {
        scope: model_key.clone(),
        ..transition(1, Health::Healthy, cooling(T0.0 + 60_000))
    };
    drop(b.enqueue(model_verdict));
    assert_eq!(engine_b.health(&key), Some(Health::Healthy));
    assert!(b.status().pending >= 1 || b.status().degraded_since.is_some());
    partition.heal();
    eventually(
        Duration::from_secs(10),
        "b applies what a published meanwhile",
        || matches!(engine_b.health(&key), Some(Health::Disabled { .. })),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "a receives what b kept meanwhile",
        || engine_a.health(&model_key) == Some(cooling(T0.0 + 60_000)),
    )
    .await;
    eventually(Duration::from_secs(5), "b reports it is back", || {
        b.status().degraded_since.is_none() && b.status().pending == 0
    })
    .await;
    // The fleet log holds both, each once.
    let log = log_of(&server.url(), "credential/k").await;
    assert_eq!(log.len(), 1, "{log:?}");
    let log = log_of(&server.url(), "credential_model/k/m").await;
    assert_eq!(log.len(), 1, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_lost_its_data_is_reseeded_from_the_replicas() {
    let mut server = redis();
    let url = server.url();
    let (a, _engine_a) = replica(&url, "a").await;
    let (b, engine_b) = replica(&url, "b").await;
    drop(a.enqueue(transition(1, Health::Healthy, disabled())));
    a.flush().await;
    let key = ScopeKey::Credential("k".into());
    eventually(Duration::from_secs(5), "b sees the disable", || {
        matches!(engine_b.health(&key), Some(Health::Disabled { .. }))
    })
    .await;
    // Redis restarts without persistence: everything is gone.
    server.restart().unwrap();
    assert!(server.command("DBSIZE").unwrap().contains(":0"));
    eventually(Duration::from_secs(15), "a replica re-seeds Redis", || {
        a.status().reseeds + b.status().reseeds >= 1
    })
    .await;
    let mut c = raw(&url).await;
    let stored: Option<String> = redis::cmd("HGET")
        .arg("test:health")
        .arg("credential/k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(stored.is_some_and(|s| s.contains("disabled")));
    // Both replicas still keep k out, and the fleet works again: a new verdict on
    // another scope reaches the other replica.
    assert!(matches!(
        engine_b.health(&key),
        Some(Health::Disabled { .. })
    ));
    let model_key = ScopeKey::CredentialModel("k".into(), "m".into());
    drop(b.enqueue(Transition {
        scope: model_key.clone(),
        ..transition(2, Health::Healthy, cooling(T0.0 + 90_000))
    }));
    eventually(Duration::from_secs(10), "transitions flow again", || {
        _engine_a.health(&model_key) == Some(cooling(T0.0 + 90_000))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_wins_over_versions_and_automatic_transitions_never_override_it() {
    let server = redis();
    let url = server.url();
    let (a, _) = replica(&url, "a").await;
    let (b, _) = replica(&url, "b").await;
    let (_w, watcher) = replica(&url, "watcher").await;
    let key = ScopeKey::Credential("k".into());
    // a confirms a revocation; b, which has not seen it yet, takes an operator's reset
    // computed from its stale view: the operator wins.
    b.flush().await;
    drop(a.enqueue(transition(1, Health::Healthy, disabled())));
    a.flush().await;
    drop(b.enqueue(Transition {
        actor: Actor::Operator,
        why: "operator reset".into(),
        ..transition(2, Health::Healthy, Health::Healthy)
    }));
    b.flush().await;
    eventually(Duration::from_secs(5), "the reset wins", || {
        watcher.health(&key) == Some(Health::Healthy)
    })
    .await;
    // An operator's disable; then a stale automatic verdict (a cooldown from healthy):
    // absorbed, the operator's disable stays.
    let by_operator = Health::Disabled {
        by_operator: true,
        class: Class::AuthPermanent,
        since: T0,
        evidence: "disabled by an operator: rotating".into(),
        fingerprint: Some("fp-k".into()),
        recheck_at: None,
    };
    drop(a.enqueue(Transition {
        actor: Actor::Operator,
        ..transition(3, Health::Healthy, by_operator.clone())
    }));
    a.flush().await;
    // (b may or may not have applied it yet: a stale version or a stale state, the
    // outcome is the same.)
    drop(b.enqueue(transition(4, Health::Healthy, cooling(T0.0 + 99_000))));
    b.flush().await;
    let log = log_of(&url, "credential/k").await;
    assert_eq!(
        log.last().map(|(_, kind, r)| (kind.as_str(), r.as_str())),
        Some(("absorbed", "b")),
        "{log:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the operator's disable holds",
        || watcher.health(&key) == Some(by_operator.clone()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_is_verified() {
    let server = RedisServer::start_tls().expect("redis-server and openssl");
    let url = server.url();
    assert!(url.starts_with("rediss://"));
    let ca = std::fs::read(server.ca_file()).unwrap();
    // Verified against the private CA: the fleet works over TLS.
    let (a, _) = replica_with_ca(&url, "a", Some(ca.clone())).await;
    let (_b, engine_b) = replica_with_ca(&url, "b", Some(ca)).await;
    assert!(a.status().loaded, "{:?}", a.status());
    drop(a.enqueue(transition(1, Health::Healthy, disabled())));
    a.flush().await;
    let key = ScopeKey::Credential("k".into());
    eventually(Duration::from_secs(5), "the transition crosses TLS", || {
        matches!(engine_b.health(&key), Some(Health::Disabled { .. }))
    })
    .await;
    // Without the CA the server's certificate is not trusted: no state is loaded and the
    // replica says why.
    let (c, _) = replica(&url, "c").await;
    let status = c.status();
    assert!(!status.loaded, "{status:?}");
    assert!(status.degraded_since.is_some(), "{status:?}");
}
