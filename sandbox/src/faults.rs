//! Scripted fault injection: what a test asks the sandbox to do wrong, and for how long.
//!
//! A fault matches requests by optional method and path prefix and applies to the next `times`
//! of them. Faults are consumed first-in first-out: the oldest fault that matches a request is
//! the one that fires, so a test can script "503, then 429, then normal" as three injections.
//!
//! A [`Gate`] holds requests until the test opens it, so a test can keep a request in flight
//! exactly as long as it needs (while it sends a second one) instead of guessing a delay.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// One scripted misbehaviour.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Only requests with this method (case-insensitive); `None` matches any method.
    pub method: Option<String>,
    /// Only requests whose path starts with this (e.g. `/cash-ins`); `""` matches every path.
    pub path_prefix: String,
    /// How many matching requests this fault applies to; `0` never fires.
    pub times: usize,
    /// What happens to those requests.
    pub action: FaultAction,
}

/// What a fault does to a request it matches.
#[derive(Clone, Debug)]
pub enum FaultAction {
    /// Answer with this status, body and extra headers instead of handling the request (the
    /// request has no effect).
    Respond {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Sleep this long, then handle the request normally. The sleep happens once the request
    /// holds its Idempotency-Key, as with a slow server: a retry sent meanwhile gets 409.
    Delay(Duration),
    /// Wait until the gate is opened (or its limit passes), then handle the request normally.
    /// Like `Delay`, the wait happens once the request holds its Idempotency-Key; a request
    /// whose client goes away meanwhile is dropped (journalled 499) with no effect.
    Hold(Gate),
    /// Handle the request at once, then hold its answer until the gate is opened (or its limit
    /// passes): an answer that was true when OMS gave it, and is late when it arrives.
    HoldAnswer(Gate),
    /// Reset the connection instead of answering, before the request has any effect (the
    /// journal records [`CONNECTION_RESET`](crate::CONNECTION_RESET)).
    Reset,
}

/// What [`FaultAction::Hold`] waits for: opened by the test, once, for every request it holds
/// and every later one. Clones share the gate. A held request waits at most the gate's `limit`,
/// so a test that never opens it leaves no request waiting without a bound.
#[derive(Clone, Debug)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
    limit: Duration,
}

// === impl Gate ===

impl Gate {
    /// A closed gate; the requests it holds go on by themselves after `limit`.
    pub fn new(limit: Duration) -> Gate {
        Gate {
            open: Arc::new(watch::Sender::new(false)),
            limit,
        }
    }

    /// Lets every request held at this gate go on, now and from now on.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Whether [`open`](Self::open) was called.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Waits until the gate is open or its limit has passed.
    pub(crate) async fn pass(&self) {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(self.limit, open.wait_for(|open| *open)).await;
    }
}

// === impl Fault ===

impl Fault {
    /// Answer the next `times` matching requests with `status` and an OMS-shaped error body.
    pub fn status(method: Option<&str>, path_prefix: &str, times: usize, status: u16) -> Fault {
        let body = format!(
            r#"{{"error":{{"code":"injected_fault","message":"injected fault: HTTP {status}"}}}}"#
        );
        Fault {
            method: method.map(str::to_owned),
            path_prefix: path_prefix.to_owned(),
            times,
            action: FaultAction::Respond {
                status,
                body,
                headers: Vec::new(),
            },
        }
    }

    /// Delay the next `times` matching requests by `delay`, then handle them normally.
    pub fn delay(method: Option<&str>, path_prefix: &str, times: usize, delay: Duration) -> Fault {
        Fault {
            method: method.map(str::to_owned),
            path_prefix: path_prefix.to_owned(),
            times,
            action: FaultAction::Delay(delay),
        }
    }

    /// Hold the next `times` matching requests at `gate` (see [`FaultAction::Hold`]).
    pub fn hold(method: Option<&str>, path_prefix: &str, times: usize, gate: &Gate) -> Fault {
        Fault {
            method: method.map(str::to_owned),
            path_prefix: path_prefix.to_owned(),
            times,
            action: FaultAction::Hold(gate.clone()),
        }
    }

    /// Handle the next `times` matching requests at once and hold their answers at `gate` (see
    /// [`FaultAction::HoldAnswer`]).
    pub fn hold_answer(
        method: Option<&str>,
        path_prefix: &str,
        times: usize,
        gate: &Gate,
    ) -> Fault {
        Fault {
            method: method.map(str::to_owned),
            path_prefix: path_prefix.to_owned(),
            times,
            action: FaultAction::HoldAnswer(gate.clone()),
        }
    }

    /// Reset the connection of the next `times` matching requests, with no effect.
    pub fn reset(method: Option<&str>, path_prefix: &str, times: usize) -> Fault {
        Fault {
            method: method.map(str::to_owned),
            path_prefix: path_prefix.to_owned(),
            times,
            action: FaultAction::Reset,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        method_ok && path.starts_with(self.path_prefix.as_str())
    }
}

/// The pending faults, oldest first, each with how many more requests it applies to.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    pending: VecDeque<(Fault, usize)>,
}

// === impl FaultQueue ===

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault) {
        let times = fault.times;
        if times > 0 {
            self.pending.push_back((fault, times));
        }
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// The action for this request, if a fault claims it; using it up counts against `times`.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<FaultAction> {
        let index = self
            .pending
            .iter()
            .position(|(fault, _)| fault.matches(method, path))?;
        let (fault, remaining) = self.pending.get_mut(index)?;
        let action = fault.action.clone();
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            self.pending.remove(index);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(action: Option<FaultAction>) -> Option<u16> {
        match action {
            Some(FaultAction::Respond { status, .. }) => Some(status),
            _ => None,
        }
    }

    #[test]
    fn faults_fire_in_order_and_run_out() {
        let mut q = FaultQueue::default();
        q.push(Fault::status(Some("post"), "/cash-ins", 2, 503));
        q.push(Fault::status(None, "/cash-ins", 1, 429));
        q.push(Fault::status(None, "/x", 0, 500));
        assert_eq!(status_of(q.take("GET", "/cash-ins/ci_1")), Some(429));
        assert_eq!(status_of(q.take("POST", "/cash-ins")), Some(503));
        assert_eq!(status_of(q.take("POST", "/auth/token")), None);
        assert_eq!(status_of(q.take("POST", "/cash-ins")), Some(503));
        assert_eq!(status_of(q.take("POST", "/cash-ins")), None);
        assert_eq!(status_of(q.take("GET", "/x")), None);
    }

    #[tokio::test]
    async fn a_gate_holds_until_opened_and_then_lets_everything_through() {
        let gate = Gate::new(Duration::from_secs(60));
        let held = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass().await }
        });
        tokio::task::yield_now().await;
        assert!(!held.is_finished() && !gate.is_open());
        gate.open();
        tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .expect("released by open")
            .expect("task");
        // Open stays open: a later request is not held.
        tokio::time::timeout(Duration::from_secs(10), gate.pass())
            .await
            .expect("an open gate holds nothing");
    }

    #[tokio::test]
    async fn a_gate_never_opened_holds_no_longer_than_its_limit() {
        let gate = Gate::new(Duration::from_secs(1));
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(30), gate.pass())
            .await
            .expect("the limit ends the hold");
        // Timers never fire early.
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(!gate.is_open());
    }
}
