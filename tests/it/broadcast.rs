//! Broadcasts to every online user, or to the users of some gateways; paced so direct
//! messages are not starved.

use std::time::Duration;

use mrc::protocol::code::Outcome;
use mrc::protocol::nats::BroadcastReport;

use crate::support::client::{expect_op, expect_silence, login, recv, send};
use crate::support::cluster::Cluster;
use crate::support::token;

#[tokio::test]
async fn a_broadcast_reaches_everyone_online_or_only_the_named_gateways() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = vec!["--api-key".into(), token::API_KEY.into()];
    for i in 0..3 {
        cluster.start_gateway(&format!("g{i}"));
    }
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(login(cluster.ws(i % 3), &format!("u{i}")).await);
    }
    let nats = cluster.client().await;
    let reply = nats
        .request(
            "mrc.broadcast",
            r#"{"id":"b1","from":"ops","body":"maintenance at 5"}"#.into(),
        )
        .await
        .unwrap();
    let report: BroadcastReport = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        (report.id.as_str(), report.gateways, report.sessions),
        ("b1", 3, 6)
    );
    for ws in &mut users {
        let msg = expect_op(ws, "msg").await;
        assert!(msg.frame.broadcast, "{}", msg.text);
        assert_eq!(
            (msg.frame.id.as_deref(), msg.frame.from.as_deref()),
            (Some("b1"), Some("ops"))
        );
    }

    // Only gateway g1's users (u1, u4), through the HTTP API.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/broadcast", cluster.gateways[0].http))
        .bearer_auth(token::API_KEY)
        .body(r#"{"id":"b2","gateways":["g1"],"body":1}"#)
        .send()
        .await
        .unwrap();
    let report: BroadcastReport = response.json().await.unwrap();
    assert_eq!((report.gateways, report.sessions), (1, 2));
    for (i, ws) in users.iter_mut().enumerate() {
        if i % 3 == 1 {
            assert_eq!(expect_op(ws, "msg").await.frame.id.as_deref(), Some("b2"));
        } else {
            expect_silence(ws, Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn a_slow_broadcast_does_not_hold_back_direct_messages() {
    let mut cluster = Cluster::start(1, 0);
    // 200 sessions at 100 per second: the broadcast takes about two seconds to push.
    cluster.gateway_args = vec!["--broadcast-rate".into(), "100".into()];
    cluster.start_gateway("g0");
    let mut crowd = Vec::new();
    for i in 0..200 {
        crowd.push(login(cluster.ws(0), &format!("c{i:03}")).await);
    }
    let mut alice = login(cluster.ws(0), "alice").await;
    let nats = cluster.client().await;
    nats.request("mrc.broadcast", r#"{"id":"slow","body":"x"}"#.into())
        .await
        .unwrap();
    // A direct message sent now is delivered while the broadcast is still on its way.
    let (report, _) = send(&mut alice, &["c199"], "direct", "1").await;
    assert_eq!(report["c199"], Outcome::Delivered);
    let mut broadcast_first = 0;
    let target = crowd.last_mut().unwrap();
    loop {
        let frame = recv(target).await;
        match frame.frame.id.as_deref() {
            Some("direct") => break,
            Some("slow") => broadcast_first += 1,
            _ => {}
        }
    }
    let still_waiting = {
        let mut waiting = 0;
        for ws in crowd.iter_mut().take(199) {
            if tokio::time::timeout(Duration::from_millis(1), ws.next())
                .await
                .is_err()
            {
                waiting += 1;
            }
        }
        waiting
    };
    assert!(
        still_waiting > 0,
        "the broadcast had already reached everyone ({broadcast_first})"
    );
}
