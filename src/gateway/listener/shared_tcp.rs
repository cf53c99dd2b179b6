//! A client's plain TCP socket, shared: the connection's task reads it and writes it, and
//! the session's queue may write a frame into it from the task that has the frame while
//! the connection's task waits with nothing to write ([`crate::gateway::session`]).
//! tokio's split halves share the socket: this side keeps the read half (and writes
//! through it: tokio's write readiness is the socket's), the session takes the write half.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub(crate) struct SharedTcp {
    read: OwnedReadHalf,
    /// Until the session takes it ([`SharedTcp::share`]); dropping it ends the stream
    /// towards the client.
    write: Option<OwnedWriteHalf>,
}

impl SharedTcp {
    pub(crate) fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        SharedTcp {
            read,
            write: Some(write),
        }
    }

    /// The socket's write half, for writes from other tasks (each a whole write under the
    /// session's lock, never while this side writes); once.
    pub(crate) fn share(&mut self) -> Option<OwnedWriteHalf> {
        self.write.take()
    }

    fn socket(&self) -> &TcpStream {
        self.read.as_ref()
    }

    /// Reads into `buf` once the socket is readable, taking `chunk` bytes of room only
    /// then: a connection waiting for its client holds no buffer. 0 at the end of the
    /// stream. Cancel-safe: bytes are either in `buf` or still in the socket.
    ///
    /// Through `AsyncRead`, which takes a short read as the socket drained (epoll); tokio's
    /// `try_read` does not, and each read then costs a second `recvfrom` that finds nothing.
    pub(crate) fn poll_read_when_ready(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        chunk: usize,
    ) -> Poll<io::Result<usize>> {
        ready!(self.socket().poll_read_ready(cx))?;
        buf.reserve(chunk);
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.read), cx, buf);
        if read.is_pending() && buf.is_empty() {
            // The readiness was stale: wait again without the room.
            *buf = BytesMut::new();
        }
        read
    }

    /// Writes some of `buf` once the socket is writable; what is written leaves `buf`.
    pub(crate) fn poll_write_buf(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket().poll_write_ready(cx))?;
            match self.socket().try_write(buf) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(n));
                }
                // Readiness cleared: the next poll registers for it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes all of `buf`.
    pub(crate) async fn write_all(&self, buf: &mut BytesMut) -> io::Result<()> {
        while !buf.is_empty() {
            if std::future::poll_fn(|cx| self.poll_write_buf(cx, buf)).await? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Ends the stream towards the client (a FIN), whoever holds the write half.
    pub(crate) fn shutdown(&self) -> io::Result<()> {
        rustix::net::shutdown(self.socket(), rustix::net::Shutdown::Write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (SharedTcp, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let server = SharedTcp::new(listener.accept().await.unwrap().0);
        (server, client)
    }

    #[tokio::test]
    async fn reads_take_room_only_when_readable_and_writes_from_both_sides_arrive() {
        let (mut server, mut client) = pair().await;
        let mut buf = BytesMut::new();
        let waiting = std::future::poll_fn(|cx| server.poll_read_when_ready(cx, &mut buf, 64));
        let waited = tokio::time::timeout(std::time::Duration::from_millis(30), waiting).await;
        assert!(waited.is_err());
        assert_eq!(buf.capacity(), 0);
        client.write_all(b"hello").await.unwrap();
        let n = std::future::poll_fn(|cx| server.poll_read_when_ready(cx, &mut buf, 64))
            .await
            .unwrap();
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));

        // The connection's own write, then one made through the shared socket.
        server
            .write_all(&mut BytesMut::from(&b"one,"[..]))
            .await
            .unwrap();
        let shared = server.share().unwrap();
        assert_eq!(shared.try_write(b"two").unwrap(), 3);
        server.shutdown().unwrap();
        drop(shared);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"one,two");
    }
}
