//! Confirmation probes of cloud credentials, on the same endpoint and auth mode that
//! failed: a one-token Claude request (Bedrock InvokeModel, Vertex AI rawPredict) or a
//! Gemini `countTokens` on Vertex AI; and what a confirmed auth failure means for each
//! kind of cloud key, naming the access key id or the service account — never a secret.

use std::sync::Arc;

use axum::http::{Method, Request};
use bytes::Bytes;
use http_body_util::Full;
use keyward_core::classify::{Class, Failure, Provider};
use keyward_core::health::ProbeKind;
use serde_json::json;

use super::request::{finish, BuildError, Call};
use super::Material;
use crate::config::{AwsSource, CloudAuth, Credential, Endpoint};
use crate::gateway::upstream::{self, GeminiCall, Inbound};
use crate::gateway::Gateway;

/// The probe request for a Bedrock or Vertex AI endpoint; `None` for other providers
/// (the prober's own calls apply).
pub(crate) fn request(
    gw: &Gateway,
    cred: &Credential,
    endpoint: &Endpoint,
    model: &str,
    secret: &Arc<str>,
    _kind: ProbeKind,
) -> Option<Result<Request<Full<Bytes>>, BuildError>> {
    let gemini = model.starts_with("gemini");
    let (inbound, body) = match endpoint.provider {
        Provider::Bedrock => (
            Inbound::Messages,
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}),
        ),
        Provider::VertexAi if gemini => (
            Inbound::Gemini(GeminiCall {
                stream: false,
                sse: false,
            }),
            json!({"contents": [{"role": "user", "parts": [{"text": "ping"}]}], "generationConfig": {"maxOutputTokens": 1}}),
        ),
        Provider::VertexAi => (
            Inbound::Messages,
            json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}),
        ),
        _ => return None,
    };
    let url = super::request::url(inbound, endpoint, model).and_then(|u| upstream::parse(&u));
    let Some(url) = url else {
        return Some(Err(BuildError::Url(endpoint.id.to_string())));
    };
    let call = Call {
        inbound,
        stream: false,
        endpoint,
        cred,
        secret,
    };
    Some(finish(
        gw,
        call,
        Method::POST,
        url,
        None,
        body.to_string().into_bytes(),
    ))
}

/// What a confirmed failure of a cloud credential means, and what to do, naming the key
/// (never its secret); `None` for other credentials.
pub(crate) fn remedy(gw: &Gateway, cred: &Credential, f: &Failure) -> Option<String> {
    let auth = cred.cloud.as_ref()?;
    let aws_type = f.provider_code.as_deref().unwrap_or(&f.evidence.value);
    match auth {
        CloudAuth::Aws(a) => {
            let key = match gw.oauth.cloud.material(&cred.id).as_deref() {
                Some(Material::Aws(k)) => k.access_key_id.clone(),
                _ => match &a.source {
                    AwsSource::Static { access_key_id, .. } => access_key_id.clone(),
                    _ => "(not loaded)".into(),
                },
            };
            let text = match (f.class, aws_type) {
                (Class::AuthPermanent, t) if t.contains("InvalidSignature") || t.contains("SignatureDoesNotMatch") => format!(
                    "the secret access key does not match access key {key}: put the secret that belongs to it in [credentials.aws] secret_access_key"
                ),
                (Class::AuthPermanent, t) if t.contains("AccessDenied") => format!(
                    "IAM denies access key {key} this call: allow bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream for its user or role"
                ),
                (Class::AuthPermanent, _) => format!(
                    "AWS does not know access key {key} (deleted, deactivated, or of another partition): create a new access key and update [credentials.aws]"
                ),
                (Class::ModelNotFound, _) => format!(
                    "access key {key} has no access to this model in region {}: request model access in the Bedrock console, or route the model elsewhere",
                    gw.cfg.endpoints.get(&cred.endpoint).and_then(|e| e.region.clone()).unwrap_or_default()
                ),
                _ => return None,
            };
            Some(text)
        }
        CloudAuth::Google(g) => match f.class {
            Class::AuthPermanent => Some(format!(
                "service account {} is refused: grant it roles/aiplatform.user on the project, or create a new key if it was deleted",
                g.account.client_email
            )),
            Class::ModelNotFound => Some(format!(
                "service account {} cannot use this model in this region: enable it in Vertex AI Model Garden, or route elsewhere",
                g.account.client_email
            )),
            _ => None,
        },
        CloudAuth::Entra(e) => matches!(f.class, Class::AuthPermanent).then(|| {
            format!(
                "app {} of tenant {} is refused by Azure OpenAI: give it the Cognitive Services OpenAI User role on the resource",
                e.client_id, e.tenant_id
            )
        }),
    }
}
