//! Server limits a caller can run into: the message size caps (`--max-message-bytes`, and the
//! request message bound of every service).

use crate::common;

use oms_gateway::proto::v1 as pb;

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_without_reaching_the_upstream() {
    let mut config = common::test_config();
    config.server.max_message_bytes = 64 * 1024;
    let gateway = common::start_with(config).await;
    let before = gateway.sandbox().journal().len();
    let request = pb::GetCashInRequest {
        cash_in_id: format!("ci_{}", "x".repeat(100 * 1024)),
    };
    let status = gateway
        .cash_ins()
        .get_cash_in(request)
        .await
        .expect_err("a 100 KiB message is over the 64 KiB limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("message"), "{}", status.message());
    assert_eq!(
        gateway.sandbox().journal().len(),
        before,
        "nothing reached OMS"
    );
    // A message under the limit still works (and is then refused by validation, not size).
    let status = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: format!("ci_{}", "x".repeat(1000)),
        })
        .await
        .expect_err("an id of 1,000 characters is invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// The request message bound of every service (`docs/security.md`, "Input bounds").
const REQUEST_LIMIT: usize = 128 * 1024;

/// Asserts the gateway's answer to a message over the request bound, as sent.
fn too_large(answer: &common::RawAnswer) {
    assert_eq!(answer.code(), tonic::Code::ResourceExhausted, "{answer:?}");
    let status = answer.status();
    assert_eq!(common::error_info(&status).reason, "MESSAGE_TOO_LARGE");
    assert!(
        status
            .message()
            .contains(&format!("limit of {REQUEST_LIMIT} bytes")),
        "{}",
        status.message()
    );
}

// Before: the 1 MB request was within --max-message-bytes (1 MiB), decoded, and the stream
// kept its million statuses (30 such streams: +46 MiB RSS in the test process); with the count
// bound alone, it was decoded (4 MB of i32) to be refused.
#[tokio::test]
async fn a_watch_with_a_million_statuses_is_refused_as_too_large_before_it_is_decoded() {
    let gateway = common::start().await;
    let request = pb::WatchCashInsRequest {
        customer_id: "cst_million".into(),
        statuses: vec![pb::CashInStatus::Pending as i32; 1_000_000],
        ..Default::default()
    };
    let answer = common::raw_unary(
        &gateway.channel,
        "/polygon.oms.v1.CashInService/WatchCashIns",
        &request,
    )
    .await;
    too_large(&answer);
    let status = gateway
        .cash_ins()
        .watch_cash_ins(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(gateway.gateway.watch_hub().streams(), 0);
    assert_eq!(gateway.gateway.watch_hub().watched(), 0);
    gateway.gateway.shutdown().await;
}

/// A GetCashIn for `id`, padded past the request bound with an unknown field (which prost skips).
fn padded_get(id: &str, padding: usize) -> Vec<u8> {
    use prost::Message;
    let mut bytes = pb::GetCashInRequest {
        cash_in_id: id.into(),
    }
    .encode_to_vec();
    prost::encoding::bytes::encode(15, &vec![0u8; padding], &mut bytes);
    bytes
}

// Before: decoded (unknown fields skipped) and sent to OMS as GET /cash-ins/ci_padded.
#[tokio::test]
async fn a_request_padded_past_the_bound_never_reaches_the_upstream() {
    let gateway = common::start().await;
    let body = http_body_util::Full::new(common::grpc_frame(&padded_get("ci_padded", 200 * 1024)));
    let answer = common::raw_call(
        &gateway.channel,
        "/polygon.oms.v1.CashInService/GetCashIn",
        body,
    )
    .await;
    too_large(&answer);
    let sent = common::api_requests(gateway.sandbox());
    assert!(sent.is_empty(), "nothing reached OMS: {sent:?}");
    // Just under the bound, the same request is served (OMS does not know the id).
    let body = http_body_util::Full::new(common::grpc_frame(&padded_get("ci_padded", 120 * 1024)));
    let answer = common::raw_call(
        &gateway.channel,
        "/polygon.oms.v1.CashInService/GetCashIn",
        body,
    )
    .await;
    assert_eq!(answer.code(), tonic::Code::NotFound, "{answer:?}");
    gateway.gateway.shutdown().await;
}

// Before: the gateway waited for the 512 KiB it was promised (within --max-message-bytes),
// holding the call open, and answered only when the caller gave up.
#[tokio::test]
async fn a_message_declared_too_large_is_refused_before_its_bytes_arrive() {
    use futures_util::StreamExt;
    let gateway = common::start().await;
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(512u32 * 1024).to_be_bytes());
    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(bytes::Bytes::from(prefix)),
    )])
    .chain(futures_util::stream::pending());
    let body = http_body_util::StreamBody::new(frames);
    let call = common::raw_call(
        &gateway.channel,
        "/polygon.oms.v1.CashInService/CreateCashIn",
        body,
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), call)
        .await
        .expect("answered without waiting for the message");
    too_large(&answer);
    gateway.gateway.shutdown().await;
}

// Before: the health service took messages up to tonic's default of 4 MiB.
#[tokio::test]
async fn every_service_has_the_bound_health_included() {
    let gateway = common::start().await;
    let request = tonic_health::pb::HealthCheckRequest {
        service: "x".repeat(200 * 1024),
    };
    let answer =
        common::raw_unary(&gateway.channel, "/grpc.health.v1.Health/Check", &request).await;
    too_large(&answer);
    gateway.gateway.shutdown().await;
}

// The largest legitimate request (every field at its bound, every character 4 bytes in UTF-8)
// is about 114 KB: under the bound, it is served.
#[tokio::test]
async fn the_largest_legitimate_create_request_is_served() {
    use prost::Message;
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_largest");
    let wide = |chars: usize| "\u{10348}".repeat(chars);
    request.metadata = (0..50)
        .map(|i| (format!("{i:02}{}", wide(38)), wide(500)))
        .collect();
    assert!(request.encoded_len() > 100_000, "{}", request.encoded_len());
    let created = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("served");
    assert_eq!(
        created
            .into_inner()
            .cash_in
            .expect("cash_in")
            .metadata
            .len(),
        50
    );
    gateway.gateway.shutdown().await;
}

/// Two calls on the test's one HTTP/2 connection while OMS holds the first one's request: whether
/// the second was answered while the first was still held (within `WAIT`, the first being held
/// for a minute), and how many requests for locations reached OMS by then.
async fn a_second_call_while_the_first_is_held(max_streams_per_connection: u32) -> (bool, usize) {
    use oms_sandbox::{Fault, Gate};
    const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let mut config = common::test_config();
    config.server.max_streams_per_connection = max_streams_per_connection;
    let gateway = common::start_with(config).await;
    let location_requests = |gateway: &common::TestGateway| {
        common::api_requests(gateway.sandbox())
            .iter()
            .filter(|r| r.path == "/cash-locations")
            .count()
    };
    let gate = Gate::new(std::time::Duration::from_secs(60));
    gateway
        .sandbox()
        .inject(Fault::hold(Some("GET"), "/cash-locations", 1, &gate));
    let mut first = gateway.locations();
    let first = tokio::spawn(async move { first.list_cash_locations(common::guide_point()).await });
    common::eventually(
        std::time::Duration::from_secs(10),
        "the first call held upstream",
        async || location_requests(&gateway) == 1,
    )
    .await;
    let second = tokio::time::timeout(
        WAIT,
        gateway
            .locations()
            .list_cash_locations(common::guide_point()),
    )
    .await;
    let answered = second.is_ok_and(|answer| answer.is_ok());
    let reached = location_requests(&gateway);
    gate.open();
    first
        .await
        .expect("task")
        .expect("the first call, released");
    gateway.gateway.shutdown().await;
    (answered, reached)
}

#[tokio::test]
async fn the_per_connection_stream_cap_makes_calls_beyond_it_wait_for_a_stream() {
    // Without a cap the second call is served while OMS still holds the first (the positive
    // control); with a cap of one stream it never reaches OMS while the first is held.
    let uncapped = a_second_call_while_the_first_is_held(256).await;
    assert_eq!(uncapped, (true, 2), "cap 256: (answered, requests at OMS)");
    let capped = a_second_call_while_the_first_is_held(1).await;
    assert_eq!(capped, (false, 1), "cap 1: (answered, requests at OMS)");
}
