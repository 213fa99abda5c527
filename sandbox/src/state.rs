//! The shared state behind one running sandbox: its settings and its components, each behind
//! its own lock.
//!
//! Locks are `std::sync::Mutex`, held only for short synchronous sections and never across an
//! `.await`. A poisoned lock (a panic elsewhere while holding it) is recovered rather than
//! propagated: the data is plain bookkeeping, and a test harness that panics in one request
//! should not turn every later request into a second panic.
//!
//! Only admission nests locks, always in this order: `journal` → `faults` → `plan`. Holding the
//! journal while the faults are drawn makes the journal's order the order in which the fault
//! plan's generator was advanced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::auth::Tokens;
use super::clock;
use super::fault_plan::PlanState;
use super::faults::FaultQueue;
use super::idempotency::IdempotencyStore;
use super::journal::Journal;
use super::store::Store;
use super::{SandboxSettings, Spelling};

pub(crate) struct Sandbox {
    pub(crate) api_key: String,
    pub(crate) api_secret: String,
    pub(crate) token_ttl: Duration,
    pub(crate) code_ttl: Duration,
    spelling: Mutex<Spelling>,
    pub(crate) store: Mutex<Store>,
    pub(crate) tokens: Mutex<Tokens>,
    pub(crate) idempotency: Mutex<IdempotencyStore>,
    pub(crate) journal: Mutex<Journal>,
    pub(crate) faults: Mutex<FaultQueue>,
    pub(crate) plan: Mutex<PlanState>,
    /// The webhook sender's target, scan state and counts.
    pub(crate) webhooks: super::webhooks::target::Sender,
    /// Whether `GET /transactions/{id}` answers (else 404 like an unknown route).
    transaction_reads: AtomicBool,
}

/// Locks, shrugging off poisoning (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Sandbox ===

impl Sandbox {
    pub(crate) fn new(config: SandboxSettings) -> Sandbox {
        let mut store = Store::new(config.seed);
        store.set_refresh_window(clock::duration_ms(
            config.refresh_window.unwrap_or(config.code_ttl),
        ));
        store.set_delivery_delay(config.delivery_delay.map(clock::duration_ms));
        Sandbox {
            store: Mutex::new(store),
            spelling: Mutex::new(config.spelling),
            api_key: config.api_key,
            api_secret: config.api_secret,
            token_ttl: config.token_ttl,
            code_ttl: config.code_ttl,
            tokens: Mutex::default(),
            idempotency: Mutex::default(),
            journal: Mutex::default(),
            faults: Mutex::default(),
            plan: Mutex::new(PlanState::new(config.faults)),
            webhooks: Default::default(),
            transaction_reads: AtomicBool::new(config.transaction_reads),
        }
    }

    pub(crate) fn serves_transaction_reads(&self) -> bool {
        self.transaction_reads.load(Ordering::Relaxed)
    }

    pub(crate) fn set_transaction_reads(&self, on: bool) {
        self.transaction_reads.store(on, Ordering::Relaxed);
    }

    pub(crate) fn spelling(&self) -> Spelling {
        *lock(&self.spelling)
    }

    pub(crate) fn set_spelling(&self, spelling: Spelling) {
        *lock(&self.spelling) = spelling;
    }

    pub(crate) fn code_ttl_ms(&self) -> clock::Millis {
        clock::duration_ms(self.code_ttl)
    }

    /// The periodic pass over what time does: refresh windows that end, deliveries that
    /// complete (reads and writes also apply them lazily).
    pub(crate) fn sweep(&self) {
        let moved = lock(&self.store).advance(clock::now_ms());
        if moved > 0 {
            tracing::debug!(moved, "sandbox: cash-ins expired or delivered by time");
        }
    }
}
