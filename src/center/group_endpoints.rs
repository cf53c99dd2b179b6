//! The centers' group endpoints (`mrc.grp.*`): create, delete, join, leave, add, remove,
//! members, list, and `resolve`, which turns a group into its online members grouped by
//! gateway so the sending gateway can deliver with one request per gateway.

use bytes::Bytes;

use super::service::{decode, error, id, Handlers};
use crate::directory::mirror::gateways;
use crate::groups::{allowed, GroupError};
use crate::ident::{GroupId, UserId};
use crate::protocol::code::ErrorCode;
use crate::protocol::group::{
    GroupRequest, ListReply, ListRequest, ResolveReply, REPORT_DETAIL_LIMIT,
};
use crate::protocol::nats::{encode, ErrorBody};
use crate::subject::{
    GRP_ADD, GRP_CREATE, GRP_DELETE, GRP_JOIN, GRP_LEAVE, GRP_LIST, GRP_MEMBERS, GRP_REMOVE,
    GRP_RESOLVE,
};

fn refused(e: GroupError) -> ErrorBody {
    error(e.code, e.message)
}

fn users(raw: &[String]) -> Result<Vec<UserId>, ErrorBody> {
    raw.iter().map(|u| id(UserId::new, "user", u)).collect()
}

impl Handlers {
    pub(super) async fn group_request(
        &self,
        endpoint: &str,
        payload: &[u8],
    ) -> Result<Bytes, ErrorBody> {
        if endpoint == GRP_LIST {
            let req: ListRequest = decode(payload)?;
            let user = id(UserId::new, "user", &req.user)?;
            let by = req
                .by
                .as_deref()
                .map(|b| id(UserId::new, "by", b))
                .transpose()?;
            if by.as_ref().is_some_and(|b| *b != user) {
                return Err(error(
                    ErrorCode::Forbidden,
                    "a user lists only their own groups",
                ));
            }
            self.groups.catch_up().await;
            let mut groups: Vec<String> = self
                .groups
                .mirror()
                .groups_of(&user)
                .iter()
                .map(|g| g.to_string())
                .collect();
            groups.sort();
            return Ok(encode(&ListReply {
                user: user.to_string(),
                groups,
            }));
        }
        let req: GroupRequest = decode(payload)?;
        let group = id(GroupId::new, "group", &req.group)?;
        let by = req
            .by
            .as_deref()
            .map(|b| id(UserId::new, "by", b))
            .transpose()?;
        let user = req
            .user
            .as_deref()
            .map(|u| id(UserId::new, "user", u))
            .transpose()?;
        let members = users(&req.members)?;
        let acting = || {
            user.clone()
                .or(by.clone())
                .ok_or_else(|| error(ErrorCode::BadFrame, "name the `user`"))
        };
        let g = &self.groups;
        let result = match endpoint {
            GRP_CREATE => {
                let owner = acting()?;
                if by.as_ref().is_some_and(|b| *b != owner) {
                    return Err(error(
                        ErrorCode::Forbidden,
                        "a user creates groups for themselves",
                    ));
                }
                g.create(&group, &owner, req.policy.unwrap_or_default(), &members)
                    .await
            }
            GRP_DELETE => g.delete(&group, by.as_ref()).await,
            GRP_JOIN => g.join(&group, &acting()?, by.as_ref()).await,
            GRP_LEAVE => {
                let leaver = acting()?;
                if by.as_ref().is_some_and(|b| *b != leaver) {
                    return Err(error(ErrorCode::Forbidden, "use `remove` to remove others"));
                }
                g.leave(&group, &leaver).await
            }
            GRP_ADD => g.add_members(&group, by.as_ref(), &members).await,
            GRP_REMOVE => g.remove_members(&group, by.as_ref(), &members).await,
            GRP_MEMBERS => g.members(&group, by.as_ref()).await,
            GRP_RESOLVE => return self.resolve(&group, by.as_ref()).await,
            other => return Err(error(ErrorCode::UnknownOp, format!("no endpoint {other}"))),
        };
        result.map(|info| encode(&info)).map_err(refused)
    }

    /// The online members of a group (all but the sender) grouped by gateway.
    async fn resolve(&self, group: &GroupId, by: Option<&UserId>) -> Result<Bytes, ErrorBody> {
        let found = self.groups.get(group).await.map_err(refused)?;
        if !allowed(found.policy.send, &found, by) {
            return Err(error(
                ErrorCode::Forbidden,
                format!("not allowed to send to {group}"),
            ));
        }
        let members: Vec<UserId> = found
            .members
            .into_iter()
            .filter(|m| Some(m) != by)
            .collect();
        let sessions = self
            .directory
            .lookup(&members)
            .await
            .map_err(super::service::unavailable)?;
        let mut reply = ResolveReply {
            group: group.to_string(),
            size: members.len(),
            ..Default::default()
        };
        let detailed = members.len() <= REPORT_DETAIL_LIMIT;
        for (member, sessions) in members.iter().zip(&sessions) {
            if sessions.is_empty() {
                reply.offline += 1;
                if detailed {
                    reply.offline_members.push(member.to_string());
                }
            }
            for gateway in gateways(sessions) {
                reply
                    .gateways
                    .entry(gateway.to_string())
                    .or_default()
                    .push(member.to_string());
            }
        }
        Ok(encode(&reply))
    }
}
