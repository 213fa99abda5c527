//! What the sandbox's HTTP tests share: a started sandbox with a token, and a thin JSON client.

#![allow(dead_code)] // each test binary uses its own part

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use oms_sandbox::{SandboxHandle, SandboxSettings, start};

/// A thin client: one bearer token, JSON in and out.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn answer(resp: reqwest::Response) -> Answer {
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

pub async fn sandbox(config: SandboxSettings) -> (SandboxHandle, Api) {
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
    pub async fn get(&self, path: &str) -> Answer {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("send");
        answer(resp).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Option<Value>) -> Answer {
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
    pub async fn location(&self) -> (String, String, Value) {
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

    pub async fn create_body(&self) -> Value {
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

    pub async fn create(&self, key: &str) -> Answer {
        let body = self.create_body().await;
        self.post("/cash-ins", Some(key), Some(body)).await
    }
}

pub fn config() -> SandboxSettings {
    SandboxSettings {
        seed: 7,
        ..SandboxSettings::default()
    }
}

// === the deposit, as a store counter sends it ===

impl Api {
    /// Deposits `amount` against cash-in `ci` (as created): barcode-auth, then auth-commit.
    pub async fn deposit(&self, ci: &Value, amount: &str) {
        let confirmation = self.authorize(ci, amount).await;
        self.commit(ci, amount, &confirmation).await;
    }

    /// The cash is deposited at the counter: the cash-in is `processing`.
    pub async fn authorize(&self, ci: &Value, amount: &str) -> String {
        let id = ci["id"].as_str().expect("id");
        let code = ci["depositInstructions"]["code"].clone();
        let auth = self
            .post(
                "/cash-ins/simulate/barcode-auth",
                Some(&format!("auth-{id}")),
                Some(json!({"accountNumber": code, "amount": amount})),
            )
            .await;
        assert_eq!(auth.status, 200, "{}", auth.body);
        auth.body["confirmationId"]
            .as_str()
            .expect("confirmationId")
            .to_owned()
    }

    /// The counter commits the authorized deposit: the cash-in is `completed`.
    pub async fn commit(&self, ci: &Value, amount: &str, confirmation: &str) {
        let id = ci["id"].as_str().expect("id");
        let commit = self
            .post(
                "/cash-ins/simulate/auth-commit",
                Some(&format!("commit-{id}")),
                Some(json!({
                    "accountNumber": ci["depositInstructions"]["code"],
                    "accountReferenceNumber": id,
                    "amount": amount,
                    "originalConfirmationId": confirmation,
                })),
            )
            .await;
        assert_eq!(commit.status, 200, "{}", commit.body);
    }
}

// === a webhook receiver ===

/// An HTTP server that keeps every webhook body it is sent.
pub struct Hooks {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Hooks {
    pub async fn start() -> Hooks {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |body: String| {
                let kept = kept.clone();
                async move {
                    let event = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    kept.lock().expect("lock").push(event);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Hooks {
            url: format!("http://{addr}/hooks"),
            received,
        }
    }

    pub fn target(&self) -> oms_sandbox::WebhookTarget {
        oms_sandbox::WebhookTarget {
            url: self.url.clone(),
            secret: "whsec_c2VjcmV0LWtleQ==".into(),
            faults: oms_sandbox::WebhookFaults::default(),
        }
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    /// The events once `n` have arrived (or what came within 8 s), and a moment more so that
    /// an event too many would show.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        while self.events().len() < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.events()
    }

    /// The event named `name`; panics naming what came instead.
    pub fn find(&self, name: &str) -> Value {
        let events = self.events();
        events
            .iter()
            .find(|e| e["event"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} among {:?}", names(&events)))
    }
}

/// The events' names, sorted.
pub fn names(events: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
        .collect();
    names.sort();
    names
}

/// Whether `v` is an RFC 3339 UTC timestamp in whole seconds: `2026-03-16T18:30:00Z`.
pub fn whole_seconds(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let b = s.as_bytes();
        s.len() == 20 && b[10] == b'T' && b[19] == b'Z' && !s.contains('.')
    })
}
