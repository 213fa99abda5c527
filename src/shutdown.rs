//! The gateway's one shutdown notifier, as tokio's mini-redis has: a watch channel whose value
//! turns true when draining begins and which closes when the gateway has stopped. Every task and
//! stream that must react observes it: health turns NOT_SERVING and the watch hub ends its
//! streams (UNAVAILABLE) when draining begins; the gRPC listener closes the drain delay later.
//! The background tasks it owns (token refresher, circuit prober, health follower, probe port,
//! file reloaders) are ended once the server has stopped, or when the gateway is dropped (a
//! start that fails half-way leaves none running).

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Owned by the running gateway: begins the drain, and ends what it owns when stopped (or
/// dropped).
#[derive(Debug)]
pub struct Shutdown {
    draining: watch::Sender<bool>,
    /// Background tasks, ended when the gateway stops.
    tasks: Vec<JoinHandle<()>>,
}

/// What a task observes: when draining begins, and when the gateway has stopped.
#[derive(Clone, Debug)]
pub struct Signal(watch::Receiver<bool>);

// === impl Shutdown ===

impl Shutdown {
    /// Serving: neither draining nor stopped.
    pub fn new() -> Self {
        Self {
            draining: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// What tasks observe.
    pub fn signal(&self) -> Signal {
        Signal(self.draining.subscribe())
    }

    /// Draining as a flag, for an observer that takes one (the watch hub ends its streams when
    /// it turns true, and does nothing when the gateway stops without draining).
    pub fn draining_flag(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Runs `task` until the gateway stops.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Owns `tasks` (spawned by others) until the gateway stops.
    pub fn adopt(&mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.tasks.extend(tasks);
    }

    /// Begins the drain: every [`Signal::changed`] resolves true.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// The gateway has stopped: its background tasks end, and every [`Signal::changed`]
    /// resolves false.
    pub fn stop(self) {
        drop(self);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Waits for the gRPC server to finish (its listener closed) for at most `limit`, then stops it
/// with whatever calls are still running.
pub async fn server_stopped(
    mut server: JoinHandle<Result<(), tonic::transport::Error>>,
    limit: Duration,
) {
    match tokio::time::timeout(limit, &mut server).await {
        Ok(Ok(Ok(()))) => tracing::info!("all calls finished; stopped"),
        Ok(Ok(Err(err))) => tracing::error!(error = %err, "gRPC server failed"),
        Ok(Err(err)) => tracing::error!(error = %err, "gRPC server task failed"),
        Err(_) => {
            tracing::warn!("calls still running after the shutdown grace period; stopping anyway");
            server.abort();
        }
    }
}

// === impl Signal ===

impl Signal {
    /// Whether draining has begun, marking the value seen (see [`Signal::changed`]).
    pub fn is_draining(&mut self) -> bool {
        *self.0.borrow_and_update()
    }

    /// Resolves at the next change: draining began (true), or the gateway stopped (false).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// Resolves `delay` after draining began (the drain: calls are still served, so the mesh
    /// can stop routing here), or at once when the gateway stopped without draining: when the
    /// gRPC listener closes.
    pub async fn closing(mut self, delay: Duration) {
        if self.0.wait_for(|draining| *draining).await.is_ok() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_then_stopping_reaches_every_observer_and_ends_owned_tasks() {
        let mut shutdown = Shutdown::new();
        let (mut signal, flag) = (shutdown.signal(), shutdown.draining_flag());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        shutdown.spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await
        });
        assert!(!signal.is_draining());
        shutdown.drain();
        assert!(signal.changed().await && signal.is_draining() && *flag.borrow());
        shutdown.stop();
        assert!(!signal.changed().await, "stopped");
        assert!(rx.recv().await.is_none(), "the owned task ended");
    }
}
