//! Cross-format failover through the real gateway: a route's fallback of another wire
//! family serves the caller during a primary overload, in the caller's format — whole and
//! streamed, tool calls and their ids across a switch of provider mid-conversation, errors
//! — and what each upstream received is checked in the sim.

use keyward_sim::{Behaviour, TOOL_ARGUMENTS};
use serde_json::{json, Value};

use crate::support::{start, Cred, Harness};

const ANT_KEY: &str = "sk-ant-xlate-primary-1";
const OAI_KEY: &str = "sk-oai-xlate-fallback-1";

const ENDPOINTS: &[(&str, &str, &str)] =
    &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1")];

/// `claude`: Anthropic first, OpenAI as its fallback; `gpt`: the reverse.
fn routes(extra: &str) -> String {
    format!(
        "[routes.claude]\n{extra}targets = [{{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"ant\"] }}]\n\
         fallbacks = [{{ endpoint = \"openai\", model = \"gpt-x\", credentials = [\"oai\"] }}]\n\n\
         [routes.gpt]\n{extra}targets = [{{ endpoint = \"openai\", model = \"gpt-x\", credentials = [\"oai\"] }}]\n\
         fallbacks = [{{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"ant\"] }}]\n"
    )
}

async fn harness(name: &str, extra: &str) -> Harness {
    start(
        name,
        ENDPOINTS,
        &[
            Cred::new("ant", ANT_KEY),
            Cred::new("oai", OAI_KEY).on("openai"),
        ],
        &routes(extra),
        "",
    )
    .await
}

/// The `data` of each SSE event, with its event name.
fn events(body: &str) -> Vec<(String, Value)> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap_or(json!(data))))
        })
        .collect()
}

/// The text of a Chat Completions stream's deltas, in order.
fn chat_text(evs: &[(String, Value)]) -> String {
    evs.iter()
        .filter_map(|(_, d)| d["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn weather_tool_anthropic() -> Value {
    json!([{"name": "weather", "description": "The weather in a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}])
}

fn weather_tool_openai() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "description": "The weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn an_anthropic_caller_is_served_by_the_openai_fallback_whole_and_streamed() {
    let h = harness("xlate-a2o", "").await;
    h.sim.set(ANT_KEY, Behaviour::Overloaded);
    let r = h
        .post("/v1/messages", json!({"model": "claude", "max_tokens": 50, "system": "Be brief.", "temperature": 0.5,
                                      "stop_sequences": ["END"], "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello from keyward-sim.");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 12);
    assert!(
        r.header("x-keyward-target").starts_with("openai/"),
        "{:?}",
        r.headers
    );
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(sent["model"], "gpt-x");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "hi"})
    );
    assert_eq!(sent["max_completion_tokens"], 50);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["temperature"], 0.5);

    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let evs = events(&r.body);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{}", r.body);
    assert_eq!(names.last(), Some(&"message_stop"), "{}", r.body);
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    let delta = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta.1["usage"]["output_tokens"], 8);
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_chat_caller_is_served_by_the_anthropic_fallback_with_a_default_max_tokens() {
    let h = harness("xlate-o2a", "default_max_tokens = 777\n").await;
    h.sim.set(OAI_KEY, Behaviour::Overloaded);
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from keyward-sim."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    let sent = h.sim.received(ANT_KEY).pop().unwrap();
    assert_eq!(sent["max_tokens"], 777);
    assert_eq!(sent["system"][0]["text"], "Be brief.");
    assert_eq!(sent["model"], "claude-x");

    let r = h.chat("gpt", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap().1, json!("[DONE]"), "{}", r.body);
    let text = chat_text(&evs);
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    let finish: Vec<&Value> = evs
        .iter()
        .map(|(_, d)| &d["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
}

#[tokio::test]
async fn a_tool_conversation_survives_a_switch_of_provider_in_both_directions() {
    let h = harness("xlate-tools", "").await;
    // Turn 1 (Anthropic caller): the primary is overloaded, OpenAI calls the tool.
    h.sim.set(ANT_KEY, Behaviour::Overloaded);
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let mut first = None;
    for stream in [false, true] {
        let r = h
            .post(
                "/v1/messages",
                json!({"model": "claude", "max_tokens": 100, "stream": stream,
                                          "tools": weather_tool_anthropic(), "messages": messages}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (id, input) = if stream {
            let evs = events(&r.body);
            let start = evs
                .iter()
                .find(|(n, d)| {
                    n == "content_block_start" && d["content_block"]["type"] == "tool_use"
                })
                .unwrap_or_else(|| panic!("no tool_use block: {}", r.body));
            let args: String = evs
                .iter()
                .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
                .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
                .collect();
            let stop = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
            assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");
            (
                start.1["content_block"]["id"].as_str().unwrap().to_owned(),
                serde_json::from_str::<Value>(&args).unwrap(),
            )
        } else {
            let v = r.json();
            assert_eq!(v["stop_reason"], "tool_use");
            let call = v["content"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["type"] == "tool_use")
                .unwrap()
                .clone();
            assert_eq!(call["name"], "weather");
            (
                call["id"].as_str().unwrap().to_owned(),
                call["input"].clone(),
            )
        };
        assert!(
            id.starts_with("call_sim_"),
            "the OpenAI call id is kept: {id}"
        );
        assert_eq!(
            input,
            serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
        );
        first.get_or_insert((id, input));
    }
    let (id, input) = first.unwrap();
    messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "weather", "input": input}]}));
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny, 21C"}]}));
    // What OpenAI received: the tool as a function.
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "weather");
    // Turn 2: the primary recovered and gets the history of OpenAI's call, ids paired.
    h.sim.set(ANT_KEY, Behaviour::Ok);
    h.eventually_served_by(
        "anthropic",
        json!({"model": "claude", "max_tokens": 100,
                                       "tools": weather_tool_anthropic(), "messages": messages}),
        "/v1/messages",
    )
    .await;
    let r = h
        .post("/v1/messages", json!({"model": "claude", "max_tokens": 100, "tools": weather_tool_anthropic(), "messages": messages}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"][0]["text"], "The tool said: sunny, 21C");
    let sent = h.sim.received(ANT_KEY).pop().unwrap();
    let use_id = &sent["messages"][1]["content"][0]["id"];
    assert_eq!(&sent["messages"][2]["content"][0]["tool_use_id"], use_id);

    // The reverse: a Chat caller whose tool call came from Anthropic, answered by OpenAI.
    h.sim.set(OAI_KEY, Behaviour::Overloaded);
    let r = h
        .post("/v1/chat/completions", json!({"model": "gpt", "tools": weather_tool_openai(),
                                              "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert!(
        call["id"].as_str().unwrap().starts_with("toolu_sim_"),
        "{call}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
    );
    let sent = h.sim.received(ANT_KEY).pop().unwrap();
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    h.sim.set(OAI_KEY, Behaviour::Ok);
    let history = json!({"model": "gpt", "tools": weather_tool_openai(), "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "rain"}]});
    h.eventually_served_by("openai", history.clone(), "/v1/chat/completions")
        .await;
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], call["id"]);
    assert_eq!(sent["messages"][2]["tool_call_id"], call["id"]);
}

impl Harness {
    /// Sends `body` to `path` until a success comes from `endpoint` (a cooled primary is
    /// tried again once its short cooldown ends); bounded.
    async fn eventually_served_by(&self, endpoint: &str, body: Value, path: &str) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let r = self.post(path, body.clone()).await;
            if r.status == 200
                && r.header("x-keyward-target")
                    .starts_with(&format!("{endpoint}/"))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "never served by {endpoint}; last answer {}: {}",
                r.status,
                r.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn errors_reach_the_caller_in_its_own_format_and_a_broken_translated_stream_says_so() {
    let h = start(
        "xlate-errors",
        ENDPOINTS,
        &[Cred::new("ant", ANT_KEY), Cred::new("oai", OAI_KEY).on("openai")],
        "[routes.onlyclaude]\ntargets = [{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"ant\"] }]\n\
         [routes.onlygpt]\ntargets = [{ endpoint = \"openai\", model = \"gpt-x\", credentials = [\"oai\"] }]\n",
        "",
    )
    .await;
    // The caller's own bad request, answered by a target of another family.
    h.sim.set(ANT_KEY, Behaviour::BadRequest);
    let r = h.chat("onlyclaude", false).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].is_string());
    assert!(v.get("type").is_none(), "not Anthropic's envelope: {v}");
    // A caller body that is not its API's shape: its 400, in its format.
    let r = h
        .post(
            "/v1/messages",
            json!({"model": "onlygpt", "max_tokens": 5, "messages": "nope"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
    // An in-band error after the stream committed: the caller's own error event.
    h.sim.set(OAI_KEY, Behaviour::MidStreamError { after: 2 });
    let r = h.messages("onlygpt", true).await;
    let evs = events(&r.body);
    let last = evs.last().unwrap();
    assert_eq!(last.0, "error", "{}", r.body);
    assert_eq!(last.1["type"], "error");
    assert!(evs.iter().any(|(n, _)| n == "content_block_delta"));
    assert!(!evs.iter().any(|(n, _)| n == "message_stop"), "{}", r.body);
    // Cut before its terminal event: an in-band error, never a completion.
    h.sim.set(OAI_KEY, Behaviour::StreamCut { after: 2 });
    let r = h.messages("onlygpt", true).await;
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap().0, "error", "{}", r.body);
    assert!(!evs.iter().any(|(n, _)| n == "message_stop"), "{}", r.body);
}

#[tokio::test]
async fn a_route_that_forbids_lossy_translation_skips_a_fallback_that_would_lose_features() {
    let h = harness("xlate-lossless", "lossy_translation = false\n").await;
    h.sim.set(ANT_KEY, Behaviour::Overloaded);
    let cached = json!({"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}]}]});
    let r = h.post("/v1/messages", cached).await;
    assert!(r.status >= 500, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
    assert!(
        h.sim.received(OAI_KEY).is_empty(),
        "the lossy fallback was not called"
    );
    h.eventually("the skip logged", || {
        h.logs().contains("lossy_translation = false")
    })
    .await;
    // Nothing lost: served.
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.sim.received(OAI_KEY).len(), 1);
}

#[tokio::test]
async fn during_a_primary_overload_every_request_is_answered_with_few_upstream_calls() {
    let h = harness("xlate-overload", "").await;
    h.sim.set(ANT_KEY, Behaviour::Overloaded);
    let n = 40;
    for i in 0..n {
        let stream = i % 2 == 1;
        let r = if i % 4 < 2 {
            h.messages_about("claude", stream, &format!("q{i}")).await
        } else {
            h.chat_about("gpt", stream, &format!("q{i}")).await
        };
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        if stream {
            assert!(
                r.body.contains("message_stop") || r.body.contains("[DONE]"),
                "{}",
                r.body
            );
        }
    }
    let calls = h.sim.counts(ANT_KEY).requests + h.sim.counts(OAI_KEY).requests;
    let per_request = calls as f64 / f64::from(n);
    eprintln!("cross-family failover: {calls} upstream calls for {n} requests ({per_request:.2} per request)");
    assert!(
        per_request <= 1.3,
        "{per_request:.2} upstream calls per request"
    );
}

/// The official SDKs drive a tool-calling conversation, whole and streamed, that switches
/// wire family mid-way (primary overloaded, then recovered); they check their parsed
/// objects, and the primary's history shows the fallback's call paired with its result.
#[tokio::test]
async fn official_sdks_keep_a_tool_conversation_across_a_switch_of_wire_family() {
    let h = harness("xlate-sdk", "").await;
    let sim_url = h._server.url();
    let v = crate::support::run_sdk(
        &h,
        "anthropic_xlate_tools",
        &[
            ("KEYWARD_SIM_URL", &sim_url),
            ("KEYWARD_PRIMARY_KEY", ANT_KEY),
        ],
    )
    .await;
    let call_id = v["call_id"].as_str().unwrap();
    assert!(
        call_id.starts_with("call_sim_"),
        "the OpenAI fallback made the call: {v}"
    );
    let paired = h.sim.received(ANT_KEY).iter().any(|b| {
        let m = &b["messages"];
        m[1]["content"].as_array().is_some_and(|c| {
            c.iter()
                .any(|x| x["type"] == "tool_use" && x["id"] == call_id)
        }) && m[2]["content"][0]["tool_use_id"] == call_id
    });
    assert!(
        paired,
        "the recovered primary got the fallback's call and its result"
    );
    let v = crate::support::run_sdk(
        &h,
        "openai_responses_xlate",
        &[
            ("KEYWARD_SIM_URL", &sim_url),
            ("KEYWARD_PRIMARY_KEY", OAI_KEY),
        ],
    )
    .await;
    assert!(
        v["call_id"].as_str().unwrap().starts_with("toolu_sim_"),
        "{v}"
    );
    let v = crate::support::run_sdk(
        &h,
        "openai_xlate_tools",
        &[
            ("KEYWARD_SIM_URL", &sim_url),
            ("KEYWARD_PRIMARY_KEY", OAI_KEY),
        ],
    )
    .await;
    assert!(
        v["call_id"].as_str().unwrap().starts_with("toolu_sim_"),
        "{v}"
    );
}

const GEM_KEY: &str = "gm-xlate-fallback-1";

async fn gemini_harness(name: &str) -> Harness {
    start(
        name,
        &[("anthropic", "anthropic", ""), ("openai", "openai", "/v1"), ("gemini", "gemini", "")],
        &[Cred::new("ant", ANT_KEY), Cred::new("oai", OAI_KEY).on("openai"), Cred::new("gem", GEM_KEY).on("gemini")],
        "[routes.claude]\ntargets = [{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"ant\"] }]\n\
         fallbacks = [{ endpoint = \"gemini\", model = \"gemini-x\", credentials = [\"gem\"] }]\n\
         [routes.gem]\ntargets = [{ endpoint = \"gemini\", model = \"gemini-x\", credentials = [\"gem\"] }]\n\
         fallbacks = [{ endpoint = \"openai\", model = \"gpt-x\", credentials = [\"oai\"] }]\n",
        "",
    )
    .await
}

#[tokio::test]
async fn an_anthropic_caller_is_served_by_a_gemini_fallback_tools_included() {
    let h = gemini_harness("xlate-a2g").await;
    h.sim.set(ANT_KEY, Behaviour::Overloaded);
    let r = h
        .post(
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 64, "system": "Be brief.", "top_k": 5,
                                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"][0]["text"], "Hello from keyward-sim.");
    assert!(r.header("x-keyward-target").starts_with("gemini/"));
    let sent = h.sim.received(GEM_KEY).pop().unwrap();
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(
        sent["contents"][0],
        json!({"role": "user", "parts": [{"text": "hi"}]})
    );
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 64);
    assert_eq!(sent["generationConfig"]["topK"], 5);

    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap().0, "message_stop", "{}", r.body);
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");

    // A tool call from Gemini gets an id; its result goes back to Gemini by name.
    for stream in [false, true] {
        let r = h
            .post("/v1/messages", json!({"model": "claude", "max_tokens": 64, "stream": stream, "tools": weather_tool_anthropic(),
                                          "messages": [{"role": "user", "content": "Weather?"}]}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let call = if stream {
            let evs = events(&r.body);
            let start = evs
                .iter()
                .find(|(_, d)| d["content_block"]["type"] == "tool_use")
                .unwrap()
                .1["content_block"]
                .clone();
            let args: String = evs
                .iter()
                .filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(
                serde_json::from_str::<Value>(&args).unwrap(),
                serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
            );
            assert_eq!(
                evs.iter().find(|(n, _)| n == "message_delta").unwrap().1["delta"]["stop_reason"],
                "tool_use"
            );
            start
        } else {
            let v = r.json();
            assert_eq!(v["stop_reason"], "tool_use");
            v["content"][0].clone()
        };
        assert_eq!(call["name"], "weather");
        let id = call["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("call_"), "{id}");
        let history = json!({"model": "claude", "max_tokens": 64, "tools": weather_tool_anthropic(), "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "hail"}]}]});
        let r = h.post("/v1/messages", history).await;
        assert_eq!(
            r.json()["content"][0]["text"],
            "The tool said: hail",
            "{}",
            r.body
        );
        let sent = h.sim.received(GEM_KEY).pop().unwrap();
        assert_eq!(
            sent["contents"][1]["parts"][0]["functionCall"]["name"],
            "weather"
        );
        assert_eq!(
            sent["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "weather", "response": {"result": "hail"}})
        );
    }
}

#[tokio::test]
async fn a_gemini_caller_is_served_by_an_openai_fallback_whole_and_streamed() {
    let h = gemini_harness("xlate-g2o").await;
    h.sim.set(GEM_KEY, Behaviour::Overloaded);
    let ask = json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
                     "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                     "generationConfig": {"maxOutputTokens": 40, "stopSequences": ["END"]}});
    let r = h
        .post("/v1beta/models/gem:generateContent", ask.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "Hello from keyward-sim."
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 12);
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(sent["model"], "gpt-x");
    assert_eq!(sent["messages"][0]["content"], "Be brief.");
    assert_eq!(sent["max_completion_tokens"], 40);

    for path in [
        "/v1beta/models/gem:streamGenerateContent?alt=sse",
        "/v1beta/models/gem:streamGenerateContent",
    ] {
        let r = h.post(path, ask.clone()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let chunks: Vec<Value> = if path.ends_with("sse") {
            events(&r.body).into_iter().map(|(_, d)| d).collect()
        } else {
            serde_json::from_str::<Vec<Value>>(&r.body)
                .unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", r.body))
        };
        let text: String = chunks
            .iter()
            .filter_map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 tok3 ", "{path}");
        assert_eq!(
            chunks.last().unwrap()["candidates"][0]["finishReason"],
            "STOP",
            "{path}"
        );
    }
    // A Gemini caller's function call, answered by OpenAI, and its response sent back.
    let tools = json!([{"functionDeclarations": [{"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let r = h
        .post("/v1beta/models/gem:generateContent", json!({"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}], "tools": tools}))
        .await;
    let v = r.json();
    let call = &v["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "weather", "{v}");
    assert_eq!(
        call["args"],
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
    );
    let r = h
        .post("/v1beta/models/gem:generateContent", json!({"tools": tools, "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "fog"}}}]}]}))
        .await;
    assert_eq!(
        r.json()["candidates"][0]["content"]["parts"][0]["text"],
        "The tool said: fog",
        "{}",
        r.body
    );
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    let id = &sent["messages"][1]["tool_calls"][0]["id"];
    assert!(id.is_string());
    assert_eq!(&sent["messages"][2]["tool_call_id"], id, "{sent}");
}

#[tokio::test]
async fn the_responses_api_crosses_both_ways() {
    let h = start(
        "xlate-responses",
        ENDPOINTS,
        &[Cred::new("ant", ANT_KEY), Cred::new("oai", OAI_KEY).on("openai")],
        "[routes.gpt]\ntargets = [{ endpoint = \"openai\", model = \"gpt-x\", credentials = [\"oai\"] }]\n\
         fallbacks = [{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"ant\"] }]\n\
         [routes.codex]\ntargets = [{ endpoint = \"openai\", model = \"codex-x\", credentials = [\"oai\"], apis = [\"responses\"] }]\n",
        "",
    )
    .await;
    // A Responses caller served by Anthropic: text, then a tool call, whole and streamed.
    h.sim.set(OAI_KEY, Behaviour::Overloaded);
    let r = h
        .post("/v1/responses", json!({"model": "gpt", "instructions": "Be brief.", "input": "hi", "max_output_tokens": 30}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "Hello from keyward-sim."
    );
    let sent = h.sim.received(ANT_KEY).pop().unwrap();
    assert_eq!(sent["system"][0]["text"], "Be brief.");
    assert_eq!(sent["max_tokens"], 30);
    let tools = json!([{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let r = h
        .post("/v1/responses", json!({"model": "gpt", "input": [{"role": "user", "content": "Weather?"}], "tools": tools, "stream": true}))
        .await;
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap().0, "response.completed", "{}", r.body);
    let done = &evs.last().unwrap().1["response"];
    let call = done["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
    );
    let args: String = evs
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, call["arguments"].as_str().unwrap());
    let r = h
        .post("/v1/responses", json!({"model": "gpt", "tools": tools, "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": call["call_id"], "name": "weather", "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "snow"}]}))
        .await;
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "The tool said: snow",
        "{}",
        r.body
    );
    // A stored conversation cannot cross: the fallback is skipped.
    let r = h
        .post(
            "/v1/responses",
            json!({"model": "gpt", "input": "again", "previous_response_id": "resp_1"}),
        )
        .await;
    assert!(r.status >= 500, "{}", r.body);
    h.eventually("the skip logged", || {
        h.logs().contains("previous_response_id")
    })
    .await;

    // An Anthropic caller on a Responses-only target, whole and streamed.
    h.sim.set(OAI_KEY, Behaviour::Ok);
    let r = h.messages("codex", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"][0]["text"], "Hello from keyward-sim.");
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(
        sent["input"][0]["content"][0],
        json!({"type": "input_text", "text": "hi"})
    );
    assert_eq!(sent["store"], false);
    let r = h.messages("codex", true).await;
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap().0, "message_stop", "{}", r.body);
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
}

/// A translated stream that fails before its first content is a failed attempt like any
/// other (classified by the target's provider, invisible to the caller), and the caller
/// gets its own error format when nothing else can serve.
#[tokio::test]
async fn a_translated_stream_failing_before_content_fails_over_invisibly() {
    let h = harness("xlate-precommit", "").await;
    h.sim.set(OAI_KEY, Behaviour::Overloaded);
    h.sim.set(ANT_KEY, Behaviour::MidStreamError { after: 0 });
    let r = h.chat("gpt", true).await;
    assert!(r.status >= 500, "{}", r.body);
    let v = r.json();
    assert!(
        v["error"]["message"].is_string(),
        "Chat's error envelope: {v}"
    );
    assert!(v.get("type").is_none(), "not Anthropic's: {v}");
    // The Anthropic attempt's in-band overload was read as such.
    h.eventually("the fallback's failure classified", || {
        h.logs().lines().any(|l| {
            l.contains("candidate failed")
                && l.contains("\"credential\":\"ant\"")
                && l.contains("\"class\":\"overloaded\"")
        })
    })
    .await;
    // Recovered: the same request streams from the fallback.
    h.sim.set(ANT_KEY, Behaviour::Ok);
    h.eventually_served_by(
        "anthropic",
        json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        "/v1/chat/completions",
    )
    .await;
}

/// The same with Gemini on either side: Anthropic callers answered by Gemini while
/// Anthropic is overloaded; then Gemini callers answered by OpenAI while Gemini is.
#[tokio::test]
async fn during_an_overload_gemini_serves_and_is_served_with_few_upstream_calls() {
    let h = gemini_harness("xlate-overload-gemini").await;
    let n = 20;
    let calls = || -> u64 {
        [ANT_KEY, GEM_KEY, OAI_KEY]
            .iter()
            .map(|k| h.sim.counts(k).requests)
            .sum()
    };
    h.sim.set(ANT_KEY, Behaviour::Overloaded);
    for i in 0..n {
        let r = h
            .messages_about("claude", i % 2 == 1, &format!("a{i}"))
            .await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert!(
            r.body.contains("message_stop") || r.body.contains("\"stop_reason\""),
            "{}",
            r.body
        );
    }
    let anthropic_callers = calls();
    h.sim.set(ANT_KEY, Behaviour::Ok);
    h.sim.set(GEM_KEY, Behaviour::Overloaded);
    for i in 0..n {
        let action = if i % 2 == 1 {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let body = json!({"contents": [{"role": "user", "parts": [{"text": format!("g{i}")}]}]});
        let r = h.post(&format!("/v1beta/models/gem:{action}"), body).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert!(r.body.contains("finishReason"), "{}", r.body);
    }
    let gemini_callers = calls() - anthropic_callers;
    for (who, calls) in [
        ("Anthropic callers, Gemini fallback", anthropic_callers),
        ("Gemini callers, OpenAI fallback", gemini_callers),
    ] {
        let per_request = calls as f64 / f64::from(n);
        eprintln!("{who}: {calls} upstream calls for {n} requests ({per_request:.2} per request)");
        assert!(
            per_request <= 1.3,
            "{who}: {per_request:.2} upstream calls per request"
        );
    }
}

/// Keep-alives that translate to nothing still count as the upstream being alive: a
/// translated stream pausing longer than the idle limit, pinging all along, completes.
#[tokio::test]
async fn keep_alives_of_a_translated_stream_hold_off_the_idle_limit() {
    let h = start(
        "xlate-pings",
        ENDPOINTS,
        &[Cred::new("ant", ANT_KEY), Cred::new("oai", OAI_KEY).on("openai")],
        "[routes.onlyclaude]\nidle_timeout = \"1s\"\ntargets = [{ endpoint = \"anthropic\", model = \"claude-x\", credentials = [\"ant\"] }]\n",
        "",
    )
    .await;
    h.sim.set(
        ANT_KEY,
        Behaviour::PingStall {
            after: 1,
            ms: 2_400,
        },
    );
    let r = h.chat("onlyclaude", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let evs = events(&r.body);
    assert_eq!(evs.last().unwrap().1, json!("[DONE]"), "{}", r.body);
    let text = chat_text(&evs);
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    // Without keep-alives, the same pause is a stall.
    h.sim.set(
        ANT_KEY,
        Behaviour::StreamStall {
            after: 1,
            ms: 2_400,
        },
    );
    let r = h.chat("onlyclaude", true).await;
    assert!(
        r.body.contains("stream_interrupted") || r.body.contains("stalled"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
}

/// An Anthropic caller's tool conversation on a Responses-only target (a Codex token),
/// whole and streamed: the call, then its result sent back as a function call output.
#[tokio::test]
async fn an_anthropic_tool_conversation_runs_on_a_responses_only_target() {
    let h = start(
        "xlate-codex-tools",
        ENDPOINTS,
        &[Cred::new("ant", ANT_KEY), Cred::new("oai", OAI_KEY).on("openai")],
        "[routes.codex]\ntargets = [{ endpoint = \"openai\", model = \"codex-x\", credentials = [\"oai\"], apis = [\"responses\"] }]\n",
        "",
    )
    .await;
    let ask = json!([{"role": "user", "content": "Weather?"}]);
    for stream in [false, true] {
        let r = h
            .post("/v1/messages", json!({"model": "codex", "max_tokens": 50, "stream": stream, "tools": weather_tool_anthropic(), "messages": ask}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (id, input, stop) = if stream {
            let evs = events(&r.body);
            let start = evs
                .iter()
                .find(|(_, d)| d["content_block"]["type"] == "tool_use")
                .unwrap_or_else(|| panic!("{}", r.body))
                .1
                .clone();
            let args: String = evs
                .iter()
                .filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_owned))
                .collect();
            let stop = evs.iter().find(|(n, _)| n == "message_delta").unwrap().1["delta"]
                ["stop_reason"]
                .clone();
            (
                start["content_block"]["id"].clone(),
                serde_json::from_str::<Value>(&args).unwrap(),
                stop,
            )
        } else {
            let v = r.json();
            (
                v["content"][0]["id"].clone(),
                v["content"][0]["input"].clone(),
                v["stop_reason"].clone(),
            )
        };
        assert_eq!(id, "call_sim_resp", "{}", r.body);
        assert_eq!(
            input,
            serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
        );
        assert_eq!(stop, "tool_use");
    }
    let history = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_sim_resp", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_sim_resp", "content": "mist"}]}]);
    let r = h
        .post("/v1/messages", json!({"model": "codex", "max_tokens": 50, "stream": true, "tools": weather_tool_anthropic(), "messages": history}))
        .await;
    let text: String = events(&r.body)
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "The tool said: mist", "{}", r.body);
    let sent = h.sim.received(OAI_KEY).pop().unwrap();
    assert_eq!(sent["input"][1]["type"], "function_call");
    assert_eq!(
        sent["input"][2],
        json!({"type": "function_call_output", "call_id": "call_sim_resp", "output": "mist"})
    );
    assert_eq!(sent["tools"][0]["strict"], false);
}
