//! Pushed hints (OMS webhooks): a coalesced immediate re-read of one cash-in, whose
//! result goes out through the hub's publish path (and, with Redis, to the fleet), and the
//! cadence switch: while verified webhooks arrive, pollers relax to `--watch-reconcile-interval`
//! (polling is then the safety net for whatever a webhook misses); once none has arrived for
//! `--webhook-healthy-window`, they return to `--watch-poll-interval` at their next turn.
//!
//! A hint is never trusted for state: the cash-in is read from OMS (`GET /cash-ins/{id}`
//! through the operations layer). Hints for a cash-in whose re-read is in flight coalesce into
//! at most one more re-read after it, so a burst (duplicates, retries, several events of one
//! change) costs one or two reads, and a state newer than the in-flight read is never missed.

use super::{HubInner, WatchHub, fleet};
use crate::config::WebhookSettings;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The hub's webhook state.
#[derive(Debug)]
pub(super) struct Push {
    reconcile_interval: Duration,
    healthy_window: Duration,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last verified delivery, plus one (0: none yet).
    last_webhook: AtomicU64,
    /// Cash-ins being re-read; `true`: another hint came meanwhile, read once more.
    in_flight: Mutex<HashMap<String, bool>>,
    /// Re-reads made for hints.
    reads: AtomicU64,
}

impl Push {
    pub(super) fn new(settings: &WebhookSettings) -> Self {
        Self {
            reconcile_interval: settings.reconcile_interval,
            healthy_window: settings.healthy_window,
            epoch: Instant::now(),
            last_webhook: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            reads: AtomicU64::new(0),
        }
    }

    /// Whether a verified delivery arrived within the healthy window.
    fn healthy(&self) -> bool {
        match self.last_webhook.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let at = self.epoch + Duration::from_millis(at - 1);
                at.elapsed() <= self.healthy_window
            }
        }
    }
}

impl HubInner {
    /// The poll interval for this turn: the reconcile interval while webhooks arrive.
    pub(super) fn interval(&self) -> Duration {
        if self.push.healthy() {
            self.push.reconcile_interval.max(self.config.poll_interval)
        } else {
            self.config.poll_interval
        }
    }
}

// === impl WatchHub ===

impl WatchHub {
    /// The same hub, relaxing its pollers while webhooks arrive. Call it before the first clone.
    pub fn with_webhooks(mut self, settings: &WebhookSettings) -> Self {
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.push = Push::new(settings);
            inner.webhooks = settings.secret_file.is_some();
        }
        self
    }

    /// Notes a verified webhook delivery (any event): webhooks are arriving.
    pub fn webhook_arrived(&self) {
        let push = &self.inner.push;
        let ms = push.epoch.elapsed().as_millis() as u64 + 1;
        push.last_webhook.store(ms, Ordering::Relaxed);
    }

    /// Whether pollers use the reconcile interval now.
    pub fn reconciling(&self) -> bool {
        self.inner.push.healthy()
    }

    /// The poll interval pollers use now.
    pub fn poll_interval(&self) -> Duration {
        self.inner.interval()
    }

    /// `--watch-reconcile-interval`.
    pub fn reconcile_interval(&self) -> Duration {
        self.inner.push.reconcile_interval
    }

    /// Re-reads made for webhooks since start.
    pub fn webhook_reads(&self) -> u64 {
        self.inner.push.reads.load(Ordering::Relaxed)
    }

    /// A webhook says cash-in `id` changed: re-read it now (coalesced) and publish what OMS says.
    pub fn hint_cash_in(&self, id: &str) {
        {
            let mut in_flight = self
                .inner
                .push
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(again) = in_flight.get_mut(id) {
                *again = true;
                return;
            }
            in_flight.insert(id.to_owned(), false);
        }
        let hub = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            loop {
                hub.reread(&id).await;
                let mut in_flight = hub
                    .inner
                    .push
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match in_flight.get_mut(&id) {
                    Some(again) if *again => *again = false,
                    _ => {
                        in_flight.remove(&id);
                        return;
                    }
                }
            }
        });
    }

    async fn reread(&self, id: &str) {
        let inner = &self.inner;
        // The gateway's own turn: no caller's stream asked for this read.
        fleet::acquire(inner, &inner.budget.ticket()).await;
        inner.push.reads.fetch_add(1, Ordering::Relaxed);
        let (deadline, learned) = (Instant::now() + inner.poll_timeout, super::version::now());
        match inner.oms.get_cash_in(id, deadline).await {
            Ok(cash_in) => self.learned(&cash_in, learned, false).await,
            Err(err) => {
                tracing::debug!(cash_in = id, error = %err, "re-read for a webhook failed; polling will catch up");
            }
        }
    }
}
