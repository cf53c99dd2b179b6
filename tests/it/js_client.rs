//! The JavaScript client (`clients/js`) runs its own tests with Node's test runner against
//! a real cluster started here: the addresses go to `node --test` in `MRC_*` variables
//! (`clients/js/test/support/cluster.js` reads them). Node and the npm packages come from
//! the machine and `scripts/setup.sh` (`npm ci`).

use std::path::PathBuf;
use std::process::Command;

use crate::support::cluster::Cluster;
use crate::support::node;
use crate::support::token::{API_KEY, SECRET};

#[tokio::test]
async fn js_client_passes_its_node_tests_against_a_real_cluster() {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    let setup = "scripts/setup.sh (npm ci in clients/js)";
    node::require(&js, "ws", setup);

    // g0, g1 for every test; g2 and g3 are stopped by the reconnect tests. The `device`
    // login policy lets a test kick a client with a second login.
    let mut cluster = Cluster::start(0, 0);
    cluster.center_args = vec!["--login-policy".into(), "device".into()];
    cluster.set_gateway_args(&["--jwt-secret", SECRET, "--api-key", API_KEY]);
    cluster.start_center("c0");
    for i in 0..4 {
        cluster.start_gateway(&format!("g{i}"));
    }

    let mut files: Vec<String> = std::fs::read_dir(js.join("test"))
        .expect("reading clients/js/test")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.js"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=tap"])
        .args(&files)
        .current_dir(&js)
        .env("MRC_HTTP_0", &cluster.gateways[0].http)
        .env("MRC_JWT_SECRET", SECRET)
        .env("MRC_API_KEY", API_KEY);
    for (i, gateway) in cluster.gateways.iter().enumerate() {
        command.env(format!("MRC_WS_{i}"), &gateway.ws);
        command.env(format!("MRC_PID_{i}"), gateway.process.pid().to_string());
    }
    node::run_tests(command).await;
}
