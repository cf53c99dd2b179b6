//! Typed configuration of every process, from flags and the matching `MRC_*` env vars
//! (flags win). Each config has a `validate` that runs before anything binds or connects;
//! a bad config exits with code 64 (EX_USAGE, see `exit`).

mod center;
pub mod file;
mod gateway;
mod observe;
mod web;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use crate::directory::LoginPolicy;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::subject::Subjects;
pub use center::{Center, Inbox, PresencePolicy};
pub use file::{Process, Source};
pub use gateway::{Auth, Gateway, Limits};
pub use observe::Observe;
pub use web::Web;

/// How to reach NATS, shared by every process.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "NATS")]
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

/// How a server process runs its async work.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Runtime")]
pub struct Runtime {
    /// Worker threads of the async runtime (0: one per CPU core; 1: everything on the
    /// main thread). Where several MRC processes share a few cores, fewer threads per
    /// process wake each other less: on 2 cores shared by 2 gateways, nats-server and a
    /// load generator, 1 per gateway carried 1.2 x the messages (docs/PERFORMANCE.md).
    #[arg(
        long = "worker-threads",
        env = "MRC_WORKER_THREADS",
        default_value_t = 0
    )]
    pub worker_threads: usize,
    /// What is logged, as a tracing filter (`info`, `warn,mrc::gateway=debug`...). Set
    /// here or in the config file, it is applied again on SIGHUP.
    #[arg(long = "log", env = "MRC_LOG")]
    pub log: Option<String>,
}

impl Runtime {
    /// The log filter parses.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(log) = &self.log {
            tracing_subscriber::EnvFilter::try_new(log)
                .map_err(|e| anyhow::anyhow!("--log {log:?}: {e}"))?;
        }
        Ok(())
    }

    /// Applies `--log` (when given) to the running process: at start, and on SIGHUP
    /// (then back to `info` when it is gone).
    pub fn apply_log(&self, on_reload: bool) -> anyhow::Result<()> {
        match (&self.log, on_reload) {
            (Some(log), _) => crate::telemetry::set_log_filter(log),
            (None, true) => crate::telemetry::set_log_filter("info"),
            (None, false) => Ok(()),
        }
    }

    /// The tokio runtime these settings describe: with one worker, everything runs on
    /// the main thread (no hand-over between threads, no work-stealing upkeep).
    pub fn build(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let mut builder = match self.worker_threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            0 => tokio::runtime::Builder::new_multi_thread(),
            n => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(n);
                builder
            }
        };
        builder
            .enable_all()
            .build()
            .context("starting the async runtime")
    }
}

/// A bucket or stream name JetStream accepts.
fn valid_name(flag: &str, name: &str) -> anyhow::Result<()> {
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || !valid {
        bail!("{flag} {name:?}: use A-Z a-z 0-9 _ -");
    }
    Ok(())
}
