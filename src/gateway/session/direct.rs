//! Frames written into a session's socket by the task that has them, instead of waking the
//! connection's task to write them ([`write_through`]): the `msg` frames of deliver
//! requests by the deliver connection's task after each of its polls, a report by its
//! routing task when it was the session's one request in flight. Each wake-up of a
//! connection's task to write one frame cost ~1.5k instructions (docs/PERFORMANCE.md,
//! where the instructions go).
//!
//! Only while the connection's task waits with everything written (`Writes::Idle`), only
//! on a plain TCP socket ([`Direct`]), and never for a session that must end. A pushed
//! frame then stays queued (`Writes::Held`) until the scope ends, so that every frame the
//! scope has for one session leaves in one write; what the socket does not take at once
//! is handed to the connection's task, already framed, to go first.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;

use super::{Queue, State};

/// A session's socket, for writes from other tasks, and how a text frame is framed on it.
/// Dropped when the session ends, which ends the stream towards the client.
#[derive(Debug)]
pub(crate) struct Direct {
    socket: OwnedWriteHalf,
    frame: fn(&mut BytesMut, &[u8]),
}

impl Direct {
    pub(crate) fn new(socket: OwnedWriteHalf, frame: fn(&mut BytesMut, &[u8])) -> Self {
        Direct { socket, frame }
    }
}

/// A scope's framing buffer grown beyond this (a burst to one session) is given back.
const KEEP_SCRATCH: usize = 64 * 1024;

/// Who writes a session's next frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writes {
    /// The connection's task: it writes, or it was woken to, or it has no [`Direct`].
    #[default]
    Task,
    /// Nobody: the task has written everything and writes nothing more until it takes
    /// the writes back (`poll_ready`, `take_writes`, `flush_writer`), though it may be
    /// handling a client frame meanwhile. A push inside [`write_through`] holds the
    /// session.
    Idle,
    /// A [`write_through`] scope, at its end.
    Held,
}

/// The sessions the current thread's scope holds, and its buffer for framing.
#[derive(Default)]
struct Scope {
    open: bool,
    held: Vec<Arc<Queue>>,
    scratch: BytesMut,
}

thread_local! {
    static SCOPE: RefCell<Scope> = RefCell::new(Scope::default());
}

/// Runs `work`; the frames it pushes to idle sessions are written into their sockets when
/// it returns (or unwinds), by this task.
pub(crate) fn write_through<R>(work: impl FnOnce() -> R) -> R {
    let opened = SCOPE.with_borrow_mut(|scope| !std::mem::replace(&mut scope.open, true));
    let _closing = opened.then_some(Closing);
    work()
}

/// Holds `queue` for the open scope of this thread, if there is one.
pub(super) fn hold(queue: &Arc<Queue>) -> bool {
    SCOPE.with_borrow_mut(|scope| {
        if scope.open {
            scope.held.push(queue.clone());
        }
        scope.open
    })
}

/// Ends the scope when dropped: writes what it holds.
struct Closing;

impl Drop for Closing {
    fn drop(&mut self) {
        let (mut held, mut scratch) = SCOPE.with_borrow_mut(|scope| {
            scope.open = false;
            (
                std::mem::take(&mut scope.held),
                std::mem::take(&mut scope.scratch),
            )
        });
        for queue in held.drain(..) {
            write_held(&queue, &mut scratch);
        }
        scratch.clear();
        if scratch.capacity() > KEEP_SCRATCH {
            scratch = BytesMut::new();
        }
        SCOPE.with_borrow_mut(|scope| {
            scope.held = held;
            scope.scratch = scratch;
        });
    }
}

/// Writes the frames queued for one held session into its socket; what the socket did
/// not take goes to the connection's task.
fn write_held(queue: &Queue, scratch: &mut BytesMut) {
    let waker = {
        let mut state = queue.state();
        if state.writes != Writes::Held {
            return;
        }
        match write_queued(&mut state, scratch) {
            Ok(()) => {
                state.writes = Writes::Idle;
                None
            }
            Err(()) => {
                state.writes = Writes::Task;
                state.waker.take()
            }
        }
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Every queued frame, framed into `scratch`, in one write; `Err` when the socket did not
/// take it all (the rest is queued in front, framed) or there is no socket.
fn write_queued(state: &mut State, scratch: &mut BytesMut) -> Result<(), ()> {
    let Some(direct) = &state.direct else {
        return Err(());
    };
    scratch.clear();
    for frame in &state.frames {
        (direct.frame)(scratch, frame);
    }
    // Errors other than a full socket are the connection's task's to find.
    let written = direct.socket.try_write(scratch).unwrap_or(0);
    state.frames.clear();
    state.give_back_frames();
    if written == scratch.len() {
        return Ok(());
    }
    state
        .frames
        .push_back(Bytes::copy_from_slice(&scratch[written..]));
    state.framed_front = true;
    Err(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use bytes::BufMut as _;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};

    use super::super::{channel, Handle, Outbox};
    use super::*;
    use crate::ident::SessionId;

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn line(buf: &mut BytesMut, text: &[u8]) {
        buf.put_slice(text);
        buf.put_u8(b'\n');
    }

    /// A session whose socket other tasks may write, its client, and the wake-ups of its
    /// connection's task, which waits for its outbox.
    async fn waiting_session() -> (Handle, Outbox, TcpStream, Arc<Wakes>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_read, write) = listener.accept().await.unwrap().0.into_split();
        let (handle, outbox) = channel(SessionId::generate(), None, 8);
        outbox.share_writes(Direct::new(write, line));
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        assert!(outbox
            .poll_ready(&mut Context::from_waker(&waker))
            .is_pending());
        (handle, outbox, client, wakes)
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn frames_pushed_in_a_scope_are_written_at_its_end_without_a_wake_up() {
        let (handle, outbox, mut client, wakes) = waiting_session().await;
        write_through(|| {
            assert!(handle.push(Bytes::from_static(b"one")));
            assert!(handle.push(Bytes::from_static(b"two")));
            assert!(
                outbox.try_next().is_some_and(|f| f == "one"),
                "queued until the scope ends"
            );
        });
        assert_eq!(read_exactly(&mut client, 4).await, b"two\n");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
        assert!(outbox.try_next().is_none());

        // The session is idle again: the next scope writes too.
        write_through(|| handle.push(Bytes::from_static(b"three")));
        assert_eq!(read_exactly(&mut client, 6).await, b"three\n");
        // Outside a scope the connection's task is woken to write.
        assert!(handle.push(Bytes::from_static(b"four")));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(outbox.try_next().is_some_and(|f| f == "four"));
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_goes_first_through_the_task() {
        let (handle, outbox, mut client, wakes) = waiting_session().await;
        // Far more than a socket buffers while its client does not read.
        let big = Bytes::from(vec![b'x'; 16 << 20]);
        write_through(|| {
            assert!(handle.push(big.clone()));
        });
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(handle.push(Bytes::from_static(b"after")));
        let rest = outbox.take_framed().expect("the rest, framed");
        assert!(rest.len() < big.len() + 1 && rest.ends_with(b"x\n"));
        assert!(outbox.take_framed().is_none());
        assert!(outbox.try_next().is_some_and(|f| f == "after"));
        let written = big.len() + 1 - rest.len();
        assert!(read_exactly(&mut client, written)
            .await
            .iter()
            .all(|&b| b == b'x'));
    }

    #[tokio::test]
    async fn a_session_that_must_end_is_left_to_its_task() {
        let (handle, outbox, _client, wakes) = waiting_session().await;
        write_through(|| {
            assert!(handle.push(Bytes::from_static(b"late")));
            handle.shut_down();
        });
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        let waker = Waker::from(wakes.clone());
        assert_eq!(
            outbox.poll_ready(&mut Context::from_waker(&waker)),
            Poll::Ready(Err(super::super::End::Shutdown))
        );
        assert!(outbox.try_next().is_some_and(|f| f == "late"));
    }
}
