//! OpenTelemetry traces exported over OTLP/HTTP (protobuf), off unless an endpoint is
//! configured (`[telemetry] otlp_endpoint`, or the standard `OTEL_EXPORTER_OTLP_*`
//! variables). The spans themselves are opened and filled in `gateway::telemetry`; this
//! module starts the exporter and hands `keyward serve` the `tracing` layer that bridges
//! them (see docs/telemetry.md).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::Telemetry;

/// The `tracing` target of the spans exported as traces; only the OpenTelemetry layer
/// listens to it (the log's filter turns it off).
pub const TARGET: &str = "keyward::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (the request path checks this before it records).
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why traces could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the endpoint and the `OTEL_EXPORTER_OTLP_*`
    /// variables (a malformed URL or headers variable). `keyward serve` refuses to start:
    /// fix `[telemetry] otlp_endpoint` or the variables, or remove them to run without
    /// traces.
    #[error("the OTLP trace exporter for {endpoint} could not start ({reason}): fix [telemetry] otlp_endpoint or the OTEL_EXPORTER_OTLP_* variables, or remove them to run without traces")]
    Exporter { endpoint: String, reason: String },
}

/// Where spans go: the traces URL (`<base>/v1/traces`), from the config, else
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as it is), else `OTEL_EXPORTER_OTLP_ENDPOINT`;
/// `None` (off) when none is set or `OTEL_SDK_DISABLED=true`.
pub fn traces_url(cfg: &Telemetry) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    let base = |b: &str| format!("{}/v1/traces", b.trim().trim_end_matches('/'));
    match &cfg.otlp_endpoint {
        Some(b) => Some(base(b)),
        None => var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| base(&b))),
    }
}

/// Traces being exported; [`Traces::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    /// The traces URL (for the start-up log line).
    pub url: String,
}

/// The layer that turns the gateway's spans into OpenTelemetry spans.
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

impl Traces {
    /// Starts the exporter (a thread of its own, batching spans) when traces are
    /// configured; `Ok(None)` when they are off. Call it before the async runtime starts.
    pub fn start(cfg: &Telemetry) -> Result<Option<Traces>, TelemetryError> {
        let Some(url) = traces_url(cfg) else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: url.clone(),
                reason: e.to_string(),
            })?;
        let service = cfg
            .service_name
            .clone()
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
            .unwrap_or_else(|| "keyward".to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sampling_ratio,
            ))))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Traces { provider, url }))
    }

    /// The `tracing` layer (filter it to [`TARGET`]).
    pub fn layer<S>(&self) -> Layer<S>
    where
        S: tracing::Subscriber + for<'s> tracing_subscriber::registry::LookupSpan<'s>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("keyward"))
    }

    /// Exports what is buffered and stops; outside the async runtime.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces still buffered at shutdown could not be exported");
        }
    }
}
