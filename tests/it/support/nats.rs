//! A real nats-server per test: loopback, a port the kernel picks, JetStream in a
//! temporary store, killed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process::Process;

pub struct NatsServer {
    pub url: String,
    /// Kept so the server lives as long as the test (and is killed with it).
    _process: Process,
    _store: tempfile::TempDir,
}

/// The nats-server to test against: `MRC_NATS_SERVER`, the one `scripts/setup.sh`
/// installs into `.tools/`, or the first on PATH.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MRC_NATS_SERVER") {
        return path.into();
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/nats/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let mut command = Command::new(binary());
        command
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(store.path());
        let (mut process, _) = Process::spawn(
            "nats-server",
            command,
            "Listening for client connections on",
            Duration::from_secs(20),
        );
        let line = process.log();
        let addr = line
            .lines()
            .find_map(|l| l.split("Listening for client connections on ").nth(1))
            .expect("the listen line names the address")
            .trim()
            .to_string();
        process.wait_line("Server is ready", Duration::from_secs(20));
        NatsServer {
            url: format!("nats://{addr}"),
            _process: process,
            _store: store,
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connecting a test client to nats-server")
    }
}
