//! The cash-ins themselves: their domain types, their lifecycle, and the in-memory table that
//! holds them.
//!
//! Lifecycle: `pending` (code issued; the code may lapse and be refreshed within the refresh
//! window) → `processing` (cash deposited at the counter; priced on that cash) → `completed`
//! (committed; OMS's transaction delivers the crypto); or `failed`; or `expired` (the refresh
//! window passed before any deposit). Time-driven moves (expiry, a delivery completing after
//! its delay) are applied lazily by every operation here *and* by the server's periodic sweep,
//! so whichever runs first the state is right. Pricing is not stored: it is a pure function of
//! the amount and the fee terms (see `pricing`), computed when a cash-in is rendered. Every
//! change OMS sends a webhook for is recorded in the outbox (`events`).
//!
//! `records` holds the types, `listing` the paged queries, `expiry` the lapse of codes,
//! `delivery` the transaction, `events` the outbox; the table, creation and the deposit flow
//! are here.

mod delivery;
mod events;
mod expiry;
mod listing;
mod records;
mod step;

use std::collections::HashMap;

use crate::clock::{Millis, whole_second};
use crate::pricing::{self, Cents};

pub(crate) use delivery::{
    DEFAULT_FAILURE_CODE, DEFAULT_FAILURE_MESSAGE, DeliveryAction, DeliveryError, DeliveryStep,
};
pub(crate) use events::{Change, EventKind};
pub(crate) use listing::{Cursor, ListQuery};
pub(crate) use records::{
    Asset, Authorization, CashIn, Commit, DevFee, NewCashIn, Refusal, Status, SubStatus, WalletRef,
    fees_leave_nothing,
};

/// Crockford base32, as ULIDs use: no I, L, O or U to misread.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Every cash-in, plus the seeded generator for their ids and codes.
pub(crate) struct Store {
    cash_ins: HashMap<String, CashIn>,
    /// Each transaction's cash-in, for `GET /transactions/{id}`.
    transactions: HashMap<String, String>,
    next_seq: u64,
    rng: fastrand::Rng,
    /// How long a cash-in stays `pending` (refreshable) after its code lapses.
    refresh_window: Millis,
    /// How long a transaction waits at `processing.fundsPulled` before it completes by itself;
    /// none: until a control moves it.
    delivery_delay: Option<Millis>,
    outbox: events::Outbox,
}

// === impl Store ===

impl Store {
    /// An empty table: no refresh window, and transactions wait for a control.
    pub(crate) fn new(seed: u64) -> Store {
        Store {
            cash_ins: HashMap::new(),
            transactions: HashMap::new(),
            next_seq: 0,
            rng: fastrand::Rng::with_seed(seed),
            refresh_window: 0,
            delivery_delay: None,
            outbox: events::Outbox::default(),
        }
    }

    pub(crate) fn set_refresh_window(&mut self, window: Millis) {
        self.refresh_window = window;
    }

    pub(crate) fn set_delivery_delay(&mut self, delay: Option<Millis>) {
        self.delivery_delay = delay;
    }

    /// Applies what time has done by `now`: refresh windows passed, deliveries due.
    pub(crate) fn advance(&mut self, now: Millis) -> usize {
        self.expire_due(now) + self.deliver_due(now)
    }

    /// The changes recorded since the last drain, oldest first.
    pub(crate) fn drain_events(&mut self) -> Vec<Change> {
        self.outbox.drain()
    }

    pub(crate) fn len(&self) -> usize {
        self.cash_ins.len()
    }

    /// The status as stored, without applying lazy expiry (lets tests see the sweep's work).
    pub(crate) fn stored_status(&self, id: &str) -> Option<Status> {
        self.cash_ins.get(id).map(|c| c.status)
    }

    pub(crate) fn create(&mut self, spec: NewCashIn, now: Millis, code_ttl: Millis) -> &CashIn {
        self.advance(now);
        let mut id = self.new_id("ci_", now);
        while self.cash_ins.contains_key(&id) {
            id = self.new_id("ci_", now);
        }
        let fee_ids = spec
            .developer_fees
            .iter()
            .map(|_| self.new_id("fee_", now))
            .collect();
        let code = self.new_code(None);
        let seq = self.next_seq;
        self.next_seq += 1;
        let cash_in = CashIn {
            id: id.clone(),
            seq,
            spec,
            fee_ids,
            status: Status::Pending,
            sub_status: Some(SubStatus::OrderReserved),
            code,
            code_expires_at: now.saturating_add(code_ttl),
            created_at: whole_second(now),
            updated_at: whole_second(now),
            completed_at: None,
            authorization: None,
            deposited: None,
            delivery: None,
        };
        self.cash_ins.entry(id).or_insert(cash_in)
    }

    pub(crate) fn get(&mut self, id: &str, now: Millis) -> Option<&CashIn> {
        self.advance(now);
        self.cash_ins.get(id)
    }

    /// The cash-in whose transaction is `txn`.
    pub(crate) fn by_transaction(&mut self, txn: &str, now: Millis) -> Option<&CashIn> {
        self.advance(now);
        self.cash_ins.get(self.transactions.get(txn)?)
    }

    /// A counter authorizes a deposit against a live code: the cash is deposited, the cash-in
    /// is `processing` and priced on the cash (no longer on the indicated amount).
    pub(crate) fn barcode_auth(
        &mut self,
        code: &str,
        amount: Cents,
        now: Millis,
    ) -> Result<(String, Authorization), Refusal> {
        self.advance(now);
        let id = self
            .cash_ins
            .values()
            .find(|c| expiry::code_live(c, now) && c.code == code)
            .map(|c| c.id.clone())
            .ok_or(Refusal::NotFound)?;
        let confirmation_id = self.new_id("cnf_", now);
        let ci = self.cash_ins.get_mut(&id).ok_or(Refusal::NotFound)?;
        if let Some(message) = fees_leave_nothing(amount, &ci.spec.developer_fees) {
            return Err(Refusal::Mismatch {
                field: "amount",
                message,
            });
        }
        let auth = Authorization {
            confirmation_id,
            amount,
        };
        ci.status = Status::Processing;
        ci.sub_status = None;
        ci.updated_at = whole_second(now);
        ci.authorization = Some(auth.clone());
        ci.deposited = Some(amount);
        Ok((id, auth))
    }

    /// The counter commits an authorized deposit: `completed`, and OMS's transaction starts
    /// delivering (`cash_in.completed` and `transaction.fiatToCrypto.processing`).
    pub(crate) fn auth_commit(&mut self, c: &Commit, now: Millis) -> Result<Cents, Refusal> {
        self.advance(now);
        let delivery = self.new_delivery(now);
        let ci = self
            .cash_ins
            .get_mut(&c.cash_in_id)
            .filter(|ci| {
                ci.authorization
                    .as_ref()
                    .is_some_and(|a| a.confirmation_id == c.confirmation_id)
                    && ci.code == c.code
            })
            .ok_or(Refusal::NotFound)?;
        if ci.status != Status::Processing {
            return Err(Refusal::InvalidState {
                status: ci.status,
                action: "commit",
            });
        }
        if let Some(customer) = &c.customer_id
            && customer != &ci.spec.customer_id
        {
            return Err(Refusal::Mismatch {
                field: "customerId",
                message: "does not match the cash-in's customer".into(),
            });
        }
        let authorized = ci.authorization.as_ref().map_or(0, |a| a.amount);
        if authorized != c.amount {
            return Err(Refusal::Mismatch {
                field: "amount",
                message: format!(
                    "must equal the authorized amount {}",
                    pricing::format_cents(authorized)
                ),
            });
        }
        ci.status = Status::Completed;
        ci.sub_status = Some(SubStatus::Settled);
        ci.deposited = Some(c.amount);
        self.transactions.insert(delivery.id.clone(), ci.id.clone());
        ci.delivery = Some(delivery);
        ci.completed_at = Some(whole_second(now));
        ci.updated_at = whole_second(now);
        let at = whole_second(now);
        self.outbox.push(EventKind::CashInCompleted, ci, at);
        self.outbox
            .push(EventKind::Transaction(DeliveryStep::FundsPulled), ci, at);
        Ok(authorized)
    }

    /// Sandbox control: fail a cash-in that has not reached a terminal state.
    pub(crate) fn force_fail(
        &mut self,
        id: &str,
        sub_status: SubStatus,
        now: Millis,
    ) -> Result<&CashIn, Refusal> {
        self.advance(now);
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        if !matches!(ci.status, Status::Pending | Status::Processing) {
            return Err(Refusal::InvalidState {
                status: ci.status,
                action: "fail",
            });
        }
        ci.status = Status::Failed;
        ci.sub_status = Some(sub_status);
        ci.updated_at = whole_second(now);
        Ok(ci)
    }

    /// `prefix` + 26 Crockford base32 characters, ULID-style: 10 of time, 16 of randomness.
    pub(crate) fn new_id(&mut self, prefix: &str, now: Millis) -> String {
        let mut s = String::with_capacity(prefix.len() + 26);
        s.push_str(prefix);
        let t = u64::try_from(now).unwrap_or(0);
        for i in (0..10).rev() {
            s.push(char::from(CROCKFORD[((t >> (i * 5)) & 31) as usize]));
        }
        for _ in 0..16 {
            s.push(char::from(CROCKFORD[self.rng.usize(0..32)]));
        }
        s
    }

    /// Six digits no pending cash-in is using (nor `avoid`, the code being replaced).
    fn new_code(&mut self, avoid: Option<&str>) -> String {
        let mut code = String::new();
        // A million codes and a handful in use: a clash is rare, and the bound only guards
        // against a pathological table.
        for _ in 0..1_000 {
            code = format!("{:06}", self.rng.u32(0..1_000_000));
            let clash = avoid == Some(code.as_str())
                || self
                    .cash_ins
                    .values()
                    .any(|c| c.status == Status::Pending && c.code == code);
            if !clash {
                break;
            }
        }
        code
    }
}

/// `"483291"` → `"483 291"`, the way the guide shows codes.
pub(crate) fn display_code(code: &str) -> String {
    match (code.get(..3), code.get(3..)) {
        (Some(a), Some(b)) if !b.is_empty() => format!("{a} {b}"),
        _ => code.to_owned(),
    }
}

/// A code as typed at a counter (`"483 291"`, `"483291"`) → its six digits, if it is one.
pub(crate) fn normalize_code(input: &str) -> Option<String> {
    let digits: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // cents as dollars_cents: `200_00` is $200.00
mod tests {
    use super::*;

    /// $200 paid at the counter for `id` with `code`: authorized at 1, committed at 2.
    fn deposit_200(s: &mut Store, id: &str, code: String) {
        let (_, auth) = s.barcode_auth(&code, 200_00, 1).expect("auth");
        let commit = Commit {
            code,
            cash_in_id: id.to_owned(),
            amount: 200_00,
            confirmation_id: auth.confirmation_id,
            customer_id: None,
        };
        s.auth_commit(&commit, 2).expect("commit");
    }

    fn spec(customer: &str) -> NewCashIn {
        NewCashIn {
            customer_id: customer.into(),
            indicated: 200_00,
            dest_asset: Asset::Usdc,
            network: "polygon".into(),
            wallet: WalletRef::Wallet("wlt_1".into()),
            location_id: "loc_1".into(),
            location_reference: "ref".into(),
            location_name: "CVS Pharmacy #4521".into(),
            location_address: "1 Main St, New York, NY 10001".into(),
            sponsor_gas: false,
            developer_fees: vec![],
            metadata: None,
        }
    }

    fn list(store: &mut Store, q: &ListQuery) -> (Vec<String>, bool, Option<String>) {
        let p = store.list(q, 0).expect("list");
        (
            p.items.iter().map(|c| c.id.clone()).collect(),
            p.has_more,
            p.next_cursor,
        )
    }

    #[test]
    fn ids_and_codes_have_their_shapes() {
        let mut s = Store::new(7);
        let ci = s.create(spec("cst_a"), 1_773_685_800_123, 1_000);
        assert!(ci.id.starts_with("ci_"));
        assert_eq!(ci.id.len(), 3 + 26);
        assert!(ci.id[3..].bytes().all(|b| CROCKFORD.contains(&b)));
        assert_eq!(display_code(&ci.code).len(), 7);
        assert_eq!(
            normalize_code(&display_code(&ci.code)),
            Some(ci.code.clone())
        );
        assert_eq!(normalize_code("12 34"), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_codes() {
        let mut a = Store::new(42);
        let mut b = Store::new(42);
        let ca = a.create(spec("cst_a"), 5, 1_000).code.clone();
        let cb = b.create(spec("cst_a"), 5, 1_000).code.clone();
        assert_eq!(ca, cb);
    }

    #[test]
    fn a_lapsed_code_is_refreshable_until_the_window_ends_then_expired() {
        let mut s = Store::new(1);
        s.set_refresh_window(2_000);
        let id = s.create(spec("cst_a"), 0, 1_000).id.clone();
        let old = s.get(&id, 0).map(|c| c.code.clone()).expect("exists");
        // The code lapses at 1 000 ms: dead at the counter, but the cash-in is still pending.
        assert!(s.barcode_auth(&old, 200_00, 1_000).is_err());
        assert_eq!(s.get(&id, 2_999).map(|c| c.status), Some(Status::Pending));
        let fresh = s.refresh(&id, 2_500, 1_000).map(|c| c.code.clone());
        assert!(fresh.as_ref().is_ok_and(|f| *f != old));
        // The new code lives to 3 500 and its window to 5 500.
        assert_eq!(s.get(&id, 5_499).map(|c| c.status), Some(Status::Pending));
        let ci = s.get(&id, 5_500).cloned().expect("exists");
        assert_eq!(ci.status, Status::Expired);
        assert_eq!(ci.sub_status, Some(SubStatus::CashDepositExpired));
        assert_eq!(ci.updated_at, 5_000, "the window's end, in whole seconds");
        assert!(matches!(
            s.refresh(&id, 5_600, 1_000),
            Err(Refusal::InvalidState { .. })
        ));
        assert_eq!(s.refresh("ci_nope", 0, 1).err(), Some(Refusal::NotFound));
        let kinds: Vec<EventKind> = s.drain_events().iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [EventKind::CashInExpired], "only documented events");
    }

    #[test]
    fn without_a_window_the_cash_in_expires_when_its_code_lapses() {
        let mut s = Store::new(1);
        let id = s.create(spec("cst_a"), 0, 1_000).id.clone();
        assert_eq!(s.get(&id, 999).map(|c| c.status), Some(Status::Pending));
        assert_eq!(s.get(&id, 1_000).map(|c| c.status), Some(Status::Expired));
    }

    #[test]
    fn processing_is_priced_on_the_cash_deposited() {
        let mut s = Store::new(1);
        let ci = s.create(spec("cst_a"), 0, 10_000);
        let (id, code) = (ci.id.clone(), ci.code.clone());
        assert_eq!(
            ci.quote().amount,
            200_00,
            "the estimate, from indicatedAmount"
        );
        s.barcode_auth(&code, 150_00, 1).expect("auth");
        let ci = s.get(&id, 2).expect("exists");
        assert_eq!(ci.status, Status::Processing);
        assert_eq!(ci.deposited, Some(150_00));
        assert_eq!(ci.quote().amount, 150_00);
        assert_eq!(ci.quote().net, 150_00 - 3_00 - 1_00);
    }

    #[test]
    fn the_transaction_moves_by_controls_and_by_its_delay() {
        let mut s = Store::new(1);
        let ci = s.create(spec("cst_a"), 0, 10_000);
        let (id, code) = (ci.id.clone(), ci.code.clone());
        assert!(matches!(
            s.drive_delivery(&id, DeliveryAction::Complete, 1),
            Err(Refusal::InvalidState { .. })
        ));
        deposit_200(&mut s, &id, code);
        let step = |s: &mut Store, now| {
            s.get(&id, now)
                .and_then(|c| c.delivery.as_ref())
                .map(|d| d.step)
        };
        assert_eq!(step(&mut s, 3), Some(DeliveryStep::FundsPulled));
        s.drive_delivery(&id, DeliveryAction::Review, 4)
            .expect("review");
        let error = DeliveryError {
            code: DEFAULT_FAILURE_CODE.into(),
            message: DEFAULT_FAILURE_MESSAGE.into(),
        };
        s.drive_delivery(&id, DeliveryAction::Fail(error), 5)
            .expect("fail");
        assert_eq!(
            s.drive_delivery(&id, DeliveryAction::Complete, 6).err(),
            Some(Refusal::DeliveryState {
                step: "failed.refundPending",
                action: "complete"
            })
        );
        s.drive_delivery(&id, DeliveryAction::Refund, 7)
            .expect("refund");
        assert_eq!(step(&mut s, 8), Some(DeliveryStep::RefundCompleted));
        let names: Vec<String> = s
            .drain_events()
            .iter()
            .map(|c| c.kind.name(crate::Spelling::Guide))
            .collect();
        assert_eq!(
            names,
            [
                "cash_in.completed",
                "transaction.fiatToCrypto.processing",
                "transaction.fiatToCrypto.underReview",
                "transaction.fiatToCrypto.failed",
                "transaction.fiatToCrypto.refundCompleted",
            ]
        );

        // With a delay, a transaction left alone completes by itself.
        let mut s = Store::new(2);
        s.set_delivery_delay(Some(1_000));
        let ci = s.create(spec("cst_b"), 0, 10_000);
        let (id, code) = (ci.id.clone(), ci.code.clone());
        deposit_200(&mut s, &id, code);
        let delivery = |s: &mut Store, now| s.get(&id, now).and_then(|c| c.delivery.clone());
        assert_eq!(
            delivery(&mut s, 1_001).map(|d| d.step),
            Some(DeliveryStep::FundsPulled)
        );
        let done = delivery(&mut s, 1_002).expect("delivery");
        assert_eq!(done.step, DeliveryStep::Completed);
        assert!(
            done.tx_hash
                .is_some_and(|h| h.len() == 66 && h.starts_with("0x"))
        );
    }

    #[test]
    fn deposit_flow_authorizes_then_commits() {
        let mut s = Store::new(1);
        let ci = s.create(spec("cst_a"), 0, 10_000);
        let (id, code) = (ci.id.clone(), ci.code.clone());
        assert_eq!(
            s.barcode_auth("000000x", 200_00, 1).err(),
            Some(Refusal::NotFound)
        );
        let (found, auth) = s.barcode_auth(&code, 150_00, 1).expect("auth");
        assert_eq!(found, id);
        // The code is used up: a second authorization finds nothing.
        assert!(s.barcode_auth(&code, 150_00, 2).is_err());
        let mut commit = Commit {
            code: code.clone(),
            cash_in_id: id.clone(),
            amount: 151_00,
            confirmation_id: auth.confirmation_id.clone(),
            customer_id: None,
        };
        assert!(matches!(
            s.auth_commit(&commit, 3),
            Err(Refusal::Mismatch {
                field: "amount",
                ..
            })
        ));
        commit.amount = 150_00;
        assert_eq!(s.auth_commit(&commit, 3), Ok(150_00));
        let ci = s.get(&id, 4).cloned().expect("exists");
        assert_eq!(ci.status, Status::Completed);
        assert_eq!(ci.deposited, Some(150_00));
        assert_eq!(ci.quote().net, 150_00 - 3_00 - 1_00);
        assert!(matches!(
            s.auth_commit(&commit, 5),
            Err(Refusal::InvalidState { .. })
        ));
    }

    #[test]
    fn listing_pages_newest_first_in_both_directions() {
        let mut s = Store::new(3);
        // Five in the same millisecond: only the sequence orders them.
        let ids: Vec<String> = (0..5)
            .map(|_| s.create(spec("cst_a"), 0, 10_000).id.clone())
            .collect();
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        let mut q = ListQuery {
            limit: 2,
            ..ListQuery::default()
        };
        let (page, more, next) = list(&mut s, &q);
        assert_eq!(page, newest_first[..2]);
        assert!(more);
        assert_eq!(next.as_deref(), Some(newest_first[1].as_str()));
        q.cursor = next.map(Cursor::StartingAfter);
        let (page, _, next) = list(&mut s, &q);
        assert_eq!(page, newest_first[2..4]);
        q.cursor = next.map(Cursor::StartingAfter);
        let (page, more, next) = list(&mut s, &q);
        assert_eq!(page, newest_first[4..]);
        assert!(!more);
        assert_eq!(next, None);
        q.cursor = Some(Cursor::EndingBefore(newest_first[4].clone()));
        let (page, more, next) = list(&mut s, &q);
        assert_eq!(page, newest_first[2..4]);
        assert!(more);
        assert_eq!(next.as_deref(), Some(newest_first[2].as_str()));
        q.cursor = Some(Cursor::StartingAfter("ci_unknown".into()));
        assert!(matches!(
            s.list(&q, 0).err(),
            Some(Refusal::UnknownCursor { .. })
        ));
    }
}
