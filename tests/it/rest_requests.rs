//! The exact REST requests each RPC sends, read from the sandbox's journal: method, path, query,
//! `Authorization: Bearer <token>`, `Idempotency-Key` on POSTs only, and the JSON body of a
//! create, spelled as the guide's request example spells it.

use crate::common;

use oms_gateway::proto::v1 as pb;
use oms_sandbox::RecordedRequest;
use serde_json::{Value, json};

/// The one request the RPC under test sent (the journal is cleared before each RPC).
fn only_request(gateway: &common::TestGateway) -> RecordedRequest {
    let requests = common::api_requests(gateway.sandbox());
    assert_eq!(requests.len(), 1, "one REST request: {requests:?}");
    requests.into_iter().next().expect("one request")
}

fn assert_bearer(request: &RecordedRequest) {
    let authorization = request.authorization.as_deref().expect("Authorization");
    let token = authorization
        .strip_prefix("Bearer ")
        .expect("a Bearer authorization");
    assert!(
        token.starts_with("sdbx_at_"),
        "the sandbox's token: {token}"
    );
}

#[tokio::test]
async fn create_cash_in_posts_the_guides_json_with_bearer_and_idempotency_key() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    gateway.sandbox().clear_journal();
    let mut request = common::create_request(&location, "cst_01H9Xa");
    request.idempotency_key = "rest-create-1".into();
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    let sent = only_request(&gateway);
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/cash-ins")
    );
    assert_eq!(sent.query, None);
    assert_bearer(&sent);
    // The caller's key, qualified by its caller (none here: `0::`), so no two callers' keys meet.
    assert_eq!(sent.idempotency_key.as_deref(), Some("0::rest-create-1"));
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&sent.body).expect("a JSON body");
    assert_eq!(
        body,
        json!({
            "customerId": "cst_01H9Xa",
            "source": {"asset": "usd", "indicatedAmount": "200.00"},
            "destination": {
                "wallet": {"wallet": "wlt_01H9Xb"},
                "asset": "usdc",
                "network": "polygon"
            },
            "cash": {
                "cashLocationId": location.id,
                "cashLocationReference": location.loc_reference
            },
            "sponsorGas": false,
            "developerFees": [
                {"type": "percentage", "rate": "0.01", "wallet": "wlt_01H9Xf"},
                {"type": "fixed", "amount": "1.00", "wallet": "wlt_01H9Xf"}
            ],
            "metadata": {"order_id": "ord_789"}
        })
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn create_cash_in_sends_other_wallet_kinds_and_payout_assets_by_their_rest_names() {
    use pb::create_cash_in_request::{DeveloperFee, wallet::Kind};
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let address = format!("0x{}", "ab".repeat(20));
    let mut request = common::create_request(&location, "cst_rest2");
    request.destination.as_mut().expect("destination").wallet =
        Some(pb::create_cash_in_request::Wallet {
            kind: Some(Kind::BlockchainAddress(address.clone())),
        });
    request.developer_fees = vec![DeveloperFee {
        percentage: Some("0.005".into()),
        payout_asset: Some("usdt".into()),
        ..Default::default()
    }];
    request.metadata.clear();
    request.sponsor_gas = None;
    gateway.sandbox().clear_journal();
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    let body: Value = serde_json::from_str(&only_request(&gateway).body).expect("JSON");
    assert_eq!(
        body["destination"]["wallet"],
        json!({"blockchainAddress": address})
    );
    assert_eq!(
        body["developerFees"],
        json!([{"type": "percentage", "rate": "0.005", "payoutAsset": "usdt"}])
    );
    assert!(body.get("metadata").is_none(), "no empty metadata: {body}");
    assert!(
        body.get("sponsorGas").is_none(),
        "unset stays unset: {body}"
    );

    let mut request = common::create_request(&location, "cst_rest2");
    request.destination.as_mut().expect("destination").wallet =
        Some(pb::create_cash_in_request::Wallet {
            kind: Some(Kind::ExternalAccount("cpBcAddr_01H9".into())),
        });
    gateway.sandbox().clear_journal();
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    let body: Value = serde_json::from_str(&only_request(&gateway).body).expect("JSON");
    assert_eq!(
        body["destination"]["wallet"],
        json!({"externalAccount": "cpBcAddr_01H9"})
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn get_cash_in_is_a_bare_get_without_idempotency_key() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_rest3").await;
    gateway.sandbox().clear_journal();
    gateway.get(&created.id).await;
    let sent = only_request(&gateway);
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.path, format!("/cash-ins/{}", created.id));
    assert_eq!(sent.query, None);
    assert_bearer(&sent);
    assert_eq!(sent.idempotency_key, None);
    assert_eq!(sent.body, "");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_ins_sends_its_filters_limit_and_cursor_as_query_parameters() {
    let gateway = common::start().await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(common::create_cash_in(&gateway, "cst_rest4").await);
    }
    let after = created[0].created_at.expect("createdAt");
    gateway.sandbox().clear_journal();
    let request = pb::ListCashInsRequest {
        customer_id: "cst_rest4".into(),
        status: pb::CashInStatus::Pending as i32,
        created_after: Some(after),
        page_size: 2,
        ..Default::default()
    };
    let first = gateway
        .cash_ins()
        .list_cash_ins(request.clone())
        .await
        .expect("ListCashIns")
        .into_inner();
    let sent = only_request(&gateway);
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("GET", "/cash-ins")
    );
    assert_bearer(&sent);
    assert_eq!(sent.idempotency_key, None);
    let query = common::query_pairs(sent.query.as_deref());
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["customer", "status", "createdAfter", "limit"]);
    assert_eq!(query[0].1, "cst_rest4");
    assert_eq!(query[1].1, "pending");
    let sent_after: prost_types::Timestamp = query[2].1.parse().expect("RFC 3339");
    assert_eq!(sent_after, after);
    assert_eq!(query[3].1, "2");

    // The next page asks for the items after the last one shown.
    gateway.sandbox().clear_journal();
    gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            page_token: first.next_page_token,
            ..request
        })
        .await
        .expect("ListCashIns page 2");
    let query = common::query_pairs(only_request(&gateway).query.as_deref());
    let cursor = query
        .iter()
        .find(|(k, _)| k == "startingAfter")
        .map(|(_, v)| v.clone());
    assert_eq!(cursor, first.cash_ins.last().map(|c| c.id.clone()));

    // No filters: only the default limit.
    gateway.sandbox().clear_journal();
    gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest::default())
        .await
        .expect("ListCashIns");
    let query = common::query_pairs(only_request(&gateway).query.as_deref());
    assert_eq!(query, [("limit".to_owned(), "50".to_owned())]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_ins_sends_created_before_and_caps_the_limit_at_100() {
    let gateway = common::start().await;
    let before = prost_types::Timestamp {
        seconds: 1_773_685_800,
        nanos: 500_000_000,
    };
    gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            created_before: Some(before),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListCashIns");
    let query = common::query_pairs(only_request(&gateway).query.as_deref());
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["createdBefore", "limit"]);
    assert_eq!(
        query[0].1.parse::<prost_types::Timestamp>().ok(),
        Some(before)
    );
    assert_eq!(query[1].1, "100");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refresh_cash_in_posts_no_body_with_its_idempotency_key() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_rest5").await;
    gateway.sandbox().clear_journal();
    gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "rest-refresh-1".into(),
        })
        .await
        .expect("RefreshCashIn");
    let sent = only_request(&gateway);
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("/cash-ins/{}/refresh", created.id));
    assert_bearer(&sent);
    // Qualified by the operation too: a refresh never shares a create's key at OMS.
    assert_eq!(
        sent.idempotency_key.as_deref(),
        Some("refresh:0::rest-refresh-1")
    );
    assert_eq!(sent.body, "");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_locations_sends_provider_coordinates_and_flow() {
    let gateway = common::start().await;
    gateway.sandbox().clear_journal();
    gateway
        .locations()
        .list_cash_locations(pb::ListCashLocationsRequest {
            flow: Some("cash-in".into()),
            ..common::guide_point()
        })
        .await
        .expect("ListCashLocations");
    let sent = only_request(&gateway);
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("GET", "/cash-locations")
    );
    assert_bearer(&sent);
    assert_eq!(sent.idempotency_key, None);
    let query = common::query_pairs(sent.query.as_deref());
    let expected: Vec<(String, String)> = [
        ("provider", "greendot"),
        ("latitude", "38.495133"),
        ("longitude", "-121.505336"),
        ("flow", "cash-in"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(query, expected);

    // Without a flow, no `flow` parameter at all.
    gateway.sandbox().clear_journal();
    gateway
        .locations()
        .list_cash_locations(pb::ListCashLocationsRequest {
            provider: "greendot".into(),
            latitude: Some(0.5),
            longitude: Some(-1.0),
            flow: None,
        })
        .await
        .expect("ListCashLocations");
    let query = common::query_pairs(only_request(&gateway).query.as_deref());
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["provider", "latitude", "longitude"]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn every_call_of_one_gateway_carries_the_token_it_exchanged() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_rest6").await;
    gateway.get(&created.id).await;
    let journal = gateway.sandbox().journal();
    let exchange = journal
        .iter()
        .find(|r| r.path == "/auth/token")
        .expect("a token exchange");
    assert_eq!(exchange.method, "POST");
    assert_eq!(
        exchange.authorization, None,
        "the exchange itself carries no bearer"
    );
    let exchange_body: Value = serde_json::from_str(&exchange.body).expect("JSON");
    assert_eq!(exchange_body["apiKey"], json!(gateway.sandbox().api_key()));
    let bearers: Vec<&str> = journal
        .iter()
        .filter(|r| r.path != "/auth/token")
        .map(|r| r.authorization.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(bearers.len(), 3, "{bearers:?}");
    assert!(bearers.iter().all(|b| *b == bearers[0]), "{bearers:?}");
    assert_eq!(gateway.sandbox().token_exchanges(), 1);
    gateway.gateway.shutdown().await;
}
