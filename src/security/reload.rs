//! Files re-read while the gateway runs: the TLS certificate, key and client CA (rotated in place
//! by cert-manager and the like), the authorization policy, and the OMS secret files (Kubernetes
//! Secret mounts, which swap a symlink). A watcher compares the files' contents every
//! `--reload-interval` and on SIGHUP; when any changed, it hands all of them to a reload function.
//! A reload that fails keeps what was loaded before and logs an error once per change, so a
//! half-written or broken file never takes the gateway down.

use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Reads every file; a file that cannot be read counts as empty (and fails its reload).
fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|path| std::fs::read(path).unwrap_or_default())
        .collect()
}

/// Resolves on SIGHUP (never, where there is no SIGHUP).
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

// === impl Hangup ===

impl Hangup {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Watches `paths` (whose current contents were just loaded) and calls `reload` with their new
/// contents whenever one of them changes. `what` names them in log lines.
pub fn spawn(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    mut reload: impl FnMut(&[Vec<u8>]) -> Result<(), String> + Send + 'static,
) -> JoinHandle<()> {
    let mut seen = read_all(&paths);
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut hangup = Hangup::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {},
                () = hangup.recv() => tracing::info!(what, "SIGHUP: checking for changes"),
            }
            let current = read_all(&paths);
            if current == seen {
                continue;
            }
            seen = current;
            match reload(&seen) {
                Ok(()) => tracing::info!(what, "reloaded"),
                Err(error) => {
                    tracing::error!(what, %error, "reload failed; keeping the previous version")
                }
            }
        }
    })
}
