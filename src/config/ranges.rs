//! The range of every numeric setting, checked by the flag's own value parser, so a value out of
//! range is a configuration error naming the flag (from the command line, the environment or
//! the configuration file alike) before anything starts, never a panic or a silent absurdity
//! later: `inf` polls a second once panicked in tokio's `Semaphore`, a zero heartbeat interval
//! sends heartbeats in a loop, a zero idempotency window replays nothing.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Calls in flight (`--max-concurrent-calls`).
pub(super) const CALLS: RangeInclusive<u64> = 1..=1_000_000;
/// HTTP/2 streams per connection (`--max-concurrent-streams-per-connection`).
pub(super) const STREAMS_PER_CONNECTION: RangeInclusive<u64> = 1..=1_000_000;
/// A message's bytes (`--max-message-bytes`): 1 KiB to 256 MiB.
pub(super) const MESSAGE_BYTES: RangeInclusive<u64> = 1024..=256 * 1024 * 1024;
/// Outcomes, watch streams, watched resources (`--idempotency-max-entries`, `--watch-max-*`).
pub(super) const ENTRIES: RangeInclusive<u64> = 1..=10_000_000;
/// Consecutive failures that open the circuit (`--breaker-threshold`).
pub(super) const FAILURES: RangeInclusive<u64> = 1..=u32::MAX as u64;
/// Worker threads (`--worker-threads`).
const WORKER_THREADS: RangeInclusive<usize> = 1..=1024;

/// A parser of `T` within `range` (clap names the flag and the range when it refuses).
pub(super) fn within<T>(range: RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    clap::builder::RangedU64ValueParser::<T>::new().range(range)
}

/// A finite number within `[min, max]`, or `(min, max]` when `min_excluded`.
fn number(text: &str, min: f64, min_excluded: bool, max: f64) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    let above_min = if min_excluded {
        value > min
    } else {
        value >= min
    };
    if !value.is_finite() || !above_min || value > max {
        let low = if min_excluded { "above" } else { "from" };
        return Err(format!("must be a number {low} {min} up to {max}"));
    }
    Ok(value)
}

/// `--watch-max-polls-per-second`: above 0, up to 100,000.
pub(super) fn polls_per_second(text: &str) -> Result<f64, String> {
    number(text, 0.0, true, 100_000.0)
}

/// `--retry-budget-ratio`: a fraction, 0 to 1 (retries may at most double the traffic).
pub(super) fn fraction(text: &str) -> Result<f64, String> {
    number(text, 0.0, false, 1.0)
}

/// `--retry-budget-floor`: 0 to 10,000 retries a second.
pub(super) fn retries_per_second(text: &str) -> Result<f64, String> {
    number(text, 0.0, false, 10_000.0)
}

/// A duration that must not be zero (a timeout, an interval, a lifetime, a window).
pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = super::parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(duration)
}

/// `--worker-threads`: 1 to 1024.
pub(super) fn worker_threads(text: &str) -> Result<NonZeroUsize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| WORKER_THREADS.contains(n))
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| {
            format!(
                "must be a whole number from {} to {}",
                WORKER_THREADS.start(),
                WORKER_THREADS.end()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_out_of_range_or_not_finite_are_refused() {
        for bad in ["inf", "-inf", "NaN", "0", "-1", "1e300", "x"] {
            assert!(polls_per_second(bad).is_err(), "{bad}");
        }
        assert_eq!(polls_per_second("0.5"), Ok(0.5));
        assert_eq!(fraction("0"), Ok(0.0));
        assert!(fraction("1.01").is_err() && fraction("NaN").is_err());
        assert!(retries_per_second("-0.1").is_err());
        assert!(positive_duration("0s").is_err() && positive_duration("0").is_err());
        assert_eq!(positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(worker_threads("0").is_err() && worker_threads("1025").is_err());
        assert_eq!(worker_threads("2"), Ok(NonZeroUsize::new(2).unwrap()));
    }
}
