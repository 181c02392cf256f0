//! Prometheus metrics, served at `GET /metrics` (behind the admin token when the config
//! has an `[admin]` table).
//!
//! Labels are bounded by the configuration, never by traffic: credential ids, route
//! names, gateway key names, failure classes (12), states (6) and a handful of outcomes.
//! No secret, no model name a caller typed, no request id is ever a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use rustc_hash::FxHashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use keyward_core::health::{Health, ScopeKey};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialState {
    pub credential: Arc<str>,
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialOutcome {
    pub credential: Arc<str>,
    /// `ok` or a failure class.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenKey {
    pub credential: Arc<str>,
    pub route: Arc<str>,
    pub gateway_key: Arc<str>,
    /// `input` or `output`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteKey {
    pub route: Arc<str>,
    pub gateway_key: Arc<str>,
    /// `2xx`, `4xx`, `5xx`.
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Arc<str>,
}

/// An endpoint's auth incidents: `started`, `ended` (its auth answered again) or
/// `expired` (outlasted `incident_max`: its keys were disabled).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointOutcome {
    pub endpoint: Arc<str>,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    /// `applied` or `rejected`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabel {
    /// `missing` (no key presented) or `invalid` (a key that is no gateway key).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// The inbound API: `messages`, `chat`, `responses`, `gemini`.
    pub api: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 50 µs … ~1.6 s of gateway-added time.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn attempt_counts() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 10.0])
}

/// Series handles by label set, for the families every request touches.
///
/// `Family::get_or_create` hashes the whole label set with SipHash on every call; this
/// keeps each series' handle (metric types are `Arc`-backed: a clone is the same series)
/// in an `FxHashMap`, so a request hashes a few short strings with FxHash instead. A
/// series is still created by its first use, as before. The families cached here are
/// never cleared (only `credential_state` is, when rendered), so a handle stays the
/// series `/metrics` renders across config reloads: a reload's new route, credential or
/// gateway key is a new label set, taken from the family once. The map holds the
/// family's label sets, no more.
#[derive(Debug)]
struct Handles<L, M>(RwLock<FxHashMap<L, M>>);

impl<L, M> Default for Handles<L, M> {
    fn default() -> Self {
        Handles(RwLock::new(FxHashMap::default()))
    }
}

impl<L: Clone + Hash + Eq, M: Clone> Handles<L, M> {
    /// The series of `family` labelled `labels`, created there on first use.
    fn get<C: MetricConstructor<M>>(&self, family: &Family<L, M, C>, labels: L) -> M {
        if let Some(m) = self.0.read().ok().and_then(|map| map.get(&labels).cloned()) {
            return m;
        }
        let m = family.get_or_create_owned(&labels);
        if let Ok(mut map) = self.0.write() {
            map.insert(labels, m.clone());
        }
        m
    }
}

/// The cached handles of the per-request families (see [`Handles`]).
#[derive(Debug, Default)]
struct Hot {
    requests: Handles<RouteKey, Counter>,
    failovers: Handles<RouteLabel, Counter>,
    attempts_per_request: Handles<RouteLabel, Histogram>,
    gateway_seconds: Handles<RouteLabel, Histogram>,
    attempts: Handles<CredentialOutcome, Counter>,
    /// Both sides' token counters under one lookup; a side's series is created when it
    /// first counts tokens, as before.
    tokens: RwLock<FxHashMap<TokenOwner, [Option<Counter>; 2]>>,
}

/// Whose tokens: [`TokenKey`] without the side.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TokenOwner {
    credential: Arc<str>,
    route: Arc<str>,
    gateway_key: Arc<str>,
}

/// Every metric the gateway keeps; shared across config reloads.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub credential_state: Family<CredentialState, Gauge>,
    pub attempts: Family<CredentialOutcome, Counter>,
    pub probes: Family<CredentialOutcome, Counter>,
    pub requests: Family<RouteKey, Counter>,
    pub failovers: Family<RouteLabel, Counter>,
    pub attempts_per_request: HistogramFamily<RouteLabel>,
    pub gateway_seconds: HistogramFamily<RouteLabel>,
    pub dropped_events: Family<RouteLabel, Counter>,
    pub broken_streams: Family<RouteLabel, Counter>,
    pub reloads: Family<ReloadLabel, Counter>,
    pub tokens: Family<TokenKey, Counter>,
    /// OAuth refreshes by credential and outcome (`ok`, `adopted`, `unavailable`,
    /// `revoked`).
    pub refreshes: Family<CredentialOutcome, Counter>,
    /// Fleet mode: 1 while Redis answers and the replica follows the fleet log.
    pub fleet_connected: Gauge,
    /// Fleet mode: transitions recorded locally, waiting for Redis.
    pub fleet_pending: Gauge,
    /// Fleet mode: times this replica put state back into a Redis that had lost it.
    pub fleet_reseeds: Gauge,
    /// 1 while an endpoint is in a provider-wide auth incident.
    pub auth_incident_active: Family<EndpointLabel, Gauge>,
    pub auth_incidents: Family<EndpointOutcome, Counter>,
    /// Requests refused for a missing or wrong gateway key (brute force shows here).
    pub caller_auth_failures: Family<AuthFailureLabel, Counter>,
    /// Authenticated requests for a model no route serves.
    pub unrouted_requests: Family<ApiLabel, Counter>,
    /// Caller connections closed at accept because `server.max_connections` were open.
    pub connections_refused: Counter,
    /// Caller connections open now.
    pub connections_open: Gauge,
    /// Requests answered 503 because `limits.max_buffered_body_bytes` stayed full for
    /// `limits.body_wait`.
    pub body_budget_rejections: Counter,
    /// The WARN-line throttles of refused callers (see [`super::refusals`]).
    pub refusals: super::refusals::Refusals,
    /// The last hour of attempts and errors per credential, for the status page.
    pub rates: super::rates::Rates,
    /// `keyward_alerts_*`: webhook messages queued, delivered, failed, dropped.
    pub alerts: super::alerts::AlertMetrics,
    hot: Hot,
}

const STATES: [&str; 5] = ["healthy", "cooling", "suspect", "probing", "disabled"];

impl Metrics {
    #[allow(clippy::too_many_lines)] // one registration per metric
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyward");
        let credential_state = Family::<CredentialState, Gauge>::default();
        let attempts = Family::<CredentialOutcome, Counter>::default();
        let probes = Family::<CredentialOutcome, Counter>::default();
        let requests = Family::<RouteKey, Counter>::default();
        let failovers = Family::<RouteLabel, Counter>::default();
        let attempts_per_request = HistogramFamily::<RouteLabel>::new_with_constructor(
            attempt_counts as fn() -> Histogram,
        );
        let gateway_seconds =
            HistogramFamily::<RouteLabel>::new_with_constructor(latency as fn() -> Histogram);
        let dropped_events = Family::<RouteLabel, Counter>::default();
        let broken_streams = Family::<RouteLabel, Counter>::default();
        let reloads = Family::<ReloadLabel, Counter>::default();
        let tokens = Family::<TokenKey, Counter>::default();
        let refreshes = Family::<CredentialOutcome, Counter>::default();
        let fleet_connected = Gauge::default();
        let fleet_pending = Gauge::default();
        let fleet_reseeds = Gauge::default();
        registry.register(
            "fleet_connected",
            "Fleet mode: 1 while Redis answers and this replica follows the fleet log, 0 while it serves on its own view",
            fleet_connected.clone(),
        );
        registry.register(
            "fleet_pending_transitions",
            "Fleet mode: transitions recorded locally while Redis was unreachable, not yet written",
            fleet_pending.clone(),
        );
        registry.register(
            "fleet_reseeds",
            "Fleet mode: times this replica put state back into a Redis that had lost it (enable appendonly)",
            fleet_reseeds.clone(),
        );
        registry.register(
            "oauth_refreshes",
            "OAuth token refreshes by credential and outcome (ok; adopted: another holder's newer tokens taken from the state file; unavailable: the token endpoint failed, the credential kept; revoked: the grant was rejected)",
            refreshes.clone(),
        );
        registry.register(
            "tokens",
            "Tokens used, from the responses' own usage blocks, by credential, route, gateway key and side",
            tokens.clone(),
        );
        registry.register(
            "credential_state",
            "1 for each credential's current health state, 0 for the others",
            credential_state.clone(),
        );
        registry.register(
            "upstream_attempts",
            "Upstream attempts by credential and outcome (ok or the failure class)",
            attempts.clone(),
        );
        registry.register(
            "probes",
            "Confirmation probes and re-checks by credential and outcome",
            probes.clone(),
        );
        registry.register(
            "requests",
            "Caller requests by route, gateway key and status class",
            requests.clone(),
        );
        registry.register(
            "failovers",
            "Requests answered by a later candidate than the first",
            failovers.clone(),
        );
        registry.register(
            "attempts_per_request",
            "Upstream attempts a request took",
            attempts_per_request.clone(),
        );
        registry.register(
            "gateway_added_seconds",
            "Time the gateway added to a request, upstream time excluded",
            gateway_seconds.clone(),
        );
        registry.register(
            "stream_events_dropped",
            "Malformed stream events dropped",
            dropped_events.clone(),
        );
        registry.register(
            "streams_broken",
            "Committed streams ended with an in-band error (cut, stalled, incomplete)",
            broken_streams.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result",
            reloads.clone(),
        );
        let auth_incident_active = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "auth_incident_active",
            "1 while an endpoint is in a provider-wide auth incident (every key rejected at once; nothing disabled)",
            auth_incident_active.clone(),
        );
        let auth_incidents = Family::<EndpointOutcome, Counter>::default();
        registry.register(
            "auth_incidents",
            "Provider-wide auth incidents by endpoint and how they ended",
            auth_incidents.clone(),
        );
        let caller_auth_failures = Family::<AuthFailureLabel, Counter>::default();
        let unrouted_requests = Family::<ApiLabel, Counter>::default();
        let connections_refused = Counter::default();
        let connections_open = Gauge::default();
        let body_budget_rejections = Counter::default();
        registry.register(
            "caller_auth_failures",
            "Requests refused for a missing or invalid gateway key, by reason (missing, invalid)",
            caller_auth_failures.clone(),
        );
        registry.register(
            "unrouted_requests",
            "Authenticated requests for a model no route serves, by inbound API",
            unrouted_requests.clone(),
        );
        registry.register(
            "connections_refused",
            "Caller connections closed at accept because server.max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "connections_open",
            "Caller connections open now",
            connections_open.clone(),
        );
        registry.register(
            "body_budget_rejections",
            "Requests answered 503 because limits.max_buffered_body_bytes stayed full for limits.body_wait",
            body_budget_rejections.clone(),
        );
        let alerts = super::alerts::AlertMetrics::register(&mut registry);
        Metrics {
            hot: Hot::default(),
            alerts,
            refusals: super::refusals::Refusals::default(),
            caller_auth_failures,
            unrouted_requests,
            connections_refused,
            connections_open,
            body_budget_rejections,
            registry,
            credential_state,
            attempts,
            probes,
            requests,
            failovers,
            attempts_per_request,
            gateway_seconds,
            dropped_events,
            broken_streams,
            reloads,
            tokens,
            refreshes,
            fleet_connected,
            fleet_pending,
            fleet_reseeds,
            auth_incident_active,
            auth_incidents,
            rates: super::rates::Rates::new(Arc::new(crate::SystemClock)),
        }
    }

    /// Adds a response's usage.
    pub fn tokens(
        &self,
        credential: &Arc<str>,
        route: &Arc<str>,
        gateway_key: &Arc<str>,
        usage: keyward_wire::usage::Usage,
    ) {
        super::telemetry::usage(usage);
        if usage.input == 0 && usage.output == 0 {
            return;
        }
        let owner = TokenOwner {
            credential: credential.clone(),
            route: route.clone(),
            gateway_key: gateway_key.clone(),
        };
        let cached = self
            .hot
            .tokens
            .read()
            .ok()
            .and_then(|map| map.get(&owner).cloned())
            .unwrap_or_default();
        let sides = [("input", usage.input), ("output", usage.output)];
        for (side, ((kind, n), cached)) in sides.into_iter().zip(cached).enumerate() {
            if n == 0 {
                continue;
            }
            let counter = cached.unwrap_or_else(|| {
                let counter = self.tokens.get_or_create_owned(&TokenKey {
                    credential: credential.clone(),
                    route: route.clone(),
                    gateway_key: gateway_key.clone(),
                    kind,
                });
                if let Ok(mut map) = self.hot.tokens.write() {
                    map.entry(owner.clone()).or_default()[side] = Some(counter.clone());
                }
                counter
            });
            counter.inc_by(n);
        }
    }

    /// The exposition text, with credential states read from the engine now.
    pub fn render(
        &self,
        credentials: &[std::sync::Arc<str>],
        snapshot: &[(ScopeKey, Health, keyward_core::health::Timestamp)],
    ) -> String {
        self.credential_state.clear();
        for id in credentials {
            let now = snapshot
                .iter()
                .find_map(|(k, h, _)| match k {
                    ScopeKey::Credential(c) if c == id => Some(h.name()),
                    _ => None,
                })
                .unwrap_or("healthy");
            for s in STATES {
                self.credential_state
                    .get_or_create(&CredentialState {
                        credential: id.clone(),
                        state: s,
                    })
                    .set(i64::from(s == now));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn attempt(&self, credential: &Arc<str>, outcome: &'static str) {
        let labels = CredentialOutcome {
            credential: credential.clone(),
            outcome,
        };
        self.hot.attempts.get(&self.attempts, labels).inc();
        self.rates.record(credential, outcome != "ok");
    }

    /// Counts a caller request by route, gateway key and status class (`2xx`…).
    pub fn request(&self, route: &Arc<str>, gateway_key: &Arc<str>, status: &'static str) {
        let labels = RouteKey {
            route: route.clone(),
            gateway_key: gateway_key.clone(),
            status,
        };
        self.hot.requests.get(&self.requests, labels).inc();
    }

    /// Observes the upstream attempts a request took; a success after more than one is
    /// a failover.
    pub fn attempts_taken(&self, route: &Arc<str>, attempts: u32, success: bool) {
        self.hot
            .attempts_per_request
            .get(&self.attempts_per_request, self.route(route))
            .observe(f64::from(attempts));
        if attempts > 1 && success {
            self.hot
                .failovers
                .get(&self.failovers, self.route(route))
                .inc();
        }
    }

    /// Observes the time the gateway added to a request.
    pub fn gateway_added(&self, route: &Arc<str>, seconds: f64) {
        self.hot
            .gateway_seconds
            .get(&self.gateway_seconds, self.route(route))
            .observe(seconds);
    }

    pub fn route(&self, route: &Arc<str>) -> RouteLabel {
        RouteLabel {
            route: route.clone(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered lines that start with `prefix`, sorted (a family's order is not
    /// fixed).
    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        let mut lines: Vec<String> = m
            .render(&[], &[])
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn cached_handles_count_into_the_series_a_reload_keeps_or_adds() {
        let m = Metrics::new();
        assert!(lines(&m, "keyward_requests_total").is_empty());
        // The same names as a reload builds them: new `Arc`s, same text.
        for _ in 0..2 {
            let (route, key): (Arc<str>, Arc<str>) = ("claude".into(), "tests".into());
            m.request(&route, &key, "2xx");
            m.attempts_taken(&route, 2, true);
            m.gateway_added(&route, 0.001);
        }
        m.request(&"gpt".into(), &"tests".into(), "5xx");
        assert_eq!(
            lines(&m, "keyward_requests_total"),
            [
                "keyward_requests_total{route=\"claude\",gateway_key=\"tests\",status=\"2xx\"} 2",
                "keyward_requests_total{route=\"gpt\",gateway_key=\"tests\",status=\"5xx\"} 1",
            ]
        );
        assert_eq!(
            lines(&m, "keyward_failovers_total"),
            ["keyward_failovers_total{route=\"claude\"} 2"]
        );
        assert_eq!(
            lines(&m, "keyward_attempts_per_request_count"),
            ["keyward_attempts_per_request_count{route=\"claude\"} 2"]
        );
        assert_eq!(
            lines(&m, "keyward_gateway_added_seconds_count"),
            ["keyward_gateway_added_seconds_count{route=\"claude\"} 2"]
        );
    }

    #[test]
    fn a_side_of_the_tokens_appears_when_it_first_counts() {
        use keyward_wire::usage::Usage;
        let m = Metrics::new();
        let (cred, route, key): (Arc<str>, Arc<str>, Arc<str>) =
            ("a".into(), "r".into(), "k".into());
        m.tokens(
            &cred,
            &route,
            &key,
            Usage {
                input: 0,
                output: 0,
            },
        );
        m.tokens(
            &cred,
            &route,
            &key,
            Usage {
                input: 0,
                output: 5,
            },
        );
        assert_eq!(
            lines(&m, "keyward_tokens_total"),
            ["keyward_tokens_total{credential=\"a\",route=\"r\",gateway_key=\"k\",kind=\"output\"} 5"]
        );
        m.tokens(
            &cred,
            &"r".into(),
            &key,
            Usage {
                input: 7,
                output: 1,
            },
        );
        assert_eq!(
            lines(&m, "keyward_tokens_total"),
            [
                "keyward_tokens_total{credential=\"a\",route=\"r\",gateway_key=\"k\",kind=\"input\"} 7",
                "keyward_tokens_total{credential=\"a\",route=\"r\",gateway_key=\"k\",kind=\"output\"} 6",
            ]
        );
    }
}
