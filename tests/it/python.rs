//! Clients the project did not write: Python `websockets` and `nats-py` (installed into
//! `.tools/py` by `scripts/setup.sh`) drive the WebSocket and NATS doors.

use std::path::PathBuf;
use std::process::Command;

use crate::support::cluster::Cluster;

#[tokio::test]
async fn python_websocket_and_nats_clients_exchange_messages() {
    let cluster = Cluster::start(1, 2);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let packages = root.join(".tools/py");
    assert!(
        packages.join("websockets").exists() && packages.join("nats").exists(),
        "Python client packages missing from {}: run scripts/setup.sh",
        packages.display()
    );
    let ws = cluster.ws(0).to_string();
    let nats_url = cluster.nats_url().to_string();
    let script = root.join("tests/python/clients.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([&ws, &nats_url])
            .env("PYTHONPATH", packages)
            .output()
            .expect("running python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python clients failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
