//! Presence: batch status queries through every door, and subscriptions to other users'
//! online/offline events within the presence policy.

use std::time::Duration;

use mrc::protocol::nats::{PresenceReply, PresenceStatus};
use serde_json::json;

use crate::support::client::{call_ok, expect_op, expect_silence, login};
use crate::support::cluster::Cluster;
use crate::support::token;

#[tokio::test]
async fn batch_presence_answers_online_sessions_and_since_on_every_door() {
    let mut cluster = Cluster::start(1, 0);
    cluster.gateway_args = vec!["--api-key".into(), token::API_KEY.into()];
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    let _a1 = login(cluster.ws(0), "alice").await;
    let _a2 = login(cluster.ws(1), "alice").await;
    let mut bob = login(cluster.ws(0), "bob").await;

    let nats = cluster.client().await;
    let reply = nats
        .request(
            "mrc.dir.presence",
            r#"{"users":["alice","ghost",""]}"#.into(),
        )
        .await
        .unwrap();
    let reply: PresenceReply = serde_json::from_slice(&reply.payload).unwrap();
    let alice = &reply.users["alice"];
    assert_eq!((alice.online, alice.sessions), (true, 2));
    assert_eq!(
        reply.refused,
        [""],
        "an invalid id is refused, the rest answered"
    );
    assert!(alice.since.is_some());
    assert_eq!(
        (reply.users["ghost"].online, reply.users["ghost"].since),
        (false, None)
    );

    let result = call_ok(
        &mut bob,
        json!({"op":"presence","id":"p1","users":["alice","ghost"]}),
    )
    .await;
    let result = result.frame.result.unwrap();
    assert_eq!(result["users"]["alice"]["sessions"], 2);
    assert_eq!(result["users"]["ghost"]["online"], false);

    let response = reqwest::Client::new()
        .post(format!("{}/v1/presence", cluster.gateways[0].http))
        .bearer_auth(token::API_KEY)
        .body(r#"{"users":["bob"]}"#)
        .send()
        .await
        .unwrap();
    let reply: PresenceReply = response.json().await.unwrap();
    assert!(reply.users["bob"].online);
}

#[tokio::test]
async fn clients_follow_presence_of_users_they_share_a_group_with() {
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--presence-policy".into(), "shared-group".into()];
    cluster.start_center("c0");
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    let mut alice = login(cluster.ws(0), "alice").await;
    call_ok(
        &mut alice,
        json!({"op":"group_create","id":"c","group":"team","members":["bob"]}),
    )
    .await;

    let result = call_ok(
        &mut alice,
        json!({"op":"presence_subscribe","id":"s1","users":["bob","carol"]}),
    )
    .await;
    let result = result.frame.result.unwrap();
    assert_eq!(result["users"]["bob"]["online"], false);
    assert_eq!(result["refused"], json!(["carol"]));

    let bob = login(cluster.ws(1), "bob").await;
    let carol = login(cluster.ws(1), "carol").await;
    let online = expect_op(&mut alice, "presence").await;
    assert_eq!(
        (online.frame.user.as_deref(), online.frame.state),
        (Some("bob"), Some(PresenceStatus::Online))
    );
    bob.close().await;
    let offline = expect_op(&mut alice, "presence").await;
    assert_eq!(
        (offline.frame.user.as_deref(), offline.frame.state),
        (Some("bob"), Some(PresenceStatus::Offline))
    );
    carol.close().await;
    // Carol's events never reach alice.
    expect_silence(&mut alice, Duration::from_millis(500)).await;

    // After unsubscribing, bob's next login is not reported.
    call_ok(
        &mut alice,
        json!({"op":"presence_unsubscribe","id":"u1","users":["bob"]}),
    )
    .await;
    let _bob = login(cluster.ws(0), "bob").await;
    expect_silence(&mut alice, Duration::from_millis(500)).await;
}
