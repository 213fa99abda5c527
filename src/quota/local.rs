//! This replica's usage per subject (a quota and one caller it covers): the caller's token
//! bucket, its unary calls in flight, its open watch streams and the resources they watch. It
//! is the whole truth without Redis (or while Redis is down), and always what this replica's
//! gauges show. Bounded: at most [`MAX_SUBJECTS`] subjects are tracked; when a new caller comes
//! and the map is full, idle subjects (nothing in flight, bucket full) are forgotten, and if none
//! is idle the newcomer shares its quota's one overflow allowance, so no number of identities
//! can grow the map further.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The most subjects tracked at once.
pub const MAX_SUBJECTS: usize = 10_000;

/// One caller under one quota: its quota's name and a digest of both (never the identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// The quota's name.
    pub quota: Arc<str>,
    /// Hex digest of the quota's name and the caller's identity (the fleet's keys).
    pub key: Arc<str>,
    /// Where this replica counts it: `key`, or its quota's overflow ([`Local::subject`]).
    local: Arc<str>,
}

/// The two counted kinds of lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Unary calls in flight.
    Calls,
    /// Open watch streams.
    Streams,
}

#[derive(Debug)]
struct Usage {
    quota: Arc<str>,
    tokens: f64,
    burst: f64,
    at: Instant,
    calls: u32,
    streams: u32,
    /// Until when the fleet's bucket is known to hold less than a token (it said so).
    fleet_empty_until: Option<Instant>,
    /// Resource digest → this subject's streams on it here.
    watched: HashMap<Arc<str>, u32>,
}

impl Usage {
    fn refill(&mut self, rate: f64, now: Instant) {
        let burst = burst(rate);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.burst = burst;
        self.at = now;
    }

    fn idle(&self, now: Instant) -> bool {
        self.calls == 0
            && self.streams == 0
            && self.watched.is_empty()
            && self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.burst
                >= self.burst
    }
}

/// A bucket's burst: one second's worth of calls, at least one.
pub fn burst(rate: f64) -> f64 {
    rate.max(1.0)
}

/// The usage of every subject on this replica.
#[derive(Debug, Default)]
pub struct Local {
    subjects: Mutex<HashMap<Arc<str>, Usage>>,
}

impl Local {
    /// The subject of `key` under `quota`, counted under its own key while there is room (idle
    /// subjects make room), else under its quota's overflow: decided once, for a call or a
    /// stream, so what it holds is given back where it was counted.
    pub fn subject(&self, quota: &Arc<str>, key: Arc<str>) -> Subject {
        let mut map = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        let mut local = key.clone();
        if !map.contains_key(&key) && map.len() >= MAX_SUBJECTS {
            let now = Instant::now();
            map.retain(|_, usage| !usage.idle(now));
            if map.len() >= MAX_SUBJECTS {
                local = format!("overflow:{quota}").into();
            }
        }
        Subject {
            quota: quota.clone(),
            key,
            local,
        }
    }

    /// Runs `f` on `subject`'s usage.
    fn with<R>(&self, subject: &Subject, f: impl FnOnce(&mut Usage) -> R) -> R {
        let mut map = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let usage = map.entry(subject.local.clone()).or_insert_with(|| Usage {
            quota: subject.quota.clone(),
            tokens: f64::MAX,
            burst: 1.0,
            at: now,
            calls: 0,
            streams: 0,
            fleet_empty_until: None,
            watched: HashMap::new(),
        });
        f(usage)
    }

    /// Takes one token at `rate`; `Err` with how long until one is there.
    pub fn take_token(&self, subject: &Subject, rate: f64) -> Result<(), Duration> {
        self.with(subject, |usage| {
            usage.refill(rate, Instant::now());
            if usage.tokens >= 1.0 {
                usage.tokens -= 1.0;
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - usage.tokens) / rate))
            }
        })
    }

    /// How long the fleet's bucket is still known to be empty (see [`Self::fleet_empty`]).
    pub fn fleet_wait(&self, subject: &Subject) -> Option<Duration> {
        self.with(subject, |usage| {
            let wait = usage
                .fleet_empty_until?
                .checked_duration_since(Instant::now());
            if wait.is_none() {
                usage.fleet_empty_until = None;
            }
            wait
        })
    }

    /// Notes that the fleet's bucket holds less than a token for `wait`: it refills no faster
    /// than its rate and other replicas can only take from it, so the replica refuses the
    /// caller's calls until then without asking Redis again (a flood costs Redis a request per
    /// refill, not one per call).
    pub fn fleet_empty(&self, subject: &Subject, wait: Duration) {
        self.with(subject, |usage| {
            usage.fleet_empty_until = Some(Instant::now() + wait);
        });
    }

    /// Takes `n` tokens spent already (retries): the bucket may go down to minus one burst.
    pub fn debit(&self, subject: &Subject, rate: f64, n: u32) {
        self.with(subject, |usage| {
            usage.refill(rate, Instant::now());
            usage.tokens = (usage.tokens - f64::from(n)).max(-usage.burst);
        });
    }

    /// Counts one more of `kind`, unless `limit` is given and reached (then `false`).
    pub fn add(&self, subject: &Subject, kind: Counted, limit: Option<u32>) -> bool {
        self.with(subject, |usage| {
            let count = match kind {
                Counted::Calls => &mut usage.calls,
                Counted::Streams => &mut usage.streams,
            };
            if limit.is_some_and(|limit| *count >= limit) {
                return false;
            }
            *count += 1;
            true
        })
    }

    /// How many of `kind` are counted.
    pub fn count(&self, subject: &Subject, kind: Counted) -> u32 {
        self.with(subject, |usage| match kind {
            Counted::Calls => usage.calls,
            Counted::Streams => usage.streams,
        })
    }

    /// How many distinct resources are watched.
    pub fn watched(&self, subject: &Subject) -> usize {
        self.with(subject, |usage| usage.watched.len())
    }

    /// Counts one fewer of `kind`.
    pub fn remove(&self, subject: &Subject, kind: Counted) {
        self.with(subject, |usage| {
            let count = match kind {
                Counted::Calls => &mut usage.calls,
                Counted::Streams => &mut usage.streams,
            };
            *count = count.saturating_sub(1);
        });
    }

    /// Notes one more stream on `resource`, unless it is new here and `limit` distinct
    /// resources are watched (then `None`); `Some(true)` when it is new here.
    pub fn add_resource(
        &self,
        subject: &Subject,
        resource: &Arc<str>,
        limit: Option<u32>,
    ) -> Option<bool> {
        self.with(subject, |usage| {
            let distinct = usage.watched.len();
            match usage.watched.get_mut(resource) {
                Some(streams) => {
                    *streams += 1;
                    Some(false)
                }
                None if limit.is_some_and(|l| distinct >= l as usize) => None,
                None => {
                    usage.watched.insert(resource.clone(), 1);
                    Some(true)
                }
            }
        })
    }

    /// Notes one fewer stream on `resource`; `true` when it was the last one here.
    pub fn remove_resource(&self, subject: &Subject, resource: &Arc<str>) -> bool {
        self.with(subject, |usage| match usage.watched.get_mut(resource) {
            Some(streams) if *streams > 1 => {
                *streams -= 1;
                false
            }
            Some(_) => {
                usage.watched.remove(resource);
                true
            }
            None => false,
        })
    }

    /// Per quota name: calls in flight, open streams and watched resources on this replica.
    pub fn usage(&self) -> Vec<(Arc<str>, [u64; 3])> {
        let map = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        let mut sums: HashMap<Arc<str>, [u64; 3]> = HashMap::new();
        for usage in map.values() {
            let sum = sums.entry(usage.quota.clone()).or_default();
            sum[0] += u64::from(usage.calls);
            sum[1] += u64::from(usage.streams);
            sum[2] += usage.watched.len() as u64;
        }
        let mut sums: Vec<_> = sums.into_iter().collect();
        sums.sort_by(|a, b| a.0.cmp(&b.0));
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(local: &Local, n: usize) -> Subject {
        local.subject(&"batch".into(), format!("k{n}").into())
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_at_its_rate_and_retries_put_it_in_debt() {
        let local = Local::default();
        let one = subject(&local, 1);
        for _ in 0..4 {
            local.take_token(&one, 4.0).unwrap();
        }
        let wait = local.take_token(&one, 4.0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(250)).await;
        local.take_token(&one, 4.0).unwrap();
        local.debit(&one, 4.0, 100);
        let wait = local.take_token(&one, 4.0).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(1250),
            "down to minus one burst only"
        );
        assert!(
            local.take_token(&subject(&local, 2), 4.0).is_ok(),
            "another caller"
        );
    }

    #[test]
    fn counts_stop_at_their_limit_and_resources_count_once() {
        let local = Local::default();
        let one = subject(&local, 1);
        assert!(local.add(&one, Counted::Streams, Some(2)));
        assert!(local.add(&one, Counted::Streams, Some(2)));
        assert!(!local.add(&one, Counted::Streams, Some(2)));
        local.remove(&one, Counted::Streams);
        assert!(local.add(&one, Counted::Streams, Some(2)));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert_eq!(local.add_resource(&one, &a, Some(1)), Some(true));
        assert_eq!(local.add_resource(&one, &a, Some(1)), Some(false));
        assert_eq!(local.add_resource(&one, &b, Some(1)), None);
        assert!(!local.remove_resource(&one, &a));
        assert!(local.remove_resource(&one, &a));
        assert_eq!(local.add_resource(&one, &b, Some(1)), Some(true));
        assert_eq!(local.usage(), vec![("batch".into(), [0, 2, 1])]);
    }

    #[test]
    fn beyond_the_bound_new_callers_share_an_overflow_allowance() {
        let local = Local::default();
        let subjects: Vec<Subject> = (0..MAX_SUBJECTS).map(|n| subject(&local, n)).collect();
        for subject in &subjects {
            assert!(local.add(subject, Counted::Calls, Some(1)));
        }
        let late = subject(&local, MAX_SUBJECTS);
        assert!(
            local.add(&late, Counted::Calls, Some(1)),
            "the overflow's one call"
        );
        let later = subject(&local, MAX_SUBJECTS + 1);
        assert!(
            !local.add(&later, Counted::Calls, Some(1)),
            "shares the overflow's"
        );
        // Given back where it was counted: the overflow's call is free again.
        local.remove(&late, Counted::Calls);
        assert!(local.add(&later, Counted::Calls, Some(1)));
        local.remove(&subjects[0], Counted::Calls);
        local.remove(&subjects[1], Counted::Calls);
        let own = subject(&local, MAX_SUBJECTS + 2);
        assert!(local.add(&own, Counted::Calls, Some(1)));
        let map = local.subjects.lock().unwrap();
        assert!(map.len() <= MAX_SUBJECTS + 1, "{}", map.len());
        assert_eq!(
            map.get("k10002").map(|u| u.calls),
            Some(1),
            "its own allowance"
        );
    }
}
