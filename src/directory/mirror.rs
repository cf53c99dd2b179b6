//! The in-memory copy of the directory bucket that every center answers look-ups from.
//!
//! It is fed only by the bucket's watch (one writer, in stream order) and can always be
//! rebuilt from KV: it holds nothing of its own. Readers take a short `RwLock` read; no
//! lock is ever held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::ident::{GatewayId, UserId};
use crate::protocol::digest::{bucket_of, empty_buckets, Buckets, Digest};
use crate::protocol::record::{SessionRecord, UserRecord};
use crate::store::{Applied, Entry as BucketEntry, Replica};
use crate::sync;

/// One directory change, decoded from a bucket entry.
#[derive(Debug)]
pub(crate) struct Change {
    /// The stream sequence of the change (the key's new revision).
    pub(crate) revision: u64,
    pub(crate) kind: ChangeKind,
}

#[derive(Debug)]
pub(crate) enum ChangeKind {
    /// The user's sessions are now these.
    Put(UserId, UserRecord),
    /// The user has no sessions any more.
    Delete(UserId),
    /// An entry MRC did not write (bad key or value): skipped, but it still advances the
    /// revision the mirror has applied.
    Foreign(String),
}

impl Change {
    pub(crate) fn decode(entry: BucketEntry) -> Self {
        let kind = match (UserId::from_token(&entry.key), entry.value) {
            (Err(e), _) => ChangeKind::Foreign(format!("key {:?}: {e}", entry.key)),
            (Ok(user), Some(value)) => match UserRecord::decode(&value) {
                Ok(record) => ChangeKind::Put(user, record),
                Err(e) => ChangeKind::Foreign(format!("value of {:?}: {e}", entry.key)),
            },
            (Ok(user), None) => ChangeKind::Delete(user),
        };
        if let ChangeKind::Foreign(why) = &kind {
            tracing::warn!(%why, "skipping a directory entry MRC did not write");
        }
        Change {
            revision: entry.revision,
            kind,
        }
    }
}

/// One live session of a user, as the mirror keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) gateway: GatewayId,
    pub(crate) since: u64,
    /// The device class the client declared, if any.
    pub(crate) device: Option<Arc<str>>,
}

/// A user's sessions and the bucket revision they come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub(crate) revision: u64,
    pub(crate) sessions: Vec<Session>,
}

/// The map itself, also built on the side while (re)loading.
#[derive(Default)]
pub(crate) struct State {
    users: HashMap<UserId, Entry>,
    /// What the directory holds of each gateway: eviction and reconciliation need it.
    by_gateway: HashMap<GatewayId, GatewayIndex>,
}

/// The users with at least one session on one gateway, and the digests of those sessions
/// (all of them, for heartbeats, and per bucket, for reconciliation: 4 KiB per gateway).
struct GatewayIndex {
    users: HashSet<UserId>,
    digest: Digest,
    buckets: Buckets,
}

impl Default for GatewayIndex {
    fn default() -> Self {
        GatewayIndex {
            users: HashSet::new(),
            digest: Digest::default(),
            buckets: empty_buckets(),
        }
    }
}

impl GatewayIndex {
    fn add(&mut self, user: &UserId, session: &str) {
        self.digest.add(user.as_str(), session);
        self.buckets[bucket_of(user.as_str())].add(user.as_str(), session);
    }

    fn remove(&mut self, user: &UserId, session: &str) {
        self.digest.remove(user.as_str(), session);
        self.buckets[bucket_of(user.as_str())].remove(user.as_str(), session);
    }
}

impl State {
    /// Applies one change; returns false for a change older than what is held.
    pub(crate) fn apply(&mut self, change: Change) -> bool {
        let (user, sessions) = match change.kind {
            ChangeKind::Foreign(_) => return true,
            ChangeKind::Put(user, record) => {
                let sessions = self.sessions_of(&record);
                (user, sessions)
            }
            ChangeKind::Delete(user) => (user, Vec::new()),
        };
        if let Some(old) = self.users.get(&user) {
            if old.revision > change.revision {
                return false;
            }
        }
        let old = self.users.remove(&user).unwrap_or_default();
        self.unindex(&user, &old.sessions, &sessions);
        for s in &sessions {
            let index = self.by_gateway.entry(s.gateway.clone()).or_default();
            index.users.insert(user.clone());
            index.add(&user, &s.id);
        }
        if !sessions.is_empty() {
            self.users.insert(
                user,
                Entry {
                    revision: change.revision,
                    sessions,
                },
            );
        }
        true
    }

    /// Takes `user`'s `old` sessions out of the per-gateway index; `new` says on which
    /// gateways the user stays.
    fn unindex(&mut self, user: &UserId, old: &[Session], new: &[Session]) {
        for s in old {
            let Some(index) = self.by_gateway.get_mut(&s.gateway) else {
                continue;
            };
            index.remove(user, &s.id);
            if !new.iter().any(|n| n.gateway == s.gateway) {
                index.users.remove(user);
            }
            if index.users.is_empty() {
                self.by_gateway.remove(&s.gateway);
            }
        }
    }

    /// Decodes a record's sessions, sharing one allocation per gateway id and skipping
    /// sessions whose gateway id is not valid.
    pub(crate) fn sessions_of(&self, record: &UserRecord) -> Vec<Session> {
        record
            .sessions
            .iter()
            .filter_map(|s| {
                let gateway = match self.by_gateway.get_key_value(s.gateway.as_str()) {
                    Some((gw, _)) => gw.clone(),
                    None => GatewayId::new(&s.gateway).ok()?,
                };
                Some(Session {
                    id: Arc::from(s.session.as_str()),
                    gateway,
                    since: s.since,
                    device: s.device.as_deref().map(Arc::from),
                })
            })
            .collect()
    }
}

/// The distinct gateways of some sessions, in first-seen order.
pub(crate) fn gateways(sessions: &[Session]) -> Vec<&GatewayId> {
    let mut out: Vec<&GatewayId> = Vec::with_capacity(sessions.len());
    for s in sessions {
        if !out.contains(&&s.gateway) {
            out.push(&s.gateway);
        }
    }
    out
}

/// The record to store for some sessions.
pub(crate) fn record_of(sessions: &[Session]) -> UserRecord {
    UserRecord {
        sessions: sessions
            .iter()
            .map(|s| SessionRecord {
                session: s.id.to_string(),
                gateway: s.gateway.to_string(),
                since: s.since,
                device: s.device.as_deref().map(str::to_string),
            })
            .collect(),
    }
}

/// Shared handle to the mirror.
pub(crate) struct Mirror {
    state: RwLock<State>,
    /// The highest bucket revision applied; look-ups wait on it to read their own writes.
    applied: Applied,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            state: RwLock::new(State::default()),
            applied: Applied::default(),
        }
    }
}

impl Replica for Mirror {
    type State = State;

    fn load(state: &mut State, entry: BucketEntry) {
        state.apply(Change::decode(entry));
    }

    fn replace(&self, state: State, applied: u64) {
        *sync::write(&self.state) = state;
        self.applied.reset(applied);
    }

    fn apply(&self, entry: BucketEntry) {
        self.apply_change(Change::decode(entry));
    }

    fn applied(&self) -> u64 {
        Mirror::applied(self)
    }
}

impl Mirror {
    /// The highest bucket revision applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.get()
    }

    /// The applied revision, to wait on.
    pub(crate) fn applied_watch(&self) -> &Applied {
        &self.applied
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        sync::read(&self.state)
    }

    /// Applies one decoded change.
    pub(crate) fn apply_change(&self, change: Change) {
        let revision = change.revision;
        sync::write(&self.state).apply(change);
        self.applied.advance(revision);
    }

    /// A user's entry, if the user has sessions.
    pub(crate) fn entry(&self, user: &UserId) -> Option<Entry> {
        self.read().users.get(user).cloned()
    }

    /// The sessions of each user (empty when offline), in the order asked.
    pub(crate) fn sessions(&self, users: &[UserId]) -> Vec<Vec<Session>> {
        let state = self.read();
        users
            .iter()
            .map(|u| {
                state
                    .users
                    .get(u)
                    .map(|e| e.sessions.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Users with at least one session on `gateway`.
    pub(crate) fn users_on(&self, gateway: &GatewayId) -> Vec<UserId> {
        self.read()
            .by_gateway
            .get(gateway)
            .map(|index| index.users.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The digest of every session on `gateway`, kept up to date change by change.
    pub(crate) fn digest_of(&self, gateway: &GatewayId) -> Digest {
        self.read()
            .by_gateway
            .get(gateway)
            .map(|index| index.digest)
            .unwrap_or_default()
    }

    /// The sessions on `gateway` of users whose bucket passes `wanted` (all of them for
    /// `|_| true`), as (user, session id) pairs.
    pub(crate) fn sessions_on(
        &self,
        gateway: &GatewayId,
        wanted: impl Fn(usize) -> bool,
    ) -> Vec<(UserId, Arc<str>)> {
        let state = self.read();
        let Some(index) = state.by_gateway.get(gateway) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for user in index.users.iter().filter(|u| wanted(bucket_of(u.as_str()))) {
            let sessions = state.users.get(user).map(|e| e.sessions.as_slice());
            for s in sessions.unwrap_or_default() {
                if s.gateway == *gateway {
                    out.push((user.clone(), s.id.clone()));
                }
            }
        }
        out
    }

    /// Per-bucket digests of the sessions on `gateway`, kept up to date like `digest_of`.
    pub(crate) fn buckets_of(&self, gateway: &GatewayId) -> Buckets {
        self.read()
            .by_gateway
            .get(gateway)
            .map_or_else(empty_buckets, |index| index.buckets.clone())
    }

    /// Gateways that hold at least one session.
    pub(crate) fn gateways(&self) -> Vec<GatewayId> {
        self.read().by_gateway.keys().cloned().collect()
    }

    /// (users online, gateways with sessions).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.read();
        (state.users.len(), state.by_gateway.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: u64, user: &str, sessions: &[(&str, &str)]) -> Change {
        let record = UserRecord {
            sessions: sessions
                .iter()
                .map(|(id, gw)| SessionRecord {
                    session: id.to_string(),
                    gateway: gw.to_string(),
                    since: 1,
                    device: None,
                })
                .collect(),
        };
        Change {
            revision: rev,
            kind: ChangeKind::Put(UserId::new(user).unwrap(), record),
        }
    }

    fn gw(id: &str) -> GatewayId {
        GatewayId::new(id).unwrap()
    }

    #[test]
    fn tracks_users_per_gateway_through_moves_and_deletes() {
        let mirror = Mirror::default();
        mirror.apply_change(put(1, "alice", &[("s1", "g1")]));
        mirror.apply_change(put(2, "bob", &[("s2", "g1"), ("s3", "g2")]));
        assert_eq!(mirror.users_on(&gw("g1")).len(), 2);
        mirror.apply_change(put(3, "alice", &[("s4", "g2")]));
        assert_eq!(
            mirror.users_on(&gw("g1")),
            vec![UserId::new("bob").unwrap()]
        );
        assert_eq!(mirror.users_on(&gw("g2")).len(), 2);
        let bob = UserId::new("bob").unwrap();
        mirror.apply_change(Change {
            revision: 4,
            kind: ChangeKind::Delete(bob.clone()),
        });
        assert!(mirror.entry(&bob).is_none());
        assert!(mirror.users_on(&gw("g1")).is_empty());
        assert_eq!(mirror.gateways(), vec![gw("g2")]);
        assert_eq!(mirror.applied(), 4);
        assert_eq!(mirror.counts(), (1, 1));
    }

    #[test]
    fn per_gateway_digests_follow_every_change() {
        let mirror = Mirror::default();
        mirror.apply_change(put(1, "alice", &[("s1", "g1"), ("s2", "g1")]));
        mirror.apply_change(put(2, "bob", &[("s3", "g1"), ("s4", "g2")]));
        mirror.apply_change(put(3, "alice", &[("s2", "g1"), ("s5", "g2")]));
        let expect = |pairs: &[(&str, &str)]| Digest::of(pairs.iter().copied());
        assert_eq!(
            mirror.digest_of(&gw("g1")),
            expect(&[("alice", "s2"), ("bob", "s3")])
        );
        assert_eq!(
            mirror.digest_of(&gw("g2")),
            expect(&[("bob", "s4"), ("alice", "s5")])
        );
        for g in ["g1", "g2"] {
            let mut recomputed = empty_buckets();
            for (user, session) in mirror.sessions_on(&gw(g), |_| true) {
                recomputed[bucket_of(user.as_str())].add(user.as_str(), &session);
            }
            assert_eq!(mirror.buckets_of(&gw(g)), recomputed, "{g}");
        }
        let alice = bucket_of("alice");
        assert_eq!(
            mirror.sessions_on(&gw("g2"), |b| b == alice),
            vec![(UserId::new("alice").unwrap(), Arc::from("s5"))]
        );
        mirror.apply_change(Change {
            revision: 4,
            kind: ChangeKind::Delete(UserId::new("bob").unwrap()),
        });
        mirror.apply_change(Change {
            revision: 5,
            kind: ChangeKind::Delete(UserId::new("alice").unwrap()),
        });
        assert_eq!(mirror.digest_of(&gw("g1")), Digest::default());
        assert_eq!(mirror.digest_of(&gw("g2")), Digest::default());
        assert!(mirror.gateways().is_empty());
    }

    #[test]
    fn older_changes_never_overwrite_newer_ones() {
        let mut state = State::default();
        assert!(state.apply(put(5, "alice", &[("s2", "g2")])));
        assert!(!state.apply(put(3, "alice", &[("s1", "g1")])));
        assert_eq!(
            state.users[&UserId::new("alice").unwrap()].sessions[0].gateway,
            gw("g2")
        );
    }

    #[test]
    fn invalid_gateway_ids_in_the_bucket_are_skipped() {
        let mirror = Mirror::default();
        mirror.apply_change(put(1, "alice", &[("s1", "bad.gw"), ("s2", "g1")]));
        let entry = mirror.entry(&UserId::new("alice").unwrap()).unwrap();
        assert_eq!(entry.sessions.len(), 1);
        assert_eq!(record_of(&entry.sessions).sessions[0].gateway, "g1");
    }
}
