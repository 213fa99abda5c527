//! The order of observations, so that no stream, local or fleet, ever goes back in time.
//!
//! Every observation of a cash-in carries a [`Version`]: a terminal state first (nothing leaves
//! one), then OMS's `updatedAt`, then the lifecycle rank of the status (pending, processing, a
//! terminal state), then when the gateway learned it (`learned`, Unix milliseconds). `learned`
//! is when a read was *sent* (its answer is at least that new) or when a mutation's answer
//! *arrived* (the state includes the mutation): so a poll sent before a RefreshCashIn was
//! answered can never replace the refreshed state when both carry the same `updatedAt` second,
//! and a poll sent after it always may. Replicas compare `learned` across the fleet, so their
//! clocks are assumed in step to well under a poll interval (NTP).
//!
//! [`merge`] folds what was just learned into what an observation holds, cash-in by cash-in,
//! keeping the newer of each; a version is also a fixed-width string ([`Version::key`]) that
//! Redis scripts compare, so the fleet's shared observations are written compare-and-set.

use crate::proto::v1 as pb;
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of [`Version::key`].
pub const KEY_LEN: usize = 42;
/// How many cash-ins a merged customer observation keeps at most (what its polls read, plus
/// cash-ins created meanwhile).
pub const MAX_ITEMS: usize = 600;

/// A cash-in as an observation holds it: the state, and when the gateway learned it.
pub type Item = (Arc<pb::CashIn>, u64);

/// Now, as a `learned` stamp (Unix milliseconds).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The lifecycle rank of a status: later states rank higher; unknown values lowest.
fn rank(status: i32) -> u8 {
    match pb::CashInStatus::try_from(status) {
        Ok(pb::CashInStatus::Pending) => 1,
        Ok(pb::CashInStatus::Processing) => 2,
        Ok(pb::CashInStatus::Completed | pb::CashInStatus::Failed | pb::CashInStatus::Expired) => 3,
        _ => 0,
    }
}

/// How new an observation of one cash-in is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    terminal: bool,
    /// `updatedAt` in nanoseconds since the epoch; `None` when OMS sent none.
    updated: Option<u64>,
    rank: u8,
    learned: u64,
}

impl Version {
    /// The version of `cash_in` learned at `learned`.
    pub fn of(cash_in: &pb::CashIn, learned: u64) -> Self {
        let updated = cash_in.updated_at.map(|t| {
            u64::try_from(t.seconds)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(t.nanos).unwrap_or(0))
        });
        let rank = rank(cash_in.status);
        Self {
            terminal: rank == 3,
            updated,
            rank,
            learned,
        }
    }

    /// The version as a string of [`KEY_LEN`] digits whose byte order is the version order (a
    /// missing `updatedAt` counts as the oldest), for Redis scripts to compare.
    pub fn key(&self) -> String {
        format!(
            "{}{:020}{}{:020}",
            u8::from(self.terminal),
            self.updated.unwrap_or(0),
            self.rank,
            self.learned
        )
    }

    /// The version listed first in a key, with only `learned` known (a customer listing's).
    pub fn listed_at(learned: u64) -> String {
        format!("{:0width$}", learned, width = KEY_LEN)
    }

    /// `learned` of a key made by [`Self::key`] or [`Self::listed_at`].
    pub fn learned_of(key: &[u8]) -> Option<u64> {
        let digits = key.get(KEY_LEN - 20..KEY_LEN)?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Terminal first, then `updatedAt` (when both have one), the rank, and `learned`.
    fn cmp(&self, other: &Self) -> Ordering {
        let updated = match (self.updated, other.updated) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => Ordering::Equal,
        };
        self.terminal
            .cmp(&other.terminal)
            .then(updated)
            .then(self.rank.cmp(&other.rank))
            .then(self.learned.cmp(&other.learned))
    }
}

fn version(item: &Item) -> Version {
    Version::of(&item.0, item.1)
}

/// How far along a delivery is, for [`DeliveryVersion`]: nothing leaves a final state, and a
/// failed delivery never goes back to processing.
fn delivery_phase(status: i32) -> u8 {
    use pb::DeliveryStatus as S;
    match S::try_from(status) {
        Ok(S::Completed | S::RefundCompleted) => 2,
        Ok(S::Failed) => 1,
        _ => 0,
    }
}

/// The lifecycle rank of a delivery status within its phase; unknown values lowest.
fn delivery_rank(status: i32) -> u8 {
    use pb::DeliveryStatus as S;
    match S::try_from(status) {
        Ok(S::Processing) => 1,
        Ok(S::UnderReview) => 2,
        Ok(S::Failed) => 3,
        Ok(S::Completed) => 4,
        Ok(S::RefundCompleted) => 5,
        _ => 0,
    }
}

/// How new a state of a delivery (the cash-in's second layer) is: a final state first
/// (completed, refund completed: never left), then failed, then OMS's `updatedAt`, then the
/// state order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeliveryVersion {
    phase: u8,
    /// `updatedAt` in nanoseconds since the epoch (0 when OMS sent none).
    updated: u64,
    rank: u8,
}

impl DeliveryVersion {
    /// The version of `delivery`.
    pub fn of(delivery: &pb::Delivery) -> Self {
        let phase = delivery_phase(delivery.status);
        Self {
            phase,
            // Nothing leaves a final state, whatever its time: the first one learned stays.
            updated: if phase == 2 {
                0
            } else {
                nanos(delivery.updated_at)
            },
            rank: delivery_rank(delivery.status),
        }
    }

    /// The version as a string of [`DELIVERY_KEY_LEN`] digits whose byte order is the version
    /// order, for Redis scripts to compare.
    pub fn key(&self) -> String {
        format!("{}{:020}{}", self.phase, self.updated, self.rank)
    }
}

/// Length of [`DeliveryVersion::key`].
pub const DELIVERY_KEY_LEN: usize = 22;

fn nanos(t: Option<prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| {
        u64::try_from(t.seconds)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.nanos).unwrap_or(0))
    })
}

/// The newer of two states of one delivery (`a` when neither is newer); a known delivery over
/// none.
pub fn newer_delivery<'a>(
    a: Option<&'a pb::Delivery>,
    b: Option<&'a pb::Delivery>,
) -> Option<&'a pb::Delivery> {
    match (a, b) {
        (Some(a), Some(b)) if DeliveryVersion::of(b) > DeliveryVersion::of(a) => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// What `current` becomes with `new` learned, layer by layer: the newer cash-in (by
/// [`Version`]; the current `Arc` when it is not older, or when the same state is learned again,
/// with the newer stamp) and the newer delivery (by [`DeliveryVersion`]), so neither layer ever
/// goes back, whichever source brought it. The current `Arc` whenever the result says the same.
fn combine(current: &Item, new: Item) -> Item {
    let base = if version(current) >= version(&new) {
        current.clone()
    } else if *current.0 == *new.0 {
        (current.0.clone(), new.1)
    } else {
        new.clone()
    };
    let best = newer_delivery(current.0.delivery.as_ref(), new.0.delivery.as_ref());
    if base.0.delivery.as_ref() == best {
        return base;
    }
    let mut cash_in = (*base.0).clone();
    cash_in.delivery = best.cloned();
    if cash_in == *current.0 {
        return (current.0.clone(), base.1);
    }
    (Arc::new(cash_in), base.1)
}

/// What `old` becomes with `new` learned: for each cash-in in both, the newer state (the old
/// one's `Arc` when it is not older, so an unchanged item stays pointer-equal, and in its
/// place). Cash-ins only in `new` come first (newest first, as OMS lists them). Cash-ins only in
/// `old` stay, unless `new` is a complete listing sent at `listed` (a poll of the resource) and
/// they were learned before it: then they left the listing.
pub fn merge(old: &[Item], new: Vec<Item>, listed: Option<u64>) -> Vec<Item> {
    let find = |id: &str| old.iter().find(|o| o.0.id == id);
    let newer = |item: Item| match find(&item.0.id) {
        Some(current) => combine(current, item),
        None => item,
    };
    let mut merged: Vec<Item> = Vec::with_capacity(old.len().max(new.len()) + 1);
    match listed {
        Some(sent) => {
            let named: std::collections::HashSet<&str> =
                new.iter().map(|i| i.0.id.as_str()).collect();
            // Cash-ins the listing does not name but that were learned after it was sent (a
            // create answered meanwhile) lead it: they are newer than everything in it.
            merged.extend(
                old.iter()
                    .filter(|o| !named.contains(o.0.id.as_str()) && o.1 > sent)
                    .cloned(),
            );
            drop(named);
            merged.extend(new.into_iter().map(newer));
        }
        None => {
            let (known, unknown): (Vec<Item>, Vec<Item>) =
                new.into_iter().partition(|i| find(&i.0.id).is_some());
            merged.extend(unknown);
            merged.extend(
                old.iter()
                    .map(|o| match known.iter().find(|k| k.0.id == o.0.id) {
                        Some(k) => combine(o, k.clone()),
                        None => o.clone(),
                    }),
            );
        }
    }
    merged.truncate(MAX_ITEMS);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::CashInStatus::{Completed, Expired, Pending, Processing};

    fn cash_in(id: &str, status: pb::CashInStatus, updated: i64, code: &str) -> Arc<pb::CashIn> {
        Arc::new(pb::CashIn {
            id: id.into(),
            status: status as i32,
            updated_at: Some(prost_types::Timestamp {
                seconds: updated,
                nanos: 0,
            }),
            deposit_instructions: Some(pb::CashInDepositInstructions {
                code: code.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn code(item: &Item) -> &str {
        &item.0.deposit_instructions.as_ref().unwrap().code
    }

    #[test]
    fn a_poll_sent_before_a_refresh_in_the_same_second_does_not_bring_the_revoked_code_back() {
        // The refresh's answer arrived at 1_000 ms; a poll sent at 990 ms carries the old code
        // with the same updatedAt second.
        let refreshed = vec![(cash_in("ci_1", Pending, 7, "NEW"), 1_000)];
        let stale = vec![(cash_in("ci_1", Pending, 7, "OLD"), 990)];
        let merged = merge(&refreshed, stale, Some(990));
        assert_eq!(code(&merged[0]), "NEW");
        // A poll sent after the answer arrived is taken (it may carry a change of that second).
        let later = vec![(cash_in("ci_1", Pending, 7, "NEWER"), 1_001)];
        assert_eq!(code(&merge(&refreshed, later, Some(1_001))[0]), "NEWER");
    }

    #[test]
    fn terminal_states_are_never_left_and_updated_at_wins_over_when_learned() {
        let expired = vec![(cash_in("ci_1", Expired, 5, "X"), 100)];
        let pending = vec![(cash_in("ci_1", Pending, 9, "X"), 200)];
        assert_eq!(
            merge(&expired, pending, Some(200))[0].0.status,
            Expired as i32
        );
        let processing = vec![(cash_in("ci_1", Processing, 6, "X"), 100)];
        let older = vec![(cash_in("ci_1", Pending, 5, "X"), 500)];
        assert_eq!(
            merge(&processing, older, Some(500))[0].0.status,
            Processing as i32
        );
        let newer = vec![(cash_in("ci_1", Completed, 7, "X"), 50)];
        assert_eq!(
            merge(&processing, newer, Some(50))[0].0.status,
            Completed as i32
        );
        // Same second: the lifecycle order decides.
        let same = vec![(cash_in("ci_1", Pending, 6, "X"), 900)];
        assert_eq!(
            merge(&processing, same, Some(900))[0].0.status,
            Processing as i32
        );
    }

    #[test]
    fn a_customer_listing_keeps_cash_ins_created_after_it_was_sent_and_drops_those_that_left() {
        let old = vec![
            (cash_in("ci_new", Pending, 9, "A"), 2_000), // published by a create at 2 s
            (cash_in("ci_old", Pending, 1, "B"), 500),
            (cash_in("ci_gone", Completed, 1, "C"), 500),
        ];
        let listing = vec![(cash_in("ci_old", Pending, 1, "B"), 1_500)];
        let merged = merge(&old, listing, Some(1_500));
        let ids: Vec<&str> = merged.iter().map(|i| i.0.id.as_str()).collect();
        assert_eq!(ids, ["ci_new", "ci_old"]);
        // The unchanged cash-in is the old Arc: streams see no change.
        assert!(Arc::ptr_eq(&merged[1].0, &old[1].0));
        // One cash-in learned: the rest stay.
        let one = vec![(cash_in("ci_gone", Completed, 2, "C"), 3_000)];
        assert_eq!(merge(&old, one, None).len(), 3);
    }

    #[test]
    fn each_layer_keeps_its_newer_state_whichever_source_brought_it() {
        let delivery = |status: pb::DeliveryStatus, updated| pb::Delivery {
            transaction_id: "txn_1".into(),
            status: status as i32,
            updated_at: Some(prost_types::Timestamp {
                seconds: updated,
                nanos: 0,
            }),
            ..Default::default()
        };
        let mut failed = (*cash_in("ci_1", Completed, 5, "X")).clone();
        failed.delivery = Some(delivery(pb::DeliveryStatus::Failed, 9));
        let known = vec![(Arc::new(failed), 100)];
        // A later poll of the cash-in (no delivery in OMS's CashIn) keeps the delivery.
        let polled = vec![(cash_in("ci_1", Completed, 5, "X"), 200)];
        let merged = merge(&known, polled, Some(200));
        assert!(Arc::ptr_eq(&merged[0].0, &known[0].0));
        // An older delivery (a late webhook's) changes nothing; a newer one is taken.
        let mut late = (*known[0].0).clone();
        late.delivery = Some(delivery(pb::DeliveryStatus::Processing, 8));
        let merged = merge(&known, vec![(Arc::new(late), 300)], None);
        assert!(Arc::ptr_eq(&merged[0].0, &known[0].0));
        let mut refunded = (*known[0].0).clone();
        refunded.delivery = Some(delivery(pb::DeliveryStatus::RefundCompleted, 9));
        let merged = merge(&known, vec![(Arc::new(refunded), 50)], None);
        let status = merged[0].0.delivery.as_ref().map(|d| d.status);
        assert_eq!(status, Some(pb::DeliveryStatus::RefundCompleted as i32));
    }

    #[test]
    fn keys_sort_as_versions_do() {
        let versions = [
            Version::of(&cash_in("a", Pending, 5, ""), 10),
            Version::of(&cash_in("a", Pending, 5, ""), 11),
            Version::of(&cash_in("a", Processing, 5, ""), 1),
            Version::of(&cash_in("a", Processing, 6, ""), 1),
            Version::of(&cash_in("a", Expired, 1, ""), 1),
        ];
        for pair in versions.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
            assert!(pair[0].key() < pair[1].key(), "{pair:?}");
            assert_eq!(pair[0].key().len(), KEY_LEN);
        }
        assert_eq!(Version::learned_of(versions[1].key().as_bytes()), Some(11));
        assert_eq!(
            Version::learned_of(Version::listed_at(77).as_bytes()),
            Some(77)
        );
    }
}
