//! Every row of the error table (GUIDE.md, "Errors"): what a caller sees for each upstream
//! answer. The upstream is the embedded sandbox, scripted with faults where the real sandbox
//! would not misbehave on its own; each status carries exactly one ErrorInfo with its domain, and
//! for HTTP answers the `httpStatus` and the upstream request id.

use crate::common;

use oms_gateway::config::GatewaySettings;
use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Status};
use tonic_health::ServingStatus;

const UPSTREAM: &str = "oms.polygon.technology";
const GATEWAY: &str = "oms-gateway";

/// Calls ListCashLocations, which must fail.
async fn list_locations_error(gateway: &common::TestGateway) -> Status {
    gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("ListCashLocations fails")
}

/// Asserts the ErrorInfo of an upstream HTTP answer: OMS's domain, the HTTP status, the
/// upstream request id; returns its reason.
fn assert_upstream_info(status: &Status, http_status: &str) -> String {
    let info = common::error_info(status);
    assert_eq!(info.domain, UPSTREAM, "{info:?}");
    assert_eq!(
        info.metadata.get("httpStatus").map(String::as_str),
        Some(http_status),
        "{info:?}"
    );
    assert!(
        info.metadata
            .get("upstreamRequestId")
            .is_some_and(|id| id.starts_with("req_")),
        "the sandbox's x-request-id is reported: {info:?}"
    );
    assert!(
        !info.reason.is_empty()
            && info
                .reason
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
        "UPPER_SNAKE_CASE reason: {info:?}"
    );
    info.reason
}

fn location_attempts(gateway: &common::TestGateway) -> usize {
    gateway.sandbox().count("GET", "/cash-locations")
}

// === 400 ===

#[tokio::test]
async fn upstream_400_is_invalid_argument_with_its_message_and_proto_field_names() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_err400");
    // Well-formed for the gateway, but the sandbox checks that the reference belongs to the id.
    request.cash.as_mut().expect("cash").cash_location_id = "loc_000000000000000000000000".into();
    let status = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("the sandbox refuses a reference of another location");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("cash.cashLocationId"),
        "the upstream message is kept: {}",
        status.message()
    );
    assert_eq!(assert_upstream_info(&status, "400"), "VALIDATION_ERROR");
    assert_eq!(
        common::violation_fields(&status),
        ["cash.cash_location_id"],
        "BadRequest names the proto field"
    );
    assert_eq!(gateway.sandbox().cash_in_count(), 0);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_400_without_field_details_keeps_the_message_and_has_no_bad_request() {
    let gateway = common::start().await;
    gateway.sandbox().inject(common::respond(
        "GET",
        "/cash-locations",
        1,
        400,
        r#"{"error":{"code":"bad_search","message":"that search makes no sense"}}"#,
        &[],
    ));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("that search makes no sense"),
        "{}",
        status.message()
    );
    assert_eq!(assert_upstream_info(&status, "400"), "BAD_SEARCH");
    assert!(common::violations(&status).is_empty());
    assert_eq!(location_attempts(&gateway), 1, "a 400 is not retried");
    gateway.gateway.shutdown().await;
}

// === 401 ===

#[tokio::test]
async fn upstream_401_after_a_fresh_exchange_is_internal_upstream_auth_failed() {
    let gateway = common::start().await;
    gateway.sandbox().clear_journal();
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-locations", 2, 401));
    let status = list_locations_error(&gateway).await;
    assert_eq!(
        status.code(),
        Code::Internal,
        "our credentials, not the caller's: {status:?}"
    );
    let info = common::error_info(&status);
    assert_eq!(info.reason, "UPSTREAM_AUTH_FAILED");
    assert_eq!(info.domain, GATEWAY);
    assert_eq!(
        info.metadata.get("httpStatus").map(String::as_str),
        Some("401")
    );
    // GET (401), one fresh exchange, GET (401): then the call gives up. (The background
    // refresher, woken by the rejection, may exchange again afterwards.)
    let calls: Vec<String> = gateway
        .sandbox()
        .journal()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .take(3)
        .collect();
    assert_eq!(
        calls,
        [
            "GET /cash-locations",
            "POST /auth/token",
            "GET /cash-locations"
        ],
        "exactly one fresh exchange before giving up"
    );
    assert_eq!(location_attempts(&gateway), 2, "one attempt per token");
    gateway.gateway.shutdown().await;
}

// === 403 ===

#[tokio::test]
async fn upstream_403_is_permission_denied() {
    let gateway = common::start().await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-locations", 1, 403));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("injected fault: HTTP 403"),
        "{}",
        status.message()
    );
    assert_upstream_info(&status, "403");
    assert_eq!(location_attempts(&gateway), 1);
    gateway.gateway.shutdown().await;
}

// === 404 ===

#[tokio::test]
async fn upstream_404_is_not_found_with_resource_info() {
    let gateway = common::start().await;
    let status = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: "ci_doesnotexist".into(),
        })
        .await
        .expect_err("unknown cash-in");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(assert_upstream_info(&status, "404"), "NOT_FOUND");
    let details = tonic_types::StatusExt::get_error_details(&status);
    let resource = details.resource_info().expect("ResourceInfo");
    assert_eq!(resource.resource_type, "polygon.oms.v1.CashIn");
    assert_eq!(resource.resource_name, "ci_doesnotexist");
    gateway.gateway.shutdown().await;
}

// === 409 ===

#[tokio::test]
async fn upstream_409_while_another_replica_holds_the_key_is_aborted_with_retry_info() {
    // Two gateway replicas in front of one OMS, with the same credentials: OMS scopes keys per
    // API key, so a key in flight through one replica is in use for the other.
    let sandbox = common::start_remote_sandbox("replica-secret").await;
    let config = || {
        common::remote_config(
            &sandbox.base_url(),
            common::REMOTE_API_KEY,
            "replica-secret",
        )
    };
    let (one, two) = (
        common::start_with(config()).await,
        common::start_with(config()).await,
    );
    let location = common::first_location(&one.channel).await;
    let mut request = common::create_request(&location, "cst_err409");
    request.idempotency_key = "in-flight-key".into();
    // The first creation is slow upstream, holding its key while the second one arrives.
    sandbox.inject(Fault::delay(
        Some("POST"),
        "/cash-ins",
        1,
        Duration::from_millis(800),
    ));
    let mut client = one.cash_ins();
    let first = tokio::spawn({
        let request = request.clone();
        async move { client.create_cash_in(request).await }
    });
    common::eventually(
        Duration::from_secs(2),
        "the first POST upstream",
        async || sandbox.count("POST", "/cash-ins") == 1,
    )
    .await;
    let status = two
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("the key is in use");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(
        assert_upstream_info(&status, "409"),
        "IDEMPOTENCY_KEY_IN_USE"
    );
    assert_eq!(common::retry_delay(&status), Some(Duration::from_secs(1)));
    let created = first
        .await
        .expect("task")
        .expect("the first creation succeeds");
    assert!(created.into_inner().cash_in.is_some());
    one.gateway.shutdown().await;
    two.gateway.shutdown().await;
    sandbox.shutdown().await;
}

// === 422 ===

#[tokio::test]
async fn upstream_422_is_failed_precondition() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_err422").await;
    gateway.expire(&created.id).await;
    let status = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id,
            idempotency_key: "refresh-expired".into(),
        })
        .await
        .expect_err("an expired cash-in cannot be refreshed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("expired"), "{}", status.message());
    assert_eq!(assert_upstream_info(&status, "422"), "INVALID_STATE");
    gateway.gateway.shutdown().await;
}

// === 429 ===

#[tokio::test]
async fn upstream_429_after_retries_is_resource_exhausted_with_retry_after_as_retry_info() {
    let mut config = common::test_config();
    config.upstream.max_attempts = 2;
    let gateway = common::start_with(config).await;
    gateway.sandbox().inject(common::respond(
        "GET",
        "/cash-locations",
        2,
        429,
        r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
        &[("Retry-After", "1")],
    ));
    let started = Instant::now();
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(assert_upstream_info(&status, "429"), "RATE_LIMITED");
    assert_eq!(common::retry_delay(&status), Some(Duration::from_secs(1)));
    assert_eq!(location_attempts(&gateway), 2, "retried once");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn an_upstream_429_followed_by_success_is_invisible_to_the_caller() {
    let gateway = common::start().await;
    gateway.sandbox().inject(common::respond(
        "GET",
        "/cash-locations",
        1,
        429,
        r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
        &[("Retry-After", "0")],
    ));
    let locations = gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect("the retry succeeds");
    assert!(!locations.into_inner().cash_locations.is_empty());
    assert_eq!(location_attempts(&gateway), 2);
    gateway.gateway.shutdown().await;
}

// === 500 ===

#[tokio::test]
async fn upstream_500_is_internal_and_not_retried() {
    let gateway = common::start().await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-locations", 3, 500));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_upstream_info(&status, "500");
    assert_eq!(location_attempts(&gateway), 1);
    gateway.gateway.shutdown().await;
}

// === 502, 503, connect error ===

#[tokio::test]
async fn upstream_502_after_retries_is_unavailable_with_retry_info() {
    let gateway = common::start().await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-locations", 3, 502));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_upstream_info(&status, "502");
    assert!(
        common::retry_delay(&status).is_some(),
        "RetryInfo: {status:?}"
    );
    assert_eq!(location_attempts(&gateway), 3, "every attempt was spent");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_503_after_retries_is_unavailable_with_retry_after_as_retry_info() {
    let gateway = common::start().await;
    gateway.sandbox().inject(common::respond(
        "GET",
        "/cash-locations",
        3,
        503,
        r#"{"error":{"code":"maintenance","message":"back soon"}}"#,
        &[("Retry-After", "0")],
    ));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("back soon"),
        "{}",
        status.message()
    );
    assert_eq!(assert_upstream_info(&status, "503"), "MAINTENANCE");
    assert_eq!(common::retry_delay(&status), Some(Duration::ZERO));
    assert_eq!(location_attempts(&gateway), 3);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_closed_upstream_port_is_unavailable_with_retry_info() {
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let config = common::remote_config(&url, "sk_sdbx_nobody", "no-secret");
    let gateway = common::start_unchecked(config).await;
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "UPSTREAM_UNREACHABLE");
    assert_eq!(info.domain, GATEWAY);
    assert!(
        !info.metadata.contains_key("httpStatus"),
        "no HTTP answer: {info:?}"
    );
    assert!(
        common::retry_delay(&status).is_some(),
        "RetryInfo: {status:?}"
    );
    assert_eq!(
        gateway.health_status("").await,
        ServingStatus::NotServing as i32
    );
    gateway.gateway.shutdown().await;
}

// === 504, timeouts, deadlines ===

#[tokio::test]
async fn upstream_504_after_retries_is_deadline_exceeded() {
    let gateway = common::start().await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-locations", 3, 504));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_upstream_info(&status, "504");
    assert_eq!(location_attempts(&gateway), 3);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_cancels_cancels_the_upstream_request() {
    let gateway = common::start().await;
    gateway.sandbox().inject(Fault::delay(
        Some("GET"),
        "/cash-locations",
        1,
        Duration::from_secs(5),
    ));
    // No deadline: the caller just gives up (the client drops the call, sending RST_STREAM).
    let mut client = gateway.locations();
    let call = client.list_cash_locations(common::guide_point());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the upstream is slower than the caller's patience"
    );
    common::eventually(
        Duration::from_secs(2),
        "the upstream request to be dropped",
        async || {
            gateway
                .sandbox()
                .journal()
                .iter()
                .any(|r| r.path == "/cash-locations" && r.status == 499)
        },
    )
    .await;
}

#[tokio::test]
async fn an_upstream_slower_than_the_callers_deadline_is_deadline_exceeded_promptly() {
    let gateway = common::start().await;
    gateway.sandbox().inject(Fault::delay(
        Some("GET"),
        "/cash-locations",
        1,
        Duration::from_secs(5),
    ));
    let mut request = Request::new(common::guide_point());
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = gateway
        .locations()
        .list_cash_locations(request)
        .await
        .expect_err("the upstream is too slow");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The upstream holds the request 5 s: an answer within 3 s came from the deadline.
    assert!(
        elapsed < Duration::from_secs(3),
        "answered at the deadline, not after the upstream: {elapsed:?}"
    );
    let info = common::error_info(&status);
    assert_eq!(info.domain, GATEWAY);
    // The abandoned upstream request was cancelled, not left running.
    common::eventually(
        Duration::from_secs(2),
        "the upstream request to be dropped",
        async || {
            gateway
                .sandbox()
                .journal()
                .iter()
                .any(|r| r.path == "/cash-locations" && r.status == 499)
        },
    )
    .await;
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn an_upstream_slower_than_the_attempt_timeout_is_deadline_exceeded() {
    let mut config: GatewaySettings = common::test_config();
    config.upstream.request_timeout = Duration::from_millis(200);
    config.upstream.max_attempts = 1;
    let gateway = common::start_with(config).await;
    gateway.sandbox().inject(Fault::delay(
        Some("GET"),
        "/cash-locations",
        1,
        Duration::from_secs(3),
    ));
    let started = Instant::now();
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let info = common::error_info(&status);
    assert_eq!(info.reason, "UPSTREAM_TIMEOUT");
    assert_eq!(info.domain, GATEWAY);
    gateway.gateway.shutdown().await;
}

// === 2xx that does not decode ===

#[tokio::test]
async fn a_2xx_with_malformed_json_is_internal_upstream_bad_response() {
    let gateway = common::start().await;
    gateway.sandbox().inject(common::respond(
        "GET",
        "/cash-locations",
        1,
        200,
        r#"{"data": [{"id": "loc_1", "#,
        &[],
    ));
    let status = list_locations_error(&gateway).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "UPSTREAM_BAD_RESPONSE");
    assert_eq!(info.domain, GATEWAY);
    assert_eq!(location_attempts(&gateway), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_2xx_cash_in_the_contract_cannot_hold_is_internal_upstream_bad_response() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_bad_shape").await;
    gateway.sandbox().inject(common::respond(
        "GET",
        &format!("/cash-ins/{}", created.id),
        1,
        200,
        format!(
            r#"{{"id":"{}","status":"pending","createdAt":"yesterday"}}"#,
            created.id
        ),
        &[],
    ));
    let status = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id,
        })
        .await
        .expect_err("createdAt is not a timestamp");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(common::error_info(&status).reason, "UPSTREAM_BAD_RESPONSE");
    assert!(
        status.message().contains("createdAt"),
        "{}",
        status.message()
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_deadline_counts_from_the_calls_arrival_not_from_when_its_message_was_read() {
    use prost::Message as _;
    let gateway = common::start().await;
    gateway.sandbox().inject(Fault::delay(
        Some("GET"),
        "/cash-locations",
        1,
        Duration::from_secs(10),
    ));
    // The request message follows its headers 1.2 s late, so the handler starts 1.2 s into the
    // caller's 2 s: counted from there, the gateway would still be waiting when tonic's own
    // timer ends the call with a bare CANCELLED "Timeout expired".
    let message = common::grpc_frame(&common::guide_point().encode_to_vec());
    let body = http_body_util::StreamBody::new(futures_util::stream::once(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(message))
    }));
    let answer = common::raw_call_with(
        &gateway.channel,
        "/polygon.oms.v1.CashLocationService/ListCashLocations",
        &[("grpc-timeout", "2S")],
        body,
    )
    .await;
    let status = answer.status();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(common::error_info(&status).domain, GATEWAY);
}
