//! End-to-end tests of the sandbox: start it with `start()` and talk to it over loopback with a
//! real HTTP client, asserting what a gateway would see on the wire.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{Fault, FaultAction, SandboxConfig, SandboxHandle, Spelling, start};

/// A thin client: one bearer token, JSON in and out.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

async fn sandbox(config: SandboxConfig) -> (SandboxHandle, Api) {
    let sb = start(config).await.expect("start");
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/auth/token", sb.base_url()))
        .json(&json!({"apiKey": sb.api_key(), "apiSecret": sb.api_secret()}))
        .send()
        .await
        .expect("token");
    let a = answer(resp).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let token = a.body["accessToken"].as_str().expect("token").to_owned();
    let base = sb.base_url();
    (sb, Api { http, base, token })
}

impl Api {
    async fn get(&self, path: &str) -> Answer {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("send");
        answer(resp).await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await.expect("send")).await
    }

    /// The first location near the guide's Sacramento point.
    async fn location(&self) -> (String, String, Value) {
        let a = self
            .get("/cash-locations?provider=greendot&latitude=38.495133&longitude=-121.505336")
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let first = a.body["data"][0].clone();
        (
            first["id"].as_str().expect("id").to_owned(),
            first["locReference"].as_str().expect("ref").to_owned(),
            first,
        )
    }

    async fn create_body(&self) -> Value {
        let (id, reference, _) = self.location().await;
        json!({
            "customerId": "cst_01H9Xa",
            "source": {"asset": "usd", "indicatedAmount": "200.00"},
            "destination": {"wallet": {"wallet": "wlt_01H9Xb"}, "asset": "usdc", "network": "polygon"},
            "cash": {"cashLocationId": id, "cashLocationReference": reference},
            "sponsorGas": false,
            "developerFees": [
                {"type": "percentage", "rate": "0.01", "wallet": "wlt_01H9Xf"},
                {"type": "fixed", "amount": "1.00", "wallet": "wlt_01H9Xf"}
            ],
            "metadata": {"order_id": "ord_789"}
        })
    }

    async fn create(&self, key: &str) -> Answer {
        let body = self.create_body().await;
        self.post("/cash-ins", Some(key), Some(body)).await
    }
}

fn config() -> SandboxConfig {
    SandboxConfig {
        seed: 7,
        ..SandboxConfig::default()
    }
}

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
            .is_some_and(|s| s.len() == 24 && s.ends_with('Z'))
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
    let (sb, api) = sandbox(SandboxConfig {
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
    let (sb, api) = sandbox(SandboxConfig {
        code_ttl: Duration::from_millis(400),
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

    tokio::time::sleep(Duration::from_millis(800)).await;
    // The background sweep has expired it before anyone asked (no lazy expiry in this peek).
    let stored = super::lock(&sb.inner.sandbox.store).stored_status(&id);
    assert_eq!(stored, Some(super::store::Status::Expired));
    let swept = sb.cash_in_json(&id).expect("exists");
    assert_eq!(swept["status"], "expired");
    assert_eq!(swept["subStatus"], "cash_deposit_expired");
    assert_eq!(
        swept["updatedAt"],
        swept["depositInstructions"]["expiresAt"]
    );
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
    let (sb1, api1) = sandbox(SandboxConfig {
        seed: 1,
        ..config()
    })
    .await;
    let (sb2, api2) = sandbox(SandboxConfig {
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
