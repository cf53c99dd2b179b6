//! The directory across centers: fencing, late centers, presence.

use std::time::Duration;

use futures::StreamExt;
use mrc::protocol::nats::{
    encode, Presence, PresenceStatus, RegisterRequest, SessionsReply, UnregisterRequest,
};

use crate::support::client::login;
use crate::support::cluster::{lookup, online, Cluster};
use crate::support::eventually;

async fn request<T: serde::Serialize, R: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    payload: &T,
) -> R {
    let reply = client
        .request(subject.to_string(), encode(payload))
        .await
        .expect("a reply");
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{e}: {:?}", reply.payload))
}

fn register(user: &str, session: &str, gateway: &str) -> RegisterRequest {
    RegisterRequest {
        user: user.into(),
        session: session.into(),
        gateway: gateway.into(),
        device: None,
        reassert: false,
    }
}

#[tokio::test]
async fn a_late_unregister_does_not_remove_a_newer_login() {
    let cluster = Cluster::start(2, 0);
    let nats = cluster.client().await;
    // The old connection registered, then the user logged in again elsewhere...
    let r: SessionsReply =
        request(&nats, "mrc.dir.register", &register("alice", "old", "gw-a")).await;
    assert_eq!(r.sessions, 1);
    let r: SessionsReply =
        request(&nats, "mrc.dir.register", &register("alice", "new", "gw-b")).await;
    assert_eq!(r.sessions, 2);
    // ...and the old connection's unregister arrives late, maybe twice.
    for _ in 0..2 {
        let unregister = UnregisterRequest {
            user: "alice".into(),
            session: "old".into(),
        };
        let r: SessionsReply = request(&nats, "mrc.dir.unregister", &unregister).await;
        assert_eq!(r.sessions, 1);
    }
    let reply = lookup(&nats, &["alice"]).await;
    let sessions = &reply.users["alice"];
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].session.as_str(), sessions[0].gateway.as_str()),
        ("new", "gw-b")
    );

    // An unregister for a session that never existed changes nothing either.
    let unregister = UnregisterRequest {
        user: "alice".into(),
        session: "never".into(),
    };
    let r: SessionsReply = request(&nats, "mrc.dir.unregister", &unregister).await;
    assert_eq!(r.sessions, 1);
}

#[tokio::test]
async fn a_center_started_later_answers_with_the_full_directory() {
    let mut cluster = Cluster::start(1, 2);
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let mut clients = Vec::new();
    for (i, user) in users.iter().enumerate() {
        clients.push(login(cluster.ws(i % 2), user).await);
    }
    cluster.start_center("late");
    // Only the late center is left to answer.
    cluster.centers[0].process.kill();
    let nats = cluster.client().await;
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let found = online(&nats, &names).await;
    assert_eq!(found.len(), users.len(), "late center knows only {found:?}");
}

#[tokio::test]
async fn presence_events_mark_the_first_login_and_the_last_logout() {
    let cluster = Cluster::start(2, 2);
    let nats = cluster.client().await;
    let mut events = nats.subscribe("mrc.presence.>").await.unwrap();
    nats.flush().await.unwrap();
    let first = login(cluster.ws(0), "张伟").await;
    let second = login(cluster.ws(1), "张伟").await;
    first.close().await;
    second.close().await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a presence event")
            .unwrap();
        let token = msg
            .subject
            .strip_prefix("mrc.presence.")
            .unwrap()
            .to_string();
        let event: Presence = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(event.user, "张伟");
        assert_eq!(mrc::ident::UserId::new("张伟").unwrap().token(), token);
        seen.push(event.status);
    }
    assert_eq!(seen, [PresenceStatus::Online, PresenceStatus::Offline]);
    // The second login and the first logout were not transitions.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn centers_announce_themselves_and_hear_each_other() {
    let mut cluster = Cluster::start(1, 0);
    cluster.start_center("c1");
    let nats = cluster.client().await;
    eventually(
        Duration::from_secs(10),
        "both centers list the other as a peer",
        || async {
            let inbox = nats.new_inbox();
            let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
            nats.publish_with_reply("$SRV.STATS.mrc-center", inbox, "".into())
                .await
                .unwrap();
            let mut peers = Vec::new();
            while let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_millis(300), replies.next()).await
            {
                let stats: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
                let data = stats["endpoints"][0]["data"].clone();
                peers.push((
                    data["center"].as_str().unwrap_or("?").to_string(),
                    data["peers"].clone(),
                ));
            }
            peers.sort_by(|a, b| a.0.cmp(&b.0));
            let expected = vec![
                ("c0".to_string(), serde_json::json!(["c1"])),
                ("c1".to_string(), serde_json::json!(["c0"])),
            ];
            (peers == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn bucket_state_is_read_fresh_from_the_server() {
    // The read barrier of look-ups depends on this: a cached state made it a no-op.
    let cluster = Cluster::start(0, 0);
    let js = async_nats::jetstream::new(cluster.client().await);
    let bucket = mrc::store::Bucket::open(js, "fresh_state", 1, "test")
        .await
        .unwrap();
    let before = bucket.state().await.unwrap();
    let revision = bucket.put("k", "v".into()).await.unwrap();
    let after = bucket.state().await.unwrap();
    assert_eq!(after.last_revision, revision);
    assert!(after.last_revision > before.last_revision);
    assert_eq!(after.entries, before.entries + 1);
}

#[tokio::test]
async fn concurrent_state_reads_share_requests_yet_see_every_earlier_write() {
    // Barriers share stream-info requests; a caller must never get a read that started
    // before it asked (it would miss a write acknowledged just before).
    let cluster = Cluster::start(0, 0);
    let js = async_nats::jetstream::new(cluster.client().await);
    let bucket = mrc::store::Bucket::open(js, "shared_state", 1, "test")
        .await
        .unwrap();
    let writers = (0..20).map(|w| {
        let bucket = bucket.clone();
        async move {
            for i in 0..10 {
                let revision = bucket
                    .put(&format!("k{w}"), i.to_string().into())
                    .await
                    .unwrap();
                let state = bucket.state().await.unwrap();
                assert!(
                    state.last_revision >= revision,
                    "a state read missed write {revision}: {state:?}"
                );
            }
        }
    });
    futures::future::join_all(writers).await;
    assert_eq!(bucket.state().await.unwrap().entries, 20);
}

#[tokio::test]
async fn centers_answer_a_batch_of_registrations_element_by_element_in_order() {
    // What a gateway sends in a login storm (crate::batch): an array of requests.
    let cluster = Cluster::start(2, 0);
    let nats = cluster.client().await;
    let mut batch: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::to_value(register(&format!("u{i}"), "s", "gw-a")).unwrap())
        .collect();
    batch.insert(
        7,
        serde_json::json!({"user":"x","session":"s","gateway":"gw.bad"}),
    );
    batch.insert(9, serde_json::json!({"nonsense":true}));
    let replies: Vec<serde_json::Value> = request(&nats, "mrc.dir.register", &batch).await;
    assert_eq!(replies.len(), 52);
    assert_eq!(replies[7]["error"]["code"], "bad_id", "{replies:?}");
    assert_eq!(replies[9]["error"]["code"], "bad_frame", "{replies:?}");
    for (i, reply) in replies
        .iter()
        .enumerate()
        .filter(|(i, _)| ![7, 9].contains(i))
    {
        assert_eq!(reply["sessions"], 1, "element {i}: {reply}");
    }
    let users: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    assert_eq!(online(&nats, &names).await.len(), 50);

    let unregister: Vec<UnregisterRequest> = users
        .iter()
        .map(|u| UnregisterRequest {
            user: u.clone(),
            session: "s".into(),
        })
        .collect();
    let replies: Vec<SessionsReply> = request(&nats, "mrc.dir.unregister", &unregister).await;
    assert!(replies.iter().all(|r| r.sessions == 0));
    assert!(online(&nats, &names).await.is_empty());

    // A broken array is one error reply, and nothing else happens.
    let reply = nats
        .request("mrc.dir.register", "[{\"user\":".into())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&reply.payload);
    assert!(text.contains("bad_json"), "{text}");
}

#[tokio::test]
async fn a_batcher_sends_calls_that_pile_up_as_one_array_and_each_gets_its_own_reply() {
    use mrc::batch::{answer_each, Batcher, Limits};
    let cluster = Cluster::start(0, 0);
    let nats = cluster.client().await;
    let mut requests = nats.subscribe("echo").await.unwrap();
    let server = nats.clone();
    let arrays = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = arrays.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if msg.payload.first() == Some(&b'[') {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let reply = answer_each(&msg.payload, |one| async move {
                let n: usize = serde_json::from_slice(one).unwrap();
                Ok(encode(&SessionsReply {
                    sessions: n * 2,
                    kicked: false,
                }))
            })
            .await
            .expect("every element is a number");
            server.publish(msg.reply.unwrap(), reply).await.unwrap();
        }
    });
    let limits = Limits {
        in_flight: 1,
        max_calls: 64,
        max_bytes: 1 << 20,
        queue: 1024,
    };
    let nats = mrc::connection::Nats::new(nats.clone()).await.unwrap();
    let batcher = Batcher::start(nats, "echo".into(), Duration::from_secs(5), limits);
    let calls = (0..200usize).map(|n| {
        let batcher = batcher.clone();
        async move {
            let reply: SessionsReply = batcher.request(encode(&n)).await.unwrap();
            assert_eq!(reply.sessions, n * 2);
        }
    });
    futures::future::join_all(calls).await;
    let arrays = arrays.load(std::sync::atomic::Ordering::Relaxed);
    // One slot: the first call goes alone, the other 199 pile up behind it.
    assert!((3..200).contains(&arrays), "{arrays} arrays");
}
