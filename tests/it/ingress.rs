//! Backends sending through plain NATS: `mrc.send` and `mrc.to.<user>`.

use mrc::protocol::client::Report;
use mrc::protocol::code::{ErrorCode, Outcome};
use mrc::protocol::nats::ErrorReply;

use crate::support::client::{expect_op, login, outcomes};
use crate::support::cluster::Cluster;

#[tokio::test]
async fn a_plain_nats_request_on_mrc_send_delivers_and_reports() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(1), "alice").await;
    let nats = cluster.client().await;
    // Exactly what `nats req mrc.send '...'` sends.
    let payload =
        r#"{"to":["alice","nobody"],"from":"billing","id":"inv-7","body":{"amount": 12}}"#;
    let reply = nats.request("mrc.send", payload.into()).await.unwrap();
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report.id, "inv-7");
    assert_eq!(
        report.status,
        outcomes(&[("alice", Outcome::Delivered), ("nobody", Outcome::Offline)])
    );
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.from.as_deref(), Some("billing"));
    assert_eq!(msg.frame.body.unwrap().get(), r#"{"amount": 12}"#);

    // A plain publish (no reply wanted) is delivered too, with a generated id.
    nats.publish(
        "mrc.send",
        r#"{"to":["alice"],"body":"fire and forget"}"#.into(),
    )
    .await
    .unwrap();
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.body.unwrap().get(), r#""fire and forget""#);
    assert!(msg.frame.from.is_none());
    assert!(!msg.frame.id.unwrap().is_empty());
}

#[tokio::test]
async fn mrc_to_delivers_a_raw_body_to_an_encoded_user() {
    let cluster = Cluster::start(1, 2);
    let user = "ops@example.com";
    let mut ws = login(cluster.ws(0), user).await;
    let nats = cluster.client().await;
    let token = mrc::ident::UserId::new(user).unwrap().token().into_owned();
    let reply = nats
        .request(format!("mrc.to.{token}"), "disk almost full".into())
        .await
        .unwrap();
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report.status, outcomes(&[(user, Outcome::Delivered)]));
    let msg = expect_op(&mut ws, "msg").await;
    assert_eq!(msg.frame.body.unwrap().get(), r#""disk almost full""#);
    assert_eq!(msg.frame.to, [user]);

    let reply = nats
        .request(format!("mrc.to.{token}"), r#"{"level":"warn"}"#.into())
        .await
        .unwrap();
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report.status[user], Outcome::Delivered);
    let msg = expect_op(&mut ws, "msg").await;
    assert_eq!(msg.frame.body.unwrap().get(), r#"{"level":"warn"}"#);
}

#[tokio::test]
async fn bad_ingress_requests_get_error_replies_with_stable_codes() {
    let cluster = Cluster::start(1, 1);
    let nats = cluster.client().await;
    let cases: Vec<(String, bytes::Bytes, ErrorCode)> = vec![
        ("mrc.send".into(), "{not json".into(), ErrorCode::BadJson),
        (
            "mrc.send".into(),
            r#"{"to":"alice","body":1}"#.into(),
            ErrorCode::BadFrame,
        ),
        (
            "mrc.send".into(),
            r#"{"to":[],"body":1}"#.into(),
            ErrorCode::BadFrame,
        ),
        (
            "mrc.send".into(),
            r#"{"to":["a"]}"#.into(),
            ErrorCode::BadFrame,
        ),
        (
            "mrc.send".into(),
            r#"{"to":["a"],"id":"","body":1}"#.into(),
            ErrorCode::BadId,
        ),
        (
            "mrc.send".into(),
            format!(r#"{{"to":[{}],"body":1}}"#, vec!["\"x\""; 1001].join(",")).into(),
            ErrorCode::TooManyReceivers,
        ),
        ("mrc.to.a=b".into(), "hi".into(), ErrorCode::BadId),
        (
            "mrc.send".into(),
            r#"{"to":["a"],"from":"","body":1}"#.into(),
            ErrorCode::BadId,
        ),
        (
            "mrc.send".into(),
            r#"{"to":["a"],"from":"a\u0007","body":1}"#.into(),
            ErrorCode::BadId,
        ),
        (
            "mrc.to.alice".into(),
            bytes::Bytes::from_static(&[0xff, 0xfe]),
            ErrorCode::BadBody,
        ),
    ];
    for (subject, payload, code) in cases {
        let reply = nats
            .request(subject.clone(), payload.clone())
            .await
            .unwrap();
        let error: ErrorReply = serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("{subject} {payload:?}: {e}: {:?}", reply.payload));
        assert_eq!(error.error.code, code, "{subject} {payload:?}");
        // NATS tooling sees the failure without reading the body.
        let headers = reply.headers.expect("an error reply carries headers");
        let status = headers.get("Nats-Service-Error-Code").map(|v| v.as_str());
        assert_eq!(
            status,
            Some(code.status().to_string().as_str()),
            "{subject}"
        );
        let text = headers.get("Nats-Service-Error").unwrap().as_str();
        assert!(text.starts_with(&format!("{code}: ")), "{text}");
    }
    // The gateway is still there.
    let reply = nats
        .request("mrc.send", r#"{"to":["x"],"body":1}"#.into())
        .await
        .unwrap();
    assert!(reply.headers.is_none(), "a report is no error");
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report.status["x"], Outcome::Offline);
}

#[tokio::test]
async fn a_backend_message_sent_the_moment_a_gateway_says_ready_is_answered() {
    // The ready line used to be printed before the NATS door had subscribed: a backend
    // that took it at its word got "no responders" (seen on a busy machine).
    // Each time a cluster of its own: the only gateway is the one that just started.
    for attempt in 0..3 {
        let mut cluster = Cluster::start(1, 0);
        let nats = cluster.client().await;
        cluster.start_gateway("g0");
        let reply = nats
            .request("mrc.send", r#"{"to":["nobody"],"body":1}"#.into())
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        let report: Report = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(report.status, outcomes(&[("nobody", Outcome::Offline)]));
    }
}
