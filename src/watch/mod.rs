//! The watch hub: turns polling of OMS into pushed events, with one poller per watched resource
//! however many streams watch it.
//!
//! A [`WatchKey`] names what is polled (one cash-in, or one customer's cash-ins). The hub keeps a
//! weak map from key to poller; [`WatchHub::subscribe`] joins the running poller or starts one,
//! and the poller stops when the last [`Subscription`] is dropped (or, for one cash-in, once it
//! is terminal). A poller publishes into a `tokio::sync::watch` channel, which holds only the
//! latest observation: a slow stream never blocks the poller or the other streams, may skip
//! intermediate states, and always finds the latest (so the terminal) one. Every upstream poll
//! takes a permit from the global [`budget::PollBudget`]. On upstream errors a poller backs off
//! and keeps its streams open; only after the upstream has failed for longer than the configured
//! limit does it end them (UNAVAILABLE). This module never parses JSON nor builds a request: it
//! calls the OMS operations layer (`oms.rs`). With `--redis-url`, one poller per resource polls
//! for the whole fleet and the others follow what it publishes (`fleet.rs`). The hub registers
//! its own metrics (`metrics.rs`).

pub mod budget;
pub mod diff;
mod fleet;
mod metrics;
mod push;
pub mod stream;
pub mod wire;

use crate::config::WatchSettings;
use crate::error::GatewayError;
use crate::oms::{CashInQuery, Oms};
use crate::proto::v1 as pb;
use budget::PollBudget;
use std::collections::HashMap;
use std::sync::{
    Arc, Mutex, Weak,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How many list pages a customer poller reads per poll (100 cash-ins each, newest first).
const MAX_LIST_PAGES: usize = 5;
/// The slowest cadence of a customer poller that keeps finding no cash-in at all (a customer id
/// that may well be made up): its interval doubles per empty poll up to this. A cash-in created,
/// refreshed or simulated through this gateway wakes it at once.
const IDLE_CUSTOMER_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// What a poller watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchKey {
    /// One cash-in by id.
    CashIn(String),
    /// One customer's cash-ins (the status filter is applied per stream, so every stream on the
    /// customer shares a poller and sees cash-ins leave its filter).
    Customer(String),
}

/// The latest thing a poller saw.
#[derive(Debug, Clone)]
pub enum Observation {
    /// No poll has finished yet.
    Waiting,
    /// The resource's state (one cash-in, or a customer's cash-ins newest first).
    Seen {
        /// The cash-ins; a stream remembers what it sent by keeping these `Arc`s.
        items: Arc<Vec<Arc<pb::CashIn>>>,
        /// When the gateway observed them.
        at: SystemTime,
        /// The events of this observation encoded so far, shared by its streams.
        events: Arc<wire::EventCache>,
    },
    /// The poller stopped for good; streams end with this error.
    Ended(GatewayError),
}

impl Observation {
    /// What a poll (or another call) just saw.
    fn seen(items: Vec<pb::CashIn>) -> Self {
        Observation::Seen {
            items: Arc::new(items.into_iter().map(Arc::new).collect()),
            at: SystemTime::now(),
            events: Arc::default(),
        }
    }
}

/// The hub. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WatchHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    oms: Oms,
    config: WatchSettings,
    /// Timeout of one poll request (the upstream's per-attempt timeout).
    poll_timeout: Duration,
    budget: PollBudget,
    /// The fleet's leases, observations and poll budget, when replicas share Redis.
    fleet: Option<fleet::FleetWatch>,
    pollers: Mutex<HashMap<WatchKey, Weak<Poller>>>,
    /// Set (under the `pollers` lock) when the gateway shuts down: no poller starts after the
    /// running ones were ended, so no stream can outlive the shutdown.
    closed: AtomicBool,
    streams: AtomicUsize,
    /// Cash-ins remembered by open streams (what each last told its caller), summed.
    tracked: AtomicUsize,
    /// Polls made since start (for the metrics).
    polls: AtomicU64,
    /// Webhook hints and the reconcile cadence (`push.rs`).
    push: push::Push,
}

/// A running poller; dropping the last reference stops it.
#[derive(Debug)]
struct Poller {
    key: WatchKey,
    sender: watch::Sender<Observation>,
    /// Makes the poll loop poll now instead of at its next turn.
    wake: Arc<tokio::sync::Notify>,
    task: AbortHandle,
    hub: Weak<HubInner>,
}

impl Poller {
    /// Whether the poller's latest observation already holds `cash_in` exactly as it is.
    fn has_seen(&self, cash_in: &pb::CashIn) -> bool {
        match &*self.sender.borrow() {
            Observation::Seen { items, .. } => items.iter().any(|seen| **seen == *cash_in),
            _ => false,
        }
    }

    /// Whether the poll loop ended with an error: its streams have been told to go, and a new
    /// subscriber must get a new poller rather than that error. The loop publishes `Ended` only
    /// as its last act, so this holds from that moment on, before its task has quite finished.
    /// (A loop that ended at a terminal state holds the final state, which is still true.)
    fn is_dead(&self) -> bool {
        matches!(*self.sender.borrow(), Observation::Ended(_))
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(hub) = self.hub.upgrade() {
            let mut pollers = hub.pollers.lock().unwrap_or_else(|e| e.into_inner());
            if pollers
                .get(&self.key)
                .is_some_and(|w| w.strong_count() == 0)
            {
                pollers.remove(&self.key);
            }
        }
        tracing::debug!(key = ?self.key, "poller stopped");
    }
}

/// One stream's share of a poller, and its slot under the stream cap.
#[derive(Debug)]
pub struct Subscription {
    /// Held only to keep the poller running: the last subscription dropped stops it.
    _poller: Arc<Poller>,
    receiver: watch::Receiver<Observation>,
    hub: Arc<HubInner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// The poller's channel.
    pub fn receiver(&mut self) -> &mut watch::Receiver<Observation> {
        &mut self.receiver
    }

    /// Tells the hub how many cash-ins this stream remembers now (was `before`).
    pub(crate) fn track(&self, before: usize, now: usize) {
        if now > before {
            self.hub.tracked.fetch_add(now - before, Ordering::Relaxed);
        } else if now < before {
            self.hub.tracked.fetch_sub(before - now, Ordering::Relaxed);
        }
    }
}

// === impl WatchHub ===

impl WatchHub {
    /// A hub polling through `oms`, each poll bounded by `poll_timeout`.
    pub fn new(oms: Oms, config: WatchSettings, poll_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(HubInner {
                budget: PollBudget::new(config.max_polls_per_second),
                fleet: None,
                oms,
                config,
                poll_timeout,
                pollers: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                streams: AtomicUsize::new(0),
                tracked: AtomicUsize::new(0),
                polls: AtomicU64::new(0),
                push: push::Push::new(&crate::config::WebhookSettings::default()),
            }),
        }
    }

    /// The hub of `config`: polling through `oms`, each poll bounded by the upstream's
    /// per-attempt timeout, sharing its pollers with the fleet through `redis` (when the replicas
    /// share one), relaxed while webhooks arrive, its metrics registered with `registry`.
    pub fn assemble(
        oms: &Oms,
        config: &crate::config::GatewaySettings,
        redis: Option<&crate::redis::SharedState>,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let hub = Self::new(
            oms.clone(),
            config.watch.clone(),
            config.upstream.request_timeout,
        )
        .with_fleet(redis)
        .with_webhooks(&config.webhooks);
        hub.register_metrics(registry);
        hub
    }

    /// The same hub, sharing its pollers and its poll budget with the fleet's replicas through
    /// `redis` (when they share one). Call it before the first clone.
    pub fn with_fleet(mut self, redis: Option<&crate::redis::SharedState>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            let per_second = inner.config.max_polls_per_second;
            inner.fleet = redis.map(|state| fleet::FleetWatch::new(state.clone(), per_second));
        }
        self
    }

    /// The settings.
    pub fn config(&self) -> &WatchSettings {
        &self.inner.config
    }

    /// Running pollers.
    pub fn watched(&self) -> usize {
        let pollers = self.inner.pollers.lock().unwrap_or_else(|e| e.into_inner());
        pollers.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Open watch streams.
    pub fn streams(&self) -> usize {
        self.inner.streams.load(Ordering::Relaxed)
    }

    /// Polls of OMS made by the pollers since start.
    pub fn polls(&self) -> u64 {
        self.inner.polls.load(Ordering::Relaxed)
    }

    /// Cash-ins that open streams remember, summed: what their memory grows with.
    pub fn tracked_cash_ins(&self) -> usize {
        self.inner.tracked.load(Ordering::Relaxed)
    }

    /// When `shutdown` turns true: stops every poller and ends its streams with UNAVAILABLE
    /// ("reconnect"), through the poller's own channel, so streams need no shutdown watcher each;
    /// from then on a new watch is UNAVAILABLE too.
    pub fn end_streams_on(&self, mut shutdown: watch::Receiver<bool>) {
        let hub = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if shutdown.wait_for(|stopping| *stopping).await.is_err() {
                return;
            }
            let Some(hub) = hub.upgrade() else { return };
            let running: Vec<Arc<Poller>> = {
                let pollers = hub.pollers.lock().unwrap_or_else(|e| e.into_inner());
                hub.closed.store(true, Ordering::Relaxed);
                pollers.values().filter_map(Weak::upgrade).collect()
            };
            for poller in running {
                poller.task.abort();
                poller
                    .sender
                    .send_replace(Observation::Ended(GatewayError::Unavailable(
                        "the gateway is shutting down; reconnect to resume watching".into(),
                    )));
            }
        });
    }

    /// Joins the poller for `key`, starting it if needed. RESOURCE_EXHAUSTED past the caps.
    pub fn subscribe(&self, key: WatchKey) -> Result<Subscription, GatewayError> {
        let hub = &self.inner;
        let open = hub.streams.fetch_add(1, Ordering::Relaxed) + 1;
        if open > hub.config.max_streams {
            hub.streams.fetch_sub(1, Ordering::Relaxed);
            return Err(GatewayError::ResourceExhausted(format!(
                "the gateway already serves its maximum of {} watch streams; retry later or watch fewer cash-ins",
                hub.config.max_streams
            )));
        }
        let poller = {
            let mut pollers = hub.pollers.lock().unwrap_or_else(|e| e.into_inner());
            if hub.closed.load(Ordering::Relaxed) {
                drop(pollers);
                hub.streams.fetch_sub(1, Ordering::Relaxed);
                return Err(GatewayError::Unavailable(
                    "the gateway is shutting down; reconnect to another instance".into(),
                ));
            }
            let running = pollers
                .get(&key)
                .and_then(Weak::upgrade)
                .filter(|poller| !poller.is_dead());
            match running {
                Some(poller) => Ok(poller),
                None => {
                    pollers.retain(|_, w| w.strong_count() > 0);
                    if pollers.len() >= hub.config.max_watched {
                        Err(GatewayError::ResourceExhausted(format!(
                            "the gateway already watches its maximum of {} resources; retry later",
                            hub.config.max_watched
                        )))
                    } else {
                        let poller = self.start_poller(key.clone());
                        pollers.insert(key, Arc::downgrade(&poller));
                        Ok(poller)
                    }
                }
            }
        };
        // Build the subscription first so its Drop releases the stream slot on every path.
        match poller {
            Ok(poller) => Ok(Subscription {
                receiver: poller.sender.subscribe(),
                _poller: poller,
                hub: hub.clone(),
            }),
            Err(err) => {
                hub.streams.fetch_sub(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Publishes a state the gateway just received through another call (CreateCashIn,
    /// RefreshCashIn, SandboxService), so watchers see it at once instead of at the next poll:
    /// the cash-in's own poller takes the state (an older state never replaces a newer one), and
    /// its customer's poller polls now.
    pub fn publish(&self, cash_in: &pb::CashIn) {
        let (poller, customer) = {
            let pollers = self.inner.pollers.lock().unwrap_or_else(|e| e.into_inner());
            let find = |key: WatchKey| pollers.get(&key).and_then(Weak::upgrade);
            (
                find(WatchKey::CashIn(cash_in.id.clone())),
                (!cash_in.customer_id.is_empty())
                    .then(|| find(WatchKey::Customer(cash_in.customer_id.clone())))
                    .flatten(),
            )
        };
        if let Some(customer) = customer
            && !customer.has_seen(cash_in)
        {
            customer.wake.notify_one();
        }
        let Some(poller) = poller else { return };
        poller.sender.send_if_modified(|observation| {
            let newer = match observation {
                Observation::Seen { items, .. } => items.first().is_none_or(|current| {
                    let stamp = |c: &pb::CashIn| c.updated_at.map(|t| (t.seconds, t.nanos));
                    stamp(cash_in) >= stamp(current)
                        && !diff::changed_fields(current, cash_in).is_empty()
                }),
                Observation::Waiting => true,
                Observation::Ended(_) => false,
            };
            if newer {
                *observation = Observation::seen(vec![cash_in.clone()]);
            }
            newer
        });
    }

    fn start_poller(&self, key: WatchKey) -> Arc<Poller> {
        let (sender, _) = watch::channel(Observation::Waiting);
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(poll_loop(
            Arc::downgrade(&self.inner),
            key.clone(),
            sender.clone(),
            wake.clone(),
        ));
        tracing::debug!(?key, "poller started");
        Arc::new(Poller {
            key,
            sender,
            wake,
            task: task.abort_handle(),
            hub: Arc::downgrade(&self.inner),
        })
    }
}

/// One poll of `key`, whose first request's permit the caller has taken. Each request's time
/// limit starts when it is sent, after its permit: waiting for the poll budget is no upstream
/// time, so a long queue for permits never times a request out before it went out.
async fn fetch(hub: &HubInner, key: &WatchKey) -> Result<Vec<pb::CashIn>, GatewayError> {
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
                    fleet::acquire(hub).await;
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
async fn poll_loop(
    hub: Weak<HubInner>,
    key: WatchKey,
    sender: watch::Sender<Observation>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut failing_since: Option<Instant> = None;
    let mut failures = 0u32;
    let mut empty_polls = 0u32;
    let mut follower = fleet::Follower::new(&key);
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let interval = strong.interval();
        let limit = strong.config.unreachable_limit;
        if follower.follows(&strong, &key, &sender).await {
            drop(strong);
            if follower.stopped() {
                return;
            }
            follower.wait(&wake, jittered(interval)).await;
            continue;
        }
        fleet::acquire(&strong).await;
        // The poll starts when its first request may go out.
        let started = Instant::now();
        let result = fetch(&strong, &key).await;
        follower.publish(&strong, &sender, &result).await;
        drop(strong);
        let wait = match result {
            Ok(items) => {
                failing_since = None;
                failures = 0;
                // A customer with no cash-in at all (perhaps a made-up id) is polled ever less
                // often, so such ids cannot take the whole poll budget.
                empty_polls = if items.is_empty() {
                    empty_polls.saturating_add(1)
                } else {
                    0
                };
                let terminal = matches!(&key, WatchKey::CashIn(_))
                    && items.first().is_some_and(|c| diff::is_terminal(c.status));
                observe(&sender, &key, items);
                if terminal {
                    // Nothing changes after a terminal status: keep the last state, stop polling.
                    return;
                }
                jittered(
                    interval
                        .saturating_mul(1 << empty_polls.min(8))
                        .min(IDLE_CUSTOMER_MAX_INTERVAL.max(interval)),
                )
            }
            Err(err) if err.is_upstream_not_found() => {
                sender.send_replace(Observation::Ended(err));
                return;
            }
            Err(err) => {
                // The outage is counted from the start of the first failed poll that went out;
                // a poll the circuit breaker refused never reached OMS, so it neither starts
                // nor ends the outage.
                if !err.is_upstream_unsent() {
                    failing_since.get_or_insert(started);
                }
                failures += 1;
                let since = failing_since.unwrap_or(started);
                if failing_since.is_some() && since.elapsed() >= limit {
                    tracing::warn!(?key, error = %err, "upstream unreachable past the limit; ending watch streams");
                    sender.send_replace(Observation::Ended(GatewayError::Unavailable(format!(
                        "OMS has been failing for over {}s while watching; reconnect to resume (last error: {err})",
                        limit.as_secs()
                    ))));
                    return;
                }
                tracing::debug!(?key, error = %err, failures, "poll failed; backing off");
                // Back off, but poll again when the limit is reached: if that poll fails too,
                // the streams end then, not up to a backoff later.
                let until_limit = (since + limit).saturating_duration_since(Instant::now());
                interval
                    .saturating_mul(1 << failures.min(4))
                    .min(Duration::from_secs(30))
                    .min(until_limit.max(Duration::from_millis(10)))
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            // Another replica published a state (a webhook's re-read): poll now, so this
            // replica's streams see it too.
            () = follower.published() => {}
        }
    }
}

/// Publishes what a poll of `key` saw, if it differs from the latest observation. A poll
/// answered before a state published meanwhile (RefreshCashIn, SandboxService) must not bring the
/// older state, say a revoked deposit code, back.
fn observe(sender: &watch::Sender<Observation>, key: &WatchKey, items: Vec<pb::CashIn>) {
    sender.send_if_modified(|observation| {
        let changed = match observation {
            Observation::Seen { items: old, .. }
                if matches!(key, WatchKey::CashIn(_))
                    && is_older(items.first(), old.first().map(|c| &**c)) =>
            {
                false
            }
            Observation::Seen { items: old, .. } => differs(old, &items),
            _ => true,
        };
        if changed {
            *observation = Observation::seen(items);
        }
        changed
    });
}

/// Whether `polled` was last updated before `current`, judged by `updatedAt` when both have it.
/// Whether a poll's `items` say something the observation `old` does not (another cash-in, or
/// a change worth an event).
fn differs(old: &[Arc<pb::CashIn>], items: &[pb::CashIn]) -> bool {
    old.len() != items.len()
        || old
            .iter()
            .zip(items)
            .any(|(a, b)| a.id != b.id || !diff::changed_fields(a, b).is_empty())
}

fn is_older(polled: Option<&pb::CashIn>, current: Option<&pb::CashIn>) -> bool {
    let stamp = |c: Option<&pb::CashIn>| c.and_then(|c| c.updated_at).map(|t| (t.seconds, t.nanos));
    matches!((stamp(polled), stamp(current)), (Some(p), Some(c)) if p < c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamSettings;
    use oms_rest::{Secret, auth::Credentials};

    /// A hub whose polls go to a port nothing listens on (they fail; these tests need none).
    fn hub() -> WatchHub {
        let credentials = Credentials {
            api_key: "sk_test".into(),
            api_secret: Secret::new("secret"),
        };
        let metrics = crate::metrics::Metrics::registered().0;
        let client = crate::upstream::client(
            "http://127.0.0.1:9/v0.9",
            credentials,
            &UpstreamSettings::default(),
            &metrics,
        )
        .unwrap();
        WatchHub::new(
            Oms::new(client),
            WatchSettings::default(),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn at_shutdown_open_streams_end_and_no_new_watch_starts_a_poller() {
        let hub = hub();
        let (stopping, stopping_rx) = watch::channel(false);
        hub.end_streams_on(stopping_rx);
        let mut open = hub.subscribe(WatchKey::CashIn("ci_1".into())).unwrap();
        stopping.send_replace(true);
        open.receiver
            .wait_for(|o| matches!(o, Observation::Ended(_)))
            .await
            .expect("the open stream is told to go");
        // A watch that arrives after the pollers were ended (it passed every check before the
        // shutdown began) must not start a poller that nothing will end.
        let late = hub.subscribe(WatchKey::CashIn("ci_2".into()));
        let Err(GatewayError::Unavailable(message)) = late else {
            panic!("a watch after shutdown was accepted");
        };
        assert!(message.contains("shutting down"), "{message}");
        assert_eq!(
            hub.inner.streams.load(Ordering::Relaxed),
            1,
            "its slot is given back"
        );
    }
}
