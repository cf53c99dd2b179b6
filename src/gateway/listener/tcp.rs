//! The raw TCP door: the same JSON frames as WebSocket, one per line (`\n` or `\r\n`), so
//! `nc` or `socat` is a client. Lines longer than the frame limit get a `too_large` error
//! and are skipped; the connection lives on. TCP has no ping frames of its own: clients
//! send `{"op":"ping"}` to stay within the idle timeout.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

use crate::gateway::conn::{self, Close, Door, Inbound};
use crate::gateway::Gateway;
use crate::protocol::client::{Frame, FrameError};
use crate::protocol::code::ErrorCode;

/// Accepts TCP clients until the gateway's shutdown token fires.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            () = gw.shutdown.cancelled() => return Ok(()),
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
        let Ok(permit) = gw.connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let task = gw.tracker.token();
        let gw = gw.clone();
        tokio::spawn(async move {
            let (reader, writer) = connection(&gw, stream);
            conn::serve(gw, reader, writer, peer, None, Door::Tcp).await;
            drop((task, permit));
        });
    }
}

fn connection(gw: &Gateway, stream: TcpStream) -> (TcpReader, TcpWriter) {
    let (read, write) = stream.into_split();
    let max = gw.limits.max_frame_bytes;
    let reader = TcpReader {
        read,
        buf: BytesMut::with_capacity(4096),
        codec: LinesCodec::new_with_max_length(max),
        max,
    };
    (reader, TcpWriter(write))
}

async fn refuse(mut stream: TcpStream) {
    let error = FrameError::new(ErrorCode::Unavailable, "connection limit reached");
    let mut frame = Frame::from(&error).encode().to_vec();
    frame.push(b'\n');
    let _ = stream.write_all(&frame).await;
    let _ = stream.shutdown().await;
}

/// Lines from the socket. The codec is driven by hand (not through `FramedRead`, which
/// ends the stream after any error) so an over-long line is skipped, not fatal.
struct TcpReader {
    read: OwnedReadHalf,
    buf: BytesMut,
    codec: LinesCodec,
    max: usize,
}

impl conn::Reader for TcpReader {
    async fn next(&mut self) -> Inbound {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(line)) if line.trim().is_empty() => return Inbound::Other,
                Ok(Some(line)) => return Inbound::Text(line),
                Ok(None) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => {
                    return Inbound::TooLarge(self.max + 1)
                }
                Err(LinesCodecError::Io(_)) => return Inbound::Closed,
            }
            // Cancel-safe: bytes are either in `buf` or still in the socket.
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return match self.codec.decode_eof(&mut self.buf) {
                        Ok(Some(line)) if !line.trim().is_empty() => Inbound::Text(line),
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

struct TcpWriter(OwnedWriteHalf);

impl conn::Writer for TcpWriter {
    async fn send(&mut self, frame: Bytes) -> anyhow::Result<()> {
        let mut line = BytesMut::with_capacity(frame.len() + 1);
        line.put(frame);
        line.put_u8(b'\n');
        self.0.write_all(&line).await?;
        Ok(())
    }

    async fn ping(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn close(&mut self, _reason: Close) {
        let _ = self.0.shutdown().await;
    }

    async fn finish(&mut self) {
        let _ = self.0.shutdown().await;
    }
}
