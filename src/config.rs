//! Typed configuration of every process, from flags and the matching `MRC_*` env vars
//! (flags win). Each config has a `validate` that runs before anything binds or connects;
//! a bad config exits with code 64 (EX_USAGE).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::ident::{CenterId, GatewayId};
use crate::subject::Subjects;

/// Exit code for a configuration error (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// How to reach NATS, shared by every process.
#[derive(Args, Debug, Clone)]
pub struct Nats {
    /// NATS server URLs, comma-separated (several for a cluster).
    #[arg(
        long = "nats-url",
        env = "MRC_NATS_URL",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub urls: Vec<String>,
    /// User name for NATS user/password auth.
    #[arg(long = "nats-user", env = "MRC_NATS_USER")]
    pub user: Option<String>,
    /// Password for NATS user/password auth.
    #[arg(
        long = "nats-password",
        env = "MRC_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// NATS auth token.
    #[arg(long = "nats-token", env = "MRC_NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long = "nats-creds", env = "MRC_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// PEM file of CA certificates to trust for TLS to NATS.
    #[arg(long = "nats-tls-ca", env = "MRC_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Subject prefix of every MRC subject.
    #[arg(long, env = "MRC_PREFIX", default_value = "mrc")]
    pub prefix: String,
    /// Timeout of one NATS request (look-up, register, deliver), in milliseconds.
    #[arg(
        long = "request-timeout-ms",
        env = "MRC_REQUEST_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub request_timeout_ms: u64,
    /// How long to keep trying the first NATS connection, in milliseconds.
    #[arg(
        long = "connect-timeout-ms",
        env = "MRC_CONNECT_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub connect_timeout_ms: u64,
}

impl Nats {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.urls.is_empty() {
            bail!("--nats-url: at least one URL is needed");
        }
        if self.user.is_some() != self.password.is_some() {
            bail!("--nats-user and --nats-password go together");
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            bail!("choose one NATS auth method: user/password, token or creds");
        }
        for file in [&self.creds, &self.tls_ca].into_iter().flatten() {
            if !file.is_file() {
                bail!("{} is not a readable file", file.display());
            }
        }
        if self.request_timeout_ms == 0 {
            bail!("--request-timeout-ms must be > 0");
        }
        self.subjects()?;
        Ok(())
    }

    pub fn subjects(&self) -> anyhow::Result<Subjects> {
        Subjects::new(&self.prefix).with_context(|| format!("--prefix {:?}", self.prefix))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `mrc-center` settings.
#[derive(Args, Debug, Clone)]
pub struct Center {
    #[command(flatten)]
    pub nats: Nats,
    /// This center's id (default: generated).
    #[arg(long, env = "MRC_CENTER_ID")]
    pub id: Option<String>,
    /// JetStream KV bucket of the directory.
    #[arg(long, env = "MRC_CENTER_BUCKET", default_value = "mrc_dir")]
    pub bucket: String,
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
}

impl Center {
    /// Checks everything and fills in a generated id.
    pub fn validate(&mut self) -> anyhow::Result<CenterId> {
        self.nats.validate()?;
        let id = match &self.id {
            Some(id) => CenterId::new(id).with_context(|| format!("--id {id:?}"))?,
            None => CenterId::generate(),
        };
        self.id = Some(id.to_string());
        if self.bucket.is_empty()
            || !self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("--bucket {:?}: use A-Z a-z 0-9 _ -", self.bucket);
        }
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

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
}

/// `mrc-gateway` settings.
#[derive(Args, Debug, Clone)]
pub struct Gateway {
    #[command(flatten)]
    pub nats: Nats,
    /// This gateway's id (default: generated). Sessions of an earlier run with the same id
    /// are purged at start.
    #[arg(long, env = "MRC_GATEWAY_ID")]
    pub id: Option<String>,
    /// Address of the WebSocket listener (port 0 picks a free port).
    #[arg(
        long = "ws-listen",
        env = "MRC_GATEWAY_WS_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub ws_listen: SocketAddr,
    /// Heartbeat period towards the centers (ms); keep it well below their timeout.
    #[arg(
        long = "heartbeat-ms",
        env = "MRC_GATEWAY_HEARTBEAT_MS",
        default_value_t = 1000
    )]
    pub heartbeat_ms: u64,
    /// How long a resolved route stays cached (ms).
    #[arg(
        long = "cache-ttl-ms",
        env = "MRC_GATEWAY_CACHE_TTL_MS",
        default_value_t = 30_000
    )]
    pub cache_ttl_ms: u64,
    /// Drop cached routes when centers announce a user's gateways changed. Turn off only
    /// to test how stale routes are recovered.
    #[arg(long = "follow-route-changes", env = "MRC_GATEWAY_FOLLOW_ROUTE_CHANGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub follow_route_changes: bool,
    /// How many users' routes the cache holds.
    #[arg(
        long = "cache-capacity",
        env = "MRC_GATEWAY_CACHE_CAPACITY",
        default_value_t = 1_000_000
    )]
    pub cache_capacity: u64,
    /// Most receivers of one message.
    #[arg(
        long = "max-receivers",
        env = "MRC_GATEWAY_MAX_RECEIVERS",
        default_value_t = 1000
    )]
    pub max_receivers: usize,
    /// Largest client frame (bytes).
    #[arg(long = "max-frame-bytes", env = "MRC_GATEWAY_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Frames queued towards one client before it is disconnected as a slow consumer.
    #[arg(
        long = "outbound-queue",
        env = "MRC_GATEWAY_OUTBOUND_QUEUE",
        default_value_t = 1024
    )]
    pub outbound_queue: usize,
    /// Time a new connection has to log in (ms).
    #[arg(
        long = "login-timeout-ms",
        env = "MRC_GATEWAY_LOGIN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub login_timeout_ms: u64,
    /// Sends from one connection routed at once; more wait.
    #[arg(
        long = "sends-in-flight",
        env = "MRC_GATEWAY_SENDS_IN_FLIGHT",
        default_value_t = 64
    )]
    pub sends_in_flight: usize,
    /// Backend (`mrc.send`, `mrc.to.*`) messages routed at once by this gateway.
    #[arg(
        long = "ingress-in-flight",
        env = "MRC_GATEWAY_INGRESS_IN_FLIGHT",
        default_value_t = 1024
    )]
    pub ingress_in_flight: usize,
    /// How long a graceful stop may take before it gives up (ms).
    #[arg(
        long = "shutdown-grace-ms",
        env = "MRC_GATEWAY_SHUTDOWN_GRACE_MS",
        default_value_t = 10_000
    )]
    pub shutdown_grace_ms: u64,
}

impl Gateway {
    /// Checks everything and fills in a generated id.
    pub fn validate(&mut self) -> anyhow::Result<GatewayId> {
        self.nats.validate()?;
        let id = match &self.id {
            Some(id) => GatewayId::new(id).with_context(|| format!("--id {id:?}"))?,
            None => GatewayId::generate(),
        };
        self.id = Some(id.to_string());
        let positive = [
            ("--heartbeat-ms", self.heartbeat_ms),
            ("--max-receivers", self.max_receivers as u64),
            ("--max-frame-bytes", self.max_frame_bytes as u64),
            ("--outbound-queue", self.outbound_queue as u64),
            ("--login-timeout-ms", self.login_timeout_ms),
            ("--sends-in-flight", self.sends_in_flight as u64),
            ("--ingress-in-flight", self.ingress_in_flight as u64),
            ("--cache-capacity", self.cache_capacity),
        ];
        for (flag, value) in positive {
            if value == 0 {
                bail!("{flag} must be > 0");
            }
        }
        Ok(id)
    }
}
