#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

//! Conformance over the shared error catalogues in `../shared/corpus/` (read in place,
//! never copied). They are beside the checkout for developers and in CI; when the folder
//! is missing the tests say so on stderr and pass, since they cannot judge anything.
//!
//! provider-errors-dev: ≥ 98 % right; no row outside {auth_permanent, billing,
//! model_not_found} classified auth_permanent; no auth_permanent/billing row classified
//! as a class that retries the same credential.
//! openclaw-vectors: ≥ 85 % of mappable, unflagged rows; no harmful auth_permanent.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_core::classify::{
    classify, Attempt, CatalogueName, Class, CredentialKind, EndpointKind, Phase,
};
use serde_json::Value;

fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KEYWARD_SHARED") {
        Some(d) => PathBuf::from(d).join("corpus"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"),
    };
    dir.is_dir().then_some(dir)
}

fn rows(file: &str) -> Option<Vec<Value>> {
    let Some(dir) = corpus_dir() else {
        eprintln!("corpus: ../shared/corpus not found; conformance over {file} not run");
        return None;
    };
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad corpus line: {e}")))
            .collect(),
    )
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_751_278_440)
}

struct Outcome {
    id: String,
    expected: Vec<Class>,
    got: Class,
    explanation: String,
}

fn run(
    provider: &str,
    row: &Value,
    body: &str,
    status: Option<u16>,
) -> keyward_core::classify::Failure {
    let cat = CatalogueName::resolve(provider);
    let credential = row
        .get("credential")
        .and_then(Value::as_str)
        .and_then(CredentialKind::parse)
        .or(cat.credential)
        .unwrap_or(CredentialKind::ApiKey);
    let endpoint = row
        .get("endpoint")
        .and_then(Value::as_str)
        .and_then(EndpointKind::parse)
        .or(cat.endpoint)
        .unwrap_or(EndpointKind::Inference);
    let headers: Vec<(String, String)> = row
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attempt = Attempt {
        provider: cat.provider,
        credential,
        endpoint,
        phase: Phase::Headers,
        transport: None,
        status,
        headers: &header_refs,
        body: body.as_bytes(),
        now: now(),
    };
    classify(&attempt)
}

fn report(name: &str, outcomes: &[Outcome]) -> f64 {
    let right = outcomes
        .iter()
        .filter(|o| o.expected.contains(&o.got))
        .count();
    let pct = 100.0 * right as f64 / outcomes.len().max(1) as f64;
    eprintln!("{name}: {right}/{} right ({pct:.1}%)", outcomes.len());
    for o in outcomes.iter().filter(|o| !o.expected.contains(&o.got)) {
        eprintln!(
            "  MISS {}: expected {:?}, got {} — {}",
            o.id,
            o.expected.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            o.got,
            o.explanation
        );
    }
    pct
}

#[test]
fn provider_errors_dev_conformance() {
    let Some(rows) = rows("provider-errors-dev.jsonl") else {
        return;
    };
    let mut outcomes = Vec::new();
    let mut unsafe_rows = Vec::new();
    for row in &rows {
        let provider = row["provider"].as_str().unwrap_or("unknown");
        let body = row["body"].as_str().unwrap_or_default();
        let status = row["status"].as_u64().and_then(|s| u16::try_from(s).ok());
        let expected = Class::parse(row["expected"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("unknown class in {row}"));
        let f = run(provider, row, body, status);
        let id = row["id"].as_str().unwrap_or("?").to_owned();
        if f.class == Class::AuthPermanent
            && !matches!(
                expected,
                Class::AuthPermanent | Class::Billing | Class::ModelNotFound
            )
        {
            unsafe_rows.push(format!("{id}: expected {expected}, got auth_permanent"));
        }
        if matches!(expected, Class::AuthPermanent | Class::Billing)
            && f.class.retries_same_credential()
        {
            unsafe_rows.push(format!(
                "{id}: expected {expected}, got retrying class {}",
                f.class
            ));
        }
        outcomes.push(Outcome {
            id,
            expected: vec![expected],
            got: f.class,
            explanation: f.explanation,
        });
    }
    let pct = report("provider-errors-dev", &outcomes);
    assert!(
        unsafe_rows.is_empty(),
        "safety rules broken:\n{}",
        unsafe_rows.join("\n")
    );
    assert!(
        pct >= 98.0,
        "provider-errors-dev accuracy {pct:.1}% is below 98%"
    );
}

const FLAGS: [&str; 6] = [
    "QUESTIONABLE",
    "CONFLICT",
    "INCONSISTENT",
    "AMBIGUOUS",
    "STALE",
    "CHANGED",
];

fn openclaw_expected(label: &str) -> Option<Vec<Class>> {
    Some(match label {
        "auth" => vec![Class::AuthPermanent, Class::AuthTransient],
        "format" => vec![Class::BadRequest],
        "timeout" => vec![Class::Timeout, Class::Network],
        "auth_permanent" | "billing" | "rate_limit" | "overloaded" | "server_error"
        | "context_overflow" | "model_not_found" => vec![Class::parse(label)?],
        _ => return None,
    })
}

#[test]
fn openclaw_vectors_conformance() {
    let Some(rows) = rows("openclaw-vectors.jsonl") else {
        return;
    };
    let mut outcomes = Vec::new();
    let mut harmful = Vec::new();
    for row in &rows {
        let note = row.get("note").and_then(Value::as_str).unwrap_or_default();
        if FLAGS.iter().any(|f| note.starts_with(f)) {
            continue;
        }
        let Some(expected) = row["expected"].as_str().and_then(openclaw_expected) else {
            continue;
        };
        let provider = row
            .get("provider")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        // The corpus README: providers map by the table where the row names one, else
        // `unknown`.
        let provider = if CatalogueName::resolve(provider).recognised {
            provider
        } else {
            "unknown"
        };
        let body = row["message"].as_str().unwrap_or_default();
        let status = row["status"].as_u64().and_then(|s| u16::try_from(s).ok());
        let f = run(provider, &Value::Null, body, status);
        let id = row["id"].as_str().unwrap_or("?").to_owned();
        if f.class == Class::AuthPermanent && !expected.contains(&Class::AuthPermanent) {
            harmful.push(format!(
                "{id}: expected {expected:?}, got auth_permanent: {}",
                f.explanation
            ));
        }
        outcomes.push(Outcome {
            id,
            expected,
            got: f.class,
            explanation: f.explanation,
        });
    }
    let pct = report("openclaw-vectors", &outcomes);
    assert!(
        harmful.is_empty(),
        "harmful auth_permanent verdicts:\n{}",
        harmful.join("\n")
    );
    assert!(
        pct >= 85.0,
        "openclaw-vectors accuracy {pct:.1}% is below 85%"
    );
}

/// The classes whose verdict may lead to a disable (after a confirming probe).
fn permanent(c: Class) -> bool {
    matches!(
        c,
        Class::AuthPermanent | Class::Billing | Class::ModelNotFound
    )
}

/// Calibration (how often each confidence level was right) over both catalogues, and the
/// confusion matrix of provider-errors-dev, printed as Markdown for docs/classifier.md.
/// Asserts what calibration must mean: high confidence is right more often than low, and
/// a high-confidence permanent verdict (the only kind that goes straight to
/// disable-after-probe) is never wrong about being permanent.
#[test]
fn calibration_and_confusion() {
    use keyward_core::classify::Confidence;
    let (Some(dev), Some(oc)) = (
        rows("provider-errors-dev.jsonl"),
        rows("openclaw-vectors.jsonl"),
    ) else {
        return;
    };
    // (expected set, verdict) for every scored row.
    let mut scored: Vec<(&str, Vec<Class>, keyward_core::classify::Failure)> = Vec::new();
    for row in &dev {
        let provider = row["provider"].as_str().unwrap_or("unknown");
        let body = row["body"].as_str().unwrap_or_default();
        let status = row["status"].as_u64().and_then(|s| u16::try_from(s).ok());
        let expected = Class::parse(row["expected"].as_str().unwrap_or_default()).unwrap();
        scored.push(("dev", vec![expected], run(provider, row, body, status)));
    }
    for row in &oc {
        let note = row.get("note").and_then(Value::as_str).unwrap_or_default();
        if FLAGS.iter().any(|f| note.starts_with(f)) {
            continue;
        }
        let Some(expected) = row["expected"].as_str().and_then(openclaw_expected) else {
            continue;
        };
        let provider = row
            .get("provider")
            .and_then(Value::as_str)
            .filter(|p| CatalogueName::resolve(p).recognised)
            .unwrap_or("unknown");
        let body = row["message"].as_str().unwrap_or_default();
        let status = row["status"].as_u64().and_then(|s| u16::try_from(s).ok());
        scored.push((
            "openclaw",
            expected,
            run(provider, &Value::Null, body, status),
        ));
    }

    eprintln!("\n| corpus | confidence | verdicts | right | share right |");
    eprintln!("|---|---|---|---|---|");
    let rate = |corpus: Option<&str>, conf: Confidence| {
        let sel: Vec<_> = scored
            .iter()
            .filter(|(c, _, f)| corpus.is_none_or(|x| x == *c) && f.confidence == conf)
            .collect();
        let right = sel.iter().filter(|(_, e, f)| e.contains(&f.class)).count();
        let pct = 100.0 * right as f64 / sel.len().max(1) as f64;
        eprintln!(
            "| {} | {} | {} | {right} | {pct:.1} % |",
            corpus.unwrap_or("both"),
            conf.as_str(),
            sel.len()
        );
        pct
    };
    for corpus in [Some("dev"), Some("openclaw")] {
        rate(corpus, Confidence::High);
        rate(corpus, Confidence::Low);
    }
    let high = rate(None, Confidence::High);
    let low = rate(None, Confidence::Low);
    assert!(
        high > low,
        "high confidence ({high:.1} %) must be right more often than low ({low:.1} %)"
    );

    // Disable-eligible verdicts: high-confidence permanent classes.
    let eligible: Vec<_> = scored
        .iter()
        .filter(|(_, _, f)| f.confidence == Confidence::High && permanent(f.class))
        .collect();
    let wrongly_permanent: Vec<String> = eligible
        .iter()
        .filter(|(_, e, _)| !e.iter().any(|c| permanent(*c)))
        .map(|(c, e, f)| format!("{c}: expected {e:?}, got {} ({})", f.class, f.explanation))
        .collect();
    let exact = eligible
        .iter()
        .filter(|(_, e, f)| e.contains(&f.class))
        .count();
    eprintln!(
        "\nhigh-confidence permanent verdicts (auth_permanent, billing, model_not_found): {}; exact class right: {exact}; a transient or request failure called permanent: {}",
        eligible.len(),
        wrongly_permanent.len()
    );
    assert!(
        wrongly_permanent.is_empty(),
        "high-confidence permanent verdicts on non-permanent rows:\n{}",
        wrongly_permanent.join("\n")
    );

    // Confusion matrix of provider-errors-dev: rows expected, columns got.
    let short = |c: Class| match c {
        Class::AuthTransient => "a_tr",
        Class::AuthPermanent => "a_pe",
        Class::Billing => "bill",
        Class::RateLimit => "rate",
        Class::Overloaded => "ovl",
        Class::Timeout => "tout",
        Class::Network => "net",
        Class::ServerError => "5xx",
        Class::BadRequest => "bad",
        Class::ContextOverflow => "ctx",
        Class::ModelNotFound => "model",
        Class::ContentFilter => "filt",
    };
    let header: Vec<&str> = Class::ALL.iter().map(|c| short(*c)).collect();
    for (corpus, title) in [
        ("dev", "provider-errors-dev"),
        (
            "openclaw",
            "openclaw-vectors (rows: OpenClaw's label, its first allowed class; a verdict in the allowed set counts on the diagonal)",
        ),
    ] {
        eprintln!("\n{title} confusion matrix (rows: expected, columns: verdict)\n");
        eprintln!("| expected \\ got | {} |", header.join(" | "));
        eprintln!("|---|{}", "---|".repeat(Class::ALL.len()));
        for exp in Class::ALL {
            let cells: Vec<String> = Class::ALL
                .iter()
                .map(|got| {
                    let n = scored
                        .iter()
                        .filter(|(c, e, f)| {
                            let shown = if e.contains(&f.class) { e[0] } else { f.class };
                            *c == corpus && e[0] == exp && shown == *got
                        })
                        .count();
                    if n == 0 {
                        "·".to_owned()
                    } else {
                        n.to_string()
                    }
                })
                .collect();
            eprintln!("| {} | {} |", exp.as_str(), cells.join(" | "));
        }
    }
}
