//! NATS-side authorization with `nats-config/auth.conf`: every role works with its own
//! user, and a backend can inject messages but never impersonate a gateway.

use std::time::Duration;

use mrc::protocol::client::Report;
use mrc::protocol::code::Outcome;
use mrc::protocol::nats::{encode, RegisterRequest};

use crate::support::client::{expect_op, expect_silence, login, outcomes, send};
use crate::support::cluster::{online, Cluster, HEARTBEAT_TIMEOUT_MS};
use crate::support::eventually;

async fn connect_as(cluster: &Cluster, user: &str, password: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(cluster.nats_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn every_role_works_with_its_own_nats_user() {
    let cluster = Cluster::start_secured(2, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "m1", "1").await;
    assert_eq!(report, outcomes(&[("bob", Outcome::Delivered)]));
    expect_op(&mut bob, "msg").await;

    let backend = connect_as(&cluster, "backend", "backend-secret").await;
    // Groups, group messages, presence and broadcasts work with the per-role users too.
    let create = r#"{"group":"team","user":"alice","members":["bob"]}"#;
    let reply = backend
        .request("mrc.grp.create", create.into())
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&reply.payload).contains("error"),
        "{:?}",
        reply.payload
    );
    let reply = backend
        .request(
            "mrc.grp.send",
            r#"{"group":"team","id":"t","body":1}"#.into(),
        )
        .await
        .unwrap();
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report.counts.unwrap().delivered, 2);
    expect_op(&mut alice, "msg").await;
    expect_op(&mut bob, "msg").await;
    let reply = backend
        .request("mrc.dir.presence", r#"{"users":["alice"]}"#.into())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&reply.payload).contains(r#""online":true"#));
    let reply = backend
        .request("mrc.broadcast", r#"{"id":"b","body":2}"#.into())
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reply.payload).contains(r#""sessions":2"#),
        "{:?}",
        reply.payload
    );
    expect_op(&mut alice, "msg").await;
    expect_op(&mut bob, "msg").await;

    let reply = backend
        .request(
            "mrc.send",
            r#"{"to":["alice"],"body":"from backend"}"#.into(),
        )
        .await
        .unwrap();
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(report.status["alice"], Outcome::Delivered);
    expect_op(&mut alice, "msg").await;
}

#[tokio::test]
async fn a_backend_cannot_publish_to_a_gateways_deliver_subject_or_the_directory() {
    let cluster = Cluster::start_secured(1, 1);
    let mut alice = login(cluster.ws(0), "alice").await;
    let backend = connect_as(&cluster, "backend", "backend-secret").await;

    let forged = r#"{"id":"x","from":"admin","to":["alice"],"rcpt":[0],"ts":1,"body":"forged"}"#;
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        backend.request("mrc.gw.g0.deliver", forged.into()),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "the deliver request got an answer: {attempt:?}"
    );
    let register = RegisterRequest {
        user: "mallory".into(),
        session: "s".into(),
        gateway: "g0".into(),
        device: None,
        reassert: false,
    };
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        backend.request("mrc.dir.register", encode(&register)),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "the register request got an answer: {attempt:?}"
    );
    backend
        .publish("mrc.gw.g0.deliver", forged.into())
        .await
        .unwrap();
    backend.flush().await.unwrap();
    expect_silence(&mut alice, Duration::from_millis(500)).await;

    // The directory never heard of mallory.
    let gateway = connect_as(&cluster, "gateway", "gateway-secret").await;
    let lookup = gateway
        .request("mrc.dir.lookup", r#"{"users":["mallory"]}"#.into())
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&lookup.payload).unwrap();
    assert_eq!(reply["users"]["mallory"], serde_json::json!([]));
}

/// A center checks that it can hear gateways (a round trip through nats-server on a
/// subject of its own) before it evicts a silent one: with the example permissions that
/// check must work, or no dead gateway would ever leave the directory.
#[tokio::test]
async fn with_role_permissions_a_killed_gateways_users_leave_the_directory() {
    let mut cluster = Cluster::start_secured(1, 2);
    let _alice = login(cluster.ws(1), "alice").await;
    let nats = connect_as(&cluster, "gateway", "gateway-secret").await;
    assert_eq!(online(&nats, &["alice"]).await, ["alice"]);
    cluster.gateways[1].process.kill();
    let window = Duration::from_millis(HEARTBEAT_TIMEOUT_MS * 4);
    eventually(window, "the dead gateway's user is offline", || async {
        online(&nats, &["alice"]).await.is_empty().then_some(())
    })
    .await;
}
