//! Pooled replies (`mrc::pooled`) on a real nats-server, over the deliver connection
//! (`mrc::wire`): replies to one requester leave together, or with the answerer's own next
//! request; no responders and silence fail their request and leave nothing behind; other
//! reply subjects are answered at once.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mrc::connection::RequestFailure;
use mrc::pooled::Pool;
use mrc::replies::Replies;
use mrc::wire::Wire;

use crate::support::cluster::Cluster;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A deliver connection of its own to `cluster`'s nats-server.
async fn wire(cluster: &Cluster) -> Wire {
    let cfg = crate::wire::settings(cluster.nats_url());
    Wire::connect(&cfg, "test wire").await.unwrap()
}

/// An answerer on `subject` that replies `[<payload>]` through `pool` (to each element
/// of a batch); counts requests.
async fn serve(nats: &async_nats::Client, subject: &str, pool: Arc<Pool>) -> Arc<AtomicUsize> {
    let mut requests = nats.subscribe(subject.to_string()).await.unwrap();
    taken(nats).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            counted.fetch_add(1, Relaxed);
            let wrap = |p: &[u8]| {
                let wrapped = Bytes::from([&b"["[..], p, b"]"].concat());
                async move { Ok(wrapped) }
            };
            let reply = mrc::batch::answer_each(&msg.payload, wrap).await.unwrap();
            pool.reply(&msg.reply.unwrap(), reply);
        }
    });
    seen
}

/// Returns once nats-server has taken `nats`'s subscriptions (a flush only writes them):
/// the requests and replies they wait for come on other connections.
async fn taken(nats: &async_nats::Client) {
    let mut probe = nats.subscribe("test.probe").await.unwrap();
    nats.publish("test.probe", Bytes::new()).await.unwrap();
    probe.next().await.unwrap();
}

/// Messages that reach `pool`'s subjects, counted by a plain subscriber.
async fn count_messages(nats: &async_nats::Client, pool: &str) -> Arc<AtomicUsize> {
    let mut watch = nats.subscribe(format!("{pool}.*")).await.unwrap();
    taken(nats).await;
    let messages = Arc::new(AtomicUsize::new(0));
    let counted = messages.clone();
    tokio::spawn(async move {
        while watch.next().await.is_some() {
            counted.fetch_add(1, Relaxed);
        }
    });
    messages
}

/// A nats-server with an answerer on `test.serve` whose replies wait up to `window`.
async fn served(window: Duration) -> (Cluster, async_nats::Client) {
    let cluster = Cluster::start(0, 0);
    let nats = cluster.client().await;
    serve(&nats, "test.serve", Pool::new(wire(&cluster).await, window)).await;
    (cluster, nats)
}

/// What a busy pair of gateways does: `pool`'s gateway sends requests to `requester` in
/// quick succession (each flushes what it owes there first), so that its replies there
/// gather, where a quiet pair's would leave at once.
async fn busy_towards(pool: &Pool, requester: &str) {
    for _ in 0..40 {
        pool.flush(requester);
    }
}

#[tokio::test]
async fn replies_within_the_window_travel_as_one_message_and_each_request_gets_its_own() {
    let cluster = Cluster::start(0, 0);
    let nats = cluster.client().await;
    let pool = Pool::new(wire(&cluster).await, Duration::from_millis(200));
    serve(&nats, "test.serve", pool.clone()).await;
    busy_towards(&pool, "test.a.replies").await;
    let replies = Replies::start(wire(&cluster).await, "test.a.replies".into()).unwrap();
    let messages = count_messages(&nats, "test.a.replies").await;

    let calls = (0..5).map(|n| {
        let replies = replies.clone();
        async move {
            let payload = Bytes::from(format!("\"{n}\""));
            let reply = replies.request("test.serve".into(), payload, TIMEOUT).await;
            (n, reply.unwrap())
        }
    });
    for (n, reply) in futures::future::join_all(calls).await {
        assert_eq!(&reply[..], format!("[\"{n}\"]").as_bytes());
    }
    // The watcher hears it on a connection of its own, maybe after the requester did.
    let heard = Instant::now();
    while messages.load(Relaxed) == 0 && heard.elapsed() < TIMEOUT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(messages.load(Relaxed), 1, "five replies, one message");
    assert_eq!(replies.waiting(), 0);
}

#[tokio::test]
async fn gathered_replies_leave_at_once_with_the_answerers_own_request() {
    let cluster = Cluster::start(0, 0);
    let nats = cluster.client().await;
    // Both sides request and answer: `a` serves test.a, `b` serves test.b.
    let (a_wire, b_wire) = (wire(&cluster).await, wire(&cluster).await);
    let a_pool = Pool::new(a_wire.clone(), Duration::from_secs(60));
    let b_pool = Pool::new(b_wire.clone(), Duration::from_secs(60));
    serve(&nats, "test.a", a_pool.clone()).await;
    let b_seen = serve(&nats, "test.b", b_pool.clone()).await;
    let a = Replies::start(a_wire, "test.a.replies".into()).unwrap();
    let b = Replies::start(b_wire, "test.b.replies".into()).unwrap();

    busy_towards(&b_pool, "test.a.replies").await;
    busy_towards(&a_pool, "test.b.replies").await;
    // a asks b; b holds the reply for its 60 s window...
    let asked = tokio::spawn({
        let a = a.clone();
        async move { a.request("test.b".into(), "\"x\"".into(), TIMEOUT).await }
    });
    while b_seen.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "the reply waits in b's pool");
    // ...until b sends a request of its own to a, as the gateways do before each one.
    let started = Instant::now();
    let own = tokio::spawn({
        let b = b.clone();
        async move {
            // Each of b's requests to a is preceded by a flush of what b owes a.
            b_pool.flush("test.a.replies");
            b.request("test.a".into(), "\"y\"".into(), TIMEOUT).await
        }
    });
    let theirs = asked.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(&theirs[..], b"[\"x\"]");
    // a's reply to b waits in a's pool until a flushes it (a request of a's to b would).
    while !own.is_finished() {
        a_pool.flush("test.b.replies");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(&own.await.unwrap().unwrap()[..], b"[\"y\"]");
}

#[tokio::test]
async fn a_reply_to_a_quiet_requester_leaves_at_once() {
    let (cluster, _nats) = served(Duration::from_secs(60)).await;
    let replies = Replies::start(wire(&cluster).await, "test.a.replies".into()).unwrap();
    // Each reply comes well within TIMEOUT, a twelfth of the window.
    for n in 0..3 {
        let payload = Bytes::from(format!("\"{n}\""));
        let reply = replies.request("test.serve".into(), payload, TIMEOUT).await;
        assert_eq!(&reply.unwrap()[..], format!("[\"{n}\"]").as_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn no_responders_fail_at_once_and_silence_times_out_leaving_nothing() {
    let cluster = Cluster::start(0, 0);
    let nats = cluster.client().await;
    let replies = Replies::start(wire(&cluster).await, "test.a.replies".into()).unwrap();
    let ask = |subject: &'static str, timeout| replies.request(subject.into(), "1".into(), timeout);
    unanswered_requests_leave_nothing(&nats, ask, || replies.waiting()).await;
}

/// Two processes on one pool subject (a gateway restarted under its id while the old one
/// drains) each get their own replies: their request numbers do not start alike.
#[tokio::test]
async fn two_muxers_on_one_pool_subject_each_get_their_own_replies() {
    let (cluster, _nats) = served(Duration::ZERO).await;
    let (old, new) = (wire(&cluster).await, wire(&cluster).await);
    let pool = "test.same.replies".to_string();
    let old = Replies::start(old, pool.clone()).unwrap();
    let new = Replies::start(new, pool).unwrap();
    for round in 0..20 {
        let (a, b) = (format!("\"old{round}\""), format!("\"new{round}\""));
        let (from_old, from_new) = tokio::join!(
            old.request("test.serve".into(), a.clone().into(), TIMEOUT),
            new.request("test.serve".into(), b.clone().into(), TIMEOUT),
        );
        assert_eq!(from_old.unwrap(), format!("[{a}]"));
        assert_eq!(from_new.unwrap(), format!("[{b}]"));
    }
}

/// Once its client drained, a muxer hears no reply: a request fails at once instead of
/// waiting out its timeout.
#[tokio::test]
async fn after_a_drain_requests_fail_at_once() {
    let (cluster, _nats) = served(Duration::ZERO).await;
    let nats = mrc::connection::Nats::new(cluster.client().await)
        .await
        .unwrap();
    nats.client().drain().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let asked = mrc::connection::request::<Vec<String>>(
        &nats,
        "test.serve".into(),
        "\"q\"".into(),
        Duration::from_secs(10),
    )
    .await;
    assert!(asked.is_err(), "{asked:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Requests to the centers wait on the client's own muxer (`connection::Nats`): answered
/// ones get their reply, and one that nobody answers leaves nothing behind (async-nats's
/// muxer keeps such entries for as long as the client lives, nats-io/nats.rs#1617).
#[tokio::test]
async fn plain_requests_are_answered_and_unanswered_ones_leave_nothing() {
    use mrc::connection::{request, Nats};
    use mrc::protocol::nats::encode;
    let cluster = Cluster::start(0, 0);
    let server = cluster.client().await;
    let mut echo = server.subscribe("test.echo").await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = echo.next().await {
            let reply = msg.reply.expect("a request");
            server.publish(reply, msg.payload).await.unwrap();
        }
    });
    let nats = Nats::new(cluster.client().await).await.unwrap();
    nats.flush().await.unwrap();

    let asked = (0..100u64).map(|n| request::<u64>(&nats, "test.echo".into(), encode(&n), TIMEOUT));
    let answers: Vec<u64> = futures::future::try_join_all(asked).await.unwrap();
    assert_eq!(
        answers,
        (0..100).collect::<Vec<_>>(),
        "each request its own reply"
    );
    let ask =
        |subject: &'static str, timeout| request::<u64>(&nats, subject.into(), "1".into(), timeout);
    unanswered_requests_leave_nothing(nats.client(), ask, || nats.waiting()).await;
}

/// Asked of a subject nobody serves, `ask` fails at once; asked of a silent subscriber,
/// it times out; either way no request is left `waiting`.
async fn unanswered_requests_leave_nothing<T, F, Fut>(
    nats: &async_nats::Client,
    ask: F,
    waiting: impl Fn() -> usize,
) where
    T: std::fmt::Debug,
    F: Fn(&'static str, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T, RequestFailure>>,
{
    let started = Instant::now();
    let nobody = ask("test.nobody", TIMEOUT).await;
    assert!(
        matches!(nobody, Err(RequestFailure::NoResponders)),
        "{nobody:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let _silent = nats.subscribe("test.silent").await.unwrap();
    taken(nats).await;
    for _ in 0..5 {
        let silence = ask("test.silent", Duration::from_millis(300)).await;
        assert!(
            matches!(silence, Err(RequestFailure::TimedOut)),
            "{silence:?}"
        );
    }
    assert_eq!(waiting(), 0, "nothing left waiting");
}

#[tokio::test]
async fn a_plain_request_is_answered_at_once() {
    let (_cluster, nats) = served(Duration::from_secs(60)).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        nats.request("test.serve", "\"q\"".into()),
    )
    .await
    .expect("not held for the window")
    .unwrap();
    assert_eq!(&reply.payload[..], b"[\"q\"]");
}

/// A batcher to `test.serve` with pooled replies and `linger`; the served requests'
/// counter.
async fn pooled_batcher(linger: Duration) -> (Cluster, mrc::batch::Batcher, Arc<AtomicUsize>) {
    use mrc::batch::{Batcher, Limits, Pooled};
    let cluster = Cluster::start(0, 0);
    let nats = cluster.client().await;
    let pool = Pool::new(wire(&cluster).await, Duration::ZERO);
    let served = serve(&nats, "test.serve", pool).await;
    let own = wire(&cluster).await;
    let pooled = Pooled {
        replies: Replies::start(own.clone(), "test.a.replies".into()).unwrap(),
        pool: Pool::new(own, Duration::ZERO),
        peer: "test.b.replies".into(),
        linger,
    };
    let limits = Limits {
        in_flight: 4,
        max_calls: 64,
        max_bytes: 1 << 20,
        queue: 1024,
    };
    let nats = mrc::connection::Nats::new(nats).await.unwrap();
    let batcher = Batcher::start_pooled(nats, "test.serve".into(), TIMEOUT, limits, pooled);
    (cluster, batcher, served)
}

/// Traffic for a lingering batcher: 48 calls at once, so that the calls after them linger
/// (a batcher lingers only while calls come closer together than the linger).
async fn steady_traffic(batcher: &mrc::batch::Batcher) {
    let calls = (0..48u32).map(|n| batcher.request::<Vec<u32>>(Bytes::from(n.to_string())));
    for reply in futures::future::join_all(calls).await {
        reply.unwrap();
    }
}

#[tokio::test]
async fn a_call_to_a_quiet_destination_does_not_linger() {
    let linger = Duration::from_secs(10);
    let (_cluster, batcher, served) = pooled_batcher(linger).await;
    let started = std::time::Instant::now();
    let reply = batcher.request::<Vec<u32>>(Bytes::from("7")).await.unwrap();
    assert_eq!(reply, [7]);
    assert!(started.elapsed() < linger / 2, "sent at once");
    assert_eq!(served.load(Relaxed), 1);
}

#[tokio::test]
async fn calls_within_the_linger_leave_as_one_request() {
    let (_cluster, batcher, served) = pooled_batcher(Duration::from_secs(1)).await;
    steady_traffic(&batcher).await;
    let before = served.load(Relaxed);
    // Calls from tasks of their own, 20 ms apart, one request.
    let mut tasks = Vec::new();
    for n in 0..5u32 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            batcher
                .request::<Vec<u32>>(Bytes::from(n.to_string()))
                .await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (n, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), [n as u32]);
    }
    assert_eq!(
        served.load(Relaxed) - before,
        1,
        "five calls within the linger, one request"
    );
}

#[tokio::test]
async fn calls_gathered_by_a_caller_that_gives_up_are_still_sent() {
    let (_cluster, batcher, served) = pooled_batcher(Duration::from_secs(1)).await;
    steady_traffic(&batcher).await;
    let before = served.load(Relaxed);
    let leader = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.request::<Vec<u32>>(Bytes::from("1")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let follower = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.request::<Vec<u32>>(Bytes::from("2")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    assert_eq!(follower.await.unwrap().unwrap(), [2]);
    assert_eq!(served.load(Relaxed) - before, 1);
}
