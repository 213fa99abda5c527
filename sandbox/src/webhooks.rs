//! The sandbox as a webhook sender: once a target is set
//! ([`crate::SandboxHandle::set_webhooks`]), every state change of a cash-in is delivered as a
//! signed event, the way OMS's guide shows them (`{"id", "event", "createdAt", "data"}`, the
//! cash-in rendered as `GET /cash-ins/{id}` renders it), with a `cashIn.*` event in the openapi
//! spelling or `cash_in.*` in the guide's, and a `transaction.fiatToCrypto.completed` event
//! with its `cashIn` link on completion. Signatures follow Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256("id.ts.body")>`, key = the
//! base64 after `whsec_`). Failed deliveries (a non-2xx or no answer) are retried with
//! exponential backoff and jitter, like a real sender. Optional faults, each a probability per
//! event: drop it, deliver it twice, hold it back so later events overtake it, or sign its first
//! attempt wrongly (its retries are signed right).
//!
//! Changes are found by scanning the store every [`SCAN_INTERVAL`] (so the expiry sweep's
//! lapses are seen too); two changes of one cash-in within one scan are one event naming the
//! later state. Everything here is bookkeeping plus HTTP out; it never changes the store.

use crate::clock;
use crate::model;
use crate::state::{Sandbox, lock};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the store is scanned for changes.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(20);
/// Attempts per delivery (the first and its retries).
const ATTEMPTS: u32 = 6;
/// How long a reordered event is held back.
const REORDER_DELAY: Duration = Duration::from_millis(300);

/// Where and how the sandbox delivers webhooks.
#[derive(Clone, Default, PartialEq)]
pub struct WebhookTarget {
    /// The receiver, e.g. `http://127.0.0.1:9090/webhooks/oms`.
    pub url: String,
    /// The signing secret, `whsec_` + base64.
    pub secret: String,
    /// Faults to inject.
    pub faults: WebhookFaults,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("faults", &self.faults)
            .finish()
    }
}

/// Per-event fault probabilities (0 to 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WebhookFaults {
    /// Never deliver the event.
    pub drop: f64,
    /// Deliver it twice (same `webhook-id`).
    pub duplicate: f64,
    /// Hold it back so that later events arrive first.
    pub reorder: f64,
    /// Sign its first attempt with a wrong key.
    pub bad_signature: f64,
}

/// What the sender did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events produced by state changes.
    pub events: u64,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub delivered: u64,
    /// Events dropped by the fault.
    pub dropped: u64,
}

#[derive(Default)]
pub(crate) struct Sender {
    target: Mutex<Option<WebhookTarget>>,
    /// (status, updatedAt) of each cash-in at the last scan.
    seen: Mutex<HashMap<String, (&'static str, clock::Millis)>>,
    events: AtomicU64,
    attempts: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl Sender {
    pub(crate) fn set(&self, target: Option<WebhookTarget>) {
        *lock(&self.target) = target;
    }

    pub(crate) fn stats(&self) -> WebhookStats {
        WebhookStats {
            events: self.events.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The scan-and-send loop of `sandbox` (runs for the sandbox's life).
pub(crate) async fn run(sandbox: Arc<Sandbox>) {
    let http = reqwest::Client::new();
    let mut ticks = tokio::time::interval(SCAN_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        // The scan runs without a target too, so setting one sends only later changes.
        let changed = changes(&sandbox);
        let Some(target) = lock(&sandbox.webhooks.target).clone() else {
            continue;
        };
        for (name, body) in changed {
            sandbox.webhooks.events.fetch_add(1, Ordering::Relaxed);
            let faults = target.faults;
            if fastrand::f64() < faults.drop {
                sandbox.webhooks.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event = name, "sandbox webhook dropped (fault)");
                continue;
            }
            let copies = if fastrand::f64() < faults.duplicate {
                2
            } else {
                1
            };
            let hold = fastrand::f64() < faults.reorder;
            let bad = fastrand::f64() < faults.bad_signature;
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            for _ in 0..copies {
                let delivery = Delivery {
                    http: http.clone(),
                    target: target.clone(),
                    id: id.clone(),
                    body: body.clone(),
                    bad,
                };
                let sandbox = sandbox.clone();
                tokio::spawn(async move {
                    if hold {
                        tokio::time::sleep(REORDER_DELAY).await;
                    }
                    delivery.send(&sandbox.webhooks).await;
                });
            }
        }
    }
}

/// The events of the changes since the last scan: (event name, JSON body).
fn changes(sandbox: &Sandbox) -> Vec<(String, String)> {
    let spelling = sandbox.spelling();
    let prefix = match spelling {
        crate::Spelling::OpenApi => "cashIn",
        crate::Spelling::Guide => "cash_in",
    };
    let store = lock(&sandbox.store);
    let mut seen = lock(&sandbox.webhooks.seen);
    let mut out = Vec::new();
    for ci in store.all() {
        let now = (ci.status.as_str(), ci.updated_at);
        let before = seen.insert(ci.id.clone(), now);
        let action = match before {
            None => "created",
            Some(old) if old == now => continue,
            Some((status, _)) if status == now.0 => "updated",
            Some(_) => now.0,
        };
        let data = model::render_cash_in(ci, &spelling);
        let name = format!("{prefix}.{action}");
        out.push((name.clone(), envelope(&name, data)));
        if action == "completed" {
            let name = "transaction.fiatToCrypto.completed".to_owned();
            let transaction = serde_json::json!({
                "id": ci.transaction_id,
                "object": "transaction",
                "type": "fiatToCrypto",
                "status": "completed",
                "customerId": ci.spec.customer_id,
                "cashIn": ci.id,
            });
            out.push((name.clone(), envelope(&name, transaction)));
        }
    }
    out
}

fn envelope(name: &str, data: serde_json::Value) -> String {
    serde_json::json!({
        "id": format!("whk_evt_{}", uuid::Uuid::new_v4().simple()),
        "event": name,
        "createdAt": clock::format_ms(clock::now_ms()),
        "data": data,
    })
    .to_string()
}

struct Delivery {
    http: reqwest::Client,
    target: WebhookTarget,
    id: String,
    body: String,
    bad: bool,
}

impl Delivery {
    async fn send(self, stats: &Sender) {
        let mut backoff = Duration::from_millis(100);
        for attempt in 0..ATTEMPTS {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let secret = if self.bad && attempt == 0 {
                "whsec_d3Jvbmcgc2VjcmV0"
            } else {
                &self.target.secret
            };
            let signature = sign(secret, &self.id, stamp, &self.body);
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            let answer = self
                .http
                .post(&self.target.url)
                .timeout(Duration::from_secs(5))
                .header("content-type", "application/json")
                .header("webhook-id", &self.id)
                .header("webhook-timestamp", stamp.to_string())
                .header("webhook-signature", signature)
                .body(self.body.clone())
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())).await;
            backoff *= 2;
        }
        tracing::debug!(webhook_id = %self.id, "sandbox webhook undelivered after every retry");
    }
}

/// `v1,<base64 HMAC-SHA256>` of `id.stamp.body` with the key of `secret`.
fn sign(secret: &str, id: &str, stamp: u64, body: &str) -> String {
    let raw = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_default();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw);
    let tag = ring::hmac::sign(&key, format!("{id}.{stamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}
