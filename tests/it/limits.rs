//! Server limits a caller can run into: the message size cap.

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

/// Two slow calls at once on one connection; returns how long both took.
async fn two_slow_calls_on_one_connection(max_streams_per_connection: u32) -> std::time::Duration {
    use oms_sandbox::Fault;
    let mut config = common::test_config();
    config.server.max_streams_per_connection = max_streams_per_connection;
    let gateway = common::start_with(config).await;
    let slow = std::time::Duration::from_secs(2);
    gateway
        .sandbox()
        .inject(Fault::delay(Some("GET"), "/cash-locations", 2, slow));
    let started = std::time::Instant::now();
    let (mut first, mut second) = (gateway.locations(), gateway.locations());
    let (a, b) = tokio::join!(
        first.list_cash_locations(common::guide_point()),
        second.list_cash_locations(common::guide_point()),
    );
    let elapsed = started.elapsed();
    a.expect("first call");
    b.expect("second call");
    gateway.gateway.shutdown().await;
    elapsed
}

#[tokio::test]
async fn the_per_connection_stream_cap_makes_calls_beyond_it_wait_for_a_stream() {
    // Both calls share the test's one HTTP/2 connection; each waits 2 s upstream. One at a time
    // takes at least 4 s whatever the machine; in parallel, 2 s plus overheads, so the bound
    // between them leaves a slow machine 1.5 s of slack.
    let capped = two_slow_calls_on_one_connection(1).await;
    let uncapped = two_slow_calls_on_one_connection(256).await;
    println!("two 2 s calls on one connection: cap 1 → {capped:?}, cap 256 → {uncapped:?}");
    assert!(
        capped >= std::time::Duration::from_millis(3950),
        "one stream at a time: {capped:?}"
    );
    assert!(
        uncapped < std::time::Duration::from_millis(3500),
        "in parallel: {uncapped:?}"
    );
}
