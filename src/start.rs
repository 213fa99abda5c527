//! Why the gateway could not start ([`StartError`]), and the one way its listeners bind (gRPC,
//! probe and admin ports alike), so every bind failure names the address. A leaf: what starts
//! the gateway imports it, it imports none of them.

use std::net::SocketAddr;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// A listening socket (gRPC, probe or admin port) and the address it got (an ephemeral port's).
pub async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}
