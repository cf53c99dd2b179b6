use futures::FutureExt as _;

use super::*;

/// Whether a session of `user` took `frame`.
fn push(sessions: &Sessions, user: &UserId, frame: &Bytes) -> bool {
    let mut took = false;
    sessions.push_each([user.as_str()], frame, |_, any| took = any);
    took
}

#[test]
fn push_reaches_every_session_of_a_user() {
    let sessions = Sessions::default();
    let alice = UserId::new("alice").unwrap();
    let (h1, o1) = channel(SessionId::generate(), None, 4);
    let (h2, o2) = channel(SessionId::generate(), None, 4);
    let id1 = h1.id.clone();
    sessions.insert(alice.clone(), h1);
    sessions.insert(alice.clone(), h2);
    assert!(push(&sessions, &alice, &Bytes::from_static(b"x")));
    assert_eq!(o1.try_next().unwrap(), "x");
    assert_eq!(o2.try_next().unwrap(), "x");
    assert!(sessions.remove(&alice, &id1));
    assert!(!sessions.remove(&alice, &id1));
    assert_eq!(sessions.len(), 1);
    assert!(!push(
        &sessions,
        &UserId::new("bob").unwrap(),
        &Bytes::new()
    ));
}

#[test]
fn the_digest_follows_inserts_and_removals() {
    let sessions = Sessions::default();
    let alice = UserId::new("alice").unwrap();
    let (h1, _o1) = channel(SessionId::new("s1").unwrap(), None, 4);
    let (h2, _o2) = channel(SessionId::new("s2").unwrap(), None, 4);
    sessions.insert(alice.clone(), h1);
    sessions.insert(UserId::new("bob").unwrap(), h2);
    assert_eq!(
        sessions.summary(),
        Digest::of([("alice", "s1"), ("bob", "s2")])
    );
    let buckets = sessions.buckets();
    assert_eq!(buckets.iter().copied().fold(0u64, |n, d| n + d.sessions), 2);
    assert!(sessions.holds(&alice, &SessionId::new("s1").unwrap()));
    assert!(sessions.remove(&alice, &SessionId::new("s1").unwrap()));
    assert!(!sessions.holds(&alice, &SessionId::new("s1").unwrap()));
    assert_eq!(sessions.summary(), Digest::of([("bob", "s2")]));
    let bob_bucket = bucket_of("bob");
    assert_eq!(sessions.in_buckets(|b| b == bob_bucket).len(), 1);
    assert!(sessions.in_buckets(|b| b != bob_bucket).is_empty());
}

#[test]
fn push_each_reports_every_receiver_in_order() {
    let sessions = Sessions::default();
    let (alice, o1) = channel(SessionId::generate(), None, 4);
    let (again, o2) = channel(SessionId::generate(), None, 4);
    sessions.insert(UserId::new("alice").unwrap(), alice);
    sessions.insert(UserId::new("alice").unwrap(), again);
    let mut seen = Vec::new();
    let receivers = ["bob", "alice", "", "al\u{0}ce"];
    sessions.push_each(receivers, &Bytes::from_static(b"m"), |user, took| {
        seen.push((user, took));
    });
    assert_eq!(
        seen,
        [
            ("bob", false),
            ("alice", true),
            ("", false),
            ("al\u{0}ce", false)
        ]
    );
    assert_eq!(o1.try_next().unwrap(), "m");
    assert_eq!(o2.try_next().unwrap(), "m");
}

#[test]
fn a_full_queue_kicks_the_slow_session_only() {
    let sessions = Sessions::default();
    let alice = UserId::new("alice").unwrap();
    let (slow, slow_out) = channel(SessionId::generate(), None, 1);
    let (fast, fast_out) = channel(SessionId::generate(), None, 8);
    sessions.insert(alice.clone(), slow);
    sessions.insert(alice.clone(), fast);
    assert!(push(&sessions, &alice, &Bytes::from_static(b"1")));
    assert!(push(&sessions, &alice, &Bytes::from_static(b"2")));
    assert_eq!(
        slow_out.ready().now_or_never(),
        Some(Err(End::SlowConsumer))
    );
    assert!(slow_out.slow().now_or_never().is_some());
    assert_eq!(fast_out.try_next().unwrap(), "1");
    assert_eq!(fast_out.try_next().unwrap(), "2");
    assert!(fast_out.ready().now_or_never().is_none());
    assert!(fast_out.slow().now_or_never().is_none());
}

#[test]
fn a_kick_ends_the_session_and_a_slow_consumer_comes_first() {
    let sessions = Sessions::default();
    let alice = UserId::new("alice").unwrap();
    let (handle, outbox) = channel(SessionId::generate(), None, 1);
    let id = handle.id.clone();
    sessions.insert(alice.clone(), handle.clone());
    assert!(handle.push(Bytes::from_static(b"1")));
    assert_eq!(sessions.kick(&alice, &[id]), 1);
    assert_eq!(outbox.ready().now_or_never(), Some(Err(End::Kicked)));
    // Frames still queued can be written on the way out.
    assert_eq!(outbox.try_next().unwrap(), "1");
    assert!(handle.push(Bytes::from_static(b"2")));
    assert!(!handle.push(Bytes::from_static(b"3")));
    assert_eq!(outbox.ready().now_or_never(), Some(Err(End::SlowConsumer)));
}

#[test]
fn nothing_is_queued_once_the_connection_is_gone() {
    let (handle, outbox) = channel(SessionId::generate(), None, 4);
    assert!(handle.push(Bytes::from_static(b"1")));
    drop(outbox);
    assert!(!handle.push(Bytes::from_static(b"2")));
    assert!(handle.queue.state().frames.is_empty());
}

#[test]
fn a_drained_queue_gives_a_large_buffer_back() {
    let (handle, outbox) = channel(SessionId::generate(), None, 1024);
    for _ in 0..100 {
        assert!(handle.push(Bytes::from_static(b"x")));
    }
    while outbox.try_next().is_some() {}
    assert_eq!(handle.queue.state().frames.capacity(), 0);
    assert!(handle.push(Bytes::from_static(b"x")));
    assert_eq!(outbox.try_next().unwrap(), "x");
    assert!(handle.queue.state().frames.capacity() <= KEEP_FRAMES);
}

#[tokio::test]
async fn a_waiting_connection_wakes_for_a_frame_and_for_its_end() {
    let (handle, outbox) = channel(SessionId::generate(), None, 1);
    let pusher = handle.clone();
    let push = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(pusher.push(Bytes::from_static(b"1")));
    });
    assert_eq!(outbox.ready().await, Ok(()));
    assert_eq!(outbox.try_next().unwrap(), "1");
    push.await.unwrap();
    // While a write blocks, only a slow consumer matters; a full queue wakes it.
    let pusher = handle.clone();
    let fill = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(pusher.push(Bytes::from_static(b"2")));
        assert!(!pusher.push(Bytes::from_static(b"3")));
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), outbox.slow())
        .await
        .expect("woken when the queue overflowed");
    fill.await.unwrap();
}

#[test]
fn a_silent_session_is_asked_for_a_ping_then_ended_as_idle() {
    let (handle, outbox) = channel(SessionId::generate(), None, 4);
    // Logging in counts as heard: the first sweep only clears that.
    handle.sweep(3);
    assert_eq!(outbox.ready().now_or_never(), None);
    for _ in 0..2 {
        handle.sweep(3);
        assert_eq!(outbox.ready().now_or_never(), Some(Ok(())));
        assert!(outbox.take_ping() && !outbox.take_ping());
        assert_eq!(outbox.ready().now_or_never(), None, "one ping per ask");
    }
    handle.sweep(3);
    assert_eq!(outbox.ready().now_or_never(), Some(Err(End::Idle)));
    assert!(handle.is_closed());
}

#[test]
fn a_word_from_the_client_starts_the_count_again() {
    let (handle, outbox) = channel(SessionId::generate(), None, 4);
    for _ in 0..10 {
        handle.sweep(3);
        handle.sweep(3);
        outbox.take_ping();
        outbox.heard();
    }
    assert!(!handle.is_closed());
    assert_eq!(outbox.ready().now_or_never(), None);
}

#[tokio::test]
async fn a_waiting_connection_wakes_for_a_ping_and_for_idleness() {
    let (handle, outbox) = channel(SessionId::generate(), None, 4);
    let sweeper = handle.clone();
    let sweeps = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            sweeper.sweep(2);
        }
    });
    assert_eq!(outbox.ready().await, Ok(()));
    assert!(outbox.take_ping());
    assert_eq!(outbox.ready().await, Err(End::Idle));
    sweeps.await.unwrap();
}
