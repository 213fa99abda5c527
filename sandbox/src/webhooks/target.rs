//! What the sandbox's webhook sender is told and what it reports: the target (receiver URL,
//! signing secret, faults) and the counts of what it did. A leaf the sandbox's state holds, so
//! the state never imports the sending loop that reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Where and how the sandbox delivers webhooks.
#[derive(Clone, Default, PartialEq)]
pub struct WebhookTarget {
    /// The receiver, e.g. `http://127.0.0.1:50053/webhooks/oms`.
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

/// The sender's target and counts, kept in the sandbox's state; the loop in the parent module
/// reads the target at each scan and counts what it does here.
#[derive(Default)]
pub(crate) struct Sender {
    target: Mutex<Option<WebhookTarget>>,
    pub(super) events: AtomicU64,
    pub(super) attempts: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) dropped: AtomicU64,
}

impl Sender {
    pub(crate) fn set(&self, target: Option<WebhookTarget>) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = target;
    }

    /// The target now, if any.
    pub(super) fn target(&self) -> Option<WebhookTarget> {
        self.target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
