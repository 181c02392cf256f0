//! OpenTelemetry traces, end to end: the real `keyward serve` exports over OTLP/HTTP to a
//! receiver in this test (protobuf, decoded with the OTLP types), and a request that fails
//! over from a revoked key to a healthy one is one request span with an attempt span per
//! credential tried.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use keyward_sim::Behaviour;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message as _;

use crate::support::*;

/// A collector on 127.0.0.1: every span it was sent, with its service name.
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    url: String,
}

async fn receiver() -> Receiver {
    let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            sink.lock().unwrap().push((service.clone(), s));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { spans, url }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v.clone(),
        other => panic!("{key} is not a string on span {:?}: {other:?}", s.name),
    }
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Any::IntValue(v)) => *v,
        other => panic!("{key} is not an integer on span {:?}: {other:?}", s.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_one_request_span_with_an_attempt_span_per_credential() {
    let rx = receiver().await;
    let h = start(
        "otel",
        ANTHROPIC,
        &[
            Cred::new("k1", "sk-ant-otel-revoked-0001").with("priority = 10"),
            Cred::new("k2", "sk-ant-otel-good-0002"),
        ],
        &route("claude", "anthropic", "claude-x", &["k1", "k2"]),
        &format!(
            "\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"keyward-it\"\n",
            rx.url
        ),
    )
    .await;
    // A first request served by k1, so the failover below is not the process's first
    // attempt.
    let warm = h.messages("claude", false).await;
    assert_eq!(warm.header("x-keyward-credential"), "k1");
    h.sim.set("sk-ant-otel-revoked-0001", Behaviour::Revoked);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-keyward-credential"), "k2");
    let id = r.header("x-keyward-request-id");
    // A stream's attempt span lasts until its terminal event, with the usage read then.
    let streamed = h.messages("claude", true).await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let streamed_id = streamed.header("x-keyward-request-id");

    // The exporter batches (every 5 s by default): wait for both requests' attempt spans.
    let request_span = |id: &str| {
        rx.spans
            .lock()
            .unwrap()
            .iter()
            .find(|(_, s)| {
                s.kind == SpanKind::Server as i32
                    && matches!(attr(s, "keyward.request_id"), Some(Any::StringValue(v)) if v == id)
            })
            .cloned()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let children = |id: &str| {
        let Some((_, parent)) = request_span(id) else {
            return 0;
        };
        rx.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.parent_span_id == parent.span_id)
            .count()
    };
    while children(&id) < 2 || children(&streamed_id) < 1 {
        assert!(
            std::time::Instant::now() < until,
            "no spans for both requests within 40 s; the gateway's log:\n{}",
            h.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (service, req) = request_span(&id).unwrap();
    assert!(service.contains("keyward-it"), "service.name: {service}");
    assert_eq!(req.name, "chat claude");
    assert_eq!(text(&req, "gen_ai.operation.name"), "chat");
    assert_eq!(text(&req, "gen_ai.request.model"), "claude");
    assert_eq!(text(&req, "keyward.route"), "claude");
    assert_eq!(text(&req, "keyward.gateway_key"), "tests");
    assert_eq!(int(&req, "http.response.status_code"), 200);
    assert_eq!(int(&req, "keyward.attempts"), 2);
    assert_eq!(text(&req, "keyward.credential"), "k2");
    let all = rx.spans.lock().unwrap().clone();
    let mut attempts: Vec<&Span> = all
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == req.span_id)
        .collect();
    attempts.sort_by_key(|s| int(s, "keyward.attempt"));
    assert_eq!(
        attempts.len(),
        2,
        "one attempt span per credential tried: {attempts:#?}"
    );
    for a in &attempts {
        assert_eq!(a.trace_id, req.trace_id, "one trace");
        assert_eq!(a.kind, SpanKind::Client as i32);
        assert_eq!(a.name, "chat claude-x");
        assert_eq!(text(a, "gen_ai.provider.name"), "anthropic");
        assert_eq!(text(a, "gen_ai.system"), "anthropic");
        assert_eq!(text(a, "gen_ai.request.model"), "claude-x");
        assert_eq!(text(a, "keyward.endpoint"), "anthropic");
    }
    let (first, second) = (attempts[0], attempts[1]);
    assert_eq!(int(first, "keyward.attempt"), 1);
    assert_eq!(text(first, "keyward.credential"), "k1");
    assert_eq!(text(first, "keyward.verdict_class"), "auth_permanent");
    assert_eq!(text(first, "keyward.verdict_scope"), "credential");
    assert_eq!(text(first, "error.type"), "auth_permanent");
    assert!(
        int(first, "http.response.status_code") >= 400,
        "{:?}",
        attr(first, "http.response.status_code")
    );
    assert!(
        !text(first, "keyward.failover_reason").is_empty(),
        "why it moved on"
    );
    assert_eq!(
        first.status.as_ref().map(|s| s.code),
        Some(2),
        "the failed attempt's span is an error"
    );
    assert!(
        attr(first, "gen_ai.usage.input_tokens").is_none(),
        "no usage on a failed attempt"
    );
    assert_eq!(int(second, "keyward.attempt"), 2);
    assert_eq!(text(second, "keyward.credential"), "k2");
    assert_eq!(int(second, "http.response.status_code"), 200);
    assert_eq!(text(second, "gen_ai.response.model"), "claude-x");
    assert!(int(second, "gen_ai.usage.input_tokens") > 0);
    assert!(int(second, "gen_ai.usage.output_tokens") > 0);
    assert!(attr(second, "keyward.verdict_class").is_none());

    // The stream: k1 is out (suspect, then disabled), so one attempt, with its usage.
    let (_, sreq) = request_span(&streamed_id).unwrap();
    let sattempts: Vec<&Span> = all
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == sreq.span_id)
        .collect();
    assert_eq!(sattempts.len(), 1, "{sattempts:#?}");
    assert_eq!(text(sattempts[0], "keyward.credential"), "k2");
    assert!(int(sattempts[0], "gen_ai.usage.output_tokens") > 0);
    // The request span ends when the answer's headers go out; a stream's attempt span
    // lasts until its terminal event (docs/telemetry.md).
    assert!(
        sattempts[0].end_time_unix_nano >= sreq.end_time_unix_nano,
        "the stream's attempt span covers the whole stream"
    );

    // No secret anywhere in what was exported, or in the log.
    h.check_no_secret(&format!("{all:?}"));
    h.check_no_secret(&h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_off_without_an_endpoint_and_a_bad_one_is_a_config_problem() {
    let h = start(
        "otel-bad",
        ANTHROPIC,
        &[Cred::new("k1", "sk-ant-otel-bad-0001")],
        &route("claude", "anthropic", "claude-x", &["k1"]),
        "",
    )
    .await;
    assert_eq!(h.messages("claude", false).await.status, 200);
    // The log is read from the gateway's stderr as it comes: wait for the request's line.
    h.eventually("the request's log line", || {
        h.logs().contains("request answered")
    })
    .await;
    let logs = h.logs();
    assert!(!logs.contains("exporting traces"), "off by default: {logs}");
    assert!(
        logs.contains("request answered") && !logs.contains("keyward.attempt"),
        "with traces off, the trace spans are not in the log either: {logs}"
    );
    let cfg = h.dir.join("bad.toml");
    let text = std::fs::read_to_string(&h.config).unwrap()
        + "\n[telemetry]\notlp_endpoint = \"127.0.0.1:4317\"\nsampling_ratio = 2.0\n";
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = keyward_cli(&cfg, &h.env, &["config", "check"]);
    assert!(!ok, "{out}");
    assert!(out.contains("telemetry.otlp_endpoint"), "{out}");
    assert!(out.contains("gRPC (port 4317) is not supported"), "{out}");
    assert!(out.contains("telemetry.sampling_ratio"), "{out}");
}
