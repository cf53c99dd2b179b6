//! The raw TCP door: the same JSON frames as WebSocket, one per line (`\n` or `\r\n`), so
//! `nc` or `socat` is a client. Lines longer than the frame limit get a `too_large` error
//! and are skipped; the connection lives on. TCP has no ping frames of its own: clients
//! send `{"op":"ping"}` to stay within the idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

use super::shared_tcp::SharedTcp;
use super::Doors;
use crate::gateway::conn::{self, Close, Conn, Door, Inbound, Text};
use crate::gateway::session::Direct;
use crate::protocol::client::{Frame, FrameError};
use crate::protocol::code::ErrorCode;

/// Accepts TCP clients until the gateway's shutdown token fires.
pub(crate) async fn serve(doors: Arc<Doors>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            () = doors.conn.shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Not ready (NATS down, no center yet): say why, close.
        if let Some(reason) = doors.gate.closed_because() {
            doors
                .conn
                .tracker
                .spawn(refuse(stream, format!("not ready: {reason}")));
            continue;
        }
        let Ok(permit) = doors.connections.clone().try_acquire_owned() else {
            doors
                .conn
                .tracker
                .spawn(refuse(stream, "connection limit reached".to_string()));
            continue;
        };
        let Ok(pending) = doors.logging_in.clone().try_acquire_owned() else {
            let refusal = refuse(stream, super::TOO_MANY_PENDING.to_string());
            doors.conn.tracker.spawn(refusal);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut conn = connection(&doors, stream, peer, permit);
        conn.pending = Some(pending);
        doors
            .conn
            .tracker
            .spawn(conn::serve(doors.conn.clone(), conn, None));
    }
}

/// A connection whose lines may be `max` bytes long.
fn lines(stream: SharedTcp, max: usize) -> Lines {
    Lines {
        stream,
        buf: BytesMut::new(),
        codec: LinesCodec::new_with_max_length(max),
        max,
        pending: BytesMut::new(),
    }
}

fn connection(
    doors: &Doors,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Conn<Lines> {
    Conn {
        io: lines(
            SharedTcp::new(stream),
            doors.conn.ops.limits.max_frame_bytes,
        ),
        peer,
        door: Door::Tcp,
        permit,
        pending: None,
    }
}

/// Writes one `unavailable` error frame saying `why`, then closes.
async fn refuse(mut stream: TcpStream, why: String) {
    let error = FrameError::new(ErrorCode::Unavailable, why);
    let mut frame = Frame::from(&error).encode().to_vec();
    frame.push(b'\n');
    let _ = stream.write_all(&frame).await;
    let _ = stream.shutdown().await;
}

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 4096;

/// Bytes of fed lines collected before they are written without waiting for `flush`;
/// a larger buffer is given back once written.
const WRITE_BUFFER: usize = 4096;

/// Lines from and to the socket.
///
/// Reading: the codec is driven by hand (not through `FramedRead`, which ends the stream
/// after any error) so an over-long line is skipped, not fatal. An idle connection holds
/// no read buffer: it waits until the socket is readable, and a buffer emptied of whole
/// lines is given back. Writing: fed lines are collected and written by one `flush`.
struct Lines {
    stream: SharedTcp,
    buf: BytesMut,
    codec: LinesCodec,
    max: usize,
    pending: BytesMut,
}

impl conn::Reader for Lines {
    async fn next(&mut self) -> Inbound {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(line)) if line.trim().is_empty() => return Inbound::Other,
                Ok(Some(line)) => return Inbound::Text(Text::Line(line)),
                Ok(None) if self.buf.is_empty() => self.buf = BytesMut::new(),
                Ok(None) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => {
                    return Inbound::TooLarge(self.max + 1)
                }
                Err(LinesCodecError::Io(_)) => return Inbound::Closed,
            }
            let read = std::future::poll_fn(|cx| {
                self.stream
                    .poll_read_when_ready(cx, &mut self.buf, READ_CHUNK)
            });
            match read.await {
                Ok(0) => {
                    return match self.codec.decode_eof(&mut self.buf) {
                        Ok(Some(line)) if !line.trim().is_empty() => {
                            Inbound::Text(Text::Line(line))
                        }
                        _ => Inbound::Closed,
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "tcp read failed");
                    return Inbound::Closed;
                }
            }
        }
    }
}

impl Lines {
    /// Writes what is pending and gives back a buffer a burst grew. Cancel-safe: what was
    /// written is gone from `pending`, the rest stays.
    async fn write_pending(&mut self) -> std::io::Result<()> {
        // Measured before: what is written leaves the front, and `capacity` with it.
        let grown = self.pending.capacity() > WRITE_BUFFER;
        self.stream.write_all(&mut self.pending).await?;
        if grown {
            self.pending = BytesMut::new();
        }
        Ok(())
    }
}

impl conn::Writer for Lines {
    async fn feed(&mut self, frame: Bytes) -> anyhow::Result<()> {
        self.pending.reserve(frame.len() + 1);
        self.pending.put(frame);
        self.pending.put_u8(b'\n');
        if self.pending.len() >= WRITE_BUFFER {
            self.write_pending().await?;
        }
        Ok(())
    }

    fn feed_framed(&mut self, framed: &[u8]) {
        self.pending.extend_from_slice(framed);
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.write_pending().await?;
        Ok(())
    }

    fn direct(&mut self) -> Option<Direct> {
        Some(Direct::new(self.stream.share()?, write_line))
    }

    async fn ping(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn close(&mut self, _reason: Close) {
        let _ = self.stream.shutdown();
    }

    async fn finish(&mut self) {
        let _ = self.stream.shutdown();
    }
}

/// A line as the gateway writes it, for writes from other tasks.
fn write_line(buf: &mut BytesMut, text: &[u8]) {
    buf.put_slice(text);
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::gateway::conn::{Reader as _, Writer as _};

    async fn pair(max: usize) -> (Lines, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let accepted = listener.accept().await.unwrap().0;
        (lines(SharedTcp::new(accepted), max), client)
    }

    #[tokio::test]
    async fn lines_are_read_and_a_waiting_reader_holds_no_buffer() {
        let (mut reader, mut client) = pair(64).await;
        client
            .write_all(b"{\"op\":\"ping\"}\r\n\n{\"op\":")
            .await
            .unwrap();
        assert!(matches!(reader.next().await, Inbound::Text(t) if &*t == r#"{"op":"ping"}"#));
        assert!(matches!(reader.next().await, Inbound::Other));
        // Half a line stays buffered until the rest comes.
        let waiting = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
        assert!(waiting.is_err());
        assert!(!reader.buf.is_empty());
        client.write_all(b"\"ping\"}\n").await.unwrap();
        assert!(matches!(reader.next().await, Inbound::Text(t) if &*t == r#"{"op":"ping"}"#));
        // Nothing pending: an idle connection gives its read buffer back.
        let waiting = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
        assert!(waiting.is_err());
        assert_eq!(reader.buf.capacity(), 0);
        // An over-long line is skipped; the connection lives on.
        client.write_all(&[b'x'; 100]).await.unwrap();
        client.write_all(b"\nok\n").await.unwrap();
        assert!(matches!(reader.next().await, Inbound::TooLarge(65)));
        assert!(matches!(reader.next().await, Inbound::Text(t) if &*t == "ok"));
        drop(client);
        assert!(matches!(reader.next().await, Inbound::Closed));
    }

    #[tokio::test]
    async fn fed_lines_leave_at_the_flush_and_a_large_buffer_is_given_back() {
        let (mut writer, mut client) = pair(64).await;
        for frame in ["a", "b", "c"] {
            writer
                .feed(Bytes::from_static(frame.as_bytes()))
                .await
                .unwrap();
        }
        assert_eq!(writer.pending.as_ref(), b"a\nb\nc\n");
        writer.flush().await.unwrap();
        assert!(writer.pending.is_empty());
        let big = Bytes::from(vec![b'z'; 3 * WRITE_BUFFER]);
        writer.feed(big).await.unwrap();
        writer.flush().await.unwrap();
        // The grown buffer is gone: the next line does not take it back up.
        writer.feed(Bytes::new()).await.unwrap();
        assert!(writer.pending.capacity() < WRITE_BUFFER);
        writer.flush().await.unwrap();
        let mut got = vec![0; 6 + 3 * WRITE_BUFFER + 2];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..6], b"a\nb\nc\n");
        assert!(got[6..got.len() - 2].iter().all(|&b| b == b'z'));
        assert_eq!(&got[got.len() - 2..], b"\n\n");
    }
}
