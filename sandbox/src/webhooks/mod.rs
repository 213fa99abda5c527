//! The sandbox as a webhook sender: once a target is set
//! ([`crate::SandboxHandle::set_webhooks`]), every change OMS documents an event for is
//! delivered as a signed event, the way OMS's guide shows them (`{"id", "event", "createdAt",
//! "data"}`), and no other: on the cash-in layer `cash_in.completed` and `cash_in.expired`
//! (`cashIn.*` in the schema's spelling), with the cash-in rendered as `GET /cash-ins/{id}`
//! renders it; on the transaction layer `transaction.fiatToCrypto.processing`, `.underReview`,
//! `.completed`, `.failed` and `.refundCompleted`, with the transaction object linked to its
//! cash-in by `cashIn`. Creating, refreshing, authorizing at the counter (`processing`) or
//! failing a cash-in sends nothing, as the guide lists no event for them. `createdAt` is when the
//! change happened. The signing scheme is an assumption: the OMS pages document none, and the
//! sandbox signs as Standard Webhooks do (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256("id.ts.body")>`, key = the
//! base64 after `whsec_`). Failed deliveries (a non-2xx or no answer) are retried with
//! exponential backoff and jitter, like a real sender. Optional faults, each a probability per
//! event: drop it, deliver it twice, hold it back so later events overtake it, or sign its first
//! attempt wrongly (its retries are signed right).
//!
//! The store records each change in its outbox as it makes it (the expiry sweep's and the
//! delivery delay's too), and the sender drains it every [`SCAN_INTERVAL`], so every change is
//! its own event, in order. Everything here is bookkeeping plus HTTP out; it never changes the
//! store.

use crate::clock;
use crate::model;
use crate::state::{Sandbox, lock};
use crate::store::{Change, EventKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) mod target;

pub use target::{WebhookFaults, WebhookStats, WebhookTarget};

/// How often the store's outbox is drained.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(20);
/// Attempts per delivery (the first and its retries).
const ATTEMPTS: u32 = 6;
/// How long a reordered event is held back.
const REORDER_DELAY: Duration = Duration::from_millis(300);

/// The scan-and-send loop of `sandbox` (runs for the sandbox's life).
pub(crate) async fn run(sandbox: Arc<Sandbox>) {
    let http = reqwest::Client::new();
    let mut ticks = tokio::time::interval(SCAN_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        // The scan runs without a target too, so setting one sends only later changes.
        let changed = changes(&sandbox);
        let Some(target) = sandbox.webhooks.target() else {
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

/// The events of the changes since the last drain: (event name, JSON body).
fn changes(sandbox: &Sandbox) -> Vec<(String, String)> {
    let spelling = sandbox.spelling();
    let drained = lock(&sandbox.store).drain_events();
    drained
        .iter()
        .filter_map(|change| event(change, spelling))
        .collect()
}

/// One change as the guide's webhook: its name and body.
pub(crate) fn event(change: &Change, spelling: crate::Spelling) -> Option<(String, String)> {
    let data = match change.kind {
        EventKind::CashInCompleted | EventKind::CashInExpired => {
            model::render_cash_in(&change.cash_in, &spelling)
        }
        EventKind::Transaction(_) => model::render_transaction(&change.cash_in, &spelling)?,
    };
    let name = change.kind.name(spelling);
    let body = serde_json::json!({
        "id": format!("whk_evt_{}", uuid::Uuid::new_v4().simple()),
        "event": name,
        "createdAt": clock::format_ms(change.at),
        "data": data,
    })
    .to_string();
    Some((name, body))
}

struct Delivery {
    http: reqwest::Client,
    target: WebhookTarget,
    id: String,
    body: String,
    bad: bool,
}

impl Delivery {
    async fn send(self, stats: &target::Sender) {
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
