//! Faults that leave the directory wrong, and its convergence back to what the gateways
//! hold, by itself (DESIGN.md, delivery semantics 7; issue 12). Each test keeps a ledger of
//! the messages sent meanwhile (`support::ledger`), measures how long the directory took to
//! converge once the fault healed, and prints one `chaos:` line (`scripts/chaos.sh`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use std::time::{Duration, Instant};

use crate::support::cluster::{Broker, Cluster, HEARTBEAT_TIMEOUT_MS};
use crate::support::converge::{assert_converged, converge, online, stream_leader, vanish};
use crate::support::eventually;
use crate::support::ledger::{both_ways, Ledger, Traffic};
use crate::support::peer::Peer;
use crate::support::process::Process;

/// How long the directory may take to converge after a fault healed (generous: a busy
/// 2-core CI box; the mechanism needs a few heartbeats of 200 ms).
const CONVERGE: Duration = Duration::from_secs(20);
/// One message every this often, round robin over the pairs.
const EVERY: Duration = Duration::from_millis(20);
/// Messages sent after convergence before the ledger is settled.
const AFTER: usize = 100;
/// Logins in the storm a center dies in.
const STORM: usize = 120;
/// How long the ledger waits for late reports and arrivals.
const SETTLE: Duration = Duration::from_secs(15);

/// Logs `users` in on gateway `gateway`.
async fn peers_on(cluster: &Cluster, gateway: usize, users: &[&str]) -> Vec<Peer> {
    let mut peers = Vec::new();
    for user in users {
        peers.push(Peer::join(cluster.ws(gateway), user).await);
    }
    peers
}

/// Users `u0..n` on gateway 0 and `un..u2n` on gateway 1, and traffic between them, both
/// ways, once it flows.
async fn two_sides(cluster: &Cluster, n: usize) -> (Arc<Ledger>, Traffic) {
    let users: Vec<String> = (0..2 * n).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut peers = peers_on(cluster, 0, &names[..n]).await;
    peers.extend(peers_on(cluster, 1, &names[n..]).await);
    let ledger = Ledger::new(peers);
    let left: Vec<usize> = (0..n).collect();
    let right: Vec<usize> = (n..2 * n).collect();
    let traffic = Traffic::start(ledger.clone(), both_ways(&left, &right), EVERY);
    eventually(Duration::from_secs(10), "traffic flows", || async {
        (ledger.progress().1 >= 20).then_some(())
    })
    .await;
    (ledger, traffic)
}

/// Lets traffic run for [`AFTER`] more messages, stops it, settles the ledger, prints the
/// `chaos:` line and checks the ledger.
async fn finish(ledger: &Ledger, traffic: Traffic, scenario: &str, converged: Duration) {
    let since = Instant::now();
    eventually(
        Duration::from_secs(20),
        "traffic after convergence",
        || async { (ledger.sent_since(since) >= AFTER).then_some(()) },
    )
    .await;
    traffic.stop().await;
    let figures = ledger.settle(SETTLE).await;
    figures.print(scenario, converged);
    figures.assert_sound(scenario);
}

/// The peers of a ledger, by reference, as `converge` takes them.
fn all(ledger: &Ledger) -> Vec<&Peer> {
    ledger.peers.iter().collect()
}

/// Waits until `process` logs `pattern` after byte `mark` of its log; gives up quietly
/// after `timeout` (used to order a fault's steps, never as an assertion).
async fn logged(process: &Process, mark: usize, pattern: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !process.log()[mark..].contains(pattern) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_paused_gateways_sessions_return_after_its_reassert_found_no_center() {
    let mut cluster = Cluster::start(1, 2);
    let nats = cluster.client().await;
    let (ledger, traffic) = two_sides(&cluster, 4).await;
    let on_a: Vec<&str> = ledger.peers[..4].iter().map(|p| p.user.as_str()).collect();

    // gA freezes past the heartbeat timeout: the center evicts its sessions and tells it
    // so (`gateway-down`), which gA reads only when it wakes up.
    ledger.fault();
    cluster.gateways[0].process.pause();
    vanish(&nats, &on_a, Duration::from_secs(15)).await;
    // The only center dies; gA wakes up and re-asserts while no center answers.
    cluster.centers[0].process.kill();
    let mark = cluster.gateways[0].process.log().len();
    cluster.gateways[0].process.resume();
    let ga = &cluster.gateways[0].process;
    // Until gA has tried to reconcile and failed (no center), at most 5 s.
    logged(ga, mark, "failed; retrying", Duration::from_secs(5)).await;
    // A new center: the fault is over, the directory lacks gA's live sessions.
    cluster.start_center("c1");
    let converged = converge(&nats, &all(&ledger), &[], CONVERGE).await;
    ledger.converged();
    finish(&ledger, traffic, "paused-gateway", converged).await;
    assert_converged(&nats, &all(&ledger), &[]).await;
}

#[tokio::test]
async fn sessions_closed_while_no_center_answers_leave_the_directory() {
    let mut cluster = Cluster::start_with(1, 2, &["--max-sessions-per-user", "2"]);
    let nats = cluster.client().await;
    let (ledger, traffic) = two_sides(&cluster, 2).await;
    let first = Peer::join(cluster.ws(0), "ghost").await;
    let second = Peer::join(cluster.ws(1), "ghost").await;

    // Both sessions log out while no center can unregister them.
    ledger.fault();
    cluster.centers[0].process.kill();
    futures::join!(first.logout(), second.logout());
    cluster.start_center("c1");
    let converged = converge(&nats, &all(&ledger), &["ghost"], CONVERGE).await;
    ledger.converged();
    eventually(Duration::from_secs(5), "ghost is offline", || async {
        (online(&nats, "ghost").await == Some(false)).then_some(())
    })
    .await;
    // The two ghosts do not count against the limit of two sessions.
    let third = Peer::login(cluster.ws(0), "ghost").await;
    let third = third.unwrap_or_else(|e| panic!("a third login after two ghosts: {e}"));
    finish(&ledger, traffic, "ghost-logout", converged).await;
    let mut peers = all(&ledger);
    peers.push(&third);
    assert_converged(&nats, &peers, &[]).await;
}

/// How long the directory stream's leader stalls: enough for writes to time out,
/// heartbeats to go missing and the stream to elect another leader.
const LEADER_PAUSE: Duration = Duration::from_secs(10);

/// Puts a center (c1) and a gateway (g0) on the node that leads the directory stream and
/// another center (c2) and gateway (g1) on another node, so that its stall both silences a
/// gateway and stalls a center (which wakes up having heard no heartbeat for the whole
/// pause). c0, which only created the bucket on any node, is stopped. Returns the
/// leader's index.
async fn around_the_stream_leader(cluster: &mut Cluster, nats: &async_nats::Client) -> usize {
    let leader = eventually(Duration::from_secs(10), "the stream leader", || async {
        stream_leader(nats, "KV_mrc_dir").await
    })
    .await;
    let Broker::Triple(servers) = &cluster.broker else {
        unreachable!("a replicated cluster runs on three nodes")
    };
    let node = servers
        .node_named(&leader)
        .unwrap_or_else(|| panic!("no node is named {leader:?}"));
    let url = |i: usize| servers.nodes[i % 3].url.clone();
    for (url, center, gateway) in [(url(node), "c1", "g0"), (url(node + 1), "c2", "g1")] {
        cluster.pinned_url = Some(url);
        cluster.start_center(center);
        cluster.start_gateway(gateway);
    }
    cluster.pinned_url = None;
    cluster.centers[0].process.terminate();
    node
}

#[tokio::test]
async fn the_directory_converges_after_its_stream_leader_was_paused() {
    let mut cluster = Cluster::start_replicated(1, 0).await;
    let nats = cluster.client().await;
    let node = around_the_stream_leader(&mut cluster, &nats).await;
    let (ledger, traffic) = two_sides(&cluster, 4).await;
    let Broker::Triple(servers) = &cluster.broker else {
        unreachable!("a replicated cluster runs on three nodes")
    };

    ledger.fault();
    servers.pause_node(node);
    tokio::time::sleep(LEADER_PAUSE).await;
    servers.resume_node(node);
    let converged = converge(&nats, &all(&ledger), &[], CONVERGE).await;
    ledger.converged();
    finish(&ledger, traffic, "paused-stream-leader", converged).await;
    assert_converged(&nats, &all(&ledger), &[]).await;
}

#[tokio::test]
async fn a_gateway_paused_shorter_than_the_heartbeat_timeout_keeps_its_sessions() {
    let cluster = Cluster::start(2, 2);
    let nats = cluster.client().await;
    let (ledger, traffic) = two_sides(&cluster, 4).await;

    ledger.fault();
    let ga = &cluster.gateways[0].process;
    ga.pause();
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_TIMEOUT_MS / 3)).await;
    ga.resume();
    let converged = converge(&nats, &all(&ledger), &[], CONVERGE).await;
    ledger.converged();
    finish(&ledger, traffic, "short-pause", converged).await;
    assert_converged(&nats, &all(&ledger), &[]).await;
}

#[tokio::test]
async fn a_center_killed_in_a_login_storm_leaves_no_ghost_and_loses_no_login() {
    let mut cluster = Cluster::start(2, 2);
    let nats = cluster.client().await;
    let (ledger, traffic) = two_sides(&cluster, 2).await;
    let logged_in = Arc::new(AtomicUsize::new(0));
    let storm: Vec<_> = (0..STORM)
        .map(|i| {
            let (url, user) = (cluster.ws(i % 2).to_string(), format!("s{i}"));
            let logged_in = logged_in.clone();
            tokio::spawn(async move {
                let peer = Peer::login(&url, &user).await;
                logged_in.fetch_add(1, Ordering::Relaxed);
                (user, peer)
            })
        })
        .collect();
    eventually(
        Duration::from_secs(20),
        "the storm is under way",
        || async { (logged_in.load(Ordering::Relaxed) >= STORM / 4).then_some(()) },
    )
    .await;
    ledger.fault();
    cluster.centers[0].process.kill();
    let (mut peers, mut refused) = (Vec::new(), Vec::new());
    for login in storm {
        match login.await.expect("a login task does not panic") {
            (_, Ok(peer)) => peers.push(peer),
            (user, Err(_)) => refused.push(user),
        }
    }
    // Refused logins must not stay behind; accepted ones must all be there.
    let gone: Vec<&str> = refused.iter().map(String::as_str).collect();
    let mut everyone = all(&ledger);
    everyone.extend(&peers);
    let converged = converge(&nats, &everyone, &gone, CONVERGE).await;
    ledger.converged();
    println!(
        "storm: {} logged in, {} refused",
        peers.len(),
        refused.len()
    );
    finish(&ledger, traffic, "center-killed-in-storm", converged).await;
    assert_converged(&nats, &everyone, &gone).await;
}

#[tokio::test]
async fn a_center_cut_off_from_nats_evicts_nobody_when_it_comes_back() {
    // c1 alone on node 0; the gateways and this test on node 1.
    let mut cluster = Cluster::start_replicated(1, 0).await;
    let Broker::Triple(servers) = &cluster.broker else {
        unreachable!("a replicated cluster runs on three nodes")
    };
    let (cut_off, elsewhere) = (servers.nodes[0].url.clone(), servers.nodes[1].url.clone());
    cluster.pinned_url = Some(cut_off);
    cluster.start_center("c1");
    cluster.pinned_url = Some(elsewhere.clone());
    cluster.start_gateway("g0");
    cluster.start_gateway("g1");
    cluster.centers[0].process.terminate();
    let nats = async_nats::connect(&elsewhere).await.unwrap();
    let mut downs = nats.subscribe("mrc.center.gateway-down").await.unwrap();
    nats.flush().await.unwrap();
    let (ledger, traffic) = two_sides(&cluster, 2).await;
    let Broker::Triple(servers) = &cluster.broker else {
        unreachable!()
    };

    // c1 hears no heartbeat for three timeouts: its own connection is what stalled.
    ledger.fault();
    servers.pause_node(0);
    tokio::time::sleep(Duration::from_millis(3 * HEARTBEAT_TIMEOUT_MS)).await;
    servers.resume_node(0);
    let converged = converge(&nats, &all(&ledger), &[], CONVERGE).await;
    ledger.converged();
    // Two more timeouts: an eviction of the heartbeats c1 missed would show by now.
    let quiet = tokio::time::timeout(
        Duration::from_millis(2 * HEARTBEAT_TIMEOUT_MS),
        downs.next(),
    )
    .await;
    if let Ok(Some(down)) = quiet {
        panic!(
            "a gateway was evicted: {}",
            String::from_utf8_lossy(&down.payload)
        );
    }
    let log = cluster
        .centers
        .last()
        .map(|c| c.process.log())
        .unwrap_or_default();
    assert!(!log.contains("sessions removed"), "c1 evicted:\n{log}");
    finish(&ledger, traffic, "center-cut-off", converged).await;
    assert_converged(&nats, &all(&ledger), &[]).await;
}
