//! The budget of upstream poll requests per second, shared fairly by every poller: this
//! replica's ([`PollBudget`]), and the fleet's in Redis when the replicas share one.
//!
//! Who asks next is decided by this replica's turns (`fair.rs`): one turn at a time, round-robin
//! between the callers whose streams wait for a poll, in arrival order within a caller. So a
//! caller's thousand watches hold another caller's watch back by one turn of each caller with
//! waiting pollers, not by a thousand polls. The turn holder takes its token (from Redis, or from
//! this replica's bucket), then lets the next turn go.
//!
//! [`PollBudget`]: a token bucket whose tokens are permits of a semaphore: a refill task adds
//! permits at the configured rate up to a small burst, and the turn holder takes one permit per
//! upstream request, so ten thousand pollers together never exceed the rate, whatever the
//! number of watchers.
//!
//! The bucket cannot go into debt: a permit is taken only when it is there (the semaphore never
//! goes below zero), and a waiter dropped before its turn (its poller stopped because its
//! streams went away) leaves the queue holding nothing, so pollers that come and go leave the
//! next one's turn where it was.
//!
//! [`FleetBudget`], the fleet-wide one: one token bucket in Redis (`oms-gateway:watch:budget`, a
//! hash of tokens and the time they were counted), so `--watch-max-polls-per-second` caps the
//! polls of the whole fleet, not of each replica.
//!
//! A Lua script refills the bucket from Redis's own clock (no replica's clock matters) and
//! reserves one token: the answer is how long the caller must wait for it (0: at once). Tokens
//! may go negative, so reservations queue in the order they reach Redis and the rate holds
//! exactly however many replicas ask, but never below a floor of minus one burst: a reservation
//! that would go lower is refused (nothing taken) with the time after which one fits, so no
//! reservation lies more than a burst's worth of time ahead and no flood of watchers can put the
//! fleet in debt. A waiter that goes away before its turn (its streams closed, so its poller was
//! dropped) gives its token back: a drop guard notes it and one task per replica returns what is
//! owed in one small script, best effort (Redis down: lost, and the floor bounds the cost).
//!
//! Within a replica, only the turn holder asks Redis (while asking, and while waiting after a
//! refusal, never while waiting for a granted reservation): a refused flood costs Redis one
//! request per replica per freed token, not one per poller. That is also why fairness within
//! each replica is enough for the fleet: every replica has at most one request at Redis, and a
//! reservation lies at most a burst ahead, so when the fleet's budget binds the replicas that
//! want tokens race for them on equal terms (one asker each, the same wait after a refusal),
//! however many pollers queue behind another replica's asker; and within its replica a
//! caller's poller waits for one turn of each caller with waiting pollers there. (A fair share
//! across replicas by caller would need the callers' queues in Redis: not done, and no caller
//! is named there.) Redis down: the turn comes back (nothing taken),
//! and the holder takes a permit from its replica's own budget in the same turn (then each
//! replica polls at up to the full rate).

use super::fair::{Ticket, Turn, Turns};
use crate::redis::{BUCKET_REFILL_LUA, PREFIX, SharedState};
use redis::Script;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Shared poll budget. Dropping the last clone stops the refill task.
#[derive(Clone, Debug)]
pub struct PollBudget {
    permits: Arc<Semaphore>,
    /// Who asks next, this replica's or the fleet's budget (`fair.rs`).
    turns: Turns,
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
            turns: Turns::default(),
            _refill: Arc::new(AbortOnDrop(refill)),
        }
    }

    /// A place in this replica's turns for a poller (or a re-read), with no caller yet.
    pub fn ticket(&self) -> Ticket {
        self.turns.ticket()
    }

    /// Takes one token from this replica's bucket in `turn`, then lets the next turn go.
    pub async fn spend(&self, turn: Turn) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
        drop(turn);
    }

    /// Polls waiting for their turn, and the callers (or the gateway) they wait for.
    pub fn waiting(&self) -> (usize, usize) {
        self.turns.waiting()
    }

    /// This replica's turns (for the tests).
    #[cfg(test)]
    pub(super) fn turns(&self) -> &Turns {
        &self.turns
    }

    /// Waits for the right to make one upstream request, as the gateway's own (no caller).
    #[cfg(test)]
    pub async fn acquire(&self) {
        let ticket = self.ticket();
        self.spend(ticket.turn().await).await;
    }
}

/// KEYS: bucket; ARGV: rate per second, burst. Returns the wait in milliseconds for the token
/// taken (0: at once); or, negated, the milliseconds after which a reservation fits above the
/// floor (`-burst`), when taking one now would go below it (nothing taken then).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    let start = r"local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
";
    let rest = r"if tokens - 1 < -burst then
  return -math.max(1, math.ceil((1 - burst - tokens) * 1000 / rate))
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)";
    Script::new(&[start, BUCKET_REFILL_LUA, rest].concat())
});

/// KEYS: bucket; ARGV: rate per second, burst, tokens. Gives back reserved tokens that were
/// never used (never above the burst); a bucket that expired meanwhile is full already.
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000 + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return 1",
    )
});

/// The fleet's poll budget.
#[derive(Clone, Debug)]
pub struct FleetBudget {
    state: SharedState,
    per_second: f64,
    burst: f64,
    key: String,
    refunds: Arc<Refunds>,
}

/// Tokens this replica reserved and will never use, not yet given back.
#[derive(Debug, Default)]
struct Refunds {
    owed: AtomicU64,
    /// Whether a task is giving them back (at most one per replica).
    returning: AtomicBool,
}

/// A granted token whose turn has not come: dropped before [`Reservation::used`], it is owed
/// back to the bucket.
struct Reservation<'a> {
    budget: &'a FleetBudget,
    armed: bool,
}

// === impl FleetBudget ===

impl FleetBudget {
    /// A budget of `per_second` polls for the whole fleet, with the local budget's burst.
    pub fn new(state: SharedState, per_second: f64) -> Self {
        let per_second = per_second.max(0.1);
        Self {
            state,
            per_second,
            burst: (per_second / 10.0).ceil().max(1.0),
            key: format!("{PREFIX}watch:budget"),
            refunds: Arc::default(),
        }
    }

    /// Waits for the right to make one upstream poll, asking Redis in `turn` (this replica's
    /// one asker); the turn is let go once a token is reserved, before waiting for it. Redis
    /// down: the turn back (nothing taken), for this replica's own budget. Dropped while it
    /// waits, it takes nothing (or gives back what it took).
    pub async fn acquire(&self, turn: Turn) -> Result<(), Turn> {
        // A wait Redis names is bounded by what this replica's own rate makes of its burst: a
        // replica configured with another rate (a rolling deploy) or a corrupt reply cannot park
        // this replica's pollers, which wait for `turn`, for longer.
        let longest = Duration::from_secs_f64(self.burst / self.per_second);
        let wait = |ms: u64| Duration::from_millis(ms).min(longest);
        let wait_ms = {
            let mut reserve = RESERVE.prepare_invoke();
            reserve.key(&self.key).arg(self.per_second).arg(self.burst);
            loop {
                let Some(answer) = self.state.invoke::<i64>(&reserve).await else {
                    return Err(turn);
                };
                if answer >= 0 {
                    break answer.unsigned_abs();
                }
                // Below the floor: nothing taken; ask again once a token fits.
                tokio::time::sleep(wait(answer.unsigned_abs())).await;
            }
        };
        drop(turn);
        if wait_ms > 0 {
            let reservation = Reservation {
                budget: self,
                armed: true,
            };
            tokio::time::sleep(wait(wait_ms)).await;
            reservation.used();
        }
        Ok(())
    }

    /// Notes one token to give back, and starts the task that gives them back if none runs.
    fn refund(&self) {
        self.refunds.owed.fetch_add(1, Ordering::AcqRel);
        if self.refunds.returning.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropped outside a runtime (at exit): nothing can reach Redis any more.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refunds.returning.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(self.clone().return_refunds());
    }

    /// Gives back what is owed, in one script per batch, until nothing is.
    async fn return_refunds(self) {
        loop {
            let owed = self.refunds.owed.swap(0, Ordering::AcqRel);
            if owed > 0 {
                let mut refund = REFUND.prepare_invoke();
                refund
                    .key(&self.key)
                    .arg(self.per_second)
                    .arg(self.burst)
                    .arg(owed);
                // Best effort: with Redis down they are lost, and the floor bounds the cost.
                let _ = self.state.invoke::<i64>(&refund).await;
                continue;
            }
            self.refunds.returning.store(false, Ordering::Release);
            // A refund noted between the swap and the store found the flag still set: take it
            // over, unless another task already did.
            if self.refunds.owed.load(Ordering::Acquire) == 0
                || self.refunds.returning.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }
}

// === impl Reservation ===

impl Reservation<'_> {
    /// Its turn came: the token is spent.
    fn used(mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.budget.refund();
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
