//! Cloud credentials at run time: the short-lived material each `kind = "cloud"`
//! credential signs or authenticates with, kept fresh like OAuth access tokens
//! (see `oauth.rs`, whose rules these follow):
//!
//! - **Ahead of expiry, one at a time.** STS session keys, Google access tokens and Entra
//!   tokens are fetched before they expire (`refresh_ahead`), by the background task or by
//!   the first request that finds them expiring; the others wait on the credential's gate
//!   and use the result. A rejection as expired (`ExpiredTokenException`, Google
//!   `ACCESS_TOKEN_EXPIRED`, a 401) refreshes once and retries, invisibly.
//! - **The token endpoint's answer decides.** A grant the issuer refuses for good
//!   (`invalid_grant`: the service account key was deleted; STS `InvalidIdentityToken`;
//!   Entra `invalid_client`) disables the credential at once with what to do; a failing
//!   issuer (5xx, 429, a timeout) disables nothing: the credential is skipped for a few
//!   seconds and requests fail over.
//! - **Secrets stay in `secrecy` types** and never reach a log line, an error, a metric
//!   label or the admin API; errors name the access key id or the service account, never
//!   the secret.
//!
//! Modules: `aws` (key sources, STS, SigV4), `google` (service account JWT-bearer grant),
//! `entra` (client-credentials grant), `call` (the issuer calls' shared HTTP), `request`
//! (Bedrock's and Vertex AI's URLs and bodies, signing), `probe` (confirmation probes).

mod aws;
mod call;
mod entra;
mod google;
pub(crate) mod probe;
pub(crate) mod request;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keyward_core::health::{HealthEngine, Timestamp};
use secrecy::SecretString;
use tracing::{info, warn};

use super::metrics::{CredentialOutcome, Metrics};
use super::oauth::AccessError;
use crate::config::{CloudAuth, Credential};

pub(crate) use aws::AwsKeys;

/// A token this close to expiry is refreshed before use.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// After the issuer failed (with its retries), the credential is skipped this long.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(5);
/// Material fetched less than this long ago is not fetched again when rejected: the
/// rejection is a verdict on the credential, not on the token's age.
const FETCHED_RECENTLY: Duration = Duration::from_secs(30);

/// What a cloud credential authenticates with now.
#[derive(Debug)]
pub(crate) enum Material {
    /// A bearer access token (Google, Entra).
    Bearer(SecretString),
    /// AWS signing keys.
    Aws(AwsKeys),
}

/// Material as fetched, with when it expires.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) material: Material,
    pub(crate) expires_at: Option<Timestamp>,
}

/// Why fetching material failed.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The issuer refused for good: the credential is disabled with this evidence, which
    /// says what to do.
    Dead(String),
    /// Worth retrying later (issuer down, throttled, unreachable, a file mid-rewrite).
    Transient(String),
}

#[derive(Debug, Clone)]
struct Current {
    material: Arc<Material>,
    /// What the attempt carries as its "secret": the bearer token itself, or for AWS a
    /// tag of this generation of keys (never a secret).
    handle: Arc<str>,
    expires_at: Option<Timestamp>,
    generation: u64,
    fresh_until: Timestamp,
    /// The configuration's fingerprint it was fetched under (a reload with another key
    /// drops it).
    config: String,
}

#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Current>>,
    gate: tokio::sync::Mutex<()>,
    generation: Mutex<u64>,
    unavailable_until: Mutex<Option<(Timestamp, String)>>,
    dead: Mutex<Option<(String, String)>>,
}

/// The short-lived material of every cloud credential; shared across reloads.
#[derive(Debug)]
pub(crate) struct Cloud {
    client: reqwest::Client,
    slots: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    metrics: Arc<Metrics>,
}

impl Cloud {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Cloud {
        Cloud {
            client: call::client(),
            slots: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn slot(&self, id: &Arc<str>) -> Arc<Slot> {
        lock(&self.slots).entry(id.clone()).or_default().clone()
    }

    /// The handle to send with `cred` now (the bearer token, or the AWS keys' tag whose
    /// keys [`Cloud::aws_keys`] gives), fetching first when it is (nearly) expired.
    pub(crate) async fn access(
        &self,
        cred: &Credential,
        auth: &CloudAuth,
        engine: &HealthEngine,
    ) -> Result<Arc<str>, AccessError> {
        let slot = self.slot(&cred.id);
        if let Some(c) = read(&slot.current) {
            if !expiring(c.expires_at, engine.now(), margin(auth)) {
                return Ok(c.handle);
            }
        }
        let seen = read(&slot.current).map(|c| c.generation);
        self.refresh(cred, auth, engine, seen).await
    }

    /// `id`'s current material (the AWS keys a request is signed with), if fetched.
    pub(crate) fn material(&self, id: &Arc<str>) -> Option<Arc<Material>> {
        read(&self.slot(id).current).map(|c| c.material)
    }

    /// Whether a rejection of `rejected` is worth a refresh: the material can be
    /// renewed (not a static access key) and was not fetched moments ago.
    pub(crate) fn worth_refreshing(
        &self,
        cred: &Credential,
        auth: &CloudAuth,
        rejected: &str,
        now: Timestamp,
    ) -> bool {
        if !Cloud::renewable(auth) {
            return false;
        }
        let slot = self.slot(&cred.id);
        !read(&slot.current).is_some_and(|c| &*c.handle == rejected && now < c.fresh_until)
    }

    /// Whether this credential's material can be renewed without a person (anything but
    /// a static access key: a profile is read again, STS and token endpoints asked again).
    pub(crate) fn renewable(auth: &CloudAuth) -> bool {
        !matches!(
            auth,
            CloudAuth::Aws(crate::config::AwsAuth {
                source: crate::config::AwsSource::Static { .. },
                ..
            })
        )
    }

    /// A refresh after the provider rejected `rejected` as expired: the handle to retry
    /// with (someone else's newer one, or a fresh fetch).
    pub(crate) async fn refresh_after_rejection(
        &self,
        cred: &Credential,
        auth: &CloudAuth,
        engine: &HealthEngine,
        rejected: &str,
    ) -> Result<Arc<str>, AccessError> {
        let slot = self.slot(&cred.id);
        let current = read(&slot.current);
        match current {
            Some(c) if &*c.handle != rejected => Ok(c.handle),
            Some(c) => self.refresh(cred, auth, engine, Some(c.generation)).await,
            None => self.refresh(cred, auth, engine, None).await,
        }
    }

    /// Fetches new material unless someone did since `seen`.
    async fn refresh(
        &self,
        cred: &Credential,
        auth: &CloudAuth,
        engine: &HealthEngine,
        seen: Option<u64>,
    ) -> Result<Arc<str>, AccessError> {
        let slot = self.slot(&cred.id);
        let _gate = slot.gate.lock().await;
        let now = engine.now();
        if let Some((why, _)) = lock(&slot.dead).clone() {
            // Dead until the operator acts: a reset (after fixing the role's trust
            // policy, say) clears the disable, and the issuer is asked again.
            let key = keyward_core::health::ScopeKey::Credential(cred.id.clone());
            if matches!(
                engine.health(&key),
                Some(keyward_core::health::Health::Disabled { .. })
            ) {
                return Err(AccessError::Revoked(why));
            }
            info!(credential = %cred.id, "cloud credential reset by the operator: asking its issuer again");
            *lock(&slot.dead) = None;
        }
        if let Some(c) = read(&slot.current) {
            let newer = seen.is_none_or(|s| c.generation > s);
            if newer && !expiring(c.expires_at, now, margin(auth)) {
                return Ok(c.handle);
            }
        }
        if let Some((until, why)) = lock(&slot.unavailable_until).clone() {
            if now < until {
                return Err(AccessError::Unavailable {
                    credential: cred.id.to_string(),
                    why,
                });
            }
        }
        let fetched = match auth {
            CloudAuth::Aws(a) => aws::fetch(&self.client, a, &cred.id, now).await,
            CloudAuth::Google(g) => google::fetch(&self.client, g, now).await,
            CloudAuth::Entra(e) => entra::fetch(&self.client, e, now).await,
        };
        match fetched {
            Ok(f) => {
                *lock(&slot.unavailable_until) = None;
                let generation = {
                    let mut g = lock(&slot.generation);
                    *g += 1;
                    *g
                };
                let handle: Arc<str> = match &f.material {
                    Material::Bearer(t) => secrecy::ExposeSecret::expose_secret(t).into(),
                    Material::Aws(k) => format!("aws:{}:{generation}", k.access_key_id).into(),
                };
                let current = Current {
                    material: Arc::new(f.material),
                    handle: handle.clone(),
                    expires_at: f.expires_at,
                    generation,
                    fresh_until: now.plus(FETCHED_RECENTLY),
                    config: auth.fingerprint(),
                };
                match slot.current.write() {
                    Ok(mut g) => *g = Some(current),
                    Err(p) => *p.into_inner() = Some(current),
                }
                self.count(&cred.id, "ok");
                info!(credential = %cred.id, expires_in_s = f.expires_at.map(|e| e.0.saturating_sub(now.0) / 1000), "cloud credential refreshed");
                Ok(handle)
            }
            Err(FetchError::Transient(why)) => {
                warn!(credential = %cred.id, error = %why, "cloud token issuer failing: credential kept, requests fail over meanwhile");
                self.count(&cred.id, "unavailable");
                *lock(&slot.unavailable_until) = Some((now.plus(UNAVAILABLE_FOR), why.clone()));
                Err(AccessError::Unavailable {
                    credential: cred.id.to_string(),
                    why,
                })
            }
            Err(FetchError::Dead(evidence)) => {
                warn!(credential = %cred.id, reason = %evidence, "cloud credential refused by its issuer: disabled");
                self.count(&cred.id, "revoked");
                *lock(&slot.dead) = Some((evidence.clone(), auth.fingerprint()));
                if let Some(ack) = engine.revoke_grant(&cred.id, &evidence) {
                    let _ = tokio::task::spawn_blocking(move || ack.wait()).await;
                }
                Err(AccessError::Revoked(evidence))
            }
        }
    }

    /// Forgets what is cached for credentials whose configuration changed (a reload with
    /// a new key): the next use fetches with the new one.
    pub(crate) fn retain(&self, creds: &[Credential]) {
        let keep: HashMap<&str, String> = creds
            .iter()
            .filter_map(|c| c.cloud.as_ref().map(|a| (&*c.id, a.fingerprint())))
            .collect();
        lock(&self.slots).retain(|id, slot| {
            let Some(fp) = keep.get(&**id) else {
                return false;
            };
            // Material fetched with another key is dropped; a dead credential comes back
            // only with another key.
            read(&slot.current).is_none_or(|c| c.config == *fp)
                && lock(&slot.dead).as_ref().is_none_or(|(_, dead)| dead == fp)
        });
    }

    /// Refreshes, in the background, every cloud credential of `creds` due within its
    /// `refresh_ahead`.
    pub(crate) fn refresh_due(self: &Arc<Self>, creds: &[Credential], engine: &HealthEngine) {
        let now = engine.now();
        for cred in creds {
            let Some(auth) = cred.cloud.clone() else {
                continue;
            };
            let slot = self.slot(&cred.id);
            let stalled = lock(&slot.unavailable_until)
                .as_ref()
                .is_some_and(|(until, _)| now < *until);
            if stalled || lock(&slot.dead).is_some() {
                continue;
            }
            let due = match read(&slot.current) {
                Some(c) => expiring(c.expires_at, now, auth.refresh_ahead()),
                None => true,
            };
            if !due || slot.gate.try_lock().is_err() {
                continue;
            }
            let me = self.clone();
            let cred = cred.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                let seen = read(&me.slot(&cred.id).current).map(|c| c.generation);
                if let Err(e) = Box::pin(me.refresh(&cred, &auth, &engine, seen)).await {
                    warn!(credential = %cred.id, error = %e, "ahead-of-expiry refresh of a cloud credential failed");
                }
            });
        }
    }

    fn count(&self, credential: &Arc<str>, outcome: &'static str) {
        self.metrics
            .refreshes
            .get_or_create(&CredentialOutcome {
                credential: credential.clone(),
                outcome,
            })
            .inc();
    }
}

fn margin(auth: &CloudAuth) -> Duration {
    auth.refresh_ahead().min(EXPIRY_MARGIN)
}

fn expiring(expires_at: Option<Timestamp>, now: Timestamp, margin: Duration) -> bool {
    expires_at.is_some_and(|e| now.plus(margin) >= e)
}

fn read(l: &RwLock<Option<Current>>) -> Option<Current> {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The wall time of the engine's clock (signing dates, JWT claims).
pub(crate) fn system_time(now: Timestamp) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(now.0)
}

/// The request path's view of refreshable credentials: OAuth grants and cloud
/// credentials alike, so `attempt.rs` treats "refresh the short-lived token" as one case.
impl super::Gateway {
    /// Whether `cred`'s token can be renewed after a rejection (an OAuth grant, or a cloud
    /// credential whose material is not a static key).
    pub(crate) fn refreshable(&self, cred: &Credential) -> bool {
        cred.oauth.is_some() || cred.cloud.as_ref().is_some_and(Cloud::renewable)
    }

    /// Whether a rejection of `rejected` is worth a refresh (not one fetched moments ago).
    pub(crate) fn worth_refreshing(
        &self,
        cred: &Credential,
        rejected: &str,
        now: Timestamp,
    ) -> bool {
        match &cred.cloud {
            Some(auth) => self.oauth.cloud.worth_refreshing(cred, auth, rejected, now),
            None => self.oauth.worth_refreshing(&cred.id, rejected, now),
        }
    }

    /// Refreshes `cred` after the provider rejected `rejected`: the token to retry with.
    pub(crate) async fn refresh_after_rejection(
        &self,
        cred: &Credential,
        rejected: &str,
    ) -> Result<Arc<str>, AccessError> {
        match (&cred.cloud, &cred.oauth) {
            (Some(auth), _) => {
                self.oauth
                    .cloud
                    .refresh_after_rejection(cred, auth, &self.engine, rejected)
                    .await
            }
            (None, Some(cfg)) => {
                self.oauth
                    .refresh_after_rejection(cred, cfg, &self.engine, rejected)
                    .await
            }
            (None, None) => Err(AccessError::NotImported(cred.id.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AwsAuth, AwsSource};
    use keyward_core::classify::CredentialKind;
    use keyward_core::health::{ManualClock, NullSink};

    fn cred(key_id: &str, secret: &str) -> Credential {
        Credential {
            id: "bedrock-1".into(),
            endpoint: "bedrock".into(),
            secret: None,
            kind: CredentialKind::Cloud,
            oauth: None,
            cloud: Some(CloudAuth::Aws(AwsAuth {
                source: AwsSource::Static {
                    access_key_id: key_id.into(),
                    secret_access_key: Arc::new(SecretString::from(secret.to_owned())),
                    session_token: None,
                },
                refresh_ahead: Duration::from_secs(300),
            })),
            bucket: None,
            priority: 0,
            models: None,
        }
    }

    fn key_of(cloud: &Cloud, id: &Arc<str>) -> String {
        match cloud.material(id).as_deref() {
            Some(Material::Aws(k)) => k.access_key_id.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reload_with_another_key_drops_the_old_keys_and_a_static_key_is_not_renewable() {
        let engine = HealthEngine::new(
            keyward_core::health::Policy::default(),
            Arc::new(ManualClock::at(Timestamp(1_764_763_200_000))),
            Arc::new(NullSink),
            1,
        );
        let cloud = Cloud::new(Arc::new(crate::gateway::metrics::Metrics::new()));
        let old = cred("AKIAOLD0000000000001", "old-secret");
        let auth = old.cloud.clone().unwrap();
        let handle = cloud.access(&old, &auth, &engine).await.unwrap();
        assert!(handle.starts_with("aws:AKIAOLD0000000000001:"), "{handle}");
        assert!(!handle.contains("old-secret"));
        assert!(!Cloud::renewable(&auth));
        assert!(!cloud.worth_refreshing(&old, &auth, &handle, engine.now()));
        // The same key again: kept.
        cloud.retain(std::slice::from_ref(&old));
        assert_eq!(key_of(&cloud, &old.id), "AKIAOLD0000000000001");
        // Another key under the same id: the old keys are dropped, the new ones fetched.
        let new = cred("AKIANEW0000000000002", "new-secret");
        cloud.retain(std::slice::from_ref(&new));
        assert!(cloud.material(&new.id).is_none());
        let auth = new.cloud.clone().unwrap();
        cloud.access(&new, &auth, &engine).await.unwrap();
        assert_eq!(key_of(&cloud, &new.id), "AKIANEW0000000000002");
    }
}
