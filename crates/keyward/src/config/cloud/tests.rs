use std::path::Path;

use super::super::Config;
use super::*;

const HEAD: &str = r#"
[[gateway_keys]]
name = "agents"
key = "env:GW_KEY"
"#;

fn env(v: &str) -> Option<String> {
    match v {
        "GW_KEY" => Some("gw-secret-value".into()),
        "AWS_SECRET" => Some("wJalrXUtnFEMI-aws-secret-value".into()),
        "AWS_TOKEN" => Some("aws-session-token-value".into()),
        "ENTRA_SECRET" => Some("entra-client-secret-value".into()),
        "HOME" => Some("/nonexistent-home".into()),
        _ => None,
    }
}

fn problems(text: &str, base: &Path) -> Vec<String> {
    match Config::parse(&format!("{HEAD}{text}"), base, &env) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keyward-cloud-cfg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const ALL_THREE: &str = r#"
[endpoints.bedrock]
provider = "bedrock"
region = "us-east-1"

[endpoints.vertex]
provider = "vertex-ai"
region = "us-east5"
project = "my-project"

[endpoints.azure]
provider = "azure-openai"
base_url = "https://my-resource.openai.azure.com"
api_version = "2024-10-21"

[[credentials]]
id = "bedrock-1"
endpoint = "bedrock"
kind = "cloud"
[credentials.aws]
access_key_id = "AKIAEXAMPLE000000001"
secret_access_key = "env:AWS_SECRET"
session_token = "env:AWS_TOKEN"

[[credentials]]
id = "vertex-1"
endpoint = "vertex"
kind = "cloud"
[credentials.google]
service_account_file = "sa.json"

[[credentials]]
id = "azure-1"
endpoint = "azure"
kind = "cloud"
[credentials.entra]
tenant_id = "tenant-guid"
client_id = "client-guid"
client_secret = "env:ENTRA_SECRET"
"#;

#[test]
fn all_three_clouds_parse_and_no_secret_shows_in_debug() {
    let d = dir("good");
    std::fs::write(
        d.join("sa.json"),
        include_str!("../../../tests/it/fixtures/service-account.json"),
    )
    .unwrap();
    let c = Config::parse(&format!("{HEAD}{ALL_THREE}"), &d, &env).unwrap();
    assert_eq!(
        c.endpoints["bedrock"].base_url,
        "https://bedrock-runtime.us-east-1.amazonaws.com"
    );
    assert_eq!(
        c.endpoints["vertex"].base_url,
        "https://us-east5-aiplatform.googleapis.com"
    );
    assert!(c.credentials.iter().all(|c| c.cloud.is_some()));
    let debug = format!("{c:?}");
    for secret in [
        "wJalrXUtnFEMI-aws-secret-value",
        "aws-session-token-value",
        "entra-client-secret-value",
        "PRIVATE KEY",
    ] {
        assert!(!debug.contains(secret), "{secret} in Debug");
    }
    assert!(debug.contains("AKIAEXAMPLE000000001"));
    // The fingerprint changes with the key, and says nothing about it.
    let fps: Vec<String> = c
        .credentials
        .iter()
        .filter_map(|c| c.cloud.as_ref().map(CloudAuth::fingerprint))
        .collect();
    assert_eq!(fps.len(), 3);
    assert!(fps.iter().all(|f| f.len() == 12));
}

#[test]
fn config_check_explains_each_cloud_mistake() {
    let d = dir("bad");
    std::fs::write(
        d.join("malformed.json"),
        "{\"type\": \"service_account\", \"client_email\": ",
    )
    .unwrap();
    std::fs::write(d.join("oauth-client.json"), "{\"installed\": {}}").unwrap();
    let cases = [
            (
                ALL_THREE.replace("region = \"us-east-1\"\n", ""),
                "endpoints.bedrock.region: missing: Bedrock requests are signed for a region",
            ),
            (
                ALL_THREE.replace("sa.json", "missing.json"),
                "cannot read the service account key",
            ),
            (
                ALL_THREE.replace("sa.json", "malformed.json"),
                "is not JSON (line 1, column 44); download the service account's key again",
            ),
            (
                ALL_THREE.replace("sa.json", "oauth-client.json"),
                "is not a service account key",
            ),
            (
                ALL_THREE.replace("project = \"my-project\"\n", ""),
                "endpoints.vertex.project: missing",
            ),
            (
                ALL_THREE.replace("session_token = \"env:AWS_TOKEN\"\n", "")
                    .replace("AKIAEXAMPLE", "ASIAEXAMPLE"),
                "is a temporary (ASIA…) key: it needs its session_token",
            ),
            (
                ALL_THREE.replace("access_key_id = \"AKIAEXAMPLE000000001\"\nsecret_access_key = \"env:AWS_SECRET\"\nsession_token = \"env:AWS_TOKEN\"\n", "profile = \"prod\"\n"),
                "credentials[0].aws.profile: cannot read the AWS credentials file /nonexistent-home/.aws/credentials",
            ),
            (
                ALL_THREE.replace("client_secret = \"env:ENTRA_SECRET\"", "client_secret = \"env:UNSET\""),
                "credentials[2].entra.client_secret: environment variable UNSET is not set",
            ),
            (
                ALL_THREE.replace("[credentials.entra]", "[credentials.aws]\naccess_key_id = \"AKIAX\"\n[credentials.entra]"),
                "credentials[2]: a credential takes one of [aws], [google] or [entra], not several",
            ),
            (
                ALL_THREE.replacen("kind = \"cloud\"\n[credentials.aws]", "kind = \"cloud\"", 1).replace(
                    "access_key_id = \"AKIAEXAMPLE000000001\"\nsecret_access_key = \"env:AWS_SECRET\"\nsession_token = \"env:AWS_TOKEN\"\n",
                    "",
                ),
                "credentials[0].kind: kind = \"cloud\" needs its table: add an [credentials.aws] table",
            ),
        ];
    std::fs::write(
        d.join("sa.json"),
        include_str!("../../../tests/it/fixtures/service-account.json"),
    )
    .unwrap();
    for (text, want) in cases {
        let p = problems(&text, &d);
        assert!(
            p.iter().any(|m| m.contains(want)),
            "wanted {want:?} among {p:#?}"
        );
        for m in &p {
            for secret in [
                "wJalrXUtnFEMI",
                "aws-session-token-value",
                "entra-client-secret-value",
            ] {
                assert!(!m.contains(secret), "{m}");
            }
        }
    }
}

#[test]
fn profiles_are_read_from_the_credentials_file_then_the_config_file() {
    let d = dir("profile");
    std::fs::write(
            d.join("credentials"),
            "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[prod]\naws_access_key_id = ASIAPROD\naws_secret_access_key = s2\naws_session_token = t2\n",
        )
        .unwrap();
    std::fs::write(
            d.join("config"),
            "[profile ci]\naws_access_key_id = AKIACI\naws_secret_access_key = s3\n[profile sso]\nsso_session = corp\n",
        )
        .unwrap();
    let (creds, conf) = (d.join("credentials"), d.join("config"));
    let prod = read_profile(&creds, &conf, "prod").unwrap();
    assert_eq!(prod.access_key_id, "ASIAPROD");
    assert!(prod.session_token.is_some());
    assert_eq!(
        read_profile(&creds, &conf, "ci").unwrap().access_key_id,
        "AKIACI"
    );
    assert!(read_profile(&creds, &conf, "default")
        .unwrap()
        .session_token
        .is_none());
    assert!(matches!(
        read_profile(&creds, &conf, "sso"),
        Err(ProfileError::NoKeys(_))
    ));
    let missing = read_profile(&creds, &conf, "nope").unwrap_err().to_string();
    assert!(
        missing.contains("profile \"nope\" is in neither"),
        "{missing}"
    );
}

mod example {
    use std::path::Path;

    use super::super::super::Config;

    /// `examples/cloud.toml` is valid but for the two files it names that are not here
    /// (the web-identity token and the service account key).
    #[test]
    fn the_cloud_example_is_valid() {
        let any = |v: &str| Some(format!("example-{}", v.to_lowercase()));
        let text = include_str!("../../../../../examples/cloud.toml");
        match Config::parse(text, Path::new("/nonexistent/keyward"), &any) {
            Ok(_) => panic!("the example's key files are not here"),
            Err(p) => {
                assert_eq!(p.len(), 2, "{p:?}");
                assert!(
                    p[0].message.contains(
                        "cannot read /var/run/secrets/eks.amazonaws.com/serviceaccount/token"
                    ),
                    "{p:?}"
                );
                assert!(
                    p[1].message.contains(
                        "cannot read the service account key /etc/keyward/vertex-sa.json"
                    ),
                    "{p:?}"
                );
            }
        }
    }
}
