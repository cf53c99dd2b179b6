//! One upgraded WebSocket connection as `conn::{Reader, Writer}`: frames read from a
//! buffer that an idle connection gives back, frames written into one buffer that leaves
//! in one write per flush, the close handshake.
//!
//! Why not tungstenite (as axum gives it): it keeps a read buffer per connection, idle or
//! not, and its path from socket to text message (axum's wrapper, a lock between the
//! split halves, its frame codec) was ~8k of a gateway's ~52k instructions per routed
//! message (docs/PERFORMANCE.md). The framing itself is small ([`super::frame`]).

use std::io;

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::frame::{self, Event, Violation};
use crate::gateway::conn::{self, Close, Inbound, Text};
use crate::gateway::listener::tcp::read_when_ready;

/// Bytes read at once from a plain TCP socket, taken only once it is readable.
const READ_CHUNK: usize = 1024;

/// Bytes kept ready for the next read on any other stream (TLS), idle or not.
const OTHER_READ: usize = 1024;

/// Frames collected before they are written without waiting for a flush; a write buffer
/// grown beyond this is given back after the flush.
pub(super) const WRITE_BUFFER: usize = 16 * 1024;

/// The transport under the WebSocket.
pub(super) enum Stream {
    /// Plain TCP: waits for readability without holding a buffer.
    Tcp(TcpStream),
    /// Anything else hyper upgraded (TLS).
    Other(TokioIo<Upgraded>),
}

impl Stream {
    /// The stream under `upgraded`, and what hyper read past the request.
    pub(super) fn of(upgraded: Upgraded) -> (Stream, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Stream::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (Stream::Other(TokioIo::new(upgraded)), Bytes::new()),
        }
    }

    /// Reads some bytes into `buf`; 0 at the end of the stream. Cancel-safe.
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(tcp) => read_when_ready(tcp, buf, READ_CHUNK).await,
            Stream::Other(io) => {
                buf.reserve(OTHER_READ);
                io.read_buf(buf).await
            }
        }
    }

    /// Writes all of `buf` (what is written leaves it, so a cancelled write resumes).
    async fn write(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            Stream::Tcp(tcp) => tcp.write_all_buf(buf).await,
            Stream::Other(io) => {
                io.write_all_buf(buf).await?;
                io.flush().await
            }
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(tcp) => tcp.shutdown().await,
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
    /// queues the close it calls for.
    async fn event(&mut self) -> Option<Event> {
        loop {
            match self.frames.next(&mut self.read) {
                Ok(Some(event)) => {
                    if self.read.is_empty() {
                        // An idle connection keeps no read buffer.
                        self.read = BytesMut::new();
                    }
                    return Some(event);
                }
                Ok(None) => {}
                Err(Violation { code, reason }) => {
                    tracing::debug!(code, reason, "websocket protocol violation");
                    self.queue_close(code, reason);
                    self.closing = Closing::ByClient;
                    return None;
                }
            }
            match self.stream.read(&mut self.read).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    return None;
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn read_capacity(&self) -> usize {
        self.read.capacity()
    }

    #[cfg(test)]
    pub(super) fn write_capacity(&self) -> usize {
        self.write.capacity()
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        frame::write_close(&mut self.write, code, reason);
    }

    /// Writes whatever is queued, giving back a buffer that a burst grew.
    async fn write_out(&mut self) -> io::Result<()> {
        // Measured before: what is written leaves the front, and `capacity` with it.
        let grown = self.write.capacity() > WRITE_BUFFER;
        self.stream.write(&mut self.write).await?;
        if grown {
            self.write = BytesMut::new();
        }
        Ok(())
    }
}

impl conn::Reader for Socket {
    async fn next(&mut self) -> Inbound {
        if self.closing == Closing::ByClient {
            return Inbound::Closed;
        }
        let event = self.event().await;
        match event {
            Some(Event::Text(bytes)) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Inbound::Text(Text::Ws(text)),
                Err(_) => {
                    self.queue_close(frame::INVALID_DATA, "text is not UTF-8");
                    self.closing = Closing::ByClient;
                    Inbound::Closed
                }
            },
            Some(Event::Binary | Event::Pong) => Inbound::Other,
            Some(Event::Ping(payload)) => {
                frame::write(&mut self.write, frame::PONG, &payload);
                match self.write_out().await {
                    Ok(()) => Inbound::Other,
                    Err(_) => Inbound::Closed,
                }
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
        }
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

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.write_out().await?;
        Ok(())
    }

    async fn ping(&mut self) -> anyhow::Result<()> {
        frame::write(&mut self.write, frame::PING, &[]);
        self.write_out().await?;
        Ok(())
    }

    async fn close(&mut self, reason: Close) {
        if self.closing == Closing::Open {
            self.queue_close(reason.code(), reason.reason());
            self.closing = Closing::ByUs;
        }
        if self.write_out().await.is_err() {
            return;
        }
        // The client answers with its close, then ends the stream (callers bound this).
        while self.closing == Closing::ByUs {
            match self.event().await {
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
