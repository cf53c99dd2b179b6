//! Groups: named sets of users with a policy, kept in the JetStream KV bucket `mrc_groups`
//! and mirrored by every center like the directory.
//!
//! Rights: `by` is the acting user (a client, or an HTTP token's subject); `None` is a
//! trusted backend, which may do anything. Only the owner deletes a group; the owner
//! cannot leave or be removed (delete the group instead).

pub(crate) mod mirror;

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::ident::{GroupId, UserId};
use crate::protocol::code::ErrorCode;
use crate::protocol::group::{GroupInfo, Join, Policy, Visibility, Who};
use crate::protocol::now_ms;
use crate::protocol::record::{GroupRecord, MemberRecord};
use crate::store::{self, Bucket, Freshness, WriteError};
pub(crate) use mirror::{Group, Mirror};

/// Most members one group may have.
pub const MAX_GROUP_MEMBERS: usize = 20_000;
/// Concurrent bucket writes of one request.
const WRITE_CONCURRENCY: usize = 64;

/// Why a group request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct GroupError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl GroupError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        GroupError {
            code,
            message: message.into(),
        }
    }

    fn unavailable(e: anyhow::Error) -> Self {
        GroupError::new(ErrorCode::Unavailable, format!("{e:#}"))
    }
}

/// The groups as a center uses them.
#[derive(Clone)]
pub(crate) struct Groups {
    bucket: Bucket,
    mirror: Arc<Mirror>,
    resync: Arc<tokio::sync::Notify>,
}

/// Whether `user` (`None`: a trusted backend) is among `who` of `group`.
pub(crate) fn allowed(who: Who, group: &Group, user: Option<&UserId>) -> bool {
    let Some(user) = user else { return true };
    match who {
        Who::Anyone => true,
        Who::Members => group.members.contains(user) || group.owner == *user,
        Who::Owner => group.owner == *user,
    }
}

impl Groups {
    pub(crate) fn new(bucket: Bucket) -> Self {
        Groups {
            bucket,
            mirror: Arc::default(),
            resync: Arc::default(),
        }
    }

    pub(crate) fn mirror(&self) -> &Arc<Mirror> {
        &self.mirror
    }

    /// Loads the bucket, then follows it until `shutdown`.
    pub(crate) async fn follow(
        &self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        store::follow(
            self.bucket.clone(),
            self.mirror.clone(),
            self.resync.clone(),
            shutdown,
        )
        .await
    }

    /// A read barrier: returns once the mirror holds every write the bucket held when
    /// called (or the barrier gave up; a lagging mirror is then reloaded). Whoever reads
    /// the mirror right after a write it was told about (its own or a client's) calls this.
    pub(crate) async fn catch_up(&self) {
        if store::catch_up(&self.bucket, self.mirror.applied_watch()).await == Freshness::Behind {
            self.resync.notify_one();
        }
    }

    /// The group, as fresh as the bucket: read from the mirror after a read barrier (it
    /// may have just been created or changed through another center).
    pub(crate) async fn get(&self, id: &GroupId) -> Result<Group, GroupError> {
        // Always behind a read barrier, even when the mirror has the group: it may have
        // the group's settings but not yet the memberships written after them (a send
        // right after `create` or `add` must see them all).
        self.catch_up().await;
        self.mirror
            .group(id)
            .ok_or_else(|| GroupError::new(ErrorCode::NotFound, format!("no group {id}")))
    }

    /// Creates a group owned by `owner` with `members` (the owner is always one).
    pub(crate) async fn create(
        &self,
        id: &GroupId,
        owner: &UserId,
        policy: Policy,
        members: &[UserId],
    ) -> Result<GroupInfo, GroupError> {
        let mut all: Vec<UserId> = members.to_vec();
        if !all.contains(owner) {
            all.push(owner.clone());
        }
        if all.len() > MAX_GROUP_MEMBERS {
            let message = format!("at most {MAX_GROUP_MEMBERS} members, owner included");
            return Err(GroupError::new(ErrorCode::TooManyReceivers, message));
        }
        let epoch = nuid::next().to_string();
        let record = GroupRecord {
            owner: owner.to_string(),
            policy,
            epoch: epoch.clone(),
            created: now_ms(),
        };
        match self
            .bucket
            .write(&mirror::group_key(id), None, record.encode())
            .await
        {
            Ok(_) => {}
            Err(WriteError::Conflict(_)) => {
                return Err(GroupError::new(
                    ErrorCode::GroupExists,
                    format!("group {id} exists"),
                ));
            }
            Err(WriteError::Other(e)) => return Err(GroupError::unavailable(e)),
        }
        self.put_members(id, &epoch, &all).await?;
        Ok(info(id, owner, policy, all.len()))
    }

    /// Deletes a group: its settings first (it is gone at once), then its memberships.
    pub(crate) async fn delete(
        &self,
        id: &GroupId,
        by: Option<&UserId>,
    ) -> Result<GroupInfo, GroupError> {
        let group = self.get(id).await?;
        if !allowed(Who::Owner, &group, by) {
            return Err(GroupError::new(
                ErrorCode::Forbidden,
                "only the owner deletes a group",
            ));
        }
        self.bucket
            .delete(&mirror::group_key(id))
            .await
            .map_err(GroupError::unavailable)?;
        let keys = group
            .members
            .iter()
            .map(|u| mirror::member_key(id, u))
            .collect();
        if let Some(e) = self.write_all(keys, None).await {
            // The group is gone; leftover memberships belong to a dead epoch and never count.
            tracing::warn!(group = %id, error = %format!("{e:#}"), "membership left behind");
        }
        let mut info = info(id, &group.owner, group.policy, 0);
        info.deleted = true;
        Ok(info)
    }

    /// `user` joins by themselves (open groups), or `by` adds them.
    pub(crate) async fn join(
        &self,
        id: &GroupId,
        user: &UserId,
        by: Option<&UserId>,
    ) -> Result<GroupInfo, GroupError> {
        let group = self.get(id).await?;
        let self_join = by.is_none_or(|b| b == user) && group.policy.join == Join::Open;
        if !self_join && !allowed(group.policy.manage, &group, by) {
            return Err(GroupError::new(
                ErrorCode::Forbidden,
                "this group is joined by invitation",
            ));
        }
        self.add(
            id,
            by.filter(|_| !self_join),
            std::slice::from_ref(user),
            group,
        )
        .await
    }

    /// `by` adds `members`.
    pub(crate) async fn add_members(
        &self,
        id: &GroupId,
        by: Option<&UserId>,
        members: &[UserId],
    ) -> Result<GroupInfo, GroupError> {
        let group = self.get(id).await?;
        self.add(id, by, members, group).await
    }

    async fn add(
        &self,
        id: &GroupId,
        by: Option<&UserId>,
        members: &[UserId],
        group: Group,
    ) -> Result<GroupInfo, GroupError> {
        if !allowed(group.policy.manage, &group, by) {
            return Err(GroupError::new(
                ErrorCode::Forbidden,
                "not allowed to add members",
            ));
        }
        let new: Vec<UserId> = members
            .iter()
            .filter(|u| !group.members.contains(*u))
            .cloned()
            .collect();
        if group.members.len() + new.len() > MAX_GROUP_MEMBERS {
            return Err(GroupError::new(
                ErrorCode::TooManyReceivers,
                format!("at most {MAX_GROUP_MEMBERS} members"),
            ));
        }
        self.put_members(id, &group.epoch, &new).await?;
        Ok(info(
            id,
            &group.owner,
            group.policy,
            group.members.len() + new.len(),
        ))
    }

    /// `user` leaves by themselves.
    pub(crate) async fn leave(&self, id: &GroupId, user: &UserId) -> Result<GroupInfo, GroupError> {
        let group = self.get(id).await?;
        self.remove(id, None, std::slice::from_ref(user), group)
            .await
    }

    /// `by` removes `members`.
    pub(crate) async fn remove_members(
        &self,
        id: &GroupId,
        by: Option<&UserId>,
        members: &[UserId],
    ) -> Result<GroupInfo, GroupError> {
        let group = self.get(id).await?;
        if !allowed(group.policy.manage, &group, by) {
            return Err(GroupError::new(
                ErrorCode::Forbidden,
                "not allowed to remove members",
            ));
        }
        self.remove(id, by, members, group).await
    }

    async fn remove(
        &self,
        id: &GroupId,
        _by: Option<&UserId>,
        members: &[UserId],
        group: Group,
    ) -> Result<GroupInfo, GroupError> {
        if members.contains(&group.owner) {
            return Err(GroupError::new(
                ErrorCode::Forbidden,
                "the owner stays; delete the group instead",
            ));
        }
        let gone: Vec<&UserId> = members
            .iter()
            .filter(|u| group.members.contains(*u))
            .collect();
        let keys = gone.iter().map(|u| mirror::member_key(id, u)).collect();
        if let Some(e) = self.write_all(keys, None).await {
            return Err(GroupError::unavailable(e));
        }
        Ok(info(
            id,
            &group.owner,
            group.policy,
            group.members.len() - gone.len(),
        ))
    }

    /// The member list, for members of private groups and anyone for public ones.
    pub(crate) async fn members(
        &self,
        id: &GroupId,
        by: Option<&UserId>,
    ) -> Result<GroupInfo, GroupError> {
        let group = self.get(id).await?;
        let who = match group.policy.visibility {
            Visibility::Public => Who::Anyone,
            Visibility::Private => Who::Members,
        };
        if !allowed(who, &group, by) {
            return Err(GroupError::new(
                ErrorCode::Forbidden,
                "the member list of a private group is for its members",
            ));
        }
        let mut members: Vec<String> = group.members.iter().map(|u| u.to_string()).collect();
        members.sort();
        let mut info = info(id, &group.owner, group.policy, members.len());
        info.members = Some(members);
        Ok(info)
    }

    async fn put_members(
        &self,
        id: &GroupId,
        epoch: &str,
        members: &[UserId],
    ) -> Result<(), GroupError> {
        let value = MemberRecord {
            epoch: epoch.to_string(),
            since: now_ms(),
        }
        .encode();
        let keys = members.iter().map(|u| mirror::member_key(id, u)).collect();
        match self.write_all(keys, Some(value)).await {
            Some(e) => Err(GroupError::unavailable(e)),
            None => Ok(()),
        }
    }

    /// Puts `value` under (or, with `None`, deletes) every key, a few at a time; returns
    /// the first failure.
    async fn write_all(
        &self,
        keys: Vec<String>,
        value: Option<bytes::Bytes>,
    ) -> Option<anyhow::Error> {
        let bucket = self.bucket.clone();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(keys)
            .map(move |key| {
                let (bucket, value) = (bucket.clone(), value.clone());
                async move {
                    match value {
                        Some(value) => bucket.put(&key, value).await.map(|_| ()),
                        None => bucket.delete(&key).await,
                    }
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().find_map(Result::err)
    }
}

fn info(id: &GroupId, owner: &UserId, policy: Policy, size: usize) -> GroupInfo {
    GroupInfo {
        group: id.to_string(),
        owner: owner.to_string(),
        policy,
        size,
        members: None,
        deleted: false,
    }
}
