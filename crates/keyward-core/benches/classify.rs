//! Cost of one classification. Goals on the 2-core dev machine: median ≤ 2 µs for typical
//! error bodies (< 2 KB), ≤ 20 µs for a 64 KB body (only the first 8 KiB are examined).
//!
//! Run: `cargo bench -p keyward-core --bench classify`

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use keyward_core::classify::{classify, Attempt, CredentialKind, Provider};

fn main() {
    divan::main();
}

struct Case {
    name: &'static str,
    provider: Provider,
    credential: CredentialKind,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: String,
}

fn typical() -> Vec<Case> {
    vec![
        Case {
            name: "anthropic_overloaded_529",
            provider: Provider::Anthropic,
            credential: CredentialKind::ApiKey,
            status: 529,
            headers: &[("x-should-retry", "true")],
            body: r#"{"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CZ9ovl"}"#.into(),
        },
        Case {
            name: "openai_invalid_key_401",
            provider: Provider::OpenAi,
            credential: CredentialKind::ApiKey,
            status: 401,
            headers: &[("x-request-id", "req_5f0c1e2d3b4a59687766554433221100")],
            body: "{\n    \"error\": {\n        \"message\": \"Incorrect API key provided: sk-VKMIs***************************************wjh3. You can find your API key at https://platform.openai.com/account/api-keys.\",\n        \"type\": \"invalid_request_error\",\n        \"param\": null,\n        \"code\": \"invalid_api_key\"\n    }\n}\n".into(),
        },
        Case {
            name: "openai_rate_limit_429_headers",
            provider: Provider::OpenAi,
            credential: CredentialKind::ApiKey,
            status: 429,
            headers: &[("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "6m0s"), ("x-ratelimit-remaining-tokens", "100"), ("x-ratelimit-reset-tokens", "20ms")],
            body: "{\n    \"error\": {\n        \"message\": \"Rate limit reached for gpt-3.5-turbo-1106 in organization org-CgCPLNbvA8MZmigOt11yoAP8 on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.\",\n        \"type\": \"requests\",\n        \"param\": null,\n        \"code\": \"rate_limit_exceeded\"\n    }\n}\n".into(),
        },
        Case {
            name: "gemini_quota_details_429",
            provider: Provider::Gemini,
            credential: CredentialKind::ApiKey,
            status: 429,
            headers: &[("content-type", "application/json; charset=UTF-8")],
            body: r#"{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10, model: gemini-2.5-flash\nPlease retry in 51.221432117s.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
            "quotaValue": "10"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "51s"
      }
    ]
  }
}
"#.into(),
        },
        Case {
            name: "bedrock_throttling_429",
            provider: Provider::Bedrock,
            credential: CredentialKind::Cloud,
            status: 429,
            headers: &[("x-amzn-errortype", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"), ("x-amzn-requestid", "0c7e1d2a-3b4c-5d6e-7f80-91a2b3c4d5e6")],
            body: r#"{"message":"Too many tokens, please wait before trying again."}"#.into(),
        },
        Case {
            name: "cloudflare_html_520",
            provider: Provider::Anthropic,
            credential: CredentialKind::ApiKey,
            status: 520,
            headers: &[("content-type", "text/html; charset=UTF-8")],
            body: "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head><title>api.anthropic.com | 520: Web server is returning an unknown error</title></head>\n<body>...Cloudflare Ray ID: 8f1c2a3b4d5e6f70...</body>\n</html>\n".into(),
        },
        Case {
            name: "anthropic_sse_error_200",
            provider: Provider::Anthropic,
            credential: CredentialKind::OAuth,
            status: 200,
            headers: &[("content-type", "text/event-stream")],
            body: "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-20250514\",\"content\":[],\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n".into(),
        },
        Case {
            name: "unknown_plain_text_no_status",
            provider: Provider::Unknown,
            credential: CredentialKind::ApiKey,
            status: 503,
            headers: &[],
            body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure".into(),
        },
    ]
}

fn large() -> Vec<Case> {
    let mut json = String::from(r#"{"error":{"type":"invalid_request_error","message":""#);
    while json.len() < 64 * 1024 {
        json.push_str("messages.0.content.1.image.source.base64.data: At least one of the image dimensions exceed max allowed size ");
    }
    json.push_str("\"}}");
    let mut html =
        String::from("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>");
    while html.len() < 64 * 1024 {
        html.push_str(
            "<p>The upstream server returned an invalid response while acting as a gateway.</p>\n",
        );
    }
    html.push_str("</body></html>");
    vec![
        Case {
            name: "json_64k",
            provider: Provider::Anthropic,
            credential: CredentialKind::ApiKey,
            status: 400,
            headers: &[],
            body: json,
        },
        Case {
            name: "html_64k",
            provider: Provider::OpenAi,
            credential: CredentialKind::ApiKey,
            status: 502,
            headers: &[],
            body: html,
        },
    ]
}

fn bench_case(bencher: divan::Bencher, case: &Case) {
    let now = UNIX_EPOCH + Duration::from_secs(1_751_278_440);
    bencher.bench(|| {
        let attempt = Attempt::response(case.provider, case.status, case.body.as_bytes())
            .credential(case.credential)
            .headers(case.headers)
            .at(now);
        black_box(classify(black_box(&attempt)))
    });
}

#[divan::bench(args = typical(), name = "typical")]
fn typical_bodies(bencher: divan::Bencher, case: &Case) {
    bench_case(bencher, case);
}

#[divan::bench(args = large(), name = "large")]
fn large_bodies(bencher: divan::Bencher, case: &Case) {
    bench_case(bencher, case);
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}
