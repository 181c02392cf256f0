#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Real seconds, as the scenarios are defined; the real binary keeps real time.
#![allow(clippy::disallowed_methods)]
//! The sixteen transport and failover scenarios (S01–S16), at full scale: each drives the
//! real `keyward serve` binary, with default timeouts and a fallback model configured,
//! through the OpenAI Chat Completions streaming API against `keyward-sim`, and asserts
//! what the caller received, how many attempts the simulated primary saw and when, and how
//! long it took (with margins for a loaded 2-core machine). The scorecard is
//! `docs/scenarios.md`.

use std::time::{Duration, Instant};

use crate::support::*;
use keyward_sim::{Attempt, Behaviour};

const P: &str = "sk-proj-scenario-primary-0001";
const F: &str = "sk-proj-scenario-fallback-0002";

/// Primary `gpt-primary` on endpoint `primary` (key `p`), fallback `gpt-fallback` on
/// endpoint `fallback` (key `f`), and a larger-context route for context overflow.
async fn scenario(name: &str) -> Harness {
    start(
        name,
        &[("primary", "openai", "/v1"), ("fallback", "openai", "/v1")],
        &[Cred::new("p", P).on("primary"), Cred::new("f", F).on("fallback")],
        "[routes.gpt]\n\
         targets = [{ endpoint = \"primary\", model = \"gpt-primary\", credentials = [\"p\"] }]\n\
         fallbacks = [{ endpoint = \"fallback\", model = \"gpt-fallback\", credentials = [\"f\"] }]\n\
         context_fallback = \"gpt-long\"\n\n\
         [routes.gpt-long]\n\
         targets = [{ endpoint = \"fallback\", model = \"gpt-long-context\", credentials = [\"f\"] }]\n",
        "",
    )
    .await
}

/// Inference attempts (not probes) a key received.
fn tries(h: &Harness, key: &str) -> Vec<Attempt> {
    h.sim
        .attempts(key)
        .into_iter()
        .filter(|a| !a.probe)
        .collect()
}

/// Asserts a whole, successful Chat Completions stream and returns the model that answered.
fn whole(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.trim_end().ends_with("data: [DONE]"),
        "a whole stream ends with [DONE]: {}",
        r.body
    );
    assert!(r.body.contains("\"finish_reason\":\"stop\""), "{}", r.body);
    assert!(
        !r.body.contains("\"error\""),
        "no error in a whole stream: {}",
        r.body
    );
    r.header("x-keyward-target")
}

/// Asserts a committed stream that ended with OpenAI's in-band error, not a success.
fn broken(r: &Reply) {
    assert_eq!(r.status, 200, "committed before it broke: {}", r.body);
    assert!(
        !r.body.contains("[DONE]"),
        "no fabricated [DONE]: {}",
        r.body
    );
    let last = r.body.trim_end().rsplit("\n\n").next().unwrap_or("");
    assert!(
        last.starts_with("data: {\"error\""),
        "ends with OpenAI's in-band error: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_429_with_retry_after_then_ok() {
    let h = scenario("s01").await;
    h.sim.script(
        P,
        [Behaviour::RateLimited {
            retry_after: Some(2),
        }],
    );
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    // A 2 s reset is waited out on the primary (`retry_after_wait`, 5 s by default):
    // the model the caller asked for answers.
    assert_eq!(whole(&r), "primary/gpt-primary");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let t = tries(&h, P);
    assert_eq!(t.len(), 2, "the primary retried once: {t:?}");
    let gap = t[1].at - t[0].at;
    eprintln!("S01: the primary retried after {gap:?}; answered after {took:?}");
    assert!(
        gap >= Duration::from_millis(1_800),
        "Retry-After honoured: {gap:?}"
    );
    assert!(tries(&h, F).is_empty(), "no fallback model");
}

/// Another key of the same target answers at once: a reset is waited out only when the
/// alternative is another model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_another_key_of_the_same_target_goes_before_waiting() {
    const P2: &str = "sk-proj-scenario-primary-0003";
    let h = start(
        "s01-sibling",
        &[("primary", "openai", "/v1"), ("fallback", "openai", "/v1")],
        &[
            Cred::new("p", P).on("primary").with("priority = 10"),
            Cred::new("p2", P2).on("primary"),
            Cred::new("f", F).on("fallback"),
        ],
        "[routes.gpt]\n\
         targets = [{ endpoint = \"primary\", model = \"gpt-primary\", credentials = [\"p\", \"p2\"] }]\n\
         fallbacks = [{ endpoint = \"fallback\", model = \"gpt-fallback\", credentials = [\"f\"] }]\n",
        "",
    )
    .await;
    h.sim.script(
        P,
        [Behaviour::RateLimited {
            retry_after: Some(2),
        }],
    );
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "primary/gpt-primary");
    assert_eq!(r.header("x-keyward-credential"), "p2");
    assert!(started.elapsed() < Duration::from_millis(1_500), "no wait");
    assert_eq!(tries(&h, P).len(), 1);
    assert!(tries(&h, F).is_empty());
}

/// A route with `retry_after_wait = "0s"` fails over at once instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_without_waiting_fails_over_at_once() {
    let h = start(
        "s01-nowait",
        &[("primary", "openai", "/v1"), ("fallback", "openai", "/v1")],
        &[Cred::new("p", P).on("primary"), Cred::new("f", F).on("fallback")],
        "[routes.gpt]\n\
         targets = [{ endpoint = \"primary\", model = \"gpt-primary\", credentials = [\"p\"] }]\n\
         fallbacks = [{ endpoint = \"fallback\", model = \"gpt-fallback\", credentials = [\"f\"] }]\n\
         retry_after_wait = \"0s\"\n",
        "",
    )
    .await;
    h.sim.script(
        P,
        [Behaviour::RateLimited {
            retry_after: Some(2),
        }],
    );
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-fallback");
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert_eq!(tries(&h, P).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_429_forever_without_retry_after() {
    let h = scenario("s02").await;
    h.sim.set(P, Behaviour::RateLimited { retry_after: None });
    let started = Instant::now();
    // A request every 500 ms for 3 s.
    for i in 0..7u32 {
        let r = h.chat("gpt", true).await;
        assert_eq!(whole(&r), "fallback/gpt-fallback");
        let next = started + Duration::from_millis(500) * (i + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    let t = tries(&h, P);
    let in_3s = t
        .iter()
        .filter(|a| a.at - t[0].at < Duration::from_secs(3))
        .count();
    eprintln!(
        "S02: {in_3s} primary attempt(s) in 3 s, {} in total",
        t.len()
    );
    assert!(in_3s <= 4, "at most 4 primary attempts in 3 s: {t:?}");
    assert!(t.len() <= 6, "at most 6 in total: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_500_once_then_ok() {
    let h = scenario("s03").await;
    h.sim.script(P, [Behaviour::ServerError]);
    let r = h.chat("gpt", true).await;
    assert_eq!(
        whole(&r),
        "primary/gpt-primary",
        "the same provider, retried once"
    );
    assert_eq!(r.header("x-keyward-attempts"), "2");
    assert_eq!(tries(&h, P).len(), 2);
    assert!(tries(&h, F).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_503_forever() {
    let h = scenario("s04").await;
    h.sim.set(P, Behaviour::Overloaded);
    for _ in 0..4 {
        let r = h.chat("gpt", true).await;
        assert_eq!(whole(&r), "fallback/gpt-fallback");
    }
    let t = tries(&h, P);
    eprintln!("S04: {} primary attempt(s) over 4 requests", t.len());
    assert!(t.len() <= 6, "at most 6 primary attempts: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_connection_reset_before_headers_then_ok() {
    let h = scenario("s05").await;
    h.sim.script(P, [Behaviour::ConnectionReset]);
    let r = h.chat("gpt", true).await;
    whole(&r);
    assert!(!tries(&h, P).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_accepts_and_never_answers() {
    let h = scenario("s06").await;
    h.sim.set(P, Behaviour::SlowHeaders { ms: 300_000 });
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-fallback");
    let took = started.elapsed();
    eprintln!("S06: answered by the fallback after {took:?}");
    assert!(took < Duration::from_secs(60), "well under 100 s: {took:?}");
    assert_eq!(
        tries(&h, P).len(),
        1,
        "fails over after the first timeout instead of retrying the silent route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_first_token_after_20_seconds() {
    let h = scenario("s07").await;
    h.sim.set(P, Behaviour::SlowFirstToken { ms: 20_000 });
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-fallback");
    let took = started.elapsed();
    eprintln!("S07: answered by the fallback after {took:?}");
    // The primary's own 10 s limit fires; the fallback has the rest of the request's
    // 15 s first-content budget: the whole answer inside 15 s.
    assert!(
        took >= Duration::from_millis(9_900) && took < Duration::from_secs(15),
        "the 10 s first-content limit fired and the answer came inside 15 s: {took:?}"
    );
    assert_eq!(tries(&h, P).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_stream_dies_after_40_of_60_tokens() {
    let h = scenario("s08").await;
    h.sim.set_stream_length(60);
    // Nothing committed yet (dies before its first token): fail over, a whole answer.
    h.sim.script(P, [Behaviour::StreamCut { after: 0 }]);
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-fallback");
    assert_eq!(r.body.matches("\"content\":\"tok").count(), 60);
    // Committed (40 tokens sent): continued with the 40 tokens as the start of the
    // answer; the caller reads one whole answer, every token once.
    h.sim.set(P, Behaviour::StreamCut { after: 40 });
    let r = h.chat("gpt", true).await;
    whole(&r);
    assert_eq!(text_of(&r), tokens(60));
    assert_eq!(r.body.matches("[DONE]").count(), 1);
    assert_eq!(
        r.body.matches("\"role\"").count(),
        1,
        "one role chunk: {}",
        r.body
    );
    // Where it cannot be continued (off for the route), the in-band error, never a
    // truncated success.
    let h = start(
        "s08-off",
        &[("primary", "openai", "/v1"), ("fallback", "openai", "/v1")],
        &[Cred::new("p", P).on("primary"), Cred::new("f", F).on("fallback")],
        "[routes.gpt]\n\
         targets = [{ endpoint = \"primary\", model = \"gpt-primary\", credentials = [\"p\"] }]\n\
         fallbacks = [{ endpoint = \"fallback\", model = \"gpt-fallback\", credentials = [\"f\"] }]\n\
         continue_streams = false\n",
        "",
    )
    .await;
    h.sim.set_stream_length(60);
    h.sim.set(P, Behaviour::StreamCut { after: 40 });
    let r = h.chat("gpt", true).await;
    broken(&r);
    assert!(r.body.contains("tok39 ") && !r.body.contains("tok40 "));
    assert!(
        r.body.contains("stream closed"),
        "worded as a closed stream: {}",
        r.body
    );
}

/// The text of a Chat Completions stream, its content deltas joined.
fn text_of(r: &Reply) -> String {
    r.body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The simulated answer of `n` tokens.
fn tokens(n: usize) -> String {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_stream_silent_after_20_tokens_for_30_seconds() {
    let h = scenario("s09").await;
    h.sim.set_stream_length(40);
    h.sim.set(
        P,
        Behaviour::StreamStall {
            after: 20,
            ms: 30_000,
        },
    );
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    let took = started.elapsed();
    eprintln!("S09: stall caught and the stream continued; whole after {took:?}");
    // The idle limit catches the stall; the stream is continued on the fallback (a
    // timeout is not retried on the silent target) with the 20 tokens as its start.
    assert_eq!(
        whole(&r),
        "primary/gpt-primary",
        "the caller's headers name the first"
    );
    assert_eq!(text_of(&r), tokens(40));
    assert!(
        took < Duration::from_secs(28),
        "the 20 s idle limit caught the stall: {took:?}"
    );
    assert_eq!(tries(&h, F).len(), 1, "continued on the fallback");
    // The gateway is healthy afterwards.
    h.sim.set(P, Behaviour::Ok);
    let r = h.chat("gpt", true).await;
    whole(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_the_tenth_event_is_invalid_json() {
    let h = scenario("s10").await;
    h.sim.set_stream_length(20);
    h.sim.set(P, Behaviour::MalformedChunk { at: 9 });
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "primary/gpt-primary");
    assert_eq!(
        r.body.matches("\"content\":\"tok").count(),
        20,
        "the rest delivered"
    );
    assert!(
        !r.body.contains("{\"choices\":[{\"delta\":{\"content\":\n"),
        "the invalid event dropped"
    );
    h.eventually("the drop logged", || {
        h.logs().contains("dropped a malformed stream event")
    })
    .await;
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "the gateway stays up");
    let (_, metrics) = h.get_text("/metrics", None).await;
    assert!(
        metrics.contains("keyward_stream_events_dropped_total{route=\"gpt\"} 1"),
        "the drop is counted: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_finish_reason_but_no_done() {
    let h = scenario("s11").await;
    h.sim.set(P, Behaviour::NoDone { hold_ms: 30_000 });
    let started = Instant::now();
    let r = h.chat("gpt", true).await;
    let took = started.elapsed();
    eprintln!("S11: finalised after {took:?}");
    assert_eq!(whole(&r), "primary/gpt-primary", "[DONE] added");
    assert!(r.body.contains("\"usage\""), "usage reported: {}", r.body);
    assert!(
        took < Duration::from_secs(8),
        "finalised promptly: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_context_length_exceeded() {
    let h = scenario("s12").await;
    h.sim.set(P, Behaviour::ContextOverflow);
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-long-context");
    assert_eq!(tries(&h, P).len(), 1, "no retry of the same model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_content_policy_violation() {
    let h = scenario("s13").await;
    h.sim.set(P, Behaviour::ContentFilter);
    let r = h.chat("gpt", true).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"]["code"],
        "content_policy_violation",
        "the provider's reason"
    );
    assert_eq!(tries(&h, P).len(), 1, "no retry of the same model");
    assert!(tries(&h, F).is_empty(), "and no other model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_primary_cut_and_a_fallback_that_rejects_prefill() {
    let h = scenario("s14").await;
    h.sim.set_stream_length(20);
    h.sim.set(F, Behaviour::RejectsPrefill);
    // Cut before any content: restart cleanly on the fallback with the caller's own
    // request (no partial assistant turn), so the prefill rule never fires.
    h.sim.script(P, [Behaviour::StreamCut { after: 0 }]);
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-fallback");
    let clean = tries(&h, F).len();
    // Cut after content, every time on the primary: continued there once (5 more
    // tokens), then on the fallback, which refuses the prefill; asked for the whole
    // answer instead, it repeats the 10 tokens delivered (swallowed) and the rest follows.
    h.sim.set(P, Behaviour::StreamCut { after: 5 });
    let r = h.chat("gpt", true).await;
    whole(&r);
    assert_eq!(text_of(&r), tokens(20));
    assert!(!r.body.contains("prefill"), "{}", r.body);
    assert_eq!(
        tries(&h, P).len(),
        2 + 1,
        "the primary: the first request's, then two"
    );
    assert_eq!(
        tries(&h, F).len(),
        clean + 2,
        "the fallback: the refused prefill, then the whole answer"
    );
    h.eventually("the refusal logged", || {
        h.logs().contains("the target refuses assistant prefill")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s15_primary_503_for_60_seconds_then_recovers() {
    let h = scenario("s15").await;
    h.sim.set(P, Behaviour::Overloaded);
    let started = Instant::now();
    let mut recovered_at = None;
    let mut back_on_primary = None;
    let mut i = 0u32;
    while back_on_primary.is_none() {
        let now = started.elapsed();
        if recovered_at.is_none() && now >= Duration::from_secs(60) {
            h.sim.set(P, Behaviour::Ok);
            recovered_at = Some(now);
        }
        let r = h.chat("gpt", true).await;
        let target = whole(&r);
        if recovered_at.is_none() {
            assert_eq!(target, "fallback/gpt-fallback", "served during the outage");
        } else if target == "primary/gpt-primary" {
            back_on_primary = Some(started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never returned to the primary"
        );
        i += 1;
        tokio::time::sleep_until((started + Duration::from_secs(4) * i).into()).await;
    }
    let during: Vec<_> = tries(&h, P)
        .into_iter()
        .filter(|a| a.outcome == "overloaded")
        .collect();
    assert!(
        during.len() <= 10,
        "few primary attempts in 60 s of outage ({} requests): {during:?}",
        i
    );
    let back = back_on_primary.unwrap() - recovered_at.unwrap();
    eprintln!(
        "S15: {i} requests, {} primary attempts during the outage, back on the primary {back:?} after recovery",
        during.len()
    );
    assert!(
        back <= Duration::from_secs(30),
        "back on the primary {back:?} after it recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_primary_503_forever_fallback_ok() {
    let h = scenario("s16").await;
    h.sim.set(P, Behaviour::Overloaded);
    let r = h.chat("gpt", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["model"], "gpt-fallback", "names the model that answered");
    assert!(
        v["usage"]["total_tokens"].as_u64().is_some(),
        "carries usage"
    );
    let r = h.chat("gpt", true).await;
    assert_eq!(whole(&r), "fallback/gpt-fallback");
    assert!(r.body.contains("\"model\":\"gpt-fallback\""));
    assert!(tries(&h, P).len() <= 6, "at most 6 primary attempts");
}

const AP: &str = "sk-ant-scenario-primary-0001";
const AF: &str = "sk-ant-scenario-fallback-0002";

/// The same layout on the Anthropic Messages API.
async fn anthropic_scenario(name: &str) -> Harness {
    start(
        name,
        &[("primary", "anthropic", ""), ("fallback", "anthropic", "")],
        &[Cred::new("p", AP).on("primary"), Cred::new("f", AF).on("fallback")],
        "[routes.claude]\n\
         targets = [{ endpoint = \"primary\", model = \"claude-primary\", credentials = [\"p\"] }]\n\
         fallbacks = [{ endpoint = \"fallback\", model = \"claude-fallback\", credentials = [\"f\"] }]\n\
         context_fallback = \"claude-long\"\n\n\
         [routes.claude-long]\n\
         targets = [{ endpoint = \"fallback\", model = \"claude-long-context\", credentials = [\"f\"] }]\n",
        "",
    )
    .await
}

/// Asserts a whole, successful Messages stream; returns the target that answered.
fn whole_messages(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("event: error"), "{}", r.body);
    r.header("x-keyward-target")
}

/// The text of a Messages stream, its text deltas joined.
fn messages_text(r: &Reply) -> String {
    r.body
        .split("\n\n")
        .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

/// The fast scenarios once more through the Anthropic Messages API (the timeouts' paths
/// are the same code as S06, S07 and S09, covered in `e2e.rs` on this API with short
/// limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_behaviour_on_the_anthropic_api() {
    let h = anthropic_scenario("anthropic-api").await;
    h.sim.set_stream_length(20);
    // S03: 500 once, then ok: the same provider, retried once.
    h.sim.script(AP, [Behaviour::ServerError]);
    assert_eq!(
        whole_messages(&h.messages("claude", true).await),
        "primary/claude-primary"
    );
    // S05: a reset before the headers, then ok.
    h.sim.script(AP, [Behaviour::ConnectionReset]);
    whole_messages(&h.messages("claude", true).await);
    // S08: nothing committed → a whole answer elsewhere; committed → the in-band error.
    h.sim.script(AP, [Behaviour::StreamCut { after: 0 }]);
    whole_messages(&h.messages("claude", true).await);
    // Committed, cut after 10 tokens: continued on the primary with the 10 tokens as an
    // assistant prefill; one message, one text block, every token once.
    h.sim.script(AP, [Behaviour::StreamCut { after: 10 }]);
    let r = h.messages("claude", true).await;
    whole_messages(&r);
    assert_eq!(messages_text(&r), tokens(20));
    assert_eq!(
        r.body.matches("event: message_start").count(),
        1,
        "{}",
        r.body
    );
    assert_eq!(
        r.body.matches("event: content_block_start").count(),
        1,
        "{}",
        r.body
    );
    assert_eq!(
        r.body.matches("event: message_stop").count(),
        1,
        "{}",
        r.body
    );
    // Cut every time with a fallback that refuses prefill: the primary once more, then
    // the fallback's whole answer spliced after what was sent.
    h.sim.set(AF, Behaviour::RejectsPrefill);
    h.sim.set(AP, Behaviour::StreamCut { after: 4 });
    let r = h.messages_about("claude", true, "cut twice").await;
    whole_messages(&r);
    assert_eq!(messages_text(&r), tokens(20));
    assert!(!r.body.contains("prefill"), "{}", r.body);
    h.sim.set(AP, Behaviour::Ok);
    h.sim.set(AF, Behaviour::Ok);
    // S10: an invalid event dropped, the rest delivered.
    h.sim.script(AP, [Behaviour::MalformedChunk { at: 9 }]);
    let r = h.messages("claude", true).await;
    whole_messages(&r);
    assert_eq!(r.body.matches("\"text\":\"tok").count(), 20);
    // S11: the terminal event came, the connection stays open: finalised promptly.
    h.sim.script(AP, [Behaviour::NoDone { hold_ms: 30_000 }]);
    let started = Instant::now();
    whole_messages(&h.messages("claude", true).await);
    assert!(started.elapsed() < Duration::from_secs(8));
    // S12: context overflow → the larger-context route, no retry of the same model.
    h.sim.script(AP, [Behaviour::ContextOverflow]);
    assert_eq!(
        whole_messages(&h.messages("claude", true).await),
        "fallback/claude-long-context"
    );
    // S13: content filter → the provider's reason, no retry anywhere.
    let before = tries(&h, AF).len();
    h.sim.script(AP, [Behaviour::ContentFilter]);
    let r = h.messages("claude", true).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(tries(&h, AF).len(), before);
    // S16: overloaded for good → the fallback, named, with usage.
    h.sim.set(AP, Behaviour::Overloaded);
    let r = h.messages("claude", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model"], "claude-fallback");
    assert!(r.json()["usage"]["output_tokens"].as_u64().is_some());
}
