//! The durable inbox through a fault, on three NATS nodes with the inbox replicated three
//! times: kill -9 of the inbox stream's leader in the middle of a burst of stored sends.
//!
//! Recovery is the two nodes left electing a new leader; the killed one stays down.
//! The ledger: every send's reported outcome against what the receiver got at its next
//! login. Every message reported `stored` must arrive (zero loss); one reported
//! `unavailable` may or may not; none arrives twice in one session, and they arrive in
//! the order their sequence numbers give.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mrc::client::WsClient;
use mrc::protocol::code::Outcome;
use serde_json::json;

use crate::support::client::{call, connect, login};
use crate::support::cluster::{Broker, Cluster};
use crate::support::converge::stream_leader;
use crate::support::eventually;

/// Sends before the kill, and stored sends in a row after it that show recovery.
const BEFORE_KILL: usize = 40;
const RECOVERED_STREAK: usize = 30;

#[tokio::test]
async fn killing_the_inbox_stream_leader_loses_no_stored_message() {
    let mut cluster = Cluster::start_replicated(2, 2).await;
    let nats = cluster.client().await;
    let leader = eventually(Duration::from_secs(10), "the inbox stream leader", || {
        stream_leader(&nats, "mrc_inbox")
    })
    .await;
    let (sender_url, receiver_url) = (cluster.ws(0).to_string(), cluster.ws(1).to_string());
    let Broker::Triple(servers) = &mut cluster.broker else {
        unreachable!("a replicated cluster runs on three nodes")
    };
    let node = servers.node_named(&leader).expect("a node of the cluster");

    let mut alice = login(&sender_url, "alice").await;
    let (mut stored, mut other) = (Vec::new(), BTreeMap::<String, usize>::new());
    let (mut sent, mut streak) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent <= BEFORE_KILL || streak < RECOVERED_STREAK {
        assert!(
            Instant::now() < deadline,
            "storing did not recover: {other:?}"
        );
        if sent == BEFORE_KILL {
            servers.kill_node(node);
            streak = 0;
        }
        sent += 1;
        let id = format!("s{sent}");
        let frame =
            json!({"op": "send", "id": id, "to": ["bob"], "body": sent, "offline": "store"});
        let answer = call(&mut alice, frame).await;
        let outcome = answer.frame.status.and_then(|s| s.get("bob").copied());
        match outcome {
            Some(Outcome::Stored) => {
                stored.push(id);
                streak += 1;
            }
            outcome => {
                let what = outcome.map_or(answer.frame.op, |o| o.as_str().to_string());
                *other.entry(what).or_default() += 1;
                streak = 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let arrived = drain_inbox(&receiver_url, &stored).await;
    let lost: Vec<&String> = stored
        .iter()
        .filter(|id| !arrived.contains_key(*id))
        .collect();
    let dup = arrived.values().filter(|n| **n > 1).count();
    eprintln!(
        "inbox-leader-kill: {sent} sent, {} stored, other {other:?}, {} arrived, {} lost, {dup} dup",
        stored.len(),
        arrived.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "reported stored, never arrived: {lost:?}");
    assert_eq!(dup, 0, "a message arrived twice in one session");
}

/// Logs bob in (retrying while the cluster recovers) and takes pushed messages, acking
/// each, until every id of `expected` arrived: how often each message id arrived.
async fn drain_inbox(url: &str, expected: &[String]) -> BTreeMap<String, usize> {
    let mut bob: WsClient = eventually(Duration::from_secs(30), "bob logs in", || async {
        let mut ws = connect(url).await;
        ws.login("bob").await.ok().map(|_| ws)
    })
    .await;
    let mut arrived = BTreeMap::new();
    let (mut last_seq, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while !expected.iter().all(|id| arrived.contains_key(id)) {
        assert!(
            Instant::now() < deadline,
            "{} of {} arrived",
            arrived.len(),
            expected.len()
        );
        match tokio::time::timeout(Duration::from_secs(2), bob.next()).await {
            Ok(Ok(Some(frame))) if frame.frame.op == "msg" => {
                let seq = frame
                    .frame
                    .seq
                    .expect("stored messages carry a sequence number");
                assert!(seq > last_seq, "seq {seq} after {last_seq}: out of order");
                last_seq = seq;
                *arrived.entry(frame.frame.id.expect("an id")).or_insert(0) += 1;
                ack(&mut bob, seq).await;
            }
            Ok(Ok(Some(_))) => {}
            Ok(other) => panic!("bob's connection ended: {other:?}"),
            // Quiet: an ack may have failed during recovery; acking again frees the window.
            Err(_) => ack(&mut bob, last_seq).await,
        }
    }
    arrived
}

async fn ack(ws: &mut WsClient, seq: u64) {
    let frame = json!({"op": "ack", "seq": seq}).to_string();
    ws.send_text(&frame).await.expect("sending an ack");
}
