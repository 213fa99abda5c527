//! Quotas shared by the fleet through Redis (`--redis-url`), so a caller spreading its calls
//! over N replicas gets its quota once, not N times. Per subject (a quota and one caller), four
//! keys in one hash slot, named by a digest of the quota's name and the identity (never the
//! identity itself), each with a TTL: `oms-gateway:quota:{digest}:rate` (a token bucket, like the
//! fleet's poll budget: a Lua script on Redis's clock; it expires once it would be full again),
//! and `:calls`, `:streams`, `:watched`, each a sorted set of leases whose score is when the lease
//! expires. A lease is `unit:replica`: a call's or a stream's unit is unique; a watched
//! resource's unit is the resource's digest, so the replicas watching one resource for the same
//! caller count it once. Admission removes expired leases and counts distinct units; this
//! replica renews its leases every third of `--redis-lease-ttl` (the first renewal after Redis
//! answers again adds those it lost, so what was admitted while Redis was down is counted from
//! then on; other renewals only extend what Redis holds, so none brings back a lease a release
//! removed), and removes a lease
//! when the call or stream ends (or once Redis answers again, or by its expiry if the replica
//! died). Redis's answers are numbers bounded before use; every command is bounded by
//! `--redis-timeout`, and `None` (Redis down) sends the caller to this replica's own count.

use crate::redis::{BUCKET_REFILL_LUA, PREFIX, SharedState};
use redis::Script;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

/// KEYS: bucket; ARGV: rate per second, burst, tokens, `1` to take them whatever is left (down
/// to minus one burst: retries already spent). Returns 0 when taken, else the milliseconds
/// until there are enough.
static RATE: LazyLock<Script> = LazyLock::new(|| {
    let start = r"local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
";
    let rest = r"local wait = 0
if ARGV[4] == '1' then
  tokens = math.max(-burst, tokens - cost)
elseif tokens >= cost then
  tokens = tokens - cost
else
  wait = math.max(1, math.ceil((cost - tokens) * 1000 / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * burst * 1000 / rate) + 1000)
return wait";
    Script::new(&[start, BUCKET_REFILL_LUA, rest].concat())
});

/// KEYS: leases; ARGV: limit, lease, TTL in ms, `1` when units may repeat (distinct count).
/// Returns -1 when the lease is held (added, or its unit already counted), else how many units
/// are counted (the limit is reached).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[1])
local n = 0
local known = false
if ARGV[4] == '1' then
  local unit = string.match(ARGV[2], '^(.*):[^:]*$')
  local units = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local u = string.match(m, '^(.*):[^:]*$') or m
    if u == unit then known = true end
    if not units[u] then units[u] = true; n = n + 1 end
  end
else
  n = redis.call('ZCARD', KEYS[1])
end
if not known and n >= limit then return n end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return -1",
    )
});

/// KEYS: leases; ARGV: TTL in ms, `1` to add leases Redis does not hold (only just after Redis
/// answers again: otherwise a renewal racing a release could bring the lease back), then the
/// leases this replica holds there: each expires a TTL from now.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV do
  if ARGV[2] == '1' then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return 1",
    )
});

/// The longest wait a refusal names, whatever Redis answers.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The kinds of lease, each its own sorted set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Calls,
    Streams,
    Watched,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Streams => "streams",
            Self::Watched => "watched",
        }
    }
}

/// A lease this replica registered (renewed until [`Fleet::release`]).
#[derive(Debug)]
pub struct Lease {
    key: String,
    member: String,
}

/// What the fleet said of a lease.
#[derive(Debug)]
pub enum Answer {
    /// It fits (or nothing limits it): held, and renewed until released.
    Admitted(Lease),
    /// Redis did not answer: held all the same (Redis counts it once it answers again); this
    /// replica's own count decides.
    Unknown(Lease),
    /// The fleet counts the limit already; nothing is held.
    Refused,
}

/// The fleet's side of the quotas.
#[derive(Debug)]
pub struct Fleet {
    state: SharedState,
    /// Names this replica's leases.
    replica: String,
    /// Redis key → lease → holders here (a watched resource's lease has one per stream).
    live: Mutex<HashMap<String, HashMap<String, u32>>>,
    /// Whether a lease was taken without Redis's answer since the last renewal that added.
    unanswered: std::sync::atomic::AtomicBool,
    /// The renewing task, stopped with the fleet.
    renewer: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(task) = self
            .renewer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl Fleet {
    /// The fleet's quotas on `state`, with the task renewing this replica's leases (it stops
    /// when the returned `Arc` is dropped).
    pub fn start(state: SharedState) -> Arc<Self> {
        let fleet = Arc::new(Self {
            state,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            live: Mutex::default(),
            renewer: Mutex::default(),
            unanswered: Default::default(),
        });
        let task = tokio::spawn(renew_loop(Arc::downgrade(&fleet))).abort_handle();
        *fleet.renewer.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        fleet
    }

    fn key(subject: &str, kind: &str) -> String {
        format!("{PREFIX}quota:{{{subject}}}:{kind}")
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.state.lease_ttl().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes `cost` tokens from the subject's bucket (`force`: whatever is left, down to minus
    /// one burst). `None`: Redis down; `Some(Err(wait))`: not enough tokens.
    pub async fn take(
        &self,
        subject: &str,
        rate: f64,
        cost: u32,
        force: bool,
    ) -> Option<Result<(), Duration>> {
        let burst = super::local::burst(rate);
        let mut invocation = RATE.prepare_invoke();
        invocation
            .key(Self::key(subject, "rate"))
            .arg(rate)
            .arg(burst)
            .arg(cost)
            .arg(u8::from(force));
        let Some(wait) = self.state.invoke::<i64>(&invocation).await else {
            self.state.fell_back("quota");
            return None;
        };
        Some(match u64::try_from(wait) {
            Ok(0) => Ok(()),
            Ok(ms) => Err(Duration::from_millis(ms).min(MAX_RETRY)),
            Err(_) => Ok(()),
        })
    }

    /// Registers a lease of `kind` for `unit` (renewed from now on) and, when `limit` is given,
    /// asks Redis whether it fits the fleet's count.
    pub async fn acquire(
        &self,
        subject: &str,
        kind: Kind,
        unit: &str,
        limit: Option<u32>,
    ) -> Answer {
        let lease = self.register(subject, kind, unit);
        let Some(limit) = limit else {
            return Answer::Admitted(lease);
        };
        let mut invocation = ACQUIRE.prepare_invoke();
        invocation
            .key(&lease.key)
            .arg(limit)
            .arg(&lease.member)
            .arg(self.ttl_ms())
            .arg(u8::from(kind == Kind::Watched));
        let answer: Option<i64> = self.state.invoke(&invocation).await;
        match answer {
            None => {
                self.state.fell_back("quota");
                self.unanswered.store(true, Ordering::Relaxed);
                Answer::Unknown(lease)
            }
            Some(-1) => Answer::Admitted(lease),
            Some(_) => {
                self.release(lease);
                Answer::Refused
            }
        }
    }

    fn register(&self, subject: &str, kind: Kind, unit: &str) -> Lease {
        let lease = Lease {
            key: Self::key(subject, kind.suffix()),
            member: format!("{unit}:{}", self.replica),
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        *live
            .entry(lease.key.clone())
            .or_default()
            .entry(lease.member.clone())
            .or_default() += 1;
        lease
    }

    /// Gives `lease` up: once its last holder here lets go, it is removed from Redis (now, or
    /// once Redis answers again; its expiry bounds the rest).
    pub fn release(&self, lease: Lease) {
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let Some(members) = live.get_mut(&lease.key) else {
                return;
            };
            match members.get_mut(&lease.member) {
                Some(holders) if *holders > 1 => {
                    *holders -= 1;
                    return;
                }
                Some(_) => {
                    members.remove(&lease.member);
                }
                None => return,
            }
            if members.is_empty() {
                live.remove(&lease.key);
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let state = self.state.clone();
        runtime.spawn(async move {
            let mut remove = redis::cmd("ZREM");
            remove.arg(&lease.key).arg(&lease.member);
            state.now_or_later(remove).await;
        });
    }
}

/// Renews this replica's leases every third of their TTL while the fleet lives; the first
/// renewal after Redis answers again adds what it does not hold (admitted while it was down).
async fn renew_loop(fleet: Weak<Fleet>) {
    let every = match fleet.upgrade() {
        Some(fleet) => (fleet.state.lease_ttl() / 3).max(Duration::from_millis(50)),
        None => return,
    };
    let mut was_up = true;
    loop {
        tokio::time::sleep(every).await;
        let Some(fleet) = fleet.upgrade() else { return };
        if !fleet.state.is_up() {
            was_up = false;
            continue;
        }
        let unanswered = fleet.unanswered.swap(false, Ordering::Relaxed);
        let add = !std::mem::replace(&mut was_up, true) || unanswered;
        let leases: Vec<(String, Vec<String>)> = fleet
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, members)| (key.clone(), members.keys().cloned().collect()))
            .collect();
        for (key, members) in leases {
            let mut invocation = RENEW.prepare_invoke();
            invocation.key(key).arg(fleet.ttl_ms()).arg(u8::from(add));
            for member in members {
                invocation.arg(member);
            }
            if fleet.state.invoke::<i64>(&invocation).await.is_none() {
                was_up = false;
                break;
            }
        }
    }
}
