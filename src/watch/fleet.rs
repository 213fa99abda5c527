//! One poller per watched resource across the fleet, when the replicas share Redis: at each
//! turn a poller either holds its resource's lease and polls (publishing what it saw for the
//! other replicas), or follows the holder by reading its latest observation. Without Redis, or
//! while Redis is down, every turn polls, as a lone gateway does; the streams never notice the
//! switch.
//!
//! Per resource name `n` (`cash-in:<id>` or `customer:<id>`), under one hash tag:
//! - `oms-gateway:watch:{n}:lease` = the holding poller's token, taken with `SET NX PX` and
//!   renewed at every turn of its poll loop; a holder that dies or stops watching loses it
//!   within the lease TTL, and the next replica's poller to look takes it;
//! - `oms-gateway:watch:{n}:obs` = the holder's latest observation (see `crate::outcome`: the
//!   cash-ins seen, or OMS's 404), rewritten at every poll with a TTL of a few leases, so a late
//!   joiner reads the current state at once;
//! - channel `oms-gateway:watch:<n>`, published when the observation changes.
//!
//! Followers never poll OMS: they read the observation when woken or once per poll interval.

use super::budget::FleetBudget;
use super::{HubInner, Observation, WatchKey, diff, observe};
use crate::error::GatewayError;
use crate::outcome;
use crate::proto::v1 as pb;
use crate::redis::{PREFIX, SharedState};
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};

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
pub(super) struct FleetWatch {
    state: SharedState,
    budget: FleetBudget,
}

/// Where one watched resource lives in Redis.
pub(super) struct Names {
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

/// A poller's standing in the fleet.
pub(super) struct Follower {
    names: Names,
    token: Option<String>,
    waker: Option<Arc<Notify>>,
    stopped: bool,
}

/// Waits for a permit of the fleet's poll budget, or of this replica's when Redis is down.
pub(super) async fn acquire(hub: &HubInner) {
    if let Some(fleet) = &hub.fleet
        && fleet.acquire().await.is_some()
    {
        return;
    }
    hub.budget.acquire().await;
}

// === impl Follower ===

impl Follower {
    pub(super) fn new(key: &WatchKey) -> Self {
        let name = match key {
            WatchKey::CashIn(id) => format!("cash-in:{id}"),
            WatchKey::Customer(id) => format!("customer:{id}"),
        };
        Self {
            names: Names::new(&name),
            token: None,
            waker: None,
            stopped: false,
        }
    }

    /// Whether this turn follows another replica's poller (and took what it published); false:
    /// this replica polls now (it holds the lease, or there is no fleet, or Redis is down).
    pub(super) async fn follows(
        &mut self,
        hub: &HubInner,
        key: &WatchKey,
        sender: &watch::Sender<Observation>,
    ) -> bool {
        let Some(fleet) = &hub.fleet else {
            return false;
        };
        self.waker.get_or_insert_with(|| fleet.waker(&self.names));
        let token = self.token.get_or_insert_with(|| fleet.state().token());
        match fleet.hold(&self.names, token, hub.interval()).await {
            Some(true) => return false,
            Some(false) => {}
            None => {
                fleet.state().fell_back("watch");
                return false;
            }
        }
        match fleet.latest(&self.names).await {
            None => false,
            Some(None) => true,
            Some(Some(Ok(items))) => {
                self.stopped = matches!(key, WatchKey::CashIn(_))
                    && items.first().is_some_and(|c| diff::is_terminal(c.status));
                observe(sender, key, items);
                true
            }
            Some(Some(Err(err))) => {
                sender.send_replace(Observation::Ended(err));
                self.stopped = true;
                true
            }
        }
    }

    /// Until the resource's observation is published anew in Redis (never without a fleet).
    pub(super) async fn published(&self) {
        match &self.waker {
            Some(waker) => waker.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the holder published a final state (terminal, or OMS's 404): stop following.
    pub(super) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Until the holder publishes a change, this replica publishes a state (`wake`), or `wait`.
    pub(super) async fn wait(&self, wake: &Notify, wait: Duration) {
        let published = async {
            match &self.waker {
                Some(waker) => waker.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            () = published => {}
        }
    }

    /// Publishes what this replica's poll saw, for the followers: the cash-ins, or OMS's 404
    /// (other failures stay here: this poller backs off, and followers wait or take over).
    pub(super) async fn publish(
        &self,
        hub: &HubInner,
        sender: &watch::Sender<Observation>,
        result: &Result<Vec<pb::CashIn>, GatewayError>,
    ) {
        let Some(fleet) = &hub.fleet else { return };
        let changed = match (result, &*sender.borrow()) {
            (Ok(items), Observation::Seen { items: old, .. }) => super::differs(old, items),
            (Ok(_), _) => true,
            (Err(err), _) if err.is_upstream_not_found() => true,
            (Err(_), _) => return,
        };
        fleet
            .publish(&self.names, result, changed, hub.interval())
            .await;
    }
}

/// Shares the state a webhook's re-read found with the other replicas' streams of that cash-in
/// (their followers read it, its lease holder polls at once).
pub(super) async fn hinted(hub: &HubInner, cash_in: pb::CashIn) {
    let Some(fleet) = &hub.fleet else { return };
    let names = Names::new(&format!("cash-in:{}", cash_in.id));
    fleet
        .publish(&names, &Ok(vec![cash_in]), true, hub.interval())
        .await;
}
