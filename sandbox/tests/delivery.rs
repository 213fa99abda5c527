//! The sandbox's delivery controls: the fiat-to-crypto transaction of a committed cash-in
//! driven through compliance review, completion, failure and refund, over HTTP
//! (`/sandbox/cash-ins/{id}/delivery/…`) and through the `SandboxHandle`, each move answered with
//! the guide's transaction object and sent as its `transaction.fiatToCrypto.*` webhook.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{Api, Hooks, config, names, sandbox};
use oms_sandbox::{ControlError, SandboxHandle, SandboxSettings, Spelling};

/// A sandbox whose transactions wait for a control, sending webhooks to `hooks`.
async fn manual(spelling: Spelling) -> (SandboxHandle, Api, Hooks) {
    let (sb, api) = sandbox(SandboxSettings {
        spelling,
        delivery_delay: None,
        ..config()
    })
    .await;
    let hooks = Hooks::start().await;
    sb.set_webhooks(Some(hooks.target()));
    (sb, api, hooks)
}

/// A cash-in of $200 (the guide's fees), deposited and committed; its id.
async fn committed(api: &Api, key: &str) -> String {
    let created = api.create(key).await.body;
    api.deposit(&created, "200.00").await;
    created["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn http_controls_drive_a_delivery_through_review_to_completion() {
    let (sb, api, hooks) = manual(Spelling::Guide).await;
    let id = committed(&api, "reviewed").await;
    let control = |action: &str| format!("/sandbox/cash-ins/{id}/delivery/{action}");

    let shown = api.get(&format!("/sandbox/cash-ins/{id}/delivery")).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["subStatus"], "processing.fundsPulled");

    let review = api.post(&control("under-review"), Some("rv"), None).await;
    assert_eq!(review.status, 200, "{}", review.body);
    assert_eq!(review.body["status"], "processing");
    assert_eq!(review.body["subStatus"], "processing.underReview");
    assert_eq!(review.body["cashIn"], id.as_str());

    // A review holds the transaction: it waits for a decision.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = sb.delivery_json(&id).expect("a transaction");
    assert_eq!(held["subStatus"], "processing.underReview");

    let done = api.post(&control("complete"), Some("ok"), None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["status"], "completed");
    assert_eq!(done.body["subStatus"], Value::Null);
    assert!(done.body["destination"]["txHash"].is_string());
    assert_eq!(done.body["error"], Value::Null);

    for (action, key) in [
        ("complete", "again"),
        ("refund", "refund"),
        ("fail", "fail"),
    ] {
        let refused = api.post(&control(action), Some(key), None).await;
        assert_eq!(
            refused.status, 422,
            "{action} after completed: {}",
            refused.body
        );
        assert_eq!(refused.code(), "invalid_state");
    }
    let unknown = api
        .post(
            "/sandbox/cash-ins/ci_nope/delivery/complete",
            Some("u"),
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);

    let events = hooks.wait_for(4).await;
    assert_eq!(
        names(&events),
        [
            "cash_in.completed",
            "transaction.fiatToCrypto.completed",
            "transaction.fiatToCrypto.processing",
            "transaction.fiatToCrypto.underReview",
        ]
    );
    let review = hooks.find("transaction.fiatToCrypto.underReview")["data"].clone();
    assert_eq!(review["subStatus"], "processing.underReview");
    assert_eq!(review["destination"]["txHash"], Value::Null);
    sb.shutdown().await;
}

#[tokio::test]
async fn handle_controls_fail_a_delivery_and_complete_its_refund() {
    let (sb, api, hooks) = manual(Spelling::OpenApi).await;
    let pending = api.create("not-yet").await.body;
    let pending = pending["id"].as_str().expect("id");
    assert!(
        matches!(
            sb.complete_delivery(pending),
            Err(ControlError::InvalidState(_))
        ),
        "no transaction before the deposit is committed"
    );
    assert_eq!(sb.delivery_json(pending), None);
    assert_eq!(sb.complete_delivery("ci_nope"), Err(ControlError::NotFound));

    let id = committed(&api, "failing").await;
    let failed = sb
        .fail_delivery(
            &id,
            "on_chain_revert",
            "Delivery transaction reverted onchain",
        )
        .expect("fail");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["subStatus"], "failed.refundPending");
    assert_eq!(
        failed["error"],
        json!({"code": "on_chain_revert", "message": "Delivery transaction reverted onchain"})
    );
    assert!(
        failed["destination"]
            .get("txHash")
            .is_none_or(Value::is_null)
    );
    assert_eq!(failed["destination"]["amountGross"], "192.00");
    assert_eq!(failed["source"]["feesDeducted"]["total"], "8.00");
    let refused = sb.complete_delivery(&id);
    assert!(
        matches!(&refused, Err(ControlError::InvalidState(why)) if why.contains("failed.refundPending")),
        "{refused:?}"
    );
    let refunded = sb.complete_refund(&id).expect("refund");
    assert_eq!(refunded["status"], "failed");
    assert_eq!(refunded["subStatus"], "failed.refundCompleted");
    assert_eq!(refunded["error"]["code"], "on_chain_revert");

    // Over HTTP, a failure names its own error, or the guide's by default.
    let other = committed(&api, "other").await;
    let custom = api
        .post(
            &format!("/sandbox/cash-ins/{other}/delivery/fail"),
            Some("custom"),
            Some(json!({"code": "compliance_rejected", "message": "Rejected in review"})),
        )
        .await;
    assert_eq!(custom.status, 200, "{}", custom.body);
    assert_eq!(custom.body["error"]["code"], "compliance_rejected");
    // The cash-in layer is untouched: the cash-in stays completed.
    assert_eq!(
        sb.cash_in_json(&other).expect("known")["status"],
        "completed"
    );

    let events = hooks.wait_for(8).await;
    assert_eq!(
        names(&events),
        [
            "cashIn.completed",
            "cashIn.completed",
            "transaction.fiatToCrypto.failed",
            "transaction.fiatToCrypto.failed",
            "transaction.fiatToCrypto.processing",
            "transaction.fiatToCrypto.processing",
            "transaction.fiatToCrypto.refundCompleted",
        ]
    );
    let refund = hooks.find("transaction.fiatToCrypto.refundCompleted")["data"].clone();
    assert_eq!(refund["cashIn"], id.as_str());
    sb.shutdown().await;
}

#[tokio::test]
async fn a_delivery_left_alone_completes_after_the_delay_unless_it_is_switched_off() {
    let (sb, api) = sandbox(SandboxSettings {
        delivery_delay: Some(Duration::from_millis(300)),
        ..config()
    })
    .await;
    let id = committed(&api, "auto").await;
    assert_eq!(
        sb.delivery_json(&id).expect("a transaction")["status"],
        "processing"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        sb.delivery_json(&id).expect("a transaction")["status"],
        "completed"
    );

    sb.set_delivery_delay(None);
    let waiting = committed(&api, "manual").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        sb.delivery_json(&waiting).expect("a transaction")["subStatus"],
        "processing.fundsPulled"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_transaction_read_answers_exactly_the_latest_webhooks_object_unless_switched_off() {
    for spelling in [Spelling::Guide, Spelling::OpenApi] {
        let (sb, api, hooks) = manual(spelling).await;
        let id = committed(&api, "read").await;
        let failed = sb
            .fail_delivery(
                &id,
                "on_chain_revert",
                "Delivery transaction reverted onchain",
            )
            .expect("fails");
        let txn = failed["id"].as_str().expect("a transaction id").to_owned();
        let read = api.get(&format!("/transactions/{txn}")).await;
        assert_eq!(read.status, 200, "{}", read.body);
        let events = hooks.wait_for(3).await;
        let sent = events
            .iter()
            .find(|e| e["event"] == "transaction.fiatToCrypto.failed")
            .expect("the failed webhook");
        assert_eq!(read.body, sent["data"], "{spelling:?}");
        assert_eq!(read.body, failed);

        let unknown = api.get("/transactions/txn_nope").await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
        sb.set_transaction_reads(false);
        let off = api.get(&format!("/transactions/{txn}")).await;
        assert_eq!(off.status, 404, "{}", off.body);
        sb.shutdown().await;
    }
}
