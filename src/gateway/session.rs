//! The live client sessions of this gateway: user → sessions, each with a bounded queue
//! of outbound frames drained by the connection's task.
//!
//! Pushing never waits: a session whose queue is full is a slow consumer and is kicked
//! (its connection closes with a reason), so one client that stops reading can neither
//! slow other users down nor grow memory without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ident::{SessionId, UserId};

/// The pushing side of one session.
#[derive(Clone, Debug)]
pub struct Handle {
    pub id: SessionId,
    /// The device class the client declared, re-sent when sessions are re-asserted.
    pub device: Option<Arc<str>>,
    tx: mpsc::Sender<Bytes>,
    /// Cancelled when the session must be closed because it cannot keep up.
    slow: CancellationToken,
    /// Cancelled when a newer login replaced the session.
    kicked: CancellationToken,
}

/// The connection side of one session: frames to write, and why it must end.
pub struct Outbox {
    pub rx: mpsc::Receiver<Bytes>,
    pub slow: CancellationToken,
    pub kicked: CancellationToken,
}

/// A new session's two halves, with room for `capacity` queued frames.
pub fn channel(id: SessionId, device: Option<&str>, capacity: usize) -> (Handle, Outbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let (slow, kicked) = (CancellationToken::new(), CancellationToken::new());
    let device = device.map(Arc::from);
    let handle = Handle {
        id,
        device,
        tx,
        slow: slow.clone(),
        kicked: kicked.clone(),
    };
    (handle, Outbox { rx, slow, kicked })
}

impl Handle {
    /// Queues one frame; false (and the session is kicked) when the queue is full.
    pub fn push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Every session on this gateway.
#[derive(Default)]
pub struct Sessions {
    users: RwLock<HashMap<UserId, Vec<Handle>>>,
    count: AtomicUsize,
}

impl Sessions {
    pub fn insert(&self, user: UserId, handle: Handle) {
        let mut users = self
            .users
            .write()
            .expect("sessions lock is never held across a panic");
        users.entry(user).or_default().push(handle);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes one session; true if it was there.
    pub fn remove(&self, user: &UserId, id: &SessionId) -> bool {
        let mut users = self
            .users
            .write()
            .expect("sessions lock is never held across a panic");
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
        }
        removed
    }

    /// Queues `frame` for every session of `user`; true if at least one took it.
    pub fn push(&self, user: &UserId, frame: &Bytes) -> bool {
        let users = self
            .users
            .read()
            .expect("sessions lock is never held across a panic");
        let Some(handles) = users.get(user) else {
            return false;
        };
        let mut any = false;
        for handle in handles {
            any |= handle.push(frame.clone());
        }
        any
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session's handle (for broadcasts).
    pub fn handles(&self) -> Vec<Handle> {
        let users = self
            .users
            .read()
            .expect("sessions lock is never held across a panic");
        users
            .values()
            .flat_map(|handles| handles.iter().cloned())
            .collect()
    }

    /// Every (user, session handle), for re-asserting them to the directory.
    pub fn snapshot(&self) -> Vec<(UserId, Handle)> {
        let users = self
            .users
            .read()
            .expect("sessions lock is never held across a panic");
        users
            .iter()
            .flat_map(|(user, handles)| handles.iter().map(move |h| (user.clone(), h.clone())))
            .collect()
    }

    /// Closes the named sessions of `user` (a newer login replaced them); how many.
    pub fn kick(&self, user: &UserId, ids: &[SessionId]) -> usize {
        let users = self
            .users
            .read()
            .expect("sessions lock is never held across a panic");
        let Some(handles) = users.get(user) else {
            return 0;
        };
        let mut kicked = 0;
        for handle in handles.iter().filter(|h| ids.contains(&h.id)) {
            handle.kicked.cancel();
            kicked += 1;
        }
        kicked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_reaches_every_session_of_a_user() {
        let sessions = Sessions::default();
        let alice = UserId::new("alice").unwrap();
        let (h1, mut o1) = channel(SessionId::generate(), None, 4);
        let (h2, mut o2) = channel(SessionId::generate(), None, 4);
        let id1 = h1.id.clone();
        sessions.insert(alice.clone(), h1);
        sessions.insert(alice.clone(), h2);
        assert!(sessions.push(&alice, &Bytes::from_static(b"x")));
        assert_eq!(o1.rx.try_recv().unwrap(), "x");
        assert_eq!(o2.rx.try_recv().unwrap(), "x");
        assert!(sessions.remove(&alice, &id1));
        assert!(!sessions.remove(&alice, &id1));
        assert_eq!(sessions.len(), 1);
        assert!(!sessions.push(&UserId::new("bob").unwrap(), &Bytes::new()));
    }

    #[test]
    fn a_full_queue_kicks_the_slow_session_only() {
        let sessions = Sessions::default();
        let alice = UserId::new("alice").unwrap();
        let (slow, slow_out) = channel(SessionId::generate(), None, 1);
        let (fast, mut fast_out) = channel(SessionId::generate(), None, 8);
        sessions.insert(alice.clone(), slow);
        sessions.insert(alice.clone(), fast);
        assert!(sessions.push(&alice, &Bytes::from_static(b"1")));
        assert!(sessions.push(&alice, &Bytes::from_static(b"2")));
        assert!(slow_out.slow.is_cancelled());
        assert_eq!(fast_out.rx.try_recv().unwrap(), "1");
        assert_eq!(fast_out.rx.try_recv().unwrap(), "2");
    }
}
