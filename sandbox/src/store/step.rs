//! Where a cash-in's fiat-to-crypto transaction is ([`DeliveryStep`]) and how each step is named
//! on the wire: its `status`, `subStatus` and `transaction.fiatToCrypto.*` event. A leaf, so the
//! transaction's moves (`delivery`) and the event outbox (`events`) both name steps without
//! importing each other.

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryStep {
    FundsPulled,
    UnderReview,
    Completed,
    RefundPending,
    RefundCompleted,
}

impl DeliveryStep {
    /// The transaction's `status`.
    pub(crate) fn status(self) -> &'static str {
        match self {
            DeliveryStep::FundsPulled | DeliveryStep::UnderReview => "processing",
            DeliveryStep::Completed => "completed",
            DeliveryStep::RefundPending | DeliveryStep::RefundCompleted => "failed",
        }
    }

    /// The transaction's `subStatus` (`null` once completed, as the guide shows).
    pub(crate) fn sub_status(self) -> Option<&'static str> {
        match self {
            DeliveryStep::FundsPulled => Some("processing.fundsPulled"),
            DeliveryStep::UnderReview => Some("processing.underReview"),
            DeliveryStep::Completed => None,
            DeliveryStep::RefundPending => Some("failed.refundPending"),
            DeliveryStep::RefundCompleted => Some("failed.refundCompleted"),
        }
    }

    /// The last segment of the webhook event reaching this step.
    pub(crate) fn event(self) -> &'static str {
        match self {
            DeliveryStep::FundsPulled => "processing",
            DeliveryStep::UnderReview => "underReview",
            DeliveryStep::Completed => "completed",
            DeliveryStep::RefundPending => "failed",
            DeliveryStep::RefundCompleted => "refundCompleted",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.sub_status().unwrap_or("completed")
    }
}
