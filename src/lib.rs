//! MRC, the message routing cluster: users connected to many gateway processes message
//! each other by user id, routed over NATS.
//!
//! Code map (docs/ARCHITECTURE.md has the long version):
//! - [`ident`]: user/gateway/center/session/message ids and the subject-token encoding.
//! - [`subject`]: the only place subjects are built.
//! - [`protocol`]: every wire and storage format (the only serde types).
//! - [`config`]: flags and `MRC_*` env of each process, validated before start.
//! - [`connection`]: connecting to NATS.
//! - [`batch`]: requests to one subject batched when they pile up, and answered element by element.
//! - [`store`]: the only code that touches JetStream KV (buckets, mirrors that follow them).
//! - [`directory`]: the user directory: user → sessions, mirrored in memory.
//! - [`groups`]: groups and their policies, mirrored in memory like the directory.
//! - [`center`]: the directory service, presence and gateway liveness.
//! - [`gateway`]: client sessions, routing, delivery and backend ingress.
//! - [`client`]: a WebSocket client of a gateway (the CLI and tests use it).
//! - [`retry`]: backoff and jitter for what must eventually happen.
//! - [`sync`]: the one mutex-poison policy (recover), as `lock` / `read` / `write`.
//! - [`shutdown`], [`telemetry`], [`exit`]: signals, logging and metrics, exit codes.

pub mod batch;
pub mod center;
pub mod client;
pub mod config;
pub mod connection;
pub(crate) mod directory;
pub mod exit;
pub mod gateway;
pub mod groups;
pub mod ident;
pub(crate) mod pace;
pub mod pooled;
pub mod protocol;
pub mod replies;
pub(crate) mod retry;
pub mod shutdown;
pub mod store;
pub mod subject;
pub mod sync;
pub mod telemetry;
pub(crate) mod timer;
pub mod wire;

/// This build's version, announced by centers and gateways.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
