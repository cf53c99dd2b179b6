//! The stepped open-loop load (`1to1`, `multi`, `group`): U users log in across the
//! gateways, then sender threads ([`super::sender`]) send messages from random users at
//! each offered rate in turn, while one reader task per connection records what arrives.
//! A message goes to random users on another gateway (`send`), or to a group whose
//! members are the users (`group_send`, set up by [`super::group`]). `inbox` compares
//! durable sends with plain ones between two halves of the users (`Paired`).
//!
//! Each step is followed by a drain pause, so every message is counted in the step that
//! sent it (its body names the step) and no backlog leaks into the next step's figures.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ack::Acks;
use super::conn::{Keep, Target, Ws};
use super::fleet;
use super::output::{progress, Output};
use super::procs::{self, Usage, Watched};
use super::receive::{self, Shared, StepCounters, MAX_TRACKED, NOT_SENT};
use super::schedule::{self, Plan};
use super::sender::{Aim, Peer, Sender};
use super::stats::{Micros, Percentiles, Rate, Sharded};
use mrc::protocol::code::Outcome;

/// What one run of the load needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub scenario: &'static str,
    pub users: usize,
    pub payload: usize,
    pub steps: Vec<u64>,
    pub step: Duration,
    pub drain: Duration,
    /// Deliveries each message should make (receivers, or a group's other online members).
    pub fanout: usize,
    pub traffic: Traffic,
    pub senders: usize,
    pub keep_going: bool,
    pub connect_concurrency: usize,
    pub sources: Vec<IpAddr>,
    /// Prefix of this run's user ids.
    pub prefix: String,
    /// Direct messages carry an id of the bench's (`b<step>-<seq>`), so the receiving
    /// gateways keep each (id, receiver) for their duplicate filter, as they do for
    /// clients that choose ids (the JS client does).
    pub chosen_ids: bool,
}

/// What each message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// A `send` to `fanout` random users on other gateways.
    Direct,
    /// A `group_send` to `group`, from a random member: every other online member
    /// receives it. `offline` members never log in; every report counts them `offline`,
    /// which is expected and not counted as not delivered.
    Group { group: String, offline: u64 },
    /// A `send` from one half of the users to one random user of the other half on
    /// another gateway: a receiver's socket is then written only by its own reader (its
    /// acks), never by a sender thread, which writes whole frames to a duplicate of the
    /// socket and must not interleave with anyone. `durable`: the sends say
    /// `"durable":true` (each report says `stored`) and the receivers acknowledge what
    /// they get, as a real client does ([`Acks`]).
    Paired { durable: bool },
}

impl Traffic {
    /// The name recorded with each step.
    fn name(&self) -> &'static str {
        match self {
            Traffic::Direct => "direct",
            Traffic::Group { .. } => "group",
            Traffic::Paired { durable: false } => "plain",
            Traffic::Paired { durable: true } => "durable",
        }
    }

    fn durable(&self) -> bool {
        matches!(self, Traffic::Paired { durable: true })
    }

    /// Whether user `i` of a run over `gateways` gateways sends (users are spread over
    /// the gateways round-robin, so alternate rounds keep both halves on every gateway).
    fn sends(&self, i: usize, gateways: usize) -> bool {
        match self {
            Traffic::Paired { .. } => (i / gateways.max(1)) % 2 == 0,
            _ => true,
        }
    }

    /// Whether user `i` receives.
    fn receives(&self, i: usize, gateways: usize) -> bool {
        match self {
            Traffic::Paired { .. } => !self.sends(i, gateways),
            _ => true,
        }
    }
}

/// The id of user `i` of a run (`<prefix>-<i>`).
pub fn user_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The figures of one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub offered: u64,
    pub expected: u64,
    pub delivered_per_sec: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub not_delivered: u64,
    pub latency: Percentiles,
    /// Latency from each message's actual send time (without the bench's lateness).
    pub transit: Percentiles,
    /// CPU and RSS of every watched process while the step sent.
    pub usage: Vec<Usage>,
}

impl StepResult {
    /// CPU µs per delivery of the cluster's processes (not the bench's) over the step.
    pub fn cluster_us(&self) -> Option<f64> {
        procs::per_message(&self.usage, self.delivered_per_sec)
            .into_iter()
            .find(|(label, _)| label == "cluster")
            .map(|(_, us)| us)
    }

    /// Far from keeping up: fewer deliveries than 90% of the offered rate, loss, or
    /// latency beyond a second.
    pub fn saturated(&self, fanout: usize) -> bool {
        let offered = (self.offered * fanout as u64) as f64;
        self.delivered_per_sec < 0.9 * offered
            || self.lost * 1000 > self.expected
            || self.latency.p99 > 1_000_000
    }
}

/// The users of a run (id, index of its gateway) and the connections of those that
/// logged in (index into `users`, connection).
pub struct LoggedIn {
    pub users: Vec<(String, usize)>,
    pub conns: Vec<(usize, Ws)>,
}

/// Logs in `cfg.users` users (`user_id(prefix, i)`), split round-robin across the
/// gateways; fails when fewer than half (or fewer than two) could.
pub async fn log_in(cfg: &Config, targets: &[Target]) -> anyhow::Result<LoggedIn> {
    let users: Vec<(String, usize)> = (0..cfg.users)
        .map(|i| (user_id(&cfg.prefix, i), i % targets.len()))
        .collect();
    let fleet = fleet::connect_all(
        &users,
        targets,
        &cfg.sources,
        cfg.connect_concurrency,
        Duration::from_secs(30),
        "logging in",
    )
    .await;
    println!(
        "{}: {} users logged in on {} gateway(s) in {:.1}s ({} failed{})",
        cfg.scenario,
        fleet.conns.len(),
        targets.len(),
        fleet.elapsed.as_secs_f64(),
        fleet.failed,
        fleet
            .first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    if fleet.conns.len() < 2 || fleet.conns.len() * 2 < users.len() {
        anyhow::bail!("too few users could log in");
    }
    Ok(LoggedIn {
        users,
        conns: fleet.conns,
    })
}

/// Runs the load over logged-in users and returns each step's figures.
pub async fn run(
    cfg: &Config,
    targets: &[Target],
    logged_in: LoggedIn,
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<Vec<StepResult>> {
    let LoggedIn { users, conns } = logged_in;
    let gateways = targets.len();
    let aim = match &cfg.traffic {
        Traffic::Direct | Traffic::Paired { .. } => {
            let mut receivers = vec![Vec::new(); gateways];
            for (i, _) in &conns {
                let (user, gateway) = &users[*i];
                if !cfg.traffic.receives(*i, gateways) {
                    continue;
                }
                for (g, pool) in receivers.iter_mut().enumerate() {
                    if g != *gateway || gateways == 1 {
                        pool.push(user.clone());
                    }
                }
            }
            Aim::Users {
                receivers: Arc::new(receivers),
                fanout: cfg.fanout,
                chosen_ids: cfg.chosen_ids,
                keep: if cfg.traffic.durable() {
                    Keep::Durable
                } else {
                    Keep::Live
                },
            }
        }
        Traffic::Group { group, .. } => {
            Aim::Group(serde_json::to_string(group).expect("a string always encodes"))
        }
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        steps: cfg
            .steps
            .iter()
            .map(|&rate| {
                let total = schedule::step_total(rate, cfg.step);
                let tracked = if total <= MAX_TRACKED { total } else { 0 };
                StepCounters {
                    receipts: (0..tracked).map(|_| AtomicU32::new(0)).collect(),
                    ..StepCounters::default()
                }
            })
            .collect(),
        current: AtomicUsize::new(0),
        latency: Sharded::new(16, cfg.steps.len()),
        transit: Sharded::new(16, cfg.steps.len()),
        reported: Sharded::new(16, cfg.steps.len()),
        success: if cfg.traffic.durable() {
            Outcome::Stored
        } else {
            Outcome::Delivered
        },
        events: Mutex::new(BTreeMap::new()),
        closed: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
    });
    let cancel = CancellationToken::new();
    let mut readers = Vec::with_capacity(conns.len());
    let mut senders: Vec<Sender> = (0..cfg.senders.max(1))
        .map(|k| Sender::new(k, aim.clone(), cfg.payload))
        .collect();
    let n_senders = senders.len();
    let mut sending = 0;
    for (k, (i, ws)) in conns.into_iter().enumerate() {
        if cfg.traffic.sends(i, gateways) {
            senders[sending % n_senders].add(Peer::new(&ws, users[i].1)?);
            sending += 1;
        }
        let shard = k % shared.latency.shards();
        let acks = cfg.traffic.durable().then(Acks::default);
        let reader = receive::read(ws, shared.clone(), shard, cancel.clone(), acks);
        readers.push(tokio::spawn(reader));
    }

    print_header(cfg);
    let mut results = Vec::new();
    for (step, &rate) in cfg.steps.iter().enumerate() {
        shared.current.store(step, Relaxed);
        let (result, back) = run_step(cfg, step, rate, senders, &shared, watched, out).await;
        senders = back;
        let saturated = result.saturated(cfg.fanout);
        results.push(result);
        if saturated && !cfg.keep_going && step + 1 < cfg.steps.len() {
            println!("  saturated at {rate}/s: higher steps skipped (--keep-going runs them)");
            break;
        }
    }
    drop(senders);
    cancel.cancel();
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(3), reader).await;
    }
    let foreign = shared.foreign.load(Relaxed);
    if foreign > 0 {
        println!("  {foreign} frames were not bench messages (ignored)");
    }
    Ok(results)
}

/// Receivers reported anything but `delivered`, less the `offline` ones that were expected
/// (a group's members that never logged in: `offline_expected` in all).
fn not_delivered(events: &BTreeMap<String, u64>, offline_expected: u64) -> u64 {
    events
        .iter()
        .filter(|(k, _)| k.starts_with("report:"))
        .map(|(k, &n)| match k.as_str() {
            "report:offline" => n.saturating_sub(offline_expected),
            _ => n,
        })
        .sum()
}

/// Lost and duplicated deliveries: exact from the receipts per message number, or from
/// the totals when the step was too large to track.
fn losses(receipts: &[AtomicU32], fanout: usize, expected: u64, delivered: u64) -> (u64, u64) {
    if receipts.is_empty() {
        return (
            expected.saturating_sub(delivered),
            delivered.saturating_sub(expected),
        );
    }
    let fanout = (fanout as u64).min(u64::from(NOT_SENT - 1));
    let (mut lost, mut duplicates) = (0, 0);
    for r in receipts {
        let got = u64::from(r.load(Relaxed));
        if got >= u64::from(NOT_SENT) {
            continue;
        }
        lost += fanout.saturating_sub(got);
        duplicates += got.saturating_sub(fanout);
    }
    (lost, duplicates)
}

fn print_header(cfg: &Config) {
    println!(
        "{}: {} B payload, {} deliveries per message, {}s per step, {} sender thread(s)",
        cfg.scenario,
        cfg.payload,
        cfg.fanout,
        cfg.step.as_secs_f64(),
        cfg.senders
    );
    println!(
        "  {:>9} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8}",
        "offered",
        "sent",
        "expected",
        "delivered",
        "deliv/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "lost",
        "dup",
        "not-deliv",
        "lag-max",
        "tr-p99",
        "cl-µs/msg"
    );
}

/// One step: send on schedule with a progress line per second, drain, summarize.
async fn run_step(
    cfg: &Config,
    step: usize,
    rate: u64,
    senders: Vec<Sender>,
    shared: &Arc<Shared>,
    watched: &Watched,
    out: &mut Output,
) -> (StepResult, Vec<Sender>) {
    let total = schedule::step_total(rate, cfg.step);
    let parts = schedule::split(total, senders.len());
    let before = watched.sample();
    let start = Instant::now() + Duration::from_millis(20);
    let firsts: Vec<u64> = parts
        .iter()
        .scan(0, |next, &count| {
            let first = *next;
            *next += count;
            Some(first)
        })
        .collect();
    let plans = parts.into_iter().zip(firsts);
    let mut tasks =
        futures::future::join_all(senders.into_iter().zip(plans).map(|(s, (count, first))| {
            let plan = Plan {
                count,
                duration: cfg.step,
            };
            let (start, shared) = (start.into_std(), shared.clone());
            tokio::task::spawn_blocking(move || s.run_step(step, plan, first, start, shared))
        }));
    let counters = &shared.steps[step];
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (watched.sample(), 0u64);
    let joined = loop {
        tokio::select! {
            joined = &mut tasks => break joined,
            _ = tick.tick() => {
                let now = watched.sample();
                let delivered = counters.delivered.load(Relaxed);
                progress(&format!(
                    "{rate}/s t={:.0}s sent {} delivered {} ({}) | {}",
                    start.elapsed().as_secs_f64(),
                    counters.sent.load(Relaxed),
                    delivered,
                    Rate((delivered - last.1) as f64),
                    procs::describe(&watched.usage(&last.0, &now)),
                ));
                last = (now, delivered);
            }
        }
    };
    let senders: Vec<Sender> = joined
        .into_iter()
        .map(|j| j.expect("a sender thread never panics"))
        .collect();
    let window = start.elapsed();
    let in_window = counters.delivered.load(Relaxed);
    let after = watched.sample();
    let sent = counters.sent.load(Relaxed);
    let expected = sent * cfg.fanout as u64;
    // Every message is delivered and reported; a report can come back after the last
    // delivery (the sender's gateway writes it once the receiver's gateway replied), so
    // the drain waits for both.
    let drain_end = Instant::now() + cfg.drain;
    // Durable sends are also acknowledged by their receivers: the drain waits for the
    // acks' results too, so their cost is counted in this step.
    let durable = cfg.traffic.durable();
    let pending = || {
        let delivered = counters.delivered.load(Relaxed);
        delivered < expected
            || counters.reports.load(Relaxed) < sent
            || (durable && counters.removed.load(Relaxed) < delivered)
    };
    while pending() && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = counters.delivered.load(Relaxed);
    let (lost, duplicates) = losses(&counters.receipts, cfg.fanout, expected, delivered);
    let events = shared.events_of(step);
    let reports = counters.reports.load(Relaxed);
    let reports_delivered = counters.reports_delivered.load(Relaxed);
    let offline_expected = match cfg.traffic {
        Traffic::Group { offline, .. } => reports * offline,
        Traffic::Direct | Traffic::Paired { .. } => 0,
    };
    let not_delivered = not_delivered(&events, offline_expected);
    let result = StepResult {
        offered: rate,
        expected,
        delivered_per_sec: in_window as f64 / window.as_secs_f64(),
        lost,
        duplicates,
        not_delivered,
        latency: Percentiles::of(&shared.latency.merged(step)),
        transit: Percentiles::of(&shared.transit.merged(step)),
        usage: watched.usage(&before, &after),
    };
    let usage = &result.usage;
    let lag = counters.lag_max_us.load(Relaxed);
    let l = result.latency;
    // CPU per delivered message (a delivery, for several receivers per message).
    let per_message = procs::per_message(usage, result.delivered_per_sec);
    let cluster = result
        .cluster_us()
        .map_or("-".into(), |us| format!("{us:.0}"));
    println!(
        "  {:>9} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8}",
        format!("{}", Rate(rate as f64)),
        sent,
        expected,
        delivered,
        format!("{}", Rate(result.delivered_per_sec)),
        Micros(l.p50).to_string(),
        Micros(l.p99).to_string(),
        Micros(l.p999).to_string(),
        Micros(l.max).to_string(),
        result.lost,
        duplicates,
        not_delivered,
        Micros(lag).to_string(),
        Micros(result.transit.p99).to_string(),
        cluster,
    );
    let reported = Percentiles::of(&shared.reported.merged(step));
    if reported.count > 0 {
        let (p50, p99) = (Micros(reported.p50), Micros(reported.p99));
        println!(
            "  {:>9} p50 {p50} p99 {p99} (from the actual send)",
            "report"
        );
    }
    println!("  {:>9} {}", "cpu/rss", procs::describe(usage));
    println!(
        "  {:>9} {}",
        "cpu µs/msg",
        procs::describe_per_message(&per_message)
    );
    let other: Vec<String> = events
        .iter()
        .filter(|(k, _)| !k.starts_with("report:"))
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    let failed = counters.send_failed.load(Relaxed);
    let unsent = counters.unsent.load(Relaxed);
    if !other.is_empty() || failed > 0 || unsent > 0 {
        println!(
            "  {:>9} send failed {failed}, unsent {unsent} {}",
            "!",
            other.join(" ")
        );
    }
    out.record(
        "step",
        cfg.scenario,
        serde_json::json!({
            "step": step,
            "offered": rate,
            "traffic": cfg.traffic.name(),
            "users": cfg.users,
            "payload": cfg.payload,
            "fanout": cfg.fanout,
            "group_offline": match cfg.traffic {
                Traffic::Group { offline, .. } => Some(offline),
                _ => None,
            },
            "duration_s": cfg.step.as_secs_f64(),
            "window_s": window.as_secs_f64(),
            "sent": sent,
            "unsent": unsent,
            "send_failed": failed,
            "expected": expected,
            "delivered": delivered,
            "delivered_per_s": result.delivered_per_sec,
            "lost": result.lost,
            "duplicates": duplicates,
            "not_delivered": not_delivered,
            "reports": reports,
            "reports_delivered": reports_delivered,
            "acks_sent": counters.acks.load(Relaxed),
            "inbox_removed": counters.removed.load(Relaxed),
            "events": events,
            "lag_max_us": lag,
            "latency": l.to_json(),
            "latency_from_send": result.transit.to_json(),
            "report_latency_from_send": reported.to_json(),
            "procs": procs::to_json(usage),
            "cpu_us_per_msg": procs::per_message_json(&per_message),
        }),
    );
    (result, senders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_and_duplicates_count_per_message() {
        let receipts: Vec<AtomicU32> = [1, 0, 2, NOT_SENT, 1].map(AtomicU32::new).into();
        assert_eq!(losses(&receipts, 1, 5, 4), (1, 1));
        let multi: Vec<AtomicU32> = [10, 9, 12].map(AtomicU32::new).into();
        assert_eq!(losses(&multi, 10, 30, 31), (1, 2));
        // A group of 1000 online members: 999 deliveries per message.
        let group: Vec<AtomicU32> = [999, 998, 1000, NOT_SENT, 0].map(AtomicU32::new).into();
        assert_eq!(losses(&group, 999, 3 * 999, 2997), (1000, 1));
        assert_eq!(losses(&[], 1, 10, 7), (3, 0));
        assert_eq!(losses(&[], 1, 10, 12), (0, 2));
    }

    #[test]
    fn expected_offline_members_are_not_failures() {
        let events: BTreeMap<String, u64> = [
            ("report:offline".to_string(), 250),
            ("report:unavailable".to_string(), 3),
            ("error:forbidden".to_string(), 1),
        ]
        .into();
        assert_eq!(not_delivered(&events, 0), 253);
        // 5 reports of a group with 50 members offline: 250 expected.
        assert_eq!(not_delivered(&events, 5 * 50), 3);
        assert_eq!(not_delivered(&events, 1000), 3);
        assert_eq!(not_delivered(&BTreeMap::new(), 10), 0);
    }
}
