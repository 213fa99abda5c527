//! OMS webhooks: `POST /webhooks/oms` on the admin listener, on when
//! `--webhook-secret-file` is given. A delivery is verified ([`verify`]: Standard Webhooks),
//! deduplicated by `webhook-id` ([`Replays`]: kept for twice the timestamp tolerance, in Redis
//! with `SET NX PX` when the replicas share it), and read for the one thing the gateway needs:
//! which cash-in changed. That is a hint to the watch hub, which re-reads the cash-in from OMS
//! and publishes it to its watchers; a cash-in event's payload is never trusted for state. A
//! `transaction.fiatToCrypto.*` event's is: it is the cash-in's delivery (the transaction
//! object, linked by `cashIn`), which OMS documents no read of, so the verified payload is the
//! one source; the hub keeps it never older and shares it with the fleet.
//!
//! Answers: 401 unsigned, wrongly signed or a body that does not match; 400 a stale timestamp or
//! a signed body that is not a JSON event; 413 a body over [`BODY_LIMIT`]; 202 a cash-in hint
//! taken; 200 a `webhook-id` already processed (acted on once); 204 an event the gateway does
//! not act on. Only ids are logged (the delivery's and the cash-in's), never amounts or codes.
//! The endpoint registers its own metrics (`metrics.rs`).

mod metrics;
pub mod verify;

use crate::proto::v1 as pb;
use crate::redis::SharedState;
use crate::watch::WatchHub;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use oms_rest::model::{CashInLink, TransactionDto};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use verify::{Rejection, Verifier};

/// The largest delivery accepted (OMS's events are a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;
/// How long a processed `webhook-id` is remembered: a timestamp may be 5 minutes either way.
const REPLAY_WINDOW: Duration = Duration::from_secs(2 * 5 * 60);
/// The most ids remembered in process; past it (a flood of valid deliveries) an id may be acted
/// on twice, which costs one more re-read and nothing else.
const MAX_REMEMBERED: usize = 200_000;

/// The webhook endpoint's state.
pub struct Webhooks {
    verifier: Box<dyn Verifier>,
    replays: Replays,
    hub: WatchHub,
    counts: Counts,
}

/// Deliveries by outcome (for the metrics).
#[derive(Debug, Default)]
pub struct Counts {
    /// Cash-in hints taken.
    pub accepted: AtomicU64,
    /// Already processed ids.
    pub replayed: AtomicU64,
    /// Events not acted on.
    pub ignored: AtomicU64,
    /// 401 and 400 answers.
    pub refused: AtomicU64,
}

/// The processed `webhook-id`s.
struct Replays {
    local: Mutex<HashMap<String, Instant>>,
    shared: Option<SharedState>,
}

impl Replays {
    /// Whether `id` is seen here for the first time (and remember it).
    async fn first(&self, id: &str) -> bool {
        if let Some(shared) = &self.shared {
            let key = format!("{}webhook:{id}", crate::redis::PREFIX);
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(REPLAY_WINDOW.as_millis() as u64);
            if let Some(set) = shared.query::<Option<String>>(&cmd).await {
                return set.is_some();
            }
            shared.fell_back("webhook replay check");
        }
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.len() >= MAX_REMEMBERED {
            local.retain(|_, at| now.duration_since(*at) < REPLAY_WINDOW);
        }
        match local.get(id) {
            Some(at) if now.duration_since(*at) < REPLAY_WINDOW => false,
            _ => {
                if local.len() < MAX_REMEMBERED {
                    local.insert(id.to_owned(), now);
                }
                true
            }
        }
    }
}

/// The part of an event the gateway reads: its name and its object.
#[derive(Deserialize)]
struct Event {
    /// OMS's guide spells it `event`; Standard Webhooks payloads use `type`.
    #[serde(alias = "type")]
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    id: Option<String>,
    /// A transaction's link to its cash-in: an id, or an object with one.
    #[serde(default, rename = "cashIn", alias = "cash_in")]
    cash_in: Option<CashInLink>,
}

/// What an event tells the gateway.
#[derive(Debug, Default, PartialEq)]
struct Read {
    /// The cash-in it is about, if the gateway acts on it.
    cash_in: Option<String>,
    /// A `transaction.fiatToCrypto.*` event's transaction, as the cash-in's delivery, with its
    /// customer (when well-formed); `Err`: the transaction does not decode (the field named).
    delivery: Option<Result<(pb::Delivery, Option<String>), String>>,
}

/// Whether `id` is a well-formed OMS id with `prefix` (it goes upstream as a path segment, into
/// Redis keys and into logs).
fn well_formed(id: &str, prefix: &str) -> bool {
    id.len() > prefix.len()
        && id.len() <= 128
        && id.starts_with(prefix)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What an event is about; `Err`: not a JSON event.
fn read_event(body: &[u8]) -> Result<Read, ()> {
    let event: Event = serde_json::from_slice(body).map_err(|_| ())?;
    let name = event.event.as_str();
    let data = || Data::deserialize(&event.data).unwrap_or_default();
    if name.starts_with("cashIn.") || name.starts_with("cash_in.") {
        let cash_in = data().id.filter(|id| well_formed(id, "ci_"));
        return Ok(Read {
            cash_in,
            delivery: None,
        });
    }
    let Some(step) = name.strip_prefix("transaction.fiatToCrypto.") else {
        return Ok(Read::default());
    };
    let cash_in = data()
        .cash_in
        .map(|link| link.id().to_owned())
        .filter(|id| well_formed(id, "ci_"));
    if cash_in.is_none() {
        return Ok(Read::default());
    }
    let delivery = TransactionDto::deserialize(&event.data)
        .map_err(|_| "data".to_owned())
        .and_then(|dto| {
            if !well_formed(&dto.id, "txn_") {
                return Err("data.id".to_owned());
            }
            let customer = dto.customer_id.clone().filter(|c| well_formed(c, "cst_"));
            let delivery = crate::convert::delivery(dto, Some(step)).map_err(|e| e.field)?;
            Ok((delivery, customer))
        });
    Ok(Read {
        cash_in,
        delivery: Some(delivery),
    })
}

// === impl Webhooks ===

impl Webhooks {
    /// The endpoint verifying with `verifier`, hinting `hub`, remembering ids in `shared` too.
    pub fn new(verifier: Box<dyn Verifier>, hub: WatchHub, shared: Option<SharedState>) -> Self {
        Self {
            verifier,
            replays: Replays {
                local: Mutex::new(HashMap::new()),
                shared,
            },
            hub,
            counts: Counts::default(),
        }
    }

    /// Deliveries by outcome.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    async fn receive(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, &'static str) {
        let verified = match self.verifier.verify(headers, body, SystemTime::now()) {
            Ok(verified) => verified,
            Err(rejection) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                return match rejection {
                    Rejection::Unauthenticated(why) => (StatusCode::UNAUTHORIZED, why),
                    Rejection::Stale => (
                        StatusCode::BAD_REQUEST,
                        "the webhook-timestamp is more than 5 minutes away from now",
                    ),
                };
            }
        };
        let Ok(read) = read_event(body) else {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::BAD_REQUEST,
                "the body is not a JSON event with an `event` name",
            );
        };
        if !self.replays.first(&verified.id).await {
            self.counts.replayed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(webhook_id = %verified.id, "webhook already processed");
            return (StatusCode::OK, "already processed\n");
        }
        // Only a first delivery shows that webhooks flow: a replay (an attacker's included) must
        // not relax polling.
        self.hub.webhook_arrived();
        let Some(cash_in) = read.cash_in else {
            self.counts.ignored.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::NO_CONTENT, "");
        };
        self.counts.accepted.fetch_add(1, Ordering::Relaxed);
        match read.delivery {
            Some(Ok((delivery, customer))) => {
                let news = self
                    .hub
                    .learned_delivery(&cash_in, customer.as_deref(), &delivery, "webhook")
                    .await;
                tracing::debug!(webhook_id = %verified.id, %cash_in, transaction_id = %delivery.transaction_id, news, "webhook: a delivery");
            }
            Some(Err(field)) => {
                tracing::warn!(webhook_id = %verified.id, %cash_in, field, "webhook: a transaction that does not decode; only the cash-in is re-read");
            }
            None => {}
        }
        tracing::debug!(webhook_id = %verified.id, %cash_in, "webhook: re-reading the cash-in");
        self.hub.hint_cash_in(&cash_in);
        (StatusCode::ACCEPTED, "accepted\n")
    }
}

async fn receive(
    State(webhooks): State<Arc<Webhooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    webhooks.receive(&headers, &body).await
}

/// The `POST /webhooks/oms` route.
pub fn router(webhooks: Arc<Webhooks>) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/oms", post(receive))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(webhooks)
}

/// The endpoint of `config`'s webhook settings (none without a secret file), for `hub`, its
/// metrics registered with `registry`. It is served on the admin listener, so it needs one.
pub fn assemble(
    config: &crate::config::GatewaySettings,
    hub: &WatchHub,
    shared: &Option<SharedState>,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Option<Arc<Webhooks>>, String> {
    let Some(scheme) = scheme(config)? else {
        return Ok(None);
    };
    let webhooks = Arc::new(Webhooks::new(Box::new(scheme), hub.clone(), shared.clone()));
    webhooks.register_metrics(registry);
    Ok(Some(webhooks))
}

/// The verifier of `--webhook-secret-file` (none without one), or why it cannot serve.
fn scheme(
    config: &crate::config::GatewaySettings,
) -> Result<Option<verify::StandardWebhooks>, String> {
    let Some(path) = &config.webhooks.secret_file else {
        return Ok(None);
    };
    if config.admin.listen == crate::config::AdminListen::Off {
        return Err("--webhook-secret-file serves POST /webhooks/oms on the admin listener, but --admin-listen is none".to_owned());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --webhook-secret-file {}: {e}", path.display()))?;
    verify::StandardWebhooks::from_secrets(&text)
        .map(Some)
        .map_err(|e| format!("--webhook-secret-file {}: {e}", path.display()))
}

/// The rules [`assemble`] and [`wire_sandbox`] apply at start, for `--check-config`: the
/// secret file parses, the admin listener serves it, and `--sandbox-webhook-url` has the
/// embedded sandbox (`sandbox`), a secret and, for `self`, the admin listener.
pub fn check(config: &crate::config::GatewaySettings, sandbox: bool) -> Vec<String> {
    let mut problems: Vec<String> = scheme(config).err().into_iter().collect();
    let settings = &config.webhooks;
    if settings.sandbox_url.is_some() {
        if !sandbox {
            problems
                .push("--sandbox-webhook-url needs the embedded sandbox (no OMS_BASE_URL)".into());
        }
        if settings.secret_file.is_none() {
            problems.push(
                "--sandbox-webhook-url needs --webhook-secret-file (the sandbox signs with it)"
                    .into(),
            );
        }
        let admin_off = config.admin.listen == crate::config::AdminListen::Off;
        if settings.sandbox_url.as_deref() == Some("self") && admin_off {
            problems.push("--sandbox-webhook-url self needs the admin listener".into());
        }
    }
    problems
}

/// Points the embedded `sandbox` at `--sandbox-webhook-url` (`self`: the admin listener at
/// `admin`), signing with the first secret of `--webhook-secret-file`.
pub fn wire_sandbox(
    settings: &crate::config::WebhookSettings,
    sandbox: Option<&oms_sandbox::SandboxHandle>,
    admin: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let Some(url) = &settings.sandbox_url else {
        return Ok(());
    };
    let sandbox =
        sandbox.ok_or("--sandbox-webhook-url needs the embedded sandbox (no OMS_BASE_URL)")?;
    let path = settings
        .secret_file
        .as_ref()
        .ok_or("--sandbox-webhook-url needs --webhook-secret-file (the sandbox signs with it)")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --webhook-secret-file {}: {e}", path.display()))?;
    let secret = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let url = if url == "self" {
        let admin = admin.ok_or("--sandbox-webhook-url self needs the admin listener")?;
        format!("http://{admin}/webhooks/oms")
    } else {
        url.clone()
    };
    sandbox.set_webhooks(Some(oms_sandbox::WebhookTarget {
        url,
        secret,
        faults: settings.sandbox_faults,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Read, read_event};

    fn cash_in_of(body: &str) -> Result<Option<String>, ()> {
        read_event(body.as_bytes()).map(|r| r.cash_in)
    }

    #[test]
    fn cash_in_events_of_either_spelling_and_linked_transactions_name_their_cash_in() {
        let ci = cash_in_of;
        assert_eq!(
            ci(r#"{"event":"cash_in.completed","data":{"id":"ci_1"}}"#),
            Ok(Some("ci_1".into()))
        );
        assert_eq!(
            ci(r#"{"type":"cashIn.expired","data":{"id":"ci_2"}}"#),
            Ok(Some("ci_2".into()))
        );
        assert_eq!(
            ci(
                r#"{"event":"transaction.fiatToCrypto.processing","data":{"id":"txn_1","cashIn":"ci_3"}}"#
            ),
            Ok(Some("ci_3".into()))
        );
        assert_eq!(
            ci(r#"{"event":"transaction.fiatToCrypto.failed","data":{"cashIn":{"id":"ci_4"}}}"#),
            Ok(Some("ci_4".into()))
        );
        assert_eq!(
            ci(r#"{"event":"transaction.fiatToCrypto.completed","data":{"id":"txn_1"}}"#),
            Ok(None)
        );
        assert_eq!(
            ci(r#"{"event":"customer.created","data":{"id":"cst_1"}}"#),
            Ok(None)
        );
        assert_eq!(
            ci(r#"{"event":"cashIn.completed","data":{"id":"ci_../x"}}"#),
            Ok(None)
        );
        assert_eq!(ci("not json"), Err(()));
        assert_eq!(ci(r#"{"data":{}}"#), Err(()));
    }

    #[test]
    fn a_transaction_event_carries_the_delivery_or_names_what_does_not_decode() {
        let read = |body: &str| read_event(body.as_bytes()).unwrap();
        let Read { cash_in, delivery } = read(
            r#"{"event":"transaction.fiatToCrypto.failed","data":{"id":"txn_1","cashIn":"ci_1",
            "status":"failed","subStatus":"failed.refundPending","customerId":"cst_1",
            "error":{"code":"on_chain_revert","message":"reverted"},"updatedAt":"2026-03-16T18:50:00Z"}}"#,
        );
        assert_eq!(cash_in.as_deref(), Some("ci_1"));
        let (delivery, customer) = delivery.unwrap().unwrap();
        assert_eq!(
            delivery.status,
            crate::proto::v1::DeliveryStatus::Failed as i32
        );
        assert_eq!(delivery.error.unwrap().code, "on_chain_revert");
        assert_eq!(customer.as_deref(), Some("cst_1"));
        let bad = read(
            r#"{"event":"transaction.fiatToCrypto.completed","data":{"id":"txn_1","cashIn":"ci_1"}}"#,
        );
        assert_eq!(bad.delivery, Some(Err("data".into())));
        let bad_id = read(
            r#"{"event":"transaction.fiatToCrypto.completed","data":{"id":"x y","cashIn":"ci_1","status":"completed"}}"#,
        );
        assert_eq!(bad_id.delivery, Some(Err("data.id".into())));
    }
}
