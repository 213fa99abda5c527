//! The README's first steps, as a test: start the gateway with no OMS settings and create a
//! cash-in against the embedded sandbox.

use crate::common;

#[tokio::test]
async fn a_fresh_gateway_creates_a_cash_in_against_its_sandbox() {
    let gateway = common::start().await;
    let cash_in = common::create_cash_in(&gateway, "cst_smoke1").await;
    assert!(cash_in.id.starts_with("ci_"));
    let source = cash_in.source.expect("source");
    assert_eq!(source.amount_net.as_deref(), Some("192.00"));
    assert_eq!(source.fees_deducted.expect("fees").total, "8.00");
    gateway.gateway.shutdown().await;
}
