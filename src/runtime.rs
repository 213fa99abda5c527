//! The async runtime the gateway runs on, and its optional busy polling.
//!
//! [`build`] makes tokio's multi-threaded runtime with `--worker-threads` workers. With
//! `--busy-poll`, [`BusyPollLayer`] (the outermost layer of the gRPC server) marks each call's
//! start and answer as activity, and one spinner task per worker then keeps the workers polling
//! the network with a zero timeout, by yielding, for the window after it instead of parking
//! them. A worker that parks sleeps in `epoll_wait` and is woken by the kernel when the next
//! packet lands, which on a virtual machine costs tens of µs of latency per wake and two wakes per
//! call (the caller's request, OMS's answer). Spinning spends that time as CPU instead, and only
//! while calls keep coming: a window after the last activity (at most two), every spinner parks
//! on its `Notify` and the process is idle again.

use crate::config::RuntimeSettings;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The runtime `settings` ask for. One worker is tokio's single-threaded scheduler (on the
/// thread that runs `main`), which keeps no LIFO slot: a task woken by another runs after the
/// tasks already queued, so a connection's task, woken by each of its streams in turn, runs once
/// after all of them and writes their frames together.
pub fn build(settings: &RuntimeSettings) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match settings.worker_threads {
        Some(workers) if workers.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers.get());
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// The spinners' wake-up calls; cheap to clone. Inert when busy polling is off.
#[derive(Clone, Debug, Default)]
pub struct BusyPollLayer {
    spinners: Option<Arc<[Notify]>>,
}

impl BusyPollLayer {
    /// Starts one spinner per worker thread of the current runtime when `settings.busy_poll` is
    /// not zero. Call it inside the runtime.
    pub fn start(settings: &RuntimeSettings) -> Self {
        if settings.busy_poll.is_zero() {
            return Self::default();
        }
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let spinners: Arc<[Notify]> = (0..workers).map(|_| Notify::new()).collect();
        for index in 0..workers {
            tokio::spawn(spin(spinners.clone(), index, settings.busy_poll));
        }
        Self {
            spinners: Some(spinners),
        }
    }

    fn activity(spinners: &Option<Arc<[Notify]>>) {
        // `notify_one` leaves a permit to a spinner that is spinning: it spins another window.
        for spinner in spinners.iter().flat_map(|s| s.iter()) {
            spinner.notify_one();
        }
    }
}

/// One spinner: waits for activity, then yields to the scheduler for `window`. A yielded task
/// makes its worker poll the network with a zero timeout before running it again, instead of
/// parking in `epoll_wait`.
async fn spin(spinners: Arc<[Notify]>, index: usize, window: Duration) {
    loop {
        spinners[index].notified().await;
        let until = Instant::now() + window;
        while Instant::now() < until {
            tokio::task::yield_now().await;
        }
    }
}

impl<S> tower::Layer<S> for BusyPollLayer {
    type Service = BusyPoll<S>;

    fn layer(&self, inner: S) -> BusyPoll<S> {
        BusyPoll {
            inner,
            spinners: self.spinners.clone(),
        }
    }
}

/// The service of [`BusyPollLayer`].
#[derive(Clone, Debug)]
pub struct BusyPoll<S> {
    inner: S,
    spinners: Option<Arc<[Notify]>>,
}

impl<S, R> tower::Service<R> for BusyPoll<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        BusyPollLayer::activity(&self.spinners);
        Answered {
            inner: self.inner.call(request),
            spinners: self.spinners.clone(),
        }
    }
}

pin_project! {
    /// A call's response future that marks its answer as activity.
    pub struct Answered<F> {
        #[pin]
        inner: F,
        spinners: Option<Arc<[Notify]>>,
    }
}

impl<F: Future> Future for Answered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        BusyPollLayer::activity(this.spinners);
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_BUSY_POLL;
    use std::num::NonZeroUsize;

    fn settings(workers: usize, busy_poll: Duration) -> RuntimeSettings {
        RuntimeSettings {
            worker_threads: NonZeroUsize::new(workers),
            busy_poll,
        }
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        let runtime = build(&settings(3, Duration::ZERO)).unwrap();
        assert_eq!(runtime.metrics().num_workers(), 3);
    }

    /// CPU time of the calling thread so far, in clock ticks (10 ms): other tests' threads do not
    /// count.
    fn thread_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    #[test]
    fn one_worker_is_the_single_threaded_scheduler() {
        let runtime = build(&settings(1, Duration::ZERO)).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
    }

    // The spinner spins only after activity, for about the window, then parks: busy polling with
    // no calls costs no CPU, and the last call costs at most two windows of it. One worker: the
    // spinner runs on this test's thread, whose CPU is counted.
    #[test]
    fn the_spinner_spins_after_activity_and_then_parks() {
        let runtime = build(&settings(1, MAX_BUSY_POLL)).unwrap();
        runtime.block_on(async {
            let layer = BusyPollLayer::start(&settings(1, MAX_BUSY_POLL));
            assert!(layer.spinners.is_some(), "busy polling is on");
            let window = |what: &'static str, activity: bool| {
                let spinners = layer.spinners.clone();
                async move {
                    let before = thread_ticks();
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_secs(1) {
                        if activity {
                            BusyPollLayer::activity(&spinners);
                        }
                        // Idle, the test's own loop wakes rarely, so what is counted is the
                        // spinner's (a 0.5 ms loop alone cost 3-5 ticks, at the bound).
                        let pause = if activity { 500 } else { 20_000 };
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                    let ticks = thread_ticks() - before;
                    println!("{what}: {ticks} ticks of the worker's CPU in 1 s");
                    ticks
                }
            };
            // Bounds an order of magnitude apart (a tick is 10 ms): idle, the worker uses at most
            // 5% of a core; with activity every 0.5 ms and a 1 ms window it never sleeps, so even
            // on a machine shared with a build it gets well over 20% of one.
            assert!(window("idle", false).await <= 5);
            assert!(window("busy", true).await >= 20);
            assert!(window("after the activity stopped", false).await <= 5);
        });
        // Off: no spinner.
        let off = BusyPollLayer::start(&settings(1, Duration::ZERO));
        assert!(off.spinners.is_none());
    }
}
