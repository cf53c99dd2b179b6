//! The WebSocket door: `GET /ws` upgrades to a session speaking the JSON protocol in text
//! messages. A client may authenticate on the upgrade (`Authorization: Bearer <jwt>`) or
//! with a `login` frame. Message size and write buffering are bounded (tungstenite's
//! defaults allow 64 MiB messages and an unbounded write buffer).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};

use super::http::{bearer, error_response};
use crate::gateway::conn::{self, Close, Conn, Door, Inbound};
use crate::gateway::Gateway;
use crate::protocol::code::ErrorCode;

/// Bytes read from a WebSocket at once; frames larger than this simply take more reads.
/// tungstenite keeps (and zero-fills) this much per connection, idle or not.
const READ_BUFFER: usize = 1024;

/// The header that declares the device class when the token comes with the upgrade.
pub const DEVICE_HEADER: &str = "x-mrc-device";

pub fn routes() -> axum::Router<Arc<Gateway>> {
    axum::Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if gw.shutdown.is_cancelled() {
        return error_response(ErrorCode::ShuttingDown, "the gateway is stopping");
    }
    let identity = match bearer(&headers) {
        Some(token) => {
            let device = headers.get(DEVICE_HEADER).and_then(|d| d.to_str().ok());
            match gw.auth.login(None, Some(token), device) {
                Ok(identity) => Some(identity),
                Err(e) => return error_response(e.code, &e.message),
            }
        }
        None => None,
    };
    let Ok(permit) = gw.connections.clone().try_acquire_owned() else {
        return error_response(ErrorCode::Unavailable, "connection limit reached");
    };
    // The transport refuses frames far beyond the protocol limit; frames between the two
    // get a `too_large` error and the connection lives on.
    let hard_limit = gw.limits.max_frame_bytes.saturating_mul(4).max(4096);
    let task = gw.tracker.token();
    // A small read buffer: tungstenite zero-fills the whole buffer (128 KiB by default)
    // before every read, and keeps it per connection (docs/PERFORMANCE.md).
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(hard_limit.saturating_mul(2))
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            let conn = Conn {
                reader: WsReader(stream),
                writer: WsWriter(sink),
                peer,
                door: Door::Ws,
                permit,
            };
            // The connection gets a task of its own, the size of `conn::serve`'s future:
            // axum's task would also keep the upgrade's state and this closure's
            // captures for the connection's whole life (docs/PERFORMANCE.md).
            gw.tracker.clone().spawn(conn::serve(gw, conn, identity));
            drop(task);
            std::future::ready(())
        })
}

struct WsReader(SplitStream<WebSocket>);

impl conn::Reader for WsReader {
    async fn next(&mut self) -> Inbound {
        match self.0.next().await {
            Some(Ok(Message::Text(text))) => Inbound::Text(text.as_str().to_owned()),
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
    async fn send(&mut self, frame: Bytes) -> anyhow::Result<()> {
        let text = Utf8Bytes::try_from(frame)?;
        self.0.send(Message::Text(text)).await?;
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
    use tokio::io::DuplexStream;
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

    /// The buffers `upgrade` sets, on a server and a client joined by an in-memory pipe.
    async fn pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = tokio::io::duplex(256 * 1024);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(512 * 1024)
            .max_message_size(Some(256 * 1024))
            .max_frame_size(Some(256 * 1024));
        let server = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (server, client)
    }

    #[tokio::test]
    async fn frames_far_larger_than_the_read_buffer_arrive_whole() {
        let (mut server, mut client) = pair().await;
        for size in [READ_BUFFER - 10, READ_BUFFER + 1, 64 * 1024, 200 * 1024] {
            let text = "x".repeat(size);
            client.send(Raw::text(text.clone())).await.unwrap();
            match server.next().await {
                Some(Ok(Raw::Text(got))) => assert_eq!(got.as_str(), text),
                other => panic!("{size} bytes: {other:?}"),
            }
        }
    }
}
