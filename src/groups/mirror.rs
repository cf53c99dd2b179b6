//! The in-memory copy of the groups bucket that centers answer group questions from.
//!
//! Keys: `g.<group>` holds a [`GroupRecord`], `m.<group>.<user>` a [`MemberRecord`]. A
//! membership counts only while its group exists with the same `epoch`, so a group deleted
//! and created again never inherits old members. Fed only by the bucket's watch.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::ident::{GroupId, UserId};
use crate::protocol::group::Policy;
use crate::protocol::record::{GroupRecord, MemberRecord};
use crate::store::{Applied, Entry, Replica};
use crate::sync;

/// The key of a group's settings.
pub(crate) fn group_key(group: &GroupId) -> String {
    format!("g.{}", group.token())
}

/// The key of one membership.
pub(crate) fn member_key(group: &GroupId, user: &UserId) -> String {
    format!("m.{}.{}", group.token(), user.token())
}

/// One group as the mirror keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) owner: UserId,
    pub(crate) policy: Policy,
    pub(crate) epoch: String,
    pub(crate) members: HashSet<UserId>,
}

#[derive(Default)]
pub(crate) struct State {
    groups: HashMap<GroupId, Group>,
    by_user: HashMap<UserId, HashSet<GroupId>>,
}

impl State {
    fn apply(&mut self, entry: Entry) {
        let mut parts = entry.key.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("g"), Some(group), None) => {
                let Ok(group) = GroupId::from_token(group) else {
                    return;
                };
                let record = entry
                    .value
                    .and_then(|v| serde_json::from_slice::<GroupRecord>(&v).ok());
                match record.and_then(|r| Some((UserId::new(&r.owner).ok()?, r))) {
                    Some((owner, record)) => self.put_group(group, owner, record),
                    None => self.remove_group(&group),
                }
            }
            (Some("m"), Some(group), Some(user)) => {
                let (Ok(group), Ok(user)) = (GroupId::from_token(group), UserId::from_token(user))
                else {
                    return;
                };
                let record = entry
                    .value
                    .and_then(|v| serde_json::from_slice::<MemberRecord>(&v).ok());
                self.put_member(group, user, record);
            }
            _ => tracing::warn!(key = %entry.key, "skipping a groups entry MRC did not write"),
        }
    }

    fn put_group(&mut self, id: GroupId, owner: UserId, record: GroupRecord) {
        let same_epoch = self
            .groups
            .get(&id)
            .is_some_and(|g| g.epoch == record.epoch);
        if same_epoch {
            let group = self.groups.get_mut(&id).expect("checked above");
            group.owner = owner;
            group.policy = record.policy;
            return;
        }
        self.remove_group(&id);
        let group = Group {
            owner,
            policy: record.policy,
            epoch: record.epoch,
            members: HashSet::new(),
        };
        self.groups.insert(id, group);
    }

    fn remove_group(&mut self, id: &GroupId) {
        let Some(group) = self.groups.remove(id) else {
            return;
        };
        for user in group.members {
            self.unlink(&user, id);
        }
    }

    fn put_member(&mut self, id: GroupId, user: UserId, record: Option<MemberRecord>) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        match record {
            Some(record) if record.epoch == group.epoch => {
                if group.members.insert(user.clone()) {
                    self.by_user.entry(user).or_default().insert(id);
                }
            }
            // Another epoch's membership: not ours (a put of a stale epoch never counts).
            Some(_) => {}
            None => {
                if group.members.remove(&user) {
                    self.unlink(&user, &id);
                }
            }
        }
    }

    fn unlink(&mut self, user: &UserId, group: &GroupId) {
        if let Some(groups) = self.by_user.get_mut(user) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_user.remove(user);
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Mirror {
    state: RwLock<State>,
    applied: Applied,
}

impl Replica for Mirror {
    type State = State;

    fn load(state: &mut State, entry: Entry) {
        state.apply(entry);
    }

    fn replace(&self, state: State, applied: u64) {
        *sync::write(&self.state) = state;
        self.applied.reset(applied);
    }

    fn apply(&self, entry: Entry) {
        let revision = entry.revision;
        sync::write(&self.state).apply(entry);
        self.applied.advance(revision);
    }

    fn applied(&self) -> u64 {
        self.applied.get()
    }
}

impl Mirror {
    pub(crate) fn applied_watch(&self) -> &Applied {
        &self.applied
    }

    /// A copy of one group.
    pub(crate) fn group(&self, id: &GroupId) -> Option<Group> {
        sync::read(&self.state).groups.get(id).cloned()
    }

    /// The groups `user` belongs to.
    pub(crate) fn groups_of(&self, user: &UserId) -> Vec<GroupId> {
        let state = sync::read(&self.state);
        state
            .by_user
            .get(user)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `a` and `b` share at least one group.
    pub(crate) fn share_a_group(&self, a: &UserId, b: &UserId) -> bool {
        let state = sync::read(&self.state);
        match (state.by_user.get(a), state.by_user.get(b)) {
            (Some(x), Some(y)) => x.iter().any(|g| y.contains(g)),
            _ => false,
        }
    }

    pub(crate) fn count(&self) -> usize {
        sync::read(&self.state).groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rev: u64, key: String, value: Option<serde_json::Value>) -> Entry {
        let value = value.map(|v| bytes::Bytes::from(v.to_string()));
        Entry {
            key,
            revision: rev,
            pending: 0,
            value,
        }
    }

    fn ids() -> (GroupId, UserId, UserId) {
        (
            GroupId::new("room.1").unwrap(),
            UserId::new("alice").unwrap(),
            UserId::new("张伟").unwrap(),
        )
    }

    fn meta(epoch: &str) -> Option<serde_json::Value> {
        Some(
            serde_json::json!({"owner": "alice", "policy": Policy::default(), "epoch": epoch, "created": 1}),
        )
    }

    #[test]
    fn members_count_only_for_the_current_epoch() {
        let (g, alice, zhang) = ids();
        let mirror = Mirror::default();
        mirror.apply(entry(1, group_key(&g), meta("e1")));
        mirror.apply(entry(
            2,
            member_key(&g, &alice),
            Some(serde_json::json!({"epoch": "e1", "since": 1})),
        ));
        mirror.apply(entry(
            3,
            member_key(&g, &zhang),
            Some(serde_json::json!({"epoch": "e1", "since": 1})),
        ));
        assert_eq!(mirror.group(&g).unwrap().members.len(), 2);
        assert!(mirror.share_a_group(&alice, &zhang));
        // Deleted and created again: old memberships do not come back.
        mirror.apply(entry(4, group_key(&g), None));
        assert!(mirror.groups_of(&alice).is_empty());
        mirror.apply(entry(5, group_key(&g), meta("e2")));
        mirror.apply(entry(
            6,
            member_key(&g, &zhang),
            Some(serde_json::json!({"epoch": "e1", "since": 1})),
        ));
        assert!(mirror.group(&g).unwrap().members.is_empty());
        mirror.apply(entry(
            7,
            member_key(&g, &zhang),
            Some(serde_json::json!({"epoch": "e2", "since": 1})),
        ));
        mirror.apply(entry(8, member_key(&g, &zhang), None));
        assert!(mirror.group(&g).unwrap().members.is_empty());
        assert!(mirror.groups_of(&zhang).is_empty());
        assert_eq!(mirror.applied(), 8);
    }
}
