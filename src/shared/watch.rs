//! One poller per watched resource across the fleet: a lease per resource, and the latest
//! observation kept in Redis for every replica's streams.
//!
//! Per resource name `n` (`cash-in:<id>` or `customer:<id>`), under one hash tag:
//! - `oms-gateway:watch:{n}:lease` = the holding poller's token, taken with `SET NX PX` and
//!   renewed at every turn of its poll loop; a holder that dies or stops watching loses it
//!   within the lease TTL, and the next replica's poller to look takes it;
//! - `oms-gateway:watch:{n}:obs` = the holder's latest observation (see `outcome.rs`: the
//!   cash-ins seen, or OMS's 404), rewritten at every poll with a TTL of a few leases, so a late
//!   joiner reads the current state at once;
//! - channel `oms-gateway:watch:<n>`, published when the observation changes.
//!
//! Followers never poll OMS: they read the observation when woken or once per poll interval.

use super::budget::FleetBudget;
use super::{PREFIX, SharedState, outcome};
use crate::error::GatewayError;
use crate::proto::v1 as pb;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Takes the lease if free, renews it if ours. KEYS: lease; ARGV: token, ms. 1: held by us.
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1",
    )
});

/// Stores the observation; publishes a wake-up if it changed. KEYS: obs; ARGV: bytes, ms,
/// channel, changed (1/0).
static OBSERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] == '1' then redis.call('PUBLISH', ARGV[3], 'changed') end
return 1",
    )
});

/// The fleet's side of the watch hub.
#[derive(Clone, Debug)]
pub struct FleetWatch {
    state: SharedState,
    budget: FleetBudget,
}

/// Where one watched resource lives in Redis.
pub struct Names {
    lease: String,
    obs: String,
    channel: String,
}

impl Names {
    /// The names of the resource called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            lease: format!("{PREFIX}watch:{{{name}}}:lease"),
            obs: format!("{PREFIX}watch:{{{name}}}:obs"),
            channel: format!("{PREFIX}watch:{name}"),
        }
    }
}

// === impl FleetWatch ===

impl FleetWatch {
    /// Pollers sharing `state`, polling at most `per_second` times a second fleet-wide.
    pub fn new(state: SharedState, per_second: f64) -> Self {
        Self {
            budget: FleetBudget::new(state.clone(), per_second),
            state,
        }
    }

    /// The shared state.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// How long a lease lasts for a poller polling every `interval`: at least two intervals,
    /// so a live holder renews it in time.
    fn lease_ms(&self, interval: Duration) -> u64 {
        self.state
            .lease_ttl()
            .max(interval * 2 + Duration::from_millis(100))
            .as_millis() as u64
    }

    /// Whether the poller `token` holds (now) the lease on `names`; `None`: Redis is down.
    pub async fn hold(&self, names: &Names, token: &str, interval: Duration) -> Option<bool> {
        let mut hold = HOLD.prepare_invoke();
        hold.key(&names.lease)
            .arg(token)
            .arg(self.lease_ms(interval));
        self.state.invoke::<i64>(&hold).await.map(|held| held == 1)
    }

    /// Waits for a fleet poll permit; `None`: Redis is down.
    pub async fn acquire(&self) -> Option<()> {
        self.budget.acquire().await
    }

    /// Stores what the holder saw (cash-ins, or a final error such as OMS's 404).
    pub async fn publish(
        &self,
        names: &Names,
        seen: &Result<Vec<pb::CashIn>, GatewayError>,
        changed: bool,
        interval: Duration,
    ) {
        let Some(bytes) = outcome::encode(seen) else {
            return;
        };
        let mut observe = OBSERVE.prepare_invoke();
        observe
            .key(&names.obs)
            .arg(bytes)
            .arg(self.lease_ms(interval) * 3)
            .arg(&names.channel)
            .arg(if changed { "1" } else { "0" });
        let _ = self.state.invoke::<i64>(&observe).await;
    }

    /// The holder's latest observation: `None` when Redis is down, `Some(None)` before any.
    pub async fn latest(
        &self,
        names: &Names,
    ) -> Option<Option<Result<Vec<pb::CashIn>, GatewayError>>> {
        let bytes: Option<Vec<u8>> = self.state.query(redis::cmd("GET").arg(&names.obs)).await?;
        Some(bytes.and_then(|bytes| outcome::decode(&bytes)))
    }

    /// Notified when the observation of `names` changes.
    pub fn waker(&self, names: &Names) -> Arc<Notify> {
        self.state.waker(&names.channel)
    }
}

/// The watch hub of `config`, polling through `oms`, sharing its pollers with the fleet when
/// the replicas share Redis.
pub fn hub(
    oms: &crate::oms::Oms,
    config: &crate::config::GatewaySettings,
    shared: &Option<SharedState>,
) -> crate::watch::WatchHub {
    let fleet = shared
        .clone()
        .map(|state| FleetWatch::new(state, config.watch.max_polls_per_second));
    crate::watch::WatchHub::new(
        oms.clone(),
        config.watch.clone(),
        config.upstream.request_timeout,
    )
    .with_fleet(fleet)
}
