//! `keyward classify`: one response from flags, or many as JSON Lines on stdin.

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use keyward_core::classify::{
    classify, Attempt, CatalogueName, CredentialKind, EndpointKind, Failure, Phase, Provider,
    TransportError,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::CliError;
use keyward::clock::wall_clock;

/// Longest JSON Lines input line accepted (bodies of several MB fit).
const MAX_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  keyward classify --provider anthropic --status 401 --body-file body.json --explain
  keyward classify --provider openai --status 429 --header 'retry-after: 20' --body-file -
  keyward classify --jsonl < failures.jsonl > verdicts.jsonl

JSON Lines input: one object per line with `provider`, `status` (int or null), `headers`
(object), `body` (string), and optionally `credential` (api_key|oauth|cloud, default
api_key), `endpoint` (inference|token, default inference), `transport`
(connect_refused|reset|tls|dns|timeout) and `phase` (before_headers|headers|mid_stream).
Other fields are ignored. Each line gets one JSON object back, in order; a malformed line
gets {\"error\": …} on its line.")]
pub(super) struct ClassifyArgs {
    /// Read JSON Lines from stdin and write one verdict per line to stdout.
    #[arg(long, conflicts_with_all = ["provider", "status", "body_file", "header", "transport"])]
    jsonl: bool,
    /// Provider name (anthropic, openai, azure-openai, gemini, vertex-ai, bedrock, mistral,
    /// groq, cohere, deepseek, xai, openrouter, together, fireworks, ollama, vllm,
    /// github-copilot, openai-compatible, unknown; catalogue names such as
    /// anthropic-oauth are accepted too).
    #[arg(long, required_unless_present = "jsonl")]
    provider: Option<String>,
    /// HTTP status of the response (omit for a transport failure).
    #[arg(long)]
    status: Option<u16>,
    /// A response header, as 'name: value' (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    header: Vec<String>,
    /// File with the response body ('-' for stdin).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Credential kind: api_key, oauth or cloud (default: implied by the provider name,
    /// else api_key).
    #[arg(long)]
    credential: Option<String>,
    /// Endpoint kind: inference, or token for an OAuth token endpoint's reply.
    #[arg(long)]
    endpoint: Option<String>,
    /// A transport failure instead of a response: connect_refused, reset, tls, dns, timeout.
    #[arg(long)]
    transport: Option<String>,
    /// How far the attempt got: before_headers, headers, mid_stream.
    #[arg(long)]
    phase: Option<String>,
    /// Print the verdict for a person instead of as JSON.
    #[arg(long)]
    explain: bool,
}

pub(super) fn run(args: ClassifyArgs) -> Result<ExitCode, CliError> {
    if args.jsonl {
        let stdin = io::stdin();
        let stdout = io::stdout();
        batch(
            stdin.lock(),
            &mut BufWriter::new(stdout.lock()),
            wall_clock(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    single(&args)
}

fn single(args: &ClassifyArgs) -> Result<ExitCode, CliError> {
    let provider = args.provider.as_deref().unwrap_or("unknown");
    let cat = CatalogueName::resolve(provider);
    let mut err = io::stderr().lock();
    if !cat.recognised {
        let _ = writeln!(
            err,
            "keyward: warning: provider {provider:?} is not known; generic rules apply (known: {})",
            Provider::ALL.map(Provider::as_str).join(", ")
        );
    }
    let credential = parse_opt(
        args.credential.as_deref(),
        "--credential",
        "api_key, oauth, cloud",
        CredentialKind::parse,
    )?
    .or(cat.credential)
    .unwrap_or(CredentialKind::ApiKey);
    let endpoint = parse_opt(
        args.endpoint.as_deref(),
        "--endpoint",
        "inference, token",
        EndpointKind::parse,
    )?
    .or(cat.endpoint)
    .unwrap_or(EndpointKind::Inference);
    let transport = parse_opt(
        args.transport.as_deref(),
        "--transport",
        "connect_refused, reset, tls, dns, timeout",
        TransportError::parse,
    )?;
    let phase = parse_opt(
        args.phase.as_deref(),
        "--phase",
        "before_headers, headers, mid_stream",
        Phase::parse,
    )?
    .unwrap_or_default();
    if args.status.is_none() && transport.is_none() && args.body_file.is_none() {
        return Err(CliError::Usage(
            "give --status (and usually --body-file), or --transport for a failure without a response".into(),
        ));
    }
    let headers = args
        .header
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| {
                    CliError::Usage(format!("--header {h:?} must look like 'name: value'"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &args.body_file {
        None => Vec::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|source| CliError::Read {
                    path: p.clone(),
                    source,
                })?;
            buf
        }
        Some(p) => std::fs::read(p).map_err(|source| CliError::Read {
            path: p.clone(),
            source,
        })?,
    };
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attempt = Attempt {
        provider: cat.provider,
        credential,
        endpoint,
        phase,
        transport,
        status: args.status,
        headers: &header_refs,
        body: &body,
        now: wall_clock(),
    };
    let failure = classify(&attempt);
    let mut out = io::stdout().lock();
    if args.explain {
        write_explained(&mut out, &failure).map_err(CliError::Write)?;
    } else {
        let line = serde_json::to_string_pretty(&failure).map_err(|e| CliError::Write(e.into()))?;
        writeln!(out, "{line}").map_err(CliError::Write)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_opt<T>(
    value: Option<&str>,
    flag: &str,
    accepted: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, CliError> {
    match value {
        None => Ok(None),
        Some(v) => parse(v)
            .map(Some)
            .ok_or_else(|| CliError::Usage(format!("{flag} {v:?} is not one of: {accepted}"))),
    }
}

fn write_explained(out: &mut impl Write, f: &Failure) -> io::Result<()> {
    let retry = f
        .retry_after
        .map(|d| {
            format!(
                "{:.3}s (from {})",
                d.as_secs_f64(),
                f.evidence.retry_after_source.unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "-".into());
    let status = f
        .evidence
        .status
        .map(|s| {
            if f.evidence.status_from_text {
                format!("{s} (read from the text)")
            } else {
                s.to_string()
            }
        })
        .unwrap_or_else(|| "-".into());
    writeln!(out, "class        {}", f.class)?;
    writeln!(out, "scope        {}", f.scope)?;
    writeln!(out, "confidence   {}", f.confidence.as_str())?;
    writeln!(out, "retry after  {retry}")?;
    writeln!(out, "status       {status}")?;
    writeln!(
        out,
        "evidence     {} = {}",
        f.evidence.kind.as_str(),
        f.evidence.value
    )?;
    writeln!(
        out,
        "provider     {}",
        f.provider_code.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "rule         {}", f.rule)?;
    match f.read.split_first() {
        None => writeln!(out, "read         -")?,
        Some((first, rest)) => {
            writeln!(out, "read         {first}")?;
            for field in rest {
                writeln!(out, "             {field}")?;
            }
        }
    }
    writeln!(out, "why          {}", f.why)?;
    writeln!(
        out,
        "retries same credential: {}",
        if f.class.retries_same_credential() {
            "yes"
        } else {
            "no"
        }
    )?;
    writeln!(out)?;
    writeln!(out, "{}", f.explanation)
}

/// One JSON Lines record's error, written on its own line.
#[derive(Serialize)]
struct LineError<'a> {
    error: &'a str,
    line: usize,
}

/// Classifies JSON Lines from `input` to `output`, one verdict per line, in order.
pub(crate) fn batch(
    mut input: impl BufRead,
    output: &mut impl Write,
    now: SystemTime,
) -> Result<(), CliError> {
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| CliError::Read {
                path: "<stdin>".into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let too_long = buf.len() > MAX_LINE && !buf.ends_with(b"\n");
        if too_long {
            // Skip the rest of the over-long line.
            let mut sink = Vec::new();
            input
                .read_until(b'\n', &mut sink)
                .map_err(|source| CliError::Read {
                    path: "<stdin>".into(),
                    source,
                })?;
        }
        let line = if too_long {
            Err("line longer than 64 MiB".to_owned())
        } else {
            classify_line(&buf, now)
        };
        let text = match line {
            Ok(v) => v,
            Err(msg) => serde_json::to_string(&LineError {
                error: &msg,
                line: line_no,
            })
            .unwrap_or_else(|_| "{\"error\":\"unprintable error\"}".to_owned()),
        };
        output.write_all(text.as_bytes()).map_err(CliError::Write)?;
        output.write_all(b"\n").map_err(CliError::Write)?;
    }
    output.flush().map_err(CliError::Write)
}

fn classify_line(raw: &[u8], now: SystemTime) -> Result<String, String> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line: expected a JSON object".into());
    }
    let value: Value = serde_json::from_slice(raw).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = value.as_object().ok_or("expected a JSON object")?;
    let provider = match obj.get("provider") {
        None | Some(Value::Null) => "unknown",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("`provider` must be a string".into()),
    };
    let cat = CatalogueName::resolve(provider);
    let credential = field_enum(
        obj,
        "credential",
        CredentialKind::parse,
        "api_key, oauth, cloud",
    )?
    .or(cat.credential)
    .unwrap_or(CredentialKind::ApiKey);
    let endpoint = field_enum(obj, "endpoint", EndpointKind::parse, "inference, token")?
        .or(cat.endpoint)
        .unwrap_or(EndpointKind::Inference);
    let transport = field_enum(
        obj,
        "transport",
        TransportError::parse,
        "connect_refused, reset, tls, dns, timeout",
    )?;
    let phase = field_enum(
        obj,
        "phase",
        Phase::parse,
        "before_headers, headers, mid_stream",
    )?
    .unwrap_or_default();
    let status = match obj.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (100..=999).contains(s))
                .ok_or("`status` must be an HTTP status code (100-999) or null")?,
        ),
        Some(_) => return Err("`status` must be an integer or null".into()),
    };
    let headers: Vec<(String, String)> = match obj.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((
                    p.first()?.as_str()?.to_owned(),
                    p.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect(),
        Some(_) => return Err("`headers` must be an object of name: value".into()),
    };
    let body: &str = match obj.get("body") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(_) => return Err("`body` must be a string (the raw body as sent)".into()),
    };
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attempt = Attempt {
        provider: cat.provider,
        credential,
        endpoint,
        phase,
        transport,
        status,
        headers: &header_refs,
        body: body.as_bytes(),
        now,
    };
    let failure = classify(&attempt);
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(flatten)]
        failure: &'a Failure,
        provider: &'static str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        provider_unrecognised: bool,
    }
    serde_json::to_string(&Out {
        failure: &failure,
        provider: cat.provider.as_str(),
        provider_unrecognised: !cat.recognised,
    })
    .map_err(|e| format!("cannot encode verdict: {e}"))
}

fn field_enum<T>(
    obj: &Map<String, Value>,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    accepted: &str,
) -> Result<Option<T>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse(s)
            .map(Some)
            .ok_or_else(|| format!("`{name}` {s:?} is not one of: {accepted}")),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn run_batch(input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        batch(input.as_bytes(), &mut out, UNIX_EPOCH).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_verdict_per_line_in_order_and_errors_in_place() {
        let input = concat!(
            r#"{"provider":"anthropic","status":529,"headers":{},"body":"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}","id":"x"}"#,
            "\n",
            "not json\n",
            "\n",
            r#"{"provider":"openai","status":429,"headers":{"retry-after":"20"},"body":"{\"error\":{\"type\":\"requests\",\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached\"}}"}"#,
            "\n",
            r#"{"provider":"openai","status":"429"}"#,
            "\n",
            r#"{"provider":"any","status":null,"headers":{},"body":""}"#,
        );
        let out = run_batch(input);
        assert_eq!(out.len(), 6);
        assert_eq!(out[0]["class"], "overloaded");
        assert_eq!(out[0]["scope"], "provider_model");
        assert!(out[1]["error"].as_str().unwrap().contains("not valid JSON"));
        assert_eq!(out[1]["line"], 2);
        assert!(out[2]["error"].as_str().unwrap().contains("empty line"));
        assert_eq!(out[3]["class"], "rate_limit");
        assert_eq!(out[3]["retry_after_ms"], 20_000);
        assert!(out[4]["error"].as_str().unwrap().contains("status"));
        assert_eq!(out[5]["class"], "network");
        for v in [&out[0], &out[3], &out[5]] {
            for key in [
                "class",
                "scope",
                "confidence",
                "retry_after_ms",
                "explanation",
            ] {
                assert!(v.get(key).is_some(), "missing {key} in {v}");
            }
        }
    }

    #[test]
    fn catalogue_names_and_overrides() {
        let out = run_batch(concat!(
            r#"{"provider":"openai-oauth-token","status":401,"body":"{\"error\":{\"code\":\"refresh_token_reused\",\"message\":\"x\"}}"}"#,
            "\n",
            r#"{"provider":"openai","credential":"oauth","status":401,"body":"{\"error\":{\"code\":\"token_expired\",\"message\":\"x\"}}"}"#,
            "\n",
            r#"{"provider":"perplexity","status":429,"body":""}"#,
            "\n",
        ));
        assert_eq!(out[0]["class"], "auth_permanent");
        assert_eq!(out[1]["class"], "auth_transient");
        assert_eq!(out[2]["class"], "rate_limit");
        assert_eq!(out[2]["provider_unrecognised"], true);
    }

    #[test]
    fn invalid_utf8_line_is_classified_not_fatal() {
        let mut input = br#"{"provider":"openai","status":500,"body":"x"}"#.to_vec();
        input.push(b'\n');
        input.extend_from_slice(b"\xff\xfe{\n");
        let mut out = Vec::new();
        batch(&input[..], &mut out, UNIX_EPOCH).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("error"));
    }
}
