//! Idempotency of CreateCashIn and RefreshCashIn as a caller sees it: where the key comes from,
//! which key is echoed, and that retries (the caller's or the gateway's own) never create a
//! second cash-in. What the gateway sent is read from the sandbox's journal.
//!
//! Where a test is about the gateway's own replay or refusal, it first switches the sandbox's
//! deduplication off ([`gateway_alone`]): the sandbox would otherwise replay or refuse the key
//! itself, and the test would pass with the gateway's idempotency layer gone.

use crate::common;

use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response};

fn echoed_key<T>(response: &Response<T>) -> String {
    metadata_text(response.metadata(), "idempotency-key")
}

/// The key OMS received, as the gateway reports it.
fn oms_key<T>(response: &Response<T>) -> String {
    metadata_text(response.metadata(), "oms-idempotency-key")
}

fn metadata_text(metadata: &tonic::metadata::MetadataMap, name: &str) -> String {
    metadata
        .get(name)
        .unwrap_or_else(|| panic!("{name} in the metadata"))
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// A gateway on its embedded sandbox, with the sandbox's own Idempotency-Key deduplication off:
/// every POST that reaches it executes, so only the gateway stands between a repeat and a second
/// cash-in.
async fn gateway_alone() -> common::TestGateway {
    let gateway = common::start().await;
    gateway.sandbox().set_idempotency(false);
    gateway
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
    let gateway = gateway_alone().await;
    let location = common::first_location(&gateway.channel).await;
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
    // The gateway replayed the second call itself; the one creation that went upstream carried
    // the caller's key.
    let keys = create_keys(&gateway);
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Anonymous keys are qualified too (`0::` = no caller), like every key sent to OMS.
    assert!(
        keys.iter()
            .all(|k| k.as_deref() == Some("0::order-789-attempt")),
        "{keys:?}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_key_from_request_metadata_is_used_when_the_field_is_empty() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = Request::new(common::create_request(&location, "cst_idem2"));
    request.get_mut().idempotency_key.clear();
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
    assert_eq!(oms_key(&response), "0::key-from-metadata");
    assert_eq!(
        create_keys(&gateway),
        [Some("0::key-from-metadata".to_owned())]
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_field_wins_over_request_metadata() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
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
    assert_eq!(
        create_keys(&gateway),
        [Some("0::key-from-field".to_owned())]
    );
    gateway.gateway.shutdown().await;
}

// A create without a key used to get a fresh UUID per RPC, so a retried RPC (by the
// client, a gRPC retry policy or a mesh proxy) created a second cash-in.
#[tokio::test]
async fn a_create_without_a_key_is_invalid_argument_before_any_upstream_call() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    gateway.sandbox().clear_journal();
    let mut request = common::create_request(&location, "cst_idem4");
    request.idempotency_key.clear();
    let status = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("a create needs a key");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = common::violations(&status);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].0, "idempotency_key");
    assert!(
        violations[0].1.contains("idempotency-key") && violations[0].1.contains("retry"),
        "the violation says how to pass a key: {}",
        violations[0].1
    );
    assert!(common::api_requests(gateway.sandbox()).is_empty());
    assert_eq!(gateway.sandbox().cash_in_count(), 0);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_refresh_without_a_key_is_invalid_argument_before_any_upstream_call() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_idem4r").await;
    gateway.sandbox().clear_journal();
    let status = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("a refresh needs a key");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(common::violation_fields(&status), ["idempotency_key"]);
    assert!(common::api_requests(gateway.sandbox()).is_empty());
    let unchanged = gateway.get(&created.id).await;
    assert_eq!(
        unchanged.deposit_instructions, created.deposit_instructions,
        "the code the customer was shown still works"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_an_upstream_503_carries_the_same_key_and_creates_one_cash_in() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 1, 503));
    let response = gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_idem5"))
        .await
        .expect("CreateCashIn succeeds on the retry");
    let key = oms_key(&response);
    assert_eq!(key, format!("0::{}", echoed_key(&response)));
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
    let gateway = gateway_alone().await;
    let location = common::first_location(&gateway.channel).await;
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
    // The gateway's own check: the sandbox no longer refuses a reused key.
    let info = common::error_info(&status);
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
    assert_eq!(
        create_keys(&gateway).len(),
        1,
        "the reuse never reached OMS"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refreshing_twice_with_one_key_refreshes_once() {
    let gateway = gateway_alone().await;
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
    let refresh_path = format!("/cash-ins/{}/refresh", created.id);
    assert_eq!(gateway.sandbox().count("POST", &refresh_path), 1);
    gateway.gateway.shutdown().await;
}

// Before: both went to OMS as `0::order-42`, so the refresh was OMS's 422 "key already used"
// (stored for 24 h): a caller keying by its order id could never refresh the order's code.
#[tokio::test]
async fn a_create_and_a_refresh_with_one_key_are_two_operations_and_both_succeed() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_idem_two_ops");
    request.idempotency_key = "order-42".into();
    let created = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    let create_key = oms_key(&created);
    let created = created.into_inner().cash_in.expect("cash_in");
    let refreshed = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "order-42".into(),
        })
        .await
        .expect("RefreshCashIn with the create's key");
    let refresh_key = oms_key(&refreshed);
    assert_ne!(refresh_key, create_key, "two operations, two keys at OMS");
    let code = |c: &pb::CashIn| c.deposit_instructions.clone().expect("instructions").code;
    let refreshed = refreshed.into_inner().cash_in.expect("cash_in");
    assert_eq!(refreshed.id, created.id);
    assert_ne!(code(&refreshed), code(&created), "a new code");
    assert_eq!(create_keys(&gateway), [Some(create_key)]);
    gateway.gateway.shutdown().await;
}

// === Upstream keys never collide ===

/// A token for the sandbox's REST API, as any OMS client would get one.
async fn rest_token(http: &reqwest::Client, base: &str, secret: &str) -> String {
    let token: serde_json::Value = http
        .post(format!("{base}/auth/token"))
        .json(&serde_json::json!({"apiKey": common::REMOTE_API_KEY, "apiSecret": secret}))
        .send()
        .await
        .expect("token exchange")
        .json()
        .await
        .expect("token JSON");
    token["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

// Before: an anonymous call's key went to OMS as given, and a named caller's key as
// "{len}:{caller}:{key}", so an anonymous `5:svc-a:order-1` was svc-a's `order-1` to OMS and got
// svc-a's cash-in and live deposit code back.
#[tokio::test]
async fn an_anonymous_key_shaped_like_a_qualified_one_never_gets_another_callers_cash_in() {
    let secret = "collision-secret";
    let sandbox = common::start_remote_sandbox(secret).await;
    let gateway = common::start_with(common::remote_config(
        &sandbox.base_url(),
        common::REMOTE_API_KEY,
        secret,
    ))
    .await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_collide");
    request.idempotency_key = "probe".into();
    gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect("a first create, for its REST body");
    let body = sandbox
        .journal()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path == "/cash-ins")
        .expect("the POST")
        .body;

    // svc-a's `order-1`, as the gateway sends it for svc-a (the same body, through OMS's API).
    let http = reqwest::Client::new();
    let token = rest_token(&http, &sandbox.base_url(), secret).await;
    let theirs: serde_json::Value = http
        .post(format!("{}/cash-ins", sandbox.base_url()))
        .bearer_auth(token)
        .header("Idempotency-Key", "5:svc-a:order-1")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("svc-a's create")
        .json()
        .await
        .expect("svc-a's cash-in");

    request.idempotency_key = "5:svc-a:order-1".into();
    let response = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("the anonymous create");
    let sent = response
        .metadata()
        .get("oms-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ours = response.into_inner().cash_in.expect("cash_in");
    assert_ne!(
        Some(ours.id.as_str()),
        theirs["id"].as_str(),
        "an anonymous caller received svc-a's cash-in"
    );
    let sent = sent.expect("oms-idempotency-key in the response metadata");
    assert_eq!(sent, "0::5:svc-a:order-1", "the key OMS saw, reported back");
    let keys = sandbox
        .journal()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .filter_map(|r| r.idempotency_key)
        .collect::<Vec<_>>();
    assert!(keys.contains(&sent), "{keys:?}");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_key_too_long_to_qualify_is_sent_as_its_sha256() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_longkey");
    request.idempotency_key = "k".repeat(255);
    let response = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    let sent = oms_key(&response);
    // SHA-256 of "0::" + 255 × "k", in hex.
    assert_eq!(sent.len(), 3 + 64, "{sent}");
    assert!(sent.starts_with("h1:"), "{sent}");
    assert_eq!(create_keys(&gateway), [Some(sent)]);
    gateway.gateway.shutdown().await;
}

// === Only refusals that OMS decided are replayed ===

// Before: 408, 425 and 499 (from a load balancer in front of OMS) were FAILED_PRECONDITION and
// stored for 24 h, so the key was burnt and a caller switching keys risked a duplicate.
#[tokio::test]
async fn an_intermediarys_408_425_or_499_is_unavailable_and_the_same_key_then_creates() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    for http_status in [408, 425, 499] {
        let mut request = common::create_request(&location, "cst_lb4xx");
        request.idempotency_key = format!("lb-{http_status}");
        // Every attempt of the first call meets it.
        gateway
            .sandbox()
            .inject(Fault::status(Some("POST"), "/cash-ins", 3, http_status));
        let status = gateway
            .cash_ins()
            .create_cash_in(request.clone())
            .await
            .expect_err("the intermediary refused every attempt");
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{http_status}: {status:?}"
        );
        assert!(
            common::retry_delay(&status).is_some(),
            "{http_status}: a retry hint"
        );
        let info = common::error_info(&status);
        assert_eq!(info.metadata["httpStatus"], http_status.to_string());
        let before = gateway.sandbox().cash_in_count();
        let created = gateway
            .cash_ins()
            .create_cash_in(request)
            .await
            .unwrap_or_else(|s| panic!("{http_status}: the same key is not burnt: {s:?}"));
        assert!(created.into_inner().cash_in.is_some());
        assert_eq!(gateway.sandbox().cash_in_count(), before + 1);
    }
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn an_unknown_4xx_is_reported_but_not_replayed() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_teapot");
    request.idempotency_key = "teapot-1".into();
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 1, 418));
    let status = gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect_err("418");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("a 418 is not OMS's final word on the key: the repeat goes upstream");
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    assert_eq!(gateway.sandbox().count("POST", "/cash-ins"), 2);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_421_misdirected_request_is_retried_on_a_new_connection() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 1, 421));
    gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_421"))
        .await
        .expect("the retry on a new connection succeeds");
    let posts: Vec<_> = gateway
        .sandbox()
        .journal()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .collect();
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [421, 201]
    );
    assert_eq!(posts[0].idempotency_key, posts[1].idempotency_key);
    assert!(posts[0].peer.is_some() && posts[1].peer.is_some());
    assert_ne!(posts[0].peer, posts[1].peer, "a new connection");
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_421_that_persists_is_unavailable_and_the_error_names_both_keys() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_421_persists");
    request.idempotency_key = "misdirected-1".into();
    // Every attempt (each on a new connection after the first) meets it.
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 3, 421));
    let status = gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect_err("misdirected on every attempt");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(common::retry_delay(&status).is_some(), "a retry hint");
    assert_eq!(
        metadata_text(status.metadata(), "idempotency-key"),
        "misdirected-1"
    );
    assert_eq!(
        metadata_text(status.metadata(), "oms-idempotency-key"),
        "0::misdirected-1",
        "the key OMS saw, on errors too"
    );
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("the same key is not burnt");
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

// === A shared call does not impose the leader's deadline ===

// Before: the follower, with seconds left, got the leader's DEADLINE_EXCEEDED.
#[tokio::test]
async fn a_follower_takes_over_when_the_leader_runs_out_of_time() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let request = common::create_request(&location, "cst_takeover");
    // The first POST is slow: the leader's 400 ms run out while OMS works on it.
    gateway.sandbox().inject(Fault::delay(
        Some("POST"),
        "/cash-ins",
        1,
        std::time::Duration::from_millis(1500),
    ));
    let mut leader_request = Request::new(request.clone());
    leader_request.set_timeout(std::time::Duration::from_millis(400));
    let mut leader_client = gateway.cash_ins();
    let leader = tokio::spawn(async move { leader_client.create_cash_in(leader_request).await });
    common::eventually(
        std::time::Duration::from_secs(2),
        "the leader's POST",
        async || gateway.sandbox().count("POST", "/cash-ins") == 1,
    )
    .await;
    let mut follower_request = Request::new(request);
    follower_request.set_timeout(std::time::Duration::from_secs(8));
    let follower = gateway.cash_ins().create_cash_in(follower_request).await;
    let leader = leader.await.expect("leader task");
    assert_eq!(
        leader.expect_err("the leader ran out of time").code(),
        Code::DeadlineExceeded
    );
    let cash_in = follower
        .expect("the follower, with time left, took over")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(gateway.sandbox().cash_in_count(), 1, "one cash-in");
    assert_eq!(gateway.get(&cash_in.id).await.id, cash_in.id);
    gateway.gateway.shutdown().await;
}
