//! What a plan has done since it was set: one count per kind of fault, for tests and
//! `GET /sandbox/faults` to compare with the rates they asked for.

use http::StatusCode;
use serde::Serialize;

use super::{Decision, PlannedAnswer};

/// How many requests a plan saw and what it did to them, since the plan was set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStats {
    /// Requests the plan applied to (each advanced the generator), including those a scripted
    /// fault claimed first.
    pub requests_seen: u64,
    pub status_500: u64,
    pub status_502: u64,
    pub status_503: u64,
    pub status_504: u64,
    pub status_429: u64,
    pub reset_before: u64,
    pub reset_after: u64,
    pub delayed: u64,
    pub revocations: u64,
}

// === impl FaultStats ===

impl FaultStats {
    /// Counts what one decision does. `requests_seen` is not counted here: a request counts
    /// whether or not anything fires for it.
    pub(super) fn count(&mut self, decision: &Decision) {
        match decision.answer {
            Some(PlannedAnswer::Status(StatusCode::INTERNAL_SERVER_ERROR)) => self.status_500 += 1,
            Some(PlannedAnswer::Status(StatusCode::BAD_GATEWAY)) => self.status_502 += 1,
            Some(PlannedAnswer::Status(StatusCode::SERVICE_UNAVAILABLE)) => self.status_503 += 1,
            Some(PlannedAnswer::Status(_)) => self.status_504 += 1,
            Some(PlannedAnswer::TooManyRequests(_)) => self.status_429 += 1,
            Some(PlannedAnswer::ResetBefore) => self.reset_before += 1,
            Some(PlannedAnswer::ResetAfter) => self.reset_after += 1,
            None => {}
        }
        self.delayed += u64::from(decision.latency.is_some());
        self.revocations += u64::from(decision.revoke);
    }
}
