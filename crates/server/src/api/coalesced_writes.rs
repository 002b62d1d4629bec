//! Coalesced writes on client connections: one `writev` per connection per
//! round of the scheduler, not one per response.
//!
//! hyper's HTTP/2 connection task flushes as soon as it runs, and tokio runs
//! a task woken by another one next (its LIFO slot). So when one applied
//! write wakes the streams of a thousand watchers, each stream's response
//! wakes its connection, which writes it alone: a thousand system calls,
//! most of a loopback member's CPU in the fan-out benchmark, where ten
//! streams on one connection could have shared one.
//!
//! [`CoalescedWrites`] wraps a connection's byte stream. Writes go into a
//! small buffer; a flush first yields once with [`tokio::task::yield_now`],
//! which tokio defers until the worker has run every task that is ready (or
//! for a bounded number of polls), and only then writes the buffer. The
//! streams woken by the same event have queued their responses by then, and
//! the connection sends them together. An idle server pays one extra pass
//! of the scheduler per flush; nothing waits on a timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes buffered before a write drains the buffer without waiting for a
/// flush; a single write at least this large skips the buffer.
const BUFFER_LIMIT: usize = 64 * 1024;

/// The buffer's capacity kept between rounds; a larger one (after a big
/// response) is released, so an idle connection holds at most this much.
const KEPT_CAPACITY: usize = 8 * 1024;

/// A connection whose writes are buffered until a flush, and whose flushes
/// yield to the scheduler once before writing (see the module docs).
pub(crate) struct CoalescedWrites<IO> {
    io: IO,
    /// Bytes accepted from the caller and not yet written to `io`, from
    /// `written` on.
    buffer: Vec<u8>,
    written: usize,
    /// The pending yield of a flush, once it has started.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The current buffer's flush has yielded already.
    yielded: bool,
}

impl<IO> CoalescedWrites<IO> {
    /// Wraps `io`.
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            buffer: Vec::new(),
            written: 0,
            yielding: None,
            yielded: false,
        }
    }

    fn buffered(&self) -> usize {
        self.buffer.len() - self.written
    }
}

impl<IO: AsyncWrite + Unpin> CoalescedWrites<IO> {
    /// Writes the whole buffer to `io`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buffer[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.buffer.capacity() > KEPT_CAPACITY {
            self.buffer = Vec::new();
        } else {
            self.buffer.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `incoming` bytes: drains a full buffer first. `false`
    /// means the bytes are large enough to go straight to `io`.
    fn poll_room(&mut self, cx: &mut Context<'_>, incoming: usize) -> Poll<io::Result<bool>> {
        if self.buffered() + incoming > BUFFER_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(incoming < BUFFER_LIMIT))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalescedWrites<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_room(cx, buf.len()))? {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        this.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, total))? {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for buf in bufs {
            this.buffer.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered() > 0 {
            if !this.yielded {
                let yielding = this
                    .yielding
                    .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
                ready!(yielding.as_mut().poll(cx));
                this.yielding = None;
                this.yielded = true;
                // Whoever ran meanwhile may have written more; the caller
                // flushes again after writing it.
            }
            ready!(this.poll_drain(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for CoalescedWrites<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_reach_the_peer_only_when_flushed() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut conn = CoalescedWrites::new(near);
        conn.write_all(b"one ").await.unwrap();
        conn.write_all(b"two").await.unwrap();
        let mut byte = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(20), far.read(&mut byte)).await;
        assert!(early.is_err(), "nothing is written before a flush");
        conn.flush().await.unwrap();
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
    }

    #[tokio::test]
    async fn large_and_many_writes_arrive_whole_and_in_order() {
        let (near, mut far) = tokio::io::duplex(4096);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut conn = CoalescedWrites::new(near);
        let mut sent = Vec::new();
        for i in 0..2_000u32 {
            // Small writes, some past the buffer limit, one far past it.
            let len = match i {
                7 => 3 * BUFFER_LIMIT,
                _ if i % 97 == 0 => BUFFER_LIMIT - 1,
                _ => (i % 300) as usize,
            };
            let chunk: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            conn.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
            if i % 10 == 0 {
                conn.flush().await.unwrap();
            }
        }
        conn.shutdown().await.unwrap();
        drop(conn);
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn a_drained_buffer_keeps_little_capacity() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut conn = CoalescedWrites::new(near);
        conn.write_all(&vec![1u8; BUFFER_LIMIT - 10]).await.unwrap();
        conn.flush().await.unwrap();
        assert!(conn.buffer.capacity() <= KEPT_CAPACITY);
        let mut got = vec![0u8; BUFFER_LIMIT - 10];
        far.read_exact(&mut got).await.unwrap();
    }
}
