//! The second layer of a cash-in: the fiat-to-crypto transaction OMS creates when the deposit
//! is committed, which delivers the crypto. The guide's "Failure Handling" and "Compliance
//! Review" sections give its steps, each with its `transaction.fiatToCrypto.*` webhook:
//!
//! ```text
//! processing (processing.fundsPulled) ──► completed            (txHash set)
//!      │   ▲ (auto after the delivery delay, or a control)
//!      ▼   │
//! processing (processing.underReview) ──► completed | failed (failed.refundPending, error.code)
//!                                                      └──► failed (failed.refundCompleted)
//! ```
//!
//! A transaction still at `processing.fundsPulled` completes by itself once the sandbox's
//! delivery delay has passed (none: it waits for a control); one under review waits for a
//! decision (complete or fail), as a compliance hold does. The guide shows no payload for
//! `refundCompleted`; the sandbox keeps `failed` and names the sub-status
//! `failed.refundCompleted`, after the guide's `<status>.<detail>` pattern.

use crate::clock::{Millis, whole_second};

use super::events::EventKind;
pub(crate) use super::step::DeliveryStep;
use super::{CashIn, Refusal, Store};

/// The guide's error code for a delivery that failed on chain.
pub(crate) const DEFAULT_FAILURE_CODE: &str = "on_chain_revert";
/// The guide's message for it.
pub(crate) const DEFAULT_FAILURE_MESSAGE: &str = "Delivery transaction reverted onchain";

/// Why a delivery failed (the transaction's `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryError {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// A cash-in's transaction.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// `txn_…`.
    pub(crate) id: String,
    pub(crate) step: DeliveryStep,
    pub(crate) error: Option<DeliveryError>,
    /// The destination's on-chain hash, once delivered.
    pub(crate) tx_hash: Option<String>,
    /// When it was created, in milliseconds: the delivery delay counts from here.
    pub(crate) started: Millis,
    pub(crate) created_at: Millis,
    pub(crate) updated_at: Millis,
}

/// A sandbox control's move of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryAction {
    /// Hold it for compliance review (`processing.underReview`).
    Review,
    /// Deliver: `completed`, with a `txHash`.
    Complete,
    /// Fail it (`failed.refundPending`) with this error.
    Fail(DeliveryError),
    /// The refund of a failed delivery is done (`refundCompleted`).
    Refund,
}

impl DeliveryAction {
    fn verb(&self) -> &'static str {
        match self {
            DeliveryAction::Review => "review",
            DeliveryAction::Complete => "complete",
            DeliveryAction::Fail(_) => "fail",
            DeliveryAction::Refund => "refund",
        }
    }

    /// The step it moves to from `from`, if it may.
    fn next(&self, from: DeliveryStep) -> Option<DeliveryStep> {
        use DeliveryStep::{Completed, FundsPulled, RefundCompleted, RefundPending, UnderReview};
        match (self, from) {
            (DeliveryAction::Review, FundsPulled) => Some(UnderReview),
            (DeliveryAction::Complete, FundsPulled | UnderReview) => Some(Completed),
            (DeliveryAction::Fail(_), FundsPulled | UnderReview) => Some(RefundPending),
            (DeliveryAction::Refund, RefundPending) => Some(RefundCompleted),
            _ => None,
        }
    }
}

// === impl Store ===

impl Store {
    /// The transaction of a just committed cash-in, at `processing.fundsPulled`.
    pub(super) fn new_delivery(&mut self, now: Millis) -> Delivery {
        Delivery {
            id: self.new_id("txn_", now),
            step: DeliveryStep::FundsPulled,
            error: None,
            tx_hash: None,
            started: now,
            created_at: whole_second(now),
            updated_at: whole_second(now),
        }
    }

    /// A sandbox control moves the transaction of cash-in `id`.
    pub(crate) fn drive_delivery(
        &mut self,
        id: &str,
        action: DeliveryAction,
        now: Millis,
    ) -> Result<&CashIn, Refusal> {
        self.advance(now);
        let hash = matches!(action, DeliveryAction::Complete).then(|| self.tx_hash());
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        let Some(delivery) = ci.delivery.as_mut() else {
            return Err(Refusal::InvalidState {
                status: ci.status,
                action: "move the transaction of",
            });
        };
        let step = action.next(delivery.step).ok_or(Refusal::DeliveryState {
            step: delivery.step.name(),
            action: action.verb(),
        })?;
        delivery.step = step;
        delivery.updated_at = whole_second(now);
        match action {
            DeliveryAction::Complete => delivery.tx_hash = hash,
            DeliveryAction::Fail(error) => delivery.error = Some(error),
            DeliveryAction::Review | DeliveryAction::Refund => {}
        }
        self.outbox
            .push(EventKind::Transaction(step), ci, whole_second(now));
        Ok(ci)
    }

    /// Completes every transaction left at `processing.fundsPulled` for the delivery delay,
    /// dated when the delay ran out.
    pub(super) fn deliver_due(&mut self, now: Millis) -> usize {
        let Some(delay) = self.delivery_delay else {
            return 0;
        };
        let due: Vec<(String, Millis)> = self
            .cash_ins
            .values()
            .filter_map(|ci| {
                let d = ci.delivery.as_ref()?;
                let at = d.started.saturating_add(delay);
                (d.step == DeliveryStep::FundsPulled && at <= now).then(|| (ci.id.clone(), at))
            })
            .collect();
        for (id, at) in &due {
            let hash = self.tx_hash();
            if let Some(ci) = self.cash_ins.get_mut(id)
                && let Some(d) = ci.delivery.as_mut()
            {
                d.step = DeliveryStep::Completed;
                d.tx_hash = Some(hash);
                d.updated_at = whole_second(*at);
                self.outbox.push(
                    EventKind::Transaction(DeliveryStep::Completed),
                    ci,
                    whole_second(*at),
                );
            }
        }
        due.len()
    }

    /// `0x` and 64 hex digits, from the seeded generator.
    fn tx_hash(&mut self) -> String {
        let mut s = String::with_capacity(66);
        s.push_str("0x");
        for _ in 0..64 {
            s.push(char::from(b"0123456789abcdef"[self.rng.usize(0..16)]));
        }
        s
    }
}
