//! OMS's transaction object (a `transaction.fiatToCrypto.*` webhook's `data`) as the proto
//! `Delivery`. The status is read from `status` and `subStatus` together: the guide's review is
//! `processing` with `processing.underReview`, its refund `failed` with `failed.refundPending`,
//! and a finished refund is `refundCompleted` by its event's name; the guide shows no payload for
//! it, so `failed.refundCompleted` and a `refundCompleted` status are read as it too. Anything
//! else is UNSPECIFIED with OMS's `status` kept as sent.

use super::{DecodeError, fees, timestamp};
use crate::proto::v1 as pb;
use oms_rest::model::{TransactionDto, TransactionSideDto};

/// The proto status of a transaction's `status`, `subStatus` and, when known, the last segment
/// of the webhook event that carried it (`failed`, `refundCompleted`, ...).
pub fn delivery_status(status: &str, sub_status: Option<&str>, event: Option<&str>) -> i32 {
    use pb::DeliveryStatus as S;
    let refunded = |s: &str| {
        s.eq_ignore_ascii_case("refundCompleted") || s.eq_ignore_ascii_case("refund_completed")
    };
    let sub = sub_status.unwrap_or_default();
    let status = match status.to_ascii_lowercase().as_str() {
        _ if refunded(status) => S::RefundCompleted,
        "processing" if sub.eq_ignore_ascii_case("processing.underReview") => S::UnderReview,
        "underreview" | "under_review" => S::UnderReview,
        "processing" => S::Processing,
        "completed" => S::Completed,
        "failed" if sub.eq_ignore_ascii_case("failed.refundCompleted") => S::RefundCompleted,
        "failed" if event.is_some_and(refunded) => S::RefundCompleted,
        "failed" => S::Failed,
        _ => S::Unspecified,
    };
    status as i32
}

fn side(side: TransactionSideDto) -> pb::DeliverySide {
    pb::DeliverySide {
        asset: side.asset,
        network: side.network,
        amount_gross: side.amount_gross,
        amount_net: side.amount_net,
        fees_deducted: fees(side.fees_deducted),
        tx_hash: side.tx_hash,
    }
}

/// A transaction (carried by the event named `...{event}`, when known) as the proto message.
pub fn delivery(dto: TransactionDto, event: Option<&str>) -> Result<pb::Delivery, DecodeError> {
    if dto.id.trim().is_empty() {
        return Err(DecodeError {
            field: "id".into(),
            problem: "is empty".into(),
        });
    }
    let status = delivery_status(&dto.status, dto.sub_status.as_deref(), event);
    Ok(pb::Delivery {
        transaction_id: dto.id,
        status,
        oms_status: dto.status,
        sub_status: dto.sub_status,
        source: dto.source.map(side),
        destination: dto.destination.map(side),
        error: dto.error.map(|e| pb::DeliveryError {
            code: e.code.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        }),
        created_at: timestamp("createdAt", dto.created_at)?,
        updated_at: timestamp("updatedAt", dto.updated_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::DeliveryStatus as S;

    #[test]
    fn each_documented_step_has_its_status_and_unknown_ones_keep_the_raw_string() {
        let s = |status, sub, event| delivery_status(status, sub, event);
        assert_eq!(
            s("processing", Some("processing.fundsPulled"), None),
            S::Processing as i32
        );
        assert_eq!(
            s("processing", Some("processing.underReview"), None),
            S::UnderReview as i32
        );
        assert_eq!(s("completed", None, None), S::Completed as i32);
        assert_eq!(
            s("failed", Some("failed.refundPending"), None),
            S::Failed as i32
        );
        assert_eq!(
            s("failed", Some("failed.refundCompleted"), None),
            S::RefundCompleted as i32
        );
        assert_eq!(
            s("failed", None, Some("refundCompleted")),
            S::RefundCompleted as i32
        );
        assert_eq!(s("refundCompleted", None, None), S::RefundCompleted as i32);
        assert_eq!(s("teleported", None, None), S::Unspecified as i32);
        let dto = TransactionDto {
            id: "txn_1".into(),
            status: "teleported".into(),
            ..Default::default()
        };
        let d = delivery(dto, None).unwrap();
        assert_eq!((d.status, d.oms_status.as_str()), (0, "teleported"));
    }

    #[test]
    fn a_transaction_without_an_id_or_with_a_bad_time_is_a_decode_error() {
        let dto = TransactionDto {
            id: "txn_1".into(),
            status: "completed".into(),
            updated_at: Some("later".into()),
            ..Default::default()
        };
        assert_eq!(delivery(dto.clone(), None).unwrap_err().field, "updatedAt");
        let nameless = TransactionDto {
            id: " ".into(),
            ..dto
        };
        assert_eq!(delivery(nameless, None).unwrap_err().field, "id");
    }
}
