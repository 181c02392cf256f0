//! The fleet's data in Redis: its keys, the Lua compare-and-set scripts and their replies,
//! and a scope's state as stored.

use std::collections::HashMap;
use std::time::Duration;

use keyward_core::health::{Health, Timestamp};

/// The fleet's Redis keys.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) ver: String,
    pub(super) health: String,
    pub(super) log: String,
    pub(super) deny: String,
    pub(super) epoch: String,
    pub(super) lease: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            ver: format!("{prefix}:ver"),
            health: format!("{prefix}:health"),
            log: format!("{prefix}:log"),
            deny: format!("{prefix}:deny"),
            epoch: format!("{prefix}:epoch"),
            lease: format!("{prefix}:lease:"),
        }
    }
}

/// A Stream entry as read: its id and its flat field/value list.
type LogEntry = (String, Vec<String>);
/// XREAD's reply: per stream, its entries.
pub(super) type XreadReply = Vec<(String, Vec<LogEntry>)>;
/// Versions, states and the denylist by key, and the epoch.
pub(super) type FullState = (
    HashMap<String, u64>,
    HashMap<String, String>,
    HashMap<String, String>,
    Option<String>,
);

/// How many log entries the Stream keeps (approximately).
pub(super) const LOG_MAX: usize = 100_000;
/// How long the follower blocks on the Stream per read.
pub(super) const FOLLOW_BLOCK: Duration = Duration::from_secs(2);

/// Compare-and-set of one scope's state. KEYS: ver, health, log, deny. ARGV: scope,
/// expected version, state JSON ("" when healthy), force ("1": an operator's action),
/// denylist op ("add" | "del" | ""), fingerprint, denylist JSON, log max length, then
/// the log entry's field/value pairs.
/// Returns {1, new version, entry id} or {0, current version, current state JSON}.
pub(super) const CAS: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if ARGV[4] ~= '1' and cur ~= tonumber(ARGV[2]) then
  return {0, cur, redis.call('HGET', KEYS[2], ARGV[1]) or ''}
end
local v = cur + 1
redis.call('HSET', KEYS[1], ARGV[1], v)
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
if ARGV[5] == 'add' then
  redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
elseif ARGV[5] == 'del' then
  redis.call('HDEL', KEYS[4], ARGV[6])
end
local entry = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'scope', ARGV[1], 'v', tostring(v), 'state', ARGV[3]}
for i = 9, #ARGV do entry[#entry + 1] = ARGV[i] end
local id = redis.call(unpack(entry))
return {1, v, id}
"#;

/// Releases a lease only if this holder still has it. KEYS: lease. ARGV: token.
pub(super) const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Puts a state back at a version only if Redis holds an older one. KEYS: ver, health.
/// ARGV: scope, version, state JSON ("" when healthy).
pub(super) const RAISE: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
return 1
"#;

/// A scope's state as stored: its health and since when.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(rename = "h")]
    health: Health,
    since: u64,
}

pub(super) fn encode(health: &Health, since: Timestamp) -> String {
    if *health == Health::Healthy {
        return String::new();
    }
    serde_json::to_string(&Stored {
        health: health.clone(),
        since: since.0,
    })
    .unwrap_or_default()
}

pub(super) fn decode(s: &str) -> Option<(Health, Timestamp)> {
    if s.is_empty() {
        return Some((Health::Healthy, Timestamp(0)));
    }
    serde_json::from_str::<Stored>(s)
        .ok()
        .map(|st| (st.health, Timestamp(st.since)))
}

pub(super) enum CasReply {
    Applied(u64),
    Conflict(u64, String),
}

pub(super) fn parse_cas(v: &redis::Value) -> Option<CasReply> {
    let redis::Value::Array(items) = v else {
        return None;
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match (items.first().and_then(int), items.get(1).and_then(int)) {
        (Some(1), Some(v)) => Some(CasReply::Applied(v)),
        (Some(0), Some(v)) => Some(CasReply::Conflict(
            v,
            items.get(2).and_then(text).unwrap_or_default(),
        )),
        _ => None,
    }
}
