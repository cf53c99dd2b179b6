//! Logging in many users at once: bounded concurrency, a deadline per login, source
//! addresses spread round-robin, and a progress line per second.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;

use super::conn::{self, Target, Ws};
use super::output::progress;
use super::stats;

/// Logged-in connections, and how logging in went.
pub struct Fleet {
    /// (index into the user list, connection).
    pub conns: Vec<(usize, Ws)>,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Connect + login + welcome, per user (µs).
    pub latency: Histogram<u64>,
    /// From the first connect to the last welcome (or failure).
    pub elapsed: Duration,
}

/// Logs in `users` (id, index of its gateway in `targets`), `concurrency` at a time.
pub async fn connect_all(
    users: &[(String, usize)],
    targets: &[Target],
    sources: &[IpAddr],
    concurrency: usize,
    per_login: Duration,
    what: &str,
) -> Fleet {
    let start = Instant::now();
    let mut logins = futures::stream::iter(users.iter().enumerate())
        .map(|(i, (user, gateway))| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let target = &targets[*gateway % targets.len()];
            async move {
                let t0 = Instant::now();
                let result = conn::login(target, source, user, per_login).await;
                (i, result, t0.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut fleet = Fleet {
        conns: Vec::with_capacity(users.len()),
        failed: 0,
        first_error: None,
        latency: stats::histogram(),
        elapsed: Duration::ZERO,
    };
    let mut next_progress = start + Duration::from_secs(1);
    while let Some((i, result, took)) = logins.next().await {
        match result {
            Ok(ws) => {
                fleet
                    .latency
                    .saturating_record(took.as_micros().max(1) as u64);
                fleet.conns.push((i, ws));
            }
            Err(e) => {
                fleet.failed += 1;
                if fleet.first_error.is_none() {
                    fleet.first_error = Some(format!("{e:#}"));
                }
            }
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            progress(&format!(
                "{what}: {} logged in, {} failed of {} ({:.0}s)",
                fleet.conns.len(),
                fleet.failed,
                users.len(),
                start.elapsed().as_secs_f64()
            ));
        }
    }
    fleet.elapsed = start.elapsed();
    fleet
}
