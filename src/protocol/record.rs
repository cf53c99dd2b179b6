//! The value stored under a user's key in the directory KV bucket: that user's live
//! sessions. Field names are short because there is one record per online user.

use serde::{Deserialize, Serialize};

/// All live sessions of one user. The key is the user's token; an empty record is never
/// stored (the key is deleted instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    #[serde(rename = "s")]
    pub sessions: Vec<SessionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    #[serde(rename = "id")]
    pub session: String,
    #[serde(rename = "gw")]
    pub gateway: String,
    /// Registration time, ms since the epoch.
    #[serde(rename = "t")]
    pub since: u64,
    /// The device class the client declared (`mobile`, `desktop`...), if any.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl UserRecord {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("records are serializable"))
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

/// `g.<group>` in the groups bucket: a group's settings. `epoch` is new for every
/// creation, so memberships left over from a deleted group of the same id never count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupRecord {
    pub owner: String,
    pub policy: super::group::Policy,
    pub epoch: String,
    pub created: u64,
}

/// `m.<group>.<user>` in the groups bucket: one membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberRecord {
    pub epoch: String,
    pub since: u64,
}

impl GroupRecord {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("records are serializable"))
    }
}

impl MemberRecord {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("records are serializable"))
    }
}
