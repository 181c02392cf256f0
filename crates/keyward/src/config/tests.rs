//! The config's tests: parsing, validation problems and warnings, secrets, durations.

use std::path::Path;
use std::time::Duration;

use super::durations::humantime_duration;
use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:0"
state = "state.db"

[[gateway_keys]]
name = "agents"
key = "env:GW_KEY"

[endpoints.anthropic]
provider = "anthropic"
base_url = "http://127.0.0.1:9/"

[[credentials]]
id = "team-1"
endpoint = "anthropic"
secret = "env:K1"

[routes.claude]
targets = [{ endpoint = "anthropic", model = "claude-x", credentials = ["team-1"] }]
first_token_timeout = "20s"
"#;

fn env(v: &str) -> Option<String> {
    match v {
        "GW_KEY" => Some("gw-secret".into()),
        "K1" => Some("sk-ant-secret-1".into()),
        "REDIS" => Some("redis://:hunter2@10.0.0.5:6379/2".into()),
        _ => None,
    }
}

fn with_state(state: &str, more: &str) -> String {
    format!(
        "{}{more}",
        GOOD.replace("state = \"state.db\"", &format!("state = \"{state}\""))
    )
}

#[test]
fn a_redis_state_selects_fleet_mode() {
    let text = with_state(
        "redis://127.0.0.1:6379",
        "\n[fleet]\nprefix = \"team-a\"\nreplica = \"gw-1\"\ntimeout = \"250ms\"\n",
    );
    let c = Config::parse(&text, Path::new("/etc/keyward"), &env).unwrap();
    let f = c.fleet.as_ref().unwrap();
    assert_eq!(f.url.expose(), "redis://127.0.0.1:6379");
    assert_eq!(f.prefix, "team-a");
    assert_eq!(f.replica.as_deref(), Some("gw-1"));
    assert_eq!(f.timeout, Duration::from_millis(250));
    assert_eq!(
        c.state_label(),
        "Redis redis://127.0.0.1:6379 (prefix team-a)"
    );
    // Defaults, and a URL with a password from the environment, never shown.
    let c = Config::parse(
        &with_state("env:REDIS", ""),
        Path::new("/etc/keyward"),
        &env,
    )
    .unwrap();
    let f = c.fleet.as_ref().unwrap();
    assert_eq!((f.prefix.as_str(), f.replica.clone()), ("keyward", None));
    assert!(!c.state_label().contains("hunter2"), "{}", c.state_label());
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn the_examples_are_valid() {
    let any = |v: &str| -> Option<String> {
        Some(match v {
            "KEYWARD_REDIS_URL" => "redis://:pw@127.0.0.1:6379/0".into(),
            "KEYWARD_STATE_KEY" => "ab".repeat(32),
            _ => format!("example-{}", v.to_lowercase()),
        })
    };
    for (name, text) in [
        (
            "keyward.toml",
            include_str!("../../../../examples/keyward.toml"),
        ),
        (
            "fleet.toml",
            include_str!("../../../../examples/fleet.toml"),
        ),
    ] {
        match Config::parse(text, Path::new("/etc/keyward"), &any) {
            Ok(c) => assert_eq!(c.fleet.is_some(), name == "fleet.toml"),
            // keyward.toml shows a secret read from a file that is not here.
            Err(p) => assert!(
                p.iter()
                    .all(|p| p.message.starts_with("cannot read secret file")),
                "{name}: {p:?}"
            ),
        }
    }
}

#[test]
fn fleet_settings_are_checked() {
    let p = problems(&with_state("redis://:pw@127.0.0.1:6379", ""));
    assert!(p.iter().any(|p| p.contains("reference it as")), "{p:?}");
    let p = problems(&with_state("state.db", "\n[fleet]\nprefix = \"x\"\n"));
    assert!(p.iter().any(|p| p.starts_with("fleet:")), "{p:?}");
    let p = problems(&with_state(
        "redis://127.0.0.1:6379",
        "\n[fleet]\nprefix = \"a b\"\ntimeout = \"soon\"\n",
    ));
    assert!(p.iter().any(|p| p.starts_with("fleet.prefix")), "{p:?}");
    assert!(p.iter().any(|p| p.starts_with("fleet.timeout")), "{p:?}");
    let p = problems(&with_state("env:K1", ""));
    assert!(p.iter().any(|p| p.contains("must be a Redis URL")), "{p:?}");
    let p = problems(&with_state(
        "redis://127.0.0.1:6379",
        "\n[fleet]\nca_file = \"missing-ca.pem\"\n",
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("fleet.ca_file") && p.contains("cannot read")),
        "{p:?}"
    );
    assert!(p.iter().any(|p| p.contains("use a rediss:// URL")), "{p:?}");
}

const OAUTH: &str = r#"
[endpoints.openai]
provider = "openai"
base_url = "http://127.0.0.1:9/v1"

[[credentials]]
id = "claude-max"
endpoint = "anthropic"
kind = "oauth"
subscription = true
[credentials.oauth]
token_url = "http://127.0.0.1:9/v1/oauth/token"
client_id = "client-1"
refresh_ahead = "2m"

[[credentials]]
id = "codex"
endpoint = "openai"
kind = "oauth"
subscription = true
oauth = { token_url = "http://127.0.0.1:9/oauth/token", client_id = "client-2", scopes = ["openid", "offline_access"] }

[routes.codex]
targets = [{ endpoint = "openai", model = "gpt-x", credentials = ["codex"] }]
"#;

fn problems(text: &str) -> Vec<String> {
    Config::parse(text, Path::new("/etc/keyward"), &env)
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn oauth_credentials_take_no_secret_and_codex_tokens_serve_responses_only() {
    let c = Config::parse(&format!("{GOOD}{OAUTH}"), Path::new("/etc/keyward"), &env).unwrap();
    let claude = c
        .credentials
        .iter()
        .find(|c| &*c.id == "claude-max")
        .unwrap();
    assert!(claude.secret.is_none());
    let o = claude.oauth.as_ref().unwrap();
    assert_eq!(
        o.style,
        TokenStyle::Json,
        "Anthropic's token endpoint takes JSON"
    );
    assert_eq!(o.refresh_ahead, Duration::from_secs(120));
    let codex = c.credentials.iter().find(|c| &*c.id == "codex").unwrap();
    assert_eq!(
        codex.oauth.as_ref().unwrap().scopes,
        ["openid", "offline_access"]
    );
    assert_eq!(c.routes["codex"].targets[0].apis, Some(vec!["responses"]));
    assert_eq!(c.routes["claude"].targets[0].apis, None);
}

#[test]
fn subscription_tokens_are_opt_in_and_oauth_mistakes_are_reported() {
    let p = problems(&format!(
        "{GOOD}{}",
        OAUTH.replace("subscription = true\n", "")
    ));
    assert!(
        p.iter().any(|p| p.starts_with("credentials[1].subscription: OAuth tokens of a Claude or ChatGPT subscription are opt-in")),
        "{p:?}"
    );
    let p = problems(&format!(
        "{GOOD}{}",
        OAUTH.replace(
            "kind = \"oauth\"\nsubscription = true\n[credentials.oauth]",
            "secret = \"env:K1\"\n[credentials.oauth]"
        )
    ));
    assert!(
        p.iter().any(|p| p.contains("needs kind = \"oauth\"")),
        "{p:?}"
    );
    let p = problems(&format!(
        "{GOOD}{}\n[routes.x]\ntargets = [{{ endpoint = \"anthropic\", model = \"m\", credentials = [\"team-1\"], apis = [\"smtp\"] }}]\n",
        OAUTH
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("routes.x.targets[0].apis[0]: \"smtp\" is not one of")),
        "{p:?}"
    );
    let p = problems(&format!("state_key = \"env:K1\"\n{GOOD}"));
    assert!(
        p.iter()
            .any(|p| p.starts_with("state_key: the key must be 64 hex")),
        "{p:?}"
    );
    assert!(
        !p.join(" ").contains("sk-ant-secret-1"),
        "a key must never be printed"
    );
}

#[test]
fn a_huge_duration_is_a_problem_not_a_panic() {
    // Found by the config fuzzer: a 100-digit number of seconds panicked.
    let text = GOOD.replace(
        "first_token_timeout = \"20s\"",
        &format!("first_token_timeout = \"{}s\"", "6".repeat(100)),
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.contains("first_token_timeout")), "{p:?}");
    assert_eq!(humantime_duration("1e400s"), None);
    assert_eq!(humantime_duration("366d"), None);
    assert_eq!(humantime_duration("2d"), Some(Duration::from_secs(172_800)));
}

#[test]
fn a_good_config_loads() {
    let c = Config::parse(GOOD, Path::new("/etc/keyward"), &env).unwrap();
    assert_eq!(
        c.routes["claude"].timeouts.first_token,
        Duration::from_secs(20)
    );
    assert_eq!(c.endpoints["anthropic"].base_url, "http://127.0.0.1:9");
    assert_eq!(c.state, PathBuf::from("/etc/keyward/state.db"));
    assert_eq!(format!("{:?}", c.credentials[0].secret), "Some(Secret(…))");
    assert!(
        !format!("{c:?}").contains("sk-ant-secret-1"),
        "Debug must not print secrets"
    );
}

#[test]
fn a_target_overrides_its_routes_timeouts() {
    let text = GOOD.replace(
        "credentials = [\"team-1\"] }]",
        "credentials = [\"team-1\"], first_token_timeout = \"2m\", idle_timeout = \"45s\" }]",
    );
    let c = Config::parse(&text, Path::new("."), &env).unwrap();
    let t = &c.routes["claude"].targets[0].timeouts;
    assert_eq!(t.first_token, Duration::from_secs(120), "the target's own");
    assert_eq!(t.idle, Duration::from_secs(45));
    assert_eq!(t.headers, Timeouts::default().headers, "the rest inherited");
    assert_eq!(
        c.routes["claude"].timeouts.first_token,
        Duration::from_secs(20),
        "the route keeps its own"
    );
    let bad = GOOD.replace(
        "credentials = [\"team-1\"] }]",
        "credentials = [\"team-1\"], idle_timeout = \"later\" }]",
    );
    let problems = Config::parse(&bad, Path::new("."), &env).unwrap_err();
    assert!(
        problems.iter().any(|p| p
            .to_string()
            .starts_with("routes.claude.targets[0].idle_timeout")),
        "{problems:?}"
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let bad = GOOD
        .replace("env:K1", "sk-literal-secret")
        .replace(
            "credentials = [\"team-1\"]",
            "credentials = [\"team-1\", \"ghost\"]",
        )
        .replace(
            "first_token_timeout = \"20s\"",
            "first_token_timeout = \"soon\"\ncontext_fallback = \"nowhere\"",
        );
    let problems = Config::parse(&bad, Path::new("."), &env).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.starts_with("credentials[0].secret: secrets must be referenced")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p == "routes.claude.targets[0].credentials[1]: unknown credential \"ghost\""),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("routes.claude.first_token_timeout")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("routes.claude.context_fallback")),
        "{text:?}"
    );
    assert!(
        !text.join("\n").contains("sk-literal-secret"),
        "a secret must never be printed"
    );
}

#[test]
fn unknown_keys_are_errors() {
    let problems = Config::parse(
        &GOOD.replace("listen =", "lisen = \"x\"\nlisten ="),
        Path::new("."),
        &env,
    )
    .unwrap_err();
    assert!(
        problems[0].message.contains("unknown field `lisen`"),
        "{problems:?}"
    );
}

#[test]
fn fingerprints_identify_without_revealing() {
    let a = Secret("sk-ant-api03-abcdef".into());
    let b = Secret("sk-ant-api03-abcdeg".into());
    assert_eq!(a.fingerprint().len(), 12);
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert!(a.fingerprint().bytes().all(|c| c.is_ascii_hexdigit()));
}

fn env_more(v: &str) -> Option<String> {
    match v {
        "ADMIN" => Some("adm-0123456789abcdef".into()),
        "SHORT" => Some("hunter2".into()),
        "K1_AGAIN" => Some("sk-ant-secret-1".into()),
        "K_OAI" => Some("sk-oai-secret-2".into()),
        "K_BR" => Some("br-secret-3".into()),
        _ => env(v),
    }
}

fn problems_with(text: &str) -> Vec<String> {
    Config::parse(text, Path::new("/etc/keyward"), &env_more)
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn dangerous_settings_are_refused_with_what_to_do() {
    for (more, path, words) in [
        ("\n[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes", "refuses every request body"),
        ("\n[limits]\nmax_attempts = 0\n", "limits.max_attempts", "never call upstream"),
        ("\n[limits]\nmax_event_bytes = 0\n", "limits.max_event_bytes", "raise it"),
        ("\n[limits]\nmax_buffered_body_bytes = 1024\n", "limits.max_buffered_body_bytes", "smaller than limits.max_body_bytes"),
        ("\n[timeouts]\nrequest = \"0s\"\n", "timeouts.request", "zero timeout"),
        ("\n[timeouts]\nconnect = \"0ms\"\n", "timeouts.connect", "zero timeout"),
        ("\n[server]\nheader_read_timeout = \"0s\"\n", "server.header_read_timeout", "zero timeout"),
        ("\n[server]\nidle_timeout = \"0s\"\n", "server.idle_timeout", "zero timeout"),
        ("\n[server]\nmax_connections = 0\n", "server.max_connections", "refuses every connection"),
        ("\n[admin]\ntoken = \"env:SHORT\"\n", "admin.token", "shorter than 16 characters"),
        ("\n[admin]\ntoken = \"env:GW_KEY\"\n", "admin.token", "also gateway key \"agents\""),
        (
            "\n[admin]\ntoken = \"env:ADMIN\"\nlisten = \"127.0.0.1:8080\"\n",
            "admin.listen",
            "must differ",
        ),
        (
            "\n[[credentials]]\nid = \"team-1-again\"\nendpoint = \"anthropic\"\nsecret = \"env:K1_AGAIN\"\n",
            "credentials[1].secret",
            "the same secret as \"team-1\"",
        ),
    ] {
        let text = format!("{}{more}", GOOD.replace("127.0.0.1:0", "127.0.0.1:8080"));
        let p = problems_with(&text);
        assert!(
            p.iter().any(|p| p.starts_with(path) && p.contains(words)),
            "{more}: {p:?}"
        );
        for shown in &p {
            for secret in ["gw-secret", "hunter2", "sk-ant-secret-1"] {
                assert!(!shown.contains(secret), "a secret in {shown}");
            }
        }
    }
    // A route's zero override too.
    let text = GOOD.replace(
        "first_token_timeout = \"20s\"",
        "first_token_timeout = \"0s\"",
    );
    let p = problems_with(&text);
    assert!(
        p.iter()
            .any(|p| p.starts_with("routes.claude.first_token_timeout")
                && p.contains("zero timeout")),
        "{p:?}"
    );
}

#[test]
fn risky_settings_load_with_a_warning_and_loopback_trust_follows_the_listeners() {
    let remote = format!(
        "{}\n[admin]\ntoken = \"env:ADMIN\"\nallow_remote = true\n",
        GOOD.replace("127.0.0.1:0", "0.0.0.0:8080")
    );
    let c = Config::parse(&remote, Path::new("/etc/keyward"), &env_more).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.path == "listen" && w.message.contains("only the token protects them")),
        "{:?}",
        c.warnings
    );
    assert!(c.server.trust_loopback);
    // The defaults warn about nothing.
    let c = Config::parse(GOOD, Path::new("/etc/keyward"), &env_more).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.server, Server::default());
    assert_eq!(c.limits, Limits::default());
    // An admin listener of its own, or a declared reverse proxy: no loopback trust on
    // the proxy listener.
    let own = format!("{GOOD}\n[admin]\ntoken = \"env:ADMIN\"\nlisten = \"127.0.0.1:9091\"\n");
    let c = Config::parse(&own, Path::new("/etc/keyward"), &env_more).unwrap();
    assert_eq!(
        c.admin.as_ref().and_then(|a| a.listen),
        Some("127.0.0.1:9091".parse().unwrap())
    );
    assert!(!c.server.trust_loopback);
    let proxied = format!("{GOOD}\n[server]\nreverse_proxy = true\n");
    let c = Config::parse(&proxied, Path::new("/etc/keyward"), &env_more).unwrap();
    assert!(!c.server.trust_loopback);
    let forced = format!("{GOOD}\n[server]\nreverse_proxy = true\ntrust_loopback = true\n");
    let c = Config::parse(&forced, Path::new("/etc/keyward"), &env_more).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.path == "server.trust_loopback"),
        "{:?}",
        c.warnings
    );
}

const CROSS: &str = r#"
[endpoints.openai]
provider = "openai"
base_url = "http://127.0.0.1:9/v1"

[endpoints.bedrock]
provider = "bedrock"
region = "us-east-1"
base_url = "http://127.0.0.1:9"

[[credentials]]
id = "oai-1"
endpoint = "openai"
secret = "env:K_OAI"

[[credentials]]
id = "br-1"
endpoint = "bedrock"
secret = "env:K_BR"
"#;

#[test]
fn a_fallback_of_another_family_warns_what_it_loses_and_one_that_can_never_serve_is_refused() {
    let text = format!(
        "{}{CROSS}\n[routes.mixed]\nlossy_translation = false\ndefault_max_tokens = 2048\ntargets = [{{ endpoint = \"anthropic\", model = \"c\", credentials = [\"team-1\"] }}]\nfallbacks = [{{ endpoint = \"openai\", model = \"g\", credentials = [\"oai-1\"] }}]\n",
        GOOD
    );
    let c = Config::parse(&text, Path::new("/etc/keyward"), &env_more).unwrap();
    let r = &c.routes["mixed"];
    assert_eq!(
        r.translation,
        Translation {
            lossy: false,
            default_max_tokens: 2048
        }
    );
    assert_eq!(c.routes["claude"].translation, Translation::default());
    let w = c
        .warnings
        .iter()
        .find(|w| w.path == "routes.mixed.fallbacks[0]")
        .unwrap_or_else(|| panic!("{:?}", c.warnings));
    assert!(w.message.contains("OpenAI Chat Completions"), "{w}");
    assert!(w.message.contains("cache_control"), "{w}");
    assert!(w.message.contains("lossy_translation = false"), "{w}");
    // Embeddings are never translated; Bedrock is never translated to.
    let p = problems_with(&format!(
        "{GOOD}{CROSS}\n[routes.vec]\ntargets = [{{ endpoint = \"openai\", model = \"e\", credentials = [\"oai-1\"], apis = [\"embeddings\"] }}]\nfallbacks = [{{ endpoint = \"anthropic\", model = \"c\", credentials = [\"team-1\"] }}]\n[routes.br]\ntargets = [{{ endpoint = \"anthropic\", model = \"c\", credentials = [\"team-1\"] }}]\nfallbacks = [{{ endpoint = \"bedrock\", model = \"b\", credentials = [\"br-1\"] }}]\n"
    ));
    assert!(
        p.iter().any(|p| p.starts_with(
            "routes.vec.fallbacks[0]: the route's first target serves embeddings only"
        )),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.starts_with(
            "routes.br.fallbacks[0]: its provider is not one requests are translated to"
        )),
        "{p:?}"
    );
    let p = problems(&format!(
        "{GOOD}\n[routes.z]\ndefault_max_tokens = 0\ntargets = [{{ endpoint = \"anthropic\", model = \"c\", credentials = [\"team-1\"] }}]\n"
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("routes.z.default_max_tokens")),
        "{p:?}"
    );
}

#[test]
fn stream_recovery_settings_have_defaults_and_per_route_overrides() {
    // GOOD's route waits 20 s for its first content: its derived budget leaves 5 s more.
    let c = Config::parse(GOOD, Path::new("."), &env).unwrap();
    let r = &c.routes["claude"];
    assert!(r.continue_streams, "continuation is on by default");
    assert_eq!(c.limits.max_continuations, 2);
    assert_eq!(r.timeouts.first_content_budget, Duration::from_secs(25));
    assert_eq!(r.timeouts.retry_after_wait, Duration::from_secs(5));
    let d = Timeouts::default();
    assert_eq!(
        (d.first_token, d.first_content_budget),
        (Duration::from_secs(10), Duration::from_secs(15))
    );
    let text = format!(
        "{}continue_streams = false\nretry_after_wait = \"0s\"\nfirst_content_budget = \"12s\"\n\n[limits]\nmax_continuations = 0\n",
        GOOD
    );
    let c = Config::parse(&text, Path::new("."), &env).unwrap();
    let r = &c.routes["claude"];
    assert!(!r.continue_streams);
    assert_eq!(
        r.timeouts.retry_after_wait,
        Duration::ZERO,
        "zero never waits"
    );
    assert_eq!(
        r.timeouts.first_content_budget,
        Duration::from_secs(12),
        "an explicit budget is kept"
    );
    assert_eq!(c.limits.max_continuations, 0);
    for (bad, path) in [
        (
            "retry_after_wait = \"2m\"\n",
            "routes.claude.retry_after_wait",
        ),
        (
            "first_content_budget = \"0s\"\n",
            "routes.claude.first_content_budget",
        ),
        (
            "first_content_budget = \"soon\"\n",
            "routes.claude.first_content_budget",
        ),
    ] {
        let problems = Config::parse(&format!("{GOOD}{bad}"), Path::new("."), &env).unwrap_err();
        assert!(
            problems.iter().any(|p| p.to_string().starts_with(path)),
            "{bad}: {problems:?}"
        );
    }
}

#[test]
fn dead_keys_status_and_telemetry_are_checked() {
    let key = "[[gateway_keys]]\nname = \"agents\"\nkey = \"env:GW_KEY\"\n";
    let with = |line: &str| GOOD.replacen(key, &format!("{key}{line}\n"), 1);
    let c = Config::parse(
        &with("dead_keys_status = 400"),
        Path::new("/etc/keyward"),
        &env,
    )
    .unwrap();
    assert_eq!(c.gateway_keys[0].dead_keys_status, Some(400));
    assert_eq!(c.telemetry, Telemetry::default(), "traces off by default");
    for refused in ["401", "403", "429", "200"] {
        let p = problems(&with(&format!("dead_keys_status = {refused}")));
        assert!(
            p.iter()
                .any(|p| p.contains("gateway_keys[0].dead_keys_status")
                    && p.contains("never 401/403")),
            "{refused}: {p:?}"
        );
    }
    let text = format!(
        "{GOOD}\n[telemetry]\notlp_endpoint = \"http://collector:4318/\"\nservice_name = \"gw\"\nsampling_ratio = 0.25\n"
    );
    let c = Config::parse(&text, Path::new("/etc/keyward"), &env).unwrap();
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(c.telemetry.service_name.as_deref(), Some("gw"));
    assert!((c.telemetry.sampling_ratio - 0.25).abs() < f64::EPSILON);
    let p = problems(&format!(
        "{GOOD}\n[telemetry]\notlp_endpoint = \"collector:4317\"\nsampling_ratio = -1\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains("telemetry.otlp_endpoint") && p[0].contains("4317"),
        "{p:?}"
    );
    assert!(p[1].contains("telemetry.sampling_ratio"), "{p:?}");
}
