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
//! final ones ([`is_final_outcome`]): successes, the gateway's own validation refusals, and OMS's
//! 400, 403, 404 and 422. Everything else (other 4xx, which a load balancer may have sent, 5xx,
//! timeouts, resets, the gateway's own limits) is not stored, so a retry with the same key goes
//! upstream again, where OMS's own idempotency makes it safe. Memory is bounded: entries older than the window are
//! dropped, and beyond `max_entries` the oldest go first.
//!
//! If the caller that leads a shared call cancels, the upstream request is cancelled with it (a
//! cancelled call cancels its upstream request), and the callers waiting on it get ABORTED with a
//! retry hint.
//!
//! With `--redis-url`, a leader asks the fleet first (`shared::idempotency`): the same key on
//! another replica is shared, replayed or refused there too.

use crate::error::{GatewayError, UpstreamError, is_final_outcome};
use crate::shared::idempotency::{Call, SharedIdempotency};
use crate::shared::outcome::Stored;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Call metadata key carrying the idempotency key, in requests and responses.
pub const KEY_METADATA: &str = "idempotency-key";

/// Identifies one logical mutation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    caller: String,
    operation: &'static str,
    key: String,
}

/// How a shared call ended, as waiters receive it.
#[derive(Clone)]
enum Flight<T> {
    /// The call's outcome, which every waiter gets.
    Finished(Result<T, GatewayError>),
    /// The leader stopped before an outcome: its own deadline passed, or it was cancelled. Says
    /// nothing about the request, so a waiter with time left takes over.
    GaveUp(GatewayError),
}

/// The channel value of a flight: `None` while it runs.
type Shared<T> = Option<Flight<T>>;

enum Decision<T> {
    Replay(Result<T, GatewayError>),
    Join(watch::Receiver<Shared<T>>),
    Conflict,
    Lead(watch::Sender<Shared<T>>, u64),
}

enum Entry<T> {
    InFlight {
        fingerprint: u64,
        done: watch::Receiver<Shared<T>>,
        /// Distinguishes this flight from a later one under the same key.
        flight: u64,
    },
    Done {
        fingerprint: u64,
        outcome: Result<T, GatewayError>,
        at: Instant,
    },
}

struct State<T> {
    entries: HashMap<EntryKey, Entry<T>>,
    /// Completion order, for eviction (may hold keys already replaced or removed).
    order: VecDeque<(Instant, EntryKey)>,
    next_flight: u64,
}

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

/// How many calls the layer answered each way, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Went upstream.
    pub led: u64,
    /// Joined a call in flight.
    pub shared: u64,
    /// Answered from a stored outcome.
    pub replayed: u64,
    /// Refused: the key was used with another request.
    pub key_reused: u64,
}

/// The idempotency layer for outcomes of type `T`.
pub struct IdempotencyLayer<T> {
    state: Mutex<State<T>>,
    counters: Counters,
    window: Duration,
    max_entries: usize,
    /// The fleet's store in Redis, when replicas share one.
    fleet: Option<SharedIdempotency>,
}

impl<T> std::fmt::Debug for IdempotencyLayer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("window", &self.window)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

pub(crate) fn reused(key: &str) -> GatewayError {
    GatewayError::KeyReused(format!(
        "idempotency key {key:?} was already used with a different request; use a new key for a new request"
    ))
}

// === impl IdempotencyLayer ===

impl<T: Clone + Send + Sync + 'static> IdempotencyLayer<T> {
    /// A layer remembering outcomes for `window`, at most `max_entries` of them.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_flight: 0,
            }),
            counters: Counters::default(),
            window,
            max_entries: max_entries.max(1),
            fleet: None,
        }
    }

    /// The same layer, asking the fleet's store before going upstream.
    pub fn with_fleet(mut self, fleet: Option<SharedIdempotency>) -> Self {
        self.fleet = fleet;
        self
    }

    /// How the layer has answered calls so far (for the metrics).
    pub fn counts(&self) -> Counts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            led: load(&self.counters.led),
            shared: load(&self.counters.joined),
            replayed: load(&self.counters.replayed),
            key_reused: load(&self.counters.conflicts),
        }
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
        let entry_key = EntryKey {
            caller: caller.to_owned(),
            operation,
            key: key.to_owned(),
        };
        let (sender, flight) = loop {
            match self.decide(&entry_key, fingerprint) {
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
        let mut guard = FlightGuard {
            layer: self,
            key: Some(entry_key),
            flight,
            sender,
        };
        let outcome = match &self.fleet {
            Some(fleet) => {
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
            None => call(resumes).await,
        };
        guard.finish(outcome.clone(), fingerprint);
        outcome
    }

    /// What to do with a call under `entry_key`: replay, refuse, join the flight in progress, or
    /// lead a new one (registered here, under the same lock as the decision).
    fn decide(&self, entry_key: &EntryKey, fingerprint: u64) -> Decision<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        self.evict(&mut state, now);
        match state.entries.get(entry_key) {
            Some(Entry::Done {
                fingerprint: fp,
                outcome,
                at,
            }) if now.duration_since(*at) < self.window => {
                if *fp == fingerprint {
                    Decision::Replay(outcome.clone())
                } else {
                    Decision::Conflict
                }
            }
            Some(Entry::InFlight {
                fingerprint: fp,
                done,
                ..
            }) => {
                if *fp == fingerprint {
                    Decision::Join(done.clone())
                } else {
                    Decision::Conflict
                }
            }
            _ => {
                let (sender, receiver) = watch::channel(None);
                state.next_flight += 1;
                let flight = state.next_flight;
                state.entries.insert(
                    entry_key.clone(),
                    Entry::InFlight {
                        fingerprint,
                        done: receiver,
                        flight,
                    },
                );
                Decision::Lead(sender, flight)
            }
        }
    }

    fn evict(&self, state: &mut State<T>, now: Instant) {
        while let Some((at, key)) = state.order.front() {
            let expired = now.duration_since(*at) >= self.window;
            let over = state.order.len() > self.max_entries;
            if !expired && !over {
                break;
            }
            let at = *at;
            let key = key.clone();
            state.order.pop_front();
            if matches!(state.entries.get(&key), Some(Entry::Done { at: done_at, .. }) if *done_at == at)
            {
                state.entries.remove(&key);
            }
        }
    }
}

async fn wait_for<T: Clone>(mut done: watch::Receiver<Shared<T>>, deadline: Instant) -> Flight<T> {
    let wait = done.wait_for(Option::is_some);
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(Ok(flight)) => flight
            .clone()
            .unwrap_or_else(|| Flight::GaveUp(leader_gone())),
        Ok(Err(_)) => Flight::GaveUp(leader_gone()),
        Err(_) => Flight::Finished(Err(GatewayError::DeadlineExceeded(
            "the deadline passed while waiting for a concurrent call with the same idempotency key"
                .into(),
        ))),
    }
}

/// Whether `outcome` is the leader giving up at its own deadline, rather than an answer.
fn gave_up<T>(outcome: &Result<T, GatewayError>) -> bool {
    matches!(
        outcome,
        Err(GatewayError::DeadlineExceeded(_))
            | Err(GatewayError::Upstream {
                source: UpstreamError::DeadlineExceeded,
                ..
            })
    )
}

fn leader_gone() -> GatewayError {
    GatewayError::Aborted(
        "a concurrent call with the same idempotency key was cancelled before it finished; retry with the same key".into(),
    )
}

/// Owns an in-flight entry until its outcome is recorded or the call is dropped.
struct FlightGuard<'a, T: Clone + Send + Sync + 'static> {
    layer: &'a IdempotencyLayer<T>,
    key: Option<EntryKey>,
    flight: u64,
    sender: watch::Sender<Shared<T>>,
}

impl<T: Clone + Send + Sync + 'static> FlightGuard<'_, T> {
    fn finish(&mut self, outcome: Result<T, GatewayError>, fingerprint: u64) {
        let Some(key) = self.key.take() else { return };
        let mut state = self.layer.state.lock().unwrap_or_else(|e| e.into_inner());
        let ours = matches!(state.entries.get(&key), Some(Entry::InFlight { flight, .. }) if *flight == self.flight);
        if ours {
            if is_final_outcome(&outcome) {
                let at = Instant::now();
                state.entries.insert(
                    key.clone(),
                    Entry::Done {
                        fingerprint,
                        outcome: outcome.clone(),
                        at,
                    },
                );
                state.order.push_back((at, key));
                self.layer.evict(&mut state, at);
            } else {
                state.entries.remove(&key);
            }
        }
        drop(state);
        let flight = if gave_up(&outcome) {
            Flight::GaveUp(outcome.err().unwrap_or_else(leader_gone))
        } else {
            Flight::Finished(outcome)
        };
        self.sender.send_replace(Some(flight));
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for FlightGuard<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut state = self.layer.state.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(state.entries.get(&key), Some(Entry::InFlight { flight, .. }) if *flight == self.flight)
            {
                state.entries.remove(&key);
            }
            drop(state);
            self.sender
                .send_replace(Some(Flight::GaveUp(leader_gone())));
        }
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
        assert!(layer.state.lock().unwrap().entries.len() <= 3);
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
