//! `mrc bench`: an open-loop load generator for a running cluster, and the raw NATS
//! baseline it is compared with. docs/PERFORMANCE.md says how to run it and what it
//! measured; `scripts/bench.sh` starts a cluster and runs every scenario.
//!
//! - [`load`]: `1to1`, `multi` and `group` — stepped offered rates, latency, loss,
//!   reports ([`receive`]: what arrives); [`group`] logs the members in and creates the
//!   group first.
//! - [`baseline`]: NATS request-reply (N in flight) and publish-subscribe, same payload.
//! - [`storm`]: `login-storm` — logins per second; [`idle`]: `idle` — memory per
//!   connection, through the WebSocket or the TCP door.
//! - [`inbox`] and [`drain`]: `inbox` — the durable inbox: store rate, drain rate at
//!   login, and durable against plain delivery, against the raw JetStream publish rate;
//!   [`ack`]: acknowledgements coalesced as a real client sends them.
//! - [`conn`], [`fleet`]: the bench's WebSocket clients; [`sender`]: the threads that send
//!   on schedule; [`schedule`], [`stats`], [`procs`], [`output`]: rate schedule,
//!   histograms, `/proc` readings, results.
//!
//! The bench is a client like any other: it speaks the client protocol to gateways and
//! `mrc.dir.lookup` to centers, and targets loopback addresses only. Every loop is bounded
//! in count and in time, and the whole run by `--max-secs`.

pub mod ack;
pub mod baseline;
pub mod conn;
pub mod drain;
pub mod fleet;
pub mod group;
pub mod idle;
pub mod inbox;
pub mod load;
pub mod output;
pub mod procs;
pub mod receive;
pub mod schedule;
pub mod sender;
pub mod stats;
pub mod storm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use mrc::config;
use mrc::groups::MAX_GROUP_MEMBERS;

/// The centers' default `--inbox-max-per-user`: more stored messages per user would be
/// refused (`inbox_full`), which the inbox scenario does not set out to measure.
const MAX_INBOX_PER_USER: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Each message to one random user on another gateway.
    #[value(name = "1to1")]
    OneToOne,
    /// Each message to --fanout random users on other gateways.
    Multi,
    /// One group of --group-size members created through the client protocol, all of
    /// them online (or --group-online); each message from a random member to the group.
    Group,
    /// --storm-users logins as fast as possible; logins/s and time until all registered.
    LoginStorm,
    /// --idle-users idle logged-in users on the first gateway; RSS per connection.
    Idle,
    /// --inbox-users offline users get --inbox-per-user stored messages each, then all
    /// log in and drain them; then durable against plain 1:1 sends at each --steps rate.
    Inbox,
}

/// The door of the `idle` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleDoor {
    Ws,
    Tcp,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::OneToOne => "1to1",
            Scenario::Multi => "multi",
            Scenario::Group => "group",
            Scenario::LoginStorm => "login-storm",
            Scenario::Idle => "idle",
            Scenario::Inbox => "inbox",
        }
    }
}

/// Load-test a running cluster whose gateways run with --insecure-dev-auth (and lifted
/// rate limits): see docs/PERFORMANCE.md. A flag given twice takes the last value, so
/// scripts can put their defaults first and the caller's flags after them.
#[derive(clap::Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct Args {
    #[arg(long, value_enum, default_value = "1to1")]
    pub scenario: Scenario,
    /// Gateway WebSocket URLs (loopback only); users are split across them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws"
    )]
    pub gateways: Vec<String>,
    /// Connected users (1to1, multi, inbox's durable and plain steps; group: the default
    /// of --group-online).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Message body size in bytes (also the baseline's payload).
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Offered rates in messages per second, one step each [default: 2k,5k,10k,20k,40k,80k;
    /// group: 10,20,50,100,200,400,800, i.e. 10k..800k deliveries/s to 1,000 members;
    /// inbox: 2k, one plain and one durable step at each].
    #[arg(long)]
    pub steps: Option<String>,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Seconds to wait after a step for its last messages before counting them lost.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,
    /// Receivers per message (multi).
    #[arg(long, default_value_t = 10)]
    pub fanout: usize,
    /// Direct messages (1to1, multi) carry ids of the bench's, as clients that choose ids
    /// send them: the receiving gateways' duplicate filter is then in the measurement, and
    /// each report's latency is printed (its id says when its message left).
    #[arg(long)]
    pub chosen_ids: bool,
    /// Members of the group, the sender included (group; at most 20,000).
    #[arg(long, default_value_t = 1000)]
    pub group_size: usize,
    /// Members logged in (group; default: all of them, at most --users); the others are
    /// offline: every report counts them, and they are not counted as failures.
    #[arg(long)]
    pub group_online: Option<usize>,
    /// Sender threads (the connections are split among them). One keeps up with
    /// 100k+ msg/s and leaves the cores to the cluster being measured.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Run every step even after the cluster saturated.
    #[arg(long)]
    pub keep_going: bool,
    /// Seconds per raw NATS baseline measurement (0: skip the baseline).
    #[arg(long, default_value_t = 5.0)]
    pub baseline_secs: f64,
    /// Requests in flight in the request-reply baseline.
    #[arg(long, default_value_t = 64)]
    pub baseline_in_flight: usize,
    /// Logins in the login storm.
    #[arg(long, default_value_t = 100_000)]
    pub storm_users: usize,
    /// Idle users to reach, one measurement at each level.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub idle_users: Vec<usize>,
    /// The door idle users come through (idle): `tcp` needs --tcp-gateways.
    #[arg(long, value_enum, default_value = "ws")]
    pub door: IdleDoor,
    /// Gateway TCP door addresses (`--tcp-listen`), in the order of --gateways.
    #[arg(long, value_delimiter = ',')]
    pub tcp_gateways: Vec<std::net::SocketAddr>,
    /// Offline users whose inboxes are filled, then drained at login (inbox).
    #[arg(long, default_value_t = 1000)]
    pub inbox_users: usize,
    /// Messages stored for each of them (inbox; at most 1000, the centers' default
    /// --inbox-max-per-user: more would be refused as inbox_full).
    #[arg(long, default_value_t = 20)]
    pub inbox_per_user: usize,
    /// Stored sends outstanding at once, and publishes in flight in the raw JetStream
    /// baseline they are compared with (inbox).
    #[arg(long, default_value_t = 64)]
    pub inbox_in_flight: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 500)]
    pub connect_concurrency: usize,
    /// Source addresses 127.0.0.2.. to spread connections over (0: let the kernel pick).
    #[arg(long, default_value_t = 8)]
    pub source_ips: usize,
    /// Processes to watch, `label=pid`, comma-separated (default: every mrc-gateway,
    /// mrc-center and nats-server on the machine, found by name). Label gateways gw-1,
    /// gw-2... in the order of --gateways.
    #[arg(long, value_delimiter = ',')]
    pub procs: Vec<String>,
    /// Append results as JSON lines to this file (for scripts/plot.py).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Free-text label stored with every JSON line (e.g. "before", "after").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Stop the whole run after this many seconds, whatever it is doing.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
}

impl Args {
    fn validate(&self) -> anyhow::Result<(Vec<conn::Target>, Vec<u64>)> {
        if self.gateways.is_empty() {
            bail!("--gateways: give at least one WebSocket URL");
        }
        let targets = self
            .gateways
            .iter()
            .map(|g| conn::Target::parse(g))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let steps = schedule::parse_steps(self.steps.as_deref().unwrap_or(self.default_steps()))
            .context("--steps")?;
        let positive = [
            ("--users", self.users as f64),
            ("--step-secs", self.step_secs),
            ("--fanout", self.fanout as f64),
            ("--senders", self.senders as f64),
            ("--connect-concurrency", self.connect_concurrency as f64),
            ("--inbox-users", self.inbox_users as f64),
            ("--inbox-in-flight", self.inbox_in_flight as f64),
            ("--max-secs", self.max_secs as f64),
        ];
        for (flag, value) in positive {
            if value.is_nan() || value <= 0.0 {
                bail!("{flag} must be > 0");
            }
        }
        if !(0.0..=3600.0).contains(&self.baseline_secs)
            || !(0.0..=3600.0).contains(&self.drain_secs)
        {
            bail!("--baseline-secs and --drain-secs must be within 0..=3600");
        }
        if self.step_secs > 3600.0 || self.payload > 1024 * 1024 {
            bail!("--step-secs must be at most 3600 and --payload at most 1 MiB");
        }
        if !(2..=MAX_GROUP_MEMBERS).contains(&self.group_size)
            || self.group_online.is_some_and(|n| n < 2)
        {
            bail!(
                "--group-size must be within 2..={MAX_GROUP_MEMBERS} and --group-online at least 2"
            );
        }
        if !(1..=MAX_INBOX_PER_USER).contains(&self.inbox_per_user) {
            bail!("--inbox-per-user must be within 1..={MAX_INBOX_PER_USER}");
        }
        Ok((targets, steps))
    }

    fn default_steps(&self) -> &'static str {
        match self.scenario {
            Scenario::Group => "10,20,50,100,200,400,800",
            Scenario::Inbox => "2k",
            _ => "2k,5k,10k,20k,40k,80k",
        }
    }

    /// Group members to log in: --group-online, else every member up to --users.
    fn group_online(&self) -> usize {
        self.group_online.unwrap_or(self.users).min(self.group_size)
    }
}

/// Runs the chosen scenario; `nats` reaches the cluster's NATS (baseline, look-ups).
/// Returns the process exit code.
pub async fn run(args: Args, nats: config::Nats) -> anyhow::Result<u8> {
    let (targets, steps) = args.validate()?;
    let limit = Duration::from_secs(args.max_secs);
    match tokio::time::timeout(limit, scenario(&args, nats, &targets, steps)).await {
        Ok(result) => result.map(|()| 0),
        Err(_) => {
            eprintln!("bench: stopped after --max-secs {}", args.max_secs);
            Ok(1)
        }
    }
}

async fn scenario(
    args: &Args,
    mut nats: config::Nats,
    targets: &[conn::Target],
    steps: Vec<u64>,
) -> anyhow::Result<()> {
    nats.connect_timeout_ms = nats.connect_timeout_ms.min(3000);
    let procs = if args.procs.is_empty() {
        procs::find_by_name(&procs::DEFAULT_NAMES)
    } else {
        args.procs
            .iter()
            .map(|p| procs::parse_proc(p))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let watched = procs::Watched::new(procs);
    let run_id = format!("b{}", &nuid::next().to_string()[16..]);
    let mut out = output::Output::new(args.json.as_deref(), run_id.clone(), args.label.clone())?;
    let sources = if args.source_ips == 0 {
        Vec::new()
    } else {
        conn::source_ips(args.source_ips)
    };
    let watched_labels: Vec<&str> = watched.procs.iter().map(|p| p.label.as_str()).collect();
    println!(
        "bench {run_id}: {} | watching {}",
        args.scenario.name(),
        watched_labels.join(", ")
    );
    let gateway_labels: Vec<String> = (1..=targets.len()).map(|i| format!("gw-{i}")).collect();
    let gateway_labels: Vec<&str> = gateway_labels.iter().map(String::as_str).collect();
    let cap = storm::connection_cap(&watched, &gateway_labels);
    let cfg = load::Config {
        scenario: args.scenario.name(),
        users: args.users.min(cap),
        payload: args.payload,
        steps,
        step: Duration::from_secs_f64(args.step_secs),
        drain: Duration::from_secs_f64(args.drain_secs),
        fanout: if args.scenario == Scenario::Multi {
            args.fanout
        } else {
            1
        },
        traffic: load::Traffic::Direct,
        senders: args.senders,
        keep_going: args.keep_going,
        connect_concurrency: args.connect_concurrency,
        sources: sources.clone(),
        prefix: run_id.clone(),
        chosen_ids: args.chosen_ids,
    };
    match args.scenario {
        Scenario::OneToOne | Scenario::Multi | Scenario::Group => {
            // The baseline is measured before and after the steps, and MRC's rate is
            // compared with their mean: this shared machine's speed drifts by more than
            // the difference between runs within minutes, so one measurement up front can
            // flatter or wrong the ratio (both were seen: 92k/s and 140k/s an hour apart).
            let before = measure_baseline(args, &nats, "before", &watched, &mut out).await?;
            let (cfg, results) = if args.scenario == Scenario::Group {
                let online = args.group_online();
                if online > cap {
                    println!("group: at most {cap} members online (open-files limits)");
                }
                let cfg = load::Config {
                    users: online.min(cap),
                    ..cfg
                };
                let client = connection::connect(&nats, "mrc bench")
                    .await
                    .ok()
                    .map(|c| c.client);
                let subjects = nats.subjects()?;
                let nats = client.as_ref().map(|c| (c, &subjects));
                group::run(&cfg, args.group_size, nats, targets, &watched, &mut out).await?
            } else {
                let logged_in = load::log_in(&cfg, targets).await?;
                let results = load::run(&cfg, targets, logged_in, &watched, &mut out).await?;
                (cfg, results)
            };
            let after = match before {
                Some(_) => {
                    let (waited, settled) = watched.settle(5.0, Duration::from_secs(60)).await;
                    if !settled {
                        println!("baseline (after): the cluster was still busy after {waited:.0?}");
                    }
                    measure_baseline(args, &nats, "after", &watched, &mut out).await?
                }
                None => None,
            };
            let bases: Vec<baseline::Baseline> = before.into_iter().chain(after).collect();
            summarize(&cfg, &results, &bases, &mut out);
        }
        Scenario::LoginStorm => {
            let client = connection::connect(&nats, "mrc bench")
                .await
                .ok()
                .map(|c| c.client);
            if client.is_none() {
                println!("login-storm: NATS not reachable: the directory is not checked");
            }
            let subjects = nats.subjects()?;
            let cfg = storm::StormConfig {
                users: args.storm_users,
                wave: cap,
                concurrency: args.connect_concurrency,
                sources,
                prefix: run_id.clone(),
            };
            if cap < args.storm_users {
                println!("login-storm: at most {cap} connections at once (open-files limits)");
            }
            let nats = client.as_ref().map(|c| (c, &subjects));
            storm::login_storm(&cfg, targets, &watched, nats, &mut out).await?;
            if let Some((client, subjects)) = nats {
                storm::directory_storm(
                    args.storm_users,
                    client,
                    subjects,
                    &watched,
                    &run_id,
                    &mut out,
                )
                .await?;
            }
        }
        Scenario::Inbox => {
            if args.inbox_users > cap {
                println!("inbox: at most {cap} offline users (open-files limits)");
            }
            let cfg = inbox::Config {
                users: args.inbox_users.min(cap),
                per_user: args.inbox_per_user,
                in_flight: args.inbox_in_flight,
                payload: args.payload,
                baseline: Duration::from_secs_f64(args.baseline_secs),
                connect_concurrency: args.connect_concurrency,
                sources,
                prefix: run_id.clone(),
                load: cfg,
            };
            inbox::run(&cfg, &nats, targets, &watched, &mut out).await?;
        }
        Scenario::Idle => {
            let mut levels: Vec<usize> = args.idle_users.iter().map(|&n| n.min(cap)).collect();
            levels.sort_unstable();
            levels.dedup();
            if args.idle_users.iter().any(|&n| n > cap) {
                println!(
                    "idle: capped at {cap} connections: the open-files limit (RLIMIT_NOFILE) of the bench or gateway is {}",
                    cap as u64 + 512
                );
            }
            let door = match args.door {
                IdleDoor::Ws => idle::Door::Ws(&targets[0]),
                IdleDoor::Tcp => match args.tcp_gateways.first() {
                    Some(addr) => idle::Door::Tcp(*addr),
                    None => anyhow::bail!("--door tcp needs --tcp-gateways"),
                },
            };
            idle::idle(
                &levels,
                door,
                &watched,
                args.connect_concurrency,
                &sources,
                &run_id,
                &mut out,
            )
            .await?;
        }
    }
    Ok(())
}

use mrc::connection;

/// The raw NATS baselines (`--baseline-secs`, none when 0), measured `when` ("before" or
/// "after" the load steps).
async fn measure_baseline(
    args: &Args,
    nats: &config::Nats,
    when: &str,
    watched: &procs::Watched,
    out: &mut output::Output,
) -> anyhow::Result<Option<baseline::Baseline>> {
    if args.baseline_secs <= 0.0 {
        return Ok(None);
    }
    let duration = Duration::from_secs_f64(args.baseline_secs);
    let (payload, in_flight) = (args.payload, args.baseline_in_flight);
    let base = baseline::run(nats, payload, in_flight, duration, when, watched, out).await?;
    Ok(Some(base))
}

/// The headline figures: saturation rate and its ratio to the NATS baselines, against
/// their mean and (when there are two) against each, so the machine's drift during the
/// run shows.
fn summarize(
    cfg: &load::Config,
    results: &[load::StepResult],
    bases: &[baseline::Baseline],
    out: &mut output::Output,
) {
    let Some(best) = results
        .iter()
        .max_by(|a, b| a.delivered_per_sec.total_cmp(&b.delivered_per_sec))
    else {
        return;
    };
    let saturated = results.iter().any(|r| r.saturated(cfg.fanout));
    let messages_per_sec = best.delivered_per_sec / cfg.fanout as f64;
    let mut line = format!(
        "{}: {} {} deliveries ({} messages)",
        cfg.scenario,
        if saturated {
            "saturates at"
        } else {
            "kept up with every step, best"
        },
        stats::Rate(best.delivered_per_sec),
        stats::Rate(messages_per_sec)
    );
    let mean = |f: fn(&baseline::Baseline) -> f64| {
        (!bases.is_empty()).then(|| bases.iter().map(f).sum::<f64>() / bases.len() as f64)
    };
    let request_reply = mean(|b| b.request_reply);
    let pub_sub = mean(|b| b.pub_sub);
    let ratio = request_reply.map(|rr| best.delivered_per_sec / rr);
    let each: Vec<f64> = bases
        .iter()
        .map(|b| best.delivered_per_sec / b.request_reply)
        .collect();
    if let (Some(rr), Some(ps), Some(r)) = (request_reply, pub_sub, ratio) {
        let measured = match bases {
            [before, after] => format!(
                "mean of {} before and {} after the steps: {:.2} x and {:.2} x",
                stats::Rate(before.request_reply),
                stats::Rate(after.request_reply),
                each[0],
                each[1]
            ),
            _ => stats::Rate(rr).to_string(),
        };
        line.push_str(&format!(
            " = {r:.2} x NATS request-reply ({measured}), {:.3} x NATS pub-sub ({})",
            best.delivered_per_sec / ps,
            stats::Rate(ps)
        ));
    }
    println!("{line}");
    let cpu: Vec<(u64, f64)> = results
        .iter()
        .filter_map(|r| Some((r.offered, r.cluster_us()?)))
        .collect();
    let described: Vec<String> = cpu
        .iter()
        .map(|(offered, us)| format!("{} {us:.0}", stats::Rate(*offered as f64)))
        .collect();
    println!(
        "{}: cluster CPU µs per delivery (gateways, centers, nats-server) at each offered rate: {}",
        cfg.scenario,
        described.join(", ")
    );
    out.record(
        "summary",
        cfg.scenario,
        serde_json::json!({
            "saturated": saturated,
            "best_delivered_per_s": best.delivered_per_sec,
            "best_offered": best.offered,
            "ratio_request_reply": ratio,
            "ratio_request_reply_each": each,
            "ratio_pub_sub": pub_sub.map(|ps| best.delivered_per_sec / ps),
            "request_reply_per_s": request_reply,
            "pub_sub_per_s": pub_sub,
            "cluster_cpu_us_per_delivery": cpu
                .iter()
                .map(|(offered, us)| serde_json::json!({"offered": offered, "us": us}))
                .collect::<Vec<_>>(),
        }),
    );
}
