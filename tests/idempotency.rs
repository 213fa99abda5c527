//! Idempotency of CreateCashIn and RefreshCashIn as a caller sees it: where the key comes from,
//! which key is echoed, and that retries (the caller's or the gateway's own) never create a
//! second cash-in. What the gateway sent is read from the sandbox's journal.

mod common;
mod support;

use oms_gateway::proto::v1 as pb;
use oms_gateway::sandbox::Fault;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response};

fn echoed_key<T>(response: &Response<T>) -> String {
    response
        .metadata()
        .get("idempotency-key")
        .expect("idempotency-key in the response metadata")
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// The Idempotency-Key headers of every `POST /cash-ins` the sandbox received, in order.
fn create_keys(gateway: &common::TestGateway) -> Vec<Option<String>> {
    gateway
        .sandbox()
        .journal()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .map(|r| r.idempotency_key)
        .collect()
}

#[tokio::test]
async fn the_same_key_twice_returns_the_same_cash_in_and_creates_one() {
    let gateway = common::start().await;
    let location = common::a_location(&gateway).await;
    let mut request = common::create_request(&location, "cst_idem1");
    request.idempotency_key = "order-789-attempt".into();
    let first = gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect("first CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let second = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("second CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(second.id, first.id);
    assert_eq!(second, first, "the replay is the original answer");
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    // Whether the gateway replays the second call itself or OMS does, every creation attempt
    // that went upstream carried the caller's key.
    let keys = create_keys(&gateway);
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.as_deref() == Some("order-789-attempt")),
        "{keys:?}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_key_from_request_metadata_is_used_when_the_field_is_empty() {
    let gateway = common::start().await;
    let location = common::a_location(&gateway).await;
    let mut request = Request::new(common::create_request(&location, "cst_idem2"));
    request.metadata_mut().insert(
        "idempotency-key",
        MetadataValue::from_static("key-from-metadata"),
    );
    let response = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    assert_eq!(echoed_key(&response), "key-from-metadata");
    assert_eq!(
        create_keys(&gateway),
        [Some("key-from-metadata".to_owned())]
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_field_wins_over_request_metadata() {
    let gateway = common::start().await;
    let location = common::a_location(&gateway).await;
    let mut request = Request::new(common::create_request(&location, "cst_idem3"));
    request.get_mut().idempotency_key = "key-from-field".into();
    request.metadata_mut().insert(
        "idempotency-key",
        MetadataValue::from_static("key-from-metadata"),
    );
    let response = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    assert_eq!(echoed_key(&response), "key-from-field");
    assert_eq!(create_keys(&gateway), [Some("key-from-field".to_owned())]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn absent_both_a_uuid_v4_is_generated_sent_and_echoed() {
    let gateway = common::start().await;
    let location = common::a_location(&gateway).await;
    let response = gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_idem4"))
        .await
        .expect("CreateCashIn");
    let key = echoed_key(&response);
    let uuid = uuid::Uuid::parse_str(&key).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4, "{key}");
    assert_eq!(create_keys(&gateway), [Some(key.clone())]);

    // A second call without a key is a new creation with a new key.
    let again = gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_idem4"))
        .await
        .expect("CreateCashIn");
    assert_ne!(echoed_key(&again), key);
    assert_eq!(gateway.sandbox().cash_in_count(), 2);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_an_upstream_503_carries_the_same_key_and_creates_one_cash_in() {
    let gateway = common::start().await;
    let location = common::a_location(&gateway).await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 1, 503));
    let response = gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_idem5"))
        .await
        .expect("CreateCashIn succeeds on the retry");
    let key = echoed_key(&response);
    let attempts: Vec<(u16, Option<String>)> = gateway
        .sandbox()
        .journal()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .map(|r| (r.status, r.idempotency_key))
        .collect();
    assert_eq!(
        attempts,
        [(503, Some(key.clone())), (201, Some(key.clone()))],
        "two attempts, one key"
    );
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_same_key_with_another_request_is_failed_precondition() {
    let gateway = common::start().await;
    let location = common::a_location(&gateway).await;
    let mut request = common::create_request(&location, "cst_idem6");
    request.idempotency_key = "reused-key".into();
    gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect("first CreateCashIn");
    request.source.as_mut().expect("source").indicated_amount = Some("300.00".into());
    let status = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("a key reused with another body");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // OMS's 422 (or the gateway's own check, if it remembers the key): either way the reason
    // says the key was reused.
    let info = support::error_info(&status);
    assert_eq!(info.reason, "IDEMPOTENCY_KEY_REUSED", "{info:?}");
    assert_eq!(
        status
            .metadata()
            .get("idempotency-key")
            .map(|v| v.to_str().ok()),
        Some(Some("reused-key")),
        "the key is echoed on errors too"
    );
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refreshing_twice_with_one_key_refreshes_once() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_idem7").await;
    let refresh = || pb::RefreshCashInRequest {
        cash_in_id: created.id.clone(),
        idempotency_key: "refresh-once".into(),
    };
    let first = gateway
        .cash_ins()
        .refresh_cash_in(refresh())
        .await
        .expect("first RefreshCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let second = gateway
        .cash_ins()
        .refresh_cash_in(refresh())
        .await
        .expect("second RefreshCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let code = |c: &pb::CashIn| c.deposit_instructions.clone().expect("instructions").code;
    assert_eq!(code(&second), code(&first));
    let current = gateway.get(&created.id).await;
    assert_eq!(code(&current), code(&first), "no second refresh happened");
    gateway.gateway.shutdown().await;
}
