//! The fleet-wide poll budget: one token bucket in Redis (`oms-gateway:watch:budget`, a hash of
//! tokens and the time they were counted), so `--watch-max-polls-per-second` caps the polls of
//! the whole fleet, not of each replica.
//!
//! A Lua script refills the bucket from Redis's own clock (no replica's clock matters) and
//! reserves one token: the answer is how long the caller must wait for it (0: at once). Tokens
//! may go negative, so reservations queue in the order they reach Redis and the rate holds
//! exactly however many replicas ask. Redis down: `None`, and the caller takes a permit from
//! its replica's own budget instead (then each replica polls at up to the full rate).

use super::{PREFIX, SharedState};
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: bucket; ARGV: rate per second, burst. Returns the wait in milliseconds.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)",
    )
});

/// The fleet's poll budget.
#[derive(Clone, Debug)]
pub struct FleetBudget {
    state: SharedState,
    per_second: f64,
    burst: f64,
    key: String,
}

// === impl FleetBudget ===

impl FleetBudget {
    /// A budget of `per_second` polls for the whole fleet, with the local budget's burst.
    pub fn new(state: SharedState, per_second: f64) -> Self {
        let per_second = per_second.max(0.1);
        Self {
            state,
            per_second,
            burst: (per_second / 10.0).ceil().max(1.0),
            key: format!("{PREFIX}watch:budget"),
        }
    }

    /// Waits for the right to make one upstream poll; `None` when Redis is down (nothing taken).
    pub async fn acquire(&self) -> Option<()> {
        let mut reserve = RESERVE.prepare_invoke();
        reserve.key(&self.key).arg(self.per_second).arg(self.burst);
        let wait_ms: u64 = self.state.invoke(&reserve).await?;
        if wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        Some(())
    }
}
