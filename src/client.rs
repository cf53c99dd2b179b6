//! A WebSocket client of a gateway, speaking the protocol of `protocol::client`. The `mrc`
//! CLI and the integration tests use it; it is also a readable reference client.

use anyhow::{bail, Context as _};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::client::{Incoming, Outgoing};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct WsClient {
    write: SplitSink<Ws, Message>,
    read: SplitStream<Ws>,
}

/// One frame the gateway sent, decoded, with its raw text.
#[derive(Debug)]
pub struct Received {
    pub frame: Incoming,
    pub text: String,
}

impl WsClient {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:8080/ws`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (write, read) = ws.split();
        Ok(WsClient { write, read })
    }

    /// Opens a WebSocket that authenticates on the upgrade (`Authorization: Bearer`); the
    /// gateway answers with `welcome` without a `login` frame.
    pub async fn connect_with_token(url: &str, token: &str) -> anyhow::Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url
            .into_client_request()
            .with_context(|| format!("bad URL {url}"))?;
        let value = format!("Bearer {token}")
            .parse()
            .context("token is not a valid header value")?;
        request.headers_mut().insert("authorization", value);
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (write, read) = ws.split();
        Ok(WsClient { write, read })
    }

    /// Sends one text frame as it is (tests use it for bad input).
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.write
            .send(Message::text(text))
            .await
            .context("writing to the gateway")
    }

    pub(crate) async fn send_frame(&mut self, frame: &Outgoing<'_>) -> anyhow::Result<()> {
        self.send_text(&frame.encode()).await
    }

    /// Logs in as `user` (gateways in insecure dev-auth mode) and waits for `welcome`.
    pub async fn login(&mut self, user: &str) -> anyhow::Result<Incoming> {
        self.login_device(user, None).await
    }

    /// Logs in as `user` from a device class and waits for `welcome`.
    pub async fn login_device(
        &mut self,
        user: &str,
        device: Option<&str>,
    ) -> anyhow::Result<Incoming> {
        self.send_frame(&Outgoing::Login {
            user: Some(user),
            token: None,
            device,
        })
        .await?;
        self.welcome().await
    }

    /// Logs in with a token and waits for `welcome`.
    pub async fn login_with_token(&mut self, token: &str) -> anyhow::Result<Incoming> {
        self.send_frame(&Outgoing::Login {
            user: None,
            token: Some(token),
            device: None,
        })
        .await?;
        self.welcome().await
    }

    async fn welcome(&mut self) -> anyhow::Result<Incoming> {
        let Some(reply) = self.next().await? else {
            bail!("gateway closed the connection during login")
        };
        match reply.frame.op.as_str() {
            "welcome" => Ok(reply.frame),
            _ => bail!("login refused: {}", reply.text),
        }
    }

    /// Sends a message; the `report` arrives later through [`WsClient::next`].
    pub async fn send(
        &mut self,
        to: &[String],
        id: Option<&str>,
        body: &RawValue,
    ) -> anyhow::Result<()> {
        self.send_frame(&Outgoing::Send { to, id, body }).await
    }

    /// The next frame from the gateway; `None` once the connection is closed.
    pub async fn next(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            let Some(message) = self.read.next().await else {
                return Ok(None);
            };
            match message {
                Ok(Message::Text(text)) => {
                    let frame = serde_json::from_str(text.as_str()).with_context(|| {
                        format!("gateway sent a frame that is not valid: {text}")
                    })?;
                    return Ok(Some(Received {
                        frame,
                        text: text.to_string(),
                    }));
                }
                Ok(Message::Close(_)) => return Ok(None),
                Ok(_) => continue,
                Err(e) => {
                    use tokio_tungstenite::tungstenite::Error;
                    return match e {
                        Error::ConnectionClosed | Error::AlreadyClosed => Ok(None),
                        Error::Protocol(_) | Error::Io(_) => Ok(None),
                        e => Err(e).context("reading from the gateway"),
                    };
                }
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.write.send(Message::Close(None)).await;
        let _ = self.write.close().await;
    }
}
