//! `mrc-center`'s own settings: the directory, groups and the inbox stream it keeps.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

use super::{valid_name, LoginPolicy, Nats, Observe, Runtime, Source};
use crate::ident::CenterId;

/// `mrc-center` settings. Its own flags come first: a flattened group's help heading
/// would otherwise carry over to them.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Center")]
pub struct Center {
    /// This center's id (default: generated).
    #[arg(long, env = "MRC_CENTER_ID")]
    pub id: Option<String>,
    /// JetStream KV bucket of the directory.
    #[arg(long, env = "MRC_CENTER_BUCKET", default_value = "mrc_dir")]
    pub bucket: String,
    /// JetStream KV bucket of the groups.
    #[arg(
        long = "groups-bucket",
        env = "MRC_CENTER_GROUPS_BUCKET",
        default_value = "mrc_groups"
    )]
    pub groups_bucket: String,
    /// Replicas of the directory bucket (3 on a 3-node cluster).
    #[arg(long, env = "MRC_CENTER_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// A gateway silent for this long is declared dead and its sessions removed (ms).
    #[arg(
        long = "heartbeat-timeout-ms",
        env = "MRC_CENTER_HEARTBEAT_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub heartbeat_timeout_ms: u64,
    /// Requests handled at once per endpoint.
    #[arg(long, env = "MRC_CENTER_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
    /// Sessions per user: `allow` (any number), `single` (a new login replaces older
    /// sessions), `device` (one per declared device class). Give every center the same.
    #[arg(
        long = "login-policy",
        env = "MRC_CENTER_LOGIN_POLICY",
        value_enum,
        default_value = "allow"
    )]
    pub login_policy: LoginPolicy,
    /// Whose presence a user may see: `anyone`'s, or only of users sharing a group.
    #[arg(
        long = "presence-policy",
        env = "MRC_CENTER_PRESENCE_POLICY",
        value_enum,
        default_value = "anyone"
    )]
    pub presence_policy: PresencePolicy,
    #[command(flatten)]
    pub observe: Observe,
    #[command(flatten)]
    pub inbox: Inbox,
    #[command(flatten)]
    pub nats: Nats,
    #[command(flatten)]
    pub runtime: Runtime,
    #[command(flatten)]
    pub source: Source,
}

/// The durable inbox's stream, which centers create (with `--replicas`) and keep at
/// these bounds. Give every center the same.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Inbox")]
pub struct Inbox {
    /// JetStream stream of stored messages (one subject per user).
    #[arg(
        long = "inbox-stream",
        env = "MRC_INBOX_STREAM",
        default_value = "mrc_inbox"
    )]
    pub stream: String,
    /// Stored messages per user; a send to a full inbox reports `inbox_full`.
    #[arg(
        long = "inbox-max-per-user",
        env = "MRC_INBOX_MAX_PER_USER",
        default_value_t = 1000
    )]
    pub max_per_user: i64,
    /// Stored messages are dropped after this many seconds (default: 7 days).
    #[arg(
        long = "inbox-max-age-s",
        env = "MRC_INBOX_MAX_AGE_S",
        default_value_t = 604_800
    )]
    pub max_age_s: u64,
    /// Bytes the whole inbox stream may hold; a send beyond reports `inbox_full`.
    #[arg(
        long = "inbox-max-bytes",
        env = "MRC_INBOX_MAX_BYTES",
        default_value_t = 1 << 30
    )]
    pub max_bytes: i64,
    /// A retried send with the same message id is stored once within this window (s).
    #[arg(
        long = "inbox-dedupe-s",
        env = "MRC_INBOX_DEDUPE_S",
        default_value_t = 120
    )]
    pub dedupe_s: u64,
}

impl Inbox {
    pub(crate) fn limits(&self) -> crate::store::inbox::InboxLimits {
        crate::store::inbox::InboxLimits {
            per_user: self.max_per_user,
            max_age: Duration::from_secs(self.max_age_s),
            max_bytes: self.max_bytes,
            duplicate_window: Duration::from_secs(self.dedupe_s),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        valid_name("--inbox-stream", &self.stream)?;
        if self.max_per_user < 1 || self.max_bytes < 1 || self.max_age_s == 0 {
            bail!("--inbox-max-per-user, --inbox-max-bytes and --inbox-max-age-s must be > 0");
        }
        if self.dedupe_s == 0 || self.dedupe_s > self.max_age_s {
            bail!("--inbox-dedupe-s must be > 0 and at most --inbox-max-age-s");
        }
        Ok(())
    }
}

/// Whose presence (online status and events) a user may see. Backends see everyone's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresencePolicy {
    Anyone,
    /// Only users who share at least one group with them.
    SharedGroup,
}

impl Center {
    /// Checks everything and fills in a generated id.
    pub fn validate(&mut self) -> anyhow::Result<CenterId> {
        self.nats.validate()?;
        self.runtime.validate()?;
        let id = match &self.id {
            Some(id) => CenterId::new(id).with_context(|| format!("--id {id:?}"))?,
            None => CenterId::generate(),
        };
        self.id = Some(id.to_string());
        valid_name("--bucket", &self.bucket)?;
        valid_name("--groups-bucket", &self.groups_bucket)?;
        self.inbox.validate()?;
        if !(1..=5).contains(&self.replicas) {
            bail!("--replicas must be 1..=5");
        }
        if self.heartbeat_timeout_ms < 100 {
            bail!("--heartbeat-timeout-ms must be at least 100");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be > 0");
        }
        Ok(id)
    }

    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
}
