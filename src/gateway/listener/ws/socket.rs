//! One upgraded WebSocket connection as `conn::{Reader, Writer}`: frames read from a
//! buffer that an idle connection gives back, frames written into one buffer that leaves
//! in one write per flush, the close handshake.
//!
//! Why not tungstenite (as axum gives it): it keeps a read buffer per connection, idle or
//! not, and its path from socket to text message (axum's wrapper, a lock between the
//! split halves, its frame codec) was ~8k of a gateway's ~52k instructions per routed
//! message (docs/PERFORMANCE.md). The framing itself is small ([`super::frame`]).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::io::{poll_read_buf, poll_write_buf};

use super::frame::{self, Event, Violation};
use crate::gateway::conn::{self, Close, Inbound, Text};
use crate::gateway::listener::shared_tcp::SharedTcp;
use crate::gateway::session::Direct;

/// Bytes read at once from a plain TCP socket, taken only once it is readable.
const READ_CHUNK: usize = 1024;

/// Bytes kept ready for the next read on any other stream (TLS), idle or not.
const OTHER_READ: usize = 1024;

/// Frames collected before they are written without waiting for a flush; a write buffer
/// grown beyond this is given back after the flush.
pub(super) const WRITE_BUFFER: usize = 16 * 1024;

/// The transport under the WebSocket.
pub(super) enum Stream {
    /// Plain TCP: waits for readability without holding a buffer; shared for writes.
    Tcp(SharedTcp),
    /// Anything else hyper upgraded (TLS).
    Other(TokioIo<Upgraded>),
}

impl Stream {
    /// The stream under `upgraded`, and what hyper read past the request.
    pub(super) fn of(upgraded: Upgraded) -> (Stream, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (
                Stream::Tcp(SharedTcp::new(parts.io.into_inner())),
                parts.read_buf,
            ),
            Err(upgraded) => (Stream::Other(TokioIo::new(upgraded)), Bytes::new()),
        }
    }

    /// Reads some bytes into `buf`; 0 at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(tcp) => tcp.poll_read_when_ready(cx, buf, READ_CHUNK),
            Stream::Other(io) => {
                buf.reserve(OTHER_READ);
                poll_read_buf(Pin::new(io), cx, buf)
            }
        }
    }

    /// Writes all of `buf`; what is written leaves it, so a write resumes where it was.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<()>> {
        while !buf.is_empty() {
            let written = match self {
                Stream::Tcp(tcp) => ready!(tcp.poll_write_buf(cx, buf))?,
                Stream::Other(io) => ready!(poll_write_buf(Pin::new(io), cx, buf))?,
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        match self {
            Stream::Tcp(_) => Poll::Ready(Ok(())),
            Stream::Other(io) => Pin::new(io).poll_flush(cx),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(tcp) => tcp.shutdown(),
            Stream::Other(io) => io.shutdown().await,
        }
    }
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// The client's close came (and its echo is queued): nothing more is read.
    ByClient,
    /// The gateway sent its close: frames are read only to wait for the echo.
    ByUs,
}

pub(crate) struct Socket {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
    frames: frame::Reader,
    closing: Closing,
}

impl Socket {
    /// A connection over `stream`, `early` its first bytes (read past the upgrade
    /// request), taking messages up to `limit` bytes.
    pub(super) fn new(stream: Stream, early: Bytes, limit: usize) -> Self {
        Socket {
            stream,
            read: BytesMut::from(early),
            write: BytesMut::new(),
            frames: frame::Reader::new(limit),
            closing: Closing::Open,
        }
    }

    /// The next event, reading as needed; `None` at the end of the stream. A violation
    /// queues the close it calls for. Poll functions, not `async fn`s: a session polls its
    /// socket at every wake-up, and nested futures cost more to set up than the read.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            // Most polls find nothing read: a session polls its socket at every wake-up.
            let decoded = if self.read.is_empty() {
                Ok(None)
            } else {
                self.frames.next(&mut self.read)
            };
            match decoded {
                Ok(Some(event)) => {
                    if self.read.is_empty() {
                        // An idle connection keeps no read buffer.
                        self.read = BytesMut::new();
                    }
                    return Poll::Ready(Some(event));
                }
                Ok(None) => {}
                Err(Violation { code, reason }) => {
                    tracing::debug!(code, reason, "websocket protocol violation");
                    self.refuse(code, reason);
                    return Poll::Ready(None);
                }
            }
            match ready!(self.stream.poll_read(cx, &mut self.read)) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// The next inbound frame (see `conn::Reader::next`).
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        if self.closing == Closing::ByClient {
            return Poll::Ready(Inbound::Closed);
        }
        Poll::Ready(match ready!(self.poll_event(cx)) {
            Some(Event::Text(bytes)) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Inbound::Text(Text::Ws(text)),
                Err(_) => {
                    self.refuse(frame::INVALID_DATA, "text is not UTF-8");
                    Inbound::Closed
                }
            },
            Some(Event::Binary | Event::Pong) => Inbound::Other,
            Some(Event::Ping(payload)) => {
                // The connection's task flushes it: only it writes into the socket then.
                frame::write(&mut self.write, frame::PONG, &payload);
                Inbound::Ping
            }
            Some(Event::Close(payload)) => {
                // Echo the client's code (RFC 6455 §5.5.1); `finish` sends it.
                let code = &payload[..payload.len().min(2)];
                frame::write(&mut self.write, frame::CLOSE, code);
                self.closing = Closing::ByClient;
                Inbound::Closed
            }
            None => {
                self.closing = Closing::ByClient;
                Inbound::Closed
            }
        })
    }

    /// Writes whatever is queued, giving back a buffer that a burst grew.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Measured before: what is written leaves the front, and `capacity` with it.
        let grown = self.write.capacity() > WRITE_BUFFER;
        ready!(self.stream.poll_write(cx, &mut self.write))?;
        if grown {
            self.write = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    async fn write_out(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// Ends the connection over what the client sent: the close `finish` sends, and
    /// nothing more is read.
    fn refuse(&mut self, code: u16, reason: &str) {
        frame::write_close(&mut self.write, code, reason);
        self.closing = Closing::ByClient;
    }

    #[cfg(test)]
    pub(super) fn read_capacity(&self) -> usize {
        self.read.capacity()
    }

    #[cfg(test)]
    pub(super) fn write_capacity(&self) -> usize {
        self.write.capacity()
    }
}

impl conn::Reader for Socket {
    fn next(&mut self) -> impl Future<Output = Inbound> + Send {
        poll_fn(|cx| self.poll_next(cx))
    }
}

impl conn::Writer for Socket {
    async fn feed(&mut self, text: Bytes) -> anyhow::Result<()> {
        frame::write(&mut self.write, frame::TEXT, &text);
        if self.write.len() >= WRITE_BUFFER {
            self.write_out().await?;
        }
        Ok(())
    }

    fn feed_framed(&mut self, framed: &[u8]) {
        self.write.extend_from_slice(framed);
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.write_out().await?;
        Ok(())
    }

    fn direct(&mut self) -> Option<Direct> {
        match &mut self.stream {
            Stream::Tcp(tcp) => Some(Direct::new(tcp.share()?, write_text)),
            Stream::Other(_) => None,
        }
    }

    async fn ping(&mut self) -> anyhow::Result<()> {
        frame::write(&mut self.write, frame::PING, &[]);
        self.write_out().await?;
        Ok(())
    }

    async fn close(&mut self, reason: Close) {
        if self.closing == Closing::Open {
            frame::write_close(&mut self.write, reason.code(), reason.reason());
            self.closing = Closing::ByUs;
        }
        if self.write_out().await.is_err() {
            return;
        }
        // The client answers with its close, then ends the stream (callers bound this).
        while self.closing == Closing::ByUs {
            match poll_fn(|cx| self.poll_event(cx)).await {
                Some(Event::Close(_)) | None => break,
                Some(_) => {}
            }
        }
        let _ = self.stream.shutdown().await;
    }

    async fn finish(&mut self) {
        if self.write_out().await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }
}

/// A text frame as the gateway writes it, for writes from other tasks.
fn write_text(buf: &mut BytesMut, text: &[u8]) {
    frame::write(buf, frame::TEXT, text);
}
