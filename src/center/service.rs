//! The `mrc-center` NATS micro service: endpoints `register`, `unregister`, `lookup` and
//! `purge` under `mrc.dir`, in one queue group so NATS spreads requests over the centers
//! and `$SRV.PING/INFO/STATS` find every one of them.
//!
//! Every reply is JSON: the endpoint's reply type, or `{"error":{"code","message"}}` with
//! the `Nats-Service-Error*` headers, counted as an error in `$SRV.STATS` ([`answer`]).

use std::sync::Arc;
use std::time::Instant;

use async_nats::service::{Request, Service, ServiceExt};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio_util::task::TaskTracker;

use super::kick::Kicker;
use super::liveness::Liveness;
use super::peers::Peers;
use super::presence::Announcer;
use crate::batch;
use crate::config::PresencePolicy;
use crate::directory::{Directory, Login, LoginPolicy};
use crate::groups::Groups;
use crate::ident::{CenterId, DeviceClass, GatewayId, SessionId, UserId};
use crate::protocol::code::ErrorCode;
use crate::protocol::digest::BUCKETS;
use crate::protocol::nats::{
    encode, DigestsReply, DigestsRequest, ErrorBody, ErrorReply, GatewaySessionsReply,
    GatewaySessionsRequest, GatewaysReply, HeldSession, Location, LookupReply, LookupRequest,
    PresenceReply, PresenceRequest, PurgeReply, PurgeRequest, RegisterRequest, SessionsReply,
    UnregisterRequest, UserPresence, MAX_LOOKUP_USERS,
};
use crate::protocol::now_ms;
use crate::protocol::service_error;
use crate::subject::{
    Subjects, CENTER_QUEUE, CENTER_SERVICE, DIR_DIGESTS, DIR_GATEWAYS, DIR_LOOKUP, DIR_PRESENCE,
    DIR_PURGE, DIR_REGISTER, DIR_SESSIONS, DIR_UNREGISTER, GRP_ENDPOINTS,
};
use crate::telemetry::EndpointMetrics;

/// What the endpoint handlers share.
#[derive(Clone)]
pub(crate) struct Handlers {
    pub(crate) directory: Directory,
    pub(crate) groups: Groups,
    pub(crate) login_policy: LoginPolicy,
    pub(crate) presence_policy: PresencePolicy,
    pub(crate) kicker: Kicker,
    pub(crate) announcer: Announcer,
    pub(crate) liveness: Arc<Liveness>,
}

/// Starts the service and one task per endpoint; the tasks end when the service stops.
pub(crate) async fn start(
    client: &Client,
    id: &CenterId,
    subjects: &Subjects,
    handlers: Handlers,
    peers: Arc<Peers>,
    concurrency: usize,
    tasks: &TaskTracker,
) -> anyhow::Result<Service> {
    let mirror = handlers.directory.mirror().clone();
    let center = id.to_string();
    let service = client
        .service_builder()
        .description("MRC directory (mrc.dir.*) and groups (mrc.grp.*)")
        .queue_group(CENTER_QUEUE)
        .metadata([("center".to_string(), center.clone())].into())
        .stats_handler(move |_endpoint, _stats| {
            let (users, gateways) = mirror.counts();
            serde_json::json!({
                "center": center,
                "users": users,
                "gateways": gateways,
                "revision": mirror.applied(),
                "peers": peers.list(),
            })
        })
        .start(CENTER_SERVICE, crate::VERSION)
        .await
        .map_err(|e| anyhow::anyhow!("starting the {CENTER_SERVICE} service: {e}"))?;
    let dir = service.group(subjects.dir_group());
    let grp = service.group(subjects.group_group());
    let endpoints = [
        DIR_REGISTER,
        DIR_UNREGISTER,
        DIR_LOOKUP,
        DIR_PURGE,
        DIR_PRESENCE,
        DIR_GATEWAYS,
        DIR_DIGESTS,
        DIR_SESSIONS,
    ]
    .into_iter()
    .map(|name| (&dir, "dir", name))
    .chain(GRP_ENDPOINTS.into_iter().map(|name| (&grp, "grp", name)));
    for (group, prefix, name) in endpoints {
        let endpoint = group
            .endpoint(name)
            .await
            .map_err(|e| anyhow::anyhow!("adding endpoint {name}: {e}"))?;
        let (handlers, client) = (handlers.clone(), client.clone());
        let metrics = EndpointMetrics::new(format!("{prefix}.{name}"));
        tasks.spawn(endpoint.for_each_concurrent(concurrency, move |request| {
            let (handlers, client, metrics) = (handlers.clone(), client.clone(), metrics.clone());
            async move {
                let started = Instant::now();
                let reply = handlers
                    .handle(name, &request.message.payload, &metrics)
                    .await;
                answer(&client, request, reply, &metrics).await;
                metrics.answered(started.elapsed());
            }
        }));
    }
    Ok(service)
}

/// Sends `reply` to `request`. An error goes out as the JSON body clients read, with the
/// `Nats-Service-Error*` headers, and counts in the service's `$SRV.STATS`
/// (`num_errors`, `last_error`).
///
/// async-nats's own error response (`respond(Err(..))`) carries the headers but an empty
/// payload: the body clients rely on would be lost. So the reply is published here, and
/// `respond(Err(..))` is then called only for the service's stats, with the reply subject
/// emptied: async-nats 0.51 counts the error and the request before it publishes, and
/// refuses an empty subject before anything is sent (pinned by
/// `tests/it/observe.rs`).
async fn answer(
    client: &Client,
    mut request: Request,
    reply: Result<Bytes, ErrorBody>,
    metrics: &EndpointMetrics,
) {
    let error = match reply {
        Ok(reply) => {
            if let Err(e) = request.respond(Ok(reply)).await {
                tracing::debug!(error = %e, "reply not sent");
            }
            return;
        }
        Err(error) => error,
    };
    metrics.error(error.code);
    // A plain publish: nobody to answer, and async-nats counts no request without a reply.
    let Some(reply_to) = request.message.reply.take() else {
        return;
    };
    let (headers, counted) = (
        service_error::headers(&error),
        service_error::service_error(&error),
    );
    let sent = client.publish_with_headers(reply_to, headers, encode(&ErrorReply { error }));
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "error reply not sent");
    }
    request.message.reply = Some(Subject::from(""));
    let _nothing_sent = request.respond(Err(counted)).await;
}

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorReply::new(code, message).error
}

/// A directory that could not be read, as an error reply.
pub(super) fn unavailable(e: anyhow::Error) -> ErrorBody {
    error(ErrorCode::Unavailable, format!("{e:#}"))
}

pub(super) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ErrorBody> {
    crate::protocol::decode(payload).map_err(ErrorBody::from)
}

pub(super) fn id<T>(
    parse: fn(&str) -> Result<T, crate::ident::IdError>,
    what: &str,
    value: &str,
) -> Result<T, ErrorBody> {
    parse(value).map_err(|e| error(ErrorCode::BadId, format!("{what} {value:?}: {e}")))
}

impl Handlers {
    async fn handle(
        &self,
        endpoint: &str,
        payload: &[u8],
        metrics: &EndpointMetrics,
    ) -> Result<Bytes, ErrorBody> {
        match endpoint {
            // Gateways batch these in login storms (crate::batch). A batch's reply is no
            // error, but its failed elements count in the metrics.
            DIR_REGISTER | DIR_UNREGISTER => {
                let batched = batch::is_batch(payload);
                batch::answer_each(payload, |one| async move {
                    let reply = if endpoint == DIR_REGISTER {
                        self.register(one).await
                    } else {
                        self.unregister(one).await
                    };
                    if let (true, Err(e)) = (batched, &reply) {
                        metrics.error(e.code);
                    }
                    reply
                })
                .await
            }
            DIR_LOOKUP => self.lookup(payload).await,
            DIR_PURGE => self.purge(payload).await,
            DIR_PRESENCE => self.presence(payload).await,
            DIR_DIGESTS => self.digests(payload).await,
            DIR_SESSIONS => self.sessions(payload).await,
            DIR_GATEWAYS => {
                let gateways = self
                    .directory
                    .mirror()
                    .gateways()
                    .iter()
                    .map(|g| g.to_string())
                    .collect();
                Ok(encode(&GatewaysReply { gateways }))
            }
            name if GRP_ENDPOINTS.contains(&name) => self.group_request(name, payload).await,
            other => Err(error(ErrorCode::UnknownOp, format!("no endpoint {other}"))),
        }
    }

    async fn register(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: RegisterRequest = decode(payload)?;
        let user = id(UserId::new, "user", &req.user)?;
        let session = id(SessionId::new, "session", &req.session)?;
        let gateway = id(GatewayId::new, "gateway", &req.gateway)?;
        let device = req
            .device
            .as_deref()
            .map(|d| id(DeviceClass::new, "device", d))
            .transpose()?;
        self.liveness.touch(&gateway);
        let login = Login {
            user: &user,
            session: &session,
            gateway: &gateway,
            since: now_ms(),
            device: device.as_ref().map(DeviceClass::as_str),
            policy: self.login_policy,
            reassert: req.reassert,
        };
        let t = self.directory.register(&login).await.map_err(unavailable)?;
        self.announcer.announce(&t, &gateway).await;
        let replaced = t.replaced(session.as_str());
        if !replaced.is_empty() {
            self.kicker.kick(&user, &replaced);
        }
        let kicked = !t.holds(session.as_str());
        Ok(encode(&SessionsReply {
            sessions: t.after.len(),
            kicked,
        }))
    }

    async fn unregister(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: UnregisterRequest = decode(payload)?;
        let user = id(UserId::new, "user", &req.user)?;
        let session = id(SessionId::new, "session", &req.session)?;
        let t = self
            .directory
            .unregister(&user, &session)
            .await
            .map_err(unavailable)?;
        if let Some(gone) = t.before.iter().find(|s| *s.id == *session.as_str()) {
            self.announcer.announce(&t, &gone.gateway).await;
        }
        Ok(encode(&SessionsReply {
            sessions: t.after.len(),
            kicked: false,
        }))
    }

    async fn lookup(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: LookupRequest = decode(payload)?;
        if req.users.len() > MAX_LOOKUP_USERS {
            return Err(error(
                ErrorCode::TooManyReceivers,
                format!("at most {MAX_LOOKUP_USERS} users per look-up"),
            ));
        }
        let mut reply = LookupReply::default();
        let mut valid = Vec::with_capacity(req.users.len());
        for raw in req.users {
            match UserId::new(&raw) {
                Ok(user) => valid.push(user),
                Err(_) => {
                    reply.users.insert(raw, Vec::new());
                }
            }
        }
        let found = self.directory.lookup(&valid).await.map_err(unavailable)?;
        for (user, sessions) in valid.into_iter().zip(found) {
            let locations = sessions
                .into_iter()
                .map(|s| Location {
                    gateway: s.gateway.to_string(),
                    session: s.id.to_string(),
                    since: s.since,
                })
                .collect();
            reply.users.insert(user.to_string(), locations);
        }
        Ok(encode(&reply))
    }

    /// Online status of many users, as far as the presence policy lets `by` see.
    async fn presence(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: PresenceRequest = decode(payload)?;
        if req.users.len() > MAX_LOOKUP_USERS {
            let message = format!("at most {MAX_LOOKUP_USERS} users per request");
            return Err(error(ErrorCode::TooManyReceivers, message));
        }
        let by = req
            .by
            .as_deref()
            .map(|b| id(UserId::new, "by", b))
            .transpose()?;
        if by.is_some() && self.presence_policy == PresencePolicy::SharedGroup {
            // Memberships just added (a group created a moment ago) must count.
            self.groups.catch_up().await;
        }
        let mut reply = PresenceReply::default();
        let mut allowed = Vec::with_capacity(req.users.len());
        for raw in req.users {
            // An invalid id is nobody anyone may see: refused, like `lookup` answers it
            // offline, without failing the rest of the request.
            let Ok(user) = UserId::new(&raw) else {
                reply.refused.push(raw);
                continue;
            };
            let visible = match (&by, self.presence_policy) {
                (None, _) | (_, PresencePolicy::Anyone) => true,
                (Some(by), PresencePolicy::SharedGroup) => {
                    *by == user || self.groups.mirror().share_a_group(by, &user)
                }
            };
            if visible {
                allowed.push(user);
            } else {
                reply.refused.push(raw);
            }
        }
        let found = self.directory.lookup(&allowed).await.map_err(unavailable)?;
        for (user, sessions) in allowed.iter().zip(found) {
            let since = sessions.iter().map(|s| s.since).min();
            let presence = UserPresence {
                online: !sessions.is_empty(),
                sessions: sessions.len(),
                since,
            };
            reply.users.insert(user.to_string(), presence);
        }
        Ok(encode(&reply))
    }

    async fn purge(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: PurgeRequest = decode(payload)?;
        let gateway = id(GatewayId::new, "gateway", &req.gateway)?;
        let purge = self.directory.purge_gateway(&gateway).await;
        for t in &purge.transitions {
            self.announcer.announce(t, &gateway).await;
        }
        match purge.failed {
            // The gateway asks again until every session is gone.
            Some(e) => Err(unavailable(e)),
            None => Ok(encode(&PurgeReply {
                removed: purge.removed(),
            })),
        }
    }

    /// Per-bucket digests of one gateway's sessions, for its reconciliation. Read after
    /// the mirror caught up, so every write acknowledged before the request counts.
    async fn digests(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: DigestsRequest = decode(payload)?;
        let gateway = id(GatewayId::new, "gateway", &req.gateway)?;
        self.current().await?;
        let buckets = self.directory.mirror().buckets_of(&gateway);
        Ok(encode(&DigestsReply { buckets }))
    }

    /// One gateway's sessions in some buckets, for its reconciliation.
    async fn sessions(&self, payload: &[u8]) -> Result<Bytes, ErrorBody> {
        let req: GatewaySessionsRequest = decode(payload)?;
        let gateway = id(GatewayId::new, "gateway", &req.gateway)?;
        if let Some(bad) = req.buckets.iter().find(|&&b| b >= BUCKETS) {
            return Err(error(
                ErrorCode::BadFrame,
                format!("bucket {bad}: there are {BUCKETS}"),
            ));
        }
        self.current().await?;
        let wanted: std::collections::HashSet<usize> = req.buckets.into_iter().collect();
        let sessions = self
            .directory
            .mirror()
            .sessions_on(&gateway, |b| wanted.contains(&b))
            .into_iter()
            .map(|(user, session)| HeldSession {
                user: user.to_string(),
                session: session.to_string(),
            })
            .collect();
        Ok(encode(&GatewaySessionsReply { sessions }))
    }

    /// Waits until the mirror holds every acknowledged write; `unavailable` if it cannot
    /// (a reconciliation against a stale view would repair the wrong things).
    async fn current(&self) -> Result<(), ErrorBody> {
        if self.directory.barrier().await {
            Ok(())
        } else {
            Err(error(
                ErrorCode::Unavailable,
                "the directory mirror could not catch up with the bucket",
            ))
        }
    }
}
