//! The drain phase of `inbox`: every offline user logs in at once (at most
//! `--connect-concurrency` handshakes in flight) and reads its inbox as its gateway
//! pushes it, acknowledging as a real client does ([`Acks`]), until every message
//! reported `stored` for it has arrived and its last ack has been answered.
//!
//! Each receiver checks, by message id, that every message stored for it arrives exactly
//! once and in `seq` order; a message it was not sent, or that was not reported stored,
//! counts as unexpected. A receiver that gets nothing for [`STALL`] while messages are
//! missing is a stall, printed with what it got: the gateway's window (64 pushes, then
//! wait for an ack) makes a lost push or a lost ack answer look exactly like that.
//! Connections stay open until every receiver is done, so logouts do not overlap the
//! drains still running. Then every receiver's inbox is read as a backend would
//! (`mrc.inbox.fetch`): what the acks removed must be gone.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use mrc::connection::Nats;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::ack::Acks;
use super::conn::{self, Frame, Target, Ws};
use super::inbox::{self, message_id, receiver_id};
use super::output::{progress, Output};
use super::procs::{self, Watched};
use super::stats::{self, Micros, Percentiles, Rate};
use super::storm;
use mrc::connection;
use mrc::protocol::inbox::{FetchRequest, MAX_FETCH};
use mrc::protocol::nats::encode;
use mrc::subject::{Subjects, INBOX_FETCH};

/// A receiver still missing messages that gets nothing for this long has stalled.
pub const STALL: Duration = Duration::from_secs(10);
/// The whole drain phase ends after this long, done or not.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Receivers that did not finish, printed with what they got.
const SHOW_UNFINISHED: usize = 5;

/// Which messages each receiver must get: those the store phase reported `stored`.
pub struct Expect {
    prefix: String,
    users: usize,
    per_user: usize,
    /// Per message number.
    stored: Vec<bool>,
    /// Per user.
    count: Vec<u64>,
}

impl Expect {
    pub fn new(cfg: &inbox::Config, stored: &[u64]) -> Self {
        let mut expect = Expect {
            prefix: cfg.prefix.clone(),
            users: cfg.users,
            per_user: cfg.per_user,
            stored: vec![false; cfg.users * cfg.per_user],
            count: vec![0; cfg.users],
        };
        for &n in stored {
            if let Some(slot) = expect.stored.get_mut(n as usize).filter(|s| !**s) {
                *slot = true;
                expect.count[n as usize % cfg.users] += 1;
            }
        }
        expect
    }

    /// Where message `n` goes in user `u`'s list, when it is one stored for `u`.
    fn slot(&self, u: usize, n: u64) -> Option<usize> {
        let n = usize::try_from(n).ok()?;
        (n % self.users == u && *self.stored.get(n)?).then_some(n / self.users)
    }
}

/// What one receiver saw.
#[derive(Debug, Default)]
struct Receiver {
    /// From the first login: when its `welcome` came, and when its last ack was answered.
    logged_in: Option<Duration>,
    done: Option<Duration>,
    want: u64,
    got: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    removed: u64,
    acks: u64,
    errors: BTreeMap<String, u64>,
    /// Why it stopped before it was done.
    ended: Option<String>,
}

/// One receiver's session: what it has and what it acknowledged.
struct Session<'a> {
    expect: &'a Expect,
    u: usize,
    seen: Vec<bool>,
    last_seq: u64,
    acks: Acks,
    r: Receiver,
    /// Messages received by every receiver, for the progress line.
    received: &'a AtomicU64,
}

impl Session<'_> {
    /// Takes one frame; an `ack` to send, when one is due.
    fn on_frame(&mut self, text: &str) -> Option<String> {
        match conn::classify(text) {
            Frame::Msg { seq: n, .. } => {
                let Some(seq) = conn::inbox_seq(text) else {
                    self.r.unexpected += 1;
                    return None;
                };
                let named =
                    conn::frame_id(text) == Some(message_id(&self.expect.prefix, n).as_str());
                match self.expect.slot(self.u, n).filter(|_| named) {
                    None => self.r.unexpected += 1,
                    Some(k) if self.seen[k] => self.r.duplicates += 1,
                    Some(k) => {
                        self.seen[k] = true;
                        self.r.got += 1;
                        self.received.fetch_add(1, Relaxed);
                        if seq <= self.last_seq {
                            self.r.out_of_order += 1;
                        }
                    }
                }
                self.last_seq = self.last_seq.max(seq);
                self.acks.pushed(seq)
            }
            Frame::ForeignMsg => {
                self.r.unexpected += 1;
                conn::inbox_seq(text).and_then(|seq| self.acks.pushed(seq))
            }
            Frame::Acked { acked, removed } => {
                self.acks.answered(acked);
                self.r.removed += removed;
                None
            }
            Frame::Error(code) => {
                // The receiver sends nothing but acks: this answers one.
                self.acks.refused();
                *self.r.errors.entry(code).or_default() += 1;
                None
            }
            _ => None,
        }
    }

    fn done(&self) -> bool {
        self.r.got >= self.r.want && self.acks.settled()
    }
}

/// Logs user `u` in (one of `logins` at a time) and drains its inbox; its figures and
/// its connection, left open.
async fn receive(
    mut session: Session<'_>,
    target: &Target,
    source: Option<IpAddr>,
    start: Instant,
    logins: &Semaphore,
) -> (Receiver, Option<Ws>) {
    let user = receiver_id(&session.expect.prefix, session.u);
    let login = {
        let _permit = logins
            .acquire()
            .await
            .expect("the semaphore is never closed");
        conn::login(target, source, &user, LOGIN_TIMEOUT).await
    };
    let mut ws = match login {
        Ok(ws) => ws,
        Err(e) => {
            session.r.ended = Some(format!("login failed: {e:#}"));
            return (session.r, None);
        }
    };
    session.r.logged_in = Some(start.elapsed());
    let deadline = start + DRAIN_LIMIT;
    let ended = loop {
        if session.done() {
            session.r.done = Some(start.elapsed());
            break None;
        }
        let next = match ws.next().now_or_never() {
            Some(next) => next,
            None => {
                // The burst ended: ack what came, then wait for more.
                if let Some(frame) = session.acks.flush() {
                    match ws.send(Message::text(frame)).await {
                        Ok(()) => continue,
                        Err(_) => break Some("closed"),
                    }
                }
                let limit = (Instant::now() + STALL).min(deadline);
                match tokio::time::timeout_at(limit.into(), ws.next()).await {
                    Ok(next) => next,
                    Err(_) => break Some("stalled"),
                }
            }
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break Some("closed"),
        };
        if let Some(frame) = session.on_frame(text.as_str()) {
            if ws.send(Message::text(frame)).await.is_err() {
                break Some("closed");
            }
        }
    };
    session.r.ended = ended.map(String::from);
    session.r.acks = session.acks.sent;
    (session.r, Some(ws))
}

/// What the drain phase measured.
pub struct Drained {
    /// Stored messages received and acknowledged per second, from the first login to the
    /// last ack answered.
    pub per_sec: f64,
    users: usize,
    complete: usize,
    expected: u64,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    /// Stored messages still in the inboxes afterwards (`None`: not checked).
    left: Option<u64>,
}

impl Drained {
    /// Every stored message arrived once, in order, every receiver finished, and no
    /// inbox kept anything.
    pub fn exact(&self) -> bool {
        self.complete == self.users
            && self.received == self.expected
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.left.is_none_or(|n| n == 0)
    }
}

/// The drain phase: every offline user logs in at once and drains its inbox.
pub async fn run(
    cfg: &inbox::Config,
    targets: &[Target],
    expect: Arc<Expect>,
    nats: Option<(&Nats, &Subjects)>,
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<Drained> {
    let logins = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let received = Arc::new(AtomicU64::new(0));
    let before = watched.sample();
    let start = Instant::now();
    let tasks = (0..cfg.users).map(|u| {
        let target = targets[u % targets.len()].clone();
        let source = (!cfg.sources.is_empty()).then(|| cfg.sources[u % cfg.sources.len()]);
        let (expect, logins, received) = (expect.clone(), logins.clone(), received.clone());
        tokio::spawn(async move {
            let session = Session {
                expect: &expect,
                u,
                seen: vec![false; expect.per_user],
                last_seq: 0,
                acks: Acks::default(),
                r: Receiver {
                    want: expect.count[u],
                    ..Receiver::default()
                },
                received: &received,
            };
            receive(session, &target, source, start, &logins).await
        })
    });
    let mut all = futures::future::join_all(tasks);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let joined = loop {
        tokio::select! {
            joined = &mut all => break joined,
            _ = tick.tick() => progress(&format!(
                "drain: {} of {} stored messages received ({:.0}s)",
                received.load(Relaxed),
                expect.count.iter().sum::<u64>(),
                start.elapsed().as_secs_f64()
            )),
        }
    };
    let usage = watched.usage(&before, &watched.sample());
    let mut receivers = Vec::with_capacity(joined.len());
    let mut conns = Vec::new();
    for task in joined {
        let (r, ws) = task?;
        receivers.push(r);
        conns.extend(ws);
    }
    storm::close_all(conns).await;
    let left = left_over(nats, cfg).await;
    Ok(report(cfg, &receivers, left, &usage, out))
}

/// Stored messages still in the receivers' inboxes (up to [`MAX_FETCH`] each), read as
/// a backend reads them; `None` when NATS is not reachable or a read failed.
async fn left_over(nats: Option<(&Nats, &Subjects)>, cfg: &inbox::Config) -> Option<u64> {
    let (client, subjects) = nats?;
    let subject = subjects.inbox(INBOX_FETCH);
    let reads = futures::stream::iter(0..cfg.users)
        .map(|u| {
            let request = encode(&FetchRequest {
                user: receiver_id(&cfg.prefix, u),
                since: 0,
                limit: Some(MAX_FETCH),
            });
            let subject = subject.clone();
            async move {
                let timeout = Duration::from_secs(5);
                let reply: serde_json::Value =
                    connection::request(client, subject, request, timeout)
                        .await
                        .ok()?;
                Some(reply["messages"].as_array()?.len() as u64)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    reads.into_iter().sum()
}

/// Sums the receivers up, prints the figures and records them.
fn report(
    cfg: &inbox::Config,
    receivers: &[Receiver],
    left: Option<u64>,
    usage: &[procs::Usage],
    out: &mut Output,
) -> Drained {
    let sum = |f: fn(&Receiver) -> u64| receivers.iter().map(f).sum::<u64>();
    let latest = |f: fn(&Receiver) -> Option<Duration>| receivers.iter().filter_map(f).max();
    let (all_in, last_ack) = (latest(|r| r.logged_in), latest(|r| r.done));
    let (per_user, errors, ended) = tallies(receivers);
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    let d = Drained {
        per_sec: sum(|r| r.got) as f64 / secs(last_ack),
        users: receivers.len(),
        complete: receivers.iter().filter(|r| r.done.is_some()).count(),
        expected: sum(|r| r.want),
        received: sum(|r| r.got),
        duplicates: sum(|r| r.duplicates),
        out_of_order: sum(|r| r.out_of_order),
        unexpected: sum(|r| r.unexpected),
        left,
    };
    let per_sec = d.per_sec;
    let (removed, acks) = (sum(|r| r.removed), sum(|r| r.acks));
    let failed = receivers.iter().filter(|r| r.logged_in.is_none()).count();
    println!(
        "inbox: drain: {} users logged in at once ({} handshakes at a time): all in {:.2}s after the first ({failed} failed); {} of {} stored messages arrived and were acked by {:.2}s = {}; dup {}, out of order {}, unexpected {}; {acks} acks removed {removed}, {} left in the inboxes; per user, welcome to last ack: p50 {}, p99 {}{}",
        receivers.len(),
        cfg.connect_concurrency,
        secs(all_in),
        d.received,
        d.expected,
        secs(last_ack),
        Rate(per_sec),
        d.duplicates,
        d.out_of_order,
        d.unexpected,
        left.map_or("(not checked)".into(), |n| n.to_string()),
        Micros(per_user.p50),
        Micros(per_user.p99),
        if d.exact() { ": every one exactly once, in order" } else { "" },
    );
    show_unfinished(receivers, &ended, &errors);
    let per_message = procs::per_message(usage, per_sec);
    println!("  {:>9} {}", "cpu/rss", procs::describe(usage));
    println!(
        "  {:>9} {} (logins included)",
        "cpu µs/msg",
        procs::describe_per_message(&per_message)
    );
    out.record(
        "inbox_drain",
        "inbox",
        json!({
            "users": receivers.len(),
            "connect_concurrency": cfg.connect_concurrency,
            "logins_failed": failed,
            "all_logged_in_s": all_in.map(|d| d.as_secs_f64()),
            "last_ack_s": last_ack.map(|d| d.as_secs_f64()),
            "complete": d.complete,
            "expected": d.expected,
            "received": d.received,
            "missing": d.expected.saturating_sub(d.received),
            "duplicates": d.duplicates,
            "out_of_order": d.out_of_order,
            "unexpected": d.unexpected,
            "acks_sent": acks,
            "removed": removed,
            "left_in_inboxes": left,
            "exact": d.exact(),
            "drained_per_s": per_sec,
            "per_user": per_user.to_json(),
            "ended": ended,
            "errors": errors,
            "procs": procs::to_json(usage),
            "cpu_us_per_msg": procs::per_message_json(&per_message),
        }),
    );
    d
}

/// Per receiver, the time from `welcome` to its last ack answered; the error codes its
/// acks got; why receivers stopped early (`login failed`, `stalled`, `closed`).
fn tallies(receivers: &[Receiver]) -> (Percentiles, BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut per_user = stats::histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    for r in receivers {
        if let (Some(a), Some(b)) = (r.logged_in, r.done) {
            per_user.saturating_record(b.saturating_sub(a).as_micros().max(1) as u64);
        }
        for (code, n) in &r.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        if let Some(why) = &r.ended {
            let kind = why.split(':').next().unwrap_or(why);
            *ended.entry(kind.to_string()).or_default() += 1;
        }
    }
    (Percentiles::of(&per_user), errors, ended)
}

/// Why receivers stopped early, and the first few of them with what they got.
fn show_unfinished(
    receivers: &[Receiver],
    ended: &BTreeMap<String, u64>,
    errors: &BTreeMap<String, u64>,
) {
    if ended.is_empty() && errors.is_empty() {
        return;
    }
    println!("  {:>9} ended early: {ended:?}; errors: {errors:?}", "!");
    let unfinished = receivers
        .iter()
        .enumerate()
        .filter(|(_, r)| r.done.is_none());
    for (u, r) in unfinished.take(SHOW_UNFINISHED) {
        println!(
            "  {:>9} receiver {u}: {} of {} after {:?}, {} acks sent, {} removed: {}",
            "!",
            r.got,
            r.want,
            r.logged_in,
            r.acks,
            r.removed,
            r.ended.as_deref().unwrap_or("?")
        );
    }
}
