//! Scripted fault injection: what a test asks the sandbox to do wrong, and for how long.
//!
//! A fault matches requests by optional method and path prefix and applies to the next `times`
//! of them. Faults are consumed first-in first-out: the oldest fault that matches a request is
//! the one that fires, so a test can script "503, then 429, then normal" as three injections.

use std::collections::VecDeque;
use std::time::Duration;

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
}
