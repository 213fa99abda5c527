//! The gRPC listener's connections as HTTP/2 writes to them: small frames coalesced into one
//! write.
//!
//! h2 buffers frames into a 16 KiB write buffer, but a DATA payload of 256 bytes or more is
//! chained instead of copied when the connection claims vectored writes, and nothing more can be
//! buffered behind a chained payload until it is written. So every message of a few hundred bytes
//! cost a `writev` of its own: a unary answer went out as two writes (headers and message, then
//! trailers, the caller woken twice), and one change fanned out to 500 watch streams of a
//! connection as 500 writes. A connection that reports no vectored writes gets h2's other
//! threshold, 1 KiB: a CashIn (≈ 700 bytes) is copied into the buffer (≈ 50 ns), and a unary
//! answer is one write, a fan-out one write per 16 KiB.

use futures_util::{Stream, TryStreamExt};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Each connection of `incoming`, coalescing its writes.
pub fn incoming<S, T>(incoming: S) -> impl Stream<Item = Result<Coalesced<T>, io::Error>>
where
    S: Stream<Item = Result<T, io::Error>>,
{
    incoming.map_ok(Coalesced)
}

/// A connection that reports no vectored writes (everything else is the connection's own).
#[derive(Debug)]
pub struct Coalesced<T>(T);

impl<T: Connected> Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
