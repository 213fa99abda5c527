//! Why the gateway could not start ([`StartError`]), and the one way its listeners bind (gRPC,
//! probe and admin ports alike), so every bind failure names the address and the flag that sets
//! it. [`Listeners::bind`] binds all three before anything else starts (the sandbox, the token
//! exchange), so a port in use fails the start at once. A leaf: what starts the gateway imports
//! it, it imports none of them but the settings.

use crate::config::{AdminListen, GatewaySettings};
use std::io::ErrorKind;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {addr} ({flag}): {source}{}", hint(source, flag))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that sets it (or what the port is for, when no flag does).
        flag: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// What to do about a bind failure, naming the flag to change.
fn hint(source: &std::io::Error, flag: &str) -> String {
    match source.kind() {
        ErrorKind::AddrInUse => format!(
            "; another process (another gateway on this host?) holds that port: stop it, or \
             choose another address with {flag}"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "; no interface of this host has that address: use one it has, or 0.0.0.0, with {flag}"
        ),
        ErrorKind::PermissionDenied => {
            format!("; ports below 1024 need privileges: choose another with {flag}")
        }
        _ => format!("; choose another address with {flag}"),
    }
}

/// A listening socket (gRPC, probe or admin port) and the address it got (an ephemeral port's).
pub type Bound = (TcpListener, SocketAddr);

/// A listening socket at `listen`, which `flag` sets.
pub async fn bind(listen: SocketAddr, flag: &'static str) -> Result<Bound, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: listen,
        flag,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// The gateway's listeners, bound before anything else starts.
pub struct Listeners {
    /// `--listen`.
    pub grpc: Bound,
    /// `--health-listen`, when set.
    pub health: Option<Bound>,
    /// `--admin-listen`, unless `none`.
    pub admin: Option<Bound>,
}

// === impl Listeners ===

impl Listeners {
    /// Binds `--listen`, `--health-listen` and `--admin-listen`.
    pub async fn bind(config: &GatewaySettings) -> Result<Self, StartError> {
        let grpc = bind(config.listen, "--listen").await?;
        let health = match config.server.health_listen {
            Some(listen) => Some(bind(listen, "--health-listen").await?),
            None => None,
        };
        let admin = match config.admin.listen {
            AdminListen::On(listen) => Some(bind(listen, "--admin-listen").await?),
            AdminListen::Off => None,
        };
        Ok(Self {
            grpc,
            health,
            admin,
        })
    }
}
