//! Answers `mrc.gw.<me>.kick`: a center tells this gateway that a newer login replaced
//! some sessions (login policies `single` and `device`); they get a `kicked` frame and
//! their connections close.

use std::sync::Arc;

use async_nats::{Client, Subscriber};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::ident::{SessionId, UserId};
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::{encode, ErrorReply, KickReply, KickRequest};

/// Serves kick requests from `requests` until `shutdown`.
pub async fn run(
    client: Client,
    sessions: Arc<Sessions>,
    mut requests: Subscriber,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            msg = requests.next() => match msg { Some(msg) => msg, None => return Ok(()) },
        };
        let reply = match serde_json::from_slice::<KickRequest>(&msg.payload) {
            Ok(kick) => match UserId::new(&kick.user) {
                Ok(user) => {
                    let ids: Vec<SessionId> = kick
                        .sessions
                        .iter()
                        .filter_map(|s| SessionId::new(s).ok())
                        .collect();
                    let kicked = sessions.kick(&user, &ids);
                    tracing::info!(%user, kicked, reason = %kick.reason, "sessions replaced by a newer login");
                    encode(&KickReply { kicked })
                }
                Err(e) => encode(&ErrorReply::new(ErrorCode::BadId, format!("user: {e}"))),
            },
            Err(e) => encode(&ErrorReply::new(ErrorCode::BadFrame, e.to_string())),
        };
        if let Some(reply_to) = msg.reply {
            let _ = client.publish(reply_to, reply).await;
        }
    }
}
