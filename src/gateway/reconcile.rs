//! Reconciliation: makes the directory's view of this gateway equal to the sessions it
//! holds, whatever fault made them drift (an eviction while paused, a write lost to a
//! NATS failover, an unregister no center answered). The gateway is the source of truth
//! for its own sessions.
//!
//! It runs when asked: after a NATS reconnect, when a center announces it evicted this
//! gateway, or when a center's comparison of heartbeat digests with its mirror kept
//! failing (`mrc.gw.<me>.reconcile`). Requests coalesce; one pass runs at a time and is
//! retried with backoff until it completes.
//!
//! One pass compares per-bucket digests (one request), then for the buckets that differ
//! reads the directory's sessions and repairs the difference:
//! - a session the directory lists but this gateway does not hold is a ghost: it is
//!   unregistered (fenced by session id, and a session id never comes back);
//! - a session held here whose login was answered but that the directory lost is
//!   re-asserted (never over a newer login: if it lost, the session is closed).
//!
//! Sessions still logging in are held (they are inserted before they register) but not
//! re-asserted, so a pass never races a login's own registration.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;

use super::registrar::Registrar;
use super::session::{Handle, Sessions};
use crate::connection::RequestFailure;
use crate::ident::{SessionId, UserId};
use crate::protocol::digest::{Buckets, BUCKETS};
use crate::protocol::nats::HeldSession;
use crate::retry::{self, Attempt};

/// Most sessions one `mrc.dir.sessions` reply should list (~60 bytes each).
const SESSIONS_PER_READ: u64 = 2_000;
/// Repairs sent at once.
const REPAIR_CONCURRENCY: usize = 64;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repaired {
    /// Buckets whose digests differed.
    pub(crate) buckets: usize,
    /// Ghost sessions unregistered.
    pub(crate) ghosts: usize,
    /// Lost sessions registered again.
    pub(crate) reasserted: usize,
    /// Sessions closed because a newer login had replaced them.
    pub(crate) kicked: usize,
}

/// What reconciliation needs of the gateway: the sessions it holds and its line to the
/// centers.
#[derive(Clone)]
pub(crate) struct Reconciler {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) registrar: Arc<Registrar>,
    pub(crate) shutdown: CancellationToken,
    /// How long calls wait after a pass that found differing buckets but nothing to
    /// repair (logins in flight during a storm): calls then are most likely churn too.
    pub(crate) quiet: Duration,
}

/// Runs a pass each time `wanted` is notified, until shutdown.
pub(crate) async fn run(gw: Reconciler, wanted: Arc<Notify>) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = gw.shutdown.cancelled() => return Ok(()),
            () = wanted.notified() => {}
        }
        // A new call for reconciliation while a pass backs off (a center is back and
        // nudges) retries at once.
        let what = "reconciling the directory";
        let done = retry::until_done_or_woken(what, &gw.shutdown, Some(&wanted), || async {
            match pass(&gw).await {
                Ok(repaired) => Attempt::Done(repaired),
                Err(e) => Attempt::Failed(e),
            }
        })
        .await;
        let Some(r) = done else { continue };
        if r.ghosts + r.reasserted + r.kicked > 0 {
            tracing::info!(
                buckets = r.buckets,
                ghosts = r.ghosts,
                reasserted = r.reasserted,
                kicked = r.kicked,
                "directory reconciled"
            );
        } else if r.buckets > 0 {
            tracing::debug!(
                buckets = r.buckets,
                "only logins or logouts in flight differed"
            );
            tokio::select! {
                () = gw.shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(gw.quiet) => {}
            }
        }
    }
}

/// One comparison and repair of every bucket that differs.
async fn pass(gw: &Reconciler) -> Result<Repaired, RequestFailure> {
    let theirs = gw.registrar.digests().await?;
    let ours = gw.sessions.buckets();
    let differing: Vec<usize> = (0..BUCKETS)
        .filter(|&b| theirs.get(b) != Some(&ours[b]))
        .collect();
    let mut total = Repaired {
        buckets: differing.len(),
        ..Repaired::default()
    };
    for chunk in chunks(&differing, &theirs) {
        let r = repair(gw, chunk).await?;
        total.ghosts += r.ghosts;
        total.reasserted += r.reasserted;
        total.kicked += r.kicked;
    }
    Ok(total)
}

/// Splits `buckets` into reads of about [`SESSIONS_PER_READ`] sessions each, by the
/// directory's counts.
pub fn chunks(buckets: &[usize], theirs: &Buckets) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    let mut listed = 0;
    for &b in buckets {
        let n = theirs.get(b).map_or(0, |d| d.sessions);
        if listed > 0 && listed + n > SESSIONS_PER_READ {
            out.push(Vec::new());
            listed = 0;
        }
        listed += n;
        out.last_mut().expect("never empty").push(b);
    }
    out.retain(|chunk| !chunk.is_empty());
    out
}

/// Reads the directory's sessions in `buckets`, then repairs what differs from the
/// sessions held here, read after it (so a ghost is surely not a login in progress).
async fn repair(gw: &Reconciler, buckets: Vec<usize>) -> Result<Repaired, RequestFailure> {
    let wanted: HashSet<usize> = buckets.iter().copied().collect();
    let listed = gw.registrar.sessions(buckets).await?;
    let held = gw.sessions.in_buckets(|b| wanted.contains(&b));
    let held_ids: HashSet<&str> = held.iter().map(|(_, h)| h.id.as_str()).collect();
    let listed_ids: HashSet<&str> = listed.iter().map(|s| s.session.as_str()).collect();

    let ghosts: Vec<&HeldSession> = listed
        .iter()
        .filter(|s| !held_ids.contains(s.session.as_str()))
        .collect();
    let ghost_count = ghosts.len();
    // The futures are made before they are streamed: a closure inside the stream would
    // hide their lifetimes from the `Send` check of the spawned task.
    let unregisters: Vec<_> = ghosts
        .into_iter()
        .map(|g| unregister_ghost(gw, g))
        .collect();
    futures::stream::iter(unregisters)
        .buffer_unordered(REPAIR_CONCURRENCY)
        .try_collect::<()>()
        .await?;

    let reasserts: Vec<_> = held
        .iter()
        .filter(|(_, h)| h.is_registered() && !listed_ids.contains(h.id.as_str()))
        .map(|(user, handle)| reassert(gw, user, handle))
        .collect();
    let outcomes: Vec<Reasserted> = futures::stream::iter(reasserts)
        .buffer_unordered(REPAIR_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(Repaired {
        buckets: 0,
        ghosts: ghost_count,
        reasserted: outcomes.iter().filter(|o| **o == Reasserted::Kept).count(),
        kicked: outcomes
            .iter()
            .filter(|o| **o == Reasserted::Kicked)
            .count(),
    })
}

async fn unregister_ghost(gw: &Reconciler, ghost: &HeldSession) -> Result<(), RequestFailure> {
    // The directory listed it, so its ids were valid when registered; skip any that are not.
    let (Ok(user), Ok(session)) = (UserId::new(&ghost.user), SessionId::new(&ghost.session)) else {
        tracing::warn!(
            user = ghost.user,
            session = ghost.session,
            "invalid ids listed"
        );
        return Ok(());
    };
    gw.registrar.unregister(&user, &session).await.map(drop)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reasserted {
    Kept,
    Kicked,
}

/// Registers a held session again; one that lost to a newer login meanwhile is closed.
/// A session that ended while this ran is taken out again (its own unregister may have
/// been applied first).
async fn reassert(
    gw: &Reconciler,
    user: &UserId,
    handle: &Handle,
) -> Result<Reasserted, RequestFailure> {
    let device = handle.device.as_deref();
    let reply = gw
        .registrar
        .register(user, &handle.id, device, true)
        .await?;
    if reply.kicked {
        gw.sessions.kick(user, std::slice::from_ref(&handle.id));
        return Ok(Reasserted::Kicked);
    }
    if !gw.sessions.holds(user, &handle.id) {
        gw.registrar.forget(user, &handle.id);
    }
    Ok(Reasserted::Kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::digest::{empty_buckets, Digest};

    #[test]
    fn reads_are_split_by_the_directorys_counts() {
        let mut theirs = empty_buckets();
        theirs[1] = Digest {
            sessions: 1_500,
            sum: 1,
        };
        theirs[2] = Digest {
            sessions: 1_500,
            sum: 2,
        };
        theirs[3] = Digest {
            sessions: 10,
            sum: 3,
        };
        assert_eq!(chunks(&[0, 1, 2, 3], &theirs), vec![vec![0, 1], vec![2, 3]]);
        assert!(chunks(&[], &theirs).is_empty());
        // A bucket bigger than one read still gets a read of its own.
        theirs[5].sessions = 50_000;
        assert_eq!(chunks(&[5, 3], &theirs), vec![vec![5], vec![3]]);
    }
}
