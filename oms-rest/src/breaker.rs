//! The circuit breaker: when OMS fails persistently, calls fail at once with UNAVAILABLE and a
//! retry hint instead of queuing behind timeouts, and it recovers by itself.
//!
//! Closed: every call goes out; `threshold` consecutive failures (connect errors, resets,
//! timeouts, 5xx, 429) open it. Open: calls are refused for the cool-down (doubling on each
//! failed probe, up to `max_cooldown`). Then half-open: one probe goes out (a caller's call, or
//! the background prober's), and its outcome closes or reopens the circuit. Any success closes it.
//! The token exchange, which no admission lets out and every call needing a token waits for,
//! reports its own failures ([`CircuitBreaker::on_shared_failure`]): one that hangs until its
//! timeout opens the circuit at once.
//! State changes are published so health can report NOT_SERVING while open.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the breaker decides for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Allowed,
    /// Send it as the half-open probe; its outcome decides.
    Probe,
    /// Refuse it; retry after this long.
    Refused(Duration),
}

/// The breaker's state, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are refused.
    Open,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    probing: bool,
}

/// A consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    base_cooldown: Duration,
    max_cooldown: Duration,
    inner: Mutex<Inner>,
    state: watch::Sender<CircuitState>,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cooldown` at first.
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Self {
        let (state, _) = watch::channel(CircuitState::Closed);
        Self {
            threshold: threshold.max(1),
            base_cooldown: cooldown,
            max_cooldown: max_cooldown.max(cooldown),
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                open_until: None,
                cooldown,
                probing: false,
            }),
            state,
        }
    }

    /// Follows the breaker's state.
    pub fn subscribe(&self) -> watch::Receiver<CircuitState> {
        self.state.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go out now.
    pub fn admit(&self) -> Admission {
        let mut inner = self.lock();
        match inner.open_until {
            None => Admission::Allowed,
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    Admission::Refused(until - now)
                } else if inner.probing {
                    Admission::Refused(Duration::from_millis(100))
                } else {
                    inner.probing = true;
                    Admission::Probe
                }
            }
        }
    }

    /// Records a call that reached OMS and got a healthy answer (any 2xx or 4xx but 429).
    pub fn on_success(&self) {
        let mut inner = self.lock();
        let was_open = inner.open_until.is_some();
        inner.consecutive_failures = 0;
        inner.open_until = None;
        inner.probing = false;
        inner.cooldown = self.base_cooldown;
        drop(inner);
        if was_open {
            tracing::info!("OMS answers again; circuit closed");
            self.state.send_replace(CircuitState::Closed);
        }
    }

    /// Records a failure that says OMS is unwell.
    pub fn on_failure(&self, probe: bool) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let open = if probe {
            inner.probing = false;
            inner.cooldown = (inner.cooldown * 2).min(self.max_cooldown);
            true
        } else {
            inner.open_until.is_none() && inner.consecutive_failures >= self.threshold
        };
        if open {
            self.open(inner, Instant::now(), "OMS failing persistently");
        }
    }

    /// Records a failure that says OMS is unwell of a request no admission let out: the token
    /// exchange, which every call that needs a token waits for. Closed: counted like any
    /// failure, except that an exchange that reached its own timeout (`held_every_call`) opens
    /// the circuit at once, since it held every caller for that whole timeout, and waiting for
    /// `threshold` of them would hold them `threshold` times as long. Open with the cool-down
    /// over and no probe out: the exchange was the probe, so the circuit reopens with a longer
    /// cool-down. Otherwise the cool-down, or the probe out, decides.
    pub fn on_shared_failure(&self, held_every_call: bool) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let now = Instant::now();
        let open = match inner.open_until {
            None => held_every_call || inner.consecutive_failures >= self.threshold,
            Some(until) if now >= until && !inner.probing => {
                inner.cooldown = (inner.cooldown * 2).min(self.max_cooldown);
                true
            }
            Some(_) => false,
        };
        if open {
            self.open(inner, now, "OMS token exchanges failing");
        }
    }

    /// Opens the circuit for the current cool-down from `now`, says why, and tells its watchers.
    fn open(&self, mut inner: std::sync::MutexGuard<'_, Inner>, now: Instant, why: &'static str) {
        inner.open_until = Some(now + inner.cooldown);
        let cooldown = inner.cooldown;
        drop(inner);
        tracing::warn!(
            cooldown_ms = cooldown.as_millis() as u64,
            "{why}; circuit open"
        );
        self.state.send_replace(CircuitState::Open);
    }

    /// Releases a probe that ended without telling anything (e.g. the caller cancelled).
    pub fn release_probe(&self) {
        self.lock().probing = false;
    }

    /// When the next probe may go out, if the circuit is open.
    pub fn open_until(&self) -> Option<Instant> {
        self.lock().open_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_refuses_probes_and_recovers() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(1), Duration::from_secs(8));
        for _ in 0..2 {
            breaker.on_failure(false);
        }
        assert_eq!(breaker.admit(), Admission::Allowed);
        breaker.on_failure(false);
        assert!(matches!(breaker.admit(), Admission::Refused(_)));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        // Only one probe at a time.
        assert!(matches!(breaker.admit(), Admission::Refused(_)));
        breaker.on_failure(true);
        // The cool-down doubled.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(matches!(breaker.admit(), Admission::Refused(_)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.on_success();
        assert_eq!(breaker.admit(), Admission::Allowed);
        assert_eq!(*breaker.subscribe().borrow(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_token_exchange_opens_at_once_and_reopens_a_cooled_down_circuit() {
        let breaker = CircuitBreaker::new(5, Duration::from_secs(1), Duration::from_secs(8));
        // Failures that answered fast count towards the threshold like any other.
        breaker.on_shared_failure(false);
        assert_eq!(breaker.admit(), Admission::Allowed);
        // One that held every call for its whole timeout opens the circuit.
        breaker.on_shared_failure(true);
        assert!(matches!(breaker.admit(), Admission::Refused(_)));
        assert_eq!(*breaker.subscribe().borrow(), CircuitState::Open);
        // Cooling down: another failure changes nothing.
        breaker.on_shared_failure(true);
        tokio::time::advance(Duration::from_millis(1001)).await;
        // Cooled down, no probe out: the exchange was the probe; the cool-down doubles.
        breaker.on_shared_failure(true);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(matches!(breaker.admit(), Admission::Refused(_)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        // A probe is out: its own verdict decides.
        breaker.on_shared_failure(true);
        assert!(matches!(breaker.admit(), Admission::Refused(_)));
        breaker.on_success();
        assert_eq!(breaker.admit(), Admission::Allowed);
    }
}
