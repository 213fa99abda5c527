//! The gateway's own idempotency layer, in front of the upstream, for mutating RPCs.
//!
//! Keyed by (caller identity, operation, idempotency key), with a fingerprint of the request:
//! - concurrent calls with the same key and request share one upstream call and all get its
//!   outcome;
//! - a repeat after completion replays the stored outcome, without calling upstream, for the
//!   configured window;
//! - the same key with a different request is FAILED_PRECONDITION, reason IDEMPOTENCY_KEY_REUSED.
//!
//! What is stored: the fingerprint (64 bits of the SHA-256 of the REST request the call would send), the
//! outcome, and the time — per entry about the size of one CashIn. Replayed outcomes: only the
//! final ones ([`crate::error::is_final_outcome`]): successes, the gateway's own validation refusals, and OMS's
//! 400, 403, 404 and 422. Everything else (other 4xx, which a load balancer may have sent, 5xx,
//! timeouts, resets, the gateway's own limits) is not stored, so a retry with the same key goes
//! upstream again, where OMS's own idempotency makes it safe. Memory is bounded: entries older than the window are
//! dropped, and beyond `max_entries` the oldest go first.
//!
//! If the caller that leads a shared call cancels, the upstream request is cancelled with it (a
//! cancelled call cancels its upstream request), and the callers waiting on it get ABORTED with a
//! retry hint.
//!
//! The pieces: this module is the layer (what a call does, counted); `local.rs` the in-memory
//! store of outcomes and flights; `fleet.rs` the fleet's store in Redis, which a leader goes
//! through when the replicas share Redis (`--redis-url`): the same key on another replica is
//! shared, replayed or refused there too. `metrics.rs` registers the layer's counts.

mod fleet;
mod local;
mod metrics;

use crate::error::GatewayError;
use crate::outcome::Stored;
use fleet::{Call, FleetStore};
use local::{Decision, EntryKey, Flight, FlightGuard, LocalStore, reused, wait_for};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Call metadata key carrying the idempotency key, in requests and responses.
pub const KEY_METADATA: &str = "idempotency-key";

/// How the layer answered calls (atomics: counting takes no lock on the call path).
#[derive(Debug, Default)]
struct Counters {
    /// Calls that went upstream.
    led: AtomicU64,
    /// Calls that joined an in-flight call.
    joined: AtomicU64,
    /// Calls answered from a stored outcome.
    replayed: AtomicU64,
    /// Calls refused for reusing a key with another request.
    conflicts: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a leader settles its call with the other replicas: alone (no Redis), or through the
/// fleet's store, which may replay, refuse or wait for another replica instead of calling
/// upstream. Either way the leader gets the call's outcome, so the layer does not know which.
#[derive(Debug)]
enum Settle {
    Alone,
    Fleet(FleetStore),
}

/// The idempotency layer for outcomes of type `T`.
pub struct IdempotencyLayer<T> {
    local: LocalStore<T>,
    counters: Arc<Counters>,
    settle: Settle,
    window: Duration,
}

impl<T> std::fmt::Debug for IdempotencyLayer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("window", &self.window)
            .field("settle", &self.settle)
            .finish_non_exhaustive()
    }
}

// === impl IdempotencyLayer ===

impl<T: Clone + Send + Sync + 'static> IdempotencyLayer<T> {
    /// A layer remembering outcomes for `window`, at most `max_entries` of them.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            local: LocalStore::new(window, max_entries),
            counters: Arc::default(),
            settle: Settle::Alone,
            window,
        }
    }

    /// The same layer, asking the fleet's store in `redis` (when the replicas share one) before
    /// going upstream; outcomes are kept there for the same window.
    pub fn with_fleet(mut self, redis: Option<&crate::redis::SharedState>) -> Self {
        self.settle = match redis {
            Some(state) => Settle::Fleet(FleetStore::new(state.clone(), self.window)),
            None => Settle::Alone,
        };
        self
    }

    /// (calls that led, calls that joined or were replayed), for the unit tests.
    #[cfg(test)]
    fn answered(&self) -> (u64, u64) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (load(&c.led), load(&c.joined) + load(&c.replayed))
    }

    /// Runs `call` at most once per (caller, operation, key) and request fingerprint, as the
    /// module documentation says. Waiting for a shared call is bounded by `deadline`; when the
    /// leader gives up (its own deadline passed, or it was cancelled) while this caller still has
    /// time, this caller takes over with the same key instead of inheriting the leader's failure.
    /// `call` is told whether it resumes such an abandoned call (whose request may still hold
    /// the key upstream).
    pub async fn run<F, Fut>(
        &self,
        caller: &str,
        operation: &'static str,
        key: &str,
        fingerprint: u64,
        deadline: Instant,
        call: F,
    ) -> Result<T, GatewayError>
    where
        T: Stored,
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let mut resumes = false;
        let entry_key = EntryKey::new(caller, operation, key);
        let (sender, flight) = loop {
            match self.local.decide(&entry_key, fingerprint) {
                Decision::Replay(outcome) => {
                    Counters::add(&self.counters.replayed);
                    tracing::debug!(operation, key, "replaying a stored outcome");
                    return outcome;
                }
                Decision::Conflict => {
                    Counters::add(&self.counters.conflicts);
                    return Err(reused(key));
                }
                Decision::Join(done) => {
                    Counters::add(&self.counters.joined);
                    match wait_for(done, deadline).await {
                        Flight::Finished(outcome) => return outcome,
                        Flight::GaveUp(_) if Instant::now() < deadline => {
                            tracing::debug!(
                                operation,
                                key,
                                "the shared call's leader gave up; taking over"
                            );
                            resumes = true;
                        }
                        Flight::GaveUp(err) => return Err(err),
                    }
                }
                Decision::Lead(sender, flight) => break (sender, flight),
            }
        };
        Counters::add(&self.counters.led);
        // If this future is dropped mid-call, the guard clears the entry and tells waiters.
        let mut guard = FlightGuard::new(&self.local, entry_key, flight, sender);
        let outcome = match &self.settle {
            Settle::Fleet(fleet) => {
                let shared = Call {
                    caller,
                    operation,
                    key,
                    fingerprint,
                    deadline,
                    resumes,
                };
                fleet.run(shared, call).await
            }
            Settle::Alone => call(resumes).await,
        };
        guard.finish(outcome.clone(), fingerprint);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    impl Stored for u32 {
        fn encode_stored(&self) -> Vec<u8> {
            self.to_be_bytes().to_vec()
        }
        fn decode_stored(bytes: &[u8]) -> Option<Self> {
            Some(u32::from_be_bytes(bytes.try_into().ok()?))
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    // Paused time: the sleeps below cost no wall time and race nothing.
    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_share_one_upstream_call() {
        let layer = Arc::new(IdempotencyLayer::<u32>::new(Duration::from_secs(60), 100));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (layer, calls) = (layer.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                layer
                    .run("c", "op", "k", 1, soon(), |_| async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(layer.answered(), (1, 19));
    }

    // Paused time: the sleeps below cost no wall time and race nothing.
    #[tokio::test(start_paused = true)]
    async fn a_repeat_replays_and_another_request_is_refused() {
        let layer = IdempotencyLayer::<u32>::new(Duration::from_secs(60), 100);
        assert_eq!(
            layer
                .run("c", "op", "k", 1, soon(), |_| async { Ok(1) })
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            layer
                .run("c", "op", "k", 1, soon(), |_| async { Ok(2) })
                .await
                .unwrap(),
            1
        );
        let err = layer
            .run("c", "op", "k", 2, soon(), |_| async { Ok(3) })
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::KeyReused(_)));
        // Another caller's key space is separate.
        assert_eq!(
            layer
                .run("d", "op", "k", 2, soon(), |_| async { Ok(4) })
                .await
                .unwrap(),
            4
        );
    }

    // Paused time: the sleeps below cost no wall time and race nothing.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_not_replayed() {
        let layer = IdempotencyLayer::<u32>::new(Duration::from_secs(60), 100);
        let unavailable = |_| async { Err(GatewayError::Unavailable("down".into())) };
        assert!(
            layer
                .run("c", "op", "k", 1, soon(), unavailable)
                .await
                .is_err()
        );
        assert_eq!(
            layer
                .run("c", "op", "k", 1, soon(), |_| async { Ok(9) })
                .await
                .unwrap(),
            9
        );
    }

    // Paused time: the sleeps below cost no wall time and race nothing.
    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_entries_expire() {
        let layer = IdempotencyLayer::<u32>::new(Duration::from_millis(100), 3);
        for i in 0..10u32 {
            layer
                .run(
                    "c",
                    "op",
                    &i.to_string(),
                    1,
                    soon(),
                    |_| async move { Ok(i) },
                )
                .await
                .unwrap();
        }
        assert!(layer.local.len() <= 3);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Expired: the call runs again.
        assert_eq!(
            layer
                .run("c", "op", "9", 1, soon(), |_| async { Ok(99) })
                .await
                .unwrap(),
            99
        );
    }

    // Paused time: the sleeps below cost no wall time and race nothing.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_from_a_cancelled_leader() {
        let layer = Arc::new(IdempotencyLayer::<u32>::new(Duration::from_secs(60), 100));
        let leader = {
            let layer = layer.clone();
            tokio::spawn(async move {
                layer
                    .run("c", "op", "k", 1, soon(), |_| async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Ok(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let layer = layer.clone();
            tokio::spawn(async move {
                layer
                    .run("c", "op", "k", 1, soon(), |_| async { Ok(2) })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap().unwrap(), 2, "the waiter led the call");
        // Its outcome is stored like any other.
        assert_eq!(
            layer
                .run("c", "op", "k", 1, soon(), |_| async { Ok(3) })
                .await
                .unwrap(),
            2
        );
    }
}
