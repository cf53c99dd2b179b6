//! Configured caps: send rate, slow consumers, sessions per user, idle connections,
//! connections per gateway.

use std::time::Duration;

use mrc::client::WsClient;
use mrc::protocol::client::Report;
use mrc::protocol::code::{ErrorCode, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::client::{
    body, connect, expect_op, expect_silence, login, outcomes, recv, send,
};
use crate::support::cluster::{online, Cluster};
use crate::support::eventually;

fn cluster_with(gateway_args: &[&str]) -> Cluster {
    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(gateway_args);
    cluster.start_gateway("g0");
    cluster
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_then_disconnected() {
    let cluster = cluster_with(&["--rate-per-sec", "5", "--rate-burst", "5"]);
    let mut flood = login(cluster.ws(0), "flood").await;
    let mut calm = login(cluster.ws(0), "calm").await;
    let to = vec!["calm".to_string()];
    for i in 0..30 {
        if flood
            .send(&to, Some(&format!("f{i}")), &body("1"))
            .await
            .is_err()
        {
            break;
        }
    }
    let (mut reports, mut limited) = (0, 0);
    let bye = loop {
        let frame = recv(&mut flood).await;
        match frame.frame.op.as_str() {
            "report" => reports += 1,
            "error" => {
                assert_eq!(
                    frame.frame.code,
                    Some(ErrorCode::RateLimited),
                    "{}",
                    frame.text
                );
                limited += 1;
            }
            "bye" => break frame,
            other => panic!("unexpected {other}: {}", frame.text),
        }
    };
    assert_eq!(bye.frame.reason.as_deref(), Some("flood"));
    assert!(reports <= 6, "{reports} sends got through a burst of 5");
    assert!(limited >= 1, "no rate_limited error before the flood close");
    // The burst that was accepted was delivered; the calm user is unaffected.
    for _ in 0..reports {
        expect_op(&mut calm, "msg").await;
    }
    let (report, _) = send(&mut calm, &["calm"], "still-fine", "1").await;
    assert_eq!(report, outcomes(&[("calm", Outcome::Delivered)]));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_does_not_slow_others() {
    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(&["--outbound-queue", "8", "--tcp-listen", "127.0.0.1:0"]);
    cluster.start_gateway("g0");
    let tcp = cluster.gateways[0].tcp.clone().unwrap();
    let nats = cluster.client().await;

    // The slow client logs in over TCP, then never reads again.
    let mut slow = TcpStream::connect(&tcp).await.unwrap();
    slow.write_all(b"{\"op\":\"login\",\"user\":\"slow\"}\n")
        .await
        .unwrap();
    let mut fast = login(cluster.ws(0), "fast").await;
    eventually(Duration::from_secs(10), "slow logged in", || async {
        (!online(&nats, &["slow"]).await.is_empty()).then_some(())
    })
    .await;

    let big = format!(r#""{}""#, "x".repeat(30 * 1024));
    let mut kicked_after = None;
    for i in 0..2000 {
        let payload = format!(r#"{{"to":["slow","fast"],"id":"m{i}","body":{big}}}"#);
        let reply = nats.request("mrc.send", payload.into()).await.unwrap();
        let report: Report = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(
            report.status["fast"],
            Outcome::Delivered,
            "message {i} to the fast client"
        );
        // The fast client keeps up and gets every message.
        let msg = expect_op(&mut fast, "msg").await;
        assert_eq!(msg.frame.id, Some(format!("m{i}")));
        if report.status["slow"] == Outcome::Offline {
            kicked_after = Some(i);
            break;
        }
    }
    let kicked_after = kicked_after.expect("the slow client was never disconnected");
    eprintln!("slow consumer disconnected after {kicked_after} messages of 30 KiB");
    eventually(Duration::from_secs(5), "slow unregistered", || async {
        online(&nats, &["slow"]).await.is_empty().then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", cluster.gateways[0].http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mrc_gateway_slow_consumers_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sessions_per_user_are_capped_across_the_cluster() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = vec!["--max-sessions-per-user".into(), "2".into()];
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    let mut first = login(cluster.ws(0), "alice").await;
    let mut second = login(cluster.ws(1), "alice").await;
    let mut third = connect(cluster.ws(0)).await;
    third
        .send_text(r#"{"op":"login","user":"alice"}"#)
        .await
        .unwrap();
    assert_eq!(
        expect_op(&mut third, "error").await.frame.code,
        Some(ErrorCode::TooManySessions)
    );
    assert_eq!(
        expect_op(&mut third, "bye").await.frame.reason.as_deref(),
        Some("too_many_sessions")
    );
    // The refused session left no trace; the first two still receive.
    let nats = cluster.client().await;
    eventually(Duration::from_secs(5), "two sessions", || async {
        let reply = crate::support::cluster::lookup(&nats, &["alice"]).await;
        (reply.users["alice"].len() == 2).then_some(())
    })
    .await;
    let mut bob = login(cluster.ws(0), "bob").await;
    let (report, _) = send(&mut bob, &["alice"], "m", "1").await;
    assert_eq!(report["alice"], Outcome::Delivered);
    expect_op(&mut first, "msg").await;
    expect_op(&mut second, "msg").await;
}

#[tokio::test]
async fn idle_tcp_clients_are_closed_while_websocket_pings_keep_clients_alive() {
    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(&["--idle-timeout-ms", "600", "--tcp-listen", "127.0.0.1:0"]);
    cluster.start_gateway("g0");
    let tcp = cluster.gateways[0].tcp.clone().unwrap();

    let stream = TcpStream::connect(&tcp).await.unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"{\"op\":\"login\",\"user\":\"quiet\"}\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let mut frames = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
    {
        frames.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert_eq!(
        frames.first().map(|f| f["op"].clone()),
        Some("welcome".into())
    );
    assert_eq!(
        frames.last().map(|f| f["reason"].clone()),
        Some("idle".into()),
        "{frames:?}"
    );

    // A WebSocket client that only listens answers the gateway's pings and stays.
    let mut ws: WsClient = login(cluster.ws(0), "listener").await;
    expect_silence(&mut ws, Duration::from_millis(1500)).await;
    let (report, _) = send(&mut ws, &["listener"], "alive", "1").await;
    assert_eq!(report["listener"], Outcome::Delivered);
}

#[tokio::test]
async fn connections_beyond_the_gateway_cap_are_refused() {
    let cluster = cluster_with(&["--max-connections", "2"]);
    let _a = login(cluster.ws(0), "a").await;
    let _b = connect(cluster.ws(0)).await;
    let refused = WsClient::connect(cluster.ws(0)).await;
    let error = format!(
        "{:#}",
        refused.err().expect("a third connection is refused")
    );
    assert!(error.contains("503"), "{error}");
}

#[tokio::test]
async fn ids_longer_than_the_configured_limit_are_refused() {
    let cluster = cluster_with(&["--max-id-bytes", "8"]);
    let mut ws = connect(cluster.ws(0)).await;
    ws.send_text(r#"{"op":"login","user":"much-too-long"}"#)
        .await
        .unwrap();
    assert_eq!(
        expect_op(&mut ws, "error").await.frame.code,
        Some(ErrorCode::BadId)
    );
    ws.login("short").await.unwrap();
    let (report, _) = send(&mut ws, &["short", "much-too-long"], "m", "1").await;
    assert_eq!(
        report,
        outcomes(&[
            ("short", Outcome::Delivered),
            ("much-too-long", Outcome::Rejected)
        ])
    );
}

#[tokio::test]
async fn limits_that_cannot_fit_in_a_nats_message_stop_the_gateway_at_start() {
    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(&[
        "--max-frame-bytes",
        "4000000",
        "--max-body-bytes",
        "3000000",
    ]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mrc-gateway"))
        .env("MRC_NATS_URL", cluster.nats_url())
        .args(["--listen", "127.0.0.1:0", "--insecure-dev-auth"])
        .args(&cluster.gateway_args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "a configuration error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_payload"), "{stderr}");
}

#[tokio::test]
async fn flags_that_do_not_parse_exit_64_and_help_exits_0() {
    let run = |binary: &str, args: &[&str]| {
        std::process::Command::new(binary)
            .args(args)
            .output()
            .unwrap()
    };
    for binary in [
        env!("CARGO_BIN_EXE_mrc-center"),
        env!("CARGO_BIN_EXE_mrc-gateway"),
    ] {
        let unknown = run(binary, &["--no-such-flag"]);
        assert_eq!(unknown.status.code(), Some(64), "{binary}: {unknown:?}");
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("--no-such-flag"));
        let garbled = run(binary, &["--request-timeout-ms", "soon"]);
        assert_eq!(garbled.status.code(), Some(64), "{binary}: {garbled:?}");
        let help = run(binary, &["--help"]);
        assert_eq!(help.status.code(), Some(0), "{binary}: {help:?}");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("MRC_LOG"), "{text}");
        // The process's own flags sit under its own heading, before the shared groups.
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(
            at("--id") < at("\nNATS:") && at("\nNATS:") < at("\nRuntime:"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_zero_rate_or_in_flight_cap_is_a_configuration_error() {
    for flag in [
        "--broadcast-rate",
        "--deliver-in-flight",
        "--routing-in-flight",
        "--sends-in-flight",
        "--ingress-in-flight",
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mrc-gateway"))
            .args(["--listen", "127.0.0.1:0", "--insecure-dev-auth", flag, "0"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{flag}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("{flag} must be > 0")), "{stderr}");
    }
}

/// The status of a WebSocket upgrade to `url` (101 when it was taken).
async fn upgrade(url: &str) -> (u16, Option<mrc::client::WsClient>) {
    match mrc::client::WsClient::connect(url).await {
        Ok(ws) => (101, Some(ws)),
        Err(e) => {
            let text = format!("{e:#}");
            (if text.contains("503") { 503 } else { 0 }, None)
        }
    }
}

#[tokio::test]
async fn connections_waiting_to_log_in_are_capped() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = ["--max-pending-logins", "2", "--tcp-listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    cluster.start_gateway("g0");
    let url = cluster.ws(0).to_string();
    let (_, first) = upgrade(&url).await;
    let (_, second) = upgrade(&url).await;
    assert_eq!(
        upgrade(&url).await.0,
        503,
        "a third idle connection is refused"
    );
    let tcp = cluster.gateways[0].tcp.clone().unwrap();
    let mut line = String::new();
    let stream = TcpStream::connect(&tcp).await.unwrap();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await
        .unwrap();
    assert!(
        line.contains("too many connections waiting to log in"),
        "{line}"
    );

    // A login frees its place.
    let mut first = first.unwrap();
    first.login("alice").await.unwrap();
    let (status, third) = upgrade(&url).await;
    assert_eq!(status, 101);
    drop((second, third));
}

#[tokio::test]
async fn an_http_connection_that_sends_no_request_is_closed() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = ["--header-read-timeout-ms", "300"]
        .map(String::from)
        .to_vec();
    cluster.start_gateway("g0");
    let addr = cluster.gateways[0]
        .http
        .trim_start_matches("http://")
        .to_string();
    for sent in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(sent).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut rest).await
        })
        .await;
        assert!(closed.is_ok(), "a socket that sent {sent:?} was kept open");
    }
}
