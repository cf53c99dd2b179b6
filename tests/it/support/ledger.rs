//! The ledger of a fault test: every message sent (id, sender, receiver, when), checked
//! against the report its sender got and what actually arrived at its receiver.
//!
//! What a report allows:
//! - `delivered`: the message arrived. Never lost, in any phase.
//! - `unavailable`: it may or may not have arrived.
//! - `offline`: it did not arrive, and after the directory converged no receiver that was
//!   connected the whole time is reported offline.
//!
//! A sender's gateway tries a receiver at most twice (a timed-out or stale attempt is
//! retried once with a fresh route), so at most two copies arrive, whatever the report
//! says: a first attempt that timed out can still arrive (from a paused socket, or just
//! late on a busy machine) while the retry is answered. Clients drop copies by id; the
//! ledger counts them (`dup`) and fails on a third.
//!
//! An `offline` report with an arrival (`stray`) fails the ledger in every phase: a
//! first attempt that got no answer makes the report `unavailable`, never `offline`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mrc::protocol::code::Outcome;

use super::peer::Peer;

/// One message sent: `from` and `to` index [`Ledger::peers`].
struct Entry {
    id: String,
    from: usize,
    to: usize,
    sent: Instant,
}

pub struct Ledger {
    /// Clients connected for the whole test; traffic runs between them.
    pub peers: Vec<Peer>,
    entries: Mutex<Vec<Entry>>,
    /// Fault windows: a fault's start until the directory converged (`None`: still open).
    windows: Mutex<Vec<(Instant, Option<Instant>)>>,
}

/// The figures of a settled ledger (the `chaos:` line).
#[derive(Debug, Default)]
pub struct Figures {
    pub sent: usize,
    pub delivered: usize,
    pub offline: usize,
    pub unavailable: usize,
    /// Sends refused with an error frame (e.g. `rate_limited`): no report, no outcome.
    pub refused: usize,
    /// Reported delivered, never arrived.
    pub lost: usize,
    /// Arrived twice (a timed-out first attempt and its retry).
    pub dup: usize,
    /// Reported offline, yet arrived (inside a fault window).
    pub stray: usize,
    /// Reported offline although sent after the directory converged.
    pub offline_after: usize,
    /// What broke the rules above, one line per message.
    pub violations: Vec<String>,
}

impl Ledger {
    pub fn new(peers: Vec<Peer>) -> Arc<Ledger> {
        Arc::new(Ledger {
            peers,
            entries: Mutex::default(),
            windows: Mutex::default(),
        })
    }

    /// Sends message `id` from peer `from` to peer `to` and records it.
    pub async fn send(&self, from: usize, to: usize, id: String) {
        let sent = Instant::now();
        self.peers[from].send(&self.peers[to].user, &id).await;
        let entry = Entry { id, from, to, sent };
        self.entries.lock().expect("ledger lock").push(entry);
    }

    /// A fault begins now.
    pub fn fault(&self) {
        self.windows
            .lock()
            .expect("ledger lock")
            .push((Instant::now(), None));
    }

    /// The directory converged now: the open fault window closes.
    pub fn converged(&self) {
        let mut windows = self.windows.lock().expect("ledger lock");
        if let Some((_, end @ None)) = windows.last_mut() {
            *end = Some(Instant::now());
        }
    }

    /// Messages sent so far, and how many of them have their report.
    pub fn progress(&self) -> (usize, usize) {
        let entries = self.entries.lock().expect("ledger lock");
        let reported = entries.iter().filter(|e| self.outcome(e).is_some()).count();
        (entries.len(), reported)
    }

    /// Messages sent after `at`.
    pub fn sent_since(&self, at: Instant) -> usize {
        let entries = self.entries.lock().expect("ledger lock");
        entries.iter().filter(|e| e.sent >= at).count()
    }

    /// Waits (bounded) until every message has its report and every delivered one has
    /// arrived, then tallies.
    pub async fn settle(&self, timeout: Duration) -> Figures {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !self.settled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.tally()
    }

    fn settled(&self) -> bool {
        let entries = self.entries.lock().expect("ledger lock");
        entries.iter().all(|e| match self.outcome(e) {
            Some(Ok(Outcome::Delivered)) => self.arrivals(e) > 0,
            Some(_) => true,
            None => false,
        })
    }

    /// The report's outcome for the entry's receiver, `Err` when the send was refused.
    fn outcome(&self, e: &Entry) -> Option<Result<Outcome, String>> {
        let receiver = &self.peers[e.to].user;
        self.peers[e.from].inbox(|inbox| {
            if let Some(code) = inbox.refused.get(&e.id) {
                return Some(Err(code.clone()));
            }
            let (status, _) = inbox.reports.get(&e.id)?;
            Some(Ok(*status.get(receiver)?))
        })
    }

    fn arrivals(&self, e: &Entry) -> u32 {
        self.peers[e.to].inbox(|inbox| inbox.arrivals.get(&e.id).copied().unwrap_or(0))
    }

    /// When the last fault window closed.
    fn calm_since(&self) -> Option<Instant> {
        let windows = self.windows.lock().expect("ledger lock");
        windows.last().and_then(|(_, end)| *end)
    }

    fn tally(&self) -> Figures {
        let entries = self.entries.lock().expect("ledger lock");
        let calm_since = self.calm_since();
        let mut f = Figures {
            sent: entries.len(),
            ..Figures::default()
        };
        for e in entries.iter() {
            let arrivals = self.arrivals(e);
            let after = calm_since.is_some_and(|at| e.sent >= at);
            let what = format!(
                "{} {} -> {} (arrived {arrivals}x)",
                e.id, self.peers[e.from].user, self.peers[e.to].user
            );
            let mut violation = |rule: &str| f.violations.push(format!("{what}: {rule}"));
            if arrivals > 2 {
                violation("arrived more than twice (one copy per attempt at most)");
            }
            match self.outcome(e) {
                None => violation("no report"),
                Some(Err(_)) => f.refused += 1,
                Some(Ok(Outcome::Delivered)) => {
                    f.delivered += 1;
                    if arrivals == 0 {
                        f.lost += 1;
                        violation("reported delivered, never arrived");
                    }
                }
                Some(Ok(Outcome::Offline)) => {
                    f.offline += 1;
                    if after {
                        f.offline_after += 1;
                        violation("reported offline after the directory converged");
                    }
                    if arrivals > 0 {
                        f.stray += 1;
                        violation("reported offline, yet arrived");
                    }
                }
                Some(Ok(Outcome::Unavailable)) => f.unavailable += 1,
                Some(Ok(other)) => violation(&format!("unexpected outcome {other:?}")),
            }
            if arrivals > 1 {
                f.dup += 1;
            }
        }
        f
    }
}

impl Figures {
    /// Panics with every violation, if any.
    pub fn assert_sound(&self, scenario: &str) {
        assert!(
            self.violations.is_empty(),
            "{scenario}: {} of {} messages break the ledger ({self:?}):\n{}",
            self.violations.len(),
            self.sent,
            self.violations.join("\n")
        );
    }

    /// The one `chaos:` line `scripts/chaos.sh` collects.
    pub fn print(&self, scenario: &str, converged: Duration) {
        println!(
            "chaos: scenario={scenario} converged_ms={} sent={} delivered={} offline={} \
             unavailable={} refused={} lost={} dup={} stray={}",
            converged.as_millis(),
            self.sent,
            self.delivered,
            self.offline,
            self.unavailable,
            self.refused,
            self.lost,
            self.dup,
            self.stray
        );
    }
}

/// Messages between pairs of peers, round robin, one every `every`, until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// `pairs` are (sender, receiver) indexes into the ledger's peers; ids are
    /// `<prefix><n>`.
    pub fn start(ledger: Arc<Ledger>, pairs: Vec<(usize, usize)>, every: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            for n in 0.. {
                tick.tick().await;
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let (from, to) = pairs[n % pairs.len()];
                ledger.send(from, to, format!("m{n}")).await;
            }
        });
        Traffic { stop, task }
    }

    /// Stops sending; returns once the last send is written.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the traffic task does not panic");
    }
}

/// `left[i]` and `right[i]` send to each other, both ways.
pub fn both_ways(left: &[usize], right: &[usize]) -> Vec<(usize, usize)> {
    left.iter()
        .zip(right)
        .flat_map(|(&l, &r)| [(l, r), (r, l)])
        .collect()
}
