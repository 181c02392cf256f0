//! Google's typed `details[]` list (`ErrorInfo.reason`, `RetryInfo.retryDelay`,
//! `QuotaFailure` violations) and Anthropic's `details` object with its `error_code`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::scalar::Scalar;

/// `details`: Google's typed list, Anthropic's object with `error_code`, or other.
pub(super) enum Details<'a> {
    Google(GoogleDetails<'a>),
    Code(Cow<'a, str>),
    None,
}

#[derive(Default)]
pub(super) struct GoogleDetails<'a> {
    pub(super) reason: Option<Cow<'a, str>>,
    pub(super) retry_delay: Option<Duration>,
    pub(super) quota_failure: bool,
    pub(super) quota_zero: bool,
    pub(super) quota_free_tier: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DetailItem<'a> {
    #[serde(borrow, rename = "@type")]
    ty: Option<Scalar<'a>>,
    #[serde(borrow)]
    reason: Option<Scalar<'a>>,
    #[serde(borrow, rename = "retryDelay")]
    retry_delay: Option<Scalar<'a>>,
    #[serde(borrow)]
    violations: Option<Vec<Violation<'a>>>,
    #[serde(borrow)]
    error_code: Option<Scalar<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Violation<'a> {
    #[serde(borrow, rename = "quotaId")]
    quota_id: Option<Scalar<'a>>,
    #[serde(borrow, rename = "quotaValue")]
    quota_value: Option<Scalar<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Details<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Details<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error details")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut g = GoogleDetails::default();
                while let Some(item) = seq.next_element::<Option<DetailItem<'a>>>()? {
                    let Some(item) = item else { continue };
                    let ty = item.ty.and_then(|t| t.0).unwrap_or_default();
                    if let Some(r) = item.reason.and_then(|r| r.0) {
                        g.reason.get_or_insert(r);
                    }
                    if let Some(delay) = item.retry_delay.and_then(|r| r.0) {
                        g.retry_delay = parse_proto_duration(&delay);
                    }
                    if let Some(vs) = item.violations {
                        if ty.ends_with("QuotaFailure") {
                            g.quota_failure = true;
                        }
                        for v in vs {
                            let id = v.quota_id.and_then(|q| q.0).unwrap_or_default();
                            if id.contains("FreeTier") {
                                g.quota_free_tier = true;
                            }
                            if v.quota_value.and_then(|q| q.0).is_some_and(|q| q == "0") {
                                g.quota_zero = true;
                            }
                        }
                    }
                    if let Some(code) = item.error_code.and_then(|c| c.0) {
                        g.reason.get_or_insert(code);
                    }
                }
                Ok(Details::Google(g))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                let item = DetailItem::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match item.error_code.and_then(|c| c.0) {
                    Some(c) => Details::Code(c),
                    None => Details::None,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Details::None)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Parses a protobuf JSON `Duration` (`"38s"`, `"51.221432117s"`).
pub(crate) fn parse_proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Signals;

    #[test]
    fn reads_google_details() {
        let s = Signals::read(
            r#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"0"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"38.5s"},
            {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED"}]}}]"#,
        );
        assert_eq!(s.num_code, Some(429));
        assert_eq!(s.gstatus.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(s.reason.as_deref(), Some("RATE_LIMIT_EXCEEDED"));
        assert_eq!(s.retry_delay, Some(Duration::from_millis(38_500)));
        assert!(s.quota_zero && s.quota_free_tier && s.quota_failure);
    }
}
