#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Failures that arrive inside an HTTP 200 stream get the same class and scope as the same
//! failure sent as an HTTP error: Anthropic `event: error`, OpenAI's in-band `error`
//! chunk, Gemini's `finishReason` and in-stream error objects, Bedrock's stream
//! exceptions and `stopReason`. Each pair is the documented error shape of one provider,
//! once as an error response and once as a stream.

use keyward_core::classify::{classify, Attempt, Class, Provider, Scope};

struct Pair {
    name: &'static str,
    provider: Provider,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    error_body: &'static str,
    stream_body: &'static str,
    want: (Class, Scope),
}

const PAIRS: &[Pair] = &[
    Pair {
        // https://docs.anthropic.com/en/api/errors and …/streaming#error-events
        name: "anthropic overloaded_error",
        provider: Provider::Anthropic,
        status: 529,
        headers: &[],
        error_body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        stream_body: "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"stop_reason\":null}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        want: (Class::Overloaded, Scope::ProviderModel),
    },
    Pair {
        name: "anthropic rate_limit_error",
        provider: Provider::Anthropic,
        status: 429,
        headers: &[],
        error_body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
        stream_body: "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Number of request tokens has exceeded your per-minute rate limit\"}}\n\n",
        want: (Class::RateLimit, Scope::CredentialModel),
    },
    Pair {
        // https://platform.openai.com/docs/guides/error-codes; openai-python _streaming.py
        name: "openai rate_limit_exceeded",
        provider: Provider::OpenAi,
        status: 429,
        headers: &[],
        error_body: r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        stream_body: "data: {\"error\":{\"message\":\"Rate limit reached for requests\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n",
        // "reached for …" names what the limit applies to: this key for this model.
        want: (Class::RateLimit, Scope::CredentialModel),
    },
    Pair {
        name: "openai server_error",
        provider: Provider::OpenAi,
        status: 500,
        headers: &[],
        error_body: r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
        stream_body: "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        want: (Class::ServerError, Scope::ProviderModel),
    },
    Pair {
        // Azure: a filtered prompt is a 400 content_filter; a filtered completion is a
        // 200 whose finish_reason is content_filter.
        name: "openai content filter",
        provider: Provider::AzureOpenAi,
        status: 400,
        headers: &[],
        error_body: r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#,
        stream_body: "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\n",
        want: (Class::ContentFilter, Scope::Request),
    },
    Pair {
        // https://ai.google.dev/gemini-api/docs/troubleshooting
        name: "gemini UNAVAILABLE",
        provider: Provider::Gemini,
        status: 503,
        headers: &[],
        error_body: r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        stream_body: "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Once\"}],\"role\":\"model\"}}]}\n\ndata: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\n\n",
        want: (Class::Overloaded, Scope::ProviderModel),
    },
    Pair {
        // https://ai.google.dev/api/generate-content#FinishReason
        name: "gemini SAFETY",
        provider: Provider::Gemini,
        status: 200,
        headers: &[],
        error_body: r#"{"candidates":[{"finishReason":"SAFETY","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH"}]}]}"#,
        stream_body: "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":\"model\"},\"finishReason\":\"SAFETY\",\"index\":0}]}\n\n",
        want: (Class::ContentFilter, Scope::Request),
    },
    Pair {
        // https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
        name: "bedrock throttling",
        provider: Provider::Bedrock,
        status: 429,
        headers: &[("x-amzn-errortype", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/")],
        error_body: r#"{"message":"Too many requests, please wait before trying your request again."}"#,
        stream_body: r#"{"throttlingException":{"message":"Too many requests, please wait before trying your request again."}}"#,
        want: (Class::RateLimit, Scope::CredentialModel),
    },
    Pair {
        name: "bedrock model stream error",
        provider: Provider::Bedrock,
        status: 424,
        headers: &[("x-amzn-errortype", "ModelErrorException")],
        error_body: r#"{"message":"The model encountered an error processing the request."}"#,
        stream_body: r#"{"modelStreamErrorException":{"message":"The model encountered an error processing the request.","originalStatusCode":500}}"#,
        want: (Class::ServerError, Scope::ProviderModel),
    },
    Pair {
        // https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-use-converse-api.html
        name: "bedrock guardrail",
        provider: Provider::Bedrock,
        status: 200,
        headers: &[],
        error_body: r#"{"output":{"message":{"role":"assistant","content":[{"text":"Sorry."}]}},"stopReason":"guardrail_intervened"}"#,
        stream_body: r#"{"messageStop":{"stopReason":"guardrail_intervened"}}"#,
        want: (Class::ContentFilter, Scope::Request),
    },
];

#[test]
fn stream_borne_failures_match_their_http_twins() {
    let mut wrong = Vec::new();
    for p in PAIRS {
        let as_error = classify(
            &Attempt::response(p.provider, p.status, p.error_body.as_bytes()).headers(p.headers),
        );
        // In a stream the status is 200 and no error header accompanies the event.
        let in_stream = classify(&Attempt::response(
            p.provider,
            200,
            p.stream_body.as_bytes(),
        ));
        for (how, f) in [("error response", &as_error), ("200 stream", &in_stream)] {
            if (f.class, f.scope) != p.want {
                wrong.push(format!(
                    "{} as {how}: {} / {} (want {} / {}) — {}",
                    p.name, f.class, f.scope, p.want.0, p.want.1, f.explanation
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
