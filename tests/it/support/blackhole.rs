//! A TCP proxy that can turn into a black hole: while cut, it reads from both sides and
//! forwards nothing, keeping every socket open, as a network partition does (no RST, no
//! FIN: only silence). Connections made while cut are accepted and hear nothing either.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub struct Blackhole {
    /// `nats://127.0.0.1:<port>` of the proxy.
    pub url: String,
    cut: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    /// A proxy to `target` (`host:port`), forwarding.
    pub async fn start(target: &str) -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let (target, shared) = (target.to_owned(), cut.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, shared.clone()));
                tokio::spawn(pipe(server_read, client_write, shared.clone()));
            }
        });
        Blackhole { url, cut, accept }
    }

    /// Forwards nothing from now on.
    pub fn cut(&self) {
        self.cut.store(true, Relaxed);
    }

    /// Forwards again (what was swallowed meanwhile is gone).
    pub fn heal(&self) {
        self.cut.store(false, Relaxed);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, cut: Arc<AtomicBool>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Relaxed) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
