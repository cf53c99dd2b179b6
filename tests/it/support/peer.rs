//! A WebSocket client that keeps count: a task reads every frame for as long as the
//! connection lives and tallies which message ids arrived (and how often) and which
//! reports came back, so a fault test can send without waiting and check afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use mrc::protocol::client::{Incoming, Outgoing};
use mrc::protocol::code::Outcome;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one client received so far.
#[derive(Default)]
pub struct Inbox {
    /// Message id → how many `msg` frames carried it.
    pub arrivals: HashMap<String, u32>,
    /// Message id → the report's outcomes and when the report arrived.
    pub reports: HashMap<String, (BTreeMap<String, Outcome>, Instant)>,
    /// Message id → the error frame that refused the send (e.g. `rate_limited`).
    pub refused: HashMap<String, String>,
    /// The gateway closed the connection (or it broke).
    pub closed: bool,
}

/// One logged-in client. Clones share the connection.
#[derive(Clone)]
pub struct Peer {
    pub user: String,
    /// The session id and gateway id from the `welcome` frame.
    pub session: String,
    pub gateway: String,
    write: Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
    inbox: Arc<Mutex<Inbox>>,
}

impl Peer {
    /// Logs in as `user` (dev auth); `Err` carries the frame that refused the login.
    pub async fn login(url: &str, user: &str) -> Result<Peer, String> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        let (mut write, mut read) = ws.split();
        let login = Outgoing::Login {
            user: Some(user),
            token: None,
            device: None,
        };
        write
            .send(Message::text(login.encode()))
            .await
            .map_err(|e| format!("sending login: {e}"))?;
        let welcome = match tokio::time::timeout(Duration::from_secs(10), next(&mut read)).await {
            Ok(Some(frame)) if frame.op == "welcome" => frame,
            Ok(Some(frame)) => return Err(format!("login of {user} refused: {frame:?}")),
            Ok(None) => return Err(format!("login of {user}: connection closed")),
            Err(_) => return Err(format!("login of {user}: no answer")),
        };
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        tokio::spawn(read_all(read, inbox.clone()));
        Ok(Peer {
            user: user.to_string(),
            session: welcome.session.expect("welcome names the session"),
            gateway: welcome.gateway.expect("welcome names the gateway"),
            write: Arc::new(tokio::sync::Mutex::new(write)),
            inbox,
        })
    }

    /// Like [`Peer::login`], for logins that must succeed.
    pub async fn join(url: &str, user: &str) -> Peer {
        Peer::login(url, user)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends message `id` to `to` without waiting for its report.
    pub async fn send(&self, to: &str, id: &str) {
        let to = [to.to_string()];
        let body = RawValue::from_string(format!("{id:?}")).expect("a JSON string");
        let frame = Outgoing::Send {
            to: &to,
            id: Some(id),
            body: &body,
        };
        let sent = self
            .write
            .lock()
            .await
            .send(Message::text(frame.encode()))
            .await;
        sent.unwrap_or_else(|e| panic!("{} sending {id}: {e}", self.user));
    }

    /// Logs out the way a browser tab does: a close frame, then waiting (at most 5 s) for
    /// the gateway to finish the close, which it does once it has tried to unregister the
    /// session (a gateway may also keep retrying that in the background).
    pub async fn logout(&self) {
        let _ = self.write.lock().await.send(Message::Close(None)).await;
        let inbox = self.inbox.clone();
        let closed = move || inbox.lock().expect("inbox lock").closed;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !closed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the tally.
    pub fn inbox<T>(&self, f: impl FnOnce(&Inbox) -> T) -> T {
        f(&self.inbox.lock().expect("inbox lock"))
    }

    pub fn is_closed(&self) -> bool {
        self.inbox(|i| i.closed)
    }
}

/// The next text frame, decoded; `None` once the connection is closed.
async fn next(read: &mut futures::stream::SplitStream<Ws>) -> Option<Incoming> {
    loop {
        match read.next().await? {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                    panic!("the gateway sent a frame that is not valid ({e}): {text}")
                }))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn read_all(mut read: futures::stream::SplitStream<Ws>, inbox: Arc<Mutex<Inbox>>) {
    while let Some(frame) = next(&mut read).await {
        let mut inbox = inbox.lock().expect("inbox lock");
        match (frame.op.as_str(), frame.id) {
            ("msg", Some(id)) => *inbox.arrivals.entry(id).or_default() += 1,
            ("report", Some(id)) => {
                let status = frame.status.unwrap_or_default();
                inbox.reports.insert(id, (status, Instant::now()));
            }
            ("error", Some(id)) => {
                let code = frame.code.map(|c| format!("{c:?}")).unwrap_or_default();
                inbox.refused.insert(id, code);
            }
            _ => {}
        }
    }
    inbox.lock().expect("inbox lock").closed = true;
}
