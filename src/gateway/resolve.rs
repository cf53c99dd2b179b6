//! Where receivers are: a moka cache of user → gateways, and ONE batched `mrc.dir.lookup`
//! for all the misses of a send. Only users that are online are cached (an offline answer
//! would hide a later login); centers publish `mrc.dir.changed.<user>` when a user's set
//! of gateways changes, and [`follow_changes`] drops those entries.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use moka::sync::Cache;
use tokio_util::sync::CancellationToken;

use crate::connection::{request_idempotent, Nats, RequestFailure};
use crate::ident::{GatewayId, UserId};
use crate::protocol::nats::{encode, LookupReply, LookupRequest, MAX_LOOKUP_USERS};
use crate::subject::{Subjects, DIR_LOOKUP};
use crate::telemetry;

/// Users per look-up request (the centers' limit).
const LOOKUP_CHUNK: usize = MAX_LOOKUP_USERS;

/// The gateways holding one user's sessions.
pub(crate) type Route = Arc<[GatewayId]>;

pub(crate) struct Resolver {
    cache: Cache<UserId, Route>,
    client: Nats,
    lookup_subject: String,
    timeout: Duration,
}

impl Resolver {
    pub(crate) fn new(
        client: Nats,
        subjects: &Subjects,
        capacity: u64,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Resolver {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            client,
            lookup_subject: subjects.dir(DIR_LOOKUP),
            timeout,
        }
    }

    /// The route of each of `users`, in order (`None`: offline). `fresh` skips the cache
    /// (used to re-resolve stale routes).
    pub(crate) async fn resolve_each<'u>(
        &self,
        users: impl ExactSizeIterator<Item = &'u UserId>,
        fresh: bool,
    ) -> Result<Vec<Option<Route>>, RequestFailure> {
        let mut routes: Vec<Option<Route>> = Vec::with_capacity(users.len());
        let mut misses: Vec<(usize, &UserId)> = Vec::new();
        for (i, user) in users.enumerate() {
            let cached = if fresh { None } else { self.cache.get(user) };
            match cached {
                Some(route) => {
                    telemetry::static_counter!(telemetry::GATEWAY_ROUTE_CACHE, "result" => "hit")
                        .increment(1);
                    routes.push(Some(route));
                }
                None => {
                    telemetry::static_counter!(telemetry::GATEWAY_ROUTE_CACHE, "result" => "miss")
                        .increment(1);
                    misses.push((i, user));
                    routes.push(None);
                }
            }
        }
        for chunk in misses.chunks(LOOKUP_CHUNK) {
            let request_users = chunk.iter().map(|(_, u)| u.to_string()).collect();
            telemetry::static_counter!(telemetry::GATEWAY_LOOKUP_REQUESTS).increment(1);
            let reply: LookupReply = request_idempotent(
                &self.client,
                self.lookup_subject.clone(),
                encode(&LookupRequest {
                    users: request_users,
                }),
                self.timeout,
            )
            .await?;
            for &(i, user) in chunk {
                let Some(locations) = reply.users.get(user.as_str()) else {
                    continue;
                };
                let mut gateways: Vec<GatewayId> = Vec::with_capacity(locations.len());
                for location in locations {
                    if let Ok(gw) = GatewayId::new(&location.gateway) {
                        if !gateways.contains(&gw) {
                            gateways.push(gw);
                        }
                    }
                }
                if gateways.is_empty() {
                    self.cache.invalidate(user);
                    continue;
                }
                let route: Route = gateways.into();
                self.cache.insert(user.clone(), route.clone());
                routes[i] = Some(route);
            }
        }
        Ok(routes)
    }

    pub(crate) fn invalidate(&self, user: &UserId) {
        self.cache.invalidate(user);
    }
}

/// Drops cached routes of users whose gateways changed, until `shutdown`.
pub(crate) async fn follow_changes(
    resolver: Arc<Resolver>,
    client: Nats,
    subjects: Subjects,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut changes = client.subscribe(subjects.dir_changed_all()).await?;
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            msg = changes.next() => match msg { Some(msg) => msg, None => return Ok(()) },
        };
        if let Some(user) = subjects.dir_changed_user(&msg.subject) {
            resolver.invalidate(&user);
        }
    }
}
