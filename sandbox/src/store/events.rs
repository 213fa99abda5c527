//! The store's outbox: every state change that OMS documents a webhook for, recorded as it
//! happens with a copy of the cash-in as it then was, for the webhook sender to drain.
//!
//! Only documented events are recorded: a cash-in's `completed` and `expired` (the guide's
//! "Cash-In Events"), and each step of its transaction (`processing`, `underReview`,
//! `completed`, `failed`, `refundCompleted`). Creation, a refresh, the move to `processing` and
//! a forced failure change a cash-in without any event, as at OMS. Recording here, where the
//! change is made, gives every change its own event even when two come within one scan.

use std::collections::VecDeque;

use crate::Spelling;
use crate::clock::Millis;

use super::CashIn;
use super::step::DeliveryStep;

/// Changes kept while nobody drains them (the sender drains every few milliseconds).
const MAX_QUEUED: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    CashInCompleted,
    CashInExpired,
    /// The cash-in's transaction reached this step.
    Transaction(DeliveryStep),
}

impl EventKind {
    /// The event's name: `cashIn.*` in the schema's spelling, `cash_in.*` in the guide's (both
    /// occur in the guide), `transaction.fiatToCrypto.*` in both.
    pub(crate) fn name(self, spelling: Spelling) -> String {
        let prefix = match spelling {
            Spelling::OpenApi => "cashIn",
            Spelling::Guide => "cash_in",
        };
        match self {
            EventKind::CashInCompleted => format!("{prefix}.completed"),
            EventKind::CashInExpired => format!("{prefix}.expired"),
            EventKind::Transaction(step) => format!("transaction.fiatToCrypto.{}", step.event()),
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) kind: EventKind,
    /// When it happened (whole seconds, as shown).
    pub(crate) at: Millis,
    /// The cash-in (and its transaction) right after the change.
    pub(crate) cash_in: CashIn,
}

/// The queue of changes not yet drained; the oldest go first when it is full.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Change>,
}

impl Outbox {
    pub(crate) fn push(&mut self, kind: EventKind, cash_in: &CashIn, at: Millis) {
        if self.queue.len() == MAX_QUEUED {
            self.queue.pop_front();
        }
        self.queue.push_back(Change {
            kind,
            at,
            cash_in: cash_in.clone(),
        });
    }

    pub(crate) fn drain(&mut self) -> Vec<Change> {
        self.queue.drain(..).collect()
    }
}
