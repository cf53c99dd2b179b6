//! Opening a connection: TCP, the server's INFO, TLS when asked for, CONNECT with the
//! configured credentials, the subscriptions renewed, and a PING whose PONG says the
//! server took all of it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::BytesMut;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::proto::{self, ServerOp};
use super::Shared;
use crate::config;
use crate::sync::lock;

/// TCP connect, TLS and CONNECT together must take no longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream to a server, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open connection, with what was read past the handshake.
pub(super) struct Connected {
    pub(super) io: Box<dyn Io>,
    pub(super) read: BytesMut,
    pub(super) server: String,
    /// Of the server in [`Settings`]: the next reconnect tries the one after it.
    pub(super) index: usize,
}

/// How to reach and log in to the servers, read once from the configuration.
pub(super) struct Settings {
    /// The configured servers, then those the cluster announced (`connect_urls`), as
    /// async-nats adds them: with one node's URL configured, a reconnect finds the others.
    servers: Mutex<Vec<Server>>,
    auth: Auth,
    /// With `--nats-tls-ca` or a `tls://` URL; else made with the system's roots when a
    /// server requires TLS.
    tls: OnceLock<Arc<ClientConfig>>,
    /// Whether `tls` trusts `--nats-tls-ca` (for the error that names what was trusted).
    own_ca: bool,
    name: String,
}

#[derive(Clone, PartialEq, Eq)]
struct Server {
    host: String,
    port: u16,
    tls: bool,
}

#[derive(Default)]
struct Auth {
    user: Option<(String, String)>,
    token: Option<String>,
    creds: Option<(String, nkeys::KeyPair)>,
}

#[derive(serde::Deserialize)]
struct Info {
    #[serde(default)]
    max_payload: usize,
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    connect_urls: Vec<String>,
}

impl Settings {
    pub(super) async fn new(cfg: &config::Nats, name: &str) -> anyhow::Result<Settings> {
        let servers = cfg
            .urls
            .iter()
            .map(|url| server(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut auth = Auth::default();
        if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
            auth.user = Some((user.clone(), password.clone()));
        }
        auth.token = cfg.token.clone();
        if let Some(path) = &cfg.creds {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading NATS credentials {}", path.display()))?;
            auth.creds = Some(creds(&text).with_context(|| path.display().to_string())?);
        }
        let tls = OnceLock::new();
        if cfg.tls_ca.is_some() || servers.iter().any(|s| s.tls) {
            let _ = tls.set(client_config(cfg.tls_ca.as_deref())?);
        }
        Ok(Settings {
            servers: Mutex::new(servers),
            auth,
            tls,
            own_ca: cfg.tls_ca.is_some(),
            name: name.to_owned(),
        })
    }

    /// How many servers there are to try, in turn.
    pub(super) fn servers(&self) -> usize {
        lock(&self.servers).len()
    }

    /// What an INFO tells: the payload limit, and servers to add.
    pub(super) fn learn(&self, info: &[u8], shared: &Shared) {
        let Ok(info) = serde_json::from_slice::<Info>(info) else {
            return;
        };
        if info.max_payload > 0 {
            shared.max_payload.store(info.max_payload, Relaxed);
        }
        let tls = self.tls.get().is_some();
        let mut servers = lock(&self.servers);
        for url in &info.connect_urls {
            if let Ok(server) = server(url) {
                let server = Server { tls, ..server };
                if !servers
                    .iter()
                    .any(|s| (&s.host, s.port) == (&server.host, server.port))
                {
                    servers.push(server);
                }
            }
        }
    }

    /// TLS as configured, or with the system's roots.
    fn tls(&self) -> anyhow::Result<Arc<ClientConfig>> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let config = client_config(None)?;
        Ok(self.tls.get_or_init(|| config).clone())
    }

    fn connect_json(&self, info: &Info, tls: bool) -> anyhow::Result<Vec<u8>> {
        let sig = match (&self.auth.creds, &info.nonce) {
            (Some((_, key)), Some(nonce)) => Some(
                URL_SAFE_NO_PAD.encode(
                    key.sign(nonce.as_bytes())
                        .map_err(|e| anyhow::anyhow!("signing the server's nonce: {e}"))?,
                ),
            ),
            _ => None,
        };
        let connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "lang": "rust-mrc",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
            "echo": true,
            "tls_required": tls,
            "name": self.name,
            "user": self.auth.user.as_ref().map(|u| &u.0),
            "pass": self.auth.user.as_ref().map(|u| &u.1),
            "auth_token": self.auth.token,
            "jwt": self.auth.creds.as_ref().map(|c| &c.0),
            "sig": sig,
        });
        let mut line = b"CONNECT ".to_vec();
        serde_json::to_writer(&mut line, &connect)?;
        line.extend_from_slice(b"\r\n");
        Ok(line)
    }
}

/// `nats://host:port`, `tls://host:port` or `host:port` (port 4222 if left out).
/// Credentials in the URL are ignored, as async-nats ignores them (nats.rs#1623): they
/// come from the flags.
fn server(url: &str) -> anyhow::Result<Server> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    let tls = match scheme {
        "nats" => false,
        "tls" => true,
        other => bail!("NATS URL {url:?}: scheme {other:?} is not nats:// or tls://"),
    };
    let address = rest.rsplit_once('@').map_or(rest, |(_, a)| a);
    let address = address.trim_end_matches('/');
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
            host,
            port.parse()
                .with_context(|| format!("NATS URL {url:?}: port"))?,
        ),
        _ => (address, 4222),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "NATS URL {url:?}: no host");
    Ok(Server {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// The user JWT and nkey seed of a credentials file: the first two decorated blocks.
fn creds(text: &str) -> anyhow::Result<(String, nkeys::KeyPair)> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut blocks = lines.windows(3).filter_map(|w| {
        let fenced = w[0].starts_with("---") && w[2].starts_with("---");
        (fenced && !w[1].is_empty() && !w[1].starts_with("---")).then_some(w[1])
    });
    let jwt = blocks
        .next()
        .context("no user JWT in the credentials file")?;
    let seed = blocks
        .next()
        .context("no nkey seed in the credentials file")?;
    let key = nkeys::KeyPair::from_seed(seed)
        .map_err(|e| anyhow::anyhow!("the credentials' nkey seed: {e}"))?;
    Ok((jwt.to_owned(), key))
}

/// TLS towards NATS: the CA file's certificates when given, else the system's.
fn client_config(ca: Option<&std::path::Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading the NATS CA file {}", ca.display()))?
            {
                roots.add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The first connection: every server in turn until one lets us in or `deadline`.
pub(super) async fn first(
    settings: &Settings,
    shared: &Shared,
    deadline: Instant,
) -> anyhow::Result<Connected> {
    let mut attempt = 0usize;
    loop {
        match open(settings, attempt % settings.servers(), shared).await {
            Ok(connected) => return Ok(connected),
            Err(e) if Instant::now() < deadline => {
                if attempt % 10 == 0 {
                    tracing::warn!(error = %format!("{e:#}"), "NATS not reachable yet for deliveries, retrying");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.context("connecting to NATS for deliveries")),
        }
    }
}

/// One attempt at server `index`, bounded in time.
pub(super) async fn open(
    settings: &Settings,
    index: usize,
    shared: &Shared,
) -> anyhow::Result<Connected> {
    let server = lock(&settings.servers)[index].clone();
    let address = format!("{}:{}", server.host, server.port);
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(settings, &server, shared))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no handshake within {HANDSHAKE_TIMEOUT:?}")))
        .with_context(|| format!("NATS server {address}"))
        .map(|(io, read)| {
            // Connected from the handshake on, not from when the connection's task first
            // serves it: callers (the doors) ask at once.
            shared.connected.store(true, Relaxed);
            Connected {
                io,
                read,
                server: address,
                index,
            }
        })
}

async fn handshake(
    settings: &Settings,
    server: &Server,
    shared: &Shared,
) -> anyhow::Result<(Box<dyn Io>, BytesMut)> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port)).await?;
    tcp.set_nodelay(true)?;
    let mut tcp: Box<dyn Io> = Box::new(tcp);
    let mut read = BytesMut::with_capacity(16 * 1024);
    let info = match next_op(&mut tcp, &mut read).await? {
        ServerOp::Info(json) => {
            settings.learn(&json, shared);
            serde_json::from_slice::<Info>(&json).context("the server's INFO")?
        }
        other => bail!("expected INFO, got {other:?}"),
    };
    let tls = server.tls || info.tls_required || settings.tls.get().is_some();
    let io: Box<dyn Io> = if tls {
        let trusted = match settings.own_ca {
            true => "--nats-tls-ca",
            false => "the system's CA certificates (--nats-tls-ca names a private CA)",
        };
        let name = ServerName::try_from(server.host.clone()).context("TLS server name")?;
        let connector = tokio_rustls::TlsConnector::from(settings.tls()?);
        let tls = connector.connect(name, tcp).await;
        Box::new(tls.with_context(|| format!("TLS handshake, trusting {trusted}"))?)
    } else {
        tcp
    };
    let mut io = io;
    let mut hello = settings.connect_json(&info, tls)?;
    for (sid, subject) in subscribed(shared) {
        proto::write_sub(&mut hello, &subject, sid);
    }
    hello.extend_from_slice(proto::PING);
    io.write_all(&hello).await?;
    io.flush().await?;
    loop {
        match next_op(&mut io, &mut read).await? {
            ServerOp::Pong => break,
            ServerOp::Err(e) => bail!("the server refused the connection: {e}"),
            ServerOp::Ping => io.write_all(proto::PONG).await?,
            ServerOp::Msg(msg) => super::conn::hand_over(shared, &msg),
            ServerOp::Info(_) | ServerOp::Ok => {}
        }
    }
    Ok((io, read))
}

/// The subscriptions to renew, with their ids.
fn subscribed(shared: &Shared) -> Vec<(u64, String)> {
    let subscriptions = lock(&shared.subscriptions);
    let live = subscriptions.iter().zip(1u64..);
    live.filter_map(|(s, sid)| Some((sid, s.as_ref()?.subject.clone())))
        .collect()
}

/// The next operation, reading as needed.
async fn next_op(io: &mut Box<dyn Io>, read: &mut BytesMut) -> anyhow::Result<ServerOp> {
    loop {
        if let Some(op) = proto::next(read)? {
            return Ok(op);
        }
        if io.read_buf(read).await? == 0 {
            bail!("the server closed the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_tls() {
        let s = server("nats://127.0.0.1:4223").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("127.0.0.1", 4223, false));
        let s = server("tls://user:pw@nats.example:7422/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("nats.example", 7422, true)
        );
        let s = server("localhost").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("localhost", 4222));
        let s = server("nats://[::1]:4222").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 4222));
        assert!(server("ws://x:1").is_err() && server("nats://x:port").is_err());
    }

    #[test]
    fn a_credentials_file_gives_its_jwt_and_seed() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let text = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi.abc.def\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let (jwt, key) = creds(&text).unwrap();
        assert_eq!(jwt, "eyJ0eXAi.abc.def");
        assert_eq!(key.seed().unwrap(), seed);
        assert!(creds("-----BEGIN NATS USER JWT-----\nx\n-----END-----\n").is_err());
    }
}
