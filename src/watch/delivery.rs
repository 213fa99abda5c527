//! The second layer of a cash-in: its delivery (the fiat-to-crypto transaction OMS creates when
//! the deposit is received), as verified `transaction.fiatToCrypto.*` webhooks carry it, as
//! OMS's `GET /transactions/{id}` answers it when OMS serves that read (undocumented: probed at
//! the first transaction a watch waits on, see [`crate::oms::TransactionReads`]), and as the
//! sandbox's controls answer it. It is kept here per cash-in, never older ([`super::version::DeliveryVersion`]: a final state first,
//! then failed, then OMS's `updatedAt`, then the state order), and merged into every cash-in
//! the gateway returns or watches.
//!
//! In process, a map of the last [`MAX_LOCAL`] cash-ins' deliveries (the oldest learned go
//! first). With `--redis-url`, `oms-gateway:delivery:{<cash-in id>}` holds the fleet's: its
//! [`DeliveryVersion`] key, then the `Delivery`'s protobuf bytes, written compare-and-set on
//! the version, kept [`SHARED_TTL`] after its last write. A replica reads it for a cash-in that
//! has a transaction whose delivery it has not seen end (one `MGET` for a page), so another
//! replica's webhook, or one received before this replica restarted, is shown all the same.
//! Without Redis a restarted replica knows no delivery until OMS's next transaction webhook.

use super::fair::Ticket;
use super::version::{DELIVERY_KEY_LEN, DeliveryVersion, Item, newer_delivery};
use super::{HubInner, Observation, WatchHub, WatchKey, diff, fleet, observe};
use crate::oms::TransactionReads;
use crate::proto::v1 as pb;
use crate::redis::{PREFIX, SharedState};
use prost::Message;
use redis::Script;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Deliveries kept in process (a few hundred bytes each).
pub const MAX_LOCAL: usize = 100_000;
/// How long the fleet keeps a delivery after its last write.
pub const SHARED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Stores a delivery unless the stored one is as new; publishes a wake-up on the cash-in's and
/// the customer's watch channels when it did. KEYS: the delivery; ARGV: version key + bytes, ms,
/// channels...
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local old = redis.call('GET', KEYS[1])
if old and string.sub(old, 1, 22) >= string.sub(ARGV[1], 1, 22) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, #ARGV do redis.call('PUBLISH', ARGV[i], 'changed') end
return 1",
    )
});

/// The deliveries known to this replica (and, with a fleet, its Redis).
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    local: Mutex<Local>,
    /// Deliveries learned (newer than what this replica knew), by `DeliveryStatus` value
    /// (0 unknown, 1 processing, 2 under review, 3 completed, 4 failed, 5 refund completed).
    counts: [AtomicU64; 6],
}

#[derive(Debug, Default)]
struct Local {
    by_cash_in: HashMap<String, Arc<pb::Delivery>>,
    /// Cash-in ids in the order first learned, to forget the oldest past [`MAX_LOCAL`].
    order: VecDeque<String>,
}

fn key(cash_in: &str) -> String {
    format!("{PREFIX}delivery:{{{cash_in}}}")
}

// === impl Deliveries ===

impl Deliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The delivery of `cash_in` known here.
    pub fn get(&self, cash_in: &str) -> Option<Arc<pb::Delivery>> {
        self.lock().by_cash_in.get(cash_in).cloned()
    }

    /// Keeps `delivery` of `cash_in` unless the one known is as new; whether it was newer.
    pub fn record(&self, cash_in: &str, delivery: &pb::Delivery) -> bool {
        let mut local = self.lock();
        let known = local.by_cash_in.get(cash_in).map(|d| &**d);
        if known.is_some() && newer_delivery(known, Some(delivery)) == known {
            return false;
        }
        let fresh = local
            .by_cash_in
            .insert(cash_in.to_owned(), Arc::new(delivery.clone()))
            .is_none();
        if fresh {
            local.order.push_back(cash_in.to_owned());
            while local.order.len() > MAX_LOCAL {
                if let Some(oldest) = local.order.pop_front() {
                    local.by_cash_in.remove(&oldest);
                }
            }
        }
        true
    }

    /// Shares `delivery` of `cash_in` with the fleet (compare-and-set), waking the watch
    /// channels `channels` when it is news there; bounded by `--redis-timeout`.
    pub async fn share(
        &self,
        shared: &SharedState,
        cash_in: &str,
        delivery: &pb::Delivery,
        channels: &[String],
    ) {
        let mut value = DeliveryVersion::of(delivery).key().into_bytes();
        value.extend(delivery.encode_to_vec());
        let mut store = STORE.prepare_invoke();
        store
            .key(key(cash_in))
            .arg(value)
            .arg(SHARED_TTL.as_millis() as u64);
        for channel in channels {
            store.arg(channel);
        }
        if shared.invoke::<i64>(&store).await.is_none() {
            shared.fell_back("delivery");
        }
    }

    /// Sets each cash-in's delivery to the newest known: its own, this replica's, and (with a
    /// fleet) Redis's for those with a transaction whose delivery is not known here to have
    /// ended (one `MGET`; skipped while Redis is down).
    pub async fn attach(&self, shared: Option<&SharedState>, cash_ins: &mut [pb::CashIn]) {
        for cash_in in cash_ins.iter_mut() {
            self.attach_local(cash_in);
        }
        let Some(shared) = shared else { return };
        let ask: Vec<usize> = (0..cash_ins.len())
            .filter(|&i| diff::awaits_delivery(&cash_ins[i]))
            .collect();
        if ask.is_empty() || !shared.is_up() {
            return;
        }
        let mut mget = redis::cmd("MGET");
        for &i in &ask {
            mget.arg(key(&cash_ins[i].id));
        }
        let Some(values) = shared.query::<Vec<Option<Vec<u8>>>>(&mget).await else {
            return;
        };
        for (&i, value) in ask.iter().zip(values) {
            let Some(delivery) = value
                .as_deref()
                .and_then(|v| v.get(DELIVERY_KEY_LEN..))
                .and_then(|bytes| pb::Delivery::decode(bytes).ok())
            else {
                continue;
            };
            self.record(&cash_ins[i].id, &delivery);
            self.attach_local(&mut cash_ins[i]);
        }
    }

    /// Sets `cash_in`'s delivery to the newer of its own and the one known here.
    pub fn attach_local(&self, cash_in: &mut pb::CashIn) {
        if let Some(known) = self.newer_for(cash_in) {
            cash_in.delivery = Some((*known).clone());
        }
    }

    /// The delivery known here for `cash_in`, if it is newer than (and not the same as) the one
    /// it carries: one lookup, and nothing to copy when the cash-in is up to date.
    pub fn newer_for(&self, cash_in: &pb::CashIn) -> Option<Arc<pb::Delivery>> {
        let known = self.get(&cash_in.id)?;
        let newer = newer_delivery(cash_in.delivery.as_ref(), Some(&known)) == Some(&*known)
            && cash_in.delivery.as_ref() != Some(&*known);
        newer.then_some(known)
    }
}

/// Brings the deliveries of the cash-ins `sender`'s observation holds up to the fleet's (one
/// `MGET` for those with a transaction whose delivery is not known to have ended), after the
/// observation went out, so a slow Redis never delays the cash-in layer. Nothing without a
/// fleet or while Redis is down.
pub(super) async fn refresh(hub: &HubInner, sender: &watch::Sender<Observation>) {
    let Some(fleet) = &hub.fleet else { return };
    let current = sender.borrow().items();
    if !current.iter().any(|c| diff::awaits_delivery(&c.0)) {
        return;
    }
    let (mut cash_ins, learned): (Vec<pb::CashIn>, Vec<u64>) = current
        .into_iter()
        .map(|(c, l)| (Arc::unwrap_or_clone(c), l))
        .unzip();
    hub.deliveries
        .attach(Some(fleet.state()), &mut cash_ins)
        .await;
    observe(
        sender,
        cash_ins.into_iter().map(Arc::new).zip(learned).collect(),
        None,
    );
}

/// Reads the delivery of `cash_in` (terminal, its delivery still to come) back from OMS, when
/// OMS serves `GET /transactions/{id}` (or it is not known yet: this is the probe), taking a
/// permit of the poll budget as a poll does, and publishes what it finds as a webhook's would
/// be. A failed read is left to the next turn.
pub(super) async fn read_back(hub: &Arc<HubInner>, cash_in: &pb::CashIn, ticket: &Ticket) {
    if hub.oms.transaction_reads() == TransactionReads::NotServed {
        return;
    }
    let transaction = cash_in
        .delivery
        .as_ref()
        .map(|d| d.transaction_id.as_str())
        .or(cash_in.transaction_id.as_deref());
    let Some(transaction) = transaction else {
        return;
    };
    fleet::acquire(hub, ticket).await;
    let hub = WatchHub {
        inner: Arc::clone(hub),
    };
    let deadline = Instant::now() + hub.inner.poll_timeout;
    hub.read_and_learn(cash_in, transaction, deadline).await;
}

/// A customer's poll turn: reads back the delivery of one of its cash-ins still awaiting one
/// (picked at random, so each gets its turn), as [`read_back`] does; at most one read per poll,
/// so a customer's history costs at most as many upstream requests again as its polls.
pub(super) async fn read_back_one(
    hub: &Arc<HubInner>,
    sender: &watch::Sender<Observation>,
    ticket: &Ticket,
) {
    if hub.oms.transaction_reads() == TransactionReads::NotServed {
        return;
    }
    let awaiting: Vec<Arc<pb::CashIn>> = sender
        .borrow()
        .items()
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| diff::is_terminal(c.status) && diff::awaits_delivery(c))
        .collect();
    if awaiting.is_empty() {
        return;
    }
    let pick = &awaiting[fastrand::usize(..awaiting.len())];
    read_back(hub, pick, ticket).await;
}

impl HubInner {
    /// See [`WatchHub::follows_deliveries`].
    pub(super) fn follows_deliveries(&self) -> bool {
        self.webhooks || self.oms.transaction_reads() != TransactionReads::NotServed
    }
}

// === impl WatchHub ===

impl WatchHub {
    /// Whether the gateway can learn deliveries: it receives OMS's webhooks, or OMS serves (or
    /// may serve: not probed yet) `GET /transactions/{id}`. Without, watches follow the cash-in
    /// layer only; a stream opened before the probe found no read ends at the cash-in's terminal
    /// state when it does.
    pub fn follows_deliveries(&self) -> bool {
        self.inner.follows_deliveries()
    }

    /// Sets each cash-in's delivery to the newest the gateway (or the fleet) knows.
    pub async fn attach_deliveries(&self, cash_ins: &mut [pb::CashIn]) {
        let shared = self.inner.fleet.as_ref().map(|f| f.state());
        self.inner.deliveries.attach(shared, cash_ins).await;
    }

    /// GetCashIn's share of the transaction read: with no webhook endpoint (so no other source)
    /// and OMS serving the read (or not probed yet), a terminal cash-in whose delivery is not
    /// known to be over has its transaction read now (bounded by `deadline` and one poll
    /// timeout), kept and published as a watch's read would be, and set on `cash_in`. A failed
    /// read leaves the cash-in as it was: it is still the answer.
    pub async fn read_delivery_now(&self, cash_in: &mut pb::CashIn, deadline: Instant) {
        let inner = &self.inner;
        if inner.webhooks
            || inner.oms.transaction_reads() == TransactionReads::NotServed
            || !diff::is_terminal(cash_in.status)
            || !diff::awaits_delivery(cash_in)
        {
            return;
        }
        let Some(transaction) = cash_in.transaction_id.clone() else {
            return;
        };
        let deadline = deadline.min(Instant::now() + inner.poll_timeout);
        if self.read_and_learn(cash_in, &transaction, deadline).await {
            inner.deliveries.attach_local(cash_in);
        }
    }

    /// Reads `transaction` (of `cash_in`) with OMS's transaction read and learns it as a
    /// webhook's would be; whether a delivery came back. A failed read is logged (debug) and
    /// left to the caller's next turn.
    async fn read_and_learn(
        &self,
        cash_in: &pb::CashIn,
        transaction: &str,
        deadline: Instant,
    ) -> bool {
        let read = self
            .inner
            .oms
            .read_delivery(transaction, &cash_in.id, deadline)
            .await;
        match read {
            Ok(Some(delivery)) => {
                let customer = Some(cash_in.customer_id.as_str()).filter(|c| !c.is_empty());
                self.learned_delivery(&cash_in.id, customer, &delivery, "transaction read")
                    .await;
                true
            }
            Ok(None) => false,
            Err(err) => {
                tracing::debug!(cash_in = %cash_in.id, error = %err, "reading the delivery failed");
                false
            }
        }
    }

    /// Where deliveries come from, as `/readyz` says it (one line, no newline).
    pub fn delivery_sources(&self) -> &'static str {
        let webhooks = self.inner.webhooks;
        match (webhooks, self.inner.oms.transaction_reads()) {
            (true, TransactionReads::Served) => {
                "deliveries: from OMS's transaction webhooks, reconciled by GET /transactions/{id}"
            }
            (true, TransactionReads::NotServed) => {
                "deliveries: from OMS's transaction webhooks only (OMS does not serve GET /transactions/{id})"
            }
            (true, TransactionReads::Unknown) => {
                "deliveries: from OMS's transaction webhooks (GET /transactions/{id} not probed yet)"
            }
            (false, TransactionReads::Served) => {
                "deliveries: read with GET /transactions/{id} (no webhook endpoint: changes are seen at the poll interval)"
            }
            (false, TransactionReads::NotServed) => {
                "deliveries: not followed: no webhook endpoint (--webhook-secret-file) and OMS does not serve GET /transactions/{id}; watches end at the cash-in's terminal state"
            }
            (false, TransactionReads::Unknown) => {
                "deliveries: GET /transactions/{id} not probed yet (no webhook endpoint: without that read, no delivery is followed)"
            }
        }
    }

    /// Deliveries learned by this replica, by `DeliveryStatus` value (see the metric).
    pub fn deliveries_learned(&self) -> [u64; 6] {
        let counts = &self.inner.deliveries.counts;
        std::array::from_fn(|i| counts[i].load(Ordering::Relaxed))
    }

    /// The delivery of cash-in `cash_in` (of `customer`, when known) from `source` (a verified
    /// webhook, OMS's transaction read, or the sandbox's control): kept unless what is known is
    /// as new (then `false`: nothing changes), counted (a failed one also in a WARN line, ids
    /// only), shared with the fleet (returns once Redis has it, bounded by `--redis-timeout`),
    /// and published to this replica's watchers of the cash-in and of its customer at once.
    pub async fn learned_delivery(
        &self,
        cash_in: &str,
        customer: Option<&str>,
        delivery: &pb::Delivery,
        source: &'static str,
    ) -> bool {
        let inner = &self.inner;
        if !inner.deliveries.record(cash_in, delivery) {
            return false;
        }
        let status = usize::try_from(delivery.status)
            .ok()
            .filter(|s| *s < inner.deliveries.counts.len())
            .unwrap_or(0);
        inner.deliveries.counts[status].fetch_add(1, Ordering::Relaxed);
        if delivery.status == pb::DeliveryStatus::Failed as i32 {
            tracing::warn!(
                cash_in,
                transaction_id = %crate::validate::loggable(&delivery.transaction_id),
                source,
                "a cash-in's delivery failed after the deposit; OMS refunds the cash"
            );
        }
        let mut keys = vec![WatchKey::CashIn(cash_in.to_owned())];
        keys.extend(customer.map(|c| WatchKey::Customer(c.to_owned())));
        let pollers: Vec<_> = {
            let pollers = inner.pollers.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .filter_map(|k| pollers.get(k).and_then(std::sync::Weak::upgrade))
                .collect()
        };
        for poller in pollers {
            let current = poller.sender.borrow().items();
            let items: Vec<Item> = current
                .into_iter()
                .filter(|(c, _)| c.id == cash_in)
                .map(|(c, learned)| {
                    let mut c = (*c).clone();
                    c.delivery = Some(delivery.clone());
                    (Arc::new(c), learned)
                })
                .collect();
            if !items.is_empty() {
                observe(&poller.sender, items, None);
            }
        }
        if let Some(fleet) = &inner.fleet {
            let channels: Vec<String> = keys.iter().map(fleet::Names::channel_of).collect();
            inner
                .deliveries
                .share(fleet.state(), cash_in, delivery, &channels)
                .await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::DeliveryStatus as S;

    fn delivery(status: S, updated: i64) -> pb::Delivery {
        pb::Delivery {
            transaction_id: "txn_1".into(),
            status: status as i32,
            updated_at: Some(prost_types::Timestamp {
                seconds: updated,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_delivery_never_goes_back_by_time_or_by_state() {
        let known = Deliveries::default();
        assert!(known.record("ci_1", &delivery(S::Processing, 10)));
        assert!(known.record("ci_1", &delivery(S::Failed, 12)));
        // Older, then the same second but earlier in the lifecycle: nothing changes.
        assert!(!known.record("ci_1", &delivery(S::Processing, 11)));
        assert!(!known.record("ci_1", &delivery(S::UnderReview, 12)));
        // Processing with a later time than the failure still does not undo it.
        assert!(!known.record("ci_1", &delivery(S::Processing, 20)));
        assert!(known.record("ci_1", &delivery(S::RefundCompleted, 12)));
        assert!(!known.record("ci_1", &delivery(S::Completed, 30)));
        let mut cash_in = pb::CashIn {
            id: "ci_1".into(),
            delivery: Some(delivery(S::Processing, 10)),
            ..Default::default()
        };
        known.attach_local(&mut cash_in);
        assert_eq!(cash_in.delivery.unwrap().status, S::RefundCompleted as i32);
    }
}
