//! OAuth credentials: access tokens kept fresh, one refresh at a time, never lost.
//!
//! A refreshing OAuth credential (`kind = "oauth"` with an `[credentials.oauth]` table)
//! has no secret in the config: its access and refresh tokens live in the state file
//! (`keyward credentials import`), and this module hands the current access token to each
//! attempt. The rules, each there because a gateway got it wrong:
//!
//! - **One refresh at a time per credential.** Requests that find the token expired (or
//!   get a 401 "token expired") wait on the credential's refresh gate; whoever gets it
//!   first refreshes, the others find a newer token when they get the gate and use it.
//!   Fifty concurrent requests cause one refresh.
//! - **Durable before use.** Providers rotate the refresh token on every refresh and
//!   reject the old one (reuse detection may revoke the whole grant). The new pair is
//!   committed to the state file (`synchronous=FULL`) before the new access token is
//!   used, so a crash right after a refresh cannot leave the gateway holding a consumed
//!   refresh token. A successful refresh is never dropped.
//! - **Re-read before giving up.** On `invalid_grant` (or a reused refresh token) the
//!   stored row is read again first: another holder (a re-import, another process) may
//!   have rotated it. Only if the stored refresh token is the one rejected is the
//!   credential disabled, with a "log in again" remedy.
//! - **A failing token endpoint disables nothing.** 5xx, 429 and network errors are
//!   retried with backoff (backon), then the credential is skipped for a short while and
//!   kept; requests fail over meanwhile.
//! - **Ahead of expiry.** A background task refreshes each token `refresh_ahead` before
//!   it expires, so requests rarely wait for a refresh at all.
//!
//! The state file is the source of truth; this module keeps the current access token in
//! memory so the hot path reads a lock-free-ish `RwLock` and never the disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use keyward_core::classify::{classify, Attempt, Class, CredentialKind, EndpointKind, Phase};
use keyward_core::health::{HealthEngine, Timestamp};
use keyward_store::{Committed, OAuthTokens, TokenStore};
use serde::Deserialize;
use tracing::{info, warn};

use crate::config::{Credential, OAuthConfig, TokenStyle};

use super::metrics::{CredentialOutcome, Metrics};
use crate::clock::wall_clock;

/// A token this close to expiry is refreshed before use, even if the background task
/// has not got to it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// After the token endpoint failed (with its retries), the credential is skipped this
/// long before the next attempt to refresh.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(5);
/// A token the token endpoint issued less than this long ago is not refreshed again when
/// the provider rejects it: the rejection is a verdict on the credential (or a provider
/// incident), and refreshing on every request of an incident would only hammer the token
/// endpoint.
const REFRESHED_RECENTLY: Duration = Duration::from_secs(30);
/// One token endpoint call's limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Fleet mode: the refresh lease outlives the token endpoint's calls with their retries.
const FLEET_LEASE: Duration = Duration::from_secs(40);
/// Fleet mode: how often a replica waiting for another's refresh looks for the result.
const FLEET_POLL: Duration = Duration::from_millis(50);

fn lease_name(credential: &str) -> String {
    format!("refresh:{credential}")
}

/// Who refreshes, in fleet mode.
enum FleetTurn {
    /// Another replica refreshed: its access token.
    Adopted(Arc<str>),
    /// This replica holds the lease (its token, to release).
    Mine(String),
    /// Redis is unreachable: refresh alone (degraded).
    Alone,
}

/// Why a credential has no usable access token now. Each says what to do.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// Nothing imported yet. Label: `not_imported`.
    #[error("no OAuth tokens for {0}: import them with `keyward credentials import {0} FILE`")]
    NotImported(String),
    /// The token endpoint failed; the credential is kept and retried later. Label:
    /// `unavailable`.
    #[error(
        "the token endpoint of {credential} is failing ({why}); retrying, the credential is kept"
    )]
    Unavailable { credential: String, why: String },
    /// The grant is dead. Label: `revoked`.
    #[error("{0}")]
    Revoked(String),
    /// The state file could not be read or written. Label: `store`.
    #[error("state file: {0}")]
    Store(String),
}

#[derive(Debug, Clone)]
struct Current {
    access: Arc<str>,
    expires_at: Option<Timestamp>,
    version: i64,
    /// Until when a rejection of this token is not worth another refresh (it came from
    /// the token endpoint moments ago).
    fresh_until: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Current>>,
    gate: tokio::sync::Mutex<()>,
    unavailable_until: Mutex<Option<(Timestamp, String)>>,
    revoked: Mutex<Option<(String, String)>>,
}

/// The access tokens of every OAuth credential; shared across config reloads.
#[derive(Debug)]
pub struct OAuth {
    store: Option<Arc<TokenStore>>,
    /// Fleet mode: refreshes take a fleet-wide lease, so one replica refreshes a grant
    /// and the others adopt its result.
    fleet: std::sync::OnceLock<keyward_store::RedisStore>,
    client: reqwest::Client,
    slots: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    metrics: Arc<Metrics>,
    /// `KEYWARD_FAILPOINT=after-token-store`: stop right after a refresh is committed
    /// (crash tests kill the process there).
    pause_after_store: bool,
    /// Where a failed refresh is reported (webhooks).
    alerts: std::sync::OnceLock<Arc<super::alerts::Alerts>>,
    /// Cloud credentials' short-lived material (STS keys, Google and Entra tokens), kept
    /// fresh by the same rules; shared across reloads with this.
    pub(crate) cloud: Arc<super::cloud::Cloud>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
}

/// How one token endpoint call went.
enum CallError {
    /// The grant is dead (`invalid_grant`, reuse): with the classifier's explanation.
    Dead(String),
    /// Worth retrying (5xx, 429, network, a body we cannot read).
    Transient(String),
}

impl OAuth {
    /// Tokens read from and written to `store` (none: refreshing OAuth is unavailable, as
    /// in tests without a state file).
    pub fn new(store: Option<Arc<TokenStore>>, metrics: Arc<Metrics>) -> OAuth {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        OAuth {
            store,
            fleet: std::sync::OnceLock::new(),
            client,
            slots: Mutex::new(HashMap::new()),
            cloud: Arc::new(super::cloud::Cloud::new(metrics.clone())),
            metrics,
            pause_after_store: std::env::var("KEYWARD_FAILPOINT")
                .is_ok_and(|v| v == "after-token-store"),
            alerts: std::sync::OnceLock::new(),
        }
    }

    /// Failed refreshes raise alerts through `alerts`.
    pub fn set_alerts(&self, alerts: Arc<super::alerts::Alerts>) {
        let _ = self.alerts.set(alerts);
    }

    fn alert_refresh_failed(&self, credential: &str, why: &str, dead: bool, now: Timestamp) {
        if let Some(a) = self.alerts.get() {
            a.oauth_refresh_failed(credential, why, dead, now);
        }
    }

    /// Fleet mode: refreshes coordinate through `fleet`'s leases.
    pub fn set_fleet(&self, fleet: keyward_store::RedisStore) {
        let _ = self.fleet.set(fleet);
    }

    fn slot(&self, id: &Arc<str>) -> Arc<Slot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(id.clone()).or_default().clone()
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

    async fn load(&self, id: &str) -> Result<Option<OAuthTokens>, AccessError> {
        let Some(store) = self.store.clone() else {
            return Ok(None);
        };
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || store.load(&id))
            .await
            .map_err(|e| AccessError::Store(e.to_string()))?
            .map_err(|e| AccessError::Store(e.to_string()))
    }

    /// The grant fingerprint of `id` as stored (reads the state file: for building a
    /// configuration, not for the hot path).
    /// A cached token older than the stored one (an import while the gateway ran) is
    /// dropped here, so the next request reads the new grant.
    pub fn grant_fingerprint(&self, id: &str) -> Option<String> {
        let store = self.store.as_ref()?;
        let row = store.load(id).ok().flatten()?;
        let stale = {
            let slots = lock(&self.slots);
            slots.get(id).is_some_and(|s| {
                read(&s.current).is_some_and(|c| c.version < row.version)
                    || lock(&s.revoked)
                        .as_ref()
                        .is_some_and(|(_, grant)| *grant != row.grant_fingerprint)
            })
        };
        if stale {
            self.forget(id);
        }
        Some(row.grant_fingerprint)
    }

    /// The token store (the state file's, or the fleet's Redis), if refreshing is on.
    pub fn tokens(&self) -> Option<&Arc<TokenStore>> {
        self.store.as_ref()
    }

    /// Forgets what is cached for `id` (after an import: the next use reads the store).
    pub fn forget(&self, id: &str) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.remove(id);
    }

    /// The access token to send with `cred` now, refreshing first if it is (nearly)
    /// expired.
    pub async fn access(
        &self,
        cred: &Credential,
        cfg: &OAuthConfig,
        engine: &HealthEngine,
    ) -> Result<Arc<str>, AccessError> {
        let slot = self.slot(&cred.id);
        let now = engine.now();
        let cached = read(&slot.current);
        if let Some(c) = &cached {
            if !expiring(c, now, margin(cfg)) {
                return Ok(c.access.clone());
            }
        }
        self.refresh(cred, cfg, engine, cached.map(|c| c.version), false)
            .await
    }

    /// Whether `id`'s token is due for its ahead-of-expiry refresh.
    fn due(&self, id: &Arc<str>, cfg: &OAuthConfig, now: Timestamp) -> bool {
        let slot = self.slot(id);
        let stalled = lock(&slot.unavailable_until)
            .as_ref()
            .is_some_and(|(until, _)| now < *until);
        let dead = lock(&slot.revoked).is_some();
        match read(&slot.current) {
            Some(c) => !stalled && !dead && expiring(&c, now, cfg.refresh_ahead),
            // Not loaded yet: load (and refresh if needed) so the first request does not.
            None => !stalled && !dead,
        }
    }

    /// Whether a rejection of `rejected` is worth a refresh: not when the token endpoint
    /// issued it moments ago.
    pub fn worth_refreshing(&self, id: &Arc<str>, rejected: &str, now: Timestamp) -> bool {
        let slot = self.slot(id);
        !read(&slot.current)
            .is_some_and(|c| &*c.access == rejected && c.fresh_until.is_some_and(|f| now < f))
    }

    /// A refresh after a 401 "token expired" on the access token of `used_version`:
    /// returns the token to retry with.
    pub async fn refresh_after_rejection(
        &self,
        cred: &Credential,
        cfg: &OAuthConfig,
        engine: &HealthEngine,
        rejected: &str,
    ) -> Result<Arc<str>, AccessError> {
        let slot = self.slot(&cred.id);
        let version = read(&slot.current)
            .filter(|c| &*c.access == rejected)
            .map(|c| c.version);
        match version {
            // Someone already replaced the rejected token: use theirs.
            None => match read(&slot.current) {
                Some(c) => Ok(c.access),
                None => self.refresh(cred, cfg, engine, None, true).await,
            },
            Some(v) => self.refresh(cred, cfg, engine, Some(v), true).await,
        }
    }

    /// Refreshes `cred`'s tokens unless someone did since `seen_version`. `force`: the
    /// current access token was rejected, so an unexpired stored one is no answer.
    async fn refresh(
        &self,
        cred: &Credential,
        cfg: &OAuthConfig,
        engine: &HealthEngine,
        seen_version: Option<i64>,
        force: bool,
    ) -> Result<Arc<str>, AccessError> {
        let slot = self.slot(&cred.id);
        let _gate = slot.gate.lock().await;
        let now = engine.now();
        let revoked = lock(&slot.revoked).clone();
        if let Some((why, grant)) = revoked {
            // Fleet mode: the operator may have imported a new grant through another
            // replica (this one was not reloaded). A revoked slot costs one read.
            let replaced = self.fleet.get().is_some()
                && self
                    .load(&cred.id)
                    .await?
                    .is_some_and(|row| row.grant_fingerprint != grant);
            if !replaced {
                return Err(AccessError::Revoked(why));
            }
            info!(credential = %cred.id, "a new OAuth grant was imported for the fleet: using it");
            *lock(&slot.revoked) = None;
            *slot
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        // Someone refreshed (or loaded the first token) while this request waited for
        // the gate: use theirs. A caller that saw no token at all takes any good one,
        // unless a token it sent was just rejected.
        if let Some(c) = read(&slot.current) {
            let newer = match seen_version {
                Some(v) => c.version > v,
                None => !force,
            };
            if newer && !expiring(&c, now, margin(cfg)) {
                return Ok(c.access);
            }
        }
        // The state file is the truth: another holder may have rotated the tokens.
        let Some(row) = self.load(&cred.id).await? else {
            return Err(AccessError::NotImported(cred.id.to_string()));
        };
        let memory = read(&slot.current);
        let newer_in_store = memory.as_ref().is_none_or(|c| row.version > c.version);
        let usable = !expiring_within(row.expires_at, now, margin(cfg));
        if newer_in_store && usable && (!force || seen_version.is_none_or(|v| row.version > v)) {
            let access: Arc<str> = row.access_token.as_str().into();
            set(&slot.current, &row, access.clone(), None);
            if memory.is_some() {
                self.count(&cred.id, "adopted");
            }
            return Ok(access);
        }
        if let Some((until, why)) = lock(&slot.unavailable_until).clone() {
            if now < until {
                return Err(AccessError::Unavailable {
                    credential: cred.id.to_string(),
                    why,
                });
            }
        }
        if self.store.as_ref().is_some_and(|s| !s.writable()) {
            // A read-only view (`keyward check` beside a running gateway): a refresh here
            // could rotate the gateway's refresh token and not be stored.
            return Err(AccessError::Store(
                "a running gateway holds the state file, so this process does not refresh its OAuth tokens (the provider would rotate the gateway's refresh token); stop the gateway, or ask it: POST /admin/credentials/ID/probe".into(),
            ));
        }
        let lease = match self.fleet.get() {
            None => None,
            Some(fleet) => match self.fleet_turn(fleet, cred, &slot, &row, engine).await? {
                FleetTurn::Adopted(access) => return Ok(access),
                FleetTurn::Mine(token) => Some((fleet, token)),
                FleetTurn::Alone => None,
            },
        };
        let result = self
            .call_and_commit(cred, cfg, engine, &slot, row, now)
            .await;
        if let Some((fleet, token)) = lease {
            fleet.release(&lease_name(&cred.id), &token).await;
        }
        result
    }

    /// Fleet mode: takes the fleet-wide refresh lease of `cred`, or waits for the replica
    /// holding it and adopts the tokens it stores (or its revocation verdict). The lease
    /// outlives the token endpoint's timeout with its retries; a holder that died frees
    /// it when it lapses.
    async fn fleet_turn(
        &self,
        fleet: &keyward_store::RedisStore,
        cred: &Credential,
        slot: &Slot,
        row: &OAuthTokens,
        engine: &HealthEngine,
    ) -> Result<FleetTurn, AccessError> {
        let name = lease_name(&cred.id);
        let mut waited = false;
        loop {
            match fleet.lease(&name, FLEET_LEASE).await {
                keyward_store::Lease::Unavailable => return Ok(FleetTurn::Alone),
                keyward_store::Lease::Held(token) => {
                    // A previous holder may have finished between our read and now: its
                    // refresh consumed the refresh token we hold…
                    if let Some(access) = self.adopt_newer(cred, slot, row, engine).await? {
                        fleet.release(&name, &token).await;
                        return Ok(FleetTurn::Adopted(access));
                    }
                    // …or found the grant dead (it stores the disable before releasing
                    // the lease; this replica's view may not have it yet).
                    let key = keyward_core::health::ScopeKey::Credential(cred.id.clone());
                    if let Some(keyward_core::health::Health::Disabled { evidence, .. }) =
                        fleet.stored_health(&key).await
                    {
                        fleet.release(&name, &token).await;
                        return Err(AccessError::Revoked(evidence));
                    }
                    return Ok(FleetTurn::Mine(token));
                }
                keyward_store::Lease::Taken => {}
            }
            if !waited {
                info!(credential = %cred.id, "another replica is refreshing this OAuth grant: waiting for its result");
                waited = true;
            }
            tokio::time::sleep(FLEET_POLL).await;
            if let Some(access) = self.adopt_newer(cred, slot, row, engine).await? {
                return Ok(FleetTurn::Adopted(access));
            }
            if let Some(keyward_core::health::Health::Disabled { evidence, .. }) =
                engine.health(&keyward_core::health::ScopeKey::Credential(cred.id.clone()))
            {
                return Err(AccessError::Revoked(evidence));
            }
        }
    }

    /// The stored tokens, when another holder wrote a newer usable version than `row`.
    async fn adopt_newer(
        &self,
        cred: &Credential,
        slot: &Slot,
        row: &OAuthTokens,
        engine: &HealthEngine,
    ) -> Result<Option<Arc<str>>, AccessError> {
        let Some(fresh) = self.load(&cred.id).await? else {
            return Ok(None);
        };
        let usable = fresh
            .expires_at
            .is_none_or(|e| e > engine.now().plus(Duration::from_secs(1)));
        if fresh.version <= row.version || !usable {
            return Ok(None);
        }
        let access: Arc<str> = fresh.access_token.as_str().into();
        set(
            &slot.current,
            &fresh,
            access.clone(),
            Some(engine.now().plus(REFRESHED_RECENTLY)),
        );
        self.count(&cred.id, "adopted");
        Ok(Some(access))
    }

    /// Calls the token endpoint with `row`'s refresh token and commits the result (or
    /// handles a dead grant).
    async fn call_and_commit(
        &self,
        cred: &Credential,
        cfg: &OAuthConfig,
        engine: &HealthEngine,
        slot: &Slot,
        mut row: OAuthTokens,
        now: Timestamp,
    ) -> Result<Arc<str>, AccessError> {
        let mut reread = false;
        loop {
            match self.call(cfg, &row.refresh_token).await {
                Ok(resp) => {
                    *lock(&slot.unavailable_until) = None;
                    return self.commit(cred, slot, &row, resp, engine).await;
                }
                Err(CallError::Transient(why)) => {
                    warn!(credential = %cred.id, error = %why, "OAuth token endpoint failing: credential kept, requests fail over meanwhile");
                    self.count(&cred.id, "unavailable");
                    // One alert per outage: the first failure after a success.
                    let first = lock(&slot.unavailable_until)
                        .replace((now.plus(UNAVAILABLE_FOR), why.clone()))
                        .is_none();
                    if first {
                        self.alert_refresh_failed(&cred.id, &why, false, now);
                    }
                    return Err(AccessError::Unavailable {
                        credential: cred.id.to_string(),
                        why,
                    });
                }
                Err(CallError::Dead(why)) => {
                    // Re-read first: a holder that rotated the refresh token meanwhile
                    // makes ours look reused.
                    if !reread {
                        reread = true;
                        if let Some(fresh) = self.load(&cred.id).await? {
                            if fresh.refresh_token != row.refresh_token {
                                info!(credential = %cred.id, "refresh token rejected, but the state file holds a newer one: using it");
                                row = fresh;
                                continue;
                            }
                        }
                    }
                    let evidence = format!(
                        "OAuth refresh rejected ({why}): log in again and run `keyward credentials import {}`",
                        cred.id
                    );
                    warn!(credential = %cred.id, reason = %evidence, "OAuth grant revoked: credential disabled");
                    self.count(&cred.id, "revoked");
                    self.alert_refresh_failed(&cred.id, &evidence, true, now);
                    *lock(&slot.revoked) = Some((evidence.clone(), row.grant_fingerprint.clone()));
                    if let Some(ack) = engine.revoke_grant(&cred.id, &evidence) {
                        let _ = tokio::task::spawn_blocking(move || ack.wait()).await;
                    }
                    return Err(AccessError::Revoked(evidence));
                }
            }
        }
    }

    /// Stores a successful refresh durably, then makes its access token current.
    async fn commit(
        &self,
        cred: &Credential,
        slot: &Slot,
        consumed: &OAuthTokens,
        resp: TokenResponse,
        engine: &HealthEngine,
    ) -> Result<Arc<str>, AccessError> {
        let now = engine.now();
        let fresh = OAuthTokens {
            access_token: resp.access_token,
            // A provider that does not rotate keeps the refresh token valid.
            refresh_token: resp
                .refresh_token
                .unwrap_or_else(|| consumed.refresh_token.clone()),
            expires_at: resp
                .expires_in
                .filter(|s| s.is_finite() && *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s.min(10.0 * 365.0 * 86_400.0)).ok())
                .map(|d| now.plus(d)),
            grant_fingerprint: consumed.grant_fingerprint.clone(),
            version: consumed.version,
        };
        let Some(store) = self.store.clone() else {
            return Err(AccessError::Store("no state file".into()));
        };
        let id = cred.id.to_string();
        let read_version = consumed.version;
        let to_store = fresh.clone();
        // Durable before use. If the store write fails the new access token is still
        // used in memory (the refresh happened; dropping it would strand the grant), and
        // the failure is logged loudly.
        let committed = tokio::task::spawn_blocking(move || {
            store.commit_refresh(&id, read_version, &to_store, now)
        })
        .await
        .map_err(|e| AccessError::Store(e.to_string()))?;
        let (row, outcome) = match committed {
            Ok(Committed::Written { version }) => (OAuthTokens { version, ..fresh }, "ok"),
            Ok(Committed::WrittenOverConcurrent { version }) => {
                warn!(credential = %cred.id, "another holder refreshed the same grant meanwhile; kept this (newest) refresh");
                (OAuthTokens { version, ..fresh }, "ok")
            }
            Ok(Committed::Superseded(current)) => {
                info!(credential = %cred.id, "the credential was imported again meanwhile; using the imported tokens");
                (current, "adopted")
            }
            Err(e) => {
                warn!(credential = %cred.id, error = %e, "a refreshed token could not be stored; using it from memory — the next restart needs a new import if the provider rotated the refresh token");
                (fresh, "ok")
            }
        };
        self.count(&cred.id, outcome);
        info!(credential = %cred.id, version = row.version, expires_in_s = row.expires_at.map(|e| e.0.saturating_sub(now.0) / 1000), "OAuth token refreshed and stored");
        if self.pause_after_store {
            warn!(credential = %cred.id, "failpoint after-token-store reached: pausing");
            std::future::pending::<()>().await;
        }
        let access: Arc<str> = row.access_token.as_str().into();
        set(
            &slot.current,
            &row,
            access.clone(),
            Some(now.plus(REFRESHED_RECENTLY)),
        );
        Ok(access)
    }

    /// One refresh call, retried with backoff on transient failures.
    async fn call(
        &self,
        cfg: &OAuthConfig,
        refresh_token: &str,
    ) -> Result<TokenResponse, CallError> {
        let once = || async { self.call_once(cfg, refresh_token).await };
        once.retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(2)
                .with_jitter(),
        )
        .when(|e| matches!(e, CallError::Transient(_)))
        .await
    }

    async fn call_once(
        &self,
        cfg: &OAuthConfig,
        refresh_token: &str,
    ) -> Result<TokenResponse, CallError> {
        let mut fields: Vec<(&str, String)> = vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh_token.to_owned()),
            ("client_id", cfg.client_id.clone()),
        ];
        if !cfg.scopes.is_empty() {
            fields.push(("scope", cfg.scopes.join(" ")));
        }
        let rb = self.client.post(&cfg.token_url);
        let rb = match cfg.style {
            TokenStyle::Json => rb.header("content-type", "application/json").body(
                serde_json::to_vec(
                    &fields
                        .iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect::<HashMap<_, _>>(),
                )
                .unwrap_or_default(),
            ),
            TokenStyle::Form => rb.form(&fields),
        };
        let resp = rb.send().await.map_err(|e| {
            CallError::Transient(if e.is_timeout() {
                "timed out".into()
            } else {
                "could not connect".into()
            })
        })?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        let body = resp
            .bytes()
            .await
            .map_err(|_| CallError::Transient("the response broke off".into()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice::<TokenResponse>(&body)
                .ok()
                .filter(|t| !t.access_token.is_empty())
                .ok_or_else(|| CallError::Transient(format!("{status} without an access_token")));
        }
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let provider = cred_provider(cfg);
        let verdict = classify(&Attempt {
            provider,
            credential: CredentialKind::OAuth,
            endpoint: EndpointKind::Token,
            phase: Phase::Headers,
            transport: None,
            status: Some(status),
            headers: &h,
            body: &body,
            now: wall_clock(),
        });
        let why = format!(
            "{status} {}",
            verdict
                .provider_code
                .as_deref()
                .unwrap_or(verdict.class.as_str())
        );
        match verdict.class {
            Class::AuthPermanent => Err(CallError::Dead(why)),
            _ => Err(CallError::Transient(why)),
        }
    }

    /// Refreshes, in the background, every token of `creds` due within its
    /// `refresh_ahead`.
    pub fn refresh_due(self: &Arc<Self>, creds: &[Credential], engine: &HealthEngine) {
        let now = engine.now();
        for cred in creds {
            let Some(cfg) = cred.oauth.clone() else {
                continue;
            };
            if !self.due(&cred.id, &cfg, now) {
                continue;
            }
            let slot = self.slot(&cred.id);
            // One at a time: skip while a refresh is running.
            if slot.gate.try_lock().is_err() {
                continue;
            }
            let me = self.clone();
            let cred = cred.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                let seen = read(&me.slot(&cred.id).current).map(|c| c.version);
                match me.refresh(&cred, &cfg, &engine, seen, false).await {
                    Ok(_) | Err(AccessError::NotImported(_)) => {}
                    Err(e) => {
                        warn!(credential = %cred.id, error = %e, "ahead-of-expiry refresh failed")
                    }
                }
            });
        }
    }
}

/// Which provider's token endpoint (for the classifier): known from the URL's host,
/// generic otherwise.
fn cred_provider(cfg: &OAuthConfig) -> keyward_core::classify::Provider {
    use keyward_core::classify::Provider;
    if cfg.token_url.contains("anthropic.com") {
        Provider::Anthropic
    } else if cfg.token_url.contains("openai.com") {
        Provider::OpenAi
    } else {
        Provider::Unknown
    }
}

/// How close to expiry a token is refreshed before use: [`EXPIRY_MARGIN`], or the
/// credential's `refresh_ahead` if that is shorter.
fn margin(cfg: &OAuthConfig) -> Duration {
    cfg.refresh_ahead.min(EXPIRY_MARGIN)
}

fn expiring(c: &Current, now: Timestamp, margin: Duration) -> bool {
    expiring_within(c.expires_at, now, margin)
}

fn expiring_within(expires_at: Option<Timestamp>, now: Timestamp, margin: Duration) -> bool {
    expires_at.is_some_and(|e| now.plus(margin) >= e)
}

fn read(l: &RwLock<Option<Current>>) -> Option<Current> {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn set(
    l: &RwLock<Option<Current>>,
    row: &OAuthTokens,
    access: Arc<str>,
    fresh_until: Option<Timestamp>,
) {
    let c = Current {
        access,
        expires_at: row.expires_at,
        version: row.version,
        fresh_until,
    };
    match l.write() {
        Ok(mut g) => *g = Some(c),
        Err(p) => *p.into_inner() = Some(c),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
