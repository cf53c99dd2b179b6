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

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Random bytes, random JSON-ish text, or a mangled valid payload.
    fn payload(&mut self, valid: &[&str]) -> Vec<u8> {
        let len = (self.next() % 300) as usize;
        match self.next() % 3 {
            0 => (0..len).map(|_| self.next() as u8).collect(),
            1 => {
                let alphabet = br#"{}[]":,.0123456789abc-_ \nnulltruefalse"#;
                (0..len)
                    .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                    .collect()
            }
            _ => {
                let mut bytes = valid[(self.next() % valid.len() as u64) as usize]
                    .as_bytes()
                    .to_vec();
                for _ in 0..(self.next() % 4) {
                    let i = (self.next() % bytes.len() as u64) as usize;
                    bytes[i] = self.next() as u8;
                }
                bytes
            }
        }
    }
}

#[tokio::test]
async fn random_payloads_on_every_subject_and_door_never_take_a_process_down() {
    let mut cluster = Cluster::start(2, 2);
    let nats = cluster.client().await;
    let valid = [
        r#"{"to":["alice"],"body":"hi"}"#,
        r#"{"user":"alice","session":"s1","gateway":"g0"}"#,
        r#"{"users":["alice","bob"]}"#,
        r#"{"gateway":"g9"}"#,
        r#"{"id":"x","to":["alice"],"rcpt":[0,7],"ts":1,"body":1}"#,
        // A compact deliver request: id "x", no receivers, body 1 (PROTOCOL.md 3.5).
        "\0\x01\0\x01\0\0\0\0\0\0\0\x01\0\0\0x\0\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\x001",
        r#"{"center":"c9","version":"0"}"#,
        r#"{"op":"send","to":["alice"],"body":{"a":[1,2]}}"#,
        r#"{"op":"login","user":"bob"}"#,
    ];
    let subjects = [
        "mrc.send",
        "mrc.to.alice",
        "mrc.to.=x",
        "mrc.dir.register",
        "mrc.dir.unregister",
        "mrc.dir.lookup",
        "mrc.dir.purge",
        "mrc.gw.g0.deliver",
        "mrc.gw.g1.hb",
        "mrc.center.hello",
        "mrc.center.gateway-down",
        "mrc.dir.changed.alice",
        "$SRV.PING.mrc-center",
    ];
    let mut noise = Noise(0x5eed_1234_abcd_ef01);
    let alice = login(cluster.ws(0), "alice").await;
    for i in 0..400 {
        let subject = subjects[i % subjects.len()];
        let payload = noise.payload(&valid);
        if subject.contains(".hb") || subject.contains(".center.") || subject.contains(".changed.")
        {
            nats.publish(subject, payload.into()).await.unwrap();
            continue;
        }
        // Requests wait for whatever answer comes; errors and timeouts are fine.
        let request = nats.request(subject, payload.into());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), request).await;
    }
    let mut ws = connect(cluster.ws(1)).await;
    for _ in 0..200 {
        let text = String::from_utf8_lossy(&noise.payload(&valid)).into_owned();
        if ws.send_text(&text).await.is_err() {
            break;
        }
    }
    for (i, p) in cluster
        .centers
        .iter_mut()
        .map(|c| &mut c.process)
        .chain(cluster.gateways.iter_mut().map(|g| &mut g.process))
        .enumerate()
    {
        assert!(
            p.wait_exit(std::time::Duration::ZERO).is_none(),
            "process {i} died:\n{}",
            p.log()
        );
    }
    // Everything still routes. (Noise may have logged alice in elsewhere or sent her
    // messages; only the report matters.)
    let mut bob = login(cluster.ws(1), "bob-checker").await;
    let (report, _) = send(&mut bob, &["alice"], "after-noise", "1").await;
    assert_eq!(report["alice"], Outcome::Delivered);
    alice.close().await;
}
