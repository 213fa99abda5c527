//! [`Settings`]: how the client talks to OMS (timeouts, pool, extra CA roots, attempts, retry
//! budget, circuit breaker). The application fills it from its own configuration; this crate
//! reads no flag, file or environment variable.

use std::path::PathBuf;
use std::time::Duration;

/// How the client talks to OMS.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP attempt (the caller's deadline may cut it shorter); also bounds a
    /// token exchange.
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// A PEM file of extra root CAs to trust for OMS's TLS certificate; the public web roots are
    /// always trusted.
    pub ca_file: Option<PathBuf>,
    /// Attempts per call for reads and keyed writes (1 = no retries).
    pub max_attempts: u32,
    /// Retries may add at most this fraction of recent requests (over 10 s).
    pub retry_budget_ratio: f64,
    /// Retries allowed per second regardless of the ratio.
    pub retry_budget_floor: f64,
    /// Consecutive failures (connect errors, resets, timeouts, 5xx, 429) that open the circuit.
    pub breaker_threshold: u32,
    /// First cool-down of an open circuit before a probe; doubles per failed probe.
    pub breaker_cooldown: Duration,
    /// Longest cool-down of an open circuit.
    pub breaker_max_cooldown: Duration,
}
