//! Groups across centers and gateways: management with policies, group messages with one
//! deliver request per gateway, and the NATS and HTTP APIs.

use std::time::Duration;

use mrc::protocol::client::Report;
use mrc::protocol::code::{ErrorCode, Outcome};
use serde_json::json;

use crate::support::client::{call, call_ok, expect_op, expect_silence, login, outcomes};
use crate::support::cluster::Cluster;

fn code(received: &mrc::client::Received) -> Option<ErrorCode> {
    assert_eq!(received.frame.op, "error", "{}", received.text);
    received.frame.code
}

#[tokio::test]
async fn clients_manage_groups_within_their_policies() {
    let cluster = Cluster::start(2, 2);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let mut carol = login(cluster.ws(1), "carol").await;

    let created = call_ok(
        &mut alice,
        json!({"op":"group_create","id":"c1","group":"room.1","members":["bob"]}),
    )
    .await;
    let result = created.frame.result.unwrap();
    assert_eq!(
        (result["owner"].as_str(), result["size"].as_u64()),
        (Some("alice"), Some(2))
    );
    assert_eq!(
        result["policy"],
        json!({"send":"members","manage":"owner","join":"invite","visibility":"private"})
    );
    let again = call(
        &mut bob,
        json!({"op":"group_create","id":"c2","group":"room.1"}),
    )
    .await;
    assert_eq!(code(&again), Some(ErrorCode::GroupExists));

    // Members read the private member list; others may not, nor send, nor join.
    let members = call_ok(
        &mut bob,
        json!({"op":"group_members","id":"m1","group":"room.1"}),
    )
    .await;
    assert_eq!(
        members.frame.result.unwrap()["members"],
        json!(["alice", "bob"])
    );
    let denied = call(
        &mut carol,
        json!({"op":"group_members","id":"m2","group":"room.1"}),
    )
    .await;
    assert_eq!(code(&denied), Some(ErrorCode::Forbidden));
    let denied = call(
        &mut carol,
        json!({"op":"group_send","id":"s1","group":"room.1","body":"hi"}),
    )
    .await;
    assert_eq!(code(&denied), Some(ErrorCode::Forbidden));
    let denied = call(
        &mut carol,
        json!({"op":"group_join","id":"j1","group":"room.1"}),
    )
    .await;
    assert_eq!(code(&denied), Some(ErrorCode::Forbidden));
    let denied = call(
        &mut bob,
        json!({"op":"group_add","id":"a0","group":"room.1","members":["carol"]}),
    )
    .await;
    assert_eq!(
        code(&denied),
        Some(ErrorCode::Forbidden),
        "only the owner manages by default"
    );

    // The owner adds carol; carol sends; everyone else gets it once, with the group.
    call_ok(
        &mut alice,
        json!({"op":"group_add","id":"a1","group":"room.1","members":["carol"]}),
    )
    .await;
    let report = call_ok(
        &mut carol,
        json!({"op":"group_send","id":"g1","group":"room.1","body":{"t":1}}),
    )
    .await;
    assert_eq!(report.frame.group.as_deref(), Some("room.1"));
    assert_eq!(
        report.frame.status.unwrap(),
        outcomes(&[("alice", Outcome::Delivered), ("bob", Outcome::Delivered)])
    );
    let counts = report.frame.counts.unwrap();
    assert_eq!((counts.delivered, counts.offline), (2, 0));
    for ws in [&mut alice, &mut bob] {
        let msg = expect_op(ws, "msg").await;
        assert_eq!(
            (msg.frame.group.as_deref(), msg.frame.from.as_deref()),
            (Some("room.1"), Some("carol"))
        );
        assert!(msg.frame.to.is_empty());
        assert_eq!(msg.frame.body.unwrap().get(), r#"{"t":1}"#);
    }
    expect_silence(&mut carol, Duration::from_millis(200)).await;

    // Lists, leaving, and who may delete.
    let list = call_ok(&mut bob, json!({"op":"group_list","id":"l1"})).await;
    assert_eq!(list.frame.result.unwrap()["groups"], json!(["room.1"]));
    call_ok(
        &mut bob,
        json!({"op":"group_leave","id":"x1","group":"room.1"}),
    )
    .await;
    let list = call_ok(&mut bob, json!({"op":"group_list","id":"l2"})).await;
    assert_eq!(list.frame.result.unwrap()["groups"], json!([]));
    let denied = call(
        &mut alice,
        json!({"op":"group_leave","id":"x2","group":"room.1"}),
    )
    .await;
    assert_eq!(
        code(&denied),
        Some(ErrorCode::Forbidden),
        "the owner cannot leave"
    );
    let denied = call(
        &mut carol,
        json!({"op":"group_delete","id":"d1","group":"room.1"}),
    )
    .await;
    assert_eq!(code(&denied), Some(ErrorCode::Forbidden));
    let deleted = call_ok(
        &mut alice,
        json!({"op":"group_delete","id":"d2","group":"room.1"}),
    )
    .await;
    assert_eq!(deleted.frame.result.unwrap()["deleted"], true);
    let gone = call(
        &mut carol,
        json!({"op":"group_send","id":"g2","group":"room.1","body":1}),
    )
    .await;
    assert_eq!(code(&gone), Some(ErrorCode::NotFound));

    // Created again, the group starts with its owner only.
    call_ok(&mut bob, json!({"op":"group_create","id":"c3","group":"room.1","policy":{"join":"open","visibility":"public"}})).await;
    let members = call_ok(
        &mut carol,
        json!({"op":"group_members","id":"m3","group":"room.1"}),
    )
    .await;
    assert_eq!(members.frame.result.unwrap()["members"], json!(["bob"]));
    call_ok(
        &mut carol,
        json!({"op":"group_join","id":"j2","group":"room.1"}),
    )
    .await;
    let members = call_ok(
        &mut alice,
        json!({"op":"group_members","id":"m4","group":"room.1"}),
    )
    .await;
    assert_eq!(
        members.frame.result.unwrap()["members"],
        json!(["bob", "carol"])
    );
}

#[tokio::test]
async fn backends_use_groups_over_nats_and_http() {
    let mut cluster = Cluster::start(1, 0);
    let args = [
        "--api-key",
        crate::support::token::API_KEY,
        "--jwt-secret",
        crate::support::token::SECRET,
    ];
    cluster.set_gateway_args(&args);
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    let nats = cluster.client().await;
    let mut dora = login(cluster.ws(0), "dora").await;
    let mut eve = login(cluster.ws(1), "eve@example.com").await;

    // NATS: a trusted backend creates a group for dora and sends to it.
    let create = json!({"group":"news","user":"dora","members":["eve@example.com","ghost"],"policy":{"send":"owner"}});
    let reply = nats
        .request("mrc.grp.create", create.to_string().into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(info["size"], 3, "{info}");
    let send = json!({"group":"news","from":"newsroom","id":"n1","body":"extra!"});
    let reply = nats
        .request("mrc.grp.send", send.to_string().into())
        .await
        .unwrap();
    let report: Report = serde_json::from_slice(&reply.payload).unwrap();
    let expected = outcomes(&[
        ("dora", Outcome::Delivered),
        ("eve@example.com", Outcome::Delivered),
        ("ghost", Outcome::Offline),
    ]);
    assert_eq!(report.status, expected);
    assert_eq!(
        expect_op(&mut dora, "msg").await.frame.from.as_deref(),
        Some("newsroom")
    );
    assert_eq!(
        expect_op(&mut eve, "msg").await.frame.group.as_deref(),
        Some("news")
    );

    // HTTP: the API key sends as anyone; members are listed; a user's groups too.
    let base = cluster.gateways[0].http.clone();
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/v1/groups/news/messages"))
        .bearer_auth(crate::support::token::API_KEY)
        .body(r#"{"id":"h1","body":{"n":2}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Report = response.json().await.unwrap();
    assert_eq!(report.counts.unwrap().delivered, 2);
    expect_op(&mut dora, "msg").await;
    expect_op(&mut eve, "msg").await;
    let response = http
        .get(format!("{base}/v1/groups/news"))
        .bearer_auth(crate::support::token::API_KEY)
        .send()
        .await
        .unwrap();
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["members"], json!(["dora", "eve@example.com", "ghost"]));
    let response = http
        .get(format!("{base}/v1/users/ghost/groups"))
        .bearer_auth(crate::support::token::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["groups"],
        json!(["news"])
    );
    // Adding through the path without repeating the group in the body.
    let response = http
        .post(format!("{base}/v1/groups/news/members"))
        .bearer_auth(crate::support::token::API_KEY)
        .body(r#"{"members":["zed"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["size"],
        4
    );
    // A user token needs the `mrc:send` scope to send over HTTP, to groups too.
    let plain = crate::support::token::hs256(&crate::support::token::claims("dora", json!({})));
    let url = format!("{base}/v1/groups/news/messages");
    let response = http
        .post(&url)
        .bearer_auth(plain)
        .body(r#"{"body":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The member limit counts the owner.
    let members: Vec<String> = (0..mrc::groups::MAX_GROUP_MEMBERS)
        .map(|i| format!("m{i}"))
        .collect();
    let create = json!({"group":"too-big","user":"owner","members":members});
    let reply = nats
        .request("mrc.grp.create", create.to_string().into())
        .await
        .unwrap();
    let error: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(error["error"]["code"], "too_many_receivers");

    let response = http
        .get(format!("{base}/v1/groups/nope"))
        .bearer_auth(crate::support::token::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Only the owner may send to this group; the directory of members is checked at send.
    let reply = nats
        .request(
            "mrc.grp.resolve",
            r#"{"group":"news","by":"eve@example.com"}"#.into(),
        )
        .await
        .unwrap();
    let error: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(error["error"]["code"], "forbidden");
}

#[tokio::test]
async fn a_10000_member_group_reaches_every_online_member_with_one_request_per_gateway() {
    let cluster = Cluster::start(2, 3);
    let nats = cluster.client().await;
    let members: Vec<String> = (0..10_000).map(|i| format!("member-{i:05}")).collect();
    let create = json!({"group":"everyone","user":"member-00000","members":members,"policy":{"send":"anyone"}});
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        nats.request("mrc.grp.create", create.to_string().into()),
    )
    .await
    .expect("the group is created in time")
    .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(info["size"], 10_000, "{info}");

    // 300 members online, 100 on each gateway; the sender is not a member.
    let mut online = Vec::new();
    for i in 0..300 {
        online.push(login(cluster.ws(i % 3), &members[i * 33]).await);
    }
    let mut sender = login(cluster.ws(0), "announcer").await;
    let base = cluster.gateways[0].http.clone();
    let before = crate::support::counter(&base, "mrc_gateway_deliver_requests_total").await;
    let delivered = r#"mrc_gateway_deliveries_total{outcome="delivered"}"#;
    let delivered_before = crate::support::counter(&base, delivered).await;
    let report = call_ok(
        &mut sender,
        json!({"op":"group_send","id":"big","group":"everyone","body":"hello all"}),
    )
    .await;
    let counts = report.frame.counts.unwrap();
    assert_eq!(
        (counts.delivered, counts.offline, counts.unavailable),
        (300, 9_700, 0)
    );
    assert!(
        report.frame.status.unwrap_or_default().is_empty(),
        "big groups get counts only"
    );
    for ws in &mut online {
        let msg = expect_op(ws, "msg").await;
        assert_eq!(msg.frame.id.as_deref(), Some("big"));
    }
    // One deliver request per destination gateway, not one per member.
    let requests =
        crate::support::counter(&base, "mrc_gateway_deliver_requests_total").await - before;
    assert_eq!(requests, 3.0);
    // The outcome metrics count every routed member (added once per report).
    let counted = crate::support::counter(&base, delivered).await - delivered_before;
    assert_eq!(counted, 300.0);
}
