//! OAuth tokens in Redis, for fleet mode: one hash per credential
//! (`{prefix}:tok:{credential}`: grant fingerprint, sealed access and refresh tokens,
//! expiry, version, last update) and a set of the credentials that have one.
//!
//! Same contract as the SQLite rows: an import bumps the version; a refresh commits with a
//! compare-and-set on the grant it consumed (a Lua script): written as the next version,
//! written over a concurrent refresh of the same grant (a successful refresh is never
//! dropped — its refresh token is the newest the provider issued), or refused because an
//! operator imported another grant meanwhile. Tokens are sealed exactly as in the state
//! file (ChaCha20-Poly1305 with the state key, credential id as associated data).
//!
//! Calls are blocking (a synchronous connection): the gateway makes them on blocking
//! threads, as it does with SQLite.

use std::sync::Mutex;
use std::time::Duration;

use keyward_core::health::Timestamp;

use crate::tokens::{
    grant_fingerprint, Committed, OAuthTokens, Sealer, SharedTokens, TokenError, TokenInfo,
    TokenStore,
};

impl TokenStore {
    /// The tokens of a fleet, in Redis under `prefix` (connected on first use: a Redis
    /// that is down at start is not an error here).
    pub fn open_redis(
        url: &str,
        prefix: &str,
        ca_pem: Option<&[u8]>,
        sealer: Sealer,
    ) -> Result<TokenStore, TokenError> {
        let redis = RedisTokens::new(url, prefix, ca_pem)?;
        Ok(TokenStore::shared(Box::new(redis), prefix, sealer))
    }
}

/// Commit of a refresh. KEYS: token hash, index set. ARGV: credential, read version,
/// grant, access, refresh, expires ("" unknown), now.
/// Returns {0} (superseded by another grant), {1, v} (written), {2, v} (written over a
/// concurrent refresh).
const COMMIT: &str = r#"
local grant = redis.call('HGET', KEYS[1], 'grant')
if grant and grant ~= ARGV[3] then return {0} end
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local read = tonumber(ARGV[2])
local v = math.max(cur, read) + 1
redis.call('HSET', KEYS[1], 'grant', ARGV[3], 'access', ARGV[4], 'refresh', ARGV[5], 'expires', ARGV[6], 'version', v, 'updated', ARGV[7])
redis.call('SADD', KEYS[2], ARGV[1])
if cur == read then return {1, v} end
return {2, v}
"#;

/// An operator's import. KEYS: token hash, index set. ARGV: credential, grant, access,
/// refresh, expires, now. Returns the new version.
const IMPORT: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') + 1
redis.call('HSET', KEYS[1], 'grant', ARGV[2], 'access', ARGV[3], 'refresh', ARGV[4], 'expires', ARGV[5], 'version', v, 'updated', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
return v
"#;

/// The fleet's OAuth tokens.
pub(crate) struct RedisTokens {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    prefix: String,
    target: String,
    commit: redis::Script,
    import: redis::Script,
}

impl std::fmt::Debug for RedisTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTokens({}, prefix {})", self.target, self.prefix)
    }
}

const TIMEOUT: Duration = Duration::from_secs(2);

/// Both tokens sealed for `credential`, and the expiry as stored (ms, or "" unknown).
fn sealed(
    sealer: &Sealer,
    credential: &str,
    access_token: &str,
    refresh_token: &str,
    expires_at: Option<Timestamp>,
) -> Result<(Vec<u8>, Vec<u8>, String), TokenError> {
    Ok((
        sealer.seal(credential, access_token)?,
        sealer.seal(credential, refresh_token)?,
        expires_at.map(|t| t.0.to_string()).unwrap_or_default(),
    ))
}

impl RedisTokens {
    pub(crate) fn new(
        url: &str,
        prefix: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<RedisTokens, TokenError> {
        let target = crate::fleet::redact_url(url);
        let client = crate::fleet::client(url, ca_pem).map_err(|source| TokenError::Redis {
            target: target.clone(),
            source,
        })?;
        Ok(RedisTokens {
            client,
            conn: Mutex::new(None),
            prefix: prefix.to_owned(),
            target,
            commit: redis::Script::new(COMMIT),
            import: redis::Script::new(IMPORT),
        })
    }

    fn key(&self, credential: &str) -> String {
        format!("{}:tok:{credential}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}:toks", self.prefix)
    }

    /// Runs `f` on the connection, connecting first if needed; a failed call drops the
    /// connection and is tried once more on a new one.
    fn with<T>(
        &self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, TokenError> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last = None;
        for _ in 0..2 {
            if guard.is_none() {
                match self.client.get_connection_with_timeout(TIMEOUT) {
                    Ok(c) => {
                        let _ = c.set_read_timeout(Some(TIMEOUT));
                        let _ = c.set_write_timeout(Some(TIMEOUT));
                        *guard = Some(c);
                    }
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            if let Some(c) = guard.as_mut() {
                match f(c) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        *guard = None;
                        last = Some(e);
                    }
                }
            }
        }
        Err(TokenError::Redis {
            target: self.target.clone(),
            source: last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no connection"))
            }),
        })
    }
}

impl SharedTokens for RedisTokens {
    fn load(&self, sealer: &Sealer, credential: &str) -> Result<Option<OAuthTokens>, TokenError> {
        let key = self.key(credential);
        let row: std::collections::HashMap<String, Vec<u8>> =
            self.with(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        if row.is_empty() {
            return Ok(None);
        }
        let text = |k: &str| {
            row.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let empty = Vec::new();
        Ok(Some(OAuthTokens {
            access_token: sealer.open(credential, row.get("access").unwrap_or(&empty))?,
            refresh_token: sealer.open(credential, row.get("refresh").unwrap_or(&empty))?,
            expires_at: text("expires").parse::<u64>().ok().map(Timestamp),
            grant_fingerprint: text("grant"),
            version: text("version").parse().unwrap_or(0),
        }))
    }

    fn import(
        &self,
        sealer: &Sealer,
        credential: &str,
        (access_token, refresh_token): (&str, &str),
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<OAuthTokens, TokenError> {
        let (access, refresh, expires) =
            sealed(sealer, credential, access_token, refresh_token, expires_at)?;
        let grant = grant_fingerprint(refresh_token);
        let (key, index) = (self.key(credential), self.index());
        let version: i64 = self.with(|c| {
            self.import
                .key(&key)
                .key(&index)
                .arg(credential)
                .arg(&grant)
                .arg(&access)
                .arg(&refresh)
                .arg(&expires)
                .arg(now.0)
                .invoke(c)
        })?;
        Ok(OAuthTokens {
            access_token: access_token.to_owned(),
            refresh_token: refresh_token.to_owned(),
            expires_at,
            grant_fingerprint: grant,
            version,
        })
    }

    fn commit_refresh(
        &self,
        sealer: &Sealer,
        credential: &str,
        read_version: i64,
        fresh: &OAuthTokens,
        now: Timestamp,
    ) -> Result<Committed, TokenError> {
        let (access, refresh, expires) = sealed(
            sealer,
            credential,
            &fresh.access_token,
            &fresh.refresh_token,
            fresh.expires_at,
        )?;
        let (key, index) = (self.key(credential), self.index());
        let reply: Vec<i64> = self.with(|c| {
            self.commit
                .key(&key)
                .key(&index)
                .arg(credential)
                .arg(read_version)
                .arg(&fresh.grant_fingerprint)
                .arg(&access)
                .arg(&refresh)
                .arg(&expires)
                .arg(now.0)
                .invoke(c)
        })?;
        match reply.as_slice() {
            [1, v] => Ok(Committed::Written { version: *v }),
            [2, v] => Ok(Committed::WrittenOverConcurrent { version: *v }),
            _ => match self.load(sealer, credential)? {
                Some(current) => Ok(Committed::Superseded(current)),
                // Removed meanwhile: nothing to supersede with; keep the refresh.
                None => Ok(Committed::Written { version: 0 }),
            },
        }
    }

    fn remove(&self, credential: &str) -> Result<bool, TokenError> {
        let (key, index) = (self.key(credential), self.index());
        let (n, _): (i64, i64) = self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(&key)
                .cmd("SREM")
                .arg(&index)
                .arg(credential)
                .query(c)
        })?;
        Ok(n > 0)
    }

    fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let index = self.index();
        let mut ids: Vec<String> = self.with(|c| redis::cmd("SMEMBERS").arg(&index).query(c))?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let key = self.key(&id);
            let (grant, expires, version, updated): (
                Option<String>,
                Option<String>,
                Option<i64>,
                Option<u64>,
            ) = self.with(|c| {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("grant")
                    .arg("expires")
                    .arg("version")
                    .arg("updated")
                    .query(c)
            })?;
            let Some(grant) = grant else { continue };
            out.push(TokenInfo {
                credential: id,
                grant_fingerprint: grant,
                expires_at: expires.and_then(|e| e.parse().ok()).map(Timestamp),
                version: version.unwrap_or(0),
                updated: Timestamp(updated.unwrap_or(0)),
            });
        }
        Ok(out)
    }
}
