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
