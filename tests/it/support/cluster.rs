//! N centers and M gateways (the real binaries) around one nats-server, with test-speed
//! timings: heartbeats every 200 ms, gateways declared dead after 1.5 s of silence.

use std::process::Command;
use std::time::Duration;

use mrc::protocol::nats::{encode, LookupReply, LookupRequest};

use super::nats::{NatsCluster, NatsServer};
use super::process::Process;

pub const HEARTBEAT_MS: u64 = 200;
pub const HEARTBEAT_TIMEOUT_MS: u64 = 1500;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Center {
    /// `http://127.0.0.1:PORT` of the operators' listener, when started with
    /// `--http-listen` (and waited for up to a line that names it).
    pub http: Option<String>,
    pub process: Process,
}

pub struct Gateway {
    /// `ws://127.0.0.1:PORT/ws`
    pub ws: String,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// `127.0.0.1:PORT` of the raw TCP door, when started with `--tcp-listen`.
    pub tcp: Option<String>,
    pub process: Process,
}

/// What the MRC processes connect to.
pub enum Broker {
    Single(#[allow(dead_code, reason = "kept alive for the test's duration")] NatsServer),
    /// Three nodes; centers keep the directory with 3 replicas.
    Triple(NatsCluster),
    /// Taken away by the test.
    Gone,
}

pub struct Cluster {
    pub broker: Broker,
    nats_url: String,
    /// `--nats-url` of the processes started from now on, when not all of `nats_url`
    /// (a fault test puts processes on the node it is about to pause).
    pub pinned_url: Option<String>,
    /// Extra flags for every center started from now on.
    pub center_args: Vec<String>,
    pub centers: Vec<Center>,
    pub gateways: Vec<Gateway>,
    /// Extra flags for every gateway started from now on.
    pub gateway_args: Vec<String>,
    /// Start gateways with `--insecure-dev-auth` (clients log in with a bare user id).
    pub dev_auth: bool,
    /// Extra environment of every process started from now on (`MRC_LOG_FORMAT`...).
    pub env: Vec<(String, String)>,
    /// NATS user and password of centers and of gateways (`nats-config/auth.conf`).
    credentials: Option<[(&'static str, &'static str); 2]>,
}

impl Cluster {
    /// A nats-server with `centers` centers (`c0`, `c1`...) and `gateways` gateways
    /// (`g0`, `g1`...), all ready.
    pub fn start(centers: usize, gateways: usize) -> Self {
        Self::start_with(centers, gateways, &[])
    }

    /// Like [`Cluster::start`], with extra flags for every gateway.
    pub fn start_with(centers: usize, gateways: usize, gateway_args: &[&str]) -> Self {
        let nats = NatsServer::start();
        let url = nats.url.clone();
        Self::start_on(
            Broker::Single(nats),
            url,
            &[],
            centers,
            gateways,
            gateway_args,
        )
    }

    /// Centers and gateways on a nats-server with per-role users (`nats-config/auth.conf`).
    pub fn start_secured(centers: usize, gateways: usize) -> Self {
        let nats = NatsServer::start_config("auth.conf");
        let url = nats.url.clone();
        let mut cluster = Self::start_on(Broker::Single(nats), url, &[], 0, 0, &[]);
        cluster.credentials = Some([("center", "center-secret"), ("gateway", "gateway-secret")]);
        for i in 0..centers {
            cluster.start_center(&format!("c{i}"));
        }
        for i in 0..gateways {
            cluster.start_gateway(&format!("g{i}"));
        }
        cluster
    }

    /// Centers and gateways on a nats-server that requires TLS (`cert`, `key`), trusting
    /// `cert` as the CA.
    pub fn start_tls(
        centers: usize,
        gateways: usize,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Self {
        let nats = NatsServer::start_tls(cert, key);
        let url = nats.url.clone();
        let ca = ["--nats-tls-ca", cert.to_str().unwrap()];
        Self::start_on(Broker::Single(nats), url, &ca, centers, gateways, &ca)
    }

    /// Sets the NATS user of `role` (0: center, 1: gateway) when the broker has users.
    fn credentials(&self, command: &mut Command, role: usize) {
        if let Some(credentials) = self.credentials {
            let (user, password) = credentials[role];
            command
                .env("MRC_NATS_USER", user)
                .env("MRC_NATS_PASSWORD", password);
        }
    }

    /// Centers and gateways on a 3-node nats-server cluster, directory replicated 3 times.
    pub async fn start_replicated(centers: usize, gateways: usize) -> Self {
        let nats = NatsCluster::start();
        nats.wait_jetstream().await;
        let urls = nats.urls();
        Self::start_on(
            Broker::Triple(nats),
            urls,
            &["--replicas", "3"],
            centers,
            gateways,
            &[],
        )
    }

    fn start_on(
        broker: Broker,
        nats_url: String,
        center_args: &[&str],
        centers: usize,
        gateways: usize,
        gateway_args: &[&str],
    ) -> Self {
        let owned = |args: &[&str]| args.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster {
            broker,
            nats_url,
            pinned_url: None,
            center_args: owned(center_args),
            centers: Vec::new(),
            gateways: Vec::new(),
            gateway_args: owned(gateway_args),
            dev_auth: true,
            env: Vec::new(),
            credentials: None,
        };
        for i in 0..centers {
            cluster.start_center(&format!("c{i}"));
        }
        for i in 0..gateways {
            cluster.start_gateway(&format!("g{i}"));
        }
        cluster
    }

    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(binary);
        command
            .env(
                "MRC_NATS_URL",
                self.pinned_url.as_ref().unwrap_or(&self.nats_url),
            )
            .env("MRC_LOG", "info,mrc=debug")
            .env("MRC_REQUEST_TIMEOUT_MS", "1000")
            .env("MRC_CONNECT_TIMEOUT_MS", "10000")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn start_center(&mut self, id: &str) -> &Center {
        self.start_center_until(id, "mrc-center ready")
    }

    /// Starts a center and waits until it prints a line containing `line`.
    pub fn start_center_until(&mut self, id: &str, line: &str) -> &Center {
        let mut command = self.command(env!("CARGO_BIN_EXE_mrc-center"));
        command
            .args([
                "--id",
                id,
                "--heartbeat-timeout-ms",
                &HEARTBEAT_TIMEOUT_MS.to_string(),
            ])
            .args(&self.center_args);
        // The first center and gateway run on one worker thread (`--worker-threads`, as
        // the bench runs them), the others on one per core: tests cover both.
        if self.centers.is_empty() {
            command.args(["--worker-threads", "1"]);
        }
        self.credentials(&mut command, 0);
        let (process, line) = Process::spawn(&format!("center {id}"), command, line, READY_TIMEOUT);
        let http = field(&line, "http=");
        self.centers.push(Center { http, process });
        self.centers.last().unwrap()
    }

    pub fn start_gateway(&mut self, id: &str) -> &Gateway {
        self.start_gateway_until(id, "mrc-gateway ready")
    }

    /// Starts a gateway and waits until it prints `mrc-gateway listening` or
    /// `mrc-gateway ready` (`line`): both name its addresses.
    pub fn start_gateway_until(&mut self, id: &str, line: &str) -> &Gateway {
        let mut command = self.command(env!("CARGO_BIN_EXE_mrc-gateway"));
        command
            .args(["--id", id, "--listen", "127.0.0.1:0"])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(&self.gateway_args);
        if self.gateways.is_empty() {
            command.args(["--worker-threads", "1"]);
        }
        if self.dev_auth {
            command.arg("--insecure-dev-auth");
        }
        self.credentials(&mut command, 1);
        let (process, line) =
            Process::spawn(&format!("gateway {id}"), command, line, READY_TIMEOUT);
        let ws = field(&line, "ws=").expect("the ready line names the WebSocket URL");
        let http = field(&line, "http=").expect("the ready line names the HTTP URL");
        self.gateways.push(Gateway {
            ws,
            http,
            tcp: field(&line, "tcp="),
            process,
        });
        self.gateways.last().unwrap()
    }

    /// The WebSocket URL of gateway `i`.
    /// Sets the extra flags of every gateway started from now on.
    pub fn set_gateway_args(&mut self, args: &[&str]) {
        self.gateway_args = args.iter().map(|s| s.to_string()).collect();
    }

    pub fn ws(&self, i: usize) -> &str {
        &self.gateways[i].ws
    }

    /// `--nats-url` of the processes (one URL, or three comma-separated).
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// A plain NATS client, as a backend would connect.
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<&str> = self.nats_url.split(',').collect();
        async_nats::connect(urls)
            .await
            .expect("connecting a test client to NATS")
    }
}

/// The value of `name` (`http=`) in a process's ready or listening line: the line printed
/// on stdout, or the log line repeating it (in JSON logs, inside a quoted string).
fn field(line: &str, name: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || c == '"')
        .find_map(|f| f.strip_prefix(name))
        .map(str::to_string)
}

/// Asks the centers where `users` are, as a gateway would.
pub async fn lookup(client: &async_nats::Client, users: &[&str]) -> LookupReply {
    let request = LookupRequest {
        users: users.iter().map(|u| u.to_string()).collect(),
    };
    let reply = client
        .request("mrc.dir.lookup", encode(&request))
        .await
        .expect("mrc.dir.lookup answered");
    serde_json::from_slice(&reply.payload).expect("a lookup reply")
}

/// The users of `users` that the directory shows online.
pub async fn online(client: &async_nats::Client, users: &[&str]) -> Vec<String> {
    lookup(client, users)
        .await
        .users
        .into_iter()
        .filter(|(_, sessions)| !sessions.is_empty())
        .map(|(user, _)| user)
        .collect()
}
