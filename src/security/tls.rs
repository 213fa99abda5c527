//! TLS on the gRPC listener: rustls (ring), TLS 1.2 and 1.3 only, ALPN `h2`, and, with a client
//! CA, mutual TLS whose client certificate names the caller. The accept loop hands each TCP
//! connection (with TCP_NODELAY) to its own handshake task, bounded by a timeout, so a slow or
//! silent client cannot hold up the others; tonic gets only finished handshakes.
//!
//! The rustls `ServerConfig` sits behind a lock that the reloader replaces when the certificate,
//! key or CA files change: each handshake takes the config current at that moment, so a renewed
//! certificate serves new connections while open connections (and their streams) keep theirs.
//!
//! The caller's identity is read once per connection from the verified leaf certificate: its
//! SPIFFE URI SAN, else its first DNS SAN (`dns:…`), else its subject common name (`cn:…`), each
//! spelled with its kind ([`super::identity`]) so a CN never passes for a URI. It reaches handlers as
//! the connection's [`PeerIdentity`] (tonic's `Connected::connect_info`, a request extension).

use super::identity;
use crate::coalesce::Coalesced;
use futures_util::Stream;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The PEM files the listener's TLS is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain presented to clients.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA bundle client certificates must chain to (mTLS), if required.
    pub client_ca: Option<PathBuf>,
}

// === impl TlsFiles ===

impl TlsFiles {
    /// The files, in the order [`server_config`] takes their contents.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }

    /// Reads the files and builds the rustls configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        let mut contents = Vec::new();
        for path in self.paths() {
            contents.push(
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            );
        }
        server_config(self, &contents)
    }
}

/// A rustls server configuration from the contents of `files` (cert, key, then CA when set).
pub fn server_config(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<Arc<ServerConfig>, String> {
    let [cert, key, rest @ ..] = contents else {
        return Err("the certificate and key are both required".into());
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (&files.client_ca, rest.first()) {
        (Some(path), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert =
                    cert.map_err(|e| format!("{}: not a PEM CA bundle: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "{}: no PEM certificate in the file",
                    path.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The current TLS configuration, replaced whole on reload.
pub type SharedConfig = Arc<RwLock<Arc<ServerConfig>>>;

/// The identity a client certificate names, with its kind ([`super::identity`]): its SPIFFE
/// URI SAN as it is, else its first DNS SAN as `dns:…`, else its subject CN as `cn:…`. `None`
/// for a certificate that names nothing usable.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let spiffe = || {
        names.iter().find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => identity::uri(uri),
            _ => None,
        })
    };
    let dns = || {
        names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => identity::dns(dns),
            _ => None,
        })
    };
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .and_then(identity::common_name)
    };
    spiffe().or_else(dns).or_else(cn)
}

/// What a TLS connection tells handlers about its peer (a request extension).
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    /// The identity of the verified client certificate, when the client presented one.
    pub identity: Option<Arc<str>>,
}

/// A TLS connection after its handshake.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerIdentity,
}

// === impl TlsConnection ===

impl Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;
    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts on `listener` and yields the connections whose TLS handshake succeeded within
/// `handshake_timeout`, coalescing their writes (`coalesce.rs`). The listener closes when the
/// stream is dropped (at shutdown).
pub fn incoming(
    listener: TcpListener,
    config: SharedConfig,
    handshakes: Handshakes,
) -> impl Stream<Item = Result<Coalesced<TlsConnection>, io::Error>> {
    crate::coalesce::incoming(handshaken(listener, config, handshakes))
}

/// The bounds on TLS handshakes: how long each may take, and how many may be in progress at
/// once. At the bound the listener accepts nothing more (new connections wait in the kernel's
/// accept queue) until a handshake ends, so a flood of connections that never speak costs at
/// most `max_in_progress` handshake states, each for at most `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Handshakes {
    /// `--tls-handshake-timeout`.
    pub timeout: Duration,
    /// `--tls-max-handshakes`.
    pub max_in_progress: usize,
}

impl From<&crate::config::SecuritySettings> for Handshakes {
    fn from(settings: &crate::config::SecuritySettings) -> Self {
        Self {
            timeout: settings.handshake_timeout,
            max_in_progress: settings.max_handshakes as usize,
        }
    }
}

/// The connections of `listener` that finished their handshake within the bounds.
fn handshaken(
    listener: TcpListener,
    config: SharedConfig,
    handshakes: Handshakes,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshake_timeout = handshakes.timeout;
    let in_progress = Arc::new(tokio::sync::Semaphore::new(
        handshakes
            .max_in_progress
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = in_progress.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = tx.closed() => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let (socket, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let current = config.read().unwrap_or_else(|e| e.into_inner()).clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let handshake = TlsAcceptor::from(current).accept(socket);
                let stream = match tokio::time::timeout(handshake_timeout, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote_addr, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| certificate_identity(leaf))
                    .map(Arc::from);
                let peer = PeerIdentity { identity };
                let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
