//! The client side of a proxied connection: the bytes detection read are replayed first, and
//! the bytes carried both ways are counted.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::{self, Direction};

/// Counted bytes are reported at least this often, so a long-lived connection shows up in
/// the byte counters before it closes.
const REPORT_EVERY: u64 = 1 << 20;

/// A client connection with the bytes already read from it put back in front.
#[derive(Debug)]
pub(crate) struct ClientIo<S> {
    prefix: Bytes,
    stream: S,
    direction: Direction,
    /// Bytes from the client (to the upstream) and to it, not reported yet.
    from_client: u64,
    to_client: u64,
}

impl<S> ClientIo<S> {
    pub(crate) fn new(stream: S, prefix: Bytes, direction: Direction) -> ClientIo<S> {
        ClientIo {
            prefix,
            stream,
            direction,
            from_client: 0,
            to_client: 0,
        }
    }

    fn count(&mut self, from_client: usize, to_client: usize) {
        self.from_client += from_client as u64;
        self.to_client += to_client as u64;
        if self.from_client + self.to_client >= REPORT_EVERY {
            self.report();
        }
    }

    fn report(&mut self) {
        if self.from_client + self.to_client > 0 {
            metrics::bytes(self.direction, self.from_client, self.to_client);
            self.from_client = 0;
            self.to_client = 0;
        }
    }
}

impl<S> Drop for ClientIo<S> {
    fn drop(&mut self) {
        self.report();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Let the detection buffer go.
                this.prefix = Bytes::new();
            }
            this.count(n, 0);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len() - before;
            this.count(read, 0);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            this.count(0, written);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            this.count(0, written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_before_the_stream_and_writes_pass_through() {
        let (mut peer, stream) = tokio::io::duplex(64);
        let mut io = ClientIo::new(stream, Bytes::from_static(b"GET / "), Direction::Inbound);
        peer.write_all(b"HTTP/1.1\r\n").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut small = [0u8; 4];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GET ");
        let mut rest = Vec::new();
        let mut peer_read = [0u8; 2];
        io.write_all(b"ok").await.unwrap();
        peer.read_exact(&mut peer_read).await.unwrap();
        assert_eq!(&peer_read, b"ok");
        drop(peer);
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(&rest, b"/ HTTP/1.1\r\n");
        assert_eq!((io.from_client, io.to_client), (16, 2));
    }
}
