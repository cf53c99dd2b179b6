//! Answers `mrc.gw.<me>.kick`: a center tells this gateway that a newer login replaced
//! some sessions (login policies `single` and `device`); they get a `kicked` frame and
//! their connections close.

use std::sync::Arc;

use async_nats::{Client, Subscriber};
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::ident::{SessionId, UserId};
use crate::protocol::client::FrameError;
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::{encode, ErrorReply, KickReply, KickRequest};

/// Serves kick requests from `requests` until `shutdown`.
pub(crate) async fn run(
    client: Client,
    sessions: Arc<Sessions>,
    requests: Subscriber,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::connection::answer(&client, requests, &shutdown, |payload| {
        match kick(&sessions, payload) {
            Ok(kicked) => encode(&KickReply { kicked }),
            Err(e) => encode(&ErrorReply::new(e.code, e.message)),
        }
    })
    .await
}

fn kick(sessions: &Sessions, payload: &[u8]) -> Result<usize, FrameError> {
    let kick: KickRequest = crate::protocol::decode(payload)?;
    let user = UserId::new(&kick.user)
        .map_err(|e| FrameError::new(ErrorCode::BadId, format!("user: {e}")))?;
    let ids: Vec<SessionId> = kick
        .sessions
        .iter()
        .filter_map(|s| SessionId::new(s).ok())
        .collect();
    let kicked = sessions.kick(&user, &ids);
    tracing::info!(%user, kicked, reason = %kick.reason, "sessions replaced by a newer login");
    Ok(kicked)
}
