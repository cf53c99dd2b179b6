//! The gateways' own deliver connection (`mrc::wire`) on real nats-servers: it renews its
//! subscriptions after the server comes back and sends what was published meanwhile,
//! speaks TLS with the configured CA, and says why a server refused it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mrc::protocol::code::Outcome::Delivered;
use mrc::wire::{Delivery, Wire};

use crate::support::blackhole::Blackhole;
use crate::support::client::{expect_op, login, send};
use crate::support::cluster::Cluster;
use crate::support::nats::{NatsCluster, NatsServer};

/// Settings for a connection to `url` alone, no credentials.
pub(crate) fn settings(url: &str) -> mrc::config::Nats {
    mrc::config::Nats {
        urls: vec![url.to_owned()],
        user: None,
        password: None,
        token: None,
        creds: None,
        tls_ca: None,
        prefix: "mrc".into(),
        request_timeout_ms: 2000,
        connect_timeout_ms: 5000,
    }
}

/// A subscription on `wire` that collects the payloads it hears.
fn collect(wire: &Wire, subject: &str) -> Arc<Mutex<Vec<Bytes>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let into = heard.clone();
    let handler = Arc::new(move |msg: Delivery<'_>| into.lock().unwrap().push(msg.payload()));
    wire.subscribe(subject, handler).unwrap();
    heard
}

/// A wire to `url` alone, subscribed to `test.in` (confirmed), and what it heard there.
async fn listening(url: &str) -> (Wire, Arc<Mutex<Vec<Bytes>>>) {
    let wire = Wire::connect(&settings(url), "test wire").await.unwrap();
    let heard = collect(&wire, "test.in");
    wire.round_trip(Duration::from_secs(5)).await.unwrap();
    (wire, heard)
}

async fn until_heard(heard: &Mutex<Vec<Bytes>>, count: usize, what: &str) {
    crate::support::eventually(Duration::from_secs(20), what, || async {
        (heard.lock().unwrap().len() >= count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn after_its_server_restarts_the_wire_resubscribes_and_sends_what_waited() {
    let mut nats = NatsCluster::start();
    // The wire knows node 0 only: it must come back to the same server.
    let (wire, heard) = listening(&nats.nodes[0].url).await;
    let other = async_nats::connect(nats.nodes[1].url.as_str())
        .await
        .unwrap();
    other.publish("test.in", "before".into()).await.unwrap();
    until_heard(&heard, 1, "a message before the restart").await;

    nats.kill_node(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Published while the server is gone, to the wire's own subscription: written once
    // the wire is back, after the subscription it renews.
    wire.publish("test.in", None, b"meanwhile").unwrap();
    nats.start_node(0);
    until_heard(&heard, 2, "what waited, heard after the reconnect").await;
    assert_eq!(&heard.lock().unwrap()[1][..], b"meanwhile");
    // Other servers' publishers reach it again (once the cluster routes its interest).
    crate::support::eventually(Duration::from_secs(20), "heard from node 1", || async {
        other.publish("test.in", "after".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let heard = heard.lock().unwrap();
        heard.iter().any(|p| &p[..] == b"after").then_some(())
    })
    .await;
    wire.round_trip(Duration::from_secs(5)).await.unwrap();
}

/// A partition: the server goes silent without closing anything. Two unanswered pings
/// (5 s apart) end the connection; the wire says it is down (a gateway's doors close) and
/// reconnects once the network heals.
#[tokio::test]
async fn a_silent_server_is_noticed_by_its_pings_and_left() {
    let nats = NatsServer::start();
    let proxy = Blackhole::start(nats.url.trim_start_matches("nats://")).await;
    let (wire, heard) = listening(&proxy.url).await;

    proxy.cut();
    let cut = std::time::Instant::now();
    crate::support::eventually(Duration::from_secs(25), "the wire gives up", || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (!wire.connected()).then_some(())
    })
    .await;
    let noticed = cut.elapsed();
    assert!(
        noticed >= Duration::from_secs(9),
        "noticed after {noticed:?}"
    );
    assert!(wire.round_trip(Duration::from_millis(500)).await.is_err());

    proxy.heal();
    crate::support::eventually(Duration::from_secs(20), "connected again", || async {
        wire.round_trip(Duration::from_secs(1)).await.ok()
    })
    .await;
    let other = async_nats::connect(nats.url.as_str()).await.unwrap();
    other.publish("test.in", "healed".into()).await.unwrap();
    until_heard(&heard, 1, "a message after the partition").await;
    eprintln!("a silent server noticed after {noticed:?}");
}

#[tokio::test]
async fn with_one_node_configured_the_wire_moves_to_the_nodes_the_cluster_announced() {
    let mut nats = NatsCluster::start();
    let (wire, heard) = listening(&nats.nodes[0].url).await;
    nats.kill_node(0);
    crate::support::eventually(Duration::from_secs(20), "connected elsewhere", || async {
        wire.round_trip(Duration::from_secs(1)).await.ok()
    })
    .await;
    assert!(wire.connected());
    let other = async_nats::connect(nats.nodes[2].url.as_str())
        .await
        .unwrap();
    crate::support::eventually(Duration::from_secs(20), "heard from node 3", || async {
        other.publish("test.in", "moved".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        (!heard.lock().unwrap().is_empty()).then_some(())
    })
    .await;
}

/// The gateway opens its doors right after `connect`, and they ask `connected`: it must
/// hold before the connection's task first runs (under load the doors said "NATS is not
/// connected" for a moment, and `/readyz` with them).
#[tokio::test]
async fn a_wire_is_connected_as_soon_as_connect_returns() {
    let nats = NatsServer::start();
    let wire = Wire::connect(&settings(&nats.url), "test wire")
        .await
        .unwrap();
    // Nothing has yielded since: on this single-threaded runtime the connection's task
    // has not run yet.
    assert!(wire.connected());
}

#[tokio::test]
async fn a_handler_that_panics_loses_its_message_not_the_connection() {
    let nats = NatsServer::start();
    let wire = Wire::connect(&settings(&nats.url), "test wire")
        .await
        .unwrap();
    wire.subscribe("test.panic", Arc::new(|_| panic!("a handler bug")))
        .unwrap();
    let heard = collect(&wire, "test.ok");
    wire.publish("test.panic", None, b"1").unwrap();
    wire.publish("test.ok", None, b"2").unwrap();
    until_heard(&heard, 1, "the message after the panic").await;
    assert!(wire.connected());
}

#[tokio::test]
async fn gateways_deliver_to_each_other_over_tls_to_nats() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::support::keys::certificate(dir.path(), "cert.pem", "key.pem");
    let cluster = Cluster::start_tls(1, 2, &cert, &key);
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let (report, _) = send(&mut alice, &["bob"], "over-tls", "1").await;
    assert_eq!(report["bob"], Delivered);
    let msg = expect_op(&mut bob, "msg").await;
    assert_eq!(msg.frame.id.as_deref(), Some("over-tls"));

    // Without the CA the wire says what is missing instead of hanging.
    let url = cluster.nats_url().to_owned();
    let mut plain = settings(&url);
    plain.connect_timeout_ms = 300;
    let refused = Wire::connect(&plain, "test wire").await.err().unwrap();
    assert!(
        format!("{refused:#}").contains("--nats-tls-ca"),
        "{refused:#}"
    );
    let mut trusting = plain.clone();
    trusting.tls_ca = Some(cert);
    let wire = Wire::connect(&trusting, "test wire").await.unwrap();
    wire.round_trip(Duration::from_secs(5)).await.unwrap();
}

/// A JWT as nsc writes them: `claims` about `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{:X}", std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()),
        "iat": std::time::UNIX_EPOCH.elapsed().unwrap().as_secs(),
        "iss": issuer.public_key(),
        "name": "test",
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An operator-mode nats-server (one account, preloaded) and the text of a credentials
/// file for a user of that account signed with `seed_of`'s seed.
fn operator_mode(dir: &std::path::Path, seed_of: Option<&nkeys::KeyPair>) -> (NatsServer, String) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let unlimited = serde_json::json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
    let config = format!(
        "operator: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n}}\n",
        jwt(
            &operator,
            &operator.public_key(),
            serde_json::json!({"type": "operator", "version": 2})
        ),
        account.public_key(),
        jwt(
            &operator,
            &account.public_key(),
            serde_json::json!({"type": "account", "version": 2, "limits": unlimited})
        ),
    );
    let path = dir.join("operator.conf");
    std::fs::write(&path, config).unwrap();
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1}),
    );
    let seed = seed_of.unwrap_or(&user).seed().unwrap();
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    (NatsServer::start_file(&path), creds)
}

#[tokio::test]
async fn a_credentials_file_signs_the_servers_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, creds) = operator_mode(dir.path(), None);
    let path = dir.path().join("user.creds");
    std::fs::write(&path, creds).unwrap();
    let mut cfg = settings(&nats.url);
    cfg.creds = Some(path.clone());
    let wire = Wire::connect(&cfg, "test wire").await.unwrap();
    let heard = collect(&wire, "test.creds");
    wire.publish("test.creds", None, b"signed").unwrap();
    until_heard(&heard, 1, "its own publish").await;

    // The JWT with another key's seed: the signature does not match, and the server says so.
    let stranger = nkeys::KeyPair::new_user();
    let (nats, creds) = operator_mode(dir.path(), Some(&stranger));
    std::fs::write(&path, creds).unwrap();
    let mut cfg = settings(&nats.url);
    cfg.creds = Some(path);
    cfg.connect_timeout_ms = 300;
    let refused = Wire::connect(&cfg, "test wire").await.err().unwrap();
    assert!(
        format!("{refused:#}").contains("Authorization Violation"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn a_refused_login_names_the_servers_reason() {
    let nats = NatsServer::start_config("auth.conf");
    let mut wrong = settings(&nats.url);
    wrong.user = Some("gateway".into());
    wrong.password = Some("not-the-password".into());
    wrong.connect_timeout_ms = 300;
    let refused = Wire::connect(&wrong, "test wire").await.err().unwrap();
    assert!(
        format!("{refused:#}").contains("Authorization Violation"),
        "{refused:#}"
    );
    let mut right = wrong.clone();
    right.password = Some("gateway-secret".into());
    let wire = Wire::connect(&right, "test wire").await.unwrap();
    let heard = collect(&wire, "mrc.gw.g9.deliver");
    wire.round_trip(Duration::from_secs(5)).await.unwrap();
    wire.publish("mrc.gw.g9.deliver", None, b"{}").unwrap();
    until_heard(&heard, 1, "its own publish").await;
}

/// A gateway partitioned from NATS (both its connections go through a proxy that turns
/// silent) while another keeps sending to its user: it says `NATS is not connected` and
/// closes its doors once its pings go unanswered, and after the network heals it delivers
/// again. The ledger: every message reported delivered arrived, none reported offline did.
/// (Two worker threads: starting a gateway blocks the test's thread, and the proxy must
/// run meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_gateway_closes_its_doors_and_delivers_again_once_healed() {
    use mrc::protocol::code::Outcome::{Delivered, Offline};
    let mut cluster = Cluster::start(1, 1);
    let proxy = Blackhole::start(cluster.nats_url().trim_start_matches("nats://")).await;
    cluster.pinned_url = Some(proxy.url.clone());
    cluster.start_gateway("g1");
    let g1 = cluster.gateways[1].http.clone();
    let mut alice = login(cluster.ws(0), "alice").await;
    let mut bob = login(cluster.ws(1), "bob").await;
    let mut ledger = Vec::new();
    let (report, _) = send(&mut alice, &["bob"], "before", "0").await;
    assert_eq!(report["bob"], Delivered);
    ledger.push(("before".to_string(), Delivered));

    proxy.cut();
    let cut = std::time::Instant::now();
    let mut n = 0;
    let closed = loop {
        n += 1;
        let id = format!("cut{n}");
        let (report, _) = send(&mut alice, &["bob"], &id, "1").await;
        ledger.push((id, report["bob"]));
        let (_, reason) = crate::support::readyz(&g1).await;
        if reason.as_deref() == Some("NATS is not connected") {
            break true;
        }
        if cut.elapsed() > Duration::from_secs(30) {
            break false;
        }
    };
    assert!(closed, "g1 never said NATS is not connected");
    let noticed = cut.elapsed();

    proxy.heal();
    let healed = std::time::Instant::now();
    loop {
        n += 1;
        let id = format!("healed{n}");
        let (report, _) = send(&mut alice, &["bob"], &id, "2").await;
        let outcome = report["bob"];
        ledger.push((id, outcome));
        if outcome == Delivered {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "no delivery after healing: {ledger:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut arrived = std::collections::HashSet::new();
    while let Ok(Ok(Some(frame))) = tokio::time::timeout(Duration::from_secs(2), bob.next()).await {
        if frame.frame.op == "msg" {
            arrived.insert(frame.frame.id.unwrap());
        }
    }
    for (id, outcome) in &ledger {
        match outcome {
            Delivered => assert!(arrived.contains(id), "{id} reported delivered, not arrived"),
            Offline => assert!(!arrived.contains(id), "{id} reported offline, arrived"),
            _ => {}
        }
    }
    eprintln!(
        "partitioned gateway: doors closed after {noticed:?}, delivering {:?} after healing; {} sent, {} arrived",
        healed.elapsed(),
        ledger.len(),
        arrived.len()
    );
}

/// A message far larger than one read arrives whole, byte for byte; one above the
/// server's `max_payload` is refused before it is queued.
#[tokio::test]
async fn large_messages_arrive_whole_and_oversized_ones_are_refused() {
    let nats = NatsServer::start();
    let (wire, heard) = listening(&nats.url).await;
    let large: Vec<u8> = (0..900 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..3 {
        wire.publish("test.in", None, &large).unwrap();
    }
    until_heard(&heard, 3, "three large messages").await;
    assert!(heard.lock().unwrap().iter().all(|p| p[..] == large[..]));
    let oversized = vec![b'x'; 2 * 1024 * 1024];
    let refused = wire.publish("test.in", None, &oversized).unwrap_err();
    assert!(refused.to_string().contains("max_payload"), "{refused}");
    wire.round_trip(Duration::from_secs(5)).await.unwrap();
}
