//! Group payloads: the policy of a group and the `mrc.grp.*` requests and replies (the
//! client ops and the HTTP API carry the same shapes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who may do something in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    Owner,
    Members,
    Anyone,
}

/// How users become members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Anyone may join by themselves.
    Open,
    /// Only those who may manage the group add members.
    Invite,
}

/// Who may read the member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    /// Members only.
    Private,
}

/// A group's rules. Defaults: members send, the owner manages, joining is by invitation,
/// the member list is private.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default = "members")]
    pub send: Who,
    /// Who may add and remove others (only the owner deletes the group).
    #[serde(default = "owner")]
    pub manage: Who,
    #[serde(default = "invite")]
    pub join: Join,
    #[serde(default = "private")]
    pub visibility: Visibility,
}

fn members() -> Who {
    Who::Members
}
fn owner() -> Who {
    Who::Owner
}
fn invite() -> Join {
    Join::Invite
}
fn private() -> Visibility {
    Visibility::Private
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            send: members(),
            manage: owner(),
            join: invite(),
            visibility: private(),
        }
    }
}

/// Every `mrc.grp.*` request. `by` is the acting user, whose rights are checked; it is
/// absent for trusted backends (NATS permissions decide who those are).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupRequest {
    /// Over HTTP the group is in the path, so the body may leave it out.
    #[serde(default)]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// `create`: the owner (default: `by`). `join`/`leave`: who (default: `by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `create` / `add` / `remove`: the members concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// `create`: the rules (defaults for missing fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// `mrc.grp.list`: the groups of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ListRequest {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The answer to create, join, leave, add, remove, delete and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub group: String,
    pub owner: String,
    pub policy: Policy,
    /// How many members the group has (0 after `delete`).
    pub size: usize,
    /// The member list: only from `members`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListReply {
    pub user: String,
    pub groups: Vec<String>,
}

/// Groups up to this size get per-member outcomes in send reports (`offline_members` is
/// filled); larger ones get counts.
pub(crate) const REPORT_DETAIL_LIMIT: usize = 100;

/// `mrc.grp.resolve {group, by}`: a group's online members by gateway, for a send.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResolveReply {
    pub group: String,
    /// Members other than the sender.
    pub size: usize,
    /// Gateway → members with a session there.
    pub gateways: BTreeMap<String, Vec<String>>,
    /// Members with no session: listed for small groups, counted for all.
    pub offline: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline_members: Vec<String>,
}

/// `mrc.grp.send`: a backend's message to a group (over HTTP the group is in the path).
#[derive(Debug, Deserialize)]
pub(crate) struct GroupSendRequest<'a> {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(borrow)]
    pub body: &'a serde_json::value::RawValue,
}

/// Counts in the report of a group message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub delivered: usize,
    pub offline: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unavailable: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
