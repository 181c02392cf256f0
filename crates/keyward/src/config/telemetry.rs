//! `[telemetry]`: OpenTelemetry traces exported over OTLP/HTTP (see docs/telemetry.md).
//! Off unless an endpoint is configured here or in `OTEL_EXPORTER_OTLP_ENDPOINT`; read
//! at start (a reload does not change it).

use serde::Deserialize;

/// The traces' settings as the file gives them; the environment fills what it leaves out
/// when the exporter starts (`crate::telemetry`).
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// The OTLP/HTTP base URL (`http://collector:4318`); traces go to `<it>/v1/traces`.
    /// `None`: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, else off.
    pub otlp_endpoint: Option<String>,
    /// `service.name` on every span (default `OTEL_SERVICE_NAME`, else `keyward`).
    pub service_name: Option<String>,
    /// The share of new traces recorded, 0.0 to 1.0 (a caller's sampled `traceparent`
    /// is not consulted: Keyward starts its own traces). Default 1.0.
    pub sampling_ratio: f64,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            otlp_endpoint: None,
            service_name: None,
            sampling_ratio: 1.0,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    sampling_ratio: Option<f64>,
}

/// Validates `[telemetry]`.
pub(super) fn telemetry(
    raw: Option<&RawTelemetry>,
    problem: &mut dyn FnMut(String, String),
) -> Telemetry {
    let mut out = Telemetry::default();
    let Some(raw) = raw else { return out };
    if let Some(url) = &raw.otlp_endpoint {
        let url = url.trim().trim_end_matches('/');
        if url.starts_with("http://") || url.starts_with("https://") {
            out.otlp_endpoint = Some(url.to_owned());
        } else {
            problem(
                "telemetry.otlp_endpoint".into(),
                "the collector's OTLP/HTTP base URL, starting with http:// or https:// (e.g. \"http://127.0.0.1:4318\"); gRPC (port 4317) is not supported".into(),
            );
        }
    }
    if let Some(name) = &raw.service_name {
        if name.trim().is_empty() {
            problem(
                "telemetry.service_name".into(),
                "give the service a name, or leave the key out for `keyward`".into(),
            );
        } else {
            out.service_name = Some(name.clone());
        }
    }
    match raw.sampling_ratio {
        Some(r) if (0.0..=1.0).contains(&r) => out.sampling_ratio = r,
        Some(_) => problem(
            "telemetry.sampling_ratio".into(),
            "a share between 0.0 (no traces) and 1.0 (every request)".into(),
        ),
        None => {}
    }
    out
}
