//! The hub's side of sharing pollers across the fleet (`shared::watch`): at each turn a poller
//! either holds its resource's lease and polls (publishing what it saw for the other replicas),
//! or follows the holder by reading its latest observation. Without Redis, or while Redis is
//! down, every turn polls, as a lone gateway does; the streams never notice the switch.

use super::{HubInner, Observation, WatchKey, diff, observe};
use crate::error::GatewayError;
use crate::proto::v1 as pb;
use crate::shared::watch::Names;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

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
