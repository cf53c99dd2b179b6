//! Talks to the centers on behalf of this gateway's sessions: register, unregister, and
//! purge (every session of this gateway id, at start and at a graceful stop), and the two
//! reads reconciliation compares with (`digests`, `sessions`).
//! A gateway never writes the directory itself, and never gives up on a write it needs:
//! [`Registrar::forget`] retries an unregister until it is done.
//!
//! Registrations and unregistrations go through a [`Batcher`] each: one at a time they
//! leave at once, in a login storm they leave as arrays that a center applies
//! concurrently (docs/PERFORMANCE.md, login storm).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::readiness::Readiness;
use crate::batch::{Batcher, Limits};
use crate::connection::{request_idempotent, retry_once, Nats, RequestFailure};
use crate::ident::{GatewayId, SessionId, UserId};
use crate::protocol::code::ErrorCode;
use crate::protocol::digest::Buckets;
use crate::protocol::nats::{
    encode, DigestsReply, DigestsRequest, GatewaySessionsReply, GatewaySessionsRequest,
    HeldSession, PurgeReply, PurgeRequest, RegisterRequest, SessionsReply, UnregisterRequest,
};
use crate::retry::{self, Attempt};
use crate::subject::{
    Subjects, DIR_DIGESTS, DIR_PURGE, DIR_REGISTER, DIR_SESSIONS, DIR_UNREGISTER,
};

/// How (un)registrations batch: every center can work on a few batches at once.
const LIMITS: Limits = Limits {
    in_flight: 8,
    max_calls: 256,
    max_bytes: 256 * 1024,
    queue: 8192,
};

pub struct Registrar {
    client: Nats,
    subjects: Subjects,
    gateway: GatewayId,
    timeout: Duration,
    registers: Batcher,
    unregisters: Batcher,
    /// Unregisters being retried; they end at shutdown, when one purge replaces them.
    retries: TaskTracker,
    shutdown: CancellationToken,
    /// Told how every write went: failing writes make the gateway not ready.
    readiness: Arc<Readiness>,
}

impl Registrar {
    pub fn new(
        client: Nats,
        subjects: Subjects,
        gateway: GatewayId,
        timeout: Duration,
        readiness: Arc<Readiness>,
        shutdown: CancellationToken,
    ) -> Self {
        let batcher =
            |endpoint| Batcher::start(client.clone(), subjects.dir(endpoint), timeout, LIMITS);
        Registrar {
            registers: batcher(DIR_REGISTER),
            unregisters: batcher(DIR_UNREGISTER),
            client,
            subjects,
            gateway,
            timeout,
            retries: TaskTracker::new(),
            shutdown,
            readiness,
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
        let result = batched(&self.registers, encode(&payload)).await;
        // A login always writes (its session id is new); a re-assert may change nothing.
        note(&self.readiness, &result, !reassert);
        result
    }

    /// Removes exactly `session` of `user`.
    pub async fn unregister(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<usize, RequestFailure> {
        let payload = unregister_payload(user, session);
        let reply = unregister(&self.unregisters, &self.readiness, payload).await?;
        Ok(reply.sessions)
    }

    /// Removes `session` of `user` from the directory in the background, retrying with
    /// backoff until a center confirms it (or the gateway stops: its purge covers it).
    pub(crate) fn forget(&self, user: &UserId, session: &SessionId) {
        let payload = unregister_payload(user, session);
        let (unregisters, shutdown) = (self.unregisters.clone(), self.shutdown.clone());
        let readiness = self.readiness.clone();
        self.retries.spawn(async move {
            let what = "unregistering a closed session";
            retry::until_done(what, &shutdown, || async {
                match unregister(&unregisters, &readiness, payload.clone()).await {
                    Ok(_) => Attempt::Done(()),
                    Err(e) => Attempt::Failed(e),
                }
            })
            .await;
        });
    }

    /// The directory's per-bucket digests of this gateway's sessions.
    pub async fn digests(&self) -> Result<Buckets, RequestFailure> {
        let payload = DigestsRequest {
            gateway: self.gateway.to_string(),
        };
        let subject = self.subjects.dir(DIR_DIGESTS);
        let reply: DigestsReply =
            request_idempotent(&self.client, subject, encode(&payload), self.timeout).await?;
        Ok(reply.buckets)
    }

    /// The directory's sessions of this gateway in `buckets`.
    pub async fn sessions(&self, buckets: Vec<usize>) -> Result<Vec<HeldSession>, RequestFailure> {
        let payload = GatewaySessionsRequest {
            gateway: self.gateway.to_string(),
            buckets,
        };
        let subject = self.subjects.dir(DIR_SESSIONS);
        let reply: GatewaySessionsReply =
            request_idempotent(&self.client, subject, encode(&payload), self.timeout).await?;
        Ok(reply.sessions)
    }

    /// Removes every session registered under this gateway id; returns how many.
    pub(crate) async fn purge(&self) -> Result<usize, RequestFailure> {
        let payload = PurgeRequest {
            gateway: self.gateway.to_string(),
        };
        // A purge walks every user of the gateway: give it more time than one request.
        let subject = self.subjects.dir(DIR_PURGE);
        let reply: PurgeReply =
            request_idempotent(&self.client, subject, encode(&payload), self.timeout * 5).await?;
        Ok(reply.removed)
    }
}

fn unregister_payload(user: &UserId, session: &SessionId) -> Bytes {
    encode(&UnregisterRequest {
        user: user.to_string(),
        session: session.to_string(),
    })
}

/// One unregister through `unregisters`, its outcome told to `readiness`.
async fn unregister(
    unregisters: &Batcher,
    readiness: &Readiness,
    payload: Bytes,
) -> Result<SessionsReply, RequestFailure> {
    let result = batched(unregisters, payload).await;
    note(readiness, &result, false);
    result
}

/// Tells `readiness` how a directory write went. Refusals of bad input say nothing about
/// the directory's health, and neither does a success that may have written nothing (an
/// unregister of a session already gone is answered from a read): only `wrote` counts.
fn note<T>(readiness: &Readiness, result: &Result<T, RequestFailure>, wrote: bool) {
    match result {
        Ok(_) if wrote => readiness.write_succeeded(),
        Ok(_) => {}
        Err(RequestFailure::Remote(body)) if body.code != ErrorCode::Unavailable => {}
        Err(e) => readiness.write_failed(&e.to_string()),
    }
}

/// An idempotent request through `batcher`, tried once more when nobody answered.
async fn batched<T: DeserializeOwned>(
    batcher: &Batcher,
    payload: Bytes,
) -> Result<T, RequestFailure> {
    retry_once(|| batcher.request(payload.clone())).await
}
