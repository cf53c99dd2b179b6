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
