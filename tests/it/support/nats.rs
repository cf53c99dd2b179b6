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

/// `nats-config/<name>` with its `store_dir` moved into `store` (`-sd` would clash with
/// the file's own `store_dir`); returns the copy's path.
fn project_config(name: &str, store: &std::path::Path) -> PathBuf {
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("nats-config")
        .join(name);
    let text = std::fs::read_to_string(&template).expect("reading a nats-config file");
    let text: String = text
        .lines()
        .map(|line| match line.trim_start().starts_with("store_dir") {
            true => format!("  store_dir: {:?}\n", store.join("js")),
            false => format!("{line}\n"),
        })
        .collect();
    let config = store.join("node.conf");
    std::fs::write(&config, text).expect("writing the node config");
    config
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(|command, store| {
            command.args(["-js", "-sd"]).arg(store);
        })
    }

    /// A server from a project config file (e.g. `auth.conf`), on free ports.
    pub fn start_config(name: &str) -> Self {
        Self::start_with(|command, store| {
            command.arg("-c").arg(project_config(name, store));
            command.args(["-m", &free_port().to_string()]);
        })
    }

    /// A server from a config file written by the test (no JetStream unless it says so).
    pub fn start_file(config: &std::path::Path) -> Self {
        Self::start_with(|command, _| {
            command.arg("-c").arg(config);
        })
    }

    /// A server that requires TLS, with `cert` and `key`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(|command, store| {
            command.args(["-js", "-sd"]).arg(store);
            command.args(["--tls", "--tlscert"]).arg(cert);
            command.arg("--tlskey").arg(key);
        })
    }

    fn start_with(configure: impl FnOnce(&mut Command, &std::path::Path)) -> Self {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let mut command = Command::new(binary());
        configure(&mut command, store.path());
        command.args(["-a", "127.0.0.1", "-p", "-1"]);
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
}

/// A free loopback port below the ephemeral range, so no client's source port takes it
/// between now and the server binding it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Start where the process id says, so parallel test binaries rarely try the same ports.
    let offset = (std::process::id() % 1000) as u16 * 12;
    loop {
        let candidate = 20_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
}

/// One node of a [`NatsCluster`].
pub struct Node {
    pub url: String,
    command: Vec<String>,
    process: Option<Process>,
    _store: tempfile::TempDir,
}

/// A 3-node nats-server cluster with JetStream, from `nats-config/cluster/n*.conf` with
/// ports and stores moved to free ones.
pub struct NatsCluster {
    pub nodes: Vec<Node>,
}

impl NatsCluster {
    pub fn start() -> Self {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, http, route)) in ports.iter().enumerate() {
            let store = tempfile::tempdir().expect("temporary JetStream store");
            let config = project_config(&format!("cluster/n{}.conf", i + 1), store.path());
            let command = vec![
                "-c".to_string(),
                config.display().to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client.to_string(),
                "-m".into(),
                http.to_string(),
                "--cluster".into(),
                format!("nats-route://127.0.0.1:{route}"),
                "--routes".into(),
                routes.join(","),
            ];
            nodes.push(Node {
                url: format!("nats://127.0.0.1:{client}"),
                command,
                process: None,
                _store: store,
            });
        }
        let mut cluster = NatsCluster { nodes };
        for i in 0..3 {
            cluster.start_node(i);
        }
        cluster
    }

    /// (Re)starts node `i` with its original ports and store.
    pub fn start_node(&mut self, i: usize) {
        let mut command = Command::new(binary());
        command.args(&self.nodes[i].command);
        let (process, _) = Process::spawn(
            &format!("nats-server n{}", i + 1),
            command,
            "Server is ready",
            Duration::from_secs(20),
        );
        self.nodes[i].process = Some(process);
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            process.kill();
        }
    }

    /// SIGSTOPs node `i`: it keeps its sockets and its place in the cluster but answers
    /// nothing, as a stalled host does.
    pub fn pause_node(&self, i: usize) {
        self.process(i).pause();
    }

    /// SIGCONT after [`NatsCluster::pause_node`].
    pub fn resume_node(&self, i: usize) {
        self.process(i).resume();
    }

    fn process(&self, i: usize) -> &Process {
        self.nodes[i].process.as_ref().expect("the node is running")
    }

    /// The index of the node whose `server_name` is `name` (`mrc-n1`... in
    /// `nats-config/cluster/n*.conf`, as JetStream names stream leaders).
    pub fn node_named(&self, name: &str) -> Option<usize> {
        let index = name
            .strip_prefix("mrc-n")?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)?;
        (index < self.nodes.len()).then_some(index)
    }

    /// Every node's URL, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until JetStream has a meta leader and answers account info.
    pub async fn wait_jetstream(&self) {
        let client = async_nats::connect(self.nodes[0].url.as_str())
            .await
            .expect("connecting to the cluster");
        let js = async_nats::jetstream::new(client);
        super::eventually(Duration::from_secs(30), "JetStream meta leader", || async {
            js.query_account().await.ok().map(|_| ())
        })
        .await;
    }
}
