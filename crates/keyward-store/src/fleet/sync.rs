//! A replica's work against Redis: loading the fleet state, applying log entries,
//! writing a transition by compare-and-set (absorbing or merging conflicts), degraded-mode
//! bookkeeping, and re-seeding a Redis that lost the data.

use std::collections::HashMap;

use keyward_core::health::{Actor, Health, ScopeKey, Timestamp, Transition};

use crate::sqlite::{actor_name, Loaded};

use super::merge::{deny_change, merge, same_state};
use super::scripts::{decode, encode, parse_cas, CasReply, FullState, LOG_MAX};
use super::{lock, now_ms, FleetError, Shared};

impl Shared {
    pub(super) fn err(&self, source: redis::RedisError) -> FleetError {
        FleetError::Redis {
            target: self.target.clone(),
            source,
        }
    }

    pub(super) fn mark_degraded(&self, e: &dyn std::fmt::Display) {
        let mut s = lock(&self.status);
        if s.degraded_since.is_none() {
            tracing::warn!(redis = %self.target, error = %e, "fleet state degraded: Redis is unreachable; serving on this replica's view and recording transitions locally until it returns");
            s.degraded_since = Some(now_ms());
        }
        s.connected = false;
        s.last_error = Some(e.to_string());
    }

    pub(super) fn mark_ok(&self) {
        let mut s = lock(&self.status);
        if let Some(since) = s.degraded_since.take() {
            tracing::info!(redis = %self.target, degraded_ms = now_ms().saturating_sub(since), "fleet state restored: Redis answers again");
        }
        s.connected = true;
        s.loaded = true;
        s.last_error = None;
    }

    /// Loads the whole fleet state: the log position first, so the follower replays
    /// everything written after it (versions make the overlap harmless).
    pub(super) async fn load(&self) -> Result<Loaded, FleetError> {
        let mut conn = self.conn.clone();
        let last: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(&self.keys.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|s| self.err(s))?;
        let (versions, states, deny, epoch): FullState = redis::pipe()
            .cmd("HGETALL")
            .arg(&self.keys.ver)
            .cmd("HGETALL")
            .arg(&self.keys.health)
            .cmd("HGETALL")
            .arg(&self.keys.deny)
            .cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(&mut conn)
            .await
            .map_err(|s| self.err(s))?;
        let epoch = match epoch {
            Some(e) => e,
            None => {
                let fresh = format!("{}:{}", self.cfg.replica, now_ms());
                let set: Option<String> = redis::cmd("SET")
                    .arg(&self.keys.epoch)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await
                    .map_err(|s| self.err(s))?;
                if set.is_some() {
                    fresh
                } else {
                    redis::cmd("GET")
                        .arg(&self.keys.epoch)
                        .query_async::<Option<String>>(&mut conn)
                        .await
                        .map_err(|s| self.err(s))?
                        .unwrap_or(fresh)
                }
            }
        };
        *lock(&self.epoch) = Some(epoch);
        let mut loaded = Loaded::default();
        let mut known = lock(&self.known);
        for (scope, v) in &versions {
            let (health, since) = states
                .get(scope)
                .and_then(|s| decode(s))
                .unwrap_or((Health::Healthy, Timestamp(0)));
            if let Some(key) = ScopeKey::parse(scope) {
                if health != Health::Healthy {
                    loaded.records.push((key.clone(), health.clone(), since));
                }
            }
            let newer = known.get(scope).is_none_or(|(kv, _)| kv < v);
            if newer {
                known.insert(scope.clone(), (*v, health));
            }
        }
        drop(known);
        for (fp, json) in deny {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            let cred = v["credential"].as_str().unwrap_or("?").to_owned();
            let reason = v["reason"].as_str().unwrap_or("revoked").to_owned();
            loaded.denylist.push((fp, cred, reason));
        }
        *lock(&self.last_id) = last
            .first()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        Ok(loaded)
    }

    /// Applies a state read from Redis to the known map and the engine, if newer.
    pub(super) fn apply(&self, scope: &str, version: u64, state: &str, from_me: bool, reset: bool) {
        let Some((health, since)) = decode(state) else {
            return;
        };
        let mut known = lock(&self.known);
        if known.get(scope).is_some_and(|(v, _)| *v >= version) {
            return;
        }
        known.insert(scope.to_owned(), (version, health.clone()));
        if from_me {
            return;
        }
        if let (Some(engine), Some(key)) = (self.engine.get(), ScopeKey::parse(scope)) {
            let since = if since.0 == 0 { engine.now() } else { since };
            engine.apply_remote(&key, health, since, reset);
        }
    }

    /// Writes one local transition, merging with a newer fleet state when there is one.
    pub(super) async fn write(&self, t: &Transition) -> Result<(), redis::RedisError> {
        let scope = t.scope.to_key();
        let force = t.actor == Actor::Operator;
        for _ in 0..16 {
            let (version, current) = lock(&self.known)
                .get(&scope)
                .cloned()
                .unwrap_or((0, Health::Healthy));
            let proposal = if force || same_state(&t.from, &current) {
                Some(t.to.clone())
            } else {
                merge(t, &current)
            };
            let Some(to) = proposal else {
                return self.absorbed(t, &scope, version).await;
            };
            let state = encode(&to, t.at);
            let (deny_op, deny_fp, deny_json) = deny_change(t, &to);
            let mut inv = self.cas.prepare_invoke();
            inv.key(&self.keys.ver)
                .key(&self.keys.health)
                .key(&self.keys.log)
                .key(&self.keys.deny)
                .arg(&scope)
                .arg(version)
                .arg(&state)
                .arg(if force { "1" } else { "0" })
                .arg(deny_op)
                .arg(deny_fp)
                .arg(deny_json)
                .arg(LOG_MAX);
            for (k, v) in self.entry_fields(t, "transition") {
                inv.arg(k).arg(v);
            }
            let mut conn = self.conn.clone();
            let r: redis::Value = inv.invoke_async(&mut conn).await?;
            match parse_cas(&r) {
                Some(CasReply::Applied(v)) => {
                    let mut known = lock(&self.known);
                    if known.get(&scope).is_none_or(|(kv, _)| *kv < v) {
                        known.insert(scope.clone(), (v, to.clone()));
                    }
                    drop(known);
                    if to != t.to {
                        // The merge changed what this replica had (a longer cooldown).
                        if let Some(engine) = self.engine.get() {
                            engine.apply_remote(&t.scope, to, t.at, false);
                        }
                    }
                    return Ok(());
                }
                Some(CasReply::Conflict(v, state)) => {
                    self.apply(&scope, v, &state, false, false);
                }
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "unexpected reply from the transition script",
                    )))
                }
            }
        }
        let version = lock(&self.known).get(&scope).map_or(0, |(v, _)| *v);
        self.absorbed(t, &scope, version).await
    }

    /// Logs a transition the fleet had already moved past (nothing is dropped silently).
    pub(super) async fn absorbed(
        &self,
        t: &Transition,
        scope: &str,
        version: u64,
    ) -> Result<(), redis::RedisError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.log)
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_MAX)
            .arg("*")
            .arg("scope")
            .arg(scope)
            .arg("v")
            .arg(version)
            .arg("state")
            .arg(encode(&t.to, t.at));
        for (k, v) in self.entry_fields(t, "absorbed") {
            cmd.arg(k).arg(v);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<String>(&mut conn).await.map(|_| ())
    }

    fn entry_fields(&self, t: &Transition, kind: &str) -> Vec<(&'static str, String)> {
        vec![
            ("kind", kind.to_owned()),
            ("from", serde_json::to_string(&t.from).unwrap_or_default()),
            ("why", t.why.clone()),
            ("actor", actor_name(t.actor).to_owned()),
            ("replica", self.cfg.replica.clone()),
            ("at", t.at.0.to_string()),
            ("seq", t.seq.to_string()),
            (
                "reset",
                if t.actor == Actor::Operator && t.to == Health::Healthy {
                    "1".into()
                } else {
                    "0".into()
                },
            ),
        ]
    }

    /// After a reconnect: puts back every state this replica knows at a newer version
    /// than Redis holds (all of them, when Redis restarted without its data). Versions
    /// only rise, so replicas re-seeding at once converge on the newest each knew.
    /// Returns whether anything was put back.
    pub(super) async fn reseed(&self) -> Result<bool, FleetError> {
        let mut conn = self.conn.clone();
        let (versions, epoch): (HashMap<String, u64>, Option<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(&self.keys.ver)
            .cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(&mut conn)
            .await
            .map_err(|s| self.err(s))?;
        let known = lock(&self.known).clone();
        let behind: Vec<(&String, &(u64, Health))> = known
            .iter()
            .filter(|(scope, (v, _))| versions.get(*scope).is_none_or(|rv| rv < v))
            .collect();
        let lost = epoch.is_none();
        if lost {
            let mine = lock(&self.epoch)
                .clone()
                .unwrap_or_else(|| now_ms().to_string());
            let _: Option<String> = redis::cmd("SET")
                .arg(&self.keys.epoch)
                .arg(mine)
                .arg("NX")
                .query_async(&mut conn)
                .await
                .map_err(|s| self.err(s))?;
            // The log restarted with the data: follow the new one from its start.
            *lock(&self.last_id) = "0-0".into();
        }
        if behind.is_empty() {
            return Ok(lost);
        }
        // One script call per scope (invoke_async loads the script into a Redis that
        // restarted without it).
        for (scope, (v, health)) in &behind {
            let _: i64 = self
                .raise
                .key(&self.keys.ver)
                .key(&self.keys.health)
                .arg(scope.as_str())
                .arg(*v)
                .arg(encode(health, Timestamp(now_ms())))
                .invoke_async(&mut conn)
                .await
                .map_err(|s| self.err(s))?;
        }
        lock(&self.status).reseeds += 1;
        tracing::warn!(redis = %self.target, scopes = behind.len(), "Redis held older fleet state than this replica (restarted without persistence?): put back {} scope(s); enable appendonly in redis.conf", behind.len());
        Ok(true)
    }
}
