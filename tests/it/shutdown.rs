//! Graceful stop: SIGTERM on a gateway.

use std::time::Duration;

use crate::support::client::{expect_op, login};
use crate::support::cluster::{online, Cluster};

#[tokio::test]
async fn sigterm_says_bye_to_clients_unregisters_them_and_exits_zero() {
    let mut cluster = Cluster::start(1, 2);
    let nats = cluster.client().await;
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(0), "bob").await;
    let _carol = login(cluster.ws(1), "carol").await;
    assert_eq!(online(&nats, &["alice", "bob", "carol"]).await.len(), 3);

    cluster.gateways[0].process.terminate();
    for ws in [&mut alice, &mut bob] {
        let bye = expect_op(ws, "bye").await;
        assert_eq!(bye.frame.reason.as_deref(), Some("shutdown"));
        let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap();
        assert!(closed.is_none());
    }
    let status = cluster.gateways[0]
        .process
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits");
    assert!(status.success(), "exit status {status:?}");
    // Gone from the directory at once, not after a heartbeat timeout.
    assert_eq!(online(&nats, &["alice", "bob", "carol"]).await, ["carol"]);
}

#[tokio::test]
async fn sigterm_stops_a_center_cleanly_and_the_other_takes_over() {
    let mut cluster = Cluster::start(2, 1);
    let nats = cluster.client().await;
    let _alice = login(cluster.ws(0), "alice").await;
    let center = &mut cluster.centers[0].process;
    center.terminate();
    let status = center
        .wait_exit(Duration::from_secs(15))
        .expect("the center exits");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(online(&nats, &["alice"]).await, ["alice"]);
}

#[tokio::test]
async fn a_gateway_stops_within_its_grace_period_even_when_nats_is_gone() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = vec!["--shutdown-grace-ms".into(), "1000".into()];
    cluster.start_gateway("g0");
    let mut alice = login(cluster.ws(0), "alice").await;
    // Take NATS away, then stop the gateway.
    let crate::support::cluster::Broker::Single(nats) =
        std::mem::replace(&mut cluster.broker, crate::support::cluster::Broker::Gone)
    else {
        unreachable!()
    };
    drop(nats);
    cluster.gateways[0].process.terminate();
    let bye = expect_op(&mut alice, "bye").await;
    assert_eq!(bye.frame.reason.as_deref(), Some("shutdown"));
    let status = cluster.gateways[0]
        .process
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits in time");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_drain_window_spreads_the_closes_and_sessions_work_until_their_turn() {
    let mut cluster = Cluster::start(1, 1);
    cluster.gateway_args = vec!["--drain-window-ms".into(), "3000".into()];
    cluster.start_gateway("g1");
    let mut sender = login(cluster.ws(0), "sender").await;
    let mut clients = Vec::new();
    for i in 0..16 {
        clients.push(login(cluster.ws(1), &format!("u{i}")).await);
    }
    cluster.gateways[1].process.terminate();
    let started = std::time::Instant::now();
    // Sent during the window: a session still gets what is sent to it until its `bye`.
    let mut delivered = Vec::new();
    for i in 0..clients.len() {
        let user = format!("u{i}");
        let (report, _) = crate::support::client::send(&mut sender, &[&user], "late", "1").await;
        delivered.push(report[&user] == mrc::protocol::code::Outcome::Delivered);
    }
    assert!(
        delivered.iter().any(|d| *d),
        "sessions work during the window"
    );
    let closes = clients
        .iter_mut()
        .zip(delivered)
        .map(|(ws, delivered)| async move {
            if delivered {
                expect_op(ws, "msg").await;
            }
            expect_op(ws, "bye").await;
            started.elapsed()
        });
    let mut byes = futures::future::join_all(closes).await;
    byes.sort();
    let spread = byes[byes.len() - 1] - byes[0];
    assert!(
        spread > Duration::from_millis(1000),
        "16 closes over a 3 s window arrived within {spread:?}: {byes:?}"
    );
    let status = cluster.gateways[1]
        .process
        .wait_exit(Duration::from_secs(20));
    assert!(status.expect("the gateway exits").success());
}
