//! Messages between users on different gateways.

use std::time::Duration;

use mrc::protocol::code::Outcome::{Delivered, Offline, Rejected};

use crate::support::client::{expect_op, expect_silence, login, outcomes, send};
use crate::support::cluster::Cluster;

#[tokio::test]
async fn users_on_different_gateways_exchange_one_to_one_and_multi_receiver_messages() {
    let cluster = Cluster::start(2, 3);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let mut carol = login(cluster.ws(2), "carol").await;

    let (report, _) = send(&mut alice, &["bob"], "m1", r#"{"text": "hi bob"}"#).await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));
    let msg = expect_op(&mut bob, "msg").await;
    assert_eq!(msg.frame.id.as_deref(), Some("m1"));
    assert_eq!(msg.frame.from.as_deref(), Some("alice"));
    assert_eq!(msg.frame.to, ["bob"]);
    assert!(msg.frame.ts.is_some());
    // The body arrives byte for byte, spacing included.
    assert_eq!(msg.frame.body.unwrap().get(), r#"{"text": "hi bob"}"#);

    let (report, _) = send(
        &mut bob,
        &["alice", "carol", "dave", "alice"],
        "m2",
        "[1,2,3]",
    )
    .await;
    assert_eq!(
        report,
        outcomes(&[
            ("alice", Delivered),
            ("carol", Delivered),
            ("dave", Offline)
        ])
    );
    for ws in [&mut alice, &mut carol] {
        let msg = expect_op(ws, "msg").await;
        assert_eq!(msg.frame.id.as_deref(), Some("m2"));
        assert_eq!(msg.frame.from.as_deref(), Some("bob"));
        assert_eq!(msg.frame.to, ["alice", "carol", "dave"]);
        assert_eq!(msg.frame.body.unwrap().get(), "[1,2,3]");
        // Exactly one copy, even though alice was listed twice.
        expect_silence(ws, Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn message_to_an_offline_user_is_reported_offline_and_bad_ids_rejected() {
    let cluster = Cluster::start(1, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let bad = "x".repeat(300);
    let (report, _) = send(&mut alice, &["ghost", &bad, ""], "m1", r#""anyone?""#).await;
    assert_eq!(
        report,
        outcomes(&[("ghost", Offline), (&bad, Rejected), ("", Rejected)])
    );

    // A user who logged out is offline again.
    let bob = login(cluster.ws(1), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "m2", "1").await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));
    bob.close().await;
    let nats = cluster.client().await;
    crate::support::eventually(Duration::from_secs(10), "bob offline", || async {
        crate::support::cluster::online(&nats, &["bob"])
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let (report, _) = send(&mut alice, &["bob"], "m3", "1").await;
    assert_eq!(report, outcomes(&[("bob", Offline)]));
}

#[tokio::test]
async fn awkward_ids_route_to_the_right_user_and_never_to_another() {
    let cluster = Cluster::start(2, 3);
    let ids = [
        "a",
        "b",
        "a.b",
        "a.*",
        "*",
        ">",
        "a.>",
        "a b",
        "alice@example.com",
        "张伟",
        "=a",
        "mrc.gw.g0.deliver",
    ];
    let mut clients = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        clients.push(login(cluster.ws(i % 3), id).await);
    }
    let mut sender = login(cluster.ws(0), "sender").await;
    for (i, id) in ids.iter().enumerate() {
        let (report, _) = send(&mut sender, &[id], &format!("m{i}"), &format!("{i}")).await;
        assert_eq!(report, outcomes(&[(id, Delivered)]), "to {id:?}");
    }
    for (i, (id, ws)) in ids.iter().zip(clients.iter_mut()).enumerate() {
        let msg = expect_op(ws, "msg").await;
        assert_eq!(msg.frame.to, [*id]);
        assert_eq!(
            msg.frame.body.unwrap().get(),
            i.to_string(),
            "{id:?} got another user's message"
        );
        expect_silence(ws, Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_user_with_connections_on_two_gateways_gets_the_message_on_both() {
    let cluster = Cluster::start(2, 3);
    let mut phone = login(cluster.ws(1), "bob").await;
    let mut laptop = login(cluster.ws(2), "bob").await;
    let mut alice = login(cluster.ws(0), "alice").await;
    let (report, _) = send(&mut alice, &["bob"], "m1", r#""both?""#).await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));
    for ws in [&mut phone, &mut laptop] {
        let msg = expect_op(ws, "msg").await;
        assert_eq!(msg.frame.id.as_deref(), Some("m1"));
    }

    // Closing one device leaves the other reachable.
    phone.close().await;
    let nats = cluster.client().await;
    crate::support::eventually(
        Duration::from_secs(10),
        "phone session unregistered",
        || async {
            let reply = crate::support::cluster::lookup(&nats, &["bob"]).await;
            (reply.users["bob"].len() == 1).then_some(())
        },
    )
    .await;
    let (report, _) = send(&mut alice, &["bob"], "m2", "2").await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));
    let msg = expect_op(&mut laptop, "msg").await;
    assert_eq!(msg.frame.id.as_deref(), Some("m2"));
}

#[tokio::test]
async fn a_stale_cached_route_still_delivers_after_re_resolving() {
    // Route-change notices are off, so the sender's cache really goes stale.
    let cluster = Cluster::start_with(1, 3, &["--follow-route-changes", "false"]);
    let mut alice = login(cluster.ws(0), "alice").await;
    let bob = login(cluster.ws(1), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "m1", "1").await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));

    // bob moves from g1 to g2; g0 still caches "bob is on g1".
    bob.close().await;
    let nats = cluster.client().await;
    crate::support::eventually(Duration::from_secs(10), "bob gone from g1", || async {
        crate::support::cluster::online(&nats, &["bob"])
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let mut bob = login(cluster.ws(2), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "m2", "2").await;
    assert_eq!(report, outcomes(&[("bob", Delivered)]));
    let msg = expect_op(&mut bob, "msg").await;
    assert_eq!(msg.frame.id.as_deref(), Some("m2"));
}

#[tokio::test]
async fn a_burst_to_another_gateway_is_batched_and_every_message_arrives_once() {
    let mut cluster = Cluster::start(1, 0);
    // One deliver request out at a time: the rest of the burst must leave in batches.
    cluster.gateway_args = vec![
        "--rate-per-sec".into(),
        "100000".into(),
        "--rate-burst".into(),
        "100000".into(),
        "--deliver-in-flight".into(),
        "1".into(),
    ];
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let to = vec!["bob".to_string()];
    let count = 500;
    for i in 0..count {
        alice
            .send(
                &to,
                Some(&format!("b{i}")),
                &crate::support::client::body("1"),
            )
            .await
            .unwrap();
    }
    let mut delivered = 0;
    while delivered < count {
        let frame = crate::support::client::recv(&mut alice).await;
        if frame.frame.op == "report" {
            assert_eq!(
                frame.frame.status.unwrap()["bob"],
                Delivered,
                "{}",
                frame.text
            );
            delivered += 1;
        }
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < count {
        let msg = expect_op(&mut bob, "msg").await;
        assert!(
            seen.insert(msg.frame.id.unwrap()),
            "a message arrived twice"
        );
    }
    expect_silence(&mut bob, Duration::from_millis(200)).await;
    let batches = crate::support::counter(
        &cluster.gateways[0].http,
        "mrc_gateway_batches_total{kind=\"deliver\"}",
    )
    .await;
    eprintln!(
        "{count} messages to another gateway went out in {batches} batches plus single requests"
    );
    assert!(
        batches >= 1.0,
        "a burst behind one request in flight was not batched"
    );
}

/// Gateways send each other deliver requests in the compact form (PROTOCOL.md 3.5); the
/// JSON form still works by hand, alone or as an array.
#[tokio::test]
async fn a_gateway_takes_deliver_requests_typed_by_hand_and_in_the_compact_form() {
    let cluster = Cluster::start(1, 1);
    let mut alice = login(cluster.ws(0), "alice").await;
    let nats = cluster.client().await;
    let ask = |payload: Vec<u8>| {
        let nats = nats.clone();
        async move {
            let reply = nats.request("mrc.gw.g0.deliver", payload.into()).await;
            String::from_utf8(reply.unwrap().payload.to_vec()).unwrap()
        }
    };

    let typed = r#"{"id":"j1","to":["alice","zed"],"rcpt":[0,1],"ts":7,"body":{"a": 1}}"#;
    let reply = ask(typed.into()).await;
    assert_eq!(reply, r#"{"delivered":["alice"],"absent":["zed"]}"#);
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.id.as_deref(), Some("j1"));
    assert_eq!(msg.frame.body.unwrap().get(), r#"{"a": 1}"#);

    let array = format!("[{typed}, {}]", typed.replace("j1", "j2"));
    let reply = ask(array.into()).await;
    assert_eq!(
        reply.matches("\"delivered\":[\"alice\"]").count(),
        2,
        "{reply}"
    );
    for id in ["j1", "j2"] {
        let msg = expect_op(&mut alice, "msg").await;
        assert_eq!(msg.frame.id.as_deref(), Some(id));
    }

    // The compact form, laid out by hand: magic, one request, flags (from), ts, id, from,
    // to, rcpt, members, body.
    let string = |s: &str| [&(s.len() as u32).to_le_bytes()[..], s.as_bytes()].concat();
    let count = |n: u32| n.to_le_bytes().to_vec();
    let compact = [
        vec![0, 1, 2],
        7u64.to_le_bytes().to_vec(),
        string("c1"),
        string("bob"),
        count(1),
        string("alice"),
        count(1),
        count(0),
        count(0),
        string("[1, 2]"),
    ]
    .concat();
    let reply = ask(compact.clone()).await;
    assert_eq!(reply, r#"{"delivered":["alice"],"absent":[]}"#);
    let msg = expect_op(&mut alice, "msg").await;
    assert_eq!(msg.frame.id.as_deref(), Some("c1"));
    assert_eq!(msg.frame.from.as_deref(), Some("bob"));
    assert_eq!(msg.frame.to, ["alice"]);
    assert_eq!(msg.frame.ts, Some(7));
    assert_eq!(msg.frame.body.unwrap().get(), "[1, 2]");

    // A compact request with a body that is not JSON is refused, and nothing is pushed.
    let mut broken = compact[..compact.len() - 6].to_vec();
    broken.extend(b"[1, 2");
    let at = broken.len() - 9;
    broken[at] = 5;
    let reply = ask(broken).await;
    assert!(reply.contains("\"code\":\"bad_frame\""), "{reply}");
    expect_silence(&mut alice, Duration::from_millis(200)).await;
}
