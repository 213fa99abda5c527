//! The cash-ins themselves: their domain types, their lifecycle, and the in-memory table that
//! holds them.
//!
//! Lifecycle: `pending` (code issued) → `processing` (cash authorized at the counter) →
//! `completed`; or `failed`; or `expired` (code lapsed before any deposit). Expiry is applied
//! lazily by every operation here *and* by the server's periodic sweep, so whichever runs first
//! the state is right. Pricing is not stored: it is a pure function of the amount and the fee
//! terms (see `pricing`), computed when a cash-in is rendered.

use std::collections::{BTreeMap, HashMap};

use super::clock::Millis;
use super::pricing::{self, Cents, FeeTerms, Ppm};

/// Crockford base32, as ULIDs use: no I, L, O or U to misread.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Processing,
    Completed,
    Failed,
    Expired,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Processing,
            Status::Completed,
            Status::Failed,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubStatus {
    OrderReserved,
    Settled,
    CashDepositExpired,
    CashDepositFailed,
    ProviderOrderFailed,
    ProviderOrderTemplateError,
}

impl SubStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SubStatus::OrderReserved => "order_reserved",
            SubStatus::Settled => "settled",
            SubStatus::CashDepositExpired => "cash_deposit_expired",
            SubStatus::CashDepositFailed => "cash_deposit_failed",
            SubStatus::ProviderOrderFailed => "provider_order_failed",
            SubStatus::ProviderOrderTemplateError => "provider_order_template_error",
        }
    }

    /// The sub-statuses a cash-in can be failed with.
    pub(crate) fn parse_failure(s: &str) -> Option<SubStatus> {
        [
            SubStatus::CashDepositFailed,
            SubStatus::ProviderOrderFailed,
            SubStatus::ProviderOrderTemplateError,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    Usdc,
    Usdt,
}

impl Asset {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Asset::Usdc => "usdc",
            Asset::Usdt => "usdt",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Asset> {
        match s {
            "usdc" => Some(Asset::Usdc),
            "usdt" => Some(Asset::Usdt),
            _ => None,
        }
    }
}

/// Where the crypto goes: exactly one of the three kinds of destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalletRef {
    Wallet(String),
    BlockchainAddress(String),
    ExternalAccount(String),
}

/// One developer fee entry as requested (either spelling parses into this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevFee {
    pub(crate) percentage: Option<Ppm>,
    pub(crate) flat: Option<Cents>,
    pub(crate) wallet: Option<String>,
    pub(crate) payout_asset: Asset,
}

impl DevFee {
    pub(crate) fn terms(&self) -> FeeTerms {
        FeeTerms {
            percentage: self.percentage,
            flat: self.flat,
        }
    }
}

/// A validated create request, with its location already resolved.
#[derive(Debug, Clone)]
pub(crate) struct NewCashIn {
    pub(crate) customer_id: String,
    pub(crate) indicated: Cents,
    pub(crate) dest_asset: Asset,
    pub(crate) network: String,
    pub(crate) wallet: WalletRef,
    pub(crate) location_id: String,
    pub(crate) location_reference: String,
    pub(crate) location_name: String,
    pub(crate) location_address: String,
    pub(crate) sponsor_gas: bool,
    pub(crate) developer_fees: Vec<DevFee>,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// The authorization a simulated counter deposit made.
#[derive(Debug, Clone)]
pub(crate) struct Authorization {
    pub(crate) confirmation_id: String,
    pub(crate) amount: Cents,
}

#[derive(Debug, Clone)]
pub(crate) struct CashIn {
    pub(crate) id: String,
    /// Creation order, to break ties between cash-ins created in the same millisecond.
    pub(crate) seq: u64,
    pub(crate) spec: NewCashIn,
    /// `fee_…` ids, parallel to `spec.developer_fees`.
    pub(crate) fee_ids: Vec<String>,
    pub(crate) status: Status,
    pub(crate) sub_status: Option<SubStatus>,
    /// Six digits, shown as `"483 291"`.
    pub(crate) code: String,
    pub(crate) code_expires_at: Millis,
    pub(crate) created_at: Millis,
    pub(crate) updated_at: Millis,
    pub(crate) completed_at: Option<Millis>,
    pub(crate) authorization: Option<Authorization>,
    /// The amount actually deposited, once committed.
    pub(crate) deposited: Option<Cents>,
    pub(crate) transaction_id: Option<String>,
}

impl CashIn {
    /// The pricing to show: final once deposited, else the estimate from `indicatedAmount`.
    pub(crate) fn quote(&self) -> pricing::Quote {
        let terms: Vec<FeeTerms> = self.spec.developer_fees.iter().map(DevFee::terms).collect();
        pricing::quote(self.deposited.unwrap_or(self.spec.indicated), &terms)
    }

    fn order_key(&self) -> (Millis, u64) {
        (self.created_at, self.seq)
    }
}

/// Why the store refused an operation; the server maps these to HTTP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    /// The cash-in is in a state where this action is not allowed.
    InvalidState {
        status: Status,
        action: &'static str,
    },
    /// A paging cursor names no cash-in.
    UnknownCursor {
        param: &'static str,
    },
    /// A request field contradicts what the sandbox recorded.
    Mismatch {
        field: &'static str,
        message: String,
    },
}

/// Which page of the newest-first list to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    StartingAfter(String),
    EndingBefore(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) customer: Option<String>,
    pub(crate) status: Option<Status>,
    /// Inclusive bounds, in nanoseconds since the epoch.
    pub(crate) created_after: Option<i128>,
    pub(crate) created_before: Option<i128>,
    pub(crate) limit: usize,
    pub(crate) cursor: Option<Cursor>,
}

pub(crate) struct Page<'a> {
    pub(crate) items: Vec<&'a CashIn>,
    pub(crate) has_more: bool,
    pub(crate) next_cursor: Option<String>,
}

/// What a simulated commit sends.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub(crate) code: String,
    pub(crate) cash_in_id: String,
    pub(crate) amount: Cents,
    pub(crate) confirmation_id: String,
    pub(crate) customer_id: Option<String>,
}

/// Every cash-in, plus the seeded generator for their ids and codes.
pub(crate) struct Store {
    cash_ins: HashMap<String, CashIn>,
    next_seq: u64,
    rng: fastrand::Rng,
}

// === impl Store ===

impl Store {
    pub(crate) fn new(seed: u64) -> Store {
        Store {
            cash_ins: HashMap::new(),
            next_seq: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.cash_ins.len()
    }

    /// The status as stored, without applying lazy expiry (lets tests see the sweep's work).
    pub(crate) fn stored_status(&self, id: &str) -> Option<Status> {
        self.cash_ins.get(id).map(|c| c.status)
    }

    /// Moves every pending cash-in whose code has lapsed to `expired`, dated at the lapse.
    pub(crate) fn expire_due(&mut self, now: Millis) -> usize {
        let mut n = 0;
        for ci in self.cash_ins.values_mut() {
            if ci.status == Status::Pending && ci.code_expires_at <= now {
                ci.status = Status::Expired;
                ci.sub_status = Some(SubStatus::CashDepositExpired);
                ci.updated_at = ci.code_expires_at;
                n += 1;
            }
        }
        n
    }

    pub(crate) fn create(&mut self, spec: NewCashIn, now: Millis, code_ttl: Millis) -> &CashIn {
        self.expire_due(now);
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
            created_at: now,
            updated_at: now,
            completed_at: None,
            authorization: None,
            deposited: None,
            transaction_id: None,
        };
        self.cash_ins.entry(id).or_insert(cash_in)
    }

    pub(crate) fn get(&mut self, id: &str, now: Millis) -> Option<&CashIn> {
        self.expire_due(now);
        self.cash_ins.get(id)
    }

    pub(crate) fn list(&mut self, q: &ListQuery, now: Millis) -> Result<Page<'_>, Refusal> {
        self.expire_due(now);
        let cursor_key = match &q.cursor {
            None => None,
            Some(Cursor::StartingAfter(id)) => {
                Some(self.cash_ins.get(id).map(CashIn::order_key).ok_or(
                    Refusal::UnknownCursor {
                        param: "startingAfter",
                    },
                )?)
            }
            Some(Cursor::EndingBefore(id)) => {
                Some(self.cash_ins.get(id).map(CashIn::order_key).ok_or(
                    Refusal::UnknownCursor {
                        param: "endingBefore",
                    },
                )?)
            }
        };
        let mut items: Vec<&CashIn> = self
            .cash_ins
            .values()
            .filter(|c| q.customer.as_ref().is_none_or(|v| &c.spec.customer_id == v))
            .filter(|c| q.status.is_none_or(|s| c.status == s))
            .filter(|c| {
                let t = super::clock::ms_to_nanos(c.created_at);
                q.created_after.is_none_or(|a| t >= a) && q.created_before.is_none_or(|b| t <= b)
            })
            .collect();
        // Newest first; the sequence breaks ties within a millisecond.
        items.sort_by_key(|c| std::cmp::Reverse(c.order_key()));
        let limit = q.limit.max(1);
        let page = match (&q.cursor, cursor_key) {
            (Some(Cursor::EndingBefore(_)), Some(key)) => {
                // The `limit` items just newer than the cursor, still listed newest first;
                // "more" means there are newer ones still, reached from the first item.
                let newer: Vec<&CashIn> =
                    items.into_iter().filter(|c| c.order_key() > key).collect();
                let has_more = newer.len() > limit;
                let start = newer.len().saturating_sub(limit);
                let items: Vec<&CashIn> = newer.into_iter().skip(start).collect();
                let next_cursor = has_more
                    .then(|| items.first().map(|c| c.id.clone()))
                    .flatten();
                Page {
                    items,
                    has_more,
                    next_cursor,
                }
            }
            (_, key) => {
                let mut older: Vec<&CashIn> = items
                    .into_iter()
                    .filter(|c| key.is_none_or(|k| c.order_key() < k))
                    .collect();
                let has_more = older.len() > limit;
                older.truncate(limit);
                let next_cursor = has_more
                    .then(|| older.last().map(|c| c.id.clone()))
                    .flatten();
                Page {
                    items: older,
                    has_more,
                    next_cursor,
                }
            }
        };
        Ok(page)
    }

    /// A new code and a new expiry; the old code dies with it.
    pub(crate) fn refresh(
        &mut self,
        id: &str,
        now: Millis,
        code_ttl: Millis,
    ) -> Result<&CashIn, Refusal> {
        self.expire_due(now);
        let (status, old_code) = match self.cash_ins.get(id) {
            Some(ci) => (ci.status, ci.code.clone()),
            None => return Err(Refusal::NotFound),
        };
        if status != Status::Pending {
            return Err(Refusal::InvalidState {
                status,
                action: "refresh",
            });
        }
        let code = self.new_code(Some(&old_code));
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        ci.code = code;
        ci.code_expires_at = now.saturating_add(code_ttl);
        ci.updated_at = now;
        Ok(ci)
    }

    /// A counter authorizes a deposit against a live code: the cash-in starts processing.
    pub(crate) fn barcode_auth(
        &mut self,
        code: &str,
        amount: Cents,
        now: Millis,
    ) -> Result<(String, Authorization), Refusal> {
        self.expire_due(now);
        let id = self
            .cash_ins
            .values()
            .find(|c| c.status == Status::Pending && c.code == code)
            .map(|c| c.id.clone())
            .ok_or(Refusal::NotFound)?;
        let confirmation_id = self.new_id("cnf_", now);
        let ci = self.cash_ins.get_mut(&id).ok_or(Refusal::NotFound)?;
        let terms: Vec<FeeTerms> = ci.spec.developer_fees.iter().map(DevFee::terms).collect();
        let q = pricing::quote(amount, &terms);
        if q.net <= 0 {
            return Err(Refusal::Mismatch {
                field: "amount",
                message: format!(
                    "fees of {} leave nothing to deliver from {}",
                    pricing::format_cents(q.total),
                    pricing::format_cents(amount)
                ),
            });
        }
        let auth = Authorization {
            confirmation_id,
            amount,
        };
        ci.status = Status::Processing;
        ci.sub_status = None;
        ci.updated_at = now;
        ci.authorization = Some(auth.clone());
        Ok((id, auth))
    }

    /// The counter commits an authorized deposit: final pricing, a transaction, `completed`.
    pub(crate) fn auth_commit(&mut self, c: &Commit, now: Millis) -> Result<Cents, Refusal> {
        self.expire_due(now);
        let transaction_id = self.new_id("txn_", now);
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
        ci.transaction_id = Some(transaction_id);
        ci.completed_at = Some(now);
        ci.updated_at = now;
        Ok(authorized)
    }

    /// Sandbox control: lapse the code now.
    pub(crate) fn force_expire(&mut self, id: &str, now: Millis) -> Result<&CashIn, Refusal> {
        self.expire_due(now);
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        if ci.status != Status::Pending {
            return Err(Refusal::InvalidState {
                status: ci.status,
                action: "expire",
            });
        }
        ci.status = Status::Expired;
        ci.sub_status = Some(SubStatus::CashDepositExpired);
        // The code is dead from now on, and the instructions should say so.
        ci.code_expires_at = ci.code_expires_at.min(now);
        ci.updated_at = now;
        Ok(ci)
    }

    /// Sandbox control: fail a cash-in that has not reached a terminal state.
    pub(crate) fn force_fail(
        &mut self,
        id: &str,
        sub_status: SubStatus,
        now: Millis,
    ) -> Result<&CashIn, Refusal> {
        self.expire_due(now);
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        if !matches!(ci.status, Status::Pending | Status::Processing) {
            return Err(Refusal::InvalidState {
                status: ci.status,
                action: "fail",
            });
        }
        ci.status = Status::Failed;
        ci.sub_status = Some(sub_status);
        ci.updated_at = now;
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
    fn refresh_replaces_the_code_and_pending_lapses_at_expiry() {
        let mut s = Store::new(1);
        let id = s.create(spec("cst_a"), 0, 1_000).id.clone();
        let old = s.get(&id, 0).map(|c| c.code.clone());
        let fresh = s.refresh(&id, 500, 1_000).map(|c| c.code.clone()).ok();
        assert_ne!(old, fresh);
        assert_eq!(s.get(&id, 1_499).map(|c| c.status), Some(Status::Pending));
        let ci = s.get(&id, 1_500).cloned().expect("exists");
        assert_eq!(ci.status, Status::Expired);
        assert_eq!(ci.sub_status, Some(SubStatus::CashDepositExpired));
        assert_eq!(ci.updated_at, 1_500);
        assert!(matches!(
            s.refresh(&id, 1_600, 1_000),
            Err(Refusal::InvalidState { .. })
        ));
        assert_eq!(s.refresh("ci_nope", 0, 1).err(), Some(Refusal::NotFound));
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
