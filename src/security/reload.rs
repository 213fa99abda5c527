//! Files re-read while the gateway runs: the TLS certificate, key and client CA (rotated in place
//! by cert-manager and the like), the authorization policy, and the OMS secret files (Kubernetes
//! Secret mounts, which swap a symlink). A watcher compares the files' contents every
//! `--reload-interval` and on SIGHUP; when any changed, it hands all of them to a reload function.
//! A reload that fails keeps what was loaded before and logs an error once per change, so a
//! half-written or broken file never takes the gateway down; so does a file that cannot be read
//! (deleted, a mount gone, no permission): it is never taken for an empty one (an empty policy
//! would deny every caller), and nothing is reloaded until every file can be read again. [`load_tls`] and
//! [`load_authz_policy`] load the TLS listener's configuration and the policy at start (a file
//! that cannot be read or parsed refuses the start) and follow them with such a watcher.

use super::{SharedPolicy, tls};
use crate::config::SecuritySettings;
use crate::start::StartError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Reads every file; the first that cannot be read is the error, naming it.
fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())))
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
    let mut seen = read_all(&paths).ok();
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut hangup = Hangup::new();
        // The read failure last logged, so a file that stays away is logged once.
        let mut unreadable: Option<String> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {},
                () = hangup.recv() => tracing::info!(what, "SIGHUP: checking for changes"),
            }
            let current = match read_all(&paths) {
                Ok(current) => current,
                Err(error) => {
                    if unreadable.as_ref() != Some(&error) {
                        tracing::error!(
                            what,
                            %error,
                            "cannot read a watched file; keeping the last good version"
                        );
                        unreadable = Some(error);
                    }
                    continue;
                }
            };
            if unreadable.take().is_some() {
                tracing::info!(what, "the watched files can be read again");
            }
            if seen.as_ref() == Some(&current) {
                continue;
            }
            let outcome = reload(&current);
            seen = Some(current);
            match outcome {
                Ok(()) => tracing::info!(what, "reloaded"),
                Err(error) => {
                    tracing::error!(what, %error, "reload failed; keeping the previous version")
                }
            }
        }
    })
}

/// The TLS listener's configuration, when `--tls-cert`/`--tls-key` are given, reloaded (by a
/// task pushed to `reloaders`) when the files change.
pub(crate) fn load_tls(
    settings: &SecuritySettings,
    reloaders: &mut Vec<JoinHandle<()>>,
) -> Result<Option<tls::SharedConfig>, StartError> {
    let Some(files) = tls_files(settings).map_err(StartError::Config)? else {
        return Ok(None);
    };
    let shared: tls::SharedConfig = Arc::new(std::sync::RwLock::new(
        files
            .load()
            .map_err(|e| StartError::Config(format!("TLS: {e}")))?,
    ));
    let target = shared.clone();
    let paths = files.paths();
    reloaders.push(spawn(
        "TLS certificate",
        paths,
        settings.reload_interval,
        move |contents| {
            let config = tls::server_config(&files, contents)?;
            *target.write().unwrap_or_else(|e| e.into_inner()) = config;
            Ok(())
        },
    ));
    Ok(Some(shared))
}

/// The TLS files the settings name (none without `--tls-cert`), or why they do not go together.
pub(crate) fn tls_files(settings: &SecuritySettings) -> Result<Option<tls::TlsFiles>, String> {
    let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if settings.tls_client_ca.is_some() => {
            return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
        }
        (None, None) => return Ok(None),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(Some(tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: settings.tls_client_ca.clone(),
    }))
}

/// The authorization policy, when `--authz-policy` is given, reloaded when the file changes.
pub(crate) fn load_authz_policy(
    settings: &SecuritySettings,
    reloaders: &mut Vec<JoinHandle<()>>,
) -> Result<Option<SharedPolicy>, StartError> {
    let Some(path) = &settings.authz_policy else {
        return Ok(None);
    };
    let shared: SharedPolicy = Arc::new(std::sync::RwLock::new(Arc::new(
        super::load_policy(path).map_err(StartError::Config)?,
    )));
    let target = shared.clone();
    let shown = path.display().to_string();
    reloaders.push(spawn(
        "authorization policy",
        vec![path.clone()],
        settings.reload_interval,
        move |contents| {
            let text = String::from_utf8_lossy(&contents[0]);
            let policy =
                super::policy::Policy::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
            *target.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
            Ok(())
        },
    ));
    Ok(Some(shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_cannot_be_read_is_never_reloaded_as_empty() {
        let dir = std::env::temp_dir().join(format!(
            "oms-gateway-reload-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("a directory");
        let path = dir.join("watched");
        let replace = |text: &str| {
            let tmp = dir.join("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        };
        replace("one");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = spawn(
            "test file",
            vec![path.clone()],
            Duration::from_millis(10),
            move |contents| {
                let _ = tx.send(contents[0].clone());
                Ok(())
            },
        );
        std::fs::remove_file(&path).expect("delete");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "reloaded while the file was away");
        replace("two");
        let reloaded = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(reloaded.ok().flatten().as_deref(), Some(&b"two"[..]));
        watcher.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
}
