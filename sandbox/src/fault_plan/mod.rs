//! Seeded random fault injection: a [`FaultPlan`] of per-request probabilities, the generator
//! that draws from it, and the counts of what fired.
//!
//! Where scripted faults ([`super::Fault`]) say "the next N requests", a plan says "about this
//! share of requests", which is what a soak test or a chaos run of the gateway wants. It is
//! reproducible: one generator, seeded by the plan, advances by exactly [`DRAWS_PER_REQUEST`]
//! draws for every request the plan applies to, in the order the requests arrive, so the same
//! sequence of requests meets the same faults. With concurrent requests the arrival order is
//! whatever the scheduler makes it, so only a sequential series is reproducible exactly.
//!
//! The plan is written as a compact spec (see [`FaultPlan`]'s `FromStr`), the same format its
//! `Display` prints, so a plan can travel through a flag, an env var or `PUT /sandbox/faults`.
//!
//! `spec` reads and writes that format; `state` holds the plan in force with its generator and
//! decides each request; `stats` counts what fired.

mod spec;
mod state;
mod stats;

use std::time::Duration;

pub use stats::FaultStats;

pub(crate) use state::{Decision, PlanState, PlannedAnswer};

/// Random draws per request the plan applies to, whatever fires: five statuses, two resets,
/// latency (whether, and how long), revocation, in that order.
pub(crate) const DRAWS_PER_REQUEST: usize = 10;

/// What a plan applies to unless told otherwise: the cash-in API, not the token exchange.
const DEFAULT_PATH: &str = "/cash-ins";
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Seeded, per-request random faults.
///
/// Each probability is in `[0, 1]` and drawn independently per request, in field order. At most
/// one *answer* fault (a status, 429, `reset_before`, `reset_after`) fires per request: the first
/// whose draw hits, so the effective rate of a later one is its probability times the chance
/// that none before it fired. Latency and revocation combine with any of them.
///
/// The default is no faults, seed 0, `retry_after` 1 s and `paths` `["/cash-ins"]`.
///
/// The same seed gives the same faults to the same *sequence* of requests (counting only those
/// under `paths`); concurrent requests draw in whatever order they reach the sandbox, which can
/// differ from run to run. The journal lists requests in draw order.
///
/// # Spec format
///
/// Comma-separated `key=value` parts, in any order, each key at most once; `none` or an empty
/// string is the default plan:
///
/// ```text
/// seed=42,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,retry_after=1s,reset_before=0.03,
/// reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01,paths=/cash-ins|/cash-locations
/// ```
///
/// | key | value |
/// | --- | --- |
/// | `seed` | unsigned integer (default 0) |
/// | `500` `502` `503` `504` `429` `reset_before` `reset_after` `revoke` | probability in `[0, 1]` |
/// | `retry_after` | duration: integer or decimal with a unit `ns` `us` `ms` `s` (`0` alone is fine) |
/// | `latency` | `P:MIN-MAX` or `P:FIXED`, e.g. `0.1:50ms-300ms` |
/// | `paths` | path prefixes separated by `\|`, each starting with `/` |
///
/// Keys may use `-` for `_`, and `status_500` for `500`; `revoke_tokens` is `revoke`. `Display`
/// prints `none` for the default plan and otherwise the seed plus every field that differs from
/// the default, in the order above; parsing that gives back an equal plan.
///
/// A plan never applies to `PUT`/`GET /sandbox/faults`, so a plan can always be switched off.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    pub status_500: f64,
    pub status_502: f64,
    pub status_503: f64,
    pub status_504: f64,
    pub status_429: f64,
    /// Sent with a 429 as `Retry-After`, in whole seconds rounded up. Default 1 s.
    pub retry_after: Duration,
    /// Close the TCP connection abruptly (RST, no HTTP response) before the request has any
    /// effect.
    pub reset_before: f64,
    /// Process the request fully (a create is committed, its idempotency record stored), then
    /// close the connection abruptly instead of answering. The client cannot tell whether it
    /// happened.
    pub reset_after: f64,
    /// With this probability, sleep a uniform time in `[latency_min, latency_max]` before
    /// answering (for a request that runs, while it holds its Idempotency-Key).
    pub latency: f64,
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// With this probability, revoke every issued token before handling (the request then gets
    /// 401 unless an answer fault answers it first).
    pub revoke_tokens: f64,
    /// The path prefixes the plan applies to (any method). Default `["/cash-ins"]`; empty
    /// applies to nothing.
    pub paths: Vec<String>,
}

/// A spec that does not parse, naming the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault plan part `{part}`: {reason}")]
pub struct FaultPlanError {
    part: String,
    reason: String,
}

// === impl FaultPlan ===

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            seed: 0,
            status_500: 0.0,
            status_502: 0.0,
            status_503: 0.0,
            status_504: 0.0,
            status_429: 0.0,
            retry_after: DEFAULT_RETRY_AFTER,
            reset_before: 0.0,
            reset_after: 0.0,
            latency: 0.0,
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
            revoke_tokens: 0.0,
            paths: vec![DEFAULT_PATH.to_owned()],
        }
    }
}

impl FaultPlan {
    /// The plan that injects nothing (the default).
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// Whether no fault can ever fire.
    pub fn is_none(&self) -> bool {
        self.probabilities().iter().all(|(_, p)| prob(*p) == 0.0)
    }

    fn probabilities(&self) -> [(&'static str, f64); 9] {
        [
            ("500", self.status_500),
            ("502", self.status_502),
            ("503", self.status_503),
            ("504", self.status_504),
            ("429", self.status_429),
            ("reset_before", self.reset_before),
            ("reset_after", self.reset_after),
            ("latency", self.latency),
            ("revoke", self.revoke_tokens),
        ]
    }

    pub(crate) fn applies_to(&self, path: &str) -> bool {
        self.paths
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
    }
}

/// A probability as the generator uses it: out-of-range values (possible in a plan built as a
/// struct rather than parsed) are clamped, NaN never fires.
fn prob(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

// === impl FaultPlanError ===

impl FaultPlanError {
    /// The `key=value` part that is wrong.
    pub fn part(&self) -> &str {
        &self.part
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
