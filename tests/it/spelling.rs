//! OMS's documentation spells a cash-in two ways (the OpenAPI schema and the cash-in guide, see
//! `docs/oms-api.md`). The gateway must decode both to the same proto CashIn; here
//! the embedded sandbox answers in one spelling, then the other.

use crate::common;

use oms_gateway::proto::v1 as pb;
use oms_sandbox::Spelling;

/// The guide's developer fee rows carry no computed amount (in its `fixed` form `amount` is the
/// flat fee itself), so `developer_fees[].amount` is the one thing only the schema spelling
/// can tell; cleared here to compare everything else.
fn without_fee_amounts(mut cash_in: pb::CashIn) -> pb::CashIn {
    for fee in &mut cash_in.developer_fees {
        fee.amount = None;
    }
    cash_in
}

#[tokio::test]
async fn a_completed_cash_in_reads_the_same_in_both_spellings() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_spelling1").await;
    // Completed, so the transaction id (`transactionId` / `transaction`) and completion time are
    // set too.
    gateway
        .simulator()
        .simulate_deposit(pb::SimulateDepositRequest {
            cash_in_id: created.id.clone(),
            amount: "180.00".into(),
            authorize_only: false,
        })
        .await
        .expect("SimulateDeposit");

    gateway.sandbox().set_spelling(Spelling::OpenApi);
    let schema = gateway.get(&created.id).await;
    let raw = gateway.sandbox().cash_in_json(&created.id).expect("json");
    assert!(
        raw["cash"].get("locationId").is_some(),
        "schema spelling: {raw}"
    );
    assert!(raw.get("transactionId").is_some(), "schema spelling: {raw}");

    gateway.sandbox().set_spelling(Spelling::Guide);
    let guide = gateway.get(&created.id).await;
    let raw = gateway.sandbox().cash_in_json(&created.id).expect("json");
    assert!(
        raw["cash"].get("cashLocationId").is_some(),
        "guide spelling: {raw}"
    );
    assert!(raw.get("transaction").is_some(), "guide spelling: {raw}");
    assert_eq!(raw["destination"]["wallet"]["wallet"], "wlt_01H9Xb");

    // Every field the spellings disagree on decoded to the same value.
    assert_eq!(schema.status, pb::CashInStatus::Completed as i32);
    assert!(
        schema
            .transaction_id
            .as_deref()
            .is_some_and(|t| t.starts_with("txn_"))
    );
    assert_eq!(guide.transaction_id, schema.transaction_id);
    assert!(schema.completed_at.is_some());
    let cash = guide.cash.clone().expect("cash");
    assert!(cash.location_id.starts_with("loc_") && !cash.location_reference.is_empty());
    assert_eq!(guide.cash, schema.cash);
    assert_eq!(
        guide.destination.as_ref().and_then(|d| d.wallet.clone()),
        Some(pb::CashInDestinationWallet {
            id: Some("wlt_01H9Xb".into()),
            ..Default::default()
        })
    );
    assert_eq!(guide.developer_fees.len(), 2, "{:?}", guide.developer_fees);
    assert!(
        schema.developer_fees.iter().all(|f| f.amount.is_some()),
        "the schema form carries the computed amounts: {:?}",
        schema.developer_fees
    );
    assert!(guide.developer_fees.iter().all(|f| f.amount.is_none()));
    assert_eq!(without_fee_amounts(guide), without_fee_amounts(schema));
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_pending_cash_in_reads_the_same_in_both_spellings() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_spelling2").await;
    let schema = gateway.get(&created.id).await;
    gateway.sandbox().set_spelling(Spelling::Guide);
    // The guide sends nullable fields as explicit nulls; they decode to unset like absent ones.
    let raw = gateway.sandbox().cash_in_json(&created.id).expect("json");
    assert!(
        raw["completedAt"].is_null() && raw.get("completedAt").is_some(),
        "{raw}"
    );
    let guide = gateway.get(&created.id).await;
    assert_eq!(guide.transaction_id, None);
    assert_eq!(guide.completed_at, None);
    assert_eq!(guide.source.as_ref().and_then(|s| s.amount.clone()), None);
    assert_eq!(without_fee_amounts(guide), without_fee_amounts(schema));
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_cash_in_created_under_the_guide_spelling_is_priced_like_the_schemas() {
    let gateway = common::start().await;
    gateway.sandbox().set_spelling(Spelling::Guide);
    let created = common::create_cash_in(&gateway, "cst_spelling3").await;
    let source = created.source.clone().expect("source");
    assert_eq!(source.amount_net.as_deref(), Some("192.00"));
    let fees = source.fees_deducted.expect("fees");
    assert_eq!(
        (fees.total.as_str(), fees.developer.as_str()),
        ("8.00", "3.00")
    );
    let fees: Vec<(Option<String>, Option<String>)> = created
        .developer_fees
        .iter()
        .map(|f| (f.percentage.clone(), f.flat_fee.clone()))
        .collect();
    assert_eq!(
        fees,
        [(Some("0.01".into()), None), (None, Some("1.00".into()))],
        "the guide's typed entries fold into percentage and flat_fee"
    );
    gateway.gateway.shutdown().await;
}

/// A cash-in carrying both spellings of every pair at once, as an API moving from one to the
/// other sends them for a while: each pair with one side `null`, the other set (either way
/// round), and each fee entry in both forms.
const BOTH_SPELLINGS: &str = r#"{"id":"ci_both1","object":"cashIn","type":"fiatToCrypto",
  "status":"completed","customerId":"cst_both",
  "transactionId":"txn_1","transaction":null,
  "cash":{"locationId":null,"cashLocationId":"loc_1","locationReference":"ref_1","cashLocationReference":null},
  "source":{"asset":"usd","amount":"200.00"},
  "destination":{"asset":"usdc","network":"polygon","wallet":{"id":null,"wallet":"wlt_1"}},
  "developerFees":[
    {"type":"percentage","rate":"0.01","percentage":null,"amount":"2.00"},
    {"type":"fixed","amount":null,"flatFee":"1.00"}],
  "createdAt":"2026-03-16T18:30:00Z","completedAt":"2026-03-16T18:45:00Z"}"#;

// Both spellings in one answer, end to end through GetCashIn (the REST model's unit tests cover
// each pair; here the gateway's whole read path). Before both were decoded apart, such an answer
// was INTERNAL `duplicate field`.
#[tokio::test]
async fn an_answer_in_both_spellings_at_once_reads_as_its_non_null_values() {
    let gateway = common::start().await;
    gateway.sandbox().inject(common::respond(
        "GET",
        "/cash-ins/ci_both1",
        1,
        200,
        BOTH_SPELLINGS,
        &[],
    ));
    let read = gateway.get("ci_both1").await;
    assert_eq!(read.transaction_id.as_deref(), Some("txn_1"));
    assert_eq!(
        read.cash,
        Some(pb::CashInfo {
            location_id: "loc_1".into(),
            location_reference: "ref_1".into(),
        })
    );
    assert_eq!(
        read.destination.clone().and_then(|d| d.wallet),
        Some(pb::CashInDestinationWallet {
            id: Some("wlt_1".into()),
            ..Default::default()
        })
    );
    let fees = common::fee_forms(&read);
    assert_eq!(
        fees,
        [
            (Some("0.01"), None, Some("2.00")),
            (None, Some("1.00"), None)
        ]
    );
    assert_eq!(read.status, pb::CashInStatus::Completed as i32);
    gateway.gateway.shutdown().await;
}
