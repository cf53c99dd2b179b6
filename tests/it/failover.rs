//! Process crashes: a center or a gateway dies with SIGKILL.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mrc::protocol::code::Outcome::Delivered;
use mrc::protocol::nats::{Presence, PresenceStatus};

use crate::support::client::{expect_op, login, send};
use crate::support::cluster::{online, Cluster, HEARTBEAT_TIMEOUT_MS};
use crate::support::eventually;

#[tokio::test]
async fn killing_a_center_mid_run_loses_no_lookups() {
    // A 1 ms cache makes every send look its receiver up in the directory.
    let mut cluster = Cluster::start_with(2, 2, &["--cache-ttl-ms", "1"]);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let started = Instant::now();
    let mut killed = false;
    for i in 0..120 {
        if i == 40 {
            cluster.centers[0].process.kill();
            killed = true;
        }
        let id = format!("m{i}");
        let (report, _) = send(&mut alice, &["bob"], &id, &i.to_string()).await;
        assert_eq!(
            report["bob"], Delivered,
            "message {i} (center killed: {killed})"
        );
        let msg = expect_op(&mut bob, "msg").await;
        assert_eq!(msg.frame.id.as_deref(), Some(id.as_str()));
    }
    assert!(killed);
    eprintln!(
        "120 sends across a center crash took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_killed_gateways_users_leave_the_directory_within_the_heartbeat_window_once() {
    let mut cluster = Cluster::start(2, 2);
    let nats = cluster.client().await;
    let mut events = nats.subscribe("mrc.presence.>").await.unwrap();
    nats.flush().await.unwrap();
    let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut clients = Vec::new();
    for user in &users {
        clients.push(login(cluster.ws(1), user).await);
    }
    // One survivor on the other gateway.
    let _survivor = login(cluster.ws(0), "survivor").await;
    assert_eq!(online(&nats, &names).await.len(), users.len());

    let killed_at = Instant::now();
    cluster.gateways[1].process.kill();
    let window = Duration::from_millis(HEARTBEAT_TIMEOUT_MS * 4);
    eventually(window, "the dead gateway's users are offline", || async {
        online(&nats, &names).await.is_empty().then_some(())
    })
    .await;
    eprintln!(
        "users gone {:?} after SIGKILL (timeout {HEARTBEAT_TIMEOUT_MS} ms)",
        killed_at.elapsed()
    );
    assert_eq!(online(&nats, &["survivor"]).await, ["survivor"]);

    // Both centers noticed, but every user went offline exactly once.
    let mut offline: BTreeMap<String, usize> = BTreeMap::new();
    while let Ok(Some(msg)) = tokio::time::timeout(
        Duration::from_millis(HEARTBEAT_TIMEOUT_MS * 2),
        events.next(),
    )
    .await
    {
        let event: Presence = serde_json::from_slice(&msg.payload).unwrap();
        if event.status == PresenceStatus::Offline {
            *offline.entry(event.user).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = users.iter().map(|u| (u.clone(), 1)).collect();
    assert_eq!(offline, expected);
}

#[tokio::test]
async fn a_gateway_restarted_under_the_same_id_drops_its_earlier_sessions() {
    let mut cluster = Cluster::start(1, 1);
    let nats = cluster.client().await;
    let _ghost = login(cluster.ws(0), "ghost").await;
    cluster.gateways[0].process.kill();
    cluster.gateways.clear();
    // Back before any center could notice the silence.
    cluster.start_gateway("g0");
    assert!(online(&nats, &["ghost"]).await.is_empty());
}

#[tokio::test]
async fn losing_one_nats_node_of_three_loses_no_message_reported_delivered() {
    let mut cluster = Cluster::start_replicated(2, 2).await;
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "before", "0").await;
    assert_eq!(report["bob"], Delivered);
    expect_op(&mut bob, "msg").await;

    let crate::support::cluster::Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!()
    };
    nats.kill_node(0);
    // Keep sending through the failure: whatever is reported delivered must arrive, and
    // delivery must come back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut delivered, mut streak) = (Vec::new(), 0);
    let mut i = 0;
    while streak < 20 {
        assert!(
            Instant::now() < deadline,
            "delivery did not recover; {} delivered",
            delivered.len()
        );
        i += 1;
        let id = format!("m{i}");
        let (report, _) = send(&mut alice, &["bob"], &id, &i.to_string()).await;
        if report["bob"] == Delivered {
            delivered.push(id);
            streak += 1;
        } else {
            streak = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut received = Vec::new();
    while received.len() < delivered.len() {
        let msg = expect_op(&mut bob, "msg").await;
        received.push(msg.frame.id.unwrap());
    }
    assert_eq!(received, delivered);
    eprintln!(
        "{} of {i} messages reported delivered across the node loss",
        delivered.len()
    );
    // The replicated directory still knows both users, and takes new logins.
    let client = cluster.client().await;
    assert_eq!(online(&client, &["alice", "bob"]).await, ["alice", "bob"]);
    // Directory writes may need a moment longer than routing to come back (a new stream
    // leader); a client whose login is refused `unavailable` tries again.
    let mut carol =
        crate::support::eventually(Duration::from_secs(30), "carol logs in", || async {
            let mut ws = crate::support::client::connect(cluster.ws(1)).await;
            ws.login("carol").await.ok().map(|_| ws)
        })
        .await;
    let (report, _) = send(&mut alice, &["carol"], "after", "1").await;
    assert_eq!(report["carol"], Delivered);
    assert_eq!(
        expect_op(&mut carol, "msg").await.frame.id.as_deref(),
        Some("after")
    );
}
