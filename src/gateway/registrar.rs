//! Talks to the centers on behalf of this gateway's sessions: register, unregister, and
//! purge (every session of this gateway id, at start and at a graceful stop).
//! A gateway never writes the directory itself.

use std::time::Duration;

use async_nats::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::{request_idempotent, RequestFailure};
use crate::ident::{GatewayId, SessionId, UserId};
use crate::protocol::nats::{
    encode, PurgeReply, PurgeRequest, RegisterRequest, SessionsReply, UnregisterRequest,
};
use crate::subject::{Subjects, DIR_PURGE, DIR_REGISTER, DIR_UNREGISTER};

pub struct Registrar {
    client: Client,
    subjects: Subjects,
    gateway: GatewayId,
    timeout: Duration,
}

impl Registrar {
    pub fn new(client: Client, subjects: Subjects, gateway: GatewayId, timeout: Duration) -> Self {
        Registrar {
            client,
            subjects,
            gateway,
            timeout,
        }
    }

    /// Records that `session` of `user` lives here. `reassert`: re-registering a live
    /// session, which never replaces another (the reply says when it lost instead).
    pub async fn register(
        &self,
        user: &UserId,
        session: &SessionId,
        device: Option<&str>,
        reassert: bool,
    ) -> Result<SessionsReply, RequestFailure> {
        let payload = RegisterRequest {
            user: user.to_string(),
            session: session.to_string(),
            gateway: self.gateway.to_string(),
            device: device.map(str::to_string),
            reassert,
        };
        self.call(DIR_REGISTER, &payload, self.timeout).await
    }

    /// Removes exactly `session` of `user`.
    pub async fn unregister(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<usize, RequestFailure> {
        let payload = UnregisterRequest {
            user: user.to_string(),
            session: session.to_string(),
        };
        let reply: SessionsReply = self.call(DIR_UNREGISTER, &payload, self.timeout).await?;
        Ok(reply.sessions)
    }

    /// Removes every session registered under this gateway id; returns how many.
    pub async fn purge(&self) -> Result<usize, RequestFailure> {
        let payload = PurgeRequest {
            gateway: self.gateway.to_string(),
        };
        // A purge walks every user of the gateway: give it more time than one request.
        let reply: PurgeReply = self.call(DIR_PURGE, &payload, self.timeout * 5).await?;
        Ok(reply.removed)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        payload: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, RequestFailure> {
        let subject = self.subjects.dir(endpoint);
        request_idempotent(&self.client, subject, encode(payload), timeout).await
    }
}
