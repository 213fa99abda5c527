//! One poller per watched resource across the fleet, when the replicas share Redis: at each
//! turn a poller either holds its resource's lease (and polls when its interval is up,
//! publishing what it saw for the other replicas), or follows the holder by reading the shared
//! observation. Without Redis, or while Redis is down, every turn polls, as a lone gateway does;
//! the streams never notice the switch.
//!
//! Per resource name `n` (`cash-in:<id>` or `customer:<id>`), under one hash tag:
//! - `oms-gateway:watch:{n}:lease` = the holding poller's token, taken with `SET NX PX
//!   --redis-lease-ttl` and renewed every third of it (whatever the poll interval), released
//!   (compare-and-delete, then a wake-up) when the poller stops, at shutdown, and once Redis
//!   answers again after a take or renewal that timed out;
//! - `oms-gateway:watch:{n}:obs` = a cash-in's shared observation: its [`Version`] key, then
//!   `crate::outcome`'s bytes (the cash-in, or OMS's 404); a customer's is a hash of cash-in id
//!   → version key and the cash-in, with field `""` the version of the last listing. Each is
//!   written compare-and-set on the version, by the holder after a poll and by any replica that
//!   learns a cash-in first-hand (a create, refresh, read or webhook re-read): never older;
//! - channel `oms-gateway:watch:<n>`, published when the observation changes or the lease is
//!   released, which wakes every replica's poller of it.
//!
//! Followers never poll OMS: they read the observation when woken or once per poll interval,
//! and merge it into their own ([`super::version::merge`]), so nothing they show goes back.

use super::budget::FleetBudget;
use super::fair::{Ticket, Turn};
use super::version::{self, Item, KEY_LEN, Version};
use super::{HubInner, Observation, WatchKey, diff, observe};
use crate::error::GatewayError;
use crate::outcome;
use crate::proto::v1 as pb;
use crate::redis::{PREFIX, SharedState};
use prost::Message;
use redis::Script;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

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

/// Deletes the lease if ours and wakes the followers. KEYS: lease; ARGV: token, channel.
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0";

/// Stores a cash-in's observation unless the stored one is as new; publishes when what it
/// says changed. KEYS: obs; ARGV: version key + bytes, ms, channel, '1': only if one exists.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local old = redis.call('GET', KEYS[1])
if not old then
  if ARGV[4] == '1' then return 0 end
elseif string.sub(old, 1, 42) >= string.sub(ARGV[1], 1, 42) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if not old or string.sub(old, 43) ~= string.sub(ARGV[1], 43) then
  redis.call('PUBLISH', ARGV[3], 'changed')
end
return 1",
    )
});

/// Writes cash-ins into a customer's observation, each unless the stored one is as new.
/// KEYS: obs (a hash); ARGV: listing version key, ms, channel, mode, then id, value pairs.
/// Mode `poll`: a complete listing (also drops the cash-ins it does not name that were learned
/// before it); `insert`: adds or updates (a new cash-in), only if the observation exists;
/// `update`: updates the cash-ins it holds. Publishes when anything changed.
static LISTING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local mode = ARGV[4]
if mode ~= 'poll' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local changed = 0
local named = {}
for i = 5, #ARGV, 2 do
  local id, v = ARGV[i], ARGV[i + 1]
  named[id] = true
  local old = redis.call('HGET', KEYS[1], id)
  if old then
    if string.sub(old, 1, 42) < string.sub(v, 1, 42) then
      redis.call('HSET', KEYS[1], id, v)
      if string.sub(old, 43) ~= string.sub(v, 43) then changed = 1 end
    end
  elseif mode ~= 'update' then
    redis.call('HSET', KEYS[1], id, v)
    changed = 1
  end
end
if mode == 'poll' then
  local listed = redis.call('HGET', KEYS[1], '')
  -- The first listing is news even when empty: followers waiting for it show it at once.
  if not listed then changed = 1 end
  if not listed or listed < ARGV[1] then
    redis.call('HSET', KEYS[1], '', ARGV[1])
    local sent = string.sub(ARGV[1], 23, 42)
    for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
      if id ~= '' and not named[id] then
        local v = redis.call('HGET', KEYS[1], id)
        if string.sub(v, 23, 42) < sent then
          redis.call('HDEL', KEYS[1], id)
          changed = 1
        end
      end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if changed == 1 then redis.call('PUBLISH', ARGV[3], 'changed') end
return changed",
    )
});

/// Reads a customer's observation, unless it holds more than ARGV[1] fields: then only the
/// marker field `!` and the count, so a hash grown past any listing (a poisoned or corrupted
/// Redis) costs one small reply, not all of it. KEYS: obs.
static READ_LISTING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = redis.call('HLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return {'!', tostring(n)} end
return redis.call('HGETALL', KEYS[1])",
    )
});

/// The most fields a customer's shared observation is read with: its listing (at most
/// [`version::MAX_ITEMS`] cash-ins and the listing's own field) and the cash-ins created since
/// it, many times over. Past it the observation is ignored (this replica polls for itself).
const MAX_SHARED_FIELDS: usize = 4 * version::MAX_ITEMS;

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
    /// The names of what `key` watches.
    pub fn of(key: &WatchKey) -> Self {
        match key {
            WatchKey::CashIn(id) => Self::new(&format!("cash-in:{id}")),
            WatchKey::Customer(id) => Self::new(&format!("customer:{id}")),
        }
    }

    /// The channel on which the pollers of `key` are woken.
    pub fn channel_of(key: &WatchKey) -> String {
        Self::of(key).channel
    }

    fn new(name: &str) -> Self {
        Self {
            lease: format!("{PREFIX}watch:{{{name}}}:lease"),
            obs: format!("{PREFIX}watch:{{{name}}}:obs"),
            channel: format!("{PREFIX}watch:{name}"),
        }
    }

    /// The compare-and-delete of `token`'s lease, as a command that can wait for Redis.
    fn release(&self, token: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE)
            .arg(1)
            .arg(&self.lease)
            .arg(token)
            .arg(&self.channel);
        cmd
    }
}

/// A final observation's version key: nothing replaces OMS's 404.
fn final_key() -> String {
    "9".repeat(KEY_LEN)
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

    fn ttl_ms(&self) -> u64 {
        self.state.lease_ttl().as_millis() as u64
    }

    /// How long a shared observation outlives its last write: a few leases, so a late joiner
    /// reads the current state at once, and one nobody watches goes.
    fn obs_ms(&self, interval: Duration) -> u64 {
        (self.state.lease_ttl().max(interval) * 3).as_millis() as u64
    }

    /// How often a holder renews its lease: a third of its lifetime, whatever the interval.
    pub fn renew_every(&self) -> Duration {
        self.state.lease_ttl() / 3
    }

    /// Whether the poller `token` holds (now) the lease on `names`; `None`: Redis is down. A take
    /// that timed out may have run: its release waits for Redis to answer again.
    pub async fn hold(&self, names: &Names, token: &str) -> Option<bool> {
        let mut hold = HOLD.prepare_invoke();
        hold.key(&names.lease).arg(token).arg(self.ttl_ms());
        self.state
            .invoke_or_undo::<i64>(&hold, || names.release(token))
            .await
            .map(|held| held == 1)
    }

    /// Releases `token`'s lease on `names` (now, or once Redis answers again) and wakes the
    /// other replicas' pollers, one of which takes it over.
    pub async fn release(&self, names: &Names, token: &str) {
        self.state.now_or_later(names.release(token)).await;
    }

    /// Waits for a fleet poll permit, asking Redis in `turn`; the turn back: Redis is down.
    pub async fn acquire(&self, turn: Turn) -> Result<(), Turn> {
        self.budget.acquire(turn).await
    }

    /// Stores `item` as the cash-in's observation unless a newer one is stored; `watched`: only
    /// if some replica watches it (a first-hand answer, not a poll).
    async fn store(&self, names: &Names, item: &Item, interval: Duration, watched: bool) {
        let mut value = Version::of(&item.0, item.1).key().into_bytes();
        value.extend(outcome::encode(&Ok(vec![(*item.0).clone()])).unwrap_or_default());
        self.store_value(names, value, interval, watched).await;
    }

    async fn store_value(&self, names: &Names, value: Vec<u8>, interval: Duration, watched: bool) {
        let mut store = STORE.prepare_invoke();
        store
            .key(&names.obs)
            .arg(value)
            .arg(self.obs_ms(interval))
            .arg(&names.channel)
            .arg(if watched { "1" } else { "0" });
        let _ = self.state.invoke::<i64>(&store).await;
    }

    /// Writes `items` into a customer's observation (see [`LISTING`] for `mode`).
    async fn list(
        &self,
        names: &Names,
        items: &[Item],
        listed: u64,
        mode: &str,
        interval: Duration,
    ) {
        let mut list = LISTING.prepare_invoke();
        list.key(&names.obs)
            .arg(Version::listed_at(listed))
            .arg(self.obs_ms(interval))
            .arg(&names.channel)
            .arg(mode);
        for item in items {
            let mut value = Version::of(&item.0, item.1).key().into_bytes();
            value.extend(item.0.encode_to_vec());
            list.arg(&item.0.id).arg(value);
        }
        let _ = self.state.invoke::<i64>(&list).await;
    }

    /// The shared observation of `key`: `None` when Redis is down, `Some(None)` before any; a
    /// customer's with the time its last listing was sent.
    async fn latest(&self, key: &WatchKey, names: &Names) -> Option<Option<Shared>> {
        match key {
            WatchKey::CashIn(_) => {
                let bytes: Option<Vec<u8>> =
                    self.state.query(redis::cmd("GET").arg(&names.obs)).await?;
                Some(bytes.and_then(|bytes| {
                    let learned = Version::learned_of(&bytes)?;
                    match outcome::decode::<Vec<pb::CashIn>>(bytes.get(KEY_LEN..)?)? {
                        Ok(items) => Some(Shared::Items(
                            items.into_iter().map(|c| (Arc::new(c), learned)).collect(),
                            None,
                        )),
                        Err(err) => Some(Shared::Ended(err)),
                    }
                }))
            }
            WatchKey::Customer(_) => {
                let mut read = READ_LISTING.prepare_invoke();
                read.key(&names.obs).arg(MAX_SHARED_FIELDS);
                let fields: Vec<(Vec<u8>, Vec<u8>)> = self.state.invoke(&read).await?;
                if fields.first().is_some_and(|(id, _)| id == b"!") {
                    // Said once a process: every follower's turn would say it again.
                    static SAID: AtomicBool = AtomicBool::new(false);
                    if !SAID.swap(true, Ordering::Relaxed) {
                        tracing::warn!(key = %names.obs, "a customer's shared watch observation holds more fields than any listing can; ignored");
                    }
                    return Some(None);
                }
                let mut listed = None;
                let mut items: Vec<Item> = Vec::with_capacity(fields.len());
                for (id, value) in fields {
                    let learned = Version::learned_of(&value);
                    if id.is_empty() {
                        listed = learned;
                    } else if let (Some(learned), Some(Ok(cash_in))) =
                        (learned, value.get(KEY_LEN..).map(pb::CashIn::decode))
                    {
                        items.push((Arc::new(cash_in), learned));
                    }
                }
                // Newest first, as OMS lists them.
                items.sort_by(|a, b| {
                    let created = |c: &pb::CashIn| c.created_at.map(|t| (t.seconds, t.nanos));
                    created(&b.0).cmp(&created(&a.0)).then(a.0.id.cmp(&b.0.id))
                });
                items.truncate(version::MAX_ITEMS);
                Some(listed.map(|listed| Shared::Items(items, Some(listed))))
            }
        }
    }

    /// Notified when the observation of `names` changes or its lease is released.
    pub fn waker(&self, names: &Names) -> Arc<Notify> {
        self.state.waker(&names.channel)
    }
}

/// A shared observation as read.
enum Shared {
    /// Cash-ins; for a customer, when the listing they come from was sent.
    Items(Vec<Item>, Option<u64>),
    /// The holder's final error (OMS's 404).
    Ended(GatewayError),
}

/// Waits for `ticket`'s turn among this replica's pollers (fair between callers: `fair.rs`),
/// then for a permit of the fleet's poll budget, or of this replica's when Redis is down.
pub(super) async fn acquire(hub: &HubInner, ticket: &Ticket) {
    let turn = ticket.turn().await;
    let turn = match &hub.fleet {
        Some(fleet) => match fleet.acquire(turn).await {
            Ok(()) => return,
            Err(turn) => turn,
        },
        None => turn,
    };
    hub.budget.spend(turn).await;
}

/// Shares a cash-in this replica learned first-hand (at `learned`) with the fleet: its shared
/// observation and its customer's, where some replica watches them; `created`: it is new, so
/// it joins its customer's observation. Their pollers everywhere are woken when it is news.
pub(super) async fn learned(hub: &HubInner, cash_in: &pb::CashIn, learned: u64, created: bool) {
    let Some(fleet) = &hub.fleet else { return };
    let interval = hub.interval();
    let item: Item = (Arc::new(cash_in.clone()), learned);
    let names = Names::of(&WatchKey::CashIn(cash_in.id.clone()));
    let own = fleet.store(&names, &item, interval, true);
    if cash_in.customer_id.is_empty() {
        own.await;
        return;
    }
    let customer = Names::of(&WatchKey::Customer(cash_in.customer_id.clone()));
    let mode = if created { "insert" } else { "update" };
    let listing = fleet.list(&customer, std::slice::from_ref(&item), 0, mode, interval);
    tokio::join!(own, listing);
}

/// Why a holder's wait between polls ended.
pub(super) enum Woken {
    /// Time to poll.
    Poll,
    /// Time to renew the lease.
    Renew,
    /// Another replica published a change: read it.
    Published,
}

/// A poller's standing in the fleet.
pub(super) struct Follower {
    names: Names,
    token: Arc<str>,
    waker: Option<Arc<Notify>>,
    holds: bool,
    stopped: bool,
}

// === impl Follower ===

impl Follower {
    /// The standing of the poller of `key`, whose leases carry `token`.
    pub(super) fn new(key: &WatchKey, token: Arc<str>) -> Self {
        Self {
            names: Names::of(key),
            token,
            waker: None,
            holds: false,
            stopped: false,
        }
    }

    /// Whether this turn follows another replica's poller (and took what it published); false:
    /// this replica polls (it holds the lease, renewed now, or there is no fleet, or Redis is
    /// down).
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
        match fleet.hold(&self.names, &self.token).await {
            Some(true) => {
                self.holds = true;
                return false;
            }
            Some(false) => self.holds = false,
            None => {
                self.holds = false;
                fleet.state().fell_back("watch");
                return false;
            }
        }
        self.catch_up(hub, key, sender).await.is_some()
    }

    /// Reads the shared observation into this replica's; `None`: Redis is down.
    pub(super) async fn catch_up(
        &mut self,
        hub: &HubInner,
        key: &WatchKey,
        sender: &watch::Sender<Observation>,
    ) -> Option<()> {
        self.stopped = catch_up(hub, key, sender).await?;
        Some(())
    }

    /// Until the resource's observation is published anew in Redis (never without a fleet).
    async fn published(&self) {
        match &self.waker {
            Some(waker) => waker.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the holder published a final state (terminal, or OMS's 404): stop following.
    pub(super) fn stopped(&self) -> bool {
        self.stopped
    }

    /// A follower's wait: until the holder publishes a change or lets go, or `wait`.
    pub(super) async fn wait(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.published() => {}
        }
    }

    /// A holder's (or a lone poller's) wait for its next poll at `next`, waking in time to renew
    /// the lease and when another replica publishes a change.
    pub(super) async fn wait_to_poll(&self, hub: &HubInner, next: Instant) -> Woken {
        let renew = match (&hub.fleet, self.holds) {
            (Some(fleet), true) => Some(Instant::now() + fleet.renew_every()),
            _ => None,
        };
        let until = renew.map_or(next, |renew| renew.min(next));
        tokio::select! {
            () = tokio::time::sleep_until(until) => {
                if until < next { Woken::Renew } else { Woken::Poll }
            }
            () = self.published() => Woken::Published,
        }
    }

    /// Stores what this replica's poll left in its observation, for the followers: the cash-in
    /// (compare-and-set), the customer's listing sent at `listed`, or OMS's 404 (other failures
    /// stay here: this poller backs off, and followers wait or take over).
    pub(super) async fn publish(
        &self,
        hub: &HubInner,
        key: &WatchKey,
        sender: &watch::Sender<Observation>,
        polled: Result<&[Item], &GatewayError>,
        listed: u64,
    ) {
        let Some(fleet) = &hub.fleet else { return };
        let interval = hub.interval();
        match (key, polled) {
            (WatchKey::CashIn(_), Ok(_)) => {
                let current = match &*sender.borrow() {
                    Observation::Seen { items, learned, .. } => {
                        items.first().cloned().zip(learned.first().copied())
                    }
                    _ => None,
                };
                if let Some(item) = current {
                    fleet.store(&self.names, &item, interval, false).await;
                }
            }
            (WatchKey::Customer(_), Ok(items)) => {
                fleet
                    .list(&self.names, items, listed, "poll", interval)
                    .await;
            }
            (_, Err(err)) if err.is_upstream_not_found() => {
                if let Some(bytes) = outcome::encode::<Vec<pb::CashIn>>(&Err(err.clone())) {
                    let mut value = final_key().into_bytes();
                    value.extend(bytes);
                    fleet.store_value(&self.names, value, interval, false).await;
                }
            }
            (_, Err(_)) => {}
        }
    }

    /// Lets the lease go (the poller stops polling): another replica's poller takes over.
    pub(super) async fn release(&mut self, hub: &HubInner) {
        if let (Some(fleet), true) = (&hub.fleet, self.holds) {
            self.holds = false;
            fleet.release(&self.names, &self.token).await;
        }
    }
}

/// Reads the fleet's shared observation of `key` into `sender`'s: `None` when there is no
/// fleet or Redis is down, else whether it is final (terminal, or OMS's 404).
pub(super) async fn catch_up(
    hub: &HubInner,
    key: &WatchKey,
    sender: &watch::Sender<Observation>,
) -> Option<bool> {
    let fleet = hub.fleet.as_ref()?;
    Some(match fleet.latest(key, &Names::of(key)).await? {
        None => false,
        Some(Shared::Items(items, listed)) => {
            observe(sender, items, listed);
            matches!(key, WatchKey::CashIn(_))
                && matches!(&*sender.borrow(), Observation::Seen { items, .. }
                    if items.first().is_some_and(|c| diff::is_terminal(c.status)))
        }
        Some(Shared::Ended(err)) => {
            sender.send_replace(Observation::Ended(err));
            true
        }
    })
}

/// Releases the lease `token` may hold on `key` (a poller stopped or the gateway is stopping):
/// now, or once Redis answers again.
pub(super) async fn release(hub: &HubInner, key: &WatchKey, token: &str) {
    if let Some(fleet) = &hub.fleet {
        fleet.release(&Names::of(key), token).await;
    }
}
