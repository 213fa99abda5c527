//! The sandbox follows the OMS cash-in guide where it is specific: the refresh window (a lapsed
//! code is not an expired cash-in), repricing on the cash deposited, developer fee entries that
//! add up, whole-second timestamps, and only the documented webhooks with the guide's payloads.
//! Each test talks to a started sandbox over HTTP, as a gateway would.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{Api, Hooks, config, names, sandbox, whole_seconds};
use oms_sandbox::{SandboxSettings, Spelling};

fn id_of(ci: &Value) -> String {
    ci["id"].as_str().expect("id").to_owned()
}

/// A create body as the guide's, with `indicatedAmount` and the developer fees given.
async fn create_with(api: &Api, key: &str, indicated: &str, fees: Value) -> Value {
    let mut body = api.create_body().await;
    body["source"]["indicatedAmount"] = json!(indicated);
    body["developerFees"] = fees;
    let created = api.post("/cash-ins", Some(key), Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body
}

#[tokio::test]
async fn a_lapsed_code_is_refreshable_within_the_window_and_the_cash_in_expires_after_it() {
    // The window is not set: it is one more code lifetime by default.
    let (sb, api) = sandbox(SandboxSettings {
        code_ttl: Duration::from_millis(1_000),
        ..config()
    })
    .await;
    let created = api.create("lapse").await.body;
    let id = id_of(&created);
    let old_code = created["depositInstructions"]["code"].clone();

    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let lapsed = api.get(&format!("/cash-ins/{id}")).await.body;
    assert_eq!(
        lapsed["status"], "pending",
        "a lapsed code is not an expired cash-in: {lapsed}"
    );
    assert_eq!(lapsed["subStatus"], "order_reserved");
    let at_the_counter = api
        .post(
            "/cash-ins/simulate/barcode-auth",
            Some("dead-code"),
            Some(json!({"accountNumber": old_code, "amount": "50.00"})),
        )
        .await;
    assert_eq!(
        at_the_counter.status, 404,
        "a lapsed code is dead at the counter"
    );

    let refreshed = api
        .post(&format!("/cash-ins/{id}/refresh"), Some("refresh"), None)
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.body["status"], "pending");
    assert_ne!(refreshed.body["depositInstructions"]["code"], old_code);
    let (old, new) = (
        created["depositInstructions"]["expiresAt"].as_str(),
        refreshed.body["depositInstructions"]["expiresAt"].as_str(),
    );
    assert!(new >= old, "a new expiry: {new:?} after {old:?}");

    // The new code lapses 1 s after the refresh, and its window ends 1 s later.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expired = api.get(&format!("/cash-ins/{id}")).await.body;
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["subStatus"], "cash_deposit_expired");
    let late = api
        .post(&format!("/cash-ins/{id}/refresh"), Some("late"), None)
        .await;
    assert_eq!(late.status, 422, "expired is terminal: {}", late.body);
    assert_eq!(late.code(), "invalid_state");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_deposit_reprices_the_cash_in_on_the_cash_deposited() {
    let (sb, api) = sandbox(config()).await;
    let guide_fees = json!([
        {"type": "percentage", "rate": "0.01", "wallet": "wlt_01H9Xf"},
        {"type": "fixed", "amount": "1.00", "wallet": "wlt_01H9Xf"}
    ]);
    let created = create_with(&api, "reprice", "100.00", guide_fees).await;
    // The estimate, from indicatedAmount: 1 % + 1.00 and 2 % + 1.00 of $100.
    assert_eq!(created["source"]["feesDeducted"]["total"], "5.00");
    assert_eq!(created["source"]["amountNet"], "95.00");

    // The guide's worked example: $200 deposited.
    api.authorize(&created, "200.00").await;
    let processing = api
        .get(&format!("/cash-ins/{}", id_of(&created)))
        .await
        .body;
    assert_eq!(processing["status"], "processing");
    let source = &processing["source"];
    assert_eq!(source["amount"], "200.00");
    assert_eq!(source["amountGross"], "200.00");
    assert_eq!(
        source["feesDeducted"],
        json!({"total": "8.00", "developer": "3.00", "oms": "5.00", "gas": "0.00"})
    );
    assert_eq!(source["amountNet"], "192.00");
    assert_eq!(processing["destination"]["amount"], "192.00");
    assert_eq!(processing["destination"]["amountNet"], "192.00");
    assert_eq!(processing["rates"]["effectiveRate"], "0.9600");
    assert_eq!(source["indicatedAmount"], "100.00", "the request is kept");
    sb.shutdown().await;
}

#[tokio::test]
async fn developer_fee_entries_add_up_to_the_developer_total() {
    let (sb, api) = sandbox(config()).await;
    let quarter = json!({"percentage": "0.0025", "wallet": "wlt_01H9Xf"});
    let created = create_with(&api, "fees", "21.00", json!([quarter, quarter])).await;
    let cents = |v: &Value| {
        v.as_str()
            .and_then(|s| s.replace('.', "").parse::<i64>().ok())
            .expect("a decimal string")
    };
    let developer = cents(&created["source"]["feesDeducted"]["developer"]);
    assert_eq!(
        developer, 11,
        "0.25 % + 0.25 % of $21.00 = 0.105, rounded once"
    );
    let entries: Vec<i64> = created["developerFees"]
        .as_array()
        .expect("developerFees")
        .iter()
        .map(|e| cents(&e["amount"]))
        .collect();
    assert_eq!(
        entries.iter().sum::<i64>(),
        developer,
        "the entries {entries:?} add up to feesDeducted.developer"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn timestamps_are_whole_seconds_as_the_docs_show() {
    let (sb, api) = sandbox(config()).await;
    let token = api
        .http
        .post(format!("{}/auth/token", api.base))
        .json(&json!({"apiKey": sb.api_key(), "apiSecret": sb.api_secret()}))
        .send()
        .await
        .expect("token")
        .json::<Value>()
        .await
        .expect("json");
    assert!(whole_seconds(&token["expiresAt"]), "{token}");
    let created = api.create("seconds").await.body;
    api.deposit(&created, "200.00").await;
    let done = api
        .get(&format!("/cash-ins/{}", id_of(&created)))
        .await
        .body;
    for (name, value) in [
        ("createdAt", &done["createdAt"]),
        ("updatedAt", &done["updatedAt"]),
        ("completedAt", &done["completedAt"]),
        ("expiresAt", &done["depositInstructions"]["expiresAt"]),
    ] {
        assert!(whole_seconds(value), "{name}: {value}");
    }
    sb.shutdown().await;
}

/// What one spelling's webhooks must be, for a deposit of $200 (the guide's fees), a forced
/// expiry and a forced failure.
async fn webhooks_in(spelling: Spelling) {
    let (sb, api) = sandbox(SandboxSettings {
        spelling,
        ..config()
    })
    .await;
    let hooks = Hooks::start().await;
    sb.set_webhooks(Some(hooks.target()));
    let (prefix, link) = match spelling {
        Spelling::Guide => ("cash_in", "transaction"),
        Spelling::OpenApi => ("cashIn", "transactionId"),
    };

    let paid = api.create("paid").await.body;
    let refreshed = api.create_body().await;
    let kept = api
        .post("/cash-ins", Some("kept"), Some(refreshed))
        .await
        .body;
    let kept_id = id_of(&kept);
    let refresh = api
        .post(&format!("/cash-ins/{kept_id}/refresh"), Some("r"), None)
        .await;
    assert_eq!(refresh.status, 200);
    api.deposit(&paid, "200.00").await;
    let expire = api
        .post(
            &format!("/sandbox/cash-ins/{kept_id}/expire"),
            Some("e"),
            None,
        )
        .await;
    assert_eq!(expire.status, 200);
    let failed = api.create_body().await;
    let failed = api
        .post("/cash-ins", Some("failed"), Some(failed))
        .await
        .body;
    let fail = api
        .post(
            &format!("/sandbox/cash-ins/{}/fail", id_of(&failed)),
            Some("f"),
            None,
        )
        .await;
    assert_eq!(fail.status, 200);

    // The transaction completes by itself after the default delivery delay.
    let events = hooks.wait_for(4).await;
    let mut expected = vec![
        format!("{prefix}.completed"),
        format!("{prefix}.expired"),
        "transaction.fiatToCrypto.completed".to_owned(),
        "transaction.fiatToCrypto.processing".to_owned(),
    ];
    expected.sort();
    assert_eq!(
        names(&events),
        expected,
        "{spelling:?}: documented events only"
    );
    for event in &events {
        assert!(
            event["id"]
                .as_str()
                .is_some_and(|i| i.starts_with("whk_evt_")),
            "{event}"
        );
        assert!(whole_seconds(&event["createdAt"]), "{event}");
    }

    let completed = hooks.find(&format!("{prefix}.completed"))["data"].clone();
    assert_eq!(completed["id"], paid["id"]);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["source"]["amount"], "200.00");
    let txn = completed[link]
        .as_str()
        .expect("linked transaction")
        .to_owned();
    assert!(txn.starts_with("txn_"), "{txn}");

    let processing = hooks.find("transaction.fiatToCrypto.processing")["data"].clone();
    assert_eq!(processing["id"], txn.as_str());
    assert_eq!(processing["object"], "transaction");
    assert_eq!(processing["type"], "fiatToCrypto");
    assert_eq!(processing["status"], "processing");
    assert_eq!(processing["subStatus"], "processing.fundsPulled");
    assert_eq!(processing["cashIn"], paid["id"]);
    assert_eq!(processing["customerId"], paid["customerId"]);
    assert_eq!(processing["source"]["network"], "cash");
    assert_eq!(processing["source"]["amountGross"], "200.00");
    assert_eq!(processing["destination"]["amountGross"], "192.00");
    assert_eq!(
        processing["destination"]["wallet"],
        completed["destination"]["wallet"]
    );
    let txhash = processing["destination"].get("txHash");
    assert!(txhash.is_none_or(Value::is_null), "no hash before delivery");

    let delivered = hooks.find("transaction.fiatToCrypto.completed")["data"].clone();
    assert_eq!(delivered["status"], "completed");
    assert!(delivered.get("subStatus").is_none_or(Value::is_null));
    assert!(
        delivered["destination"]["txHash"]
            .as_str()
            .is_some_and(|h| h.len() == 66 && h.starts_with("0x")),
        "{delivered}"
    );
    if spelling == Spelling::Guide {
        for key in ["quoteId", "depositAddress", "virtualAccount", "error"] {
            assert_eq!(processing[key], Value::Null, "{key}");
        }
        assert_eq!(processing["source"]["txHash"], Value::Null);
    }

    let expired = hooks.find(&format!("{prefix}.expired"))["data"].clone();
    assert_eq!(expired["id"], kept_id.as_str());
    assert_eq!(expired["status"], "expired");
    sb.shutdown().await;
}

#[tokio::test]
async fn only_documented_webhooks_with_the_guides_payloads_in_the_guides_spelling() {
    webhooks_in(Spelling::Guide).await;
}

#[tokio::test]
async fn only_documented_webhooks_with_the_guides_payloads_in_the_schemas_spelling() {
    webhooks_in(Spelling::OpenApi).await;
}
