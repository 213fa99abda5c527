//! The retry budget: retries may add at most `ratio` of the recent request volume, plus a small
//! floor per second, as Envoy, Finagle and Linkerd do. During an outage every first attempt still
//! goes out, but retries stop multiplying the load: upstream requests stay within
//! `(1 + ratio) × calls + floor × window`.
//!
//! Counts live in one-second buckets over a ten-second window.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// Which second since `origin` this bucket counts.
    second: u64,
    requests: u64,
    retries: u64,
}

/// A sliding-window retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor_per_second: f64,
    origin: Instant,
    buckets: Mutex<[Bucket; BUCKETS]>,
}

impl RetryBudget {
    /// Retries may be `ratio` of requests plus `floor_per_second` per second.
    pub fn new(ratio: f64, floor_per_second: f64) -> Self {
        Self {
            ratio: ratio.max(0.0),
            floor_per_second: floor_per_second.max(0.0),
            origin: Instant::now(),
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }

    fn with_current<R>(&self, f: impl FnOnce(&mut [Bucket; BUCKETS], usize) -> R) -> R {
        let second = Instant::now().duration_since(self.origin).as_secs() / BUCKET.as_secs();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let index = (second % BUCKETS as u64) as usize;
        if buckets[index].second != second {
            buckets[index] = Bucket {
                second,
                ..Bucket::default()
            };
        }
        // Buckets older than the window no longer count.
        for bucket in buckets.iter_mut() {
            if second.saturating_sub(bucket.second) >= BUCKETS as u64 {
                *bucket = Bucket {
                    second,
                    ..Bucket::default()
                };
            }
        }
        f(&mut buckets, index)
    }

    /// Records a first attempt.
    pub fn record_request(&self) {
        self.with_current(|buckets, i| buckets[i].requests += 1);
    }

    /// Takes the right to retry, if the budget allows one now.
    pub fn try_retry(&self) -> bool {
        self.with_current(|buckets, i| {
            let requests: u64 = buckets.iter().map(|b| b.requests).sum();
            let retries: u64 = buckets.iter().map(|b| b.retries).sum();
            let allowed = self.ratio * requests as f64 + self.floor_per_second * BUCKETS as f64;
            if (retries as f64) < allowed {
                buckets[i].retries += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 1.0);
        for _ in 0..100 {
            budget.record_request();
        }
        let granted = (0..1000).filter(|_| budget.try_retry()).count();
        // 20% of 100, plus 1/s over a 10 s window.
        assert_eq!(granted, 30);
    }
}
