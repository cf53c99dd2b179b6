//! Routing one message: resolve every receiver in one batch, group them by gateway, send
//! ONE deliver request per destination gateway, re-resolve the receivers that were not
//! where the directory said (once, bypassing the cache), and report per receiver.
//! A group message is resolved by a center (members by gateway) and then delivered the
//! same way; its report counts outcomes, and lists them for small groups.
//!
//! The body travels as the sender's bytes (`RawValue`); nothing re-encodes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use serde_json::value::RawValue;

use super::batch::Batches;
use super::deliver::deliver;
use super::resolve::{Resolver, Route};
use super::session::Sessions;
use crate::center::groups::REPORT_DETAIL_LIMIT;
use crate::connection::{self, RequestFailure};
use crate::ident::{GatewayId, GroupId, MessageId, UserId};
use crate::protocol::client::{FrameError, Report};
use crate::protocol::code::{ErrorCode, Outcome};
use crate::protocol::group::{Counts, GroupRequest, ResolveReply};
use crate::protocol::nats::{encode, DeliverReply, DeliverRequest};
use crate::protocol::now_ms;
use crate::subject::{Subjects, GRP_RESOLVE};
use crate::telemetry;

/// A message ready to route (already validated for size and receiver count).
pub struct Message {
    pub id: MessageId,
    /// The sending user, or what a backend put in `from`.
    pub from: Option<String>,
    /// Receivers as the sender wrote them (duplicates and bad ids are handled here).
    pub to: Vec<String>,
    pub body: Box<RawValue>,
}

/// A message and how its deliver requests name receivers.
struct Envelope<'a> {
    message: &'a Message,
    /// Direct messages: the deduplicated, valid receivers in the sender's order.
    to: Vec<String>,
    /// Index of each receiver in `to`; deliver requests name direct receivers by index.
    positions: HashMap<UserId, usize>,
    /// Group messages: the group (then `to` is empty and members are named).
    group: Option<&'a str>,
    ts: u64,
}

impl Envelope<'_> {
    /// The deliver request for `rcpt` on one gateway.
    fn request(&self, rcpt: &[UserId]) -> DeliverRequest<'_> {
        let message = self.message;
        let (indexes, members) = match self.group {
            None => (
                rcpt.iter()
                    .filter_map(|u| self.positions.get(u).copied())
                    .collect(),
                Vec::new(),
            ),
            Some(_) => (Vec::new(), rcpt.iter().map(|u| u.to_string()).collect()),
        };
        DeliverRequest {
            id: message.id.as_str().to_string(),
            from: message.from.clone(),
            to: self.to.clone(),
            rcpt: indexes,
            group: self.group.map(str::to_string),
            members,
            ts: self.ts,
            body: &message.body,
        }
    }
}

/// Most receivers named in one deliver request: bigger groups of receivers on one gateway
/// are split so a request always fits in NATS `max_payload` (1000 ids of 256 bytes, each
/// escaped to at most twice its size, plus a 32 KiB body stay under 1 MiB).
const DELIVER_CHUNK: usize = 1000;

pub struct Router {
    pub gateway: GatewayId,
    client: Client,
    subjects: Subjects,
    resolver: Arc<Resolver>,
    sessions: Arc<Sessions>,
    timeout: Duration,
    /// Receivers with longer ids are rejected.
    max_id_bytes: usize,
    /// Deliver requests to other gateways, batched when they pile up.
    batches: Batches,
}

/// How one delivery attempt went for one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// The directory knows no session of the user.
    NoRoute,
    /// The route was stale: the gateway said "not here" or had no responders.
    Absent,
    /// The gateway (or the directory) did not answer in time.
    Failed,
}

impl Router {
    pub fn new(
        gateway: GatewayId,
        client: Client,
        subjects: Subjects,
        resolver: Arc<Resolver>,
        sessions: Arc<Sessions>,
        timeout: Duration,
        max_id_bytes: usize,
    ) -> Self {
        let batches = Batches::new(client.clone(), subjects.clone(), timeout);
        Router {
            gateway,
            client,
            subjects,
            resolver,
            sessions,
            timeout,
            max_id_bytes,
            batches,
        }
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Routes `message` and says what happened to each distinct receiver.
    pub async fn route(&self, message: &Message) -> Report {
        let mut status = BTreeMap::new();
        let mut receivers: Vec<UserId> = Vec::with_capacity(message.to.len());
        for raw in &message.to {
            if status.contains_key(raw) {
                continue;
            }
            match UserId::new(raw)
                .ok()
                .filter(|_| raw.len() <= self.max_id_bytes)
            {
                Some(user) => {
                    status.insert(raw.clone(), Outcome::Offline);
                    receivers.push(user);
                }
                None => {
                    status.insert(raw.clone(), Outcome::Rejected);
                }
            }
        }
        let envelope = Envelope {
            message,
            to: receivers.iter().map(|u| u.to_string()).collect(),
            positions: receivers
                .iter()
                .enumerate()
                .map(|(i, u)| (u.clone(), i))
                .collect(),
            group: None,
            ts: now_ms(),
        };
        let mut results = self.attempt(&envelope, &receivers, false).await;
        self.retry_stale(&envelope, &receivers, &mut results).await;
        for user in &receivers {
            let outcome = outcome(results.get(user));
            count(outcome, 1);
            status.insert(user.to_string(), outcome);
        }
        Report::direct(message.id.as_str().to_string(), status)
    }

    /// Routes `message` to every member of `group` but the sender: a center resolves the
    /// members by gateway, then one deliver request goes to each gateway. `by` is the
    /// sender whose right to send is checked (`None`: a trusted backend).
    pub async fn route_group(
        &self,
        message: &Message,
        group: &GroupId,
        by: Option<&UserId>,
    ) -> Result<Report, FrameError> {
        let request = GroupRequest {
            group: group.to_string(),
            by: by.map(|b| b.to_string()),
            ..Default::default()
        };
        let subject = self.subjects.group(GRP_RESOLVE);
        let reply: ResolveReply =
            connection::request_idempotent(&self.client, subject, encode(&request), self.timeout)
                .await
                .map_err(|e| match e {
                    RequestFailure::Remote(body) => FrameError::new(body.code, body.message),
                    e => FrameError::new(ErrorCode::Unavailable, format!("groups: {e}")),
                })
                .map_err(|mut e| {
                    e.id = Some(message.id.as_str().to_string());
                    e
                })?;
        let mut routes: HashMap<UserId, Vec<GatewayId>> = HashMap::new();
        for (gateway, members) in &reply.gateways {
            let Ok(gateway) = GatewayId::new(gateway) else {
                continue;
            };
            for member in members.iter().filter_map(|m| UserId::new(m).ok()) {
                routes.entry(member).or_default().push(gateway.clone());
            }
        }
        let users: Vec<UserId> = routes.keys().cloned().collect();
        let routes: HashMap<UserId, Route> =
            routes.into_iter().map(|(u, g)| (u, g.into())).collect();
        let envelope = Envelope {
            message,
            to: Vec::new(),
            positions: HashMap::new(),
            group: Some(group.as_str()),
            ts: now_ms(),
        };
        let mut results = self.deliver_round(&envelope, &users, &routes).await;
        self.retry_stale(&envelope, &users, &mut results).await;

        let mut counts = Counts {
            offline: reply.offline,
            ..Counts::default()
        };
        let mut status = BTreeMap::new();
        let mut routed = Counts::default();
        for user in &users {
            let outcome = outcome(results.get(user));
            match outcome {
                Outcome::Delivered => routed.delivered += 1,
                Outcome::Unavailable => routed.unavailable += 1,
                _ => routed.offline += 1,
            }
            if reply.size <= REPORT_DETAIL_LIMIT {
                status.insert(user.to_string(), outcome);
            }
        }
        count(Outcome::Delivered, routed.delivered as u64);
        count(Outcome::Unavailable, routed.unavailable as u64);
        count(Outcome::Offline, routed.offline as u64);
        counts.delivered += routed.delivered;
        counts.unavailable += routed.unavailable;
        counts.offline += routed.offline;
        for member in &reply.offline_members {
            status.insert(member.clone(), Outcome::Offline);
        }
        let id = message.id.as_str().to_string();
        Ok(Report {
            id,
            status,
            group: Some(group.to_string()),
            counts: Some(counts),
        })
    }

    /// Re-resolves the receivers whose route was stale (not there, no responders, no
    /// answer) without the cache, and tries them once more.
    async fn retry_stale(
        &self,
        envelope: &Envelope<'_>,
        users: &[UserId],
        results: &mut HashMap<UserId, Attempt>,
    ) {
        let stale: Vec<UserId> = users
            .iter()
            .filter(|u| matches!(results.get(*u), Some(Attempt::Absent | Attempt::Failed)))
            .cloned()
            .collect();
        if stale.is_empty() {
            return;
        }
        for user in &stale {
            self.resolver.invalidate(user).await;
        }
        results.extend(self.attempt(envelope, &stale, true).await);
    }

    /// One resolve + deliver round for `users`.
    async fn attempt(
        &self,
        envelope: &Envelope<'_>,
        users: &[UserId],
        fresh: bool,
    ) -> HashMap<UserId, Attempt> {
        let routes = match self.resolver.resolve(users, fresh).await {
            Ok(routes) => routes,
            Err(e) => {
                tracing::warn!(error = %e, "directory look-up failed");
                return users.iter().map(|u| (u.clone(), Attempt::Failed)).collect();
            }
        };
        self.deliver_round(envelope, users, &routes).await
    }

    /// One deliver request per destination gateway (per [`DELIVER_CHUNK`] receivers),
    /// all at once; what happened to each of `users`.
    async fn deliver_round(
        &self,
        envelope: &Envelope<'_>,
        users: &[UserId],
        routes: &HashMap<UserId, Route>,
    ) -> HashMap<UserId, Attempt> {
        let by_gateway = group_by_gateway(users, routes);
        let chunks = by_gateway.iter().flat_map(|(gateway, rcpt)| {
            rcpt.chunks(DELIVER_CHUNK)
                .map(move |chunk| (gateway, chunk))
        });
        let deliveries = chunks.map(|(gateway, rcpt)| async move {
            let result = self.deliver_to(gateway, &envelope.request(rcpt)).await;
            (rcpt, result)
        });
        let mut results: HashMap<UserId, Attempt> = users
            .iter()
            .map(|u| {
                let routed = routes.contains_key(u);
                (
                    u.clone(),
                    if routed {
                        Attempt::Absent
                    } else {
                        Attempt::NoRoute
                    },
                )
            })
            .collect();
        // One destination (every 1:1 message): no join machinery around the one request.
        let mut deliveries: Vec<_> = deliveries.collect();
        if deliveries.len() == 1 {
            let (rcpt, result) = deliveries.pop().expect("one delivery").await;
            merge(&mut results, rcpt, result);
            return results;
        }
        for (rcpt, result) in futures::future::join_all(deliveries).await {
            merge(&mut results, rcpt, result);
        }
        results
    }

    /// One deliver request; this gateway delivers to itself without a NATS round trip.
    async fn deliver_to(
        &self,
        gateway: &GatewayId,
        request: &DeliverRequest<'_>,
    ) -> Result<DeliverReply, RequestFailure> {
        let target = if *gateway == self.gateway {
            "local"
        } else {
            "remote"
        };
        metrics::counter!(telemetry::GATEWAY_DELIVER_REQUESTS, "target" => target).increment(1);
        if *gateway == self.gateway {
            return Ok(deliver(&self.sessions, request));
        }
        self.batches.deliver(gateway, encode(request)).await
    }
}

/// The outcome of one receiver after the last attempt (counted in the metrics).
fn outcome(attempt: Option<&Attempt>) -> Outcome {
    match attempt {
        Some(Attempt::Delivered) => Outcome::Delivered,
        Some(Attempt::Failed) => Outcome::Unavailable,
        Some(Attempt::Absent | Attempt::NoRoute) | None => Outcome::Offline,
    }
}

/// Counts `n` receivers with `outcome` in the metrics (once per report and outcome: a
/// counter look-up per group member was 4% of a gateway's CPU in group sends).
fn count(outcome: Outcome, n: u64) {
    if n > 0 {
        metrics::counter!(telemetry::GATEWAY_DELIVERIES, "outcome" => outcome.as_str())
            .increment(n);
    }
}

/// Receivers per gateway; a user on several gateways is listed under each.
fn group_by_gateway(
    users: &[UserId],
    routes: &HashMap<UserId, Route>,
) -> HashMap<GatewayId, Vec<UserId>> {
    let mut by_gateway: HashMap<GatewayId, Vec<UserId>> = HashMap::new();
    for user in users {
        for gateway in routes.get(user).map(|r| &r[..]).unwrap_or_default() {
            by_gateway
                .entry(gateway.clone())
                .or_default()
                .push(user.clone());
        }
    }
    by_gateway
}

/// Folds one gateway's answer into the per-user results: delivered anywhere wins, then
/// failed (we cannot know), then absent.
fn merge(
    results: &mut HashMap<UserId, Attempt>,
    rcpt: &[UserId],
    result: Result<DeliverReply, RequestFailure>,
) {
    let mut raise = |user: &UserId, to: Attempt| {
        if let Some(current) = results.get_mut(user) {
            *current = match (*current, to) {
                (Attempt::Delivered, _) | (_, Attempt::Delivered) => Attempt::Delivered,
                (Attempt::Failed, _) | (_, Attempt::Failed) => Attempt::Failed,
                _ => Attempt::Absent,
            };
        }
    };
    match result {
        Ok(reply) => {
            // A chunk names up to 1000 receivers: look them up in a set, not a list.
            let delivered: std::collections::HashSet<&str> =
                reply.delivered.iter().map(String::as_str).collect();
            for user in rcpt {
                if delivered.contains(user.as_str()) {
                    raise(user, Attempt::Delivered);
                }
            }
        }
        Err(RequestFailure::NoResponders) => {}
        Err(e) => {
            tracing::warn!(error = %e, "deliver request failed");
            for user in rcpt {
                raise(user, Attempt::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::new(id).unwrap()
    }

    #[test]
    fn groups_receivers_once_per_gateway() {
        let g1 = GatewayId::new("g1").unwrap();
        let g2 = GatewayId::new("g2").unwrap();
        let routes: HashMap<UserId, Route> = [
            (user("a"), Route::from(vec![g1.clone()])),
            (user("b"), Route::from(vec![g1.clone(), g2.clone()])),
        ]
        .into();
        let grouped = group_by_gateway(&[user("a"), user("b"), user("c")], &routes);
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[&g1], vec![user("a"), user("b")]);
        assert_eq!(grouped[&g2], vec![user("b")]);
    }

    #[test]
    fn delivered_anywhere_wins_over_absent_and_failed() {
        let mut results: HashMap<UserId, Attempt> =
            [(user("a"), Attempt::Absent), (user("b"), Attempt::Absent)].into();
        merge(
            &mut results,
            &[user("a"), user("b")],
            Err(RequestFailure::TimedOut),
        );
        let reply = DeliverReply {
            delivered: vec!["a".into()],
            absent: vec!["b".into()],
        };
        merge(&mut results, &[user("a"), user("b")], Ok(reply));
        assert_eq!(results[&user("a")], Attempt::Delivered);
        assert_eq!(results[&user("b")], Attempt::Failed);
        merge(
            &mut results,
            &[user("b")],
            Err(RequestFailure::NoResponders),
        );
        assert_eq!(results[&user("b")], Attempt::Failed);
    }
}
