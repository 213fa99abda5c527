//! The global budget of upstream poll requests per second, shared fairly by every poller.
//!
//! A token bucket whose tokens are permits of a FIFO semaphore: a refill task adds permits at
//! the configured rate up to a small burst, and a poller takes one permit per upstream request.
//! Waiters are served in arrival order, so ten thousand pollers each get their turn and together
//! never exceed the rate, whatever the number of watchers.
//!
//! The bucket cannot go into debt: a permit is taken only when it is there (the semaphore never
//! goes below zero), and a waiter dropped before its turn (its poller stopped because its
//! streams went away) leaves the queue holding nothing, so pollers that come and go leave the
//! next one's turn where it was.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Shared poll budget. Dropping the last clone stops the refill task.
#[derive(Clone, Debug)]
pub struct PollBudget {
    permits: Arc<Semaphore>,
    _refill: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// === impl PollBudget ===

impl PollBudget {
    /// A budget of `per_second` requests per second, with a burst of a tenth of a second's worth
    /// (at least one).
    pub fn new(per_second: f64) -> Self {
        let per_second = per_second.max(0.1);
        let burst = (per_second / 10.0).ceil().max(1.0) as usize;
        let permits = Arc::new(Semaphore::new(burst));
        let tick = Duration::from_secs_f64((1.0 / per_second).max(0.01));
        let per_tick = per_second * tick.as_secs_f64();
        let refill_permits = permits.clone();
        let refill = tokio::spawn(async move {
            let mut owed = 0.0f64;
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                owed += per_tick;
                let whole = owed.floor();
                owed -= whole;
                let room = burst.saturating_sub(refill_permits.available_permits());
                refill_permits.add_permits((whole as usize).min(room));
            }
        });
        Self {
            permits,
            _refill: Arc::new(AbortOnDrop(refill)),
        }
    }

    /// Waits for the right to make one upstream request.
    pub async fn acquire(&self) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the clock advances only when every task waits, so the figures are exact.
    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_the_rate() {
        let budget = PollBudget::new(100.0);
        let start = tokio::time::Instant::now();
        for _ in 0..60 {
            budget.acquire().await;
        }
        // A burst of 10, then 100 per second: 50 more take about 0.5 s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1500), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_that_go_away_before_their_turn_leave_the_next_one_served_on_time() {
        // A burst of one permit, then one every 100 ms.
        let budget = PollBudget::new(10.0);
        budget.acquire().await;
        let waiters: Vec<_> = (0..1000)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move { budget.acquire().await })
            })
            .collect();
        // Let every waiter queue, then let them all go away before their turn.
        tokio::time::sleep(Duration::from_millis(1)).await;
        for waiter in &waiters {
            waiter.abort();
        }
        for waiter in waiters {
            let _ = waiter.await;
        }
        let start = tokio::time::Instant::now();
        budget.acquire().await;
        // The next refill, not 1,000 of them (100 s).
        let elapsed = start.elapsed();
        assert!(elapsed <= Duration::from_millis(150), "{elapsed:?}");
    }
}
