//! End-to-end tests of the sandbox: start it with `start()` and talk to it over loopback with a
//! real HTTP client, asserting what a gateway would see on the wire.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{Answer, answer, config, sandbox};
use oms_sandbox::{
    CONNECTION_RESET, Fault, FaultAction, FaultPlan, FaultStats, Gate, SandboxHandle,
    SandboxSettings, Spelling, start,
};

#[tokio::test]
async fn token_exchange_checks_credentials() {
    let sb = start(config()).await.expect("start");
    let http = reqwest::Client::new();
    let url = format!("{}/auth/token", sb.base_url());
    let wrong = answer(
        http.post(&url)
            .json(&json!({"apiKey": sb.api_key(), "apiSecret": "nope"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), "invalid_credentials");
    assert!(
        wrong.headers["x-request-id"]
            .to_str()
            .is_ok_and(|v| v.starts_with("req_"))
    );
    let missing = answer(http.post(&url).json(&json!({})).send().await.expect("send")).await;
    assert_eq!(missing.status, 401);
    let garbage = answer(http.post(&url).body("{").send().await.expect("send")).await;
    assert_eq!(garbage.status, 400);
    let ok = answer(
        http.post(&url)
            .json(&json!({"apiKey": sb.api_key(), "apiSecret": sb.api_secret()}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["tokenType"], "bearer");
    assert_eq!(ok.body["expiresIn"], 3600);
    assert!(
        ok.body["expiresAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(sb.token_exchanges(), 1);
    assert_eq!(sb.count("POST", "/auth/token"), 4);
    let statuses: Vec<u16> = sb.journal().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 401, 400, 200]);
    assert!(!format!("{:?}", config()).contains(&config().api_secret));
    sb.shutdown().await;
}

#[tokio::test]
async fn the_guides_flow_end_to_end() {
    let (sb, api) = sandbox(config()).await;

    let created = api.create("ci_order_789").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let ci = &created.body;
    let id = ci["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("ci_") && id.len() == 29, "{id}");
    assert_eq!(ci["object"], "cashIn");
    assert_eq!(ci["type"], "fiatToCrypto");
    assert_eq!(ci["status"], "pending");
    assert_eq!(ci["subStatus"], "order_reserved");
    assert_eq!(ci["source"]["amountGross"], "200.00");
    assert_eq!(ci["source"]["amountNet"], "192.00");
    assert_eq!(
        ci["source"]["feesDeducted"],
        json!({"total": "8.00", "developer": "3.00", "oms": "5.00", "gas": "0.00"})
    );
    assert_eq!(ci["destination"]["amountNet"], "192.00");
    assert_eq!(ci["destination"]["wallet"], json!({"id": "wlt_01H9Xb"}));
    assert_eq!(ci["rates"]["effectiveRate"], "0.9600");
    assert_eq!(ci["rates"]["pair"], "usd/usdc");
    assert!(ci["source"].get("amount").is_none(), "OpenApi omits nulls");
    assert!(ci.get("completedAt").is_none());
    assert_eq!(ci["developerFees"][0]["amount"], "2.00");
    assert_eq!(ci["developerFees"][1]["flatFee"], "1.00");
    assert_eq!(ci["metadata"], json!({"order_id": "ord_789"}));
    let code = ci["depositInstructions"]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert!(
        code.len() == 7 && code.as_bytes()[3] == b' ',
        "code shaped like \"483 291\": {code}"
    );
    assert!(
        ci["createdAt"]
            .as_str()
            .is_some_and(|s| s.len() == 20 && s.ends_with('Z')),
        "whole seconds, as the docs show: {}",
        ci["createdAt"]
    );
    assert_eq!(
        ci["depositInstructions"]["locationName"],
        ci["location"]["name"]
    );

    let fetched = api.get(&format!("/cash-ins/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, created.body);

    let listed = api
        .get("/cash-ins?customer=cst_01H9Xa&status=pending")
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    assert_eq!(listed.body["hasMore"], false);
    assert_eq!(listed.body["nextCursor"], Value::Null);

    let auth = api
        .post(
            "/cash-ins/simulate/barcode-auth",
            Some("auth-1"),
            Some(json!({"accountNumber": code, "amount": "200.00"})),
        )
        .await;
    assert_eq!(auth.status, 200, "{}", auth.body);
    assert_eq!(auth.body["responseText"], "Approved");
    assert_eq!(auth.body["accountReferenceNumber"], id.as_str());
    let confirmation = auth.body["confirmationId"]
        .as_str()
        .expect("cnf")
        .to_owned();
    assert!(confirmation.starts_with("cnf_"));
    assert_eq!(
        api.get(&format!("/cash-ins/{id}")).await.body["status"],
        "processing"
    );

    let commit = api
        .post(
            "/cash-ins/simulate/auth-commit",
            Some("commit-1"),
            Some(json!({
                "accountNumber": code.replace(' ', ""),
                "accountReferenceNumber": id,
                "amount": "200.00",
                "originalConfirmationId": confirmation,
            })),
        )
        .await;
    assert_eq!(commit.status, 200, "{}", commit.body);
    assert_eq!(commit.body["responseText"], "Committed");
    assert_eq!(commit.body["authorizedAmount"], "200.00");

    sb.set_spelling(Spelling::Guide);
    let done = api.get(&format!("/cash-ins/{id}")).await.body;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["subStatus"], "settled");
    assert_eq!(done["source"]["amount"], "200.00");
    assert_eq!(done["destination"]["amount"], "192.00");
    assert!(
        done["transaction"]
            .as_str()
            .is_some_and(|t| t.starts_with("txn_"))
    );
    assert!(done["completedAt"].is_string());
    assert_eq!(done["sponsorGasCost"], Value::Null);
    assert_eq!(
        done["destination"]["wallet"],
        json!({"wallet": "wlt_01H9Xb"})
    );
    assert!(done["cash"]["cashLocationId"].is_string());
    assert_eq!(
        done["developerFees"][0],
        json!({"id": done["developerFees"][0]["id"], "type": "percentage", "rate": "0.01", "wallet": "wlt_01H9Xf", "payoutAsset": "usdc"})
    );
    assert_eq!(sb.cash_in_json(&id), Some(done));
    sb.shutdown().await;
}

#[tokio::test]
async fn guide_spelling_writes_nulls_for_what_is_not_known_yet() {
    let (sb, api) = sandbox(SandboxSettings {
        spelling: Spelling::Guide,
        ..config()
    })
    .await;
    let ci = api.create("k").await.body;
    for (obj, key) in [
        (&ci["source"], "amount"),
        (&ci["destination"], "amount"),
        (&ci, "completedAt"),
        (&ci, "transaction"),
        (&ci, "sponsorGasCost"),
    ] {
        assert_eq!(obj.get(key), Some(&Value::Null), "{key}");
    }
    assert!(ci.get("transactionId").is_none());
    sb.shutdown().await;
}

#[tokio::test]
async fn idempotency_replays_rejects_reuse_and_requires_a_key() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    let first = api
        .post("/cash-ins", Some("same"), Some(body.clone()))
        .await;
    assert_eq!(first.status, 201);
    let again = api
        .post("/cash-ins", Some("same"), Some(body.clone()))
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(sb.cash_in_count(), 1);

    let mut other = body.clone();
    other["source"]["indicatedAmount"] = json!("300.00");
    let reused = api.post("/cash-ins", Some("same"), Some(other)).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.code(), "idempotency_key_reused");

    let keyless = api.post("/cash-ins", None, Some(body.clone())).await;
    assert_eq!(keyless.status, 400);
    assert_eq!(keyless.code(), "idempotency_key_required");

    // Validation failures are stored too: the same bad request replays its 400.
    let bad = api.post("/cash-ins", Some("bad"), Some(json!({}))).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), "validation_error");
    let bad_again = api.post("/cash-ins", Some("bad"), Some(json!({}))).await;
    assert_eq!(bad_again.headers["idempotent-replayed"], "true");
    assert_eq!(bad_again.body, bad.body);
    assert_eq!(sb.cash_in_count(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_key_in_flight_answers_409() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.inject(Fault::delay(
        Some("POST"),
        "/cash-ins",
        1,
        Duration::from_millis(300),
    ));
    let slow = api.post("/cash-ins", Some("k"), Some(body.clone()));
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.post("/cash-ins", Some("k"), Some(body.clone())).await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(slow.status, 201);
    assert_eq!(second.status, 409);
    assert_eq!(second.code(), "idempotency_key_in_use");
    assert_eq!(sb.cash_in_count(), 1);
    let third = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(third.headers["idempotent-replayed"], "true");
    sb.shutdown().await;
}

// === Idempotency-Key deduplication switched off (a test aid) ===

#[tokio::test]
async fn with_idempotency_off_every_post_runs_as_if_the_key_were_ignored() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    let before = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
    assert_eq!(before.status, 201);
    sb.set_idempotency(false);

    // The same key and body again: a second cash-in, not a replay.
    let again = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_ne!(again.body["id"], before.body["id"]);
    // The same key with another body: executed too, not 422.
    let mut other = body.clone();
    other["source"]["indicatedAmount"] = json!("300.00");
    let reused = api.post("/cash-ins", Some("k"), Some(other.clone())).await;
    assert_eq!(reused.status, 201, "{}", reused.body);
    assert_eq!(reused.body["source"]["indicatedAmount"], "300.00");
    // A refresh twice with one key refreshes twice.
    let id = before.body["id"].as_str().expect("id").to_owned();
    let code = |a: &Answer| a.body["depositInstructions"]["code"].clone();
    let path = format!("/cash-ins/{id}/refresh");
    let first = api.post(&path, Some("r"), None).await;
    let second = api.post(&path, Some("r"), None).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_ne!(code(&first), code(&second), "refreshed twice");
    // The header is still required.
    let keyless = api.post("/cash-ins", None, Some(body.clone())).await;
    assert_eq!(keyless.code(), "idempotency_key_required");
    assert_eq!(sb.cash_in_count(), 3);

    // Back on: what was recorded before applies again; nothing was recorded while off.
    sb.set_idempotency(true);
    let replay = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body["id"], before.body["id"]);
    let fresh = api.post(&path, Some("r"), None).await;
    assert!(fresh.headers.get("idempotent-replayed").is_none());
    assert_eq!(sb.cash_in_count(), 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn with_idempotency_off_a_key_in_flight_does_not_stop_a_second_post() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.set_idempotency(false);
    let gate = Gate::new(Duration::from_secs(30));
    sb.inject(Fault::hold(Some("POST"), "/cash-ins", 1, &gate));
    let held = api.post("/cash-ins", Some("k"), Some(body.clone()));
    let second = async {
        wait_until(&sb, "the first POST held", |sb| {
            sb.journal().iter().any(|r| r.status == 0)
        })
        .await;
        let second = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
        gate.open();
        second
    };
    let (held, second) = tokio::join!(held, second);
    assert_eq!((held.status, second.status), (201, 201), "not 409");
    assert_ne!(held.body["id"], second.body["id"]);
    assert_eq!(sb.cash_in_count(), 2);
    sb.shutdown().await;
}

// === Scripted holds and resets ===

#[tokio::test]
async fn a_held_request_keeps_its_key_until_the_gate_opens() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    let gate = Gate::new(Duration::from_secs(30));
    sb.inject(Fault::hold(Some("POST"), "/cash-ins", 1, &gate));
    let held = api.post("/cash-ins", Some("k"), Some(body.clone()));
    let meanwhile = async {
        wait_until(&sb, "the POST held", |sb| {
            sb.journal().iter().any(|r| r.status == 0)
        })
        .await;
        let second = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
        let count = sb.cash_in_count();
        gate.open();
        (second, count)
    };
    let (held, (second, count_while_held)) = tokio::join!(held, meanwhile);
    assert_eq!(count_while_held, 0, "nothing happened while held");
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(held.status, 201);
    let faults: Vec<Option<String>> = sb.journal().into_iter().map(|r| r.fault).collect();
    assert!(faults.contains(&Some("scripted:hold".into())), "{faults:?}");
    assert_eq!(sb.cash_in_count(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_held_request_whose_client_leaves_has_no_effect_and_frees_its_key() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    let gate = Gate::new(Duration::from_secs(30));
    sb.inject(Fault::hold(Some("POST"), "/cash-ins", 1, &gate));
    let held = api.post("/cash-ins", Some("k"), Some(body.clone()));
    let gave_up = tokio::time::timeout(Duration::from_secs(1), held).await;
    assert!(gave_up.is_err(), "held past the client's patience");
    wait_until(&sb, "the dropped request journalled 499", |sb| {
        sb.journal().iter().any(|r| r.status == 499)
    })
    .await;
    gate.open();
    assert_eq!(sb.cash_in_count(), 0);
    let retried = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    sb.shutdown().await;
}

#[tokio::test]
async fn a_scripted_reset_has_no_effect_and_the_client_sees_no_answer() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.inject(Fault::reset(Some("POST"), "/cash-ins", 1));
    let sent = api
        .http
        .post(format!("{}/cash-ins", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await;
    let error = sent.expect_err("no answer, only a reset");
    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    let last = sb.journal().pop().expect("entry");
    assert_eq!(
        (last.status, last.fault.as_deref()),
        (CONNECTION_RESET, Some("scripted:reset"))
    );
    assert_eq!(sb.cash_in_count(), 0);
    let retried = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(retried.status, 201);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    sb.shutdown().await;
}

/// Polls `condition` every 10 ms; fails the test after 10 s.
async fn wait_until(sb: &SandboxHandle, what: &str, condition: impl Fn(&SandboxHandle) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition(sb) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn injected_faults_answer_without_effect_and_release_the_key() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.inject(Fault {
        method: Some("POST".into()),
        path_prefix: "/cash-ins".into(),
        times: 1,
        action: FaultAction::Respond {
            status: 503,
            body: r#"{"error":{"code":"unavailable","message":"try later"}}"#.into(),
            headers: vec![("retry-after".into(), "1".into())],
        },
    });
    let failed = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.headers["retry-after"], "1");
    assert_eq!(failed.code(), "unavailable");
    assert_eq!(sb.cash_in_count(), 0);
    let retried = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(retried.status, 201);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    let posts: Vec<u16> = sb
        .journal()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, vec![503, 201]);
    let last = sb.journal().pop().expect("entry");
    assert_eq!(last.idempotency_key.as_deref(), Some("k"));
    assert_eq!(last.content_type.as_deref(), Some("application/json"));
    assert!(last.authorization.is_some_and(|a| a.starts_with("Bearer ")));

    // Token exchanges can be faulted too.
    sb.inject(Fault::status(None, "/auth/token", 1, 500));
    let resp = reqwest::Client::new()
        .post(format!("{}/auth/token", sb.base_url()))
        .json(&json!({"apiKey": sb.api_key(), "apiSecret": sb.api_secret()}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 500);
    sb.shutdown().await;
}

#[tokio::test]
async fn auth_is_checked_first_and_revocation_bites() {
    let (sb, api) = sandbox(config()).await;
    let anonymous = answer(
        reqwest::Client::new()
            .post(format!("{}/cash-ins", sb.base_url()))
            .body("not even json")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.code(), "unauthorized");
    assert_eq!(api.get("/cash-ins").await.status, 200);
    sb.revoke_tokens();
    assert_eq!(api.get("/cash-ins").await.status, 401);
    assert_eq!(sb.journal().last().map(|r| r.status), Some(401));
    sb.shutdown().await;
}

#[tokio::test]
async fn codes_expire_and_refresh_replaces_them() {
    let (sb, api) = sandbox(SandboxSettings {
        code_ttl: Duration::from_millis(400),
        refresh_window: Some(Duration::from_millis(400)),
        ..config()
    })
    .await;
    let ci = api.create("a").await.body;
    let id = ci["id"].as_str().expect("id").to_owned();
    let old_code = ci["depositInstructions"]["code"].clone();
    let refreshed = api
        .post(&format!("/cash-ins/{id}/refresh"), Some("r1"), None)
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_ne!(refreshed.body["depositInstructions"]["code"], old_code);
    // The old code is dead.
    let dead = api
        .post(
            "/cash-ins/simulate/barcode-auth",
            Some("b1"),
            Some(json!({"accountNumber": old_code, "amount": "50.00"})),
        )
        .await;
    assert_eq!(dead.status, 404);

    // The code lapses at 400 ms and the refresh window ends 400 ms later.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The background sweep has expired it before anyone asked (no lazy expiry in this peek).
    assert_eq!(sb.stored_status(&id), Some("expired"));
    let swept = sb.cash_in_json(&id).expect("exists");
    assert_eq!(swept["status"], "expired");
    assert_eq!(swept["subStatus"], "cash_deposit_expired");
    let late = api
        .post(&format!("/cash-ins/{id}/refresh"), Some("r2"), None)
        .await;
    assert_eq!(late.status, 422);
    assert_eq!(late.code(), "invalid_state");
    let missing = api.post("/cash-ins/nope/refresh", Some("r3"), None).await;
    assert_eq!(missing.status, 404);
    sb.shutdown().await;
}

#[tokio::test]
async fn sandbox_controls_expire_and_fail() {
    let (sb, api) = sandbox(config()).await;
    let a = api.create("a").await.body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let body = api.create_body().await;
    let b = api.post("/cash-ins", Some("b"), Some(body)).await.body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let expired = api
        .post(&format!("/sandbox/cash-ins/{a}/expire"), Some("e1"), None)
        .await;
    assert_eq!(expired.body["status"], "expired");
    let again = api
        .post(&format!("/sandbox/cash-ins/{a}/expire"), Some("e2"), None)
        .await;
    assert_eq!(again.status, 422);
    let failed = api
        .post(
            &format!("/sandbox/cash-ins/{b}/fail"),
            Some("f1"),
            Some(json!({"subStatus": "provider_order_failed"})),
        )
        .await;
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["subStatus"], "provider_order_failed");
    let list = api.get("/cash-ins?status=failed").await.body;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    sb.shutdown().await;
}

#[tokio::test]
async fn listing_pages_and_validates() {
    let (sb, api) = sandbox(config()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            api.create(&format!("k{i}")).await.body["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let page = api.get("/cash-ins?limit=2").await.body;
    assert_eq!(page["data"][0]["id"], ids[2].as_str());
    assert_eq!(page["data"][1]["id"], ids[1].as_str());
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["nextCursor"], ids[1].as_str());
    let rest = api
        .get(&format!("/cash-ins?limit=2&startingAfter={}", ids[1]))
        .await
        .body;
    assert_eq!(rest["data"][0]["id"], ids[0].as_str());
    assert_eq!(rest["hasMore"], false);
    let bad = api
        .get("/cash-ins?status=done&limit=500&createdAfter=yesterday&startingAfter=ci_x")
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["error"]["details"].as_array().map(Vec::len),
        Some(3)
    );
    let unknown_cursor = api.get("/cash-ins?startingAfter=ci_x").await;
    assert_eq!(unknown_cursor.status, 400);
    sb.shutdown().await;
}

#[tokio::test]
async fn locations_are_deterministic_across_seeds() {
    let (sb1, api1) = sandbox(SandboxSettings {
        seed: 1,
        ..config()
    })
    .await;
    let (sb2, api2) = sandbox(SandboxSettings {
        seed: 2,
        ..config()
    })
    .await;
    let q = "/cash-locations?provider=greendot&latitude=40.7128&longitude=-74.0060&flow=cash-in";
    let a = api1.get(q).await.body;
    assert_eq!(a, api2.get(q).await.body);
    let first = &a["data"][0];
    assert_eq!(first["country"], "US");
    assert_eq!(first["provider"], "greendot");
    assert!(first["coordinates"]["latitude"].is_f64());
    assert!(first["distance"].is_number());
    let bad = api1
        .get("/cash-locations?provider=greendot&latitude=abc")
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["error"]["details"].as_array().map(Vec::len),
        Some(2)
    );
    let nowhere = api1
        .get("/cash-locations?provider=greendot&latitude=0&longitude=0")
        .await;
    assert_eq!(nowhere.body, json!({"data": []}));
    sb1.shutdown().await;
    sb2.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (sb, api) = sandbox(config()).await;
    let missing = api.get("/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "not_found");
    assert_eq!(missing.headers["content-type"], "application/json");
    let wrong = answer(
        reqwest::Client::new()
            .delete(format!("{}/cash-ins", sb.base_url()))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.code(), "method_not_allowed");
    let unknown = api.get("/cash-ins/ci_NOTHERE").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(sb.count("", "/"), 4);
    sb.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (sb, api) = sandbox(config()).await;
    let base = sb.base_url();
    sb.clone().shutdown().await;
    let after = reqwest::Client::new()
        .get(format!("{base}/cash-ins"))
        .bearer_auth(&api.token)
        .send()
        .await;
    assert!(after.is_err());
}

#[tokio::test]
async fn no_input_makes_it_fall_over() {
    let (sb, api) = sandbox(config()).await;
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let many_keys: serde_json::Map<String, Value> = (0..60)
        .map(|i| (format!("k{i}"), Value::String("v".into())))
        .collect();
    let bodies: Vec<String> = vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        "\u{0}\u{1}garbage".into(),
        deep,
        r#"{"customerId": {"nested": true}, "source": [], "destination": 1, "cash": null}"#.into(),
        r#"{"source": {"asset": "usd", "indicatedAmount": "1e400"}}"#.into(),
        r#"{"source": {"indicatedAmount": "99999999999999999999999999999.99"}}"#.into(),
        r#"{"developerFees": [{"percentage": "0.9999999"}, {"flatFee": "-1"}, {"type": 5}, null]}"#
            .into(),
        json!({"metadata": many_keys}).to_string(),
        json!({"metadata": {"": "x", "k": "v".repeat(501)}}).to_string(),
        r#"{"accountNumber": "１２３ ４５６", "amount": "200.00"}"#.into(),
        r#"{"accountNumber": 123456, "amount": 200}"#.into(),
        r#"{"subStatus": "settled"}"#.into(),
        r#"{"apiKey": ["x"], "apiSecret": {}}"#.into(),
    ];
    let posts = [
        "/auth/token",
        "/cash-ins",
        "/cash-ins/ci_x/refresh",
        "/cash-ins/simulate/barcode-auth",
        "/cash-ins/simulate/auth-commit",
        "/sandbox/cash-ins/ci_x/expire",
        "/sandbox/cash-ins/ci_x/fail",
    ];
    for (i, body) in bodies.iter().enumerate() {
        for path in posts {
            let resp = api
                .http
                .post(format!("{}{path}", api.base))
                .bearer_auth(&api.token)
                .header("Idempotency-Key", format!("fuzz-{i}"))
                .body(body.clone())
                .send()
                .await
                .expect("send");
            let a = answer(resp).await;
            assert!(
                (400..500).contains(&a.status),
                "{path} {body:.60}: {} {}",
                a.status,
                a.body
            );
            assert!(a.body["error"]["code"].is_string(), "{path}: {}", a.body);
        }
    }
    for query in [
        "/cash-ins?limit=-1",
        "/cash-ins?limit=99999999999999999999999",
        "/cash-ins?createdAfter=%FF%FE",
        "/cash-ins?status=%00",
        "/cash-ins?startingAfter=ci_x&endingBefore=ci_y",
        "/cash-locations?provider=greendot&latitude=NaN&longitude=inf",
        "/cash-locations?provider=greendot&latitude=90.0000000000000001&longitude=-180",
        "/cash-locations?provider=&latitude=&longitude=&flow=sideways",
        "/cash-ins/%E2%82%AC",
    ] {
        let a = api.get(query).await;
        assert!(a.status < 500, "{query}: {} {}", a.status, a.body);
    }
    let big = "x".repeat(2 << 20);
    let resp = api
        .http
        .post(format!("{}/cash-ins", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", "big")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(sb.cash_in_count(), 0);
    sb.shutdown().await;
}

// === fault plans ===

fn plan(spec: &str) -> FaultPlan {
    spec.parse().expect("spec")
}

/// A client that carries on through faults: it notes each request's outcome (the status, or
/// `reset` for a connection error) and exchanges a new token after a 401.
struct Chaos {
    http: reqwest::Client,
    base: String,
    key: String,
    secret: String,
    token: String,
}

impl Chaos {
    async fn new(sb: &SandboxHandle) -> Chaos {
        let mut chaos = Chaos {
            http: reqwest::Client::new(),
            base: sb.base_url(),
            key: sb.api_key().to_owned(),
            secret: sb.api_secret().to_owned(),
            token: String::new(),
        };
        chaos.exchange().await;
        chaos
    }

    async fn exchange(&mut self) {
        let resp = self
            .http
            .post(format!("{}/auth/token", self.base))
            .json(&json!({"apiKey": self.key, "apiSecret": self.secret}))
            .send()
            .await
            .expect("token exchanges are not faulted");
        let a = answer(resp).await;
        assert_eq!(a.status, 200, "{}", a.body);
        self.token = a.body["accessToken"].as_str().expect("token").to_owned();
    }

    async fn get(&mut self, path: &str) -> String {
        let sent = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read it all, so the connection goes back to the pool.
                let _ = resp.bytes().await;
                if status == 401 {
                    self.exchange().await;
                }
                status.to_string()
            }
            Err(e) => {
                assert!(!e.is_timeout(), "{e}");
                "reset".to_owned()
            }
        }
    }

    async fn series(&mut self, n: usize) -> Vec<String> {
        let mut outcomes = Vec::with_capacity(n);
        for _ in 0..n {
            outcomes.push(self.get("/cash-ins/ci_nothere").await);
        }
        outcomes
    }
}

fn faults_seen(sb: &SandboxHandle) -> Vec<Option<String>> {
    sb.journal()
        .into_iter()
        .filter(|r| r.path.starts_with("/cash-ins"))
        .map(|r| r.fault)
        .collect()
}

#[tokio::test]
async fn a_seeded_plan_faults_the_same_requests_every_time() {
    let spec = "seed=11,500=0.1,503=0.1,429=0.1,reset_before=0.1,reset_after=0.05,\
                latency=0.2:1ms-3ms,revoke=0.05";
    let sb = start(SandboxSettings {
        faults: plan(spec),
        ..config()
    })
    .await
    .expect("start");
    let mut chaos = Chaos::new(&sb).await;
    let first = chaos.series(120).await;
    let first_faults = faults_seen(&sb);
    for outcome in ["404", "500", "503", "429", "reset", "401"] {
        assert!(first.iter().any(|o| o == outcome), "{outcome} in {first:?}");
    }
    assert_eq!(sb.fault_stats().requests_seen, 120);

    // Setting the plan again restarts its sequence.
    sb.clear_journal();
    sb.set_fault_plan(plan(spec));
    assert_eq!(sb.fault_stats(), FaultStats::default());
    assert_eq!(chaos.series(120).await, first);
    assert_eq!(faults_seen(&sb), first_faults);

    // And another sandbox with the same plan does the same.
    let other = start(SandboxSettings {
        faults: plan(spec),
        ..config()
    })
    .await
    .expect("start");
    let mut chaos = Chaos::new(&other).await;
    assert_eq!(chaos.series(120).await, first);
    assert_eq!(other.fault_stats(), sb.fault_stats());
    sb.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn rates_roughly_hold_over_2000_requests() {
    let (sb, _) = sandbox(config()).await;
    sb.set_fault_plan(plan(
        "seed=3,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,reset_before=0.03",
    ));
    let mut chaos = Chaos::new(&sb).await;
    let n = 2_000;
    let outcomes = chaos.series(n).await;
    let count = |o: &str| outcomes.iter().filter(|x| *x == o).count() as u64;
    let stats = sb.fault_stats();
    assert_eq!(stats.requests_seen, n as u64);
    let seen = [
        (count("500"), stats.status_500, 0.05),
        (count("502"), stats.status_502, 0.05),
        (count("503"), stats.status_503, 0.1),
        (count("504"), stats.status_504, 0.02),
        (count("429"), stats.status_429, 0.05),
        (count("reset"), stats.reset_before, 0.03),
    ];
    // First hit wins, so each answer fault gets its rate of what the earlier ones left.
    let mut left = 1.0;
    for (observed, counted, p) in seen {
        assert_eq!(observed, counted, "the client saw what the stats say");
        let expected = left * p * n as f64;
        let sd = (expected * (1.0 - left * p)).sqrt();
        assert!(
            (observed as f64 - expected).abs() < 5.0 * sd,
            "observed {observed}, expected about {expected:.0}: {stats:?}"
        );
        left *= 1.0 - p;
    }
    let clean = n as u64 - seen.iter().map(|s| s.0).sum::<u64>();
    assert_eq!(count("404"), clean);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_reset_before_has_no_effect_and_the_client_sees_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.set_fault_plan(plan("reset_before=1"));
    let sent = api
        .http
        .post(format!("{}/cash-ins", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await;
    let error = sent.expect_err("no answer, only a reset");
    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    assert_eq!(sb.cash_in_count(), 0);
    let last = sb.journal().pop().expect("entry");
    assert_eq!(last.status, CONNECTION_RESET);
    assert_eq!(last.fault.as_deref(), Some("reset_before"));

    // On the wire it is an RST, not a polite close.
    let mut raw = tokio::net::TcpStream::connect(sb.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET /cash-ins HTTP/1.1\r\nhost: sandbox\r\nauthorization: Bearer {}\r\n\r\n",
        api.token
    );
    raw.write_all(request.as_bytes()).await.expect("write");
    let mut buf = [0_u8; 256];
    let read = raw.read(&mut buf).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );

    // Nothing happened, so the key is free: the retry runs for real.
    sb.set_fault_plan(FaultPlan::none());
    let retried = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(retried.status, 201);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    assert_eq!(sb.cash_in_count(), 1);
    // Killed connections do not hold up a graceful shutdown.
    let stopping = std::time::Instant::now();
    sb.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_reset_after_commits_and_the_retry_replays_it() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.set_fault_plan(plan("seed=1,reset_after=1"));
    let sent = api
        .http
        .post(format!("{}/cash-ins", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await;
    assert!(sent.is_err(), "the client never hears back");
    assert_eq!(sb.cash_in_count(), 1, "but the cash-in exists");
    let last = sb.journal().pop().expect("entry");
    assert_eq!(
        (last.status, last.fault.as_deref()),
        (201, Some("reset_after"))
    );

    sb.set_fault_plan(FaultPlan::none());
    let retried = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(retried.status, 201);
    assert_eq!(retried.headers["idempotent-replayed"], "true");
    let listed = api.get("/cash-ins").await.body;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(retried.body["id"], listed["data"][0]["id"]);
    assert_eq!(sb.cash_in_count(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn planned_statuses_answer_without_effect_and_429_says_when_to_retry() {
    let (sb, api) = sandbox(config()).await;
    let body = api.create_body().await;
    sb.set_fault_plan(plan("429=1,retry_after=3s"));
    let limited = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "3");
    assert_eq!(limited.code(), "injected_fault");
    sb.set_fault_plan(plan("429=1,retry_after=1500ms"));
    assert_eq!(api.get("/cash-ins").await.headers["retry-after"], "2");

    sb.set_fault_plan(plan("503=1"));
    let unavailable = api.post("/cash-ins", Some("k"), Some(body.clone())).await;
    assert_eq!(unavailable.status, 503);
    assert_eq!(sb.cash_in_count(), 0);

    // A scripted fault claims its request before the plan does (the plan still counts it).
    sb.inject(Fault::status(None, "/cash-ins", 1, 500));
    assert_eq!(api.get("/cash-ins").await.status, 500);
    assert_eq!(
        sb.journal().pop().and_then(|r| r.fault).as_deref(),
        Some("scripted:500")
    );
    let stats = sb.fault_stats();
    assert_eq!((stats.requests_seen, stats.status_503), (2, 1));

    sb.set_fault_plan(FaultPlan::none());
    let created = api.post("/cash-ins", Some("k"), Some(body)).await;
    assert_eq!(created.status, 201, "faulted attempts left the key free");
    assert_eq!(sb.journal().pop().and_then(|r| r.fault), None);
    sb.shutdown().await;
}

#[tokio::test]
async fn the_plan_can_be_set_over_http() {
    let (sb, api) = sandbox(config()).await;
    let url = format!("{}/sandbox/faults", api.base);
    let put = |body: String| api.http.put(&url).bearer_auth(&api.token).body(body).send();

    let set = answer(put("seed=1,503=1".into()).await.expect("send")).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["spec"], "seed=1,503=1");
    assert_eq!(set.body["stats"]["requestsSeen"], 0);
    assert_eq!(sb.fault_plan(), plan("seed=1,503=1"));
    assert_eq!(api.get("/cash-ins").await.status, 503);
    let status = api.get("/sandbox/faults").await;
    assert_eq!(status.body["spec"], "seed=1,503=1");
    assert_eq!(status.body["stats"]["requestsSeen"], 1);
    assert_eq!(status.body["stats"]["status503"], 1);

    let bad = answer(put("seed=1,503=2".into()).await.expect("send")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["details"][0]["field"], "spec");
    let message = bad.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("`503=2`"), "{message}");
    assert_eq!(
        sb.fault_plan(),
        plan("seed=1,503=1"),
        "a bad spec changes nothing"
    );

    let anonymous = answer(api.http.put(&url).body("none").send().await.expect("send")).await;
    assert_eq!(anonymous.status, 401);
    let posted = api.post("/sandbox/faults", Some("p"), None).await;
    assert_eq!(posted.status, 405);

    // Even a plan that faults every path leaves its own control alone.
    let json_body = json!({"spec": "500=1,paths=/"}).to_string();
    assert_eq!(
        answer(put(json_body).await.expect("send")).await.status,
        200
    );
    assert_eq!(api.get("/cash-locations").await.status, 500);
    let off = answer(
        put(json!({"spec": "none"}).to_string())
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(off.status, 200);
    assert_eq!(off.body["spec"], "none");
    assert_eq!(sb.fault_plan(), FaultPlan::none());
    assert_eq!(api.get("/cash-ins").await.status, 200);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_revocation_answers_401_and_token_exchanges_still_work() {
    let (sb, api) = sandbox(config()).await;
    sb.set_fault_plan(plan("revoke=1"));
    let revoked = api.get("/cash-ins").await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.code(), "unauthorized");
    assert_eq!(sb.fault_stats().revocations, 1);
    assert_eq!(
        sb.journal().pop().and_then(|r| r.fault).as_deref(),
        Some("revoke")
    );

    // The exchange is outside the plan's paths, so a client can always get a new token; with
    // the plan still on, that token dies on its first use too.
    let mut chaos = Chaos::new(&sb).await;
    assert_eq!(chaos.get("/cash-ins").await, "401");
    sb.set_fault_plan(FaultPlan::none());
    chaos.exchange().await;
    assert_eq!(chaos.get("/cash-ins").await, "200");
    assert_eq!(sb.token_exchanges(), 4);
    sb.shutdown().await;
}

#[tokio::test]
async fn the_journal_debug_print_hides_credentials() {
    let (sb, api) = sandbox(config()).await;
    assert_eq!(api.get("/cash-ins").await.status, 200);
    let printed = format!("{:?}", sb.journal());
    assert!(!printed.contains(sb.api_secret()), "{printed}");
    assert!(!printed.contains(&api.token), "{printed}");
    assert!(printed.contains("Bearer [redacted]"), "{printed}");
    let journal = sb.journal();
    assert!(
        journal[0].body.contains(sb.api_secret()),
        "the fields keep what was sent"
    );
    assert_eq!(
        journal[1].authorization.as_deref(),
        Some(format!("Bearer {}", api.token).as_str())
    );
    sb.shutdown().await;
}
