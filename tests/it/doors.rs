//! The raw TCP door and the HTTP API, next to WebSocket.

use std::time::Duration;

use mrc::protocol::client::{Report, UserStatus};
use mrc::protocol::code::{ErrorCode, Outcome};
use mrc::protocol::nats::ErrorReply;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::client::{expect_op, login, outcomes, send};
use crate::support::cluster::Cluster;
use crate::support::token::{self, claims};

/// A newline-delimited JSON client, as `nc` would be.
struct Line {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Line {
    async fn connect(addr: &str) -> Self {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Line {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await
            .expect("a line in time")
            .unwrap();
        assert!(n > 0, "the gateway closed the TCP connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

#[tokio::test]
async fn tcp_clients_speak_the_same_protocol_in_lines() {
    let mut cluster = Cluster::start(1, 1);
    cluster.gateway_args = vec!["--tcp-listen".into(), "127.0.0.1:0".into()];
    cluster.start_gateway("g1");
    let tcp = cluster.gateways[1]
        .tcp
        .clone()
        .expect("the TCP door is open");
    let mut alice = login(cluster.ws(0), "alice").await;

    let mut bob = Line::connect(&tcp).await;
    bob.send(r#"{"op":"login","user":"bob"}"#).await;
    assert_eq!(bob.recv().await["op"], "welcome");

    let (report, _) = send(&mut alice, &["bob"], "w1", r#"{"via":"ws"}"#).await;
    assert_eq!(report, outcomes(&[("bob", Outcome::Delivered)]));
    let msg = bob.recv().await;
    assert_eq!(
        (msg["op"].as_str(), msg["from"].as_str()),
        (Some("msg"), Some("alice"))
    );
    assert_eq!(msg["body"], json!({"via": "ws"}));

    bob.send(r#"{"op":"send","id":"t1","to":["alice"],"body":"via tcp"}"#)
        .await;
    let report = bob.recv().await;
    assert_eq!(
        report,
        json!({"op": "report", "id": "t1", "status": {"alice": "delivered"}})
    );
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.body.unwrap().get(), r#""via tcp""#);

    // Bad lines get errors; the connection lives on (CRLF works too).
    bob.send("{oops").await;
    assert_eq!(bob.recv().await["code"], "bad_json");
    bob.send(&format!(
        r#"{{"op":"ping","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    ))
    .await;
    assert_eq!(bob.recv().await["code"], "too_large");
    bob.writer
        .write_all(b"{\"op\":\"ping\",\"id\":\"p\"}\r\n")
        .await
        .unwrap();
    assert_eq!(bob.recv().await, json!({"op": "pong", "id": "p"}));
}

/// Messages come into a session's socket from the deliver connection's task while the
/// session's own task answers the client's pings: every frame arrives whole and in order,
/// every ping gets its pong.
#[tokio::test]
async fn pongs_and_messages_written_from_other_tasks_interleave_whole() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message as Raw;

    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(&["--rate-per-sec", "100000", "--rate-burst", "100000"]);
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    let (mut receiver, _) = tokio_tungstenite::connect_async(cluster.ws(1))
        .await
        .unwrap();
    let hello = json!({"op": "login", "user": "pinger"}).to_string();
    receiver.send(Raw::text(hello)).await.unwrap();
    let welcome = receiver.next().await.unwrap().unwrap();
    assert!(
        welcome.to_text().unwrap().contains("welcome"),
        "{welcome:?}"
    );
    let mut sender = login(cluster.ws(0), "sender").await;

    const MESSAGES: usize = 300;
    let sending = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let (report, _) =
                send(&mut sender, &["pinger"], &format!("m{i}"), &i.to_string()).await;
            assert_eq!(report["pinger"], Outcome::Delivered, "m{i}");
        }
    });
    let (mut ids, mut pings, mut pongs) = (Vec::new(), 0u32, Vec::new());
    let mut every = tokio::time::interval(Duration::from_millis(1));
    while ids.len() < MESSAGES || pongs.len() < pings as usize {
        tokio::select! {
            _ = every.tick(), if ids.len() < MESSAGES => {
                assert!(!sending.is_finished() || ids.len() == MESSAGES, "the sender stopped at {}", ids.len());
                receiver.send(Raw::Ping(pings.to_be_bytes().to_vec().into())).await.unwrap();
                pings += 1;
            }
            frame = tokio::time::timeout(Duration::from_secs(10), receiver.next()) => {
                match frame.expect("a frame in time").expect("open").expect("a valid frame") {
                    Raw::Text(text) => {
                        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                        if frame["op"] == "msg" {
                            ids.push(frame["id"].as_str().unwrap().to_string());
                        }
                    }
                    Raw::Pong(payload) => pongs.push(u32::from_be_bytes(payload[..].try_into().unwrap())),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    sending.await.unwrap();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(pongs, (0..pings).collect::<Vec<_>>());
    assert!(pings > 10, "pings sent while messages came: {pings}");
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// A cluster whose gateway takes tokens and an API key, plus dev logins for receivers.
fn api_cluster() -> Cluster {
    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(&["--jwt-secret", token::SECRET, "--api-key", token::API_KEY]);
    cluster.start_gateway("g0");
    cluster
}

async fn post(
    cluster: &Cluster,
    auth: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut request = http()
        .post(format!("{}/v1/messages", cluster.gateways[0].http))
        .body(body.to_string());
    if let Some(auth) = auth {
        request = request.bearer_auth(auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap(), headers)
}

#[tokio::test]
async fn http_send_requires_an_api_key_or_a_send_scoped_token_and_reports() {
    let cluster = api_cluster();
    let mut alice = login(cluster.ws(0), "alice").await;
    let body = r#"{"to":["alice","ghost"],"from":"billing","id":"h1","body":{"n":1}}"#;

    let (status, reply, headers) = post(&cluster, None, body).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(
        serde_json::from_value::<ErrorReply>(reply)
            .unwrap()
            .error
            .code,
        ErrorCode::Unauthorized
    );
    let (status, _, _) = post(&cluster, Some("wrong-key"), body).await;
    assert_eq!(status, 401);

    // A backend with the API key sends as anyone.
    let (status, reply, _) = post(&cluster, Some(token::API_KEY), body).await;
    assert_eq!(status, 200, "{reply}");
    let report: Report = serde_json::from_value(reply).unwrap();
    assert_eq!(
        report.status,
        outcomes(&[("alice", Outcome::Delivered), ("ghost", Outcome::Offline)])
    );
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.from.as_deref(), Some("billing"));

    // A user token needs the scope, and sends only as its subject.
    let plain = token::hs256(&claims("bob", json!({})));
    let (status, reply, _) = post(&cluster, Some(&plain), r#"{"to":["alice"],"body":1}"#).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let scoped = token::hs256(&claims("bob", json!({"scope": "mrc:send"})));
    let (status, _, _) = post(
        &cluster,
        Some(&scoped),
        r#"{"to":["alice"],"from":"billing","body":1}"#,
    )
    .await;
    assert_eq!(status, 403);
    let (status, reply, _) = post(&cluster, Some(&scoped), r#"{"to":["alice"],"body":2}"#).await;
    assert_eq!(status, 200, "{reply}");
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.from.as_deref(), Some("bob"));

    // Bad requests get JSON errors with fitting statuses.
    let cases = [
        ("{nope", 400, "bad_json"),
        (r#"{"to":"alice","body":1}"#, 400, "bad_frame"),
        (r#"{"to":[],"body":1}"#, 400, "bad_frame"),
    ];
    for (body, expected_status, code) in cases {
        let (status, reply, _) = post(&cluster, Some(token::API_KEY), body).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (expected_status, Some(code)),
            "{body}"
        );
    }
    let big = format!(r#"{{"to":["alice"],"body":"{}"}}"#, "x".repeat(40 * 1024));
    let (status, reply, _) = post(&cluster, Some(token::API_KEY), &big).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
}

#[tokio::test]
async fn http_user_status_health_readiness_and_metrics() {
    let mut cluster = api_cluster();
    let base = cluster.gateways[0].http.clone();
    let _alice = login(cluster.ws(0), "alice@example.com").await;

    let url = format!("{base}/v1/users/alice@example.com");
    let response = http()
        .get(&url)
        .bearer_auth(token::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status: UserStatus = response.json().await.unwrap();
    assert_eq!((status.online, status.sessions), (true, 1));
    assert_eq!(status.gateways.get("g0"), Some(&1));
    let response = http()
        .get(format!("{base}/v1/users/nobody"))
        .bearer_auth(token::API_KEY)
        .send()
        .await
        .unwrap();
    assert!(!response.json::<UserStatus>().await.unwrap().online);
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);

    assert_eq!(
        http()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "mrc_gateway_connections",
        "mrc_gateway_sessions",
        "mrc_gateway_nats_request_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }

    // Without a center the gateway is alive but not ready.
    cluster.centers[0].process.kill();
    assert_eq!(
        http()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = http().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("no center answers look-ups"), "{reason}");
}

#[tokio::test]
async fn a_send_to_a_cached_receiver_makes_no_directory_request() {
    let cluster = Cluster::start(1, 2);
    let base = cluster.gateways[0].http.clone();
    let mut alice = login(cluster.ws(0), "alice").await;
    let _bob = login(cluster.ws(1), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "first", "1").await;
    assert_eq!(report["bob"], Outcome::Delivered);
    let lookups = crate::support::counter(&base, "mrc_gateway_lookup_requests_total").await;
    assert!(lookups >= 1.0);
    for i in 0..5 {
        let (report, _) = send(&mut alice, &["bob"], &format!("again{i}"), "1").await;
        assert_eq!(report["bob"], Outcome::Delivered);
    }
    assert_eq!(
        crate::support::counter(&base, "mrc_gateway_lookup_requests_total").await,
        lookups
    );
    assert!(
        crate::support::counter(&base, "mrc_gateway_route_cache_total{result=\"hit\"}").await
            >= 5.0
    );
}
