//! `mrc-gateway`'s own settings: its listeners, routing, authentication and limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use super::{valid_name, Nats, Runtime, Source, Web};
use crate::ident::GatewayId;

/// `mrc-gateway` settings. Its own flags come first: a flattened group's help heading
/// would otherwise carry over to them.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Gateway")]
pub struct Gateway {
    /// This gateway's id (default: generated). Sessions of an earlier run with the same id
    /// are purged at start.
    #[arg(long, env = "MRC_GATEWAY_ID")]
    pub id: Option<String>,
    /// HTTP listener: WebSocket at `/ws`, the API at `/v1`, `/healthz`, `/readyz`,
    /// `/metrics` (port 0 picks a free port).
    #[arg(long, env = "MRC_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Raw TCP listener for newline-delimited JSON frames (off unless set).
    #[arg(long = "tcp-listen", env = "MRC_GATEWAY_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,
    /// Serve the demo page at `/` on the HTTP listener: a two-user chat in the browser,
    /// to try MRC without writing a client (pair it with --insecure-dev-auth).
    #[arg(long, env = "MRC_GATEWAY_DEMO")]
    pub demo: bool,
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
    /// How many users' routes the cache holds.
    #[arg(
        long = "cache-capacity",
        env = "MRC_GATEWAY_CACHE_CAPACITY",
        default_value_t = 1_000_000
    )]
    pub cache_capacity: u64,
    /// Drop cached routes when centers announce a user's gateways changed. Turn off only
    /// to test how stale routes are recovered.
    #[arg(
        long = "follow-route-changes",
        env = "MRC_GATEWAY_FOLLOW_ROUTE_CHANGES",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub follow_route_changes: bool,
    /// Backend (`mrc.send`, `mrc.to.*`) messages routed at once by this gateway.
    #[arg(
        long = "ingress-in-flight",
        env = "MRC_GATEWAY_INGRESS_IN_FLIGHT",
        default_value_t = 1024
    )]
    pub ingress_in_flight: usize,
    /// Deliver requests out at once to each other gateway; what is sent meanwhile leaves
    /// as one batch when one comes back. Fewer means bigger batches (fewer NATS messages,
    /// less CPU in every process at moderate rates) at up to one round trip of waiting.
    #[arg(
        long = "deliver-in-flight",
        env = "MRC_GATEWAY_DELIVER_IN_FLIGHT",
        default_value_t = 4
    )]
    pub deliver_in_flight: usize,
    /// How long this gateway's answers to another gateway's deliver requests may wait to
    /// leave together, while traffic to that gateway comes closer together than this
    /// (they leave sooner with this gateway's next deliver request there; a quiet pair of
    /// gateways answers at once). 0: each at once. Only the sender's report waits, never
    /// the message.
    #[arg(
        long = "reply-window-us",
        env = "MRC_GATEWAY_REPLY_WINDOW_US",
        default_value_t = 1000
    )]
    pub reply_window_us: u64,
    /// How long a deliver request to another gateway may wait for others to the same
    /// gateway to leave with it, while messages there come closer together than this
    /// (so a quiet pair of gateways never waits), and no longer than 16 of them take.
    /// 0: it never waits. Longer means fewer NATS messages (about half the cluster's CPU
    /// per message at 10k msg/s) for up to that much latency (docs/PERFORMANCE.md).
    #[arg(
        long = "deliver-linger-us",
        env = "MRC_GATEWAY_DELIVER_LINGER_US",
        default_value_t = 1500
    )]
    pub deliver_linger_us: u64,
    /// Sessions per second a broadcast is pushed to on this gateway, so broadcasts never
    /// starve direct messages.
    #[arg(
        long = "broadcast-rate",
        env = "MRC_GATEWAY_BROADCAST_RATE",
        default_value_t = 50_000
    )]
    pub broadcast_rate: u32,
    /// What becomes of a message for a receiver who is not online, unless the send
    /// says: `drop` (outcome `offline`) or `store` in their inbox (outcome `stored`).
    #[arg(
        long = "offline",
        env = "MRC_GATEWAY_OFFLINE",
        value_enum,
        default_value = "drop"
    )]
    pub offline: crate::protocol::inbox::Offline,
    /// How long a receiver's gateway remembers a sender-chosen message id it pushed, so
    /// a retried send is not pushed twice (s; 0: no filter).
    #[arg(
        long = "dedupe-window-s",
        env = "MRC_GATEWAY_DEDUPE_WINDOW_S",
        default_value_t = crate::gateway::recent::DEFAULT_WINDOW_S
    )]
    pub dedupe_window_s: u64,
    /// JetStream stream of stored messages (the centers create it).
    #[arg(
        long = "inbox-stream",
        env = "MRC_INBOX_STREAM",
        default_value = "mrc_inbox"
    )]
    pub inbox_stream: String,
    /// Lame-duck drain on stop (ms): sessions close spread over this window instead of
    /// all at once, so their clients do not all reconnect to the other gateways in the
    /// same instant. Each keeps working until its turn. 0: all at once.
    #[arg(
        long = "drain-window-ms",
        env = "MRC_GATEWAY_DRAIN_WINDOW_MS",
        default_value_t = 0
    )]
    pub drain_window_ms: u64,
    /// How long a graceful stop may take, after the drain window, before it gives up (ms).
    #[arg(
        long = "shutdown-grace-ms",
        env = "MRC_GATEWAY_SHUTDOWN_GRACE_MS",
        default_value_t = 10_000
    )]
    pub shutdown_grace_ms: u64,
    #[command(flatten)]
    pub nats: Nats,
    #[command(flatten)]
    pub runtime: Runtime,
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub auth: Auth,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub web: Web,
}

/// How clients prove who they are.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Authentication")]
pub struct Auth {
    /// INSECURE: let clients log in as any user id they name, without a token. For local
    /// development and demos only.
    #[arg(long = "insecure-dev-auth", env = "MRC_GATEWAY_INSECURE_DEV_AUTH")]
    pub insecure_dev_auth: bool,
    /// Shared secret for HS256 client tokens.
    #[arg(
        long = "jwt-secret",
        env = "MRC_GATEWAY_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA or EC P-256) for RS256 / ES256 client tokens.
    #[arg(long = "jwt-public-key", env = "MRC_GATEWAY_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` of client tokens.
    #[arg(long = "jwt-issuer", env = "MRC_GATEWAY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of client tokens.
    #[arg(long = "jwt-audience", env = "MRC_GATEWAY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (seconds).
    #[arg(
        long = "jwt-leeway-secs",
        env = "MRC_GATEWAY_JWT_LEEWAY_SECS",
        default_value_t = 5
    )]
    pub jwt_leeway_secs: u64,
    /// API key for the HTTP API (`Authorization: Bearer <key>`), for backends.
    #[arg(long = "api-key", env = "MRC_GATEWAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Caps every door enforces.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Largest client frame (bytes).
    #[arg(long = "max-frame-bytes", env = "MRC_GATEWAY_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Largest message body (bytes); must fit, with its receivers, in NATS max_payload.
    #[arg(long = "max-body-bytes", env = "MRC_GATEWAY_MAX_BODY_BYTES", default_value_t = 32 * 1024)]
    pub max_body_bytes: usize,
    /// Most receivers of one message.
    #[arg(
        long = "max-receivers",
        env = "MRC_GATEWAY_MAX_RECEIVERS",
        default_value_t = 1000
    )]
    pub max_receivers: usize,
    /// Longest user or message id (bytes, at most 256).
    #[arg(
        long = "max-id-bytes",
        env = "MRC_GATEWAY_MAX_ID_BYTES",
        default_value_t = 256
    )]
    pub max_id_bytes: usize,
    /// Sends per second one connection may make (token bucket refill).
    #[arg(
        long = "rate-per-sec",
        env = "MRC_GATEWAY_RATE_PER_SEC",
        default_value_t = 100
    )]
    pub rate_per_sec: u32,
    /// Sends one connection may burst above the rate.
    #[arg(
        long = "rate-burst",
        env = "MRC_GATEWAY_RATE_BURST",
        default_value_t = 200
    )]
    pub rate_burst: u32,
    /// Live sessions one user may have across the cluster (0: no limit).
    #[arg(
        long = "max-sessions-per-user",
        env = "MRC_GATEWAY_MAX_SESSIONS_PER_USER",
        default_value_t = 16
    )]
    pub max_sessions_per_user: usize,
    /// Client connections this gateway accepts at once.
    #[arg(
        long = "max-connections",
        env = "MRC_GATEWAY_MAX_CONNECTIONS",
        default_value_t = 200_000
    )]
    pub max_connections: usize,
    /// Connections that have not logged in yet, at most (each may wait the login
    /// timeout): more are refused `unavailable`, so idle sockets cannot take every place
    /// under --max-connections. Upgrades that carry a token do not count.
    #[arg(
        long = "max-pending-logins",
        env = "MRC_GATEWAY_MAX_PENDING_LOGINS",
        default_value_t = 10_000
    )]
    pub max_pending_logins: usize,
    /// A new HTTP connection must send its request headers within this (ms), or it is
    /// closed: sockets that say nothing hold no place for long.
    #[arg(
        long = "header-read-timeout-ms",
        env = "MRC_GATEWAY_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
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
    /// A connection silent this long (no frame, no pong) is closed (ms). WebSocket
    /// clients are pinged meanwhile; TCP clients send `ping` frames.
    #[arg(
        long = "idle-timeout-ms",
        env = "MRC_GATEWAY_IDLE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub idle_timeout_ms: u64,
    /// Sends from one connection routed at once; more wait.
    #[arg(
        long = "sends-in-flight",
        env = "MRC_GATEWAY_SENDS_IN_FLIGHT",
        default_value_t = 64
    )]
    pub sends_in_flight: usize,
    /// Client sends and group operations routed at once by this gateway, all connections
    /// together; beyond it the gateway stops reading its clients until routes finish.
    #[arg(
        long = "routing-in-flight",
        env = "MRC_GATEWAY_ROUTING_IN_FLIGHT",
        default_value_t = 4096
    )]
    pub routing_in_flight: usize,
}

impl Gateway {
    /// [`Self::reply_window_us`] as a duration.
    pub fn reply_window(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.reply_window_us)
    }

    /// Checks everything and fills in a generated id.
    pub fn validate(&mut self) -> anyhow::Result<GatewayId> {
        self.nats.validate()?;
        self.runtime.validate()?;
        let id = match &self.id {
            Some(id) => GatewayId::new(id).with_context(|| format!("--id {id:?}"))?,
            None => GatewayId::generate(),
        };
        self.id = Some(id.to_string());
        valid_name("--inbox-stream", &self.inbox_stream)?;
        self.web.validate()?;
        let l = &self.limits;
        let positive = [
            ("--heartbeat-ms", self.heartbeat_ms),
            ("--cache-capacity", self.cache_capacity),
            ("--ingress-in-flight", self.ingress_in_flight as u64),
            ("--deliver-in-flight", self.deliver_in_flight as u64),
            ("--max-frame-bytes", l.max_frame_bytes as u64),
            ("--max-body-bytes", l.max_body_bytes as u64),
            ("--max-receivers", l.max_receivers as u64),
            ("--max-id-bytes", l.max_id_bytes as u64),
            ("--rate-per-sec", l.rate_per_sec as u64),
            ("--rate-burst", l.rate_burst as u64),
            ("--max-connections", l.max_connections as u64),
            ("--max-pending-logins", l.max_pending_logins as u64),
            ("--header-read-timeout-ms", l.header_read_timeout_ms),
            ("--outbound-queue", l.outbound_queue as u64),
            ("--login-timeout-ms", l.login_timeout_ms),
            ("--idle-timeout-ms", l.idle_timeout_ms),
            ("--sends-in-flight", l.sends_in_flight as u64),
            ("--routing-in-flight", l.routing_in_flight as u64),
            ("--broadcast-rate", self.broadcast_rate as u64),
        ];
        for (flag, value) in positive {
            if value == 0 {
                bail!("{flag} must be > 0");
            }
        }
        if l.max_id_bytes > crate::ident::MAX_USER_ID_BYTES {
            bail!(
                "--max-id-bytes must be at most {}",
                crate::ident::MAX_USER_ID_BYTES
            );
        }
        if l.max_body_bytes > l.max_frame_bytes {
            bail!("--max-body-bytes must not exceed --max-frame-bytes");
        }
        let a = &self.auth;
        let methods = [
            a.insecure_dev_auth,
            a.jwt_secret.is_some(),
            a.jwt_public_key.is_some(),
        ];
        if a.jwt_secret.is_some() && a.jwt_public_key.is_some() {
            bail!("choose --jwt-secret or --jwt-public-key, not both");
        }
        if !methods.iter().any(|m| *m) {
            bail!("clients cannot log in: set --jwt-secret or --jwt-public-key (or --insecure-dev-auth for development)");
        }
        if let Some(key) = &a.jwt_public_key {
            if !key.is_file() {
                bail!("--jwt-public-key {} is not a readable file", key.display());
            }
        }
        if a.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            bail!("--jwt-secret must be at least 32 bytes");
        }
        Ok(id)
    }

    /// The largest NATS payload a deliver request can need: the body, every receiver id
    /// (JSON-escaped: ids hold no control characters, so at most doubled) and its index,
    /// plus the envelope. Must fit the server's max_payload.
    pub(crate) fn max_deliver_payload(&self) -> usize {
        let l = &self.limits;
        l.max_body_bytes + l.max_receivers * (2 * l.max_id_bytes + 3 + 6) + 1024
    }
}
