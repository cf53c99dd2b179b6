//! `idle`: many logged-in users doing nothing, and what each one costs every watched
//! process in memory (RSS gained per connection), through a WebSocket door or, with
//! `--door tcp`, the TCP door (one JSON frame per line).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::conn::{Target, Ws};
use super::fleet;
use super::output::Output;
use super::procs::{self, Watched};

/// Where the idle users log in.
pub enum Door<'a> {
    Ws(&'a Target),
    /// The address of a gateway's `--tcp-listen`.
    Tcp(SocketAddr),
}

/// Connections made for one level: how many, and why the first one failed.
struct Logged {
    connected: usize,
    failed: usize,
    first_error: Option<String>,
}

/// Logs in idle users through `door` up to each of `levels` and reports the memory every
/// watched process gained per connection.
pub async fn idle(
    levels: &[usize],
    door: Door<'_>,
    watched: &Watched,
    concurrency: usize,
    sources: &[IpAddr],
    prefix: &str,
    out: &mut Output,
) -> anyhow::Result<()> {
    match &door {
        Door::Ws(target) => println!("idle: idle logged-in users on {}", target.url),
        Door::Tcp(addr) => println!("idle: idle logged-in users on the TCP door {addr}"),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = watched.usage(&watched.sample(), &watched.sample());
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut have = 0usize;
    for &level in levels {
        let users: Vec<(String, usize)> = (have..level)
            .map(|i| (format!("{prefix}-{i}"), 0))
            .collect();
        let logged = match &door {
            Door::Ws(target) => {
                let what = format!("idle {level}");
                let fleet = fleet::connect_all(
                    &users,
                    std::slice::from_ref(*target),
                    sources,
                    concurrency,
                    Duration::from_secs(60),
                    &what,
                )
                .await;
                let connected = fleet.conns.len();
                for (_, ws) in fleet.conns {
                    tasks.push(tokio::spawn(keep_alive(ws, cancel.clone())));
                }
                Logged {
                    connected,
                    failed: fleet.failed,
                    first_error: fleet.first_error,
                }
            }
            Door::Tcp(addr) => {
                let (lines, logged) = connect_lines(*addr, &users, concurrency).await;
                tasks.extend(
                    lines
                        .into_iter()
                        .map(|line| tokio::spawn(keep_line(line, cancel.clone()))),
                );
                logged
            }
        };
        have += logged.connected;
        // Let allocations settle (welcome frames written, registration replies freed).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = watched.usage(&watched.sample(), &watched.sample());
        report(level, have, &logged, &base, &now, out);
        if logged.failed > 0 && have < level {
            println!("  stopping: logins failed");
            break;
        }
    }
    cancel.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// Prints and records what each watched process gained per connection since `base`.
fn report(
    level: usize,
    have: usize,
    logged: &Logged,
    base: &[procs::Usage],
    now: &[procs::Usage],
    out: &mut Output,
) {
    let per_conn: Vec<(String, Option<f64>)> = base
        .iter()
        .zip(now)
        .map(|(b, n)| {
            let kb = match (b.rss_kb, n.rss_kb) {
                (Some(b), Some(n)) if have > 0 => Some((n as f64 - b as f64) / have as f64),
                _ => None,
            };
            (n.label.clone(), kb)
        })
        .collect();
    let shown: Vec<String> = per_conn
        .iter()
        .filter_map(|(label, kb)| kb.map(|kb| format!("{label} {kb:.2}KB")))
        .collect();
    println!(
        "  {have} idle users ({} failed{}): RSS gained per user: {}",
        logged.failed,
        logged
            .first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        shown.join("  ")
    );
    println!("  {:>9} {}", "rss", procs::describe(now));
    out.record(
        "idle",
        "idle",
        serde_json::json!({
            "requested": level,
            "connected": have,
            "failed": logged.failed,
            "per_conn_kb": per_conn.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "base": procs::to_json(base),
            "procs": procs::to_json(now),
        }),
    );
}

/// Keeps an idle connection answering the gateway's pings until it closes or `cancel`.
async fn keep_alive(ws: Ws, cancel: CancellationToken) {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            next = stream.next() => match next {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

type Line = BufReader<TcpStream>;

/// Logs `users` in on the TCP door at `addr`, `concurrency` at a time.
async fn connect_lines(
    addr: SocketAddr,
    users: &[(String, usize)],
    concurrency: usize,
) -> (Vec<Line>, Logged) {
    let mut logins = futures::stream::iter(users)
        .map(|(user, _)| async move {
            tokio::time::timeout(Duration::from_secs(60), log_in_line(addr, user))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no welcome within 60 s")))
        })
        .buffer_unordered(concurrency.max(1));
    let mut lines = Vec::with_capacity(users.len());
    let mut logged = Logged {
        connected: 0,
        failed: 0,
        first_error: None,
    };
    while let Some(result) = logins.next().await {
        match result {
            Ok(line) => lines.push(line),
            Err(e) => {
                logged.failed += 1;
                logged.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    logged.connected = lines.len();
    (lines, logged)
}

/// One TCP client logged in: its login line written and the `welcome` read.
async fn log_in_line(addr: SocketAddr, user: &str) -> anyhow::Result<Line> {
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let mut line = BufReader::new(stream);
    let login = serde_json::json!({ "op": "login", "user": user });
    line.get_mut()
        .write_all(format!("{login}\n").as_bytes())
        .await?;
    let mut welcome = String::new();
    line.read_line(&mut welcome).await?;
    anyhow::ensure!(
        welcome.contains(r#""op":"welcome""#),
        "no welcome: {}",
        welcome.trim_end()
    );
    Ok(line)
}

/// Holds a TCP client open, reading whatever comes, until it closes or `cancel`.
async fn keep_line(mut line: Line, cancel: CancellationToken) {
    let mut text = String::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            read = line.read_line(&mut text) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => text.clear(),
            },
        }
    }
}
