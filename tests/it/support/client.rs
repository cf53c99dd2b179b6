//! WebSocket clients for tests, built on the library's reference client.

use std::collections::BTreeMap;
use std::time::Duration;

use mrc::client::{Received, WsClient};
use mrc::protocol::code::Outcome;
use serde_json::value::RawValue;

pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn connect(url: &str) -> WsClient {
    WsClient::connect(url)
        .await
        .expect("connecting to a gateway")
}

/// A client logged in as `user`.
pub async fn login(url: &str, user: &str) -> WsClient {
    let mut ws = connect(url).await;
    ws.login(user)
        .await
        .unwrap_or_else(|e| panic!("login of {user:?}: {e:#}"));
    ws
}

/// The next frame; panics when none comes in time or the connection closes.
pub async fn recv(ws: &mut WsClient) -> Received {
    match tokio::time::timeout(FRAME_TIMEOUT, ws.next()).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => panic!("the gateway closed the connection"),
        Ok(Err(e)) => panic!("reading a frame: {e:#}"),
        Err(_) => panic!("no frame within {FRAME_TIMEOUT:?}"),
    }
}

/// The next frame, which must have op `op`.
pub async fn expect_op(ws: &mut WsClient, op: &str) -> Received {
    let received = recv(ws).await;
    assert_eq!(
        received.frame.op, op,
        "expected a `{op}` frame, got {}",
        received.text
    );
    received
}

/// Asserts that nothing arrives for `quiet`.
pub async fn expect_silence(ws: &mut WsClient, quiet: Duration) {
    if let Ok(frame) = tokio::time::timeout(quiet, ws.next()).await {
        panic!("expected silence, got {frame:?}");
    }
}

pub fn body(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).expect("test bodies are valid JSON")
}

/// Sends `body` to `to` with id `id` and returns the report's per-receiver outcomes.
/// Frames other than the report that arrive meanwhile are returned too.
pub async fn send(
    ws: &mut WsClient,
    to: &[&str],
    id: &str,
    json: &str,
) -> (BTreeMap<String, Outcome>, Vec<Received>) {
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    ws.send(&to, Some(id), &body(json)).await.expect("sending");
    let mut others = Vec::new();
    loop {
        let received = recv(ws).await;
        if received.frame.op == "report" && received.frame.id.as_deref() == Some(id) {
            return (
                received.frame.status.expect("a report has a status"),
                others,
            );
        }
        others.push(received);
    }
}

/// The outcomes map of a report, from literal pairs.
pub fn outcomes(pairs: &[(&str, Outcome)]) -> BTreeMap<String, Outcome> {
    pairs.iter().map(|(u, o)| (u.to_string(), *o)).collect()
}

/// Sends a frame that carries `"id"` and returns the `result` or `error` frame with that
/// id (other frames that arrive meanwhile are skipped).
pub async fn call(ws: &mut WsClient, frame: serde_json::Value) -> Received {
    let id = frame["id"].as_str().expect("calls carry an id").to_string();
    ws.send_text(&frame.to_string()).await.expect("sending");
    loop {
        let received = recv(ws).await;
        let answer = matches!(received.frame.op.as_str(), "result" | "error" | "report");
        if answer && received.frame.id.as_deref() == Some(id.as_str()) {
            return received;
        }
    }
}

/// Like [`call`], and the answer must not be an error.
pub async fn call_ok(ws: &mut WsClient, frame: serde_json::Value) -> Received {
    let received = call(ws, frame).await;
    assert_ne!(received.frame.op, "error", "{}", received.text);
    received
}
