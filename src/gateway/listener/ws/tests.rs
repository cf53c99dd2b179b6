use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message as Raw;
use tokio_tungstenite::WebSocketStream;

use super::frame::{self, tests::client_frame};
use super::socket::WRITE_BUFFER;
use super::*;
use crate::gateway::conn::{Close, Inbound, Reader as _, Writer as _};
use crate::gateway::listener::shared_tcp::SharedTcp;

/// The size of the future a function returns.
fn future_size<A, B, C, Fut>(_: fn(A, B, C) -> Fut) -> usize {
    std::mem::size_of::<Fut>()
}

/// Each WebSocket connection's task is allocated with the size of this future for the
/// connection's whole life (docs/PERFORMANCE.md, idle memory). The socket (136 bytes) is
/// all of the connection's WebSocket state that an idle session keeps.
#[test]
fn a_connection_task_stays_small() {
    let size = future_size(conn::serve::<Socket>);
    assert!(size <= 760, "conn::serve future of {size} bytes");
}

#[test]
fn the_accept_key_is_rfc_6455s_and_bad_upgrades_are_refused() {
    let request = |pairs: &[(&'static str, &'static str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    };
    let good = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let accept = accept_key(&request(&good)).unwrap();
    assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    for broken in 0..good.len() {
        let mut pairs = good.to_vec();
        pairs.remove(broken);
        assert!(
            accept_key(&request(&pairs)).is_err(),
            "without {}",
            good[broken].0
        );
    }
    let mut old = good;
    old[2].1 = "8";
    assert!(accept_key(&request(&old)).is_err());
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    (accepted.unwrap().0, client.unwrap())
}

/// A gateway's socket taking messages up to `limit` bytes, and a tungstenite client.
async fn pair(limit: usize) -> (Socket, WebSocketStream<TcpStream>) {
    let (server, client) = tcp_pair().await;
    let socket = Socket::new(Stream::Tcp(SharedTcp::new(server)), Bytes::new(), limit);
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    (socket, client)
}

fn text_of(inbound: Inbound) -> String {
    match inbound {
        Inbound::Text(text) => text.to_string(),
        other => panic!("not a text: {other:?}"),
    }
}

#[tokio::test]
async fn messages_of_any_size_arrive_whole_and_an_idle_socket_keeps_no_read_buffer() {
    let (mut server, mut client) = pair(1 << 20).await;
    for size in [10, 4096 - 10, 4096 + 1, 64 * 1024, 200 * 1024] {
        let text = "x".repeat(size);
        client.send(Raw::text(text.clone())).await.unwrap();
        assert_eq!(text_of(server.next().await), text, "{size} bytes");
        assert_eq!(server.read_capacity(), 0, "after {size} bytes");
    }
}

#[tokio::test]
async fn what_hyper_read_past_the_upgrade_is_read_first() {
    let (stream, mut client) = tcp_pair().await;
    let early = Bytes::from(client_frame(0x80 | frame::TEXT, b"first"));
    let mut server = Socket::new(Stream::Tcp(SharedTcp::new(stream)), early, 100);
    client
        .write_all(&client_frame(0x80 | frame::TEXT, b"second"))
        .await
        .unwrap();
    assert_eq!(text_of(server.next().await), "first");
    assert_eq!(text_of(server.next().await), "second");
}

#[tokio::test]
async fn fed_frames_leave_together_at_the_flush() {
    let (mut server, mut client) = pair(100).await;
    for i in 0..30 {
        server
            .feed(Bytes::from(format!("{i:0>100}")))
            .await
            .unwrap();
    }
    let early = tokio::time::timeout(Duration::from_millis(50), client.next()).await;
    assert!(early.is_err(), "nothing leaves before the flush");
    server.flush().await.unwrap();
    for i in 0..30 {
        let got = client.next().await.unwrap().unwrap();
        assert_eq!(got, Raw::text(format!("{i:0>100}")));
    }
    // A burst beyond the write buffer leaves as it grows; the buffer is given back.
    for _ in 0..40 {
        server.feed(Bytes::from("y".repeat(1000))).await.unwrap();
    }
    server.flush().await.unwrap();
    server.feed(Bytes::from_static(b"z")).await.unwrap();
    assert!(
        server.write_capacity() < WRITE_BUFFER,
        "the grown buffer is given back"
    );
    server.flush().await.unwrap();
    for _ in 0..40 {
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Raw::text("y".repeat(1000))
        );
    }
    assert_eq!(client.next().await.unwrap().unwrap(), Raw::text("z"));
}

#[tokio::test]
async fn a_ping_is_answered_and_the_clients_close_echoed() {
    let (mut server, mut client) = pair(100).await;
    client
        .send(Raw::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    assert!(matches!(server.next().await, Inbound::Ping));
    server.flush().await.unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Raw::Pong(Bytes::from_static(b"hi"))
    );
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    client.send(Raw::Close(Some(close))).await.unwrap();
    assert!(matches!(server.next().await, Inbound::Closed));
    assert!(matches!(server.next().await, Inbound::Closed));
    server.finish().await;
    match client.next().await {
        Some(Ok(Raw::Close(Some(echo)))) => assert_eq!(echo.code, CloseCode::Normal),
        other => panic!("no echo: {other:?}"),
    }
}

#[tokio::test]
async fn the_gateways_close_carries_its_code_and_reason() {
    let (mut server, mut client) = pair(100).await;
    let closing = tokio::spawn(async move { server.close(Close::Idle).await });
    match client.next().await {
        Some(Ok(Raw::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "idle");
        }
        other => panic!("no close: {other:?}"),
    }
    // tungstenite answers the close; the gateway's side then ends.
    assert!(client.next().await.is_none());
    tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .unwrap()
        .unwrap();
}

/// Sends `bytes` raw and returns the close code the gateway answers with.
async fn close_code_for(bytes: &[u8], limit: usize) -> u16 {
    let (stream, mut client) = tcp_pair().await;
    let mut server = Socket::new(Stream::Tcp(SharedTcp::new(stream)), Bytes::new(), limit);
    client.write_all(bytes).await.unwrap();
    assert!(matches!(server.next().await, Inbound::Closed));
    server.finish().await;
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer[0], 0x80 | frame::CLOSE, "{answer:?}");
    u16::from_be_bytes([answer[2], answer[3]])
}

#[tokio::test]
async fn broken_input_is_closed_with_the_code_it_calls_for() {
    let mut unmasked = client_frame(0x80 | frame::TEXT, b"x");
    unmasked[1] &= 0x7F;
    assert_eq!(close_code_for(&unmasked, 100).await, 1002);
    let not_utf8 = client_frame(0x80 | frame::TEXT, &[0xC3, 0x28]);
    assert_eq!(close_code_for(&not_utf8, 100).await, 1007);
    let big = client_frame(0x80 | frame::TEXT, &[b'a'; 101]);
    assert_eq!(close_code_for(&big, 100).await, 1009);
}
