//! Cloud credentials (`kind = "cloud"`): AWS Bedrock (an access key, a shared
//! credentials-file profile, or a web-identity token exchanged at STS), Google Vertex AI (a
//! service account's JSON key) and Azure OpenAI with Entra ID (a client secret). Each as
//! written (`Raw*`) and as validated ([`CloudAuth`]); the key files are read and checked
//! here, so `keyward config check` explains an unreadable file or a malformed key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::classify::{CredentialKind, Provider};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;

mod profile;

pub use profile::{read_profile, ProfileError, ProfileKeys};

use super::durations::humantime_duration;
use super::sections::Resolve;

/// `[credentials.aws]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    profile: Option<String>,
    credentials_file: Option<String>,
    config_file: Option<String>,
    web_identity_token_file: Option<String>,
    role_arn: Option<String>,
    role_session_name: Option<String>,
    sts_endpoint: Option<String>,
    refresh_ahead: Option<String>,
}

/// `[credentials.google]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGoogle {
    service_account_file: Option<String>,
    token_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    refresh_ahead: Option<String>,
}

/// `[credentials.entra]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntra {
    tenant_id: String,
    client_id: String,
    client_secret: String,
    authority: Option<String>,
    scope: Option<String>,
    refresh_ahead: Option<String>,
}

/// A cloud credential, validated.
#[derive(Debug, Clone)]
pub enum CloudAuth {
    Aws(AwsAuth),
    Google(GoogleAuth),
    Entra(EntraAuth),
}

impl CloudAuth {
    /// Refresh the short-lived token this long before it expires.
    pub fn refresh_ahead(&self) -> Duration {
        match self {
            CloudAuth::Aws(a) => a.refresh_ahead,
            CloudAuth::Google(g) => g.refresh_ahead,
            CloudAuth::Entra(e) => e.refresh_ahead,
        }
    }

    /// Who this credential is, for operators: the access key id, profile or role; the
    /// service account and key id; the app and tenant. Never a secret.
    pub fn identity(&self) -> String {
        match self {
            CloudAuth::Aws(a) => match &a.source {
                AwsSource::Static { access_key_id, .. } => {
                    format!("aws access key {access_key_id}")
                }
                AwsSource::Profile { name, file, .. } => {
                    format!("aws profile {name} of {}", file.display())
                }
                AwsSource::WebIdentity { role_arn, .. } => format!("aws role {role_arn}"),
            },
            CloudAuth::Google(g) => format!(
                "google service account {} (key {})",
                g.account.client_email, g.account.private_key_id
            ),
            CloudAuth::Entra(e) => format!("entra app {} in tenant {}", e.client_id, e.tenant_id),
        }
    }

    /// The long-lived secrets in the config (masked in whatever reaches a caller).
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            CloudAuth::Aws(AwsAuth {
                source:
                    AwsSource::Static {
                        secret_access_key,
                        session_token,
                        ..
                    },
                ..
            }) => std::iter::once(secret_access_key.expose_secret())
                .chain(session_token.iter().map(|t| t.expose_secret()))
                .collect(),
            CloudAuth::Entra(e) => vec![e.client_secret.expose_secret()],
            _ => Vec::new(),
        }
    }

    /// What identifies this credential's secret without revealing it (for the health
    /// engine's fingerprint and denylist): a new key gives a new fingerprint.
    pub fn fingerprint(&self) -> String {
        let basis = match self {
            CloudAuth::Aws(a) => match &a.source {
                AwsSource::Static {
                    access_key_id,
                    secret_access_key,
                    ..
                } => format!(
                    "aws-key:{access_key_id}:{}",
                    secret_access_key.expose_secret()
                ),
                AwsSource::Profile { name, file, .. } => {
                    format!("aws-profile:{}:{name}", file.display())
                }
                AwsSource::WebIdentity { role_arn, .. } => format!("aws-role:{role_arn}"),
            },
            CloudAuth::Google(g) => format!(
                "google-sa:{}:{}",
                g.account.client_email, g.account.private_key_id
            ),
            CloudAuth::Entra(e) => format!(
                "entra:{}:{}:{}",
                e.tenant_id,
                e.client_id,
                e.client_secret.expose_secret()
            ),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, basis.as_bytes());
        digest
            .as_ref()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// AWS: where the signing keys come from, and the region they sign for (the endpoint's).
#[derive(Debug, Clone)]
pub struct AwsAuth {
    pub source: AwsSource,
    pub refresh_ahead: Duration,
}

/// Where an AWS credential's keys come from.
#[derive(Debug, Clone)]
pub enum AwsSource {
    /// An access key (and a session token, for temporary keys) from the config's
    /// references. Cannot be refreshed: an expired session token needs new keys.
    Static {
        access_key_id: String,
        secret_access_key: Arc<SecretString>,
        session_token: Option<Arc<SecretString>>,
    },
    /// A profile of the shared credentials file (`~/.aws/credentials`), read again when
    /// its session token expires (a tool that renews the file keeps it fresh).
    Profile {
        name: String,
        file: PathBuf,
        config_file: PathBuf,
    },
    /// A web-identity token (a Kubernetes service account's, say) exchanged at STS
    /// (`AssumeRoleWithWebIdentity`) for keys that last an hour; refreshed ahead.
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        sts_url: String,
    },
}

/// Google: a service account's key, exchanged for access tokens (JWT-bearer grant).
#[derive(Debug, Clone)]
pub struct GoogleAuth {
    pub account: Arc<ServiceAccount>,
    pub key_file: PathBuf,
    pub token_url: String,
    pub scopes: Vec<String>,
    pub refresh_ahead: Duration,
}

/// A service account key file's contents. `Debug` never shows the key.
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
    /// The RSA private key, PKCS#8 DER.
    pub key: SecretBox<Vec<u8>>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a service account key file cannot be used. Each says what to do; none quotes
/// the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceAccountError {
    /// Not JSON at all. Download the key again.
    #[error("is not JSON ({0}); download the service account's key again (IAM → Service accounts → Keys → Add key → JSON)")]
    NotJson(String),
    /// JSON, but not a service account key (an OAuth client file, a user's ADC file).
    #[error("is not a service account key (\"type\" is {0:?}, expected \"service_account\"); use a service account's JSON key")]
    WrongType(String),
    /// A field the JWT-bearer grant needs is missing.
    #[error("has no {0:?}; download the service account's key again")]
    Missing(&'static str),
    /// The private key is not a PEM PKCS#8 RSA key.
    #[error("holds a private_key that is not a PEM-encoded RSA key (PKCS#8); download the service account's key again")]
    BadKey,
}

impl ServiceAccount {
    /// Parses a service account key file's text.
    pub fn parse(text: &str) -> Result<ServiceAccount, ServiceAccountError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(rename = "type")]
            kind: Option<String>,
            client_email: Option<String>,
            private_key_id: Option<String>,
            private_key: Option<String>,
            token_uri: Option<String>,
        }
        let f: File = serde_json::from_str(text).map_err(|e| {
            ServiceAccountError::NotJson(format!("line {}, column {}", e.line(), e.column()))
        })?;
        match f.kind.as_deref() {
            Some("service_account") => {}
            other => {
                return Err(ServiceAccountError::WrongType(
                    other.unwrap_or("missing").to_owned(),
                ))
            }
        }
        let client_email = f
            .client_email
            .filter(|s| !s.is_empty())
            .ok_or(ServiceAccountError::Missing("client_email"))?;
        let pem = f
            .private_key
            .filter(|s| !s.is_empty())
            .ok_or(ServiceAccountError::Missing("private_key"))?;
        let der = pem_pkcs8(&pem).ok_or(ServiceAccountError::BadKey)?;
        if ring::signature::RsaKeyPair::from_pkcs8(&der).is_err() {
            return Err(ServiceAccountError::BadKey);
        }
        Ok(ServiceAccount {
            client_email,
            private_key_id: f.private_key_id.unwrap_or_default(),
            token_uri: f
                .token_uri
                .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
            key: SecretBox::new(Box::new(der)),
        })
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_pkcs8(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body = pem
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)?
        .split("-----END PRIVATE KEY-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Azure OpenAI with Entra ID: an app registration's client secret (client-credentials
/// grant).
#[derive(Debug, Clone)]
pub struct EntraAuth {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Arc<SecretString>,
    /// `https://login.microsoftonline.com` (or a sovereign cloud's).
    pub authority: String,
    pub scope: String,
    pub refresh_ahead: Duration,
}

impl EntraAuth {
    /// The tenant's v2.0 token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant_id)
    }
}

/// Everything a cloud table's validation needs from the parser.
pub(super) struct Cx<'a> {
    pub(super) path: &'a str,
    pub(super) kind: CredentialKind,
    pub(super) provider: Option<Provider>,
    pub(super) base: &'a Path,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) resolve: &'a Resolve<'a>,
}

fn refresh_ahead(
    cx: &Cx<'_>,
    table: &str,
    v: Option<&str>,
    problem: &mut dyn FnMut(String, String),
) -> Duration {
    match v {
        None => Duration::from_secs(300),
        Some(v) => humantime_duration(v).unwrap_or_else(|| {
            problem(
                format!("{}.{table}.refresh_ahead", cx.path),
                format!("{v:?} is not a duration like \"5m\""),
            );
            Duration::from_secs(300)
        }),
    }
}

/// Checks that a cloud table sits on a `kind = "cloud"` credential of the matching
/// provider.
fn fits(
    cx: &Cx<'_>,
    table: &str,
    want: &[Provider],
    problem: &mut dyn FnMut(String, String),
) -> bool {
    let mut ok = true;
    if cx.kind != CredentialKind::Cloud {
        problem(
            format!("{}.{table}", cx.path),
            format!("an [{table}] table needs kind = \"cloud\""),
        );
        ok = false;
    }
    if let Some(p) = cx.provider {
        if !want.contains(&p) {
            let names: Vec<&str> = want.iter().map(|p| p.as_str()).collect();
            problem(
                format!("{}.{table}", cx.path),
                format!(
                    "an [{table}] table is for an endpoint of provider {}; this credential's endpoint is {p}",
                    names.join(" or ")
                ),
            );
            ok = false;
        }
    }
    ok
}

/// Validates the one cloud table of a credential, if any; `None` with a problem
/// reported when it is wrong.
pub(super) fn cloud_auth(
    cx: &Cx<'_>,
    aws: Option<&RawAws>,
    google: Option<&RawGoogle>,
    entra: Option<&RawEntra>,
    problem: &mut dyn FnMut(String, String),
) -> Option<CloudAuth> {
    let count = [aws.is_some(), google.is_some(), entra.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if count > 1 {
        problem(
            cx.path.to_owned(),
            "a credential takes one of [aws], [google] or [entra], not several".into(),
        );
        return None;
    }
    if let Some(a) = aws {
        return aws_auth(cx, a, problem).map(CloudAuth::Aws);
    }
    if let Some(g) = google {
        return google_auth(cx, g, problem).map(CloudAuth::Google);
    }
    if let Some(e) = entra {
        return entra_auth(cx, e, problem).map(CloudAuth::Entra);
    }
    if cx.kind == CredentialKind::Cloud {
        let hint = match cx.provider {
            Some(Provider::Bedrock) => "add an [credentials.aws] table (access key, profile or web identity)",
            Some(Provider::VertexAi) => "add an [credentials.google] table with service_account_file (or set GOOGLE_APPLICATION_CREDENTIALS)",
            Some(Provider::AzureOpenAi) => "add an [credentials.entra] table (tenant_id, client_id, client_secret)",
            _ => "cloud credentials are for endpoints of provider bedrock, vertex-ai or azure-openai",
        };
        problem(
            format!("{}.kind", cx.path),
            format!("kind = \"cloud\" needs its table: {hint}"),
        );
    }
    None
}

fn reference_or_plain(
    cx: &Cx<'_>,
    field: &str,
    v: &str,
    problem: &mut dyn FnMut(String, String),
) -> Option<String> {
    if v.starts_with("env:") || v.starts_with("file:") {
        (cx.resolve)(&format!("{}.aws.{field}", cx.path), v, problem).map(|s| s.expose().to_owned())
    } else {
        Some(v.to_owned())
    }
}

fn aws_auth(cx: &Cx<'_>, a: &RawAws, problem: &mut dyn FnMut(String, String)) -> Option<AwsAuth> {
    let path = cx.path;
    let ok = fits(cx, "aws", &[Provider::Bedrock], problem);
    let refresh_ahead = refresh_ahead(cx, "aws", a.refresh_ahead.as_deref(), problem);
    let sources = [
        a.access_key_id.is_some() || a.secret_access_key.is_some(),
        a.profile.is_some(),
        a.web_identity_token_file.is_some() || a.role_arn.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources != 1 {
        problem(
            format!("{path}.aws"),
            "give exactly one source of keys: access_key_id with secret_access_key (and session_token for temporary keys), or profile, or web_identity_token_file with role_arn".into(),
        );
        return None;
    }
    let source = if a.access_key_id.is_some() || a.secret_access_key.is_some() {
        static_keys(cx, a, problem)?
    } else if let Some(name) = &a.profile {
        profile(cx, a, name, problem)?
    } else {
        web_identity(cx, a, problem)?
    };
    ok.then_some(AwsAuth {
        source,
        refresh_ahead,
    })
}

fn static_keys(
    cx: &Cx<'_>,
    a: &RawAws,
    problem: &mut dyn FnMut(String, String),
) -> Option<AwsSource> {
    let path = cx.path;
    let Some(id) = &a.access_key_id else {
        problem(
            format!("{path}.aws.access_key_id"),
            "missing: the access key id (AKIA… or ASIA…) that goes with secret_access_key".into(),
        );
        return None;
    };
    let Some(secret) = &a.secret_access_key else {
        problem(
            format!("{path}.aws.secret_access_key"),
            "missing: reference the secret access key as \"env:VAR\" or \"file:PATH\"".into(),
        );
        return None;
    };
    let access_key_id = reference_or_plain(cx, "access_key_id", id, problem)?;
    let secret = (cx.resolve)(&format!("{path}.aws.secret_access_key"), secret, problem)?;
    let session_token = match &a.session_token {
        None => None,
        Some(t) => Some(
            (cx.resolve)(&format!("{path}.aws.session_token"), t, problem)
                .map(|s| Arc::new(SecretString::from(s.expose().to_owned())))?,
        ),
    };
    if access_key_id.starts_with("ASIA") && session_token.is_none() {
        problem(
            format!("{path}.aws.session_token"),
            format!(
                "access key {access_key_id} is a temporary (ASIA…) key: it needs its session_token"
            ),
        );
        return None;
    }
    Some(AwsSource::Static {
        access_key_id,
        secret_access_key: Arc::new(SecretString::from(secret.expose().to_owned())),
        session_token,
    })
}

fn home_file(cx: &Cx<'_>, var: &str, default: &str) -> PathBuf {
    match (cx.env)(var) {
        Some(p) if !p.trim().is_empty() => cx.base.join(p.trim()),
        _ => {
            let home = (cx.env)("HOME").unwrap_or_default();
            Path::new(&home).join(default)
        }
    }
}

fn profile(
    cx: &Cx<'_>,
    a: &RawAws,
    name: &str,
    problem: &mut dyn FnMut(String, String),
) -> Option<AwsSource> {
    let path = cx.path;
    let file = match &a.credentials_file {
        Some(f) => cx.base.join(f),
        None => home_file(cx, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
    };
    let config_file = match &a.config_file {
        Some(f) => cx.base.join(f),
        None => home_file(cx, "AWS_CONFIG_FILE", ".aws/config"),
    };
    match read_profile(&file, &config_file, name) {
        Ok(_) => Some(AwsSource::Profile {
            name: name.to_owned(),
            file,
            config_file,
        }),
        Err(e) => {
            problem(format!("{path}.aws.profile"), e.to_string());
            None
        }
    }
}

fn web_identity(
    cx: &Cx<'_>,
    a: &RawAws,
    problem: &mut dyn FnMut(String, String),
) -> Option<AwsSource> {
    let path = cx.path;
    let token_file = a
        .web_identity_token_file
        .clone()
        .or_else(|| (cx.env)("AWS_WEB_IDENTITY_TOKEN_FILE"));
    let Some(token_file) = token_file else {
        problem(
            format!("{path}.aws.web_identity_token_file"),
            "missing: the file holding the web-identity token (on EKS, AWS_WEB_IDENTITY_TOKEN_FILE)".into(),
        );
        return None;
    };
    let token_file = cx.base.join(token_file);
    match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => {}
        Ok(_) => {
            problem(
                format!("{path}.aws.web_identity_token_file"),
                format!("{} is empty", token_file.display()),
            );
            return None;
        }
        Err(e) => {
            problem(
                format!("{path}.aws.web_identity_token_file"),
                format!("cannot read {}: {e}", token_file.display()),
            );
            return None;
        }
    }
    let Some(role_arn) = a.role_arn.clone().filter(|r| r.starts_with("arn:")) else {
        problem(
            format!("{path}.aws.role_arn"),
            "missing or not an ARN: the role to assume, like arn:aws:iam::123456789012:role/keyward".into(),
        );
        return None;
    };
    let sts_url = a
        .sts_endpoint
        .clone()
        .unwrap_or_else(|| "https://sts.amazonaws.com".into());
    if !(sts_url.starts_with("https://") || sts_url.starts_with("http://")) {
        problem(
            format!("{path}.aws.sts_endpoint"),
            format!("{sts_url:?} is not an http(s) URL"),
        );
        return None;
    }
    Some(AwsSource::WebIdentity {
        token_file,
        role_arn,
        session_name: a
            .role_session_name
            .clone()
            .unwrap_or_else(|| "keyward".into()),
        sts_url: sts_url.trim_end_matches('/').to_owned(),
    })
}

fn google_auth(
    cx: &Cx<'_>,
    g: &RawGoogle,
    problem: &mut dyn FnMut(String, String),
) -> Option<GoogleAuth> {
    let path = cx.path;
    let ok = fits(
        cx,
        "google",
        &[Provider::VertexAi, Provider::Gemini],
        problem,
    );
    let refresh_ahead = refresh_ahead(cx, "google", g.refresh_ahead.as_deref(), problem);
    let file = g
        .service_account_file
        .clone()
        .or_else(|| (cx.env)("GOOGLE_APPLICATION_CREDENTIALS"));
    let Some(file) = file else {
        problem(
            format!("{path}.google.service_account_file"),
            "missing: the service account's JSON key file (or set GOOGLE_APPLICATION_CREDENTIALS)"
                .into(),
        );
        return None;
    };
    let key_file = cx.base.join(file);
    let text = match std::fs::read_to_string(&key_file) {
        Ok(t) => t,
        Err(e) => {
            problem(
                format!("{path}.google.service_account_file"),
                format!(
                    "cannot read the service account key {}: {e}",
                    key_file.display()
                ),
            );
            return None;
        }
    };
    let account = match ServiceAccount::parse(&text) {
        Ok(a) => a,
        Err(e) => {
            problem(
                format!("{path}.google.service_account_file"),
                format!("{} {e}", key_file.display()),
            );
            return None;
        }
    };
    let token_url = g
        .token_url
        .clone()
        .unwrap_or_else(|| account.token_uri.clone());
    let scopes = if g.scopes.is_empty() {
        vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()]
    } else {
        g.scopes.clone()
    };
    ok.then(|| GoogleAuth {
        account: Arc::new(account),
        key_file,
        token_url,
        scopes,
        refresh_ahead,
    })
}

fn entra_auth(
    cx: &Cx<'_>,
    e: &RawEntra,
    problem: &mut dyn FnMut(String, String),
) -> Option<EntraAuth> {
    let path = cx.path;
    let ok = fits(cx, "entra", &[Provider::AzureOpenAi], problem);
    let refresh_ahead = refresh_ahead(cx, "entra", e.refresh_ahead.as_deref(), problem);
    let mut fine = ok;
    for (field, v) in [("tenant_id", &e.tenant_id), ("client_id", &e.client_id)] {
        if v.trim().is_empty() || v.contains('/') {
            problem(
                format!("{path}.entra.{field}"),
                "empty or not an id: copy it from the app registration's overview (a GUID)".into(),
            );
            fine = false;
        }
    }
    let secret = (cx.resolve)(
        &format!("{path}.entra.client_secret"),
        &e.client_secret,
        problem,
    )?;
    let authority = e
        .authority
        .clone()
        .unwrap_or_else(|| "https://login.microsoftonline.com".into());
    if !(authority.starts_with("https://") || authority.starts_with("http://")) {
        problem(
            format!("{path}.entra.authority"),
            format!("{authority:?} is not an http(s) URL"),
        );
        fine = false;
    }
    fine.then(|| EntraAuth {
        tenant_id: e.tenant_id.trim().to_owned(),
        client_id: e.client_id.trim().to_owned(),
        client_secret: Arc::new(SecretString::from(secret.expose().to_owned())),
        authority: authority.trim_end_matches('/').to_owned(),
        scope: e
            .scope
            .clone()
            .unwrap_or_else(|| "https://cognitiveservices.azure.com/.default".into()),
        refresh_ahead,
    })
}

/// An endpoint's base URL: as written, or (Bedrock, Vertex AI) the region's. Bedrock
/// needs its region (requests are signed for it), Vertex AI its region and project.
pub(super) fn endpoint_base_url(
    path: &str,
    e: &super::raw::RawEndpoint,
    provider: Provider,
    problem: &mut dyn FnMut(String, String),
) -> String {
    let region = e.region.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let valid_region = |r: &str| r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match (provider, region) {
        (Provider::Bedrock, None) => problem(
            format!("{path}.region"),
            "missing: Bedrock requests are signed for a region, e.g. region = \"us-east-1\" (one where the model is available)".into(),
        ),
        (Provider::VertexAi, None) => problem(
            format!("{path}.region"),
            "missing: Vertex AI's location, e.g. region = \"us-east5\" or \"global\" (one where the model is available)".into(),
        ),
        (Provider::Bedrock | Provider::VertexAi, Some(r)) if !valid_region(r) => problem(
            format!("{path}.region"),
            format!("{r:?} is not a region name like \"us-east-1\""),
        ),
        _ => {}
    }
    if provider == Provider::VertexAi && e.project.as_deref().is_none_or(|p| p.trim().is_empty()) {
        problem(
            format!("{path}.project"),
            "missing: the Google Cloud project id that has Vertex AI enabled".into(),
        );
    }
    let url = match (&e.base_url, provider, region) {
        (Some(u), _, _) => u.clone(),
        (None, Provider::Bedrock, Some(r)) => format!("https://bedrock-runtime.{r}.amazonaws.com"),
        (None, Provider::VertexAi, Some("global")) => "https://aiplatform.googleapis.com".into(),
        (None, Provider::VertexAi, Some(r)) => format!("https://{r}-aiplatform.googleapis.com"),
        (None, Provider::Bedrock | Provider::VertexAi, None) => return String::new(),
        (None, _, _) => {
            problem(
                format!("{path}.base_url"),
                "missing: the provider's API URL".into(),
            );
            return String::new();
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        problem(
            format!("{path}.base_url"),
            format!("{url:?} must start with http:// or https://"),
        );
    }
    url.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests;
