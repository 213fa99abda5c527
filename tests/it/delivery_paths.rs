//! Every path of a delivery, driven as a user with grpcurl would drive it: the built binary,
//! started with no settings (its embedded sandbox, no webhook endpoint), learns deliveries from
//! OMS's transaction read (which it probes for: OMS documents the object, not the read), and
//! `SandboxService`'s delivery RPCs move them through review, failure and refund, or
//! completion. A failed delivery is one WARN line with ids (no error code or message), counted
//! by outcome, and `/readyz` says where deliveries come from. An OMS that does not serve the
//! read, with no webhooks either, leaves watches at the cash-in layer and says so.

use crate::common::{self, prometheus};
use oms_gateway::proto::v1 as pb;
use pb::cash_in_service_client::CashInServiceClient;
use pb::sandbox_service_client::SandboxServiceClient;
use pb::{CashInStatus as St, DeliveryStatus as D};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::timeout;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_oms-gateway");

/// (cash-in status, delivery status, error code) of each non-heartbeat event until the stream
/// ends (with OK, or the test fails).
async fn follow(channel: Channel, id: String) -> Vec<(i32, i32, String)> {
    let request = pb::WatchCashInRequest {
        cash_in_id: id,
        cash_in_only: false,
    };
    let mut stream = CashInServiceClient::new(channel)
        .watch_cash_in(request)
        .await
        .expect("WatchCashIn")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = stream.message().await.expect("the stream ends with OK") {
        if event.r#type == pb::CashInEventType::Heartbeat as i32 {
            continue;
        }
        let c = event.cash_in.expect("a cash-in");
        let d = c.delivery.unwrap_or_default();
        let code = d.error.map(|e| e.code).unwrap_or_default();
        seen.push((c.status, d.status, code));
    }
    seen
}

/// The sandbox's SimulateDeposit of the indicated amount on cash-in `id`.
async fn deposit(channel: &Channel, id: &str) {
    SandboxServiceClient::new(channel.clone())
        .simulate_deposit(pb::SimulateDepositRequest {
            cash_in_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("SimulateDeposit");
}

fn delivery(cash_in: Option<pb::CashIn>) -> (i32, String) {
    let d = cash_in.and_then(|c| c.delivery).unwrap_or_default();
    (d.status, d.error.map(|e| e.code).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_alone_follows_every_delivery_path_through_the_transaction_read() {
    let dir = common::tls::temp_dir("delivery-paths");
    let stderr = dir.join("stderr");
    let (port, admin) = (common::free_port(), common::free_port());
    let child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--watch-poll-interval", "200ms", "--drain-delay", "0s"])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("a file"))
        .spawn()
        .expect("start the gateway");
    let _running = common::Running(child);
    let readyz = async || common::admin_text(admin, "/readyz").await;
    common::await_ready(admin, Duration::from_secs(20)).await;
    assert!(
        readyz()
            .await
            .1
            .contains("GET /transactions/{id} not probed yet"),
        "{}",
        readyz().await.1
    );
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let location = common::first_location(&channel).await;
    let mut sandbox = SandboxServiceClient::new(channel.clone());
    let create = async |customer: &str| {
        CashInServiceClient::new(channel.clone())
            .create_cash_in(common::create_request(&location, customer))
            .await
            .expect("CreateCashIn")
            .into_inner()
            .cash_in
            .expect("cash_in")
    };

    // Review, failure with an error code, refund; a watch opened before the deposit.
    let failing = create("cst_paths_fail").await;
    let watched = tokio::spawn(follow(channel.clone(), failing.id.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    deposit(&channel, &failing.id).await;
    // Within the sandbox's 2 s delivery delay: the review holds the transaction.
    let id = || failing.id.clone();
    let reviewed = sandbox
        .review_delivery(pb::ReviewDeliveryRequest { cash_in_id: id() })
        .await
        .expect("ReviewDelivery")
        .into_inner();
    assert_eq!(
        delivery(reviewed.cash_in),
        (D::UnderReview as i32, String::new())
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let failed = sandbox
        .fail_delivery(pb::FailDeliveryRequest {
            cash_in_id: id(),
            error_code: "compliance_rejected".into(),
            error_message: "Rejected in review".into(),
        })
        .await
        .expect("FailDelivery")
        .into_inner();
    assert_eq!(
        delivery(failed.cash_in),
        (D::Failed as i32, "compliance_rejected".into())
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refunded = sandbox
        .complete_refund(pb::CompleteRefundRequest { cash_in_id: id() })
        .await
        .expect("CompleteRefund")
        .into_inner();
    assert_eq!(
        delivery(refunded.cash_in),
        (D::RefundCompleted as i32, "compliance_rejected".into())
    );
    let seen = timeout(Duration::from_secs(10), watched)
        .await
        .expect("the stream ends at the refund")
        .unwrap();
    eprintln!("a watch through review, failure and refund: {seen:?}");
    let completed = St::Completed as i32;
    for step in [
        (completed, D::UnderReview as i32, String::new()),
        (completed, D::Failed as i32, "compliance_rejected".into()),
        (
            completed,
            D::RefundCompleted as i32,
            "compliance_rejected".into(),
        ),
    ] {
        assert!(seen.contains(&step), "{step:?} in {seen:?}");
    }
    assert_eq!(seen[0].0, St::Pending as i32);
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1 || w[0].1 == 0));

    // A delivery left alone completes by itself after the delay: only the read can tell.
    let left = create("cst_paths_alone").await;
    deposit(&channel, &left.id).await;
    let seen = timeout(
        Duration::from_secs(10),
        follow(channel.clone(), left.id.clone()),
    )
    .await
    .expect("the stream ends once delivered");
    assert_eq!(
        seen.last(),
        Some(&(completed, D::Completed as i32, String::new()))
    );
    let read = common::get_cash_in(&channel, &left.id).await;
    assert_eq!(delivery(Some(read)).0, D::Completed as i32);

    // A control on a delivery in the wrong state is OMS's refusal; a bad error code never
    // leaves the gateway.
    let again = sandbox
        .complete_delivery(pb::CompleteDeliveryRequest {
            cash_in_id: left.id.clone(),
        })
        .await
        .expect_err("already delivered");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let bad = sandbox
        .fail_delivery(pb::FailDeliveryRequest {
            cash_in_id: left.id.clone(),
            error_code: "Bad Code!".into(),
            error_message: "x".repeat(201),
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("error_code"), "{}", bad.message());
    assert!(bad.message().contains("error_message"), "{}", bad.message());

    let body = readyz().await.1;
    assert!(
        body.contains("deliveries: read with GET /transactions/{id}"),
        "{body}"
    );
    let (_, metrics) = common::admin_text(admin, "/metrics").await;
    let count = |outcome| {
        prometheus::value(
            &metrics,
            "oms_gateway_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(
        (
            count("failed"),
            count("refund_completed"),
            count("completed")
        ),
        (1.0, 1.0, 1.0)
    );
    // One WARN line for the failed delivery, with its ids; never its code or message.
    let log = std::fs::read_to_string(&stderr).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("delivery failed after the deposit"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains(&failing.id), "{}", warned[0]);
    assert!(warned[0].contains("txn_"), "{}", warned[0]);
    for secret in ["compliance_rejected", "Rejected in review"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oms_without_the_transaction_read_and_no_webhooks_ends_watches_at_the_cash_in() {
    let mut settings = common::test_config();
    settings.watch.poll_interval = Duration::from_millis(200);
    let gateway = common::start_with(settings).await;
    gateway.sandbox().set_transaction_reads(false);
    assert!(
        gateway.gateway.watch_hub().follows_deliveries(),
        "not probed yet"
    );
    let created = common::create_cash_in(&gateway, "cst_no_reads").await;
    // A watch opened before the probe waits on the delivery, then ends once the probe says
    // nothing can bring it.
    let watched = tokio::spawn(follow(gateway.channel.clone(), created.id.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    deposit(&gateway.channel, &created.id).await;
    let seen = timeout(Duration::from_secs(5), watched)
        .await
        .expect("the stream ends at the cash-in layer")
        .unwrap();
    assert_eq!(
        seen.last().map(|s| (s.0, s.1)),
        Some((St::Completed as i32, 0))
    );
    assert!(!gateway.gateway.watch_hub().follows_deliveries());
    let readyz = reqwest::get(format!(
        "http://{}/readyz",
        gateway.gateway.admin_addr().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        readyz.contains("deliveries: not followed: no webhook endpoint"),
        "{readyz}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_watch_follows_its_cash_ins_deliveries_through_the_transaction_read() {
    let mut settings = common::test_config();
    settings.watch.poll_interval = Duration::from_millis(200);
    let gateway = common::start_with(settings).await;
    let customer = "cst_paths_customer";
    let request = pb::WatchCashInsRequest {
        customer_id: customer.to_owned(),
        ..Default::default()
    };
    let mut stream = gateway
        .cash_ins()
        .watch_cash_ins(request)
        .await
        .expect("WatchCashIns")
        .into_inner();
    let created = common::create_cash_in(&gateway, customer).await;
    deposit(&gateway.channel, &created.id).await;
    // The sandbox delivers 2 s after the deposit; no webhook says so.
    let delivered = timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.message().await.expect("the stream stays open") {
            let c = event.cash_in.clone().unwrap_or_default();
            if c.id == created.id && delivery(Some(c)).0 == D::Completed as i32 {
                return event;
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("the customer's watch shows the delivery completed");
    assert_eq!(delivered.previous_delivery_status, D::Processing as i32);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhooks_get_cash_in_reads_the_delivery_of_a_completed_cash_in() {
    let gateway = common::start().await;
    gateway.sandbox().set_delivery_delay(None);
    let created = common::create_cash_in(&gateway, "cst_paths_get").await;
    deposit(&gateway.channel, &created.id).await;
    let read = async || delivery(Some(gateway.get(&created.id).await));
    assert_eq!(read().await, (D::Processing as i32, String::new()));
    // Delivered behind the gateway's back: no webhook, no watch; the next read shows it.
    gateway
        .sandbox()
        .complete_delivery(&created.id)
        .expect("delivered");
    assert_eq!(read().await, (D::Completed as i32, String::new()));
    // Once over, it is not read again.
    let reads = || {
        common::api_requests(gateway.sandbox())
            .iter()
            .filter(|r| r.path.starts_with("/transactions/"))
            .count()
    };
    let before = reads();
    assert_eq!(read().await.0, D::Completed as i32);
    assert_eq!(reads(), before);
    gateway.gateway.shutdown().await;
}
