//! Connections the sandbox can cut: a listener whose streams carry a per-connection kill switch,
//! so that a handler can make its own connection end in a TCP reset instead of an answer.
//!
//! It plugs into `axum::serve` (a custom [`Listener`]) rather than replacing it, which keeps
//! axum's accept-error handling, its hyper setup and its graceful shutdown. Handlers reach the
//! switch through `ConnectInfo<KillSwitch>`. Once tripped, every read, write, flush or shutdown
//! of the stream fails, so hyper abandons the connection without writing a byte of the answer,
//! and the socket, set to linger 0, is closed with RST rather than FIN: the client sees
//! "connection reset", exactly as when a proxy or a crashing server drops it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections can be reset from inside a request.
pub(crate) struct ResettableListener(TcpListener);

/// Trips to make one connection end in a reset. Cheap to clone; all clones share the switch.
#[derive(Clone, Debug, Default)]
pub(crate) struct KillSwitch(Arc<AtomicBool>);

/// An accepted connection and its switch.
pub(crate) struct ResettableStream {
    stream: TcpStream,
    switch: KillSwitch,
}

// === impl ResettableListener ===

impl ResettableListener {
    pub(crate) fn new(listener: TcpListener) -> ResettableListener {
        ResettableListener(listener)
    }
}

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ResettableStream, SocketAddr) {
        // axum's own TcpListener impl retries and backs off on accept errors.
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let stream = ResettableStream {
            stream,
            switch: KillSwitch::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

// === impl KillSwitch ===

impl KillSwitch {
    /// From now on the connection fails every I/O; whatever the handler returns is never sent.
    pub(crate) fn trip(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_tripped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a handler knows of its connection: the kill switch and the client's address.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    /// Trips this connection.
    pub(crate) switch: KillSwitch,
    /// The client's address.
    pub(crate) peer: SocketAddr,
}

impl Connected<IncomingStream<'_, ResettableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        Connection {
            switch: stream.io().switch.clone(),
            peer: *stream.remote_addr(),
        }
    }
}

// === impl ResettableStream ===

impl ResettableStream {
    /// `Err` once the switch is tripped. The first such call also sets linger 0, so that the
    /// close hyper then performs sends RST and discards anything unsent.
    fn check(&self) -> io::Result<()> {
        if !self.switch.is_tripped() {
            return Ok(());
        }
        // Deprecated because a *non-zero* linger blocks the thread in close(); with zero the
        // close is immediate (an abortive close), which is the whole point here.
        #[allow(deprecated)]
        let _ = self.stream.set_linger(Some(Duration::ZERO));
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "sandbox fault: connection reset",
        ))
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // No FIN for a tripped connection: the drop that follows resets it.
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}
