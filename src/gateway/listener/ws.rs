//! The WebSocket door: `GET /ws` upgrades to a session speaking the JSON protocol in text
//! messages. A client may authenticate on the upgrade (`Authorization: Bearer <jwt>`) or
//! with a `login` frame. Message size and write buffering are bounded (tungstenite's
//! defaults allow 64 MiB messages and an unbounded write buffer).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::header::ORIGIN;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};

use super::http::{bearer, error_response};
use super::{Doors, TOO_MANY_PENDING};
use crate::gateway::conn::{self, Close, Conn, Door, Inbound, Text};
use crate::protocol::code::ErrorCode;

/// Bytes read from a WebSocket at once; frames larger than this simply take more reads.
/// tungstenite keeps (and zero-fills) this much per connection, idle or not.
const READ_BUFFER: usize = 1024;

/// Bytes of written frames tungstenite collects before writing them to the socket; a
/// flush writes whatever is collected. A burst of frames to one client leaves in one
/// write; what a connection keeps afterwards is at most this plus its largest frame.
const WRITE_BUFFER: usize = 4 * 1024;

/// The header that declares the device class when the token comes with the upgrade.
pub(crate) const DEVICE_HEADER: &str = "x-mrc-device";

pub(crate) fn routes() -> axum::Router<Arc<Doors>> {
    axum::Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(doors): State<Arc<Doors>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if doors.conn.shutdown.is_cancelled() {
        return error_response(ErrorCode::ShuttingDown, "the gateway is stopping");
    }
    if !doors.origins.allows(headers.get(ORIGIN)) {
        let message = "pages of this origin may not connect (--allowed-origins)";
        return error_response(ErrorCode::Forbidden, message);
    }
    let identity = match bearer(&headers) {
        Some(token) => {
            let device = headers.get(DEVICE_HEADER).and_then(|d| d.to_str().ok());
            match doors.conn.auth.login(None, Some(token), device) {
                Ok(identity) => Some(identity),
                Err(e) => return error_response(e.code, &e.message),
            }
        }
        None => None,
    };
    let Ok(permit) = doors.connections.clone().try_acquire_owned() else {
        return error_response(ErrorCode::Unavailable, "connection limit reached");
    };
    let pending = match &identity {
        Some(_) => None,
        None => match doors.logging_in.clone().try_acquire_owned() {
            Ok(pending) => Some(pending),
            Err(_) => return error_response(ErrorCode::Unavailable, TOO_MANY_PENDING),
        },
    };
    // The transport refuses frames far beyond the protocol limit; frames between the two
    // get a `too_large` error and the connection lives on.
    let hard_limit = doors
        .conn
        .ops
        .limits
        .max_frame_bytes
        .saturating_mul(4)
        .max(4096);
    let task = doors.conn.tracker.token();
    // A small read buffer: tungstenite zero-fills the whole buffer (128 KiB by default)
    // before every read, and keeps it per connection (docs/PERFORMANCE.md).
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(hard_limit.saturating_mul(2))
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            let conn = Conn {
                reader: WsReader(stream),
                writer: WsWriter(sink),
                peer,
                door: Door::Ws,
                permit,
                pending,
            };
            // The connection gets a task of its own, the size of `conn::serve`'s future:
            // axum's task would also keep the upgrade's state and this closure's
            // captures for the connection's whole life (docs/PERFORMANCE.md).
            doors
                .conn
                .tracker
                .clone()
                .spawn(conn::serve(doors.conn.clone(), conn, identity));
            drop(task);
            std::future::ready(())
        })
}

struct WsReader(SplitStream<WebSocket>);

impl conn::Reader for WsReader {
    async fn next(&mut self) -> Inbound {
        match self.0.next().await {
            Some(Ok(Message::Text(text))) => Inbound::Text(Text::Ws(text)),
            Some(Ok(Message::Close(_))) | None => Inbound::Closed,
            Some(Ok(_)) => Inbound::Other,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                Inbound::Closed
            }
        }
    }
}

struct WsWriter(SplitSink<WebSocket, Message>);

impl conn::Writer for WsWriter {
    async fn feed(&mut self, frame: Bytes) -> anyhow::Result<()> {
        let text = Utf8Bytes::try_from(frame)?;
        self.0.feed(Message::Text(text)).await?;
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.0.flush().await?;
        Ok(())
    }

    async fn ping(&mut self) -> anyhow::Result<()> {
        self.0.send(Message::Ping(Bytes::new())).await?;
        Ok(())
    }

    async fn close(&mut self, reason: Close) {
        let frame = CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.reason()),
        };
        let _ = self.0.send(Message::Close(Some(frame))).await;
        let _ = self.0.close().await;
    }

    async fn finish(&mut self) {
        // Flushes the close reply tungstenite queued when the client's close arrived.
        let _ = self.0.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message as Raw;
    use tokio_tungstenite::WebSocketStream;

    use super::*;

    /// The size of the future a function returns.
    fn future_size<A, B, C, Fut>(_: fn(A, B, C) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Each WebSocket connection's task is allocated with the size of this future for the
    /// connection's whole life (3.6 KB inside axum's upgrade task before logging in,
    /// registering, handling a frame and ending were boxed; 864 bytes after):
    /// docs/PERFORMANCE.md, idle memory.
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(conn::serve::<WsReader, WsWriter>);
        assert!(size <= 1024, "conn::serve future of {size} bytes");
    }

    /// A stream that counts the writes reaching it.
    struct Counted(DuplexStream, Arc<AtomicUsize>);

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// The buffers `upgrade` sets, on a server and a client joined by an in-memory pipe.
    async fn pair() -> (
        WebSocketStream<Counted>,
        WebSocketStream<DuplexStream>,
        Arc<AtomicUsize>,
    ) {
        let (server, client) = tokio::io::duplex(256 * 1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(512 * 1024)
            .max_message_size(Some(256 * 1024))
            .max_frame_size(Some(256 * 1024));
        let server = Counted(server, writes.clone());
        let server = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (server, client, writes)
    }

    #[tokio::test]
    async fn frames_far_larger_than_the_read_buffer_arrive_whole() {
        let (mut server, mut client, _) = pair().await;
        for size in [READ_BUFFER - 10, READ_BUFFER + 1, 64 * 1024, 200 * 1024] {
            let text = "x".repeat(size);
            client.send(Raw::text(text.clone())).await.unwrap();
            match server.next().await {
                Some(Ok(Raw::Text(got))) => assert_eq!(got.as_str(), text),
                other => panic!("{size} bytes: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_burst_of_frames_is_one_write_when_flushed() {
        let (mut server, mut client, writes) = pair().await;
        // 30 frames of ~100 bytes: under the write buffer, so nothing leaves before the
        // flush, then everything leaves in one write.
        for i in 0..30 {
            server.feed(Raw::text(format!("{i:0>100}"))).await.unwrap();
        }
        assert_eq!(writes.load(Ordering::Relaxed), 0);
        server.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        for i in 0..30 {
            match client.next().await {
                Some(Ok(Raw::Text(got))) => assert_eq!(got.as_str(), format!("{i:0>100}")),
                other => panic!("frame {i}: {other:?}"),
            }
        }
        // A burst larger than the buffer leaves as the buffer fills, and the rest at the flush.
        for _ in 0..30 {
            server.feed(Raw::text("y".repeat(1000))).await.unwrap();
        }
        server.flush().await.unwrap();
        let total = writes.load(Ordering::Relaxed) - 1;
        assert!((6..=8).contains(&total), "{total} writes for 30 KB");
    }
}
