//! Start-up and readiness: gateways answer their probes at once and keep clients out until
//! a center answers; centers wait for JetStream instead of exiting, except on a
//! configuration JetStream can never accept (exit 64).

use std::time::Duration;

use mrc::protocol::code::ErrorCode;
use mrc::protocol::nats::ErrorReply;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::client::login;
use crate::support::cluster::{online, Broker, Cluster};
use crate::support::eventually;
use crate::support::peer::Peer;

use crate::support::{http, readyz};

/// The first line the TCP door writes to a new client, and whether it closed after it.
async fn tcp_greeting(addr: &str) -> (serde_json::Value, bool) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // A login, in case the door takes the client: it then answers `welcome`.
    let _ = write
        .write_all(b"{\"op\":\"login\",\"user\":\"tcp\"}\n")
        .await;
    let mut line = String::new();
    let read = reader.read_line(&mut line);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a line in time")
        .unwrap();
    let frame = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let mut rest = String::new();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut rest)).await,
        Ok(Ok(0))
    );
    (frame, closed)
}

#[tokio::test]
async fn a_gateway_without_a_center_is_alive_not_ready_and_keeps_clients_out_until_one_answers() {
    let mut cluster = Cluster::start(0, 0);
    cluster.gateway_args = vec!["--tcp-listen".into(), "127.0.0.1:0".into()];
    let gateway = cluster.start_gateway_until("g0", "mrc-gateway listening");
    let (base, ws) = (gateway.http.clone(), gateway.ws.clone());
    let tcp = gateway.tcp.clone().expect("the TCP door is configured");

    let health = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    // "connecting to NATS" first, for a moment; then the missing center.
    let reason = eventually(Duration::from_secs(10), "readyz waits for a center", || {
        let base = base.clone();
        async move {
            let (status, reason) = readyz(&base).await;
            assert_eq!(status, 503);
            reason.filter(|r| r != "connecting to NATS")
        }
    })
    .await;
    assert_eq!(reason, "waiting for a center to answer");

    // Every door says why it takes no clients, in the HTTP API's error shape.
    let response = http()
        .post(format!("{base}/v1/messages"))
        .body(r#"{"to":["bob"],"from":"ops","body":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error: ErrorReply = response.json().await.unwrap();
    assert_eq!(error.error.code, ErrorCode::Unavailable);
    assert_eq!(
        error.error.message,
        "not ready: waiting for a center to answer"
    );
    match tokio_tungstenite::connect_async(ws.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
        Ok(_) => panic!("a WebSocket client was taken before any center answered"),
    }
    let (frame, closed) = tcp_greeting(&tcp).await;
    assert_eq!(frame["code"], "unavailable", "{frame}");
    assert!(
        frame["message"].as_str().unwrap().contains("center"),
        "{frame}"
    );
    assert!(closed, "the TCP door closes after saying why");

    cluster.start_center("c0");
    cluster.gateways[0]
        .process
        .wait_line("mrc-gateway ready", Duration::from_secs(30));
    eventually(Duration::from_secs(10), "readyz says ready", || {
        let base = base.clone();
        async move { (readyz(&base).await == (200, None)).then_some(()) }
    })
    .await;
    let _alice = login(&ws, "alice").await;
    let (frame, _) = tcp_greeting(&tcp).await;
    assert_eq!(frame["op"], "welcome", "{frame}");
    let nats = cluster.client().await;
    assert_eq!(online(&nats, &["alice"]).await, ["alice"]);
}

#[tokio::test]
async fn a_center_started_without_a_jetstream_quorum_waits_then_serves() {
    let mut cluster = Cluster::start_replicated(0, 0).await;
    let Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!("a replicated cluster runs three nodes")
    };
    // One node of three: clients connect, JetStream has no quorum.
    nats.kill_node(1);
    nats.kill_node(2);
    cluster.start_center_until("c0", "failed; retrying");
    assert!(
        cluster.centers[0].process.running(),
        "the center waits for JetStream instead of exiting"
    );
    assert!(!cluster.centers[0]
        .process
        .log()
        .contains("mrc-center ready"));

    let Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!()
    };
    nats.start_node(1);
    nats.start_node(2);
    cluster.centers[0]
        .process
        .wait_line("mrc-center ready", Duration::from_secs(90));
    cluster.start_gateway("g0");
    let _alice = login(cluster.ws(0), "alice").await;
    let client = cluster.client().await;
    assert_eq!(online(&client, &["alice"]).await, ["alice"]);
}

#[tokio::test]
async fn a_center_whose_bucket_cannot_exist_exits_64() {
    // Three replicas on a single server: JetStream can never create that bucket.
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--replicas".into(), "3".into()];
    cluster.start_center_until("c0", "bad configuration");
    let status = cluster.centers[0]
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("the center exits");
    assert_eq!(status.code(), Some(64));
    let log = cluster.centers[0].process.log();
    assert!(
        log.contains("mrc_dir"),
        "the error names the bucket:\n{log}"
    );
}

#[tokio::test]
async fn a_stopped_gateway_that_never_saw_a_center_exits_at_once() {
    let mut cluster = Cluster::start(0, 0);
    cluster.start_gateway_until("g0", "mrc-gateway listening");
    let base = cluster.gateways[0].http.clone();
    eventually(Duration::from_secs(10), "connected to NATS", || {
        let base = base.clone();
        async move {
            let (_, reason) = readyz(&base).await;
            (reason.as_deref() != Some("connecting to NATS")).then_some(())
        }
    })
    .await;
    cluster.gateways[0].process.terminate();
    let status = cluster.gateways[0]
        .process
        .wait_exit(Duration::from_secs(5))
        .expect("the gateway exits without waiting for a purge");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_gateway_whose_directory_writes_fail_is_not_ready_until_one_succeeds() {
    let mut cluster = Cluster::start_replicated(0, 0).await;
    let Broker::Triple(nats) = &cluster.broker else {
        unreachable!("a replicated cluster runs three nodes")
    };
    // The center and the gateway stay connected to the node that survives.
    cluster.pinned_url = Some(nats.nodes[0].url.clone());
    cluster.start_center("c0");
    cluster.start_gateway("g0");
    let base = cluster.gateways[0].http.clone();
    assert_eq!(readyz(&base).await, (200, None));
    let Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!()
    };
    // Two nodes of three gone: JetStream has no quorum, so no login can be written.
    nats.kill_node(1);
    nats.kill_node(2);
    let refused = Peer::login(cluster.ws(0), "alice").await;
    assert!(refused.is_err(), "a login without a directory");
    // The reason may read "NATS is not connected" for a moment (the cluster reshapes);
    // the failed write is reported until a write succeeds. The unregister the gateway
    // retries for the refused login is answered from a read and does not count.
    eventually(
        Duration::from_secs(8),
        "not ready: writes failing",
        || async {
            let (status, reason) = readyz(&base).await;
            let failing = reason.is_some_and(|r| r.starts_with("directory writes failing"));
            (status == 503 && failing).then_some(())
        },
    )
    .await;

    let Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!()
    };
    nats.start_node(1);
    nats.start_node(2);
    // The doors stay open: the first login that is written shows the directory is back.
    let ws = cluster.ws(0).to_string();
    let _alice = eventually(Duration::from_secs(60), "a login succeeds", || async {
        Peer::login(&ws, "alice").await.ok()
    })
    .await;
    assert_eq!(readyz(&base).await, (200, None));
}
