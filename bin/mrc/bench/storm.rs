//! `login-storm`: many logins as fast as the cluster takes them, until every one is in
//! the directory.
//!
//! `login-storm` also measures the directory on its own: the same number of registrations
//! sent through the centers exactly as a gateway sends them (its `Registrar`, batching
//! included) but without WebSocket handshakes, which on a small machine cost the bench
//! and the gateways more than the directory does.
//!
//! It is capped, like `idle`, by the open-files limit of the bench and of the gateway (one socket
//! per connection on each side): a storm larger than the cap runs in waves, each wave
//! logging out before the next one logs in.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mrc::connection::Nats;

use super::conn::{Target, Ws};
use super::fleet;
use super::output::{progress, Output};
use super::procs::{self, Watched};
use super::stats::{self, Micros, Percentiles, Rate};
use mrc::connection;
use mrc::gateway::registrar::Registrar;
use mrc::ident::{GatewayId, SessionId, UserId};
use mrc::protocol::nats::{encode, LookupReply, LookupRequest};
use mrc::subject::{Subjects, DIR_LOOKUP};

/// Sockets kept free for everything else a process opens.
const FD_RESERVE: u64 = 512;

/// How many connections this machine lets the bench hold at once: the lower of the
/// bench's and the gateways' open-files limits, less a reserve.
pub fn connection_cap(watched: &Watched, gateway_labels: &[&str]) -> usize {
    let mut limit = procs::open_files_limit("self").unwrap_or(1024);
    for label in gateway_labels {
        if let Some(pid) = watched.pid_of(label) {
            if let Some(l) = procs::open_files_limit(&pid.to_string()) {
                limit = limit.min(l);
            }
        }
    }
    limit.saturating_sub(FD_RESERVE).max(1) as usize
}

/// The directory, asked through the centers: how many of `users` are online.
pub async fn count_online(
    client: &Nats,
    subjects: &Subjects,
    users: &[String],
) -> anyhow::Result<usize> {
    let mut online = 0;
    for chunk in users.chunks(1000) {
        let request = LookupRequest {
            users: chunk.to_vec(),
        };
        let reply: LookupReply = connection::request(
            client,
            subjects.dir(DIR_LOOKUP),
            encode(&request),
            Duration::from_secs(5),
        )
        .await?;
        online += reply.users.values().filter(|l| !l.is_empty()).count();
    }
    Ok(online)
}

/// Polls the directory until `want(online)` holds or `limit` passes; the time it took.
async fn wait_directory(
    nats: Option<(&Nats, &Subjects)>,
    users: &[String],
    want: impl Fn(usize) -> bool,
    limit: Duration,
) -> Option<Duration> {
    let (client, subjects) = nats?;
    let start = Instant::now();
    while start.elapsed() < limit {
        match count_online(client, subjects, users).await {
            Ok(n) if want(n) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) => progress(&format!("directory look-up failed: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Closes connections politely, many at once, each bounded in time.
pub(super) async fn close_all(conns: Vec<Ws>) {
    futures::stream::iter(conns)
        .for_each_concurrent(1000, |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        })
        .await;
}

pub struct StormConfig {
    pub users: usize,
    pub wave: usize,
    pub concurrency: usize,
    pub sources: Vec<IpAddr>,
    pub prefix: String,
}

/// `login-storm`: `users` logins in waves of at most `wave`.
pub async fn login_storm(
    cfg: &StormConfig,
    targets: &[Target],
    watched: &Watched,
    nats: Option<(&Nats, &Subjects)>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let wave = cfg.wave.max(1);
    let waves = cfg.users.div_ceil(wave);
    println!(
        "login-storm: {} logins over {} gateway(s), {} at a time, in {waves} wave(s) of up to {wave}",
        cfg.users,
        targets.len(),
        cfg.concurrency
    );
    let (mut ok, mut failed, mut busy) = (0usize, 0usize, Duration::ZERO);
    let mut latency = stats::histogram();
    for w in 0..waves {
        let n = wave.min(cfg.users - w * wave);
        let users: Vec<(String, usize)> = (0..n)
            .map(|i| (format!("{}-w{w}-{i}", cfg.prefix), i % targets.len()))
            .collect();
        let before = watched.sample();
        let start = Instant::now();
        let fleet = fleet::connect_all(
            &users,
            targets,
            &cfg.sources,
            cfg.concurrency,
            Duration::from_secs(60),
            &format!("wave {}/{waves}", w + 1),
        )
        .await;
        let usage = watched.usage(&before, &watched.sample());
        let logged_in: Vec<String> = fleet
            .conns
            .iter()
            .map(|(i, _)| users[*i].0.clone())
            .collect();
        let all = logged_in.len();
        let registered = wait_directory(nats, &logged_in, |n| n >= all, Duration::from_secs(30))
            .await
            .map(|_| start.elapsed());
        let rate = fleet.conns.len() as f64 / fleet.elapsed.as_secs_f64();
        let p = Percentiles::of(&fleet.latency);
        println!(
            "  wave {}/{waves}: {} logged in, {} failed in {:.2}s = {} (login p50 {}, p99 {}); all in the directory after {}",
            w + 1,
            fleet.conns.len(),
            fleet.failed,
            fleet.elapsed.as_secs_f64(),
            Rate(rate),
            Micros(p.p50),
            Micros(p.p99),
            registered.map_or("(not checked)".into(), |d| format!("{:.2}s", d.as_secs_f64())),
        );
        println!("  {:>9} {}", "cpu/rss", procs::describe(&usage));
        if let Some(e) = &fleet.first_error {
            println!("  first failure: {e}");
        }
        out.record(
            "login_wave",
            "login-storm",
            serde_json::json!({
                "wave": w,
                "users": n,
                "ok": fleet.conns.len(),
                "failed": fleet.failed,
                "elapsed_s": fleet.elapsed.as_secs_f64(),
                "logins_per_s": rate,
                "registered_after_s": registered.map(|d| d.as_secs_f64()),
                "latency": p.to_json(),
                "procs": procs::to_json(&usage),
                "first_error": fleet.first_error,
            }),
        );
        ok += fleet.conns.len();
        failed += fleet.failed;
        busy += fleet.elapsed;
        latency
            .add(&fleet.latency)
            .expect("histograms share bounds");
        close_all(fleet.conns.into_iter().map(|(_, ws)| ws).collect()).await;
        if w + 1 < waves {
            let gone = wait_directory(nats, &logged_in, |n| n == 0, Duration::from_secs(60)).await;
            progress(&format!(
                "wave {} logged out{}",
                w + 1,
                gone.map_or(String::new(), |d| format!(
                    " (directory empty after {:.1}s)",
                    d.as_secs_f64()
                ))
            ));
        }
    }
    let rate = ok as f64 / busy.as_secs_f64().max(1e-9);
    let p = Percentiles::of(&latency);
    println!(
        "login-storm: {ok} logins ({failed} failed) at {} overall (login p50 {}, p99 {}, max {})",
        Rate(rate),
        Micros(p.p50),
        Micros(p.p99),
        Micros(p.max)
    );
    out.record(
        "login_storm",
        "login-storm",
        serde_json::json!({
            "users": cfg.users,
            "waves": waves,
            "ok": ok,
            "failed": failed,
            "logins_per_s": rate,
            "latency": p.to_json(),
        }),
    );
    Ok(())
}

/// Registrations in flight at once in the directory phase: a gateway's logins in a storm.
const REGISTER_CONCURRENCY: usize = 2000;

/// The directory phase of `login-storm`: `users` registrations of users of a made-up
/// gateway through the centers, as fast as they are answered, then as many
/// unregistrations; rates and the time until the directory shows them all.
pub async fn directory_storm(
    users: usize,
    client: &Nats,
    subjects: &Subjects,
    watched: &Watched,
    prefix: &str,
    out: &mut Output,
) -> anyhow::Result<()> {
    let gateway = GatewayId::new(&format!("bench-{prefix}"))?;
    let registrar = Registrar::new(
        client.clone(),
        subjects.clone(),
        gateway.clone(),
        Duration::from_secs(10),
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    );
    let ids: Vec<(UserId, SessionId)> = (0..users)
        .map(|i| {
            let user = UserId::new(&format!("{prefix}-d{i}"))?;
            Ok((user, SessionId::new(&format!("s{i}"))?))
        })
        .collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = ids.iter().map(|(u, _)| u.to_string()).collect();
    println!(
        "directory: {users} registrations through the centers as gateway {gateway} sends them"
    );
    for phase in ["register", "unregister"] {
        let before = watched.sample();
        let start = Instant::now();
        let failed = futures::stream::iter(&ids)
            .map(|(user, session)| {
                let registrar = &registrar;
                async move {
                    let result = if phase == "register" {
                        registrar
                            .register(user, session, None, false)
                            .await
                            .map(|_| ())
                    } else {
                        registrar.unregister(user, session).await.map(|_| ())
                    };
                    result.is_err()
                }
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .filter(|failed| futures::future::ready(*failed))
            .count()
            .await;
        let elapsed = start.elapsed();
        let usage = watched.usage(&before, &watched.sample());
        let want = if phase == "register" { users } else { 0 };
        let visible = wait_directory(
            Some((client, subjects)),
            &names,
            |n| n == want,
            Duration::from_secs(30),
        )
        .await
        .map(|_| start.elapsed());
        let rate = (users - failed) as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "  {phase}: {} ok, {failed} failed in {:.2}s = {}; directory {} after {}",
            users - failed,
            elapsed.as_secs_f64(),
            Rate(rate),
            if phase == "register" {
                "complete"
            } else {
                "empty"
            },
            visible.map_or("(never)".into(), |d| format!("{:.2}s", d.as_secs_f64())),
        );
        println!("  {:>9} {}", "cpu/rss", procs::describe(&usage));
        out.record(
            "directory_storm",
            "login-storm",
            serde_json::json!({
                "phase": phase,
                "users": users,
                "failed": failed,
                "elapsed_s": elapsed.as_secs_f64(),
                "per_s": rate,
                "visible_after_s": visible.map(|d| d.as_secs_f64()),
                "procs": procs::to_json(&usage),
            }),
        );
        if phase == "register" {
            reconcile_reads(&registrar, watched, out).await?;
        }
    }
    Ok(())
}

/// What reconciling costs the centers for a gateway holding every session just registered:
/// one digest request (what a pass always does) and a read of every bucket (what a pass
/// does when everything differs).
async fn reconcile_reads(
    registrar: &Registrar,
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<()> {
    const DIGEST_READS: u32 = 20;
    let before = watched.sample();
    let start = Instant::now();
    let mut digests = Vec::new();
    for _ in 0..DIGEST_READS {
        digests = registrar.digests().await?;
    }
    let per_digest = start.elapsed() / DIGEST_READS;
    let digest_usage = watched.usage(&before, &watched.sample());
    let before = watched.sample();
    let start = Instant::now();
    let all: Vec<usize> = (0..digests.len()).collect();
    let chunks = mrc::gateway::reconcile::chunks(&all, &digests);
    let mut listed = 0;
    for chunk in &chunks {
        listed += registrar.sessions(chunk.clone()).await?.len();
    }
    let full = start.elapsed();
    let full_usage = watched.usage(&before, &watched.sample());
    let digest_cpu =
        center_cpu_ms(&digest_usage, per_digest * DIGEST_READS) / f64::from(DIGEST_READS);
    let full_cpu = center_cpu_ms(&full_usage, full);
    println!(
        "  reconcile: digests of {listed} sessions {:.2} ms per request ({digest_cpu:.2} ms center CPU); all of them read in {} requests, {:.1} ms ({full_cpu:.1} ms center CPU)",
        per_digest.as_secs_f64() * 1e3,
        chunks.len(),
        full.as_secs_f64() * 1e3,
    );
    println!(
        "  {:>9} {} ({DIGEST_READS} digest requests)",
        "cpu/rss",
        procs::describe(&digest_usage)
    );
    println!(
        "  {:>9} {} (full read)",
        "cpu/rss",
        procs::describe(&full_usage)
    );
    out.record(
        "reconcile_reads",
        "login-storm",
        serde_json::json!({
            "sessions": listed,
            "digest_ms": per_digest.as_secs_f64() * 1e3,
            "full_read_ms": full.as_secs_f64() * 1e3,
            "full_read_requests": chunks.len(),
            "digest_center_cpu_ms": digest_cpu,
            "full_read_center_cpu_ms": full_cpu,
            "digest_procs": procs::to_json(&digest_usage),
            "full_read_procs": procs::to_json(&full_usage),
        }),
    );
    Ok(())
}

/// CPU milliseconds all centers spent over `wall`, from their CPU share.
fn center_cpu_ms(usage: &[procs::Usage], wall: Duration) -> f64 {
    let pct: f64 = usage
        .iter()
        .filter(|u| u.label.starts_with("center"))
        .filter_map(|u| u.cpu_pct)
        .sum();
    pct / 100.0 * wall.as_secs_f64() * 1e3
}
