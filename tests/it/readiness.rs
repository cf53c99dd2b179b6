//! Start-up: centers wait for JetStream instead of exiting, except on a configuration
//! JetStream can never accept (exit 64).

use std::time::Duration;

use crate::support::client::login;
use crate::support::cluster::{online, Broker, Cluster};

#[tokio::test]
async fn a_center_started_without_a_jetstream_quorum_waits_then_serves() {
    let mut cluster = Cluster::start_replicated(0, 0).await;
    let Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!("a replicated cluster runs three nodes")
    };
    // One node of three: clients connect, JetStream has no quorum.
    nats.kill_node(1);
    nats.kill_node(2);
    cluster.start_center_until("c0", "failed; retrying");
    assert!(
        cluster.centers[0].process.running(),
        "the center waits for JetStream instead of exiting"
    );
    assert!(!cluster.centers[0]
        .process
        .log()
        .contains("mrc-center ready"));

    let Broker::Triple(nats) = &mut cluster.broker else {
        unreachable!()
    };
    nats.start_node(1);
    nats.start_node(2);
    cluster.centers[0]
        .process
        .wait_line("mrc-center ready", Duration::from_secs(90));
    cluster.start_gateway("g0");
    let _alice = login(cluster.ws(0), "alice").await;
    let client = cluster.client().await;
    assert_eq!(online(&client, &["alice"]).await, ["alice"]);
}

#[tokio::test]
async fn a_center_whose_bucket_cannot_exist_exits_64() {
    // Three replicas on a single server: JetStream can never create that bucket.
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--replicas".into(), "3".into()];
    cluster.start_center_until("c0", "bad configuration");
    let status = cluster.centers[0]
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("the center exits");
    assert_eq!(status.code(), Some(64));
    let log = cluster.centers[0].process.log();
    assert!(
        log.contains("mrc_dir"),
        "the error names the bucket:\n{log}"
    );
}
