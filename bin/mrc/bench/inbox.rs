//! `inbox`: the durable inbox under load (PROTOCOL.md 8), each figure compared with the
//! raw JetStream publish rate measured in the same run (before and after, like the NATS
//! baselines of the other scenarios, because this machine's speed drifts):
//!
//! 1. **store**: `--inbox-users` users who have never logged in get `--inbox-per-user`
//!    messages each, sent with `"offline":"store"` by users logged in on the gateways.
//!    Closed loop: `--inbox-in-flight` sends outstanding, the next one sent as each
//!    report comes back, the same number in flight as the JetStream baseline, so the two
//!    rates compare like for like (an open loop past the store rate would only measure
//!    queues).
//! 2. **drain** ([`super::drain`]): all of them log in at once and read and acknowledge
//!    their inboxes; every stored message must arrive once, in `seq` order.
//! 3. **cost**: at each `--steps` rate, a step of plain 1:1 sends and one of durable sends
//!    (`"durable":true`, receivers acking) between two halves of `--users` online users,
//!    with each process's CPU per message: what acknowledged delivery costs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::conn::{self, Frame, Keep, Target, Ws};
use super::drain::{self, Drained, Expect};
use super::load::{self, StepResult, Traffic};
use super::output::Output;
use super::procs::{self, Watched};
use super::stats::{Micros, Rate};
use super::{baseline, fleet, schedule, storm};
use mrc::protocol::code::Outcome;
use mrc::protocol::inbox::StoredMessage;
use mrc::{config, connection};

/// What one run of `inbox` needs.
pub struct Config {
    /// Offline users whose inboxes are filled, then drained.
    pub users: usize,
    pub per_user: usize,
    /// Stored sends outstanding at once, and publishes in the JetStream baseline.
    pub in_flight: usize,
    pub payload: usize,
    /// Length of each JetStream baseline (zero: none).
    pub baseline: Duration,
    pub connect_concurrency: usize,
    pub sources: Vec<IpAddr>,
    /// Prefix of this run's ids.
    pub prefix: String,
    /// The plain and durable steps (the traffic is set for each).
    pub load: load::Config,
}

/// At most this many users send the stored messages (`--inbox-in-flight` is spread over
/// them): a few busy clients, not one connection per message in flight.
const MAX_STORE_SENDERS: usize = 32;
/// A send whose report has not come back after this long counts as lost.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The id of stored message number `n`; its receiver is user `n % users`.
pub fn message_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-s{n}")
}

/// The id of offline user `u`.
pub fn receiver_id(prefix: &str, u: usize) -> String {
    format!("{prefix}-r{u}")
}

/// What the store phase did.
pub struct Stored {
    /// Message numbers reported `stored`.
    pub stored: Vec<u64>,
    /// Stored messages per second, from the first send to the last report.
    pub per_sec: f64,
    /// Every message was sent, answered and stored.
    pub lossless: bool,
}

/// Runs the scenario: baseline, store, drain, cost, baseline, summary.
pub async fn run(
    cfg: &Config,
    nats: &config::Nats,
    targets: &[Target],
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<()> {
    let record = record_size(cfg);
    println!(
        "inbox: {} offline users x {} messages ({} B bodies, {record} B stored records), {} in flight",
        cfg.users, cfg.per_user, cfg.payload, cfg.in_flight
    );
    let mut bases = Vec::new();
    bases.extend(raw_publish(cfg, nats, record, "before", watched, out).await?);
    let stored = store(cfg, targets, watched, out).await?;
    let expect = Arc::new(Expect::new(cfg, &stored.stored));
    let client = connection::connect(nats, "mrc bench")
        .await
        .ok()
        .map(|c| c.client);
    let subjects = nats.subjects()?;
    let backend = client.as_ref().map(|c| (c, &subjects));
    let drained = drain::run(cfg, targets, expect, backend, watched, out).await?;
    let mut costs = Vec::new();
    for durable in [false, true] {
        settle(watched).await;
        costs.push(cost(cfg, durable, targets, watched, out).await?);
    }
    settle(watched).await;
    bases.extend(raw_publish(cfg, nats, record, "after", watched, out).await?);
    summarize(&stored, &drained, &costs, &bases, out);
    Ok(())
}

/// The size of a stored record (what JetStream keeps per message) for this run's bodies:
/// the JetStream baseline publishes payloads of that size.
fn record_size(cfg: &Config) -> usize {
    let n = (cfg.users * cfg.per_user) as u64;
    let body = conn::body(0, 0, 0, n, cfg.payload);
    let record = StoredMessage {
        id: message_id(&cfg.prefix, n).into(),
        from: Some(format!("{}-w{}", cfg.prefix, MAX_STORE_SENDERS).into()),
        to: vec![receiver_id(&cfg.prefix, cfg.users)],
        // A timestamp in milliseconds has 13 digits until the year 2286.
        ts: 1_000_000_000_000,
        body: &body,
    };
    serde_json::to_vec(&record).map_or(cfg.payload, |r| r.len())
}

/// The JetStream baseline with payloads of `record` bytes, unless `--baseline-secs 0`.
async fn raw_publish(
    cfg: &Config,
    nats: &config::Nats,
    record: usize,
    when: &str,
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<Option<f64>> {
    if cfg.baseline.is_zero() {
        return Ok(None);
    }
    let (in_flight, duration) = (cfg.in_flight, cfg.baseline);
    let rate =
        baseline::jetstream_publish(nats, record, in_flight, duration, when, watched, out).await?;
    Ok(Some(rate))
}

/// Waits (up to a minute) for the cluster to go quiet, so one measurement does not share
/// the machine with the previous one's backlog.
async fn settle(watched: &Watched) {
    let (waited, settled) = watched.settle(5.0, Duration::from_secs(60)).await;
    if !settled {
        println!("inbox: the cluster was still busy after {waited:.0?}");
    }
}

/// The store phase: every message sent with `"offline":"store"` to its offline receiver.
async fn store(
    cfg: &Config,
    targets: &[Target],
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<Stored> {
    let senders: Vec<(String, usize)> = (0..cfg.in_flight.clamp(1, MAX_STORE_SENDERS))
        .map(|i| (format!("{}-w{i}", cfg.prefix), i % targets.len()))
        .collect();
    let fleet = fleet::connect_all(
        &senders,
        targets,
        &cfg.sources,
        cfg.connect_concurrency,
        Duration::from_secs(30),
        "store senders",
    )
    .await;
    if fleet.conns.is_empty() {
        bail!("no store sender could log in: {:?}", fleet.first_error);
    }
    let total = (cfg.users * cfg.per_user) as u64;
    let n_senders = fleet.conns.len();
    let windows = schedule::split(cfg.in_flight as u64, n_senders);
    let next = Arc::new(AtomicU64::new(0));
    let before = watched.sample();
    let start = Instant::now();
    let tasks: Vec<_> = fleet
        .conns
        .into_iter()
        .zip(windows)
        .map(|((_, ws), window)| {
            let plan = Plan {
                prefix: cfg.prefix.clone(),
                users: cfg.users,
                payload: cfg.payload,
                total,
            };
            tokio::spawn(store_from(ws, window as usize, next.clone(), plan))
        })
        .collect();
    let mut tally = Tally::default();
    let mut conns = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let (t, ws) = task?;
        tally.merge(t);
        conns.extend(ws);
    }
    let elapsed = start.elapsed();
    let usage = watched.usage(&before, &watched.sample());
    storm::close_all(conns).await;
    Ok(tally.report(cfg, n_senders, elapsed, &usage, out))
}

/// Which messages the store senders send: numbers taken from a shared counter.
struct Plan {
    prefix: String,
    users: usize,
    payload: usize,
    total: u64,
}

/// What one store sender saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    outcomes: BTreeMap<String, u64>,
    no_report: u64,
    stored: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.no_report += other.no_report;
        self.stored.extend(other.stored);
        for (k, n) in other.outcomes {
            *self.outcomes.entry(k).or_default() += n;
        }
    }

    /// A frame came back for one of the sends in flight: true when it answered one.
    fn answer(&mut self, text: &str, plan: &Plan) -> bool {
        match conn::classify(text) {
            Frame::Report(outcomes) => {
                for (outcome, n) in outcomes {
                    *self.outcomes.entry(outcome.as_str().into()).or_default() += n;
                    if outcome != Outcome::Stored {
                        continue;
                    }
                    let number = conn::frame_id(text)
                        .and_then(|id| id.strip_prefix(&plan.prefix)?.strip_prefix("-s"))
                        .and_then(|n| n.parse::<u64>().ok());
                    self.stored.extend(number);
                }
                true
            }
            Frame::Error(code) => {
                *self.outcomes.entry(format!("error:{code}")).or_default() += 1;
                true
            }
            _ => false,
        }
    }

    /// Sums the store phase up, prints the figures and records them.
    fn report(
        self,
        cfg: &Config,
        n_senders: usize,
        elapsed: Duration,
        usage: &[procs::Usage],
        out: &mut Output,
    ) -> Stored {
        let total = (cfg.users * cfg.per_user) as u64;
        let stored = self.stored.len() as u64;
        let per_sec = stored as f64 / elapsed.as_secs_f64();
        let answered: u64 = self.outcomes.values().sum();
        let lossless = self.no_report == 0 && answered == total && stored == total;
        let count = |k: &str| self.outcomes.get(k).copied().unwrap_or(0);
        let other = answered - count("stored") - count("inbox_full") - count("unavailable");
        println!(
            "inbox: store: {total} sends from {n_senders} users, {} in flight (closed loop): {stored} stored in {:.2}s = {}; inbox_full {}, unavailable {}, other {other}, no report {}: {}",
            cfg.in_flight,
            elapsed.as_secs_f64(),
            Rate(per_sec),
            count("inbox_full"),
            count("unavailable"),
            self.no_report,
            if lossless { "zero loss" } else { "NOT every send was stored" }
        );
        let per_message = procs::per_message(usage, per_sec);
        println!("  {:>9} {}", "cpu/rss", procs::describe(usage));
        println!(
            "  {:>9} {}",
            "cpu µs/msg",
            procs::describe_per_message(&per_message)
        );
        out.record(
            "inbox_store",
            "inbox",
            json!({
                "users": cfg.users,
                "per_user": cfg.per_user,
                "in_flight": cfg.in_flight,
                "senders": n_senders,
                "payload": cfg.payload,
                "sent": self.sent,
                "stored": stored,
                "inbox_full": count("inbox_full"),
                "unavailable": count("unavailable"),
                "other": other,
                "no_report": self.no_report,
                "outcomes": self.outcomes,
                "lossless": lossless,
                "elapsed_s": elapsed.as_secs_f64(),
                "stored_per_s": per_sec,
                "procs": procs::to_json(usage),
                "cpu_us_per_msg": procs::per_message_json(&per_message),
            }),
        );
        Stored {
            stored: self.stored,
            per_sec,
            lossless,
        }
    }
}

/// One store sender: keeps `window` sends outstanding until every message is taken,
/// then waits for the last reports. Returns its tally and its connection (closed by the
/// caller once every sender is done: a close now would be work during the others' sends).
async fn store_from(
    mut ws: Ws,
    window: usize,
    next: Arc<AtomicU64>,
    plan: Plan,
) -> (Tally, Option<Ws>) {
    let mut tally = Tally::default();
    let mut in_flight = 0;
    loop {
        while in_flight < window {
            let n = next.fetch_add(1, Relaxed);
            if n >= plan.total {
                break;
            }
            let to = [receiver_id(&plan.prefix, (n % plan.users as u64) as usize)];
            let id = message_id(&plan.prefix, n);
            let body = conn::body(0, 0, 0, n, plan.payload);
            let frame = conn::send_frame(&to, Some(&id), Keep::Offline, &body);
            if ws.feed(Message::text(frame)).await.is_err() {
                tally.no_report += in_flight as u64;
                return (tally, None);
            }
            in_flight += 1;
            tally.sent += 1;
        }
        if in_flight == 0 || ws.flush().await.is_err() {
            tally.no_report += in_flight as u64;
            return (tally, Some(ws));
        }
        match tokio::time::timeout(REPORT_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if tally.answer(text.as_str(), &plan) {
                    in_flight -= 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) | Err(_) => {
                tally.no_report += in_flight as u64;
                return (tally, None);
            }
        }
    }
}

/// One kind of traffic at each `--steps` rate, on fresh users.
async fn cost(
    cfg: &Config,
    durable: bool,
    targets: &[Target],
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<Vec<StepResult>> {
    let load = load::Config {
        traffic: Traffic::Paired { durable },
        prefix: format!("{}-{}", cfg.prefix, if durable { "d" } else { "p" }),
        ..cfg.load.clone()
    };
    println!(
        "inbox: {} 1:1 sends between {} senders and {} receivers{}",
        if durable { "durable" } else { "plain" },
        load.users.div_ceil(2),
        load.users / 2,
        if durable { " (which ack)" } else { "" }
    );
    let logged_in = load::log_in(&load, targets).await?;
    load::run(&load, targets, logged_in, watched, out).await
}

/// The headline figures: store and drain rates as ratios to the raw JetStream publish
/// rate (the mean of its measurements, and each), and durable against plain delivery.
fn summarize(
    stored: &Stored,
    drained: &Drained,
    costs: &[Vec<StepResult>],
    bases: &[f64],
    out: &mut Output,
) {
    let mean = (!bases.is_empty()).then(|| bases.iter().sum::<f64>() / bases.len() as f64);
    let ratio = |rate: f64| mean.map(|m| rate / m);
    let each = |rate: f64| bases.iter().map(|b| rate / b).collect::<Vec<_>>();
    let raw = match (mean, bases) {
        (Some(m), [before, after]) => format!(
            " ({}: mean of {} before and {} after)",
            Rate(m),
            Rate(*before),
            Rate(*after)
        ),
        (Some(m), _) => format!(" ({})", Rate(m)),
        (None, _) => " (not measured)".into(),
    };
    let x = |rate: f64| ratio(rate).map_or("-".into(), |r| format!("{r:.2}"));
    println!(
        "inbox: store {} = {} x raw JetStream publish{raw}; drain on login {} = {} x",
        Rate(stored.per_sec),
        x(stored.per_sec),
        Rate(drained.per_sec),
        x(drained.per_sec),
    );
    let pairs = compare(costs);
    out.record(
        "summary",
        "inbox",
        json!({
            "stored_per_s": stored.per_sec,
            "drained_per_s": drained.per_sec,
            "jetstream_publish_per_s": mean,
            "ratio_store": ratio(stored.per_sec),
            "ratio_drain": ratio(drained.per_sec),
            "ratio_store_each": each(stored.per_sec),
            "ratio_drain_each": each(drained.per_sec),
            "store_lossless": stored.lossless,
            "drain_exact": drained.exact(),
            "durable_vs_plain": pairs,
        }),
    );
}

/// Plain and durable side by side at each rate both ran: delivered rate, latency, CPU
/// per message of every process. Printed, and returned for the JSON summary.
fn compare(costs: &[Vec<StepResult>]) -> Vec<serde_json::Value> {
    let [plain, durable] = costs else {
        return Vec::new();
    };
    println!("inbox: acknowledged (durable) vs plain 1:1 delivery, CPU µs per message:");
    let mut pairs = Vec::new();
    for (p, d) in plain.iter().zip(durable) {
        let mut pair = json!({"offered": p.offered});
        for (name, r) in [("plain", p), ("durable", d)] {
            let per_message = procs::per_message(&r.usage, r.delivered_per_sec);
            println!(
                "  {name:>8} {:>8} delivered {:>8} p50 {:>7} p99 {:>7} lost {} dup {} | {}",
                Rate(r.offered as f64).to_string(),
                Rate(r.delivered_per_sec).to_string(),
                Micros(r.latency.p50).to_string(),
                Micros(r.latency.p99).to_string(),
                r.lost,
                r.duplicates,
                procs::describe_per_message(&per_message)
            );
            pair[name] = json!({
                "delivered_per_s": r.delivered_per_sec,
                "latency": r.latency.to_json(),
                "lost": r.lost,
                "duplicates": r.duplicates,
                "not_delivered": r.not_delivered,
                "cpu_us_per_msg": procs::per_message_json(&per_message),
            });
        }
        pairs.push(pair);
    }
    pairs
}
