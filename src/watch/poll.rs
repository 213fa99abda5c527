//! A poller's loop: one poll of its resource per interval (a cash-in by id, or a customer's
//! cash-ins, a few pages newest first), merged into its observation so nothing older replaces
//! anything newer; backing off while OMS fails and ending its streams (UNAVAILABLE) past the
//! unreachable limit, or at OMS's 404; stopping at a terminal state. With a fleet, each turn
//! first holds the resource's lease or follows its holder (`fleet.rs`).

use super::fair::Ticket;
use super::version::{self, Item};
use super::{
    HubInner, IDLE_CUSTOMER_MAX_INTERVAL, MAX_LIST_PAGES, Observation, WatchKey, delivery, diff,
    fleet,
};
use crate::error::GatewayError;
use crate::oms::CashInQuery;
use crate::proto::v1 as pb;
use std::sync::{Arc, Weak, atomic::Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One poll of `key`, whose first request's permit the caller has taken. Each request's time
/// limit starts when it is sent, after its permit: waiting for the poll budget is no upstream
/// time, so a long queue for permits never times a request out before it went out.
async fn fetch(
    hub: &HubInner,
    key: &WatchKey,
    ticket: &Ticket,
) -> Result<Vec<pb::CashIn>, GatewayError> {
    hub.polls.fetch_add(1, Ordering::Relaxed);
    match key {
        WatchKey::CashIn(id) => {
            let deadline = Instant::now() + hub.poll_timeout;
            Ok(vec![hub.oms.get_cash_in(id, deadline).await?])
        }
        WatchKey::Customer(customer) => {
            let mut items = Vec::new();
            let mut cursor = None;
            for page in 0..MAX_LIST_PAGES {
                if page > 0 {
                    fleet::acquire(hub, ticket).await;
                }
                let deadline = Instant::now() + hub.poll_timeout;
                let query = CashInQuery {
                    customer_id: customer.clone(),
                    limit: 100,
                    starting_after: cursor.take(),
                    ..Default::default()
                };
                // A page that repeats its cursor (OMS ignoring `startingAfter`) ends this poll's
                // paging with what it has: the watch reports what it read, not an outage.
                let page = match hub.oms.list_cash_ins(&query, deadline).await {
                    Err(GatewayError::UpstreamCursorRepeated { .. }) => break,
                    answer => answer?,
                };
                items.extend(page.cash_ins);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok(items)
        }
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// The poller task. Holds only a weak reference to the hub, so it never keeps itself alive.
/// At each turn it holds (or renews) its resource's lease, or follows the holder (with a fleet);
/// a holder or a lone poller polls when its interval is up, renewing its lease meanwhile.
pub(super) async fn poll_loop(
    hub: Weak<HubInner>,
    key: WatchKey,
    sender: watch::Sender<Observation>,
    mut follower: fleet::Follower,
    ticket: Arc<Ticket>,
) {
    let mut outage = Outage::default();
    let mut empty_polls = 0u32;
    let mut next_poll = Instant::now();
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let interval = strong.interval();
        if follower.follows(&strong, &key, &sender).await {
            // The holder's observation may predate a delivery learned since (kept apart).
            delivery::refresh(&strong, &sender).await;
            drop(strong);
            if follower.stopped() {
                await_delivery(&hub, &sender, &follower, &ticket).await;
                return;
            }
            follower.wait(jittered(interval)).await;
            // Should this replica take the lease over at its next turn, it polls at once.
            next_poll = Instant::now();
            continue;
        }
        if Instant::now() < next_poll {
            match follower.wait_to_poll(&strong, next_poll).await {
                fleet::Woken::Poll | fleet::Woken::Renew => {}
                fleet::Woken::Published => {
                    if follower.catch_up(&strong, &key, &sender).await.is_some() {
                        delivery::refresh(&strong, &sender).await;
                    }
                }
            }
            continue;
        }
        fleet::acquire(&strong, &ticket).await;
        // The poll starts when its first request may go out; what it sees is at least as new.
        let (started, listed) = (Instant::now(), version::now());
        let mut result = fetch(&strong, &key, &ticket).await;
        if let Ok(items) = &mut result {
            items
                .iter_mut()
                .for_each(|c| strong.deliveries.attach_local(c));
        }
        let polled: Result<Vec<Item>, GatewayError> =
            result.map(|items| items.into_iter().map(|c| (Arc::new(c), listed)).collect());
        let wait = match &polled {
            Ok(items) => {
                outage = Outage::default();
                // A customer with no cash-in at all (perhaps a made-up id) is polled ever less
                // often, so such ids cannot take the whole poll budget.
                empty_polls = if items.is_empty() {
                    empty_polls.saturating_add(1)
                } else {
                    0
                };
                observe(&sender, items.clone(), Some(listed));
                jittered(
                    interval
                        .saturating_mul(1 << empty_polls.min(8))
                        .min(IDLE_CUSTOMER_MAX_INTERVAL.max(interval)),
                )
            }
            Err(err) => {
                match outage.failed(err, started, interval, strong.config.unreachable_limit) {
                    Some(wait) => wait,
                    None => {
                        tracing::warn!(?key, error = %err, "upstream unreachable past the limit; ending watch streams");
                        let limit = strong.config.unreachable_limit.as_secs();
                        sender.send_replace(Observation::Ended(GatewayError::Unavailable(format!(
                        "OMS has been failing for over {limit}s while watching; reconnect to resume (last error: {err})"
                    ))));
                        follower.release(&strong).await;
                        return;
                    }
                }
            }
        };
        follower
            .publish(&strong, &key, &sender, polled.as_deref(), listed)
            .await;
        delivery::refresh(&strong, &sender).await;
        if matches!(&key, WatchKey::Customer(_)) {
            delivery::read_back_one(&strong, &sender, &ticket).await;
        }
        let terminal = matches!(&key, WatchKey::CashIn(_))
            && matches!(&*sender.borrow(), Observation::Seen { items, .. }
                if items.first().is_some_and(|c| diff::is_terminal(c.status)));
        if let Err(err) = polled
            && err.is_upstream_not_found()
        {
            sender.send_replace(Observation::Ended(err));
            follower.release(&strong).await;
            return;
        }
        if terminal {
            // Nothing changes after a terminal status: keep the last state, stop polling.
            follower.release(&strong).await;
            drop(strong);
            await_delivery(&hub, &sender, &follower, &ticket).await;
            return;
        }
        next_poll = Instant::now() + wait;
    }
}

/// After a terminal cash-in whose delivery is still to come, until the delivery is over or the
/// last stream goes: each turn (the poll interval, or the reconcile interval while webhooks
/// arrive; sooner when another replica wakes the cash-in's channel) reads the delivery other
/// replicas learned (with a fleet) and reads it back from OMS's transaction read when OMS
/// serves it (`delivery::read_back`). OMS's cash-in is not polled again (it carries no
/// delivery). This replica's own webhooks publish into the observation directly. When nothing
/// can bring a delivery (no webhooks, and OMS turned out not to serve the read), the streams
/// are woken to end at the cash-in's terminal state.
async fn await_delivery(
    hub: &Weak<HubInner>,
    sender: &watch::Sender<Observation>,
    follower: &fleet::Follower,
    ticket: &Ticket,
) {
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let awaiting = match &*sender.borrow() {
            Observation::Seen { items, .. } => {
                items.first().filter(|c| diff::awaits_delivery(c)).cloned()
            }
            _ => None,
        };
        let Some(cash_in) = awaiting else { return };
        if !strong.follows_deliveries() {
            sender.send_modify(|_| {});
            return;
        }
        delivery::refresh(&strong, sender).await;
        delivery::read_back(&strong, &cash_in, ticket).await;
        let interval = strong.interval();
        drop(strong);
        follower.wait(jittered(interval)).await;
    }
}

/// A poller's run of failed polls.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    failures: u32,
}

impl Outage {
    /// Counts a failed poll that started at `started`: the wait before the next one, or `None`
    /// when OMS has failed for longer than `limit`. The outage is counted from the start of the
    /// first failed poll that went out; a poll the circuit breaker refused never reached OMS, so
    /// it neither starts nor ends the outage.
    fn failed(
        &mut self,
        err: &GatewayError,
        started: Instant,
        interval: Duration,
        limit: Duration,
    ) -> Option<Duration> {
        if err.is_upstream_not_found() {
            return Some(Duration::ZERO);
        }
        if !err.is_upstream_unsent() {
            self.since.get_or_insert(started);
        }
        self.failures += 1;
        let since = self.since.unwrap_or(started);
        if self.since.is_some() && since.elapsed() >= limit {
            return None;
        }
        tracing::debug!(error = %err, failures = self.failures, "poll failed; backing off");
        // Back off, but poll again when the limit is reached: if that poll fails too, the
        // streams end then, not up to a backoff later.
        let until_limit = (since + limit).saturating_duration_since(Instant::now());
        Some(
            interval
                .saturating_mul(1 << self.failures.min(4))
                .min(Duration::from_secs(30))
                .min(until_limit.max(Duration::from_millis(10))),
        )
    }
}

/// Merges `items` into the latest observation (see [`version::merge`]; `listed`: they are a
/// complete listing sent then) and tells the streams if that changed what they report. Nothing
/// older ever replaces something newer, so a poll answered after a state published meanwhile
/// (RefreshCashIn, SandboxService, another replica's) cannot bring the older state, say a
/// revoked deposit code, back; an ended observation stays ended.
pub(super) fn observe(sender: &watch::Sender<Observation>, items: Vec<Item>, listed: Option<u64>) {
    sender.send_if_modified(|observation| {
        let (merged, changed) = match observation {
            Observation::Ended(_) => return false,
            Observation::Waiting => (version::merge(&[], items, listed), true),
            Observation::Seen {
                items: old,
                learned,
                ..
            } => {
                let old: Vec<Item> = old.iter().cloned().zip(learned.iter().copied()).collect();
                let merged = version::merge(&old, items, listed);
                let same = merged.len() == old.len()
                    && merged
                        .iter()
                        .zip(&old)
                        .all(|(a, b)| Arc::ptr_eq(&a.0, &b.0) && a.1 == b.1);
                if same {
                    return false;
                }
                let changed = differs(&old, &merged);
                (merged, changed)
            }
        };
        // A newer version that reports nothing new replaces the observation quietly: streams
        // are not woken, and it still stands against older states to come.
        *observation = Observation::seen(merged);
        changed
    });
}

/// Whether `new` says something `old` does not (another cash-in, or a change worth an event).
fn differs(old: &[Item], new: &[Item]) -> bool {
    old.len() != new.len()
        || old
            .iter()
            .zip(new)
            .any(|(a, b)| a.0.id != b.0.id || !diff::changed_fields(&a.0, &b.0).is_empty())
}
