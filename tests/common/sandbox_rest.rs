//! The sandbox's REST API with a token, for tests that act behind the gateway's back (so only a
//! webhook or a poll can tell it) or read what the sandbox renders.

use oms_sandbox::SandboxHandle;
use serde_json::{Value, json};

/// A client of one sandbox's REST API, holding a token of its own.
pub struct SandboxRest {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl SandboxRest {
    /// A client of `sandbox`, with a token exchanged for its credentials.
    pub async fn new(sandbox: &SandboxHandle) -> SandboxRest {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{}/auth/token", sandbox.base_url()))
            .json(&json!({"apiKey": sandbox.api_key(), "apiSecret": sandbox.api_secret()}))
            .send()
            .await
            .expect("POST /auth/token")
            .json()
            .await
            .expect("token JSON");
        SandboxRest {
            http,
            base: sandbox.base_url(),
            token: token["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
        }
    }

    /// `method path` with `body` and a fresh idempotency key; the answer's JSON, after
    /// asserting a 2xx.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("the sandbox answers");
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: Option<Value>) -> Value {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }
}
