//! The durable inbox: messages for users who are not online are stored when the send
//! asks (or the gateway's `--offline store` says), pushed at login in order with their
//! sequence numbers, pushed again until acknowledged, readable and acknowledgeable through
//! every door.

use std::time::Duration;

use mrc::client::WsClient;
use mrc::protocol::code::Outcome::{self, Delivered, InboxFull, Stored};
use serde_json::json;

use crate::support::client::{call_ok, expect_op, expect_silence, login, outcomes, recv};
use crate::support::cluster::Cluster;
use crate::support::token;

/// Sends `text` to `to` asking that it be stored for whoever is not online; the outcomes.
async fn send_stored(ws: &mut WsClient, to: &[&str], id: &str, text: &str) -> Vec<Outcome> {
    let frame = json!({"op": "send", "id": id, "to": to, "body": text, "offline": "store"});
    let report = call_ok(ws, frame).await;
    let status = report.frame.status.expect("a report");
    to.iter().map(|user| status[*user]).collect()
}

/// The next `n` stored messages pushed to `ws`: (message id, sequence number).
async fn pushed(ws: &mut WsClient, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = expect_op(ws, "msg").await;
        let seq = msg
            .frame
            .seq
            .expect("stored messages carry their sequence number");
        got.push((msg.frame.id.expect("an id"), seq));
    }
    got
}

fn ids(pushed: &[(String, u64)]) -> Vec<&str> {
    pushed.iter().map(|(id, _)| id.as_str()).collect()
}

#[tokio::test]
async fn stored_messages_arrive_at_login_in_order_until_acknowledged() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    for id in ["m1", "m2", "m3"] {
        assert_eq!(send_stored(&mut alice, &["bob"], id, id).await, [Stored]);
    }

    // In order, each once, with increasing sequence numbers.
    let mut bob = login(cluster.ws(1), "bob").await;
    let first = pushed(&mut bob, 3).await;
    assert_eq!(ids(&first), ["m1", "m2", "m3"]);
    assert!(first.windows(2).all(|w| w[0].1 < w[1].1), "{first:?}");
    expect_silence(&mut bob, Duration::from_millis(300)).await;

    // Not acknowledged: all three again at the next login (on another gateway).
    bob.close().await;
    let mut bob = login(cluster.ws(0), "bob").await;
    assert_eq!(pushed(&mut bob, 3).await, first);

    // Acknowledged up to m2: only m3 is left, for the next login and for a fetch.
    let acked = call_ok(
        &mut bob,
        json!({"op": "ack", "id": "a1", "seq": first[1].1}),
    )
    .await;
    assert_eq!(acked.frame.result.unwrap()["removed"], 2);
    bob.close().await;
    let mut bob = login(cluster.ws(1), "bob").await;
    assert_eq!(pushed(&mut bob, 1).await, [first[2].clone()]);
    let fetched = call_ok(&mut bob, json!({"op": "fetch", "id": "f1"})).await;
    let result = fetched.frame.result.unwrap();
    assert_eq!(result["messages"].as_array().unwrap().len(), 1);
    assert_eq!(result["messages"][0]["id"], "m3");
    assert_eq!(result["messages"][0]["seq"], first[2].1);
    assert_eq!(result["messages"][0]["body"], "m3");
    assert_eq!(result["more"], false);

    // A live message to an online user is delivered, not stored, and has no sequence.
    let (report, _) = crate::support::client::send(&mut alice, &["bob"], "m4", "1").await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));
    let live = expect_op(&mut bob, "msg").await;
    assert_eq!(
        (live.frame.id.as_deref(), live.frame.seq),
        (Some("m4"), None)
    );
}

#[tokio::test]
async fn a_full_inbox_refuses_with_inbox_full_and_keeps_what_it_has() {
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--inbox-max-per-user".into(), "2".into()];
    cluster.start_center("c0");
    cluster.gateway_args = vec!["--offline".into(), "store".into()];
    cluster.start_gateway("g0");
    let mut alice = login(cluster.ws(0), "alice").await;
    // The gateway's default stores: the send does not need to ask.
    let (report, _) = crate::support::client::send(&mut alice, &["bob"], "m1", "1").await;
    assert_eq!(report, outcomes(&[("bob", Stored)]));
    assert_eq!(send_stored(&mut alice, &["bob"], "m2", "2").await, [Stored]);
    assert_eq!(
        send_stored(&mut alice, &["bob"], "m3", "3").await,
        [InboxFull]
    );
    let mut bob = login(cluster.ws(0), "bob").await;
    assert_eq!(ids(&pushed(&mut bob, 2).await), ["m1", "m2"]);
}

#[tokio::test]
async fn a_retried_send_with_the_same_id_is_stored_once() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut carol = login(cluster.ws(1), "carol").await;
    assert_eq!(
        send_stored(&mut alice, &["bob"], "same", "x").await,
        [Stored]
    );
    // The retry may reach another gateway: JetStream's duplicate window decides.
    assert_eq!(
        send_stored(&mut carol, &["bob"], "same", "x").await,
        [Stored]
    );
    let mut bob = login(cluster.ws(1), "bob").await;
    assert_eq!(ids(&pushed(&mut bob, 1).await), ["same"]);
    expect_silence(&mut bob, Duration::from_millis(300)).await;
}

/// One center and one gateway taking tokens and the API key.
fn api_cluster() -> Cluster {
    let mut cluster = Cluster::start(1, 0);
    cluster.set_gateway_args(&["--jwt-secret", token::SECRET, "--api-key", token::API_KEY]);
    cluster.start_gateway("g0");
    cluster
}

/// `GET url` with `auth` as the bearer: the status and the JSON body.
async fn get(url: &str, auth: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(auth)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn backends_read_and_acknowledge_inboxes_over_nats_and_http() {
    let cluster = api_cluster();
    let nats = cluster.client().await;
    let send = json!({"to": ["bob"], "id": "n1", "body": {"k": 1}, "offline": "store"});
    let reply = nats
        .request("mrc.send", send.to_string().into())
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report["status"]["bob"], "stored");

    let fetch = json!({"user": "bob"}).to_string();
    let reply = nats.request("mrc.inbox.fetch", fetch.into()).await.unwrap();
    let fetched: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(fetched["messages"][0]["id"], "n1");
    assert_eq!(fetched["messages"][0]["body"], json!({"k": 1}));
    let seq = fetched["messages"][0]["seq"].as_u64().unwrap();

    let http = cluster.gateways[0].http.clone();
    let url = format!("{http}/v1/users/bob/inbox?since=0");
    let (status, api) = get(&url, token::API_KEY).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["messages"][0]["seq"], seq);
    // A token reads its own inbox only.
    let bob = token::hs256(&token::claims("bob", json!({})));
    assert_eq!(get(&url, &bob).await.0, 200);
    let eve = token::hs256(&token::claims("eve", json!({})));
    let (status, refused) = get(&url, &eve).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("forbidden"))
    );

    let ack = json!({"user": "bob", "seq": seq}).to_string();
    let reply = nats.request("mrc.inbox.ack", ack.into()).await.unwrap();
    let acked: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(acked["removed"], 1);
    let fetch = json!({"user": "bob"}).to_string();
    let reply = nats.request("mrc.inbox.fetch", fetch.into()).await.unwrap();
    let fetched: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(fetched["messages"], json!([]));
}

#[tokio::test]
async fn an_ack_without_a_sequence_number_is_a_bad_frame() {
    let cluster = Cluster::start(1, 1);
    let mut eve = login(cluster.ws(0), "eve").await;
    eve.send_text(&json!({"op": "ack", "id": "x"}).to_string())
        .await
        .unwrap();
    let refused = recv(&mut eve).await;
    assert_eq!(refused.frame.op, "error", "{}", refused.text);
    assert_eq!(
        refused.frame.message.as_deref(),
        Some("missing field `seq`")
    );
}

#[tokio::test]
async fn a_durable_send_is_pushed_live_and_kept_until_acknowledged() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let frame = json!({"op": "send", "id": "d1", "to": ["bob", "carol", ""], "body": "hi", "durable": true});
    let report = call_ok(&mut alice, frame).await.frame.status.unwrap();
    // Online or not, every valid receiver's copy is stored first; bad ids are rejected.
    assert_eq!(report["bob"], Stored);
    assert_eq!(report["carol"], Stored);
    assert_eq!(report[""], Outcome::Rejected);
    let live = pushed(&mut bob, 1).await;
    assert_eq!(ids(&live), ["d1"]);

    // Dropped before the ack: pushed again at the next login, and counted.
    let gateway = cluster.gateways[1].http.clone();
    bob.close().await;
    let redelivered = r#"mrc_gateway_inbox_total{event="redelivered"}"#;
    crate::support::eventually(Duration::from_secs(5), "the unacked push counted", || {
        let gateway = gateway.clone();
        async move { (crate::support::counter(&gateway, redelivered).await >= 1.0).then_some(()) }
    })
    .await;
    let mut bob = login(cluster.ws(0), "bob").await;
    assert_eq!(pushed(&mut bob, 1).await, live);
    call_ok(&mut bob, json!({"op": "ack", "id": "a", "seq": live[0].1})).await;
    bob.close().await;
    let mut bob = login(cluster.ws(1), "bob").await;
    expect_silence(&mut bob, Duration::from_millis(300)).await;
    let mut carol = login(cluster.ws(1), "carol").await;
    assert_eq!(ids(&pushed(&mut carol, 1).await), ["d1"]);
}

#[tokio::test]
async fn a_live_message_retried_with_its_id_is_pushed_once() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut carol = login(cluster.ws(0), "carol").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let (first, _) = crate::support::client::send(&mut alice, &["bob"], "r1", "1").await;
    // The retry reports what the first did, and bob sees the message once.
    let (again, _) = crate::support::client::send(&mut carol, &["bob"], "r1", "1").await;
    assert_eq!(first, outcomes(&[("bob", Delivered)]));
    assert_eq!(again, first);
    assert_eq!(
        expect_op(&mut bob, "msg").await.frame.id.as_deref(),
        Some("r1")
    );
    expect_silence(&mut bob, Duration::from_millis(300)).await;
    // Messages whose ids the gateway generates are never filtered.
    let frame = json!({"op": "send", "to": ["bob"], "body": "same"}).to_string();
    for _ in 0..2 {
        alice.send_text(&frame).await.unwrap();
        expect_op(&mut bob, "msg").await;
    }
}
