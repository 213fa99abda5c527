//! This replica's idempotency store, in memory: the outcome of each (caller, operation, key)
//! with its request's fingerprint, and the calls in flight that callers with the same key join.
//!
//! A decision (replay, refuse, join, lead) and the registration of a new flight happen under one
//! lock, so two callers never both lead. Only final outcomes ([`is_final_outcome`]) are kept,
//! for the window; beyond `max_entries` the oldest go first. A leader that stops before an
//! outcome (its deadline passed, or it was cancelled) tells its waiters it gave up, so one with
//! time left takes over.

use crate::error::{GatewayError, UpstreamError, is_final_outcome};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Identifies one logical mutation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct EntryKey {
    caller: String,
    operation: &'static str,
    key: String,
}

/// How a shared call ended, as waiters receive it.
#[derive(Clone)]
pub(super) enum Flight<T> {
    /// The call's outcome, which every waiter gets.
    Finished(Result<T, GatewayError>),
    /// The leader stopped before an outcome: its own deadline passed, or it was cancelled. Says
    /// nothing about the request, so a waiter with time left takes over.
    GaveUp(GatewayError),
}

/// The channel value of a flight: `None` while it runs.
pub(super) type Shared<T> = Option<Flight<T>>;

/// What to do with a call.
pub(super) enum Decision<T> {
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

/// The in-memory store of outcomes and flights.
pub(super) struct LocalStore<T> {
    state: Mutex<State<T>>,
    window: Duration,
    max_entries: usize,
}

/// The refusal of a key used again with another request.
pub(super) fn reused(key: &str) -> GatewayError {
    GatewayError::KeyReused(format!(
        "idempotency key {key:?} was already used with a different request; use a new key for a new request"
    ))
}

// === impl EntryKey ===

impl EntryKey {
    pub(super) fn new(caller: &str, operation: &'static str, key: &str) -> Self {
        Self {
            caller: caller.to_owned(),
            operation,
            key: key.to_owned(),
        }
    }
}

// === impl LocalStore ===

impl<T: Clone + Send + Sync + 'static> LocalStore<T> {
    /// A store remembering outcomes for `window`, at most `max_entries` of them.
    pub(super) fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_flight: 0,
            }),
            window,
            max_entries: max_entries.max(1),
        }
    }

    /// How many entries it holds (for the unit tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    /// What to do with a call under `entry_key`: replay, refuse, join the flight in progress, or
    /// lead a new one (registered here, under the same lock as the decision).
    pub(super) fn decide(&self, entry_key: &EntryKey, fingerprint: u64) -> Decision<T> {
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

pub(super) async fn wait_for<T: Clone>(
    mut done: watch::Receiver<Shared<T>>,
    deadline: Instant,
) -> Flight<T> {
    let wait = done.wait_for(Option::is_some);
    match tokio::time::timeout_at(answer_by(deadline), wait).await {
        Ok(Ok(flight)) => flight
            .clone()
            .unwrap_or_else(|| Flight::GaveUp(leader_gone())),
        Ok(Err(_)) => Flight::GaveUp(leader_gone()),
        Err(_) => Flight::Finished(Err(GatewayError::KeyInFlight(
            "the deadline came while a concurrent call with the same idempotency key was still running; retry with the same key to get its outcome"
                .into(),
        ))),
    }
}

/// When a caller waiting for another call must stop waiting to be answered before its
/// `deadline`: a tenth of the time left, at most 100 ms, before it.
pub(super) fn answer_by(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - (left / 10).min(std::time::Duration::from_millis(100))
}

/// Whether `outcome` is the leader giving up at its own deadline, rather than an answer.
fn gave_up<T>(outcome: &Result<T, GatewayError>) -> bool {
    matches!(
        outcome,
        Err(GatewayError::DeadlineExceeded(_) | GatewayError::KeyInFlight(_))
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
pub(super) struct FlightGuard<'a, T: Clone + Send + Sync + 'static> {
    store: &'a LocalStore<T>,
    key: Option<EntryKey>,
    flight: u64,
    sender: watch::Sender<Shared<T>>,
}

impl<'a, T: Clone + Send + Sync + 'static> FlightGuard<'a, T> {
    /// Owns the flight `flight` of `key` in `store`, announced through `sender`.
    pub(super) fn new(
        store: &'a LocalStore<T>,
        key: EntryKey,
        flight: u64,
        sender: watch::Sender<Shared<T>>,
    ) -> Self {
        Self {
            store,
            key: Some(key),
            flight,
            sender,
        }
    }

    /// Records the leader's outcome (if final) and hands it to the waiters.
    pub(super) fn finish(&mut self, outcome: Result<T, GatewayError>, fingerprint: u64) {
        let Some(key) = self.key.take() else { return };
        let mut state = self.store.state.lock().unwrap_or_else(|e| e.into_inner());
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
                self.store.evict(&mut state, at);
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
            let mut state = self.store.state.lock().unwrap_or_else(|e| e.into_inner());
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
