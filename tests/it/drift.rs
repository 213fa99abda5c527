//! Upstream drift as an operator sees it. An OMS (a sandbox started apart, answering a fixed
//! body) sends two fields and a sub-status the gateway does not know; the built binary, as
//! deployed, counts them on its admin listener's `/metrics`, logs one WARN line per path on its
//! stderr (kind and path, never a value), and sums them up in `/readyz`. And the embedded
//! sandbox, walked through every operation in both spellings, sends nothing the gateway does not
//! know (else every sandbox deployment would report drift).

use crate::common::{self, TestGateway, prometheus};

use oms_gateway::proto::v1 as pb;
use oms_sandbox::Spelling;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_oms-gateway");

/// A cash-in in the schema's shape, but for `source.cashbackOffer` and `riskScore` (fields no
/// OMS page has) and the sub-status `on_hold_x7q` (no value of the schema's enum). Each unknown
/// carries a value that must never reach a log line, as does the deposit code.
const DRIFTING: &str = r#"{"id":"ci_drift1","object":"cashIn","type":"fiatToCrypto",
  "status":"pending","subStatus":"on_hold_x7q","customerId":"cst_drift",
  "source":{"asset":"usd","network":"cash","indicatedAmount":"200.00","cashbackOffer":"offer_x7q"},
  "destination":{"asset":"usdc","network":"polygon","wallet":{"id":"wlt_01H9Xb"}},
  "depositInstructions":{"code":"483 291","expiresAt":"2026-03-16T19:30:00Z"},
  "riskScore":{"band":"band_x7q","score":0.42},
  "createdAt":"2026-03-16T18:30:00Z","updatedAt":"2026-03-16T18:30:00Z"}"#;

#[tokio::test]
async fn what_oms_sends_that_the_gateway_does_not_know_is_counted_logged_once_and_summed_up() {
    let oms = common::start_remote_sandbox("drift-secret").await;
    oms.inject(common::respond(
        "GET",
        "/cash-ins/ci_drift1",
        3,
        200,
        DRIFTING,
        &[],
    ));
    let dir = common::tls::temp_dir("drift");
    let stderr = dir.join("stderr");
    let (port, admin) = (common::free_port(), common::free_port());
    let child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--log-level", "warn", "--drain-delay", "0s"])
        .env("OMS_BASE_URL", oms.base_url())
        .env("OMS_API_KEY", common::REMOTE_API_KEY)
        .env("OMS_API_SECRET", oms.api_secret())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("a file"))
        .spawn()
        .expect("start the gateway");
    let _running = common::Running(child);
    let get = async |path: &str| common::admin_text(admin, path).await;
    common::await_ready(admin, Duration::from_secs(20)).await;
    let (_, ready) = get("/readyz").await;
    assert!(!ready.contains("drift"), "nothing seen yet: {ready}");

    let channel = common::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let mut cash_ins = pb::cash_in_service_client::CashInServiceClient::new(channel);
    for _ in 0..3 {
        let read = cash_ins
            .get_cash_in(pb::GetCashInRequest {
                cash_in_id: "ci_drift1".into(),
            })
            .await
            .expect("what the gateway knows is served")
            .into_inner()
            .cash_in
            .expect("cash_in");
        assert_eq!(read.status, pb::CashInStatus::Pending as i32);
        assert_eq!(
            read.sub_status,
            Some(pb::CashInSubStatus::Unspecified as i32)
        );
        let code = read.deposit_instructions.map(|d| d.code);
        assert_eq!(code.as_deref(), Some("483 291"));
    }

    let (_, metrics) = get("/metrics").await;
    let unknown = |kind: &str, path: &str| {
        let labels = [("kind", kind), ("path", path)];
        prometheus::value(&metrics, "oms_upstream_unknown_total", &labels)
    };
    assert_eq!(
        unknown("field", "cashIn.source.cashbackOffer"),
        3.0,
        "{metrics}"
    );
    assert_eq!(unknown("field", "cashIn.riskScore"), 3.0, "{metrics}");
    assert_eq!(unknown("enum_value", "cashIn.subStatus"), 3.0, "{metrics}");
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("oms_upstream_unknown_total{"))
        .count();
    assert_eq!(series, 3, "nothing else is unknown: {metrics}");
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, 200, "drift does not decide readiness");
    assert!(
        ready.ends_with(
            "upstream drift: 2 unknown fields, 1 unknown enum value; see \
             oms_upstream_unknown_total\n"
        ),
        "{ready}"
    );

    let said = std::fs::read_to_string(&stderr).expect("the gateway's stderr");
    let lines = |path: &str| {
        said.lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("path=\"{path}\"")))
            .count()
    };
    for path in [
        "cashIn.source.cashbackOffer",
        "cashIn.riskScore",
        "cashIn.subStatus",
    ] {
        assert_eq!(
            lines(path),
            1,
            "one line for {path}, not one per read: {said}"
        );
    }
    assert!(said.contains("kind=\"enum_value\""), "{said}");
    for value in ["x7q", "483 291", "0.42"] {
        assert!(!said.contains(value), "{value} reached the log: {said}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads, lists, refreshes, deposits, expires and fails cash-ins through the gateway, and lists
/// locations: every answer the embedded sandbox gives that the gateway decodes.
async fn every_operation(gateway: &TestGateway, customer: &str) {
    let completed = common::create_cash_in(gateway, customer).await;
    let refreshed = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: completed.id.clone(),
            idempotency_key: format!("{customer}-refresh"),
        })
        .await
        .expect("RefreshCashIn");
    assert!(refreshed.into_inner().cash_in.is_some());
    gateway
        .simulator()
        .simulate_deposit(pb::SimulateDepositRequest {
            cash_in_id: completed.id.clone(),
            amount: "200.00".into(),
            authorize_only: false,
        })
        .await
        .expect("SimulateDeposit");
    gateway.get(&completed.id).await;
    let expired = common::create_cash_in(gateway, customer).await;
    gateway.expire(&expired.id).await;
    let failed = common::create_cash_in(gateway, customer).await;
    gateway
        .simulator()
        .fail_cash_in(pb::FailCashInRequest {
            cash_in_id: failed.id.clone(),
            sub_status: pb::CashInSubStatus::ProviderOrderFailed as i32,
        })
        .await
        .expect("FailCashIn");
    let listed = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            customer_id: customer.into(),
            ..Default::default()
        })
        .await
        .expect("ListCashIns")
        .into_inner();
    assert_eq!(listed.cash_ins.len(), 3);
    common::first_location(&gateway.channel).await;
}

#[tokio::test]
async fn the_embedded_sandbox_sends_nothing_the_gateway_does_not_know() {
    let gateway = common::start().await;
    every_operation(&gateway, "cst_drift_schema").await;
    gateway.sandbox().set_spelling(Spelling::Guide);
    every_operation(&gateway, "cst_drift_guide").await;
    let metrics = prometheus::scrape(&gateway).await;
    let unknown: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("oms_upstream_unknown_total{"))
        .collect();
    assert!(unknown.is_empty(), "{unknown:#?}");
    let addr = gateway.gateway.admin_addr().expect("an admin listener");
    let ready = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("/readyz answers")
        .text()
        .await
        .expect("a body");
    assert!(!ready.contains("drift"), "{ready}");
    gateway.gateway.shutdown().await;
}
