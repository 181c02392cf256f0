//! Following the fleet log: its entries as read, the follower that applies other
//! replicas' transitions, and the resync after a reconnect.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::health::Timestamp;

use crate::sqlite::TransitionRow;

use super::scripts::{decode, XreadReply, FOLLOW_BLOCK};
use super::{lock, FleetError, Shared};

/// One entry of the fleet log.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) scope: String,
    pub(super) version: u64,
    pub(super) state: String,
    pub(super) kind: String,
    pub(super) from: String,
    pub(super) why: String,
    pub(super) actor: String,
    pub(super) replica: String,
    pub(super) at: u64,
    pub(super) seq: u64,
    /// An operator's reset: the credential's revoked fingerprint leaves the denylist.
    pub(super) reset: bool,
}

impl Entry {
    pub(super) fn parse(fields: &[String]) -> Option<Entry> {
        let mut m: HashMap<&str, &str> = HashMap::new();
        for pair in fields.chunks(2) {
            if let [k, v] = pair {
                m.insert(k.as_str(), v.as_str());
            }
        }
        let get = |k: &str| m.get(k).map(|s| (*s).to_owned()).unwrap_or_default();
        Some(Entry {
            reset: m.get("reset") == Some(&"1"),
            scope: m.get("scope")?.to_string(),
            version: m.get("v")?.parse().ok()?,
            state: get("state"),
            kind: get("kind"),
            from: get("from"),
            why: get("why"),
            actor: get("actor"),
            replica: get("replica"),
            at: get("at").parse().unwrap_or(0),
            seq: get("seq").parse().unwrap_or(0),
        })
    }

    pub(super) fn row(&self) -> TransitionRow {
        let to = decode(&self.state).map_or_else(
            || "?".to_owned(),
            |(h, _)| serde_json::to_string(&h).unwrap_or_default(),
        );
        let why = if self.kind == "absorbed" {
            format!("(absorbed: the fleet had moved on) {}", self.why)
        } else {
            self.why.clone()
        };
        TransitionRow {
            seq: self.seq,
            at: Timestamp(self.at),
            scope: self.scope.clone(),
            from: self.from.clone(),
            to,
            why,
            actor: self.actor.clone(),
            replica: Some(self.replica.clone()),
        }
    }
}

/// Follows the fleet log and applies other replicas' transitions; on a reconnect,
/// re-seeds a Redis that lost the data, then resumes from the last applied id.
pub(super) async fn follower(shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut need_check = false;
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(shared.cfg.timeout))
                    .set_response_timeout(Some(FOLLOW_BLOCK + shared.cfg.timeout));
                match shared
                    .client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                {
                    Ok(c) => {
                        if need_check || !lock(&shared.status).loaded {
                            if let Err(e) = resync(&shared).await {
                                shared.mark_degraded(&e);
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(2));
                                continue;
                            }
                            need_check = false;
                        }
                        shared.mark_ok();
                        delay = Duration::from_millis(100);
                        conn.insert(c)
                    }
                    Err(e) => {
                        shared.mark_degraded(&e);
                        need_check = true;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
        };
        let last = lock(&shared.last_id).clone();
        let r: redis::RedisResult<Option<XreadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(u64::try_from(FOLLOW_BLOCK.as_millis()).unwrap_or(2000))
            .arg("STREAMS")
            .arg(&shared.keys.log)
            .arg(&last)
            .query_async(c)
            .await;
        match r {
            Ok(reply) => {
                for (_, entries) in reply.unwrap_or_default() {
                    for (id, fields) in entries {
                        if let Some(e) = Entry::parse(&fields) {
                            if e.kind != "absorbed" {
                                let from_me = e.replica == shared.cfg.replica;
                                shared.apply(&e.scope, e.version, &e.state, from_me, e.reset);
                            }
                        }
                        *lock(&shared.last_id) = id;
                    }
                }
            }
            Err(e) => {
                shared.mark_degraded(&e);
                conn = None;
                need_check = true;
            }
        }
    }
}

/// After a reconnect (or a start without Redis): re-seed a Redis that lost the data,
/// then load the fleet state (the follower resumes from the loaded position).
async fn resync(shared: &Arc<Shared>) -> Result<(), FleetError> {
    if lock(&shared.status).loaded {
        // Keep following from the last applied id (the entries written while this
        // replica was away are replayed in order), after putting back what Redis lost.
        shared.reseed().await?;
        return Ok(());
    }
    let loaded = shared.load().await?;
    if let Some(engine) = shared.engine.get() {
        engine.restore(loaded.records, loaded.denylist);
    }
    Ok(())
}
