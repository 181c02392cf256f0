#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]
//! Per-provider fixtures, written in this repository from each provider's documented
//! error shapes: `tests/fixtures/<provider>.jsonl`, one case per line with the verdict
//! expected beside it. A failing case prints its input and both verdicts.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use keyward_core::classify::{
    classify, Attempt, CatalogueName, CredentialKind, EndpointKind, Phase, TransportError,
};
use serde_json::Value;

#[test]
fn provider_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 19,
        "expected a fixture file per provider, found {}",
        files.len()
    );
    let now = UNIX_EPOCH + Duration::from_secs(1_751_278_440); // 2025-06-30T10:14:00Z
    let (mut total, mut failures) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            total += 1;
            let case: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), i + 1));
            let cat = CatalogueName::resolve(case["provider"].as_str().unwrap());
            assert!(
                cat.recognised,
                "{}:{}: unknown provider",
                file.display(),
                i + 1
            );
            let str_field = |k: &str| case.get(k).and_then(Value::as_str);
            let headers: Vec<(String, String)> = case["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let header_refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let attempt = Attempt {
                provider: cat.provider,
                credential: str_field("credential")
                    .map(|c| CredentialKind::parse(c).unwrap())
                    .or(cat.credential)
                    .unwrap_or(CredentialKind::ApiKey),
                endpoint: str_field("endpoint")
                    .map(|c| EndpointKind::parse(c).unwrap())
                    .or(cat.endpoint)
                    .unwrap_or(EndpointKind::Inference),
                phase: str_field("phase")
                    .map(|p| Phase::parse(p).unwrap())
                    .unwrap_or_default(),
                transport: str_field("transport").map(|t| TransportError::parse(t).unwrap()),
                status: case["status"].as_u64().map(|s| u16::try_from(s).unwrap()),
                headers: &header_refs,
                body: case["body"].as_str().unwrap().as_bytes(),
                now,
            };
            let got = classify(&attempt);
            let exp = &case["expect"];
            let mut wrong = Vec::new();
            if exp["class"].as_str() != Some(got.class.as_str()) {
                wrong.push(format!("class {} (want {})", got.class, exp["class"]));
            }
            if let Some(s) = exp.get("scope").and_then(Value::as_str) {
                if s != got.scope.as_str() {
                    wrong.push(format!("scope {} (want {s})", got.scope));
                }
            }
            if let Some(c) = exp.get("confidence").and_then(Value::as_str) {
                if c != got.confidence.as_str() {
                    wrong.push(format!("confidence {} (want {c})", got.confidence.as_str()));
                }
            }
            if let Some(ms) = exp.get("retry_after_ms").and_then(Value::as_u64) {
                let got_ms = got.retry_after.map(|d| d.as_millis() as u64);
                if got_ms != Some(ms) {
                    wrong.push(format!("retry_after_ms {got_ms:?} (want {ms})"));
                }
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{} — {}: {}\n    input: status {:?}, body {}\n    verdict: {}",
                    file.file_name().unwrap().to_string_lossy(),
                    case["name"].as_str().unwrap_or("?"),
                    wrong.join(", "),
                    case["status"],
                    case["body"]
                        .as_str()
                        .unwrap()
                        .chars()
                        .take(200)
                        .collect::<String>(),
                    got.explanation
                ));
            }
        }
    }
    eprintln!(
        "provider fixtures: {}/{total} as expected",
        total - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every generalisation family (issue 19) is written from at least two providers'
/// documentation, and every fixture of a family names its source.
#[test]
fn every_family_has_two_providers_and_sources() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if line.trim().is_empty() {
                continue;
            }
            let case: Value = serde_json::from_str(line).unwrap();
            let Some(family) = case.get("family").and_then(Value::as_str) else {
                continue;
            };
            let source = case.get("source").and_then(Value::as_str).unwrap_or("");
            assert!(
                source.len() > 10,
                "{}: fixture {:?} of family {family} has no source",
                path.display(),
                case["name"]
            );
            // Catalogue names of one provider (google-oauth-token, gemini-code-assist)
            // count as that provider.
            let provider = CatalogueName::resolve(case["provider"].as_str().unwrap())
                .provider
                .as_str()
                .to_owned();
            families
                .entry(family.to_owned())
                .or_default()
                .insert(provider);
        }
    }
    assert!(families.len() >= 9, "families: {families:?}");
    for (family, providers) in &families {
        assert!(
            providers.len() >= 2,
            "family {family} has fixtures from only {providers:?}"
        );
    }
}
