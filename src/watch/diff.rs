//! What changed between two observations of a cash-in, named by REST field path.
//!
//! Only what a client shows or acts on counts (status, sub-status, the deposit code and its
//! expiry, amounts, fees, rates, the transaction id, completion time, and the delivery's id,
//! status, sub-status, amounts, txHash and error, named `delivery.*`); `updatedAt` alone moving
//! is not a change worth an event.

use crate::proto::v1 as pb;

/// The REST names of the fields that differ between `before` and `after`.
pub fn changed_fields(before: &pb::CashIn, after: &pb::CashIn) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("status", before.status != after.status);
    check("subStatus", before.sub_status != after.sub_status);
    let (di_a, di_b) = (&before.deposit_instructions, &after.deposit_instructions);
    check(
        "depositInstructions.code",
        di_a.as_ref().map(|d| &d.code) != di_b.as_ref().map(|d| &d.code),
    );
    check(
        "depositInstructions.expiresAt",
        di_a.as_ref().map(|d| d.expires_at) != di_b.as_ref().map(|d| d.expires_at),
    );
    let (src_a, src_b) = (before.source.as_ref(), after.source.as_ref());
    check(
        "source.amount",
        src_a.map(|s| &s.amount) != src_b.map(|s| &s.amount),
    );
    check(
        "source.amountGross",
        src_a.map(|s| &s.amount_gross) != src_b.map(|s| &s.amount_gross),
    );
    check(
        "source.amountNet",
        src_a.map(|s| &s.amount_net) != src_b.map(|s| &s.amount_net),
    );
    check(
        "source.feesDeducted",
        src_a.map(|s| &s.fees_deducted) != src_b.map(|s| &s.fees_deducted),
    );
    let (dst_a, dst_b) = (before.destination.as_ref(), after.destination.as_ref());
    check(
        "destination.amount",
        dst_a.map(|d| &d.amount) != dst_b.map(|d| &d.amount),
    );
    check(
        "destination.amountGross",
        dst_a.map(|d| &d.amount_gross) != dst_b.map(|d| &d.amount_gross),
    );
    check(
        "destination.amountNet",
        dst_a.map(|d| &d.amount_net) != dst_b.map(|d| &d.amount_net),
    );
    check(
        "destination.feesDeducted",
        dst_a.map(|d| &d.fees_deducted) != dst_b.map(|d| &d.fees_deducted),
    );
    check(
        "developerFees",
        before.developer_fees != after.developer_fees,
    );
    check("rates", before.rates != after.rates);
    check(
        "transactionId",
        before.transaction_id != after.transaction_id,
    );
    check("completedAt", before.completed_at != after.completed_at);
    delivery_changes(
        before.delivery.as_ref(),
        after.delivery.as_ref(),
        &mut changed,
    );
    changed
}

/// The delivery's fields that differ (a delivery learned names every field it has).
fn delivery_changes(
    before: Option<&pb::Delivery>,
    after: Option<&pb::Delivery>,
    changed: &mut Vec<&'static str>,
) {
    if before == after {
        return;
    }
    let none = pb::Delivery::default();
    let (a, b) = (before.unwrap_or(&none), after.unwrap_or(&none));
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check(
        "delivery.transactionId",
        a.transaction_id != b.transaction_id,
    );
    check(
        "delivery.status",
        a.status != b.status || a.oms_status != b.oms_status,
    );
    check("delivery.subStatus", a.sub_status != b.sub_status);
    check("delivery.source", a.source != b.source);
    let hash = |d: &pb::Delivery| d.destination.as_ref().and_then(|d| d.tx_hash.clone());
    check("delivery.destination.txHash", hash(a) != hash(b));
    let rest = |d: &pb::Delivery| {
        d.destination.clone().map(|mut d| {
            d.tx_hash = None;
            d
        })
    };
    check("delivery.destination", rest(a) != rest(b));
    check("delivery.error", a.error != b.error);
}

/// Whether anything but the delivery changed (what a stream on the cash-in layer only reports).
pub fn cash_in_layer_changed(changed: &[&str]) -> bool {
    changed.iter().any(|field| !field.starts_with("delivery."))
}

/// Whether a single cash-in's stream ends after sending this state: a terminal status, and
/// (unless the stream follows the cash-in layer only) no delivery still to come.
pub fn is_settled(cash_in: &pb::CashIn, cash_in_only: bool) -> bool {
    is_terminal(cash_in.status) && (cash_in_only || !awaits_delivery(cash_in))
}
/// Whether nothing follows a delivery in `status`: COMPLETED or REFUND_COMPLETED.
pub fn delivery_is_final(status: i32) -> bool {
    matches!(
        pb::DeliveryStatus::try_from(status),
        Ok(pb::DeliveryStatus::Completed | pb::DeliveryStatus::RefundCompleted)
    )
}

/// Whether a cash-in waits for its delivery: it has a transaction (it completed, or names one)
/// whose delivery the gateway has not seen end.
pub fn awaits_delivery(cash_in: &pb::CashIn) -> bool {
    match &cash_in.delivery {
        Some(delivery) => !delivery_is_final(delivery.status),
        None => {
            cash_in.status == pb::CashInStatus::Completed as i32 || cash_in.transaction_id.is_some()
        }
    }
}

/// Whether a status is terminal: nothing will change after it.
pub fn is_terminal(status: i32) -> bool {
    matches!(
        pb::CashInStatus::try_from(status),
        Ok(pb::CashInStatus::Completed | pb::CashInStatus::Failed | pb::CashInStatus::Expired)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updated_at_alone_is_not_a_change() {
        let a = pb::CashIn {
            id: "ci_1".into(),
            status: pb::CashInStatus::Pending as i32,
            ..Default::default()
        };
        let mut b = a.clone();
        b.updated_at = Some(prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        });
        assert!(changed_fields(&a, &b).is_empty());
        b.status = pb::CashInStatus::Completed as i32;
        b.transaction_id = Some("txn_1".into());
        assert_eq!(changed_fields(&a, &b), ["status", "transactionId"]);
        assert!(is_terminal(b.status) && !is_terminal(a.status));
    }
}
