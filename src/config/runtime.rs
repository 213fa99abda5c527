//! The async runtime's settings: how many worker threads serve calls, and whether idle workers
//! busy-poll for a moment after a call instead of sleeping (see `runtime.rs`).

use super::parse_duration;
use clap::Args;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Worker threads and busy polling.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct RuntimeSettings {
    /// Worker threads of the async runtime (unset: one per CPU, or TOKIO_WORKER_THREADS). 1 is
    /// tokio's single-threaded scheduler: the least CPU per call and per watch event, tens of
    /// thousands of calls a second on one core; scale with replicas.
    #[arg(
        long = "worker-threads",
        env = "OMS_GATEWAY_WORKER_THREADS",
        value_parser = super::ranges::worker_threads
    )]
    pub worker_threads: Option<NonZeroUsize>,
    /// After a call starts or is answered, keep the worker threads polling for network events
    /// for this long (up to twice as long) instead of sleeping: each wake-up from sleep costs tens
    /// of µs of latency on virtual machines. It spends CPU while traffic flows; 0 turns it off.
    /// Up to 1ms.
    #[arg(long = "busy-poll", env = "OMS_GATEWAY_BUSY_POLL", default_value = "0s", value_parser = parse_busy_poll)]
    pub busy_poll: Duration,
}

/// The longest `--busy-poll` window: beyond it a busy worker would burn a core between calls
/// that are far apart anyway.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

fn parse_busy_poll(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window > MAX_BUSY_POLL {
        return Err(format!(
            "`{text}` is longer than the longest busy-poll window, 1ms"
        ));
    }
    Ok(window)
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        super::flag_defaults()
    }
}
