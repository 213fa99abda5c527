//! Server limits a caller can run into: the message size cap.

mod common;

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
