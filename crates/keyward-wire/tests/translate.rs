//! The translation between wire families: golden fixtures, one per feature and pair
//! (`tests/fixtures/translate/*.json`: the input, what it becomes, and the provider's
//! documentation it follows), and properties — a translated request parses under the
//! target's schema, and text and tool calls survive a round trip.
//!
//! A fixture's `expected` is reviewed by hand; `KEYWARD_BLESS=1 cargo test -p keyward-wire
//! --test translate` rewrites them all from the current translation (then review the diff).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use keyward_wire::stream::Api;
use keyward_wire::translate::{self, Options, StreamTranslator};
use proptest::prelude::*;
use serde_json::{json, Value};

const OPTS: Options = Options {
    default_max_tokens: 4096,
    created: 1_700_000_000,
    nonce: 0xabc,
    compatible_chat: false,
};

fn api(name: &str) -> Api {
    match name {
        "messages" => Api::Messages,
        "chat" => Api::ChatCompletions,
        "responses" => Api::Responses,
        "gemini" => Api::Gemini,
        other => panic!("unknown API {other}"),
    }
}

fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A stream fed in `piece`-byte chunks.
fn stream(from: Api, to: Api, array: bool, input: &str, piece: usize) -> String {
    let mut t = StreamTranslator::new(from, to, array, 1 << 20, &OPTS);
    let mut out = Vec::new();
    for chunk in input.as_bytes().chunks(piece.max(1)) {
        out.extend(t.push(chunk).unwrap());
    }
    out.extend(t.finish());
    String::from_utf8(out).unwrap()
}

fn actual(case: &Value) -> Value {
    let (from, to) = (
        api(case["from"].as_str().unwrap()),
        api(case["to"].as_str().unwrap()),
    );
    let input = &case["input"];
    match case["what"].as_str().unwrap() {
        "request" => {
            let body = input.to_string();
            let model = case["model"].as_str().unwrap();
            let streamed = case["stream"].as_bool().unwrap();
            let opts = Options {
                compatible_chat: case["compatible_chat"].as_bool().unwrap_or(false),
                ..OPTS
            };
            match translate::request(from, to, body.as_bytes(), model, streamed, &opts) {
                Ok(t) => json!({
                    "body": parsed(&t.body),
                    "losses": t.losses.iter().map(|l| json!({"feature": l.feature, "effect": l.effect})).collect::<Vec<_>>(),
                }),
                Err(e) => json!({"error": e.label(), "message": e.to_string()}),
            }
        }
        "response" => match translate::response(from, to, input.to_string().as_bytes(), &OPTS) {
            Ok(b) => parsed(&b),
            Err(e) => json!({"error": e.label(), "message": e.to_string()}),
        },
        "error" => {
            let status = u16::try_from(case["status"].as_u64().unwrap()).unwrap();
            translate::error_body(from, to, status, input.to_string().as_bytes())
                .map_or(Value::Null, |b| parsed(&b))
        }
        "stream" => {
            let text = input.as_str().unwrap();
            let array = case["array"].as_bool().unwrap_or(false);
            let whole = stream(from, to, array, text, usize::MAX);
            // Incremental: however the bytes are cut, the same events come out.
            for piece in [1, 7, 64] {
                assert_eq!(
                    stream(from, to, array, text, piece),
                    whole,
                    "{piece}-byte pieces"
                );
            }
            json!(whole)
        }
        other => panic!("unknown fixture kind {other}"),
    }
}

#[test]
fn golden_fixtures() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate");
    let bless = std::env::var_os("KEYWARD_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "{} fixtures", files.len());
    let mut failed = Vec::new();
    for path in files {
        let mut case: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let got = actual(&case);
        if bless {
            case["expected"] = got;
            std::fs::write(&path, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
        } else if case["expected"] != got {
            failed.push(format!(
                "{}:\n  input:    {}\n  expected: {}\n  got:      {}",
                path.file_name().unwrap().to_string_lossy(),
                case["input"],
                case["expected"],
                got
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

// ---- Properties ----------------------------------------------------------------------

/// One generated exchange after the first user turn.
#[derive(Debug, Clone)]
enum Exchange {
    /// The assistant answers with text; the user replies.
    Talk(String, String),
    /// The assistant (maybe saying something) calls tools; the user returns their results
    /// (and maybe says something).
    Tools {
        said: Option<String>,
        calls: Vec<(String, Value)>,
        results: Vec<String>,
        then: Option<String>,
    },
}

fn text() -> impl Strategy<Value = String> {
    // Printable text with at least one visible character (providers refuse blank parts).
    ("[a-zA-Z0-9éß漢]", "[ -~éß漢\n]{0,24}").prop_map(|(a, b)| format!("{a}{b}"))
}

fn args() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            text().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from)
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn exchange() -> impl Strategy<Value = Exchange> {
    prop_oneof![
        (text(), text()).prop_map(|(a, u)| Exchange::Talk(a, u)),
        (
            prop::option::of(text()),
            prop::collection::vec(("[a-z_]{1,10}", args()), 1..3),
            prop::option::of(text()),
            prop::collection::vec(text(), 3),
        )
            .prop_map(|(said, calls, then, results)| {
                let results = results.into_iter().take(calls.len()).collect();
                Exchange::Tools {
                    said,
                    calls,
                    results,
                    then,
                }
            }),
    ]
}

/// An Anthropic Messages request from the generated conversation; tool ids `toolu_<n>`.
fn anthropic_request(system: &Option<String>, first: &str, exchanges: &[Exchange]) -> Value {
    let mut messages = vec![json!({"role": "user", "content": first})];
    let mut n = 0;
    let mut tools: Vec<String> = Vec::new();
    for x in exchanges {
        match x {
            Exchange::Talk(a, u) => {
                messages
                    .push(json!({"role": "assistant", "content": [{"type": "text", "text": a}]}));
                messages.push(json!({"role": "user", "content": u}));
            }
            Exchange::Tools {
                said,
                calls,
                results,
                then,
            } => {
                let mut a: Vec<Value> = said
                    .iter()
                    .map(|s| json!({"type": "text", "text": s}))
                    .collect();
                let mut u = Vec::new();
                for ((name, input), result) in calls.iter().zip(results) {
                    n += 1;
                    a.push(json!({"type": "tool_use", "id": format!("toolu_{n}"), "name": name, "input": input}));
                    u.push(json!({"type": "tool_result", "tool_use_id": format!("toolu_{n}"), "content": result}));
                    if !tools.contains(name) {
                        tools.push(name.clone());
                    }
                }
                u.extend(then.iter().map(|t| json!({"type": "text", "text": t})));
                messages.push(json!({"role": "assistant", "content": a}));
                messages.push(json!({"role": "user", "content": u}));
            }
        }
    }
    let mut r =
        json!({"model": "claude", "max_tokens": 256, "messages": messages, "temperature": 0.5});
    if let Some(s) = system {
        r["system"] = json!(s);
    }
    if !tools.is_empty() {
        r["tools"] = json!(tools
            .iter()
            .map(|t| json!({"name": t, "input_schema": {"type": "object"}}))
            .collect::<Vec<_>>());
    }
    r
}

/// A turn as content, whatever the format: its text joined, its calls (name, arguments),
/// its tool results' text.
#[derive(Debug, Clone, PartialEq)]
struct Turn {
    assistant: bool,
    text: String,
    calls: Vec<(String, Value)>,
    results: Vec<String>,
}

/// The conversation an Anthropic request holds (system text first).
fn anthropic_turns(r: &Value) -> (String, Vec<Turn>) {
    let system = match &r["system"] {
        Value::String(s) => s.clone(),
        Value::Array(b) => b.iter().filter_map(|x| x["text"].as_str()).collect(),
        _ => String::new(),
    };
    let mut turns = Vec::new();
    for m in r["messages"].as_array().unwrap() {
        let mut t = Turn {
            assistant: m["role"] == "assistant",
            text: String::new(),
            calls: Vec::new(),
            results: Vec::new(),
        };
        match &m["content"] {
            Value::String(s) => t.text.push_str(s),
            Value::Array(blocks) => {
                for b in blocks {
                    match b["type"].as_str().unwrap() {
                        "text" => t.text.push_str(b["text"].as_str().unwrap()),
                        "tool_use" => t
                            .calls
                            .push((b["name"].as_str().unwrap().to_owned(), b["input"].clone())),
                        "tool_result" => t.results.push(match &b["content"] {
                            Value::String(s) => s.clone(),
                            Value::Array(p) => {
                                p.iter().filter_map(|x| x["text"].as_str()).collect()
                            }
                            _ => String::new(),
                        }),
                        other => panic!("unexpected block {other}"),
                    }
                }
            }
            other => panic!("unexpected content {other}"),
        }
        turns.push(t);
    }
    (system, turns)
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Anthropic's request schema, as far as the API enforces it: roles alternate from the
/// user, blocks are known and non-blank, every tool use is answered in the next turn by
/// id, ids are well formed, `max_tokens` is set.
fn check_anthropic(r: &Value) -> Result<(), String> {
    let ok = |c: bool, why: &str| {
        if c {
            Ok(())
        } else {
            Err(format!("{why}: {r}"))
        }
    };
    ok(r["model"].is_string(), "model")?;
    ok(
        r["max_tokens"].as_u64().is_some_and(|n| n > 0),
        "max_tokens",
    )?;
    let messages = r["messages"].as_array().ok_or("messages")?;
    ok(
        !messages.is_empty() && messages[0]["role"] == "user",
        "starts with the user",
    )?;
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        ok(m["role"] == role, "roles alternate")?;
        let text_only;
        let blocks = match &m["content"] {
            Value::String(t) => {
                text_only = vec![json!({"type": "text", "text": t})];
                &text_only
            }
            other => other
                .as_array()
                .ok_or("content is text or a list of blocks")?,
        };
        ok(!blocks.is_empty(), "no empty turn")?;
        let answered: Vec<&str> = blocks
            .iter()
            .filter_map(|b| b["tool_use_id"].as_str())
            .collect();
        let mut want = std::mem::take(&mut pending);
        want.sort();
        let mut got: Vec<String> = answered.iter().map(|s| (*s).to_owned()).collect();
        got.sort();
        ok(
            want == got,
            "every tool use answered in the next turn, by id",
        )?;
        for b in blocks {
            match b["type"].as_str() {
                Some("text") => ok(
                    b["text"].as_str().is_some_and(|t| !t.trim().is_empty()),
                    "non-blank text",
                )?,
                Some("tool_use") => {
                    ok(
                        role == "assistant" && b["input"].is_object() && b["name"].is_string(),
                        "tool_use",
                    )?;
                    let id = b["id"].as_str().unwrap_or_default();
                    ok(id_ok(id), "tool_use id pattern")?;
                    pending.push(id.to_owned());
                }
                Some("tool_result") => ok(
                    role == "user" && b["tool_use_id"].as_str().is_some_and(id_ok),
                    "tool_result",
                )?,
                Some("image") => ok(b["source"]["type"].is_string(), "image source")?,
                other => return Err(format!("unknown block {other:?}")),
            }
        }
    }
    ok(pending.is_empty(), "the last tool uses are answered")
}

/// Chat Completions' request schema: known roles, tool messages right after the assistant
/// message whose calls they answer, arguments that are JSON text.
fn check_chat(r: &Value) -> Result<(), String> {
    let ok = |c: bool, why: &str| {
        if c {
            Ok(())
        } else {
            Err(format!("{why}: {r}"))
        }
    };
    ok(r["model"].is_string(), "model")?;
    let mut open: Vec<String> = Vec::new();
    for m in r["messages"].as_array().ok_or("messages")? {
        match m["role"].as_str() {
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                ok(
                    open.iter().any(|x| x == id),
                    "a tool message answers an open call",
                )?;
                open.retain(|x| x != id);
                ok(m["content"].is_string(), "tool content")?;
                continue;
            }
            Some("system" | "user") => ok(
                m["content"].is_string() || m["content"].is_array(),
                "content",
            )?,
            Some("assistant") => {
                ok(
                    m["content"].is_string() || m["content"].is_null(),
                    "assistant content",
                )?;
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    ok(
                        c["type"] == "function" && c["function"]["name"].is_string(),
                        "tool call",
                    )?;
                    let a = c["function"]["arguments"].as_str().unwrap_or_default();
                    ok(
                        serde_json::from_str::<Value>(a).is_ok(),
                        "arguments are JSON text",
                    )?;
                    open.push(c["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            other => return Err(format!("unknown role {other:?}")),
        }
        ok(
            open.is_empty() || m["role"] == "assistant",
            "calls answered before the next turn",
        )?;
    }
    for t in r["tools"].as_array().into_iter().flatten() {
        ok(
            t["type"] == "function"
                && t["function"]["name"].is_string()
                && t["function"]["parameters"].is_object(),
            "tool",
        )?;
    }
    Ok(())
}

/// The Responses API's input schema: message items of known roles and part types,
/// function call outputs after their calls.
fn check_responses(r: &Value) -> Result<(), String> {
    let ok = |c: bool, why: &str| {
        if c {
            Ok(())
        } else {
            Err(format!("{why}: {r}"))
        }
    };
    ok(
        r["model"].is_string() && r["store"] == false,
        "model, not stored",
    )?;
    let mut calls: Vec<&str> = Vec::new();
    for item in r["input"].as_array().ok_or("input")? {
        match item["type"].as_str() {
            Some("message") => {
                let part = if item["role"] == "assistant" {
                    "output_text"
                } else {
                    "input_text"
                };
                ok(
                    matches!(item["role"].as_str(), Some("user" | "assistant")),
                    "role",
                )?;
                for p in item["content"].as_array().ok_or("content")? {
                    ok(p["type"] == part || p["type"] == "input_image", "part type")?;
                }
            }
            Some("function_call") => {
                ok(
                    serde_json::from_str::<Value>(item["arguments"].as_str().unwrap_or_default())
                        .is_ok(),
                    "arguments",
                )?;
                calls.push(item["call_id"].as_str().unwrap_or_default());
            }
            Some("function_call_output") => {
                ok(
                    calls.contains(&item["call_id"].as_str().unwrap_or_default()),
                    "an output follows its call",
                )?;
                ok(item["output"].is_string(), "output")?;
            }
            other => return Err(format!("unknown item {other:?}")),
        }
    }
    Ok(())
}

/// Gemini's request schema: `user`/`model` turns alternating, one datum per part, a
/// function response after a call of the same name in the previous turn.
fn check_gemini(r: &Value) -> Result<(), String> {
    let ok = |c: bool, why: &str| {
        if c {
            Ok(())
        } else {
            Err(format!("{why}: {r}"))
        }
    };
    ok(r.get("model").is_none(), "the model is in the URL")?;
    let mut last_calls: Vec<String> = Vec::new();
    let mut last_role = "";
    for c in r["contents"].as_array().ok_or("contents")? {
        let role = c["role"].as_str().unwrap_or_default();
        ok(
            matches!(role, "user" | "model") && role != last_role,
            "roles alternate",
        )?;
        let parts = c["parts"].as_array().ok_or("parts")?;
        ok(!parts.is_empty(), "parts")?;
        let mut calls = Vec::new();
        for p in parts {
            let keys: Vec<&String> = p
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "thoughtSignature")
                .collect();
            ok(keys.len() == 1, "one datum per part")?;
            if let Some(f) = p.get("functionCall") {
                ok(role == "model" && f["args"].is_object(), "function call")?;
                calls.push(f["name"].as_str().unwrap_or_default().to_owned());
            }
            if let Some(f) = p.get("functionResponse") {
                ok(
                    role == "user"
                        && last_calls
                            .iter()
                            .any(|n| n == f["name"].as_str().unwrap_or_default()),
                    "a response names a call",
                )?;
            }
        }
        last_calls = calls;
        last_role = if role == "user" { "user" } else { "model" };
    }
    Ok(())
}

fn check(api: Api, r: &Value) -> Result<(), String> {
    match api {
        Api::Messages => check_anthropic(r),
        Api::ChatCompletions => check_chat(r),
        Api::Responses => check_responses(r),
        Api::Gemini => check_gemini(r),
    }
}

const APIS: [Api; 4] = [
    Api::Messages,
    Api::ChatCompletions,
    Api::Responses,
    Api::Gemini,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// An Anthropic conversation translated to each family parses under that family's
    /// schema; translated on again to every other family, it still does; and back in
    /// Anthropic's format, its text, tool calls and tool results are the same.
    #[test]
    fn requests_keep_their_shape_and_their_content(
        system in prop::option::of(text()),
        first in text(),
        exchanges in prop::collection::vec(exchange(), 0..4),
    ) {
        let original = anthropic_request(&system, &first, &exchanges);
        check_anthropic(&original).map_err(TestCaseError::fail)?;
        let want = anthropic_turns(&original);
        for via in APIS {
            let up = translate::request(Api::Messages, via, original.to_string().as_bytes(), "m", false, &OPTS).unwrap();
            let up_v = parsed(&up.body);
            prop_assert!(up.losses.is_empty(), "{via:?} lost {:?}", up.losses);
            check(via, &up_v).map_err(|e| TestCaseError::fail(format!("{via:?}: {e}")))?;
            for next in APIS {
                let again = translate::request(via, next, &up.body, "m", true, &OPTS).unwrap();
                check(next, &parsed(&again.body)).map_err(|e| TestCaseError::fail(format!("{via:?} then {next:?}: {e}")))?;
            }
            let back = translate::request(via, Api::Messages, &up.body, "claude", false, &OPTS).unwrap();
            let back_v = parsed(&back.body);
            check_anthropic(&back_v).map_err(|e| TestCaseError::fail(format!("back from {via:?}: {e}")))?;
            prop_assert_eq!(&anthropic_turns(&back_v), &want, "through {:?}", via);
        }
    }

    /// An answer's text and tool calls survive a round trip through each family, whole
    /// and streamed event by event.
    #[test]
    fn answers_keep_their_text_and_tool_calls(
        said in prop::option::of(text()),
        calls in prop::collection::vec(("[a-z_]{1,10}", args()), 0..3),
    ) {
        let mut content: Vec<Value> = said.iter().map(|s| json!({"type": "text", "text": s})).collect();
        for (i, (name, input)) in calls.iter().enumerate() {
            content.push(json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": input}));
        }
        let stop = if calls.is_empty() { "end_turn" } else { "tool_use" };
        let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
                            "stop_reason": stop, "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 4}});
        let content_of = |v: &Value| -> Vec<Value> {
            v["content"].as_array().unwrap().iter().map(|b| {
                if b["type"] == "tool_use" { json!({"call": b["name"], "input": b["input"]}) } else { json!({"text": b["text"]}) }
            }).collect()
        };
        let want = content_of(&answer);
        for via in APIS {
            let there = translate::response(Api::Messages, via, answer.to_string().as_bytes(), &OPTS).unwrap();
            let back = parsed(&translate::response(via, Api::Messages, &there, &OPTS).unwrap());
            prop_assert_eq!(&content_of(&back), &want, "whole, through {:?}", via);
            prop_assert_eq!(&back["stop_reason"], &json!(stop));
        }
        // Streamed: Anthropic events → each family → Anthropic events, accumulated.
        let mut events = format!("event: message_start\ndata: {}\n\n", json!({"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}}));
        for (i, b) in content.iter().enumerate() {
            let (start, delta) = if b["type"] == "tool_use" {
                (json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}), json!({"type": "input_json_delta", "partial_json": b["input"].to_string()}))
            } else {
                (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": b["text"]}))
            };
            events.push_str(&format!("event: content_block_start\ndata: {}\n\n", json!({"type": "content_block_start", "index": i, "content_block": start})));
            events.push_str(&format!("event: content_block_delta\ndata: {}\n\n", json!({"type": "content_block_delta", "index": i, "delta": delta})));
            events.push_str(&format!("event: content_block_stop\ndata: {}\n\n", json!({"type": "content_block_stop", "index": i})));
        }
        events.push_str(&format!("event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
            json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 4}})));
        for via in APIS {
            let there = stream(Api::Messages, via, false, &events, 13);
            let back = stream(via, Api::Messages, false, &there, 5);
            prop_assert!(back.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), "{}", back);
            let mut got: Vec<Value> = Vec::new();
            let mut args = String::new();
            for ev in back.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))) {
                let d: Value = serde_json::from_str(ev).unwrap();
                match d["type"].as_str().unwrap() {
                    "content_block_start" if d["content_block"]["type"] == "tool_use" => {
                        got.push(json!({"call": d["content_block"]["name"]}));
                        args.clear();
                    }
                    "content_block_start" => got.push(json!({"text": ""})),
                    "content_block_delta" => match d["delta"]["type"].as_str().unwrap() {
                        "text_delta" => {
                            let last = got.last_mut().unwrap();
                            last["text"] = json!(format!("{}{}", last["text"].as_str().unwrap(), d["delta"]["text"].as_str().unwrap()));
                        }
                        _ => args.push_str(d["delta"]["partial_json"].as_str().unwrap()),
                    },
                    "content_block_stop" => {
                        let last = got.last_mut().unwrap();
                        if last.get("call").is_some() {
                            last["input"] = if args.is_empty() { json!({}) } else { serde_json::from_str(&args).unwrap() };
                        }
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(&got, &want, "streamed through {:?}: {}", via, back);
        }
    }
}
