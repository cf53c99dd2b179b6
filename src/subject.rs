//! The only place subject strings are built.
//!
//! Every subject starts with a configurable prefix (default `mrc`). User ids enter subjects
//! only through [`UserId::token`], gateway ids only after [`GatewayId`] validation, so no
//! input can add a `.`, `*` or `>` to a subject.

use std::sync::Arc;

use crate::ident::{GatewayId, IdError, UserId};

/// Names of the center's micro-service endpoints under [`Subjects::dir_group`].
pub(crate) const DIR_REGISTER: &str = "register";
pub(crate) const DIR_UNREGISTER: &str = "unregister";
pub const DIR_LOOKUP: &str = "lookup";
pub(crate) const DIR_PURGE: &str = "purge";
pub const DIR_PRESENCE: &str = "presence";
pub(crate) const DIR_GATEWAYS: &str = "gateways";
pub(crate) const DIR_DIGESTS: &str = "digests";
pub(crate) const DIR_SESSIONS: &str = "sessions";

/// Names of the centers' group endpoints under [`Subjects::group_group`].
pub(crate) const GRP_CREATE: &str = "create";
pub const GRP_DELETE: &str = "delete";
pub(crate) const GRP_JOIN: &str = "join";
pub(crate) const GRP_LEAVE: &str = "leave";
pub(crate) const GRP_ADD: &str = "add";
pub(crate) const GRP_REMOVE: &str = "remove";
pub(crate) const GRP_MEMBERS: &str = "members";
pub(crate) const GRP_LIST: &str = "list";
pub const GRP_RESOLVE: &str = "resolve";
/// Every center group endpoint.
pub(crate) const GRP_ENDPOINTS: [&str; 9] = [
    GRP_CREATE,
    GRP_DELETE,
    GRP_JOIN,
    GRP_LEAVE,
    GRP_ADD,
    GRP_REMOVE,
    GRP_MEMBERS,
    GRP_LIST,
    GRP_RESOLVE,
];

/// The name centers answer `$SRV.PING/INFO/STATS` under.
pub const CENTER_SERVICE: &str = "mrc-center";
/// `mrc.center.gateway-down`: a center evicted a gateway (the gateway reconciles).
pub(crate) const GATEWAY_DOWN: &str = "gateway-down";
/// Queue group of the centers' endpoints.
pub(crate) const CENTER_QUEUE: &str = "mrc-center";
/// `mrc.inbox.fetch`: a user's stored messages (backends).
pub const INBOX_FETCH: &str = "fetch";
/// `mrc.inbox.ack`: remove a user's stored messages up to a sequence (backends).
pub const INBOX_ACK: &str = "ack";
/// Queue group of the gateways' ingress subscriptions.
pub(crate) const GATEWAY_QUEUE: &str = "mrc-gateway";

/// `$SRV.PING.mrc-center.<id>`: the micro-service ping of one center instance (`id` is the
/// service instance id async-nats made), whatever the prefix.
pub(crate) fn center_ping(service_id: &str) -> String {
    format!("$SRV.PING.{CENTER_SERVICE}.{service_id}")
}

/// Builds every subject for one prefix.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: Arc<str>,
}

impl Subjects {
    /// A prefix is one or more dot-separated tokens of `[A-Za-z0-9_-]`.
    pub(crate) fn new(prefix: &str) -> Result<Self, IdError> {
        if prefix.is_empty() {
            return Err(IdError::Empty);
        }
        for token in prefix.split('.') {
            if token.is_empty()
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(IdError::Charset);
            }
        }
        Ok(Subjects {
            prefix: Arc::from(prefix),
        })
    }

    /// `mrc.dir`: the service group whose endpoints are `DIR_*`.
    pub(crate) fn dir_group(&self) -> String {
        format!("{}.dir", self.prefix)
    }

    /// `mrc.dir.<endpoint>`, for the gateways' requests.
    pub fn dir(&self, endpoint: &str) -> String {
        format!("{}.dir.{endpoint}", self.prefix)
    }

    /// `mrc.grp`: the service group whose endpoints are `GRP_*`.
    pub(crate) fn group_group(&self) -> String {
        format!("{}.grp", self.prefix)
    }

    /// `mrc.grp.<endpoint>`.
    pub fn group(&self, endpoint: &str) -> String {
        format!("{}.grp.{endpoint}", self.prefix)
    }

    /// `mrc.grp.send`: backend ingress of group messages (gateways, not centers).
    pub(crate) fn group_send(&self) -> String {
        format!("{}.grp.send", self.prefix)
    }

    /// `mrc.dir.changed.<user>`: a user's set of gateways changed; gateways drop cached routes.
    pub(crate) fn dir_changed(&self, user: &UserId) -> String {
        format!("{}.dir.changed.{}", self.prefix, user.token())
    }

    pub(crate) fn dir_changed_all(&self) -> String {
        format!("{}.dir.changed.*", self.prefix)
    }

    /// The user whose route changed, from a `dir_changed` subject.
    pub(crate) fn dir_changed_user(&self, subject: &str) -> Option<UserId> {
        let token = subject
            .strip_prefix(&*self.prefix)?
            .strip_prefix(".dir.changed.")?;
        UserId::from_token(token).ok()
    }

    /// `mrc.probe.<unique>`: a process's own round trip through nats-server (published and
    /// subscribed by the same connection; `nats-config/auth.conf` allows `mrc.probe.>`).
    pub(crate) fn probe(&self) -> String {
        format!("{}.probe.{}", self.prefix, nuid::next())
    }

    /// `mrc.center.>`: everything centers broadcast to each other.
    pub(crate) fn center_all(&self) -> String {
        format!("{}.center.>", self.prefix)
    }

    /// `mrc.center.<event>`, event one of `hello`, `here`, `bye`, `gateway-down`.
    pub(crate) fn center(&self, event: &str) -> String {
        format!("{}.center.{event}", self.prefix)
    }

    /// The event name of a `center` subject.
    pub(crate) fn center_event<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(&*self.prefix)?
            .strip_prefix(".center.")
    }

    /// `mrc.gw.<gateway>.deliver`: one message for the listed receivers on that gateway.
    pub(crate) fn deliver(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}.deliver", self.prefix)
    }

    /// `mrc.gw.<gateway>.replies`: the pool of that gateway's deliver replies; a reply
    /// goes to `<pool>.<n>` (`crate::pooled`).
    pub(crate) fn replies(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}{}", self.prefix, crate::pooled::POOL_SUFFIX)
    }

    /// `mrc.broadcast`: backend ingress of broadcasts.
    pub fn broadcast(&self) -> String {
        format!("{}.broadcast", self.prefix)
    }

    /// `mrc.gw.<gateway>.broadcast`: push a message to every session of that gateway.
    pub(crate) fn gateway_broadcast(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}.broadcast", self.prefix)
    }

    /// `mrc.gw.<gateway>.inbox`: users of that gateway have new stored messages.
    pub(crate) fn gateway_inbox(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}.inbox", self.prefix)
    }

    /// `mrc.inbox.msg.<user>`: the stored messages of one user (a JetStream subject).
    pub(crate) fn inbox_messages(&self, user: &UserId) -> String {
        format!("{}.inbox.msg.{}", self.prefix, user.token())
    }

    /// `mrc.inbox.msg.*`: the inbox stream's subjects.
    pub(crate) fn inbox_all(&self) -> String {
        format!("{}.inbox.msg.*", self.prefix)
    }

    /// `mrc.inbox.<endpoint>`: backend requests on inboxes ([`INBOX_FETCH`], [`INBOX_ACK`]).
    pub fn inbox(&self, endpoint: &str) -> String {
        format!("{}.inbox.{endpoint}", self.prefix)
    }

    /// `mrc.gw.<gateway>.kick`: close sessions a newer login replaced.
    pub(crate) fn kick(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}.kick", self.prefix)
    }

    /// `mrc.gw.<gateway>.reconcile`: a center asks the gateway to reconcile.
    pub(crate) fn reconcile(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}.reconcile", self.prefix)
    }

    /// `mrc.gw.<gateway>.hb`: gateway liveness.
    pub(crate) fn heartbeat(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}.hb", self.prefix)
    }

    pub(crate) fn heartbeat_all(&self) -> String {
        format!("{}.gw.*.hb", self.prefix)
    }

    /// The gateway that sent a heartbeat, from its subject.
    pub(crate) fn heartbeat_gateway(&self, subject: &str) -> Option<GatewayId> {
        let rest = subject.strip_prefix(&*self.prefix)?.strip_prefix(".gw.")?;
        GatewayId::new(rest.strip_suffix(".hb")?).ok()
    }

    /// `mrc.send`: backend ingress, JSON send requests.
    pub fn send(&self) -> String {
        format!("{}.send", self.prefix)
    }

    /// `mrc.to.<user>`: backend ingress, a raw body to one user (backends build it).
    #[cfg(test)]
    fn to(&self, user: &UserId) -> String {
        format!("{}.to.{}", self.prefix, user.token())
    }

    /// `mrc.to.*`: what the gateways take raw bodies from.
    pub(crate) fn to_all(&self) -> String {
        format!("{}.to.*", self.prefix)
    }

    /// The receiver of a `to` subject, or why the token is bad.
    pub(crate) fn to_user(&self, subject: &str) -> Result<UserId, IdError> {
        let token = subject
            .strip_prefix(&*self.prefix)
            .and_then(|s| s.strip_prefix(".to."))
            .ok_or(IdError::BadToken)?;
        UserId::from_token(token)
    }

    /// `mrc.presence.<user>`: online/offline events.
    pub(crate) fn presence(&self, user: &UserId) -> String {
        format!("{}.presence.{}", self.prefix, user.token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_ids_never_add_subject_tokens() {
        let s = Subjects::new("mrc").unwrap();
        for id in ["a.b", "*", ">", "a b", "x.>", "张伟"] {
            let user = UserId::new(id).unwrap();
            let subject = s.to(&user);
            assert_eq!(subject.split('.').count(), 3, "{subject}");
            assert!(!subject.contains(['*', '>', ' ']), "{subject}");
            assert_eq!(s.to_user(&subject).unwrap(), user);
            assert_eq!(s.presence(&user).split('.').count(), 3);
        }
    }

    #[test]
    fn subjects_parse_back() {
        let s = Subjects::new("acme.mrc").unwrap();
        let gw = GatewayId::new("gw-1").unwrap();
        assert_eq!(s.deliver(&gw), "acme.mrc.gw.gw-1.deliver");
        assert_eq!(s.heartbeat_gateway(&s.heartbeat(&gw)), Some(gw));
        assert_eq!(s.center_event(&s.center("hello")), Some("hello"));
        let user = UserId::new("a@b.c").unwrap();
        assert_eq!(s.dir_changed_user(&s.dir_changed(&user)), Some(user));
        assert_eq!(s.dir(DIR_LOOKUP), "acme.mrc.dir.lookup");
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(Subjects::new("mrc").is_ok());
        assert!(Subjects::new("a.b-c").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a*", "a >", "a.>"] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
        }
    }
}
