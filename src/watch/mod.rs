//! The watch hub: turns polling of OMS into pushed events, with one poller per watched resource
//! however many streams watch it.
//!
//! A [`WatchKey`] names what is polled (one cash-in, or one customer's cash-ins). The hub keeps a
//! weak map from key to poller; [`WatchHub::subscribe`] joins the running poller or starts one,
//! and the poller stops when the last [`Subscription`] is dropped (or, for one cash-in, once it
//! is terminal). A poller publishes into a `tokio::sync::watch` channel, which holds only the
//! latest observation: a slow stream never blocks the poller or the other streams, may skip
//! intermediate states, and always finds the latest (so the terminal) one. Every upstream poll
//! takes a permit from the global [`budget::PollBudget`], in turns fair between the callers
//! whose streams watch the pollers (`fair.rs`: each subscription names its caller, and its
//! poller's ticket counts it). On upstream errors a poller backs off
//! and keeps its streams open; only after the upstream has failed for longer than the configured
//! limit does it end them (UNAVAILABLE). This module never parses JSON nor builds a request: it
//! calls the OMS operations layer (`oms.rs`). With `--redis-url`, one poller per resource polls
//! for the whole fleet and the others follow what it publishes (`fleet.rs`). The hub registers
//! its own metrics (`metrics.rs`).

pub mod budget;
mod delivery;
pub mod diff;
mod fair;
mod fleet;
mod metrics;
mod poll;
mod push;
pub mod stream;
mod version;
/// When the gateway learns something now (see `version.rs`): Unix milliseconds.
pub use version::now as stamp;
pub mod wire;

use crate::config::WatchSettings;
use crate::error::GatewayError;
use crate::oms::Oms;
use crate::proto::v1 as pb;
use budget::PollBudget;
use poll::{observe, poll_loop};
use std::collections::HashMap;
use std::sync::{
    Arc, Mutex, Weak,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use version::Item;

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
        /// When the gateway learned each of `items` (see `version.rs`).
        learned: Arc<Vec<u64>>,
        /// When the gateway observed them.
        at: SystemTime,
        /// The events of this observation encoded so far, shared by its streams.
        events: Arc<wire::EventCache>,
    },
    /// The poller stopped for good; streams end with this error.
    Ended(GatewayError),
}

impl Observation {
    /// What a poll (or another call) just saw, or a merge made.
    fn seen(items: Vec<Item>) -> Self {
        let (items, learned) = items.into_iter().unzip();
        Observation::Seen {
            items: Arc::new(items),
            learned: Arc::new(learned),
            at: SystemTime::now(),
            events: Arc::default(),
        }
    }

    /// The cash-ins held, with when each was learned (none while waiting or ended).
    fn items(&self) -> Vec<Item> {
        match self {
            Observation::Seen { items, learned, .. } => {
                items.iter().cloned().zip(learned.iter().copied()).collect()
            }
            _ => Vec::new(),
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
    /// The deliveries learned (`delivery.rs`), and whether webhooks bring them (see
    /// [`HubInner::follows_deliveries`]).
    deliveries: delivery::Deliveries,
    webhooks: bool,
}

/// A running poller; dropping the last reference stops it.
#[derive(Debug)]
struct Poller {
    key: WatchKey,
    sender: watch::Sender<Observation>,
    /// Names this poller's lease in the fleet.
    token: Arc<str>,
    /// Its place in the turns at the poll budget, with the callers of its streams.
    ticket: Arc<fair::Ticket>,
    task: AbortHandle,
    hub: Weak<HubInner>,
}

impl Poller {
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
            {
                let mut pollers = hub.pollers.lock().unwrap_or_else(|e| e.into_inner());
                if pollers
                    .get(&self.key)
                    .is_some_and(|w| w.strong_count() == 0)
                {
                    pollers.remove(&self.key);
                }
            }
            // Its lease goes at once (not at its TTL): a poller of this resource on another
            // replica takes over.
            if hub.fleet.is_some()
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let (key, token) = (self.key.clone(), self.token.clone());
                runtime.spawn(async move { fleet::release(&hub, &key, &token).await });
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
    /// The stream's caller: one of those for whom the poller takes its turns (`fair.rs`).
    caller: Arc<str>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self._poller.ticket.leave(&self.caller);
        self.hub.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// The poller's channel.
    pub fn receiver(&mut self) -> &mut watch::Receiver<Observation> {
        &mut self.receiver
    }

    /// With a fleet, brings the poller's observation up to the fleet's before the stream
    /// reports it: a poller already running here follows another replica's changes through a
    /// wake-up that may still be on its way, and a stream opened after a call was answered
    /// elsewhere must not start from the state before it. One Redis read, bounded by
    /// `--redis-timeout`; nothing without a fleet or with Redis down.
    pub async fn catch_up(&self) {
        let ended = matches!(*self.receiver.borrow(), Observation::Ended(_));
        if self.hub.fleet.is_some() && !ended {
            let (key, sender) = (&self._poller.key, &self._poller.sender);
            if fleet::catch_up(&self.hub, key, sender).await.is_some() {
                delivery::refresh(&self.hub, sender).await;
            }
        }
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
                deliveries: delivery::Deliveries::default(),
                webhooks: false,
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

    /// Polls waiting for their turn at the poll budget, and how many callers they wait for (the
    /// gateway's own re-reads count as one).
    pub fn polls_waiting(&self) -> (usize, usize) {
        self.inner.budget.waiting()
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
            let mut releases = Vec::with_capacity(running.len());
            for poller in running {
                poller.task.abort();
                poller
                    .sender
                    .send_replace(Observation::Ended(GatewayError::Unavailable(
                        "the gateway is shutting down; reconnect to resume watching".into(),
                    )));
                releases.push((poller.key.clone(), poller.token.clone()));
            }
            // The leases go while the drain runs, so the streams that reconnect to another
            // replica find its pollers polling at once.
            let releases = releases
                .iter()
                .map(|(key, token)| fleet::release(&hub, key, token));
            futures_util::future::join_all(releases).await;
        });
    }

    /// Joins the poller for `key`, starting it if needed, for a stream of `caller` (an identity;
    /// anonymous: empty), whose turns at the poll budget the poller then takes too (`fair.rs`).
    /// RESOURCE_EXHAUSTED past the caps.
    pub fn subscribe(&self, key: WatchKey, caller: Arc<str>) -> Result<Subscription, GatewayError> {
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
                Some(poller) => {
                    poller.ticket.join(&caller);
                    Ok(poller)
                }
                None => {
                    pollers.retain(|_, w| w.strong_count() > 0);
                    if pollers.len() >= hub.config.max_watched {
                        Err(GatewayError::ResourceExhausted(format!(
                            "the gateway already watches its maximum of {} resources; retry later",
                            hub.config.max_watched
                        )))
                    } else {
                        let poller = self.start_poller(key.clone(), &caller);
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
                caller,
            }),
            Err(err) => {
                hub.streams.fetch_sub(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Publishes a state of a cash-in the gateway learned first-hand at `learned` (see
    /// [`version`]): the answer to a create, refresh, read or sandbox call, or a webhook's
    /// re-read, so watchers see it at once instead of at the next poll. Its own poller and its
    /// customer's take it (never over a newer state; `created`: it joins its customer's
    /// cash-ins), and with a fleet the shared observations do, which wakes every replica's
    /// pollers of them; it returns once the fleet has it (bounded by `--redis-timeout`), so a
    /// watch opened on any replica after the caller's answer never shows an older state.
    /// Replays and stored outcomes are no news: never published.
    pub async fn learned(&self, cash_in: &pb::CashIn, learned: u64, created: bool) {
        let cash_in = self.learned_here(cash_in, learned, created);
        fleet::learned(&self.inner, &cash_in, learned, created).await;
    }

    /// A page of cash-ins a ListCashIns answer learned at `learned`: taken by this replica's
    /// pollers at once; with a fleet, shared in the background (up to two Redis writes each,
    /// which the caller need not wait for). Without a fleet nothing is copied or spawned.
    pub fn learned_page(&self, cash_ins: &[pb::CashIn], learned: u64) {
        if self.inner.fleet.is_none() {
            for cash_in in cash_ins {
                self.learned_here(cash_in, learned, false);
            }
            return;
        }
        let (hub, listed) = (self.clone(), cash_ins.to_vec());
        tokio::spawn(async move {
            for cash_in in &listed {
                hub.learned(cash_in, learned, false).await;
            }
        });
    }

    /// This replica's share of [`Self::learned`]: its pollers take the state (with the delivery
    /// known here attached), which is returned for the fleet.
    fn learned_here<'c>(
        &self,
        cash_in: &'c pb::CashIn,
        learned: u64,
        created: bool,
    ) -> std::borrow::Cow<'c, pb::CashIn> {
        let mut cash_in = std::borrow::Cow::Borrowed(cash_in);
        if let Some(known) = self.inner.deliveries.newer_for(&cash_in) {
            cash_in.to_mut().delivery = Some((*known).clone());
        }
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
        let item = || vec![(Arc::new(cash_in.clone().into_owned()), learned)];
        if let Some(poller) = poller {
            observe(&poller.sender, item(), None);
        }
        if let Some(customer) = customer {
            // Only a new cash-in joins its customer's observation; any other state updates it
            // if held (reading an old cash-in never adds it to a customer's streams).
            let holds = created
                || matches!(&*customer.sender.borrow(), Observation::Seen { items, .. }
                    if items.iter().any(|i| i.id == cash_in.id));
            if holds {
                observe(&customer.sender, item(), None);
            }
        }
        cash_in
    }

    /// A poller of `key` for a first stream of `caller`, who is one of its callers before its
    /// first turn.
    fn start_poller(&self, key: WatchKey, caller: &Arc<str>) -> Arc<Poller> {
        let (sender, _) = watch::channel(Observation::Waiting);
        let ticket = Arc::new(self.inner.budget.ticket());
        ticket.join(caller);
        let token: Arc<str> = match &self.inner.fleet {
            Some(fleet) => fleet.state().token().into(),
            None => "".into(),
        };
        let task = tokio::spawn(poll_loop(
            Arc::downgrade(&self.inner),
            key.clone(),
            sender.clone(),
            fleet::Follower::new(&key, token.clone()),
            ticket.clone(),
        ));
        tracing::debug!(?key, "poller started");
        Arc::new(Poller {
            key,
            sender,
            token,
            ticket,
            task: task.abort_handle(),
            hub: Arc::downgrade(&self.inner),
        })
    }
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
        let mut open = hub
            .subscribe(WatchKey::CashIn("ci_1".into()), "".into())
            .unwrap();
        stopping.send_replace(true);
        open.receiver
            .wait_for(|o| matches!(o, Observation::Ended(_)))
            .await
            .expect("the open stream is told to go");
        // A watch that arrives after the pollers were ended (it passed every check before the
        // shutdown began) must not start a poller that nothing will end.
        let late = hub.subscribe(WatchKey::CashIn("ci_2".into()), "".into());
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

    #[tokio::test]
    async fn a_pollers_callers_follow_its_streams_and_nothing_is_left_when_they_go() {
        let hub = hub();
        let key = WatchKey::CashIn("ci_1".into());
        let a = [
            hub.subscribe(key.clone(), "spiffe://a".into()).unwrap(),
            hub.subscribe(key.clone(), "spiffe://a".into()).unwrap(),
        ];
        let b = hub.subscribe(key.clone(), "dns:b".into()).unwrap();
        let anonymous = hub.subscribe(key.clone(), "".into()).unwrap();
        let turns = hub.inner.budget.turns().clone();
        let callers = |list: &[(&str, usize)]| -> Vec<Vec<(String, usize)>> {
            vec![list.iter().map(|(c, n)| (c.to_string(), *n)).collect()]
        };
        assert_eq!(
            turns.tickets(),
            callers(&[("", 1), ("dns:b", 1), ("spiffe://a", 2)])
        );
        let [a1, a2] = a;
        drop((a1, anonymous));
        assert_eq!(turns.tickets(), callers(&[("dns:b", 1), ("spiffe://a", 1)]));
        drop((a2, b));
        // The poller stopped with its last stream; its task lets its ticket go once aborted.
        for _ in 0..1000 {
            if turns.tickets().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(turns.tickets().is_empty(), "{:?}", turns.tickets());
        assert_eq!(hub.watched(), 0);
    }
}
