//! Hostile or careless clients get error frames with stable codes; the connection and the
//! gateway stay up.

use mrc::protocol::code::{ErrorCode, Outcome};

use crate::support::client::{connect, expect_op, login, send};
use crate::support::cluster::Cluster;

async fn expect_error(ws: &mut mrc::client::WsClient, code: ErrorCode) -> Option<String> {
    let frame = expect_op(ws, "error").await.frame;
    assert_eq!(frame.code, Some(code), "{frame:?}");
    assert!(frame.message.is_some_and(|m| !m.is_empty()));
    frame.id
}

#[tokio::test]
async fn bad_frames_before_login_get_errors_and_the_connection_survives() {
    let cluster = Cluster::start(1, 1);
    let mut ws = connect(cluster.ws(0)).await;
    let cases = [
        ("{", ErrorCode::BadJson),
        ("[]", ErrorCode::BadFrame),
        (r#"{"op":"dance"}"#, ErrorCode::UnknownOp),
        (r#"{"op":"login"}"#, ErrorCode::BadFrame),
        (r#"{"op":"login","user":""}"#, ErrorCode::BadId),
        (r#"{"op":"login","user":"a\u0000b"}"#, ErrorCode::BadId),
        (
            r#"{"op":"send","to":["x"],"body":1}"#,
            ErrorCode::NotLoggedIn,
        ),
    ];
    for (frame, code) in cases {
        ws.send_text(frame).await.unwrap();
        expect_error(&mut ws, code).await;
    }
    ws.send_text(r#"{"op":"ping","id":"p1"}"#).await.unwrap();
    assert_eq!(
        expect_op(&mut ws, "pong").await.frame.id.as_deref(),
        Some("p1")
    );
    ws.login("finally").await.unwrap();
}

#[tokio::test]
async fn bad_frames_after_login_get_errors_and_the_session_survives() {
    let cluster = Cluster::start(1, 1);
    let mut ws = login(cluster.ws(0), "alice").await;
    let too_many: Vec<String> = (0..1001).map(|i| format!("\"u{i}\"")).collect();
    let huge_body = format!("\"{}\"", "x".repeat(70 * 1024));
    let cases = [
        ("not json at all".to_string(), ErrorCode::BadJson, None),
        (
            r#"{"op":"login","user":"bob"}"#.to_string(),
            ErrorCode::AlreadyLoggedIn,
            None,
        ),
        (
            r#"{"op":"send","id":"s1","to":["x"]}"#.to_string(),
            ErrorCode::BadFrame,
            Some("s1"),
        ),
        (
            r#"{"op":"send","id":"s2","to":[],"body":1}"#.to_string(),
            ErrorCode::BadFrame,
            Some("s2"),
        ),
        (
            format!(
                r#"{{"op":"send","id":"s3","to":[{}],"body":1}}"#,
                too_many.join(",")
            ),
            ErrorCode::TooManyReceivers,
            Some("s3"),
        ),
        (
            format!(r#"{{"op":"send","id":"s4","to":["x"],"body":{huge_body}}}"#),
            ErrorCode::TooLarge,
            None,
        ),
        (
            format!(
                r#"{{"op":"send","id":"{}","to":["x"],"body":1}}"#,
                "i".repeat(200)
            ),
            ErrorCode::BadId,
            None,
        ),
    ];
    for (frame, code, id) in cases {
        ws.send_text(&frame).await.unwrap();
        let got = expect_error(&mut ws, code).await;
        if let Some(id) = id {
            assert_eq!(got.as_deref(), Some(id));
        }
    }
    // Still logged in and routing.
    let (report, _) = send(&mut ws, &["alice"], "self", "1").await;
    assert_eq!(report["alice"], Outcome::Delivered);
}

#[tokio::test]
async fn a_client_that_never_logs_in_is_disconnected() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = vec!["--login-timeout-ms".into(), "300".into()];
    cluster.start_gateway("g0");
    let mut ws = connect(cluster.ws(0)).await;
    expect_error(&mut ws, ErrorCode::NotLoggedIn).await;
    let bye = expect_op(&mut ws, "bye").await;
    assert_eq!(bye.frame.reason.as_deref(), Some("login_timeout"));
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        next.is_none(),
        "expected the connection to close, got {next:?}"
    );
}
