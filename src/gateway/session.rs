//! The live client sessions of this gateway: user → sessions, each with a bounded queue
//! of outbound frames drained by the connection's task.
//!
//! Pushing never waits: a session whose queue is full is a slow consumer and is kicked
//! (its connection closes with a reason), so one client that stops reading can neither
//! slow other users down nor grow memory without bound.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::recent::Recent;
use crate::ident::{SessionId, UserId};
use crate::protocol::digest::{bucket_of, empty_buckets, Buckets, Digest};
use crate::sync;
use direct::Writes;
pub(crate) use direct::{write_through, Direct};

/// The pushing side of one session.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    pub(crate) id: SessionId,
    /// The device class the client declared, re-sent when sessions are re-asserted.
    pub(crate) device: Option<Arc<str>>,
    queue: Arc<Queue>,
}

/// The connection side of one session: frames to write, and why it must end.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Arc<Queue>,
}

/// Why a session must end, as its outbox tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// A push found the queue full: the client does not read fast enough.
    SlowConsumer,
    /// A newer login replaced the session.
    Kicked,
    /// Nothing was heard from the client for the idle timeout ([`super::sweep`]).
    Idle,
    /// The gateway stops, and this session's turn to close has come.
    Shutdown,
}

/// One session's bounded queue of outbound frames, and the reasons it must end, in one
/// allocation. A tokio mpsc channel would allocate a block of 32 slots and its padded
/// shared state up front (~1.6 KB per idle connection, two cancellation tokens ~0.2 KB
/// more); this holds no frame buffer until a frame is queued and gives a drained buffer
/// back when it grew large (docs/PERFORMANCE.md, idle memory).
#[derive(Debug)]
struct Queue {
    capacity: usize,
    state: Mutex<State>,
    /// The login's registration was answered: reconciling may re-assert the session
    /// (before that, its own register is in flight and must not be raced).
    registered: AtomicBool,
    /// Something came from the client since the last idle sweep ([`super::sweep`]).
    heard: AtomicBool,
    /// Idle sweeps in a row that found nothing heard.
    silent: AtomicU8,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    slow: bool,
    kicked: bool,
    shutdown: bool,
    idle: bool,
    /// The idle sweep asks for a sign of life (a WebSocket ping).
    ping: bool,
    /// The connection's writer holds bytes to write (a pong).
    flush: bool,
    /// The connection side is gone: nothing is queued any more.
    closed: bool,
    /// The connection's task, waiting for a frame or an end.
    waker: Option<Waker>,
    /// Whether a queued frame wakes that task (not while it only waits for `slow`).
    wake_on_frame: bool,
    /// Stored messages pushed to this session; made at the first.
    inbox: Option<Box<Cursor>>,
    /// The session's socket, when other tasks may write into it ([`direct`]).
    direct: Option<Direct>,
    writes: Writes,
    /// The first queued frame is the rest of a write from another task, framed already.
    framed_front: bool,
}

/// Where a session is in its user's inbox.
#[derive(Debug, Default)]
struct Cursor {
    /// The highest sequence number pushed: the next drain reads after it.
    last: u64,
    /// Pushed and not acknowledged yet, in order.
    unacked: VecDeque<u64>,
    /// A drain is running; `again`: it should read once more before it stops.
    draining: bool,
    again: bool,
}

/// Stored messages pushed to one session and not yet acknowledged, at most: the client
/// acknowledges to get more, so a big inbox never overflows the session's queue.
pub(crate) const INBOX_WINDOW: usize = 64;

/// A drained queue keeps its buffer up to this many frames and gives a larger one back.
const KEEP_FRAMES: usize = 4;

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }
}

impl State {
    /// Gives back the buffer of a drained queue that grew large.
    fn give_back_frames(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEEP_FRAMES {
            self.frames = VecDeque::new();
        }
    }
}

/// A new session's two halves, with room for `capacity` queued frames.
pub(crate) fn channel(id: SessionId, device: Option<&str>, capacity: usize) -> (Handle, Outbox) {
    let queue = Arc::new(Queue {
        capacity,
        state: Mutex::new(State::default()),
        registered: AtomicBool::new(false),
        heard: AtomicBool::new(true),
        silent: AtomicU8::new(0),
    });
    let handle = Handle {
        id,
        device: device.map(Arc::from),
        queue: queue.clone(),
    };
    (handle, Outbox { queue })
}

impl Handle {
    /// Queues one frame; false (and the session is kicked) when the queue is full.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        let (queued, waker) = {
            let mut state = self.queue.state();
            if state.closed {
                return false;
            }
            if state.frames.len() >= self.queue.capacity {
                state.slow = true;
                state.writes = Writes::Task;
                (false, state.waker.take())
            } else {
                state.frames.push_back(frame);
                (true, self.wake_for_frame(&mut state))
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        queued
    }

    /// The waker to wake for a frame just queued: none while a write-through scope holds
    /// the session (or takes it now) or the connection's task waits only for `slow`.
    fn wake_for_frame(&self, state: &mut State) -> Option<Waker> {
        match state.writes {
            Writes::Held => return None,
            Writes::Idle if direct::hold(&self.queue) => {
                state.writes = Writes::Held;
                return None;
            }
            Writes::Idle | Writes::Task => state.writes = Writes::Task,
        }
        state.wake_on_frame.then(|| state.waker.take()).flatten()
    }

    /// The connection side is gone (or was kicked): nothing will be queued any more.
    pub(crate) fn is_closed(&self) -> bool {
        let state = self.queue.state();
        state.closed || state.kicked || state.slow || state.idle || state.shutdown
    }

    /// The directory answered this session's login registration.
    pub(crate) fn set_registered(&self) {
        self.queue.registered.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.queue.registered.load(Ordering::Relaxed)
    }

    /// Starts a drain of this session's inbox: the sequence number to read after and how
    /// many messages fit in its window. `None` when a drain runs already (it will read
    /// once more) or the window is full.
    pub(crate) fn begin_drain(&self) -> Option<(u64, usize)> {
        let mut state = self.queue.state();
        let cursor = state.inbox.get_or_insert_with(Box::default);
        if cursor.draining {
            cursor.again = true;
            return None;
        }
        let room = INBOX_WINDOW.saturating_sub(cursor.unacked.len());
        if room == 0 {
            return None;
        }
        cursor.draining = true;
        Some((cursor.last, room))
    }

    /// Ends a drain; `Some((after, room))` when it must read once more.
    pub(crate) fn end_drain(&self) -> Option<(u64, usize)> {
        let mut state = self.queue.state();
        let cursor = state.inbox.get_or_insert_with(Box::default);
        let room = INBOX_WINDOW.saturating_sub(cursor.unacked.len());
        if std::mem::take(&mut cursor.again) && room > 0 {
            return Some((cursor.last, room));
        }
        cursor.draining = false;
        None
    }

    /// Queues stored message `seq`; false when it was not queued (the session ends).
    pub(crate) fn push_stored(&self, seq: u64, frame: Bytes) -> bool {
        if !self.push(frame) {
            return false;
        }
        let mut state = self.queue.state();
        let cursor = state.inbox.get_or_insert_with(Box::default);
        cursor.last = cursor.last.max(seq);
        cursor.unacked.push_back(seq);
        true
    }

    /// The client acknowledged every stored message up to `seq`.
    pub(crate) fn acked(&self, seq: u64) {
        let mut state = self.queue.state();
        if let Some(cursor) = state.inbox.as_mut() {
            while cursor.unacked.front().is_some_and(|s| *s <= seq) {
                cursor.unacked.pop_front();
            }
            cursor.last = cursor.last.max(seq);
        }
    }

    /// Ends the session: a newer login replaced it.
    fn kick(&self) {
        self.tell(|state| state.kicked = true);
    }

    /// One idle sweep of this session, `sweeps` of which make the idle timeout: after one
    /// that heard nothing the client is asked for a sign of life, after `sweeps` the
    /// session ends.
    pub(crate) fn sweep(&self, sweeps: u8) {
        if self.queue.heard.swap(false, Ordering::Relaxed) {
            self.queue.silent.store(0, Ordering::Relaxed);
            return;
        }
        let silent = self
            .queue
            .silent
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if silent >= sweeps {
            self.tell(|state| state.idle = true);
        } else {
            self.tell(|state| state.ping = true);
        }
    }

    /// Ends the session: the gateway stops.
    pub(crate) fn shut_down(&self) {
        self.tell(|state| state.shutdown = true);
    }

    /// Changes the state and wakes the connection's task to read it.
    fn tell(&self, change: impl FnOnce(&mut State)) {
        let waker = {
            let mut state = self.queue.state();
            change(&mut state);
            state.writes = Writes::Task;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Outbox {
    /// Ready when a frame is queued or a ping is asked for (`Ok`), or the session must end
    /// (`Err`: a slow consumer, a kick, a stop, idleness, in this order, all before
    /// frames). Frames are taken by `try_next`, the ping by `take_ping`.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        let mut state = self.queue.state();
        state.writes = Writes::Task;
        if state.slow {
            return Poll::Ready(Err(End::SlowConsumer));
        }
        if state.kicked {
            return Poll::Ready(Err(End::Kicked));
        }
        if state.shutdown {
            return Poll::Ready(Err(End::Shutdown));
        }
        if state.idle {
            return Poll::Ready(Err(End::Idle));
        }
        if !state.frames.is_empty() || state.ping || std::mem::take(&mut state.flush) {
            return Poll::Ready(Ok(()));
        }
        state.wake_on_frame = true;
        if state.direct.is_some() {
            state.writes = Writes::Idle;
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }

    /// Waits for [`Self::poll_ready`].
    pub(crate) fn ready(&self) -> impl Future<Output = Result<(), End>> + '_ {
        std::future::poll_fn(|cx| self.poll_ready(cx))
    }

    /// Something came from the client: the session is not idle.
    pub(crate) fn heard(&self) {
        self.queue.heard.store(true, Ordering::Relaxed);
    }

    /// Lets other tasks write frames into `direct` while the connection's task waits with
    /// nothing to write.
    pub(crate) fn share_writes(&self, direct: Direct) {
        self.queue.state().direct = Some(direct);
    }

    /// The connection's task writes next (its goodbye): other tasks no longer do until
    /// it waits for its outbox again. A write from another task ends first.
    pub(crate) fn take_writes(&self) {
        self.queue.state().writes = Writes::Task;
    }

    /// The connection's writer holds bytes (a pong): they leave with the next write of
    /// queued frames, which the outbox is ready for now, and nothing from another task
    /// goes before them.
    pub(crate) fn flush_writer(&self) {
        let mut state = self.queue.state();
        state.writes = Writes::Task;
        state.flush = true;
    }

    /// The rest of a write another task began, framed already: it leaves before any
    /// queued frame.
    pub(crate) fn take_framed(&self) -> Option<Bytes> {
        let mut state = self.queue.state();
        if !std::mem::take(&mut state.framed_front) {
            return None;
        }
        state.frames.pop_front()
    }

    /// Whether the idle sweep asked for a ping (once).
    pub(crate) fn take_ping(&self) -> bool {
        std::mem::take(&mut self.queue.state().ping)
    }

    /// A frame already queued, if any, without waiting (and whatever the session's end).
    pub(crate) fn try_next(&self) -> Option<Bytes> {
        let mut state = self.queue.state();
        debug_assert!(!state.framed_front, "take_framed comes first");
        let frame = state.frames.pop_front();
        state.give_back_frames();
        frame
    }

    /// Resolves once the session is a slow consumer or its stop has come (for racing a
    /// blocked write).
    pub(crate) fn slow(&self) -> impl Future<Output = End> + '_ {
        std::future::poll_fn(|cx| {
            let mut state = self.queue.state();
            if state.slow {
                return Poll::Ready(End::SlowConsumer);
            }
            if state.shutdown {
                return Poll::Ready(End::Shutdown);
            }
            state.wake_on_frame = false;
            register(&mut state.waker, cx);
            Poll::Pending
        })
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let (frames, unacked) = {
            let mut state = self.queue.state();
            state.closed = true;
            state.waker = None;
            state.direct = None;
            state.writes = Writes::Task;
            let unacked = state.inbox.as_ref().map_or(0, |c| c.unacked.len());
            (std::mem::take(&mut state.frames), unacked)
        };
        drop(frames);
        // Pushed and never acknowledged: the inbox still holds them for the next login.
        if unacked > 0 {
            crate::telemetry::inbox(crate::telemetry::InboxEvent::Redelivered, unacked as u64);
        }
    }
}

/// Every session on this gateway.
#[derive(Default)]
pub(crate) struct Sessions {
    users: RwLock<HashMap<UserId, Vec<Handle>>>,
    count: AtomicUsize,
    /// Of every (user, session) held, changed under the `users` write lock: what the
    /// heartbeat tells the centers.
    digest: Mutex<Digest>,
    /// What was pushed under a sender-chosen id, so a retried send is not pushed twice.
    pub(crate) recent: Recent,
}

impl Sessions {
    /// An empty registry whose duplicate filter remembers pushes for `dedupe_window`.
    pub(crate) fn new(dedupe_window: std::time::Duration) -> Self {
        Sessions {
            recent: Recent::new(dedupe_window),
            ..Sessions::default()
        }
    }

    pub(crate) fn insert(&self, user: UserId, handle: Handle) {
        let id = handle.id.clone();
        let mut users = sync::write(&self.users);
        // Most users have one session: room for one, not the four a first push makes.
        users
            .entry(user.clone())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(handle);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.digest().add(user.as_str(), id.as_str());
    }

    /// Removes one session; true if it was there.
    pub(crate) fn remove(&self, user: &UserId, id: &SessionId) -> bool {
        let mut users = sync::write(&self.users);
        let Some(handles) = users.get_mut(user) else {
            return false;
        };
        let before = handles.len();
        handles.retain(|h| h.id != *id);
        let removed = handles.len() < before;
        if handles.is_empty() {
            users.remove(user);
        }
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.digest().remove(user.as_str(), id.as_str());
        }
        removed
    }

    /// Queues `frame` for every session of each of `users` under one read lock (a group
    /// message names up to 1000 of them); `took(user, any)` says whether at least one
    /// session of `user` took it.
    pub(crate) fn push_each<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        frame: &Bytes,
        mut took: impl FnMut(&'a str, bool),
    ) {
        let sessions = sync::read(&self.users);
        for user in users {
            let handles = sessions.get(user).map(Vec::as_slice).unwrap_or_default();
            let mut any = false;
            for handle in handles {
                any |= handle.push(frame.clone());
            }
            took(user, any);
        }
    }

    /// Number of live sessions.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn digest(&self) -> MutexGuard<'_, Digest> {
        sync::lock(&self.digest)
    }

    /// The digest of every (user, session) held, for the heartbeat.
    pub(crate) fn summary(&self) -> Digest {
        *self.digest()
    }

    /// Per-bucket digests of the sessions held.
    pub(crate) fn buckets(&self) -> Buckets {
        let mut buckets = empty_buckets();
        let users = sync::read(&self.users);
        for (user, handles) in users.iter() {
            let bucket = &mut buckets[bucket_of(user.as_str())];
            for handle in handles {
                bucket.add(user.as_str(), handle.id.as_str());
            }
        }
        buckets
    }

    /// The (user, session) of every session whose user's bucket passes `wanted`.
    pub(crate) fn in_buckets(&self, wanted: impl Fn(usize) -> bool) -> Vec<(UserId, Handle)> {
        let users = sync::read(&self.users);
        users
            .iter()
            .filter(|(user, _)| wanted(bucket_of(user.as_str())))
            .flat_map(|(user, handles)| handles.iter().map(move |h| (user.clone(), h.clone())))
            .collect()
    }

    /// Whether session `id` of `user` is held here.
    pub(crate) fn holds(&self, user: &UserId, id: &SessionId) -> bool {
        let users = sync::read(&self.users);
        users
            .get(user)
            .is_some_and(|handles| handles.iter().any(|h| h.id == *id))
    }

    /// The sessions of `user` held here.
    pub(crate) fn handles_of(&self, user: &UserId) -> Vec<Handle> {
        let users = sync::read(&self.users);
        users.get(user).cloned().unwrap_or_default()
    }

    /// Runs `visit` on every session under the map's read lock (it must not wait): a
    /// sweep of 100k sessions clones none of them.
    pub(crate) fn each(&self, mut visit: impl FnMut(&Handle)) {
        let users = sync::read(&self.users);
        users.values().flatten().for_each(&mut visit);
    }

    /// Every session's handle (for broadcasts).
    pub(crate) fn handles(&self) -> Vec<Handle> {
        let users = sync::read(&self.users);
        users
            .values()
            .flat_map(|handles| handles.iter().cloned())
            .collect()
    }

    /// Closes the named sessions of `user` (a newer login replaced them); how many.
    pub(crate) fn kick(&self, user: &UserId, ids: &[SessionId]) -> usize {
        let users = sync::read(&self.users);
        let Some(handles) = users.get(user) else {
            return 0;
        };
        let mut kicked = 0;
        for handle in handles.iter().filter(|h| ids.contains(&h.id)) {
            handle.kick();
            kicked += 1;
        }
        kicked
    }
}

mod direct;
#[cfg(test)]
mod tests;
