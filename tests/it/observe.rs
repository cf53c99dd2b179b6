//! What operators watch: the centers' HTTP listener (probes and metrics), build and process
//! metrics on every server, NATS service-error headers and stats, JSON logs.

use std::process::Command;
use std::time::Duration;

use mrc::protocol::code::ErrorCode;
use mrc::protocol::nats::ErrorReply;

use crate::support::client::login;
use crate::support::cluster::{lookup, Broker, Cluster};
use crate::support::eventually;

use crate::support::{http, readyz};

async fn get_text(url: String) -> (u16, String) {
    let response = http().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The sample lines of `metric` (`name{labels} value`) in a Prometheus text.
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect()
}

/// `mrc_build_info` of `process` and the process metrics read from /proc.
fn assert_build_and_process_metrics(text: &str, process: &str) {
    let build = samples(text, "mrc_build_info");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    let process = format!("process=\"{process}\"");
    assert!(
        build
            .iter()
            .any(|l| l.contains(&version) && l.contains(&process) && l.ends_with(" 1")),
        "{build:?}"
    );
    for metric in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let lines = samples(text, metric);
        let value: f64 = lines[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            value > 0.0 || metric == "process_cpu_seconds_total",
            "{lines:?}"
        );
    }
}

#[tokio::test]
async fn a_center_serves_probes_and_metrics_and_is_unready_once_nats_is_gone() {
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--http-listen".into(), "127.0.0.1:0".into()];
    cluster.start_center("c0");
    cluster.start_gateway("g0");
    let base = cluster.centers[0]
        .http
        .clone()
        .expect("the ready line names http=");

    assert_eq!(
        get_text(format!("{base}/healthz")).await,
        (200, "ok\n".into())
    );
    assert_eq!(readyz(&base).await, (200, None), "ready once it says so");
    let client = cluster.client().await;
    lookup(&client, &["alice"]).await;
    let (status, text) = get_text(format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let requests = samples(&text, "mrc_center_requests_total");
    assert!(
        requests
            .iter()
            .any(|l| l.contains("endpoint=\"dir.lookup\"") && !l.ends_with(" 0")),
        "{text}"
    );
    assert_eq!(samples(&text, "mrc_center_users"), ["mrc_center_users 0"]);
    assert_build_and_process_metrics(&text, "mrc-center");
    let gateway = cluster.gateways[0].http.clone();
    let (_, text) = get_text(format!("{gateway}/metrics")).await;
    assert_build_and_process_metrics(&text, "mrc-gateway");

    cluster.broker = Broker::Gone;
    let reason = eventually(Duration::from_secs(10), "readyz says NATS is gone", || {
        let base = base.clone();
        async move {
            match readyz(&base).await {
                (503, reason) => reason,
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(reason, "NATS is not connected");
    assert_eq!(
        get_text(format!("{base}/healthz")).await.0,
        200,
        "still alive"
    );
}

#[tokio::test]
async fn a_center_that_cannot_reach_nats_is_alive_but_not_ready() {
    let mut cluster = Cluster::start(0, 0);
    // Nothing listens there: the center keeps trying to connect.
    cluster.pinned_url = Some("nats://127.0.0.1:1".into());
    cluster.center_args = vec!["--http-listen".into(), "127.0.0.1:0".into()];
    cluster.start_center_until("c0", "mrc-center listening");
    let base = cluster.centers[0]
        .http
        .clone()
        .expect("the listening line names http=");
    assert_eq!(
        get_text(format!("{base}/healthz")).await,
        (200, "ok\n".into())
    );
    let expected = (503, Some("connecting to NATS".to_string()));
    assert_eq!(readyz(&base).await, expected);
}

#[tokio::test]
async fn center_errors_carry_service_error_headers_and_count_in_srv_stats() {
    let cluster = Cluster::start(1, 0);
    let client = cluster.client().await;
    let cases = [
        ("mrc.dir.lookup", "{not json", ErrorCode::BadJson),
        ("mrc.dir.purge", r#"{"gateway":"a.b"}"#, ErrorCode::BadId),
        (
            "mrc.grp.members",
            r#"{"group":"nobody"}"#,
            ErrorCode::NotFound,
        ),
    ];
    for (subject, payload, code) in cases {
        let reply = client.request(subject, payload.into()).await.unwrap();
        // The body clients read is kept...
        let body: ErrorReply = serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("{subject}: {e}: {:?}", reply.payload));
        assert_eq!(body.error.code, code, "{subject}");
        // ...and the headers NATS tooling reads are there.
        let headers = reply.headers.expect("an error reply carries headers");
        let status = headers.get("Nats-Service-Error-Code").unwrap().as_str();
        assert_eq!(status, code.status().to_string(), "{subject}");
        let text = headers.get("Nats-Service-Error").unwrap().as_str();
        assert_eq!(text, format!("{code}: {}", body.error.message));
    }
    let fine = client
        .request("mrc.dir.lookup", r#"{"users":["bob"]}"#.into())
        .await
        .unwrap();
    assert!(fine.headers.is_none(), "an answer is no error");

    let reply = client
        .request("$SRV.STATS.mrc-center", "".into())
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let endpoint = |subject: &str| {
        let endpoints = stats["endpoints"].as_array().unwrap();
        endpoints
            .iter()
            .find(|e| e["subject"] == subject)
            .unwrap_or_else(|| panic!("no {subject} in {stats}"))
            .clone()
    };
    let lookups = endpoint("mrc.dir.lookup");
    assert_eq!(lookups["num_errors"], 1, "{lookups}");
    assert_eq!(
        lookups["num_requests"], 2,
        "every request counts once: {lookups}"
    );
    let last = lookups["last_error"].as_str().unwrap();
    assert!(last.starts_with("400:bad_json: "), "{last}");
    assert_eq!(endpoint("mrc.grp.members")["num_errors"], 1);
}

#[tokio::test]
async fn json_logs_are_one_json_object_per_line() {
    let mut cluster = Cluster::start(0, 0);
    cluster.env = vec![("MRC_LOG_FORMAT".into(), "json".into())];
    cluster.start_center("c0");
    cluster.start_gateway("g0");
    drop(login(cluster.ws(0), "alice").await);
    // Stopped, so their shutdown is logged too.
    for process in [
        &mut cluster.gateways[0].process,
        &mut cluster.centers[0].process,
    ] {
        process.terminate();
        assert!(process.wait_exit(Duration::from_secs(15)).is_some());
    }
    let logs = [
        ("center", cluster.centers[0].process.log()),
        ("gateway", cluster.gateways[0].process.log()),
    ];
    for (name, log) in &logs {
        let mut events = Vec::new();
        // Lines starting with the process name are its stdout (ready, listening).
        for line in log.lines().filter(|l| !l.starts_with("mrc-")) {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: a log line that is not JSON ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(event[key].is_string(), "{name}: no {key}: {line}");
            }
            events.push(event);
        }
        assert!(events.len() >= 3, "{name}:\n{log}");
    }
    // The event's fields sit at the top level, beside its message.
    let ready = logs[0]
        .1
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["message"] == "center ready")
        .expect("the center logged that it is ready");
    assert_eq!(ready["center"], "c0", "{ready}");
}

#[test]
fn every_binary_documents_its_logging_and_a_bad_log_format_is_bad_configuration() {
    for binary in [
        env!("CARGO_BIN_EXE_mrc-center"),
        env!("CARGO_BIN_EXE_mrc-gateway"),
        env!("CARGO_BIN_EXE_mrc"),
    ] {
        let help = Command::new(binary).arg("--help").output().unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        for name in ["MRC_LOG ", "MRC_LOG_FORMAT", "json"] {
            assert!(help.contains(name), "{binary} --help lacks {name}:\n{help}");
        }
        let bad = Command::new(binary)
            .arg("--help")
            .env("MRC_LOG_FORMAT", "xml")
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(64), "{binary}");
        assert!(String::from_utf8_lossy(&bad.stderr).contains("MRC_LOG_FORMAT"));
    }
    let help = Command::new(env!("CARGO_BIN_EXE_mrc-center"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("--http-listen") && help.contains("MRC_CENTER_HTTP_LISTEN"));
}

#[tokio::test]
async fn a_gateway_measures_each_message_from_accepted_to_reported() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let _bob = login(cluster.ws(1), "bob").await;
    for id in ["r1", "r2"] {
        crate::support::client::send(&mut alice, &["bob"], id, "1").await;
    }
    let base = &cluster.gateways[0].http;
    let count = r#"mrc_gateway_route_seconds_count{kind="direct"}"#;
    assert_eq!(crate::support::counter(base, count).await, 2.0);
}
