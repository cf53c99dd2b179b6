//! Directory convergence as a test sees it: the directory (asked through `mrc.dir.lookup`,
//! as a gateway asks) must hold exactly the sessions the gateways hold, i.e. each connected
//! client's session and nothing else for the users under test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mrc::protocol::nats::{encode, LookupReply, LookupRequest, PresenceReply, PresenceRequest};

use super::peer::Peer;

/// (gateway, session) pairs per user.
type Sessions = BTreeMap<String, BTreeSet<(String, String)>>;

/// What the directory must hold: every open peer's session, and nothing for `gone` users
/// (or for users whose peers all closed).
pub fn expected(peers: &[&Peer], gone: &[&str]) -> Sessions {
    let mut want: Sessions = gone
        .iter()
        .map(|u| (u.to_string(), BTreeSet::new()))
        .collect();
    for peer in peers {
        let sessions = want.entry(peer.user.clone()).or_default();
        if !peer.is_closed() {
            sessions.insert((peer.gateway.clone(), peer.session.clone()));
        }
    }
    want
}

/// `mrc.dir.lookup` with its own deadline; `None` when no center answered in time.
pub async fn try_lookup(nats: &async_nats::Client, users: &[String]) -> Option<LookupReply> {
    let request = LookupRequest {
        users: users.to_vec(),
    };
    let reply = nats.request("mrc.dir.lookup", encode(&request));
    let reply = tokio::time::timeout(Duration::from_secs(2), reply)
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// `Ok` when the directory holds exactly `want`, else what differs.
pub async fn compare(nats: &async_nats::Client, want: &Sessions) -> Result<(), String> {
    let users: Vec<String> = want.keys().cloned().collect();
    let Some(reply) = try_lookup(nats, &users).await else {
        return Err("no center answered the look-up".into());
    };
    let mut differences = Vec::new();
    for (user, sessions) in want {
        let held: BTreeSet<(String, String)> = reply
            .users
            .get(user)
            .into_iter()
            .flatten()
            .map(|l| (l.gateway.clone(), l.session.clone()))
            .collect();
        if &held != sessions {
            differences.push(format!("{user}: directory {held:?}, gateways {sessions:?}"));
        }
    }
    match differences.is_empty() {
        true => Ok(()),
        false => Err(differences.join("; ")),
    }
}

/// How long the directory must stay equal to the gateways' sessions to count as
/// converged: right after a fault heals it can look right for a moment before late
/// evictions (writes that timed out during the fault, retried) take sessions away again.
pub const HOLD: Duration = Duration::from_millis(2 * super::cluster::HEARTBEAT_TIMEOUT_MS);

/// Polls until the directory equals what `peers` hold (and nothing for `gone`) and stays
/// so for [`HOLD`]; returns how long after the call the final equality began. Panics with
/// the last difference after `timeout`.
pub async fn converge(
    nats: &async_nats::Client,
    peers: &[&Peer],
    gone: &[&str],
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let want = expected(peers, gone);
    let mut equal_since: Option<Instant> = None;
    loop {
        match compare(nats, &want).await {
            Ok(()) => {
                let since = *equal_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= HOLD {
                    return since - started;
                }
            }
            Err(difference) => {
                equal_since = None;
                assert!(
                    started.elapsed() < timeout,
                    "the directory did not converge within {timeout:?}: {difference}"
                );
            }
        }
        assert!(
            started.elapsed() < timeout + HOLD,
            "the directory kept changing for {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Panics unless the directory holds exactly what `peers` hold (and nothing for `gone`).
pub async fn assert_converged(nats: &async_nats::Client, peers: &[&Peer], gone: &[&str]) {
    if let Err(difference) = compare(nats, &expected(peers, gone)).await {
        panic!("the directory no longer equals the gateways' sessions: {difference}");
    }
}

/// Polls until none of `users` has a session in the directory (e.g. after an eviction).
pub async fn vanish(nats: &async_nats::Client, users: &[&str], timeout: Duration) {
    let want: Sessions = users
        .iter()
        .map(|u| (u.to_string(), BTreeSet::new()))
        .collect();
    let what = format!("{users:?} leave the directory");
    super::eventually(timeout, &what, || async { compare(nats, &want).await.ok() }).await;
}

/// Whether the centers' presence answer says `user` is online (`None`: no answer).
pub async fn online(nats: &async_nats::Client, user: &str) -> Option<bool> {
    let request = PresenceRequest {
        users: vec![user.to_string()],
        by: None,
    };
    let reply = nats.request("mrc.dir.presence", encode(&request));
    let reply = tokio::time::timeout(Duration::from_secs(2), reply)
        .await
        .ok()?
        .ok()?;
    let reply: PresenceReply = serde_json::from_slice(&reply.payload).ok()?;
    Some(reply.users.get(user)?.online)
}

/// The `server_name` of the node that leads stream `stream` (e.g. `KV_mrc_dir`).
pub async fn stream_leader(nats: &async_nats::Client, stream: &str) -> Option<String> {
    let subject = format!("$JS.API.STREAM.INFO.{stream}");
    let reply = nats.request(subject, "".into());
    let reply = tokio::time::timeout(Duration::from_secs(2), reply)
        .await
        .ok()?
        .ok()?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    Some(info["cluster"]["leader"].as_str()?.to_string())
}
