//! Routing one message: resolve every receiver in one batch, group them by gateway, send
//! ONE deliver request per destination gateway, re-resolve the receivers that were not
//! where the directory said (once, bypassing the cache), and report per receiver.
//! A group message is resolved by a center (members by gateway) and then delivered the
//! same way; its report counts outcomes, and lists them for small groups.
//!
//! Receivers are worked on by position (routes and results are vectors in the order of
//! the receivers) and deliver requests borrow from the message: a 1:1 send builds no map
//! and copies no id (the route path was 15% of a gateway's CPU at saturation when it did).
//! The body travels as the sender's bytes (`RawValue`); nothing re-encodes it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::deliver::deliver;
use super::destinations::Batches;
use super::resolve::{Resolver, Route};
use super::session::Sessions;
use crate::config;
use crate::connection::{self, Nats, RequestFailure};
use crate::ident::{GatewayId, GroupId, MessageId, UserId};
use crate::pooled::Pool;
use crate::protocol::client::{FrameError, Report};
use crate::protocol::code::{ErrorCode, Outcome};
use crate::protocol::compact;
use crate::protocol::group::{Counts, GroupRequest, ResolveReply, REPORT_DETAIL_LIMIT};
use crate::protocol::nats::{encode, DeliverReply, DeliverRequest};
use crate::protocol::now_ms;
use crate::replies::Replies;
use crate::subject::{Subjects, GRP_RESOLVE};
use crate::telemetry;

/// A message ready to route (already validated for size and receiver count).
pub(crate) struct Message {
    pub(crate) id: MessageId,
    /// The sending user, or what a backend put in `from`.
    pub(crate) from: Option<String>,
    /// Receivers as the sender wrote them (duplicates and bad ids are handled here).
    pub(crate) to: Vec<String>,
    pub(crate) body: Box<RawValue>,
    /// The sender chose the id, so a retry may send it again: receivers' gateways filter
    /// repeats (see `recent`).
    pub(crate) dedupe: bool,
}

/// A message and how its deliver requests name receivers.
struct Envelope<'a> {
    message: &'a Message,
    /// Direct messages: the distinct valid receivers in the sender's order (the sender's
    /// own list when it has no duplicate or invalid id). Deliver requests name them by
    /// position, which is also their position among the routed receivers.
    to: Cow<'a, [String]>,
    /// Group messages: the group (then `to` is empty and members are named).
    group: Option<&'a str>,
    ts: u64,
}

impl Envelope<'_> {
    /// The deliver request for the receivers at positions `rcpt` of `users`.
    fn request<'b>(&'b self, users: &'b [UserId], rcpt: &'b [usize]) -> DeliverRequest<'b> {
        let message = self.message;
        let (indexes, members) = match self.group {
            None => (Cow::Borrowed(rcpt), Vec::new()),
            Some(_) => (
                Cow::Borrowed(&[][..]),
                rcpt.iter()
                    .map(|&i| Cow::Borrowed(users[i].as_str()))
                    .collect(),
            ),
        };
        DeliverRequest {
            id: Cow::Borrowed(message.id.as_str()),
            from: message.from.as_deref().map(Cow::Borrowed),
            to: Cow::Borrowed(&self.to),
            rcpt: indexes,
            group: self.group.map(Cow::Borrowed),
            members,
            ts: self.ts,
            body: &message.body,
            dedupe: message.dedupe,
        }
    }
}

/// Most receivers named in one deliver request: bigger groups of receivers on one gateway
/// are split so a request always fits in NATS `max_payload` (1000 ids of 256 bytes, each
/// escaped to at most twice its size, plus a 32 KiB body stay under 1 MiB).
const DELIVER_CHUNK: usize = 1000;

pub(crate) struct Router {
    pub(crate) gateway: GatewayId,
    client: Nats,
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

impl Attempt {
    /// Worth another try with a fresh route.
    fn stale(self) -> bool {
        matches!(self, Attempt::Absent | Attempt::Failed)
    }

    /// What a receiver's two attempts add up to: the retry decides, except that a first
    /// attempt that got no answer may still arrive, so "offline" after it is unavailable.
    fn then(self, retry: Attempt) -> Attempt {
        match (self, retry) {
            (Attempt::Failed, Attempt::Absent | Attempt::NoRoute) => Attempt::Failed,
            (_, retry) => retry,
        }
    }

    /// The outcome reported (and counted in the metrics).
    fn outcome(self) -> Outcome {
        match self {
            Attempt::Delivered => Outcome::Delivered,
            Attempt::Failed => Outcome::Unavailable,
            Attempt::Absent | Attempt::NoRoute => Outcome::Offline,
        }
    }
}

/// The distinct valid receivers of `to` in order, and the distinct invalid ids.
fn receivers(to: &[String], max_id_bytes: usize) -> (Vec<UserId>, Vec<&str>) {
    let mut valid: Vec<UserId> = Vec::with_capacity(to.len());
    let mut rejected: Vec<&str> = Vec::new();
    // A short list is searched; a long one (up to the receiver limit) gets a set.
    let mut seen: HashSet<&str> = HashSet::new();
    for raw in to {
        let duplicate = if to.len() <= 16 {
            valid.iter().any(|u| u.as_str() == raw) || rejected.contains(&raw.as_str())
        } else {
            !seen.insert(raw)
        };
        if duplicate {
            continue;
        }
        match UserId::new(raw).ok().filter(|_| raw.len() <= max_id_bytes) {
            Some(user) => valid.push(user),
            None => rejected.push(raw),
        }
    }
    (valid, rejected)
}

impl Router {
    /// The distinct valid receivers of `to` in order, and the distinct invalid ids.
    pub(crate) fn receivers<'a>(&self, to: &'a [String]) -> (Vec<UserId>, Vec<&'a str>) {
        receivers(to, self.max_id_bytes)
    }

    /// The router of gateway `gateway`. From `config`: the NATS request timeout, the
    /// longest receiver id, and deliver requests in flight per destination.
    pub(crate) fn new(
        gateway: GatewayId,
        client: Nats,
        subjects: Subjects,
        resolver: Arc<Resolver>,
        sessions: Arc<Sessions>,
        pooled: (Arc<Replies>, Arc<Pool>),
        config: &config::Gateway,
    ) -> Self {
        let timeout = config.nats.request_timeout();
        let max_id_bytes = config.limits.max_id_bytes;
        let batches = Batches::new(
            client.clone(),
            subjects.clone(),
            timeout,
            config.deliver_in_flight,
            Duration::from_micros(config.deliver_linger_us),
            pooled,
        );
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

    /// Routes `message` and says what happened to each distinct receiver.
    pub(crate) async fn route(&self, message: &Message) -> Report {
        let (users, rejected) = receivers(&message.to, self.max_id_bytes);
        let to = if users.len() == message.to.len() {
            Cow::Borrowed(&message.to[..])
        } else {
            Cow::Owned(users.iter().map(|u| u.to_string()).collect())
        };
        let envelope = Envelope {
            message,
            to,
            group: None,
            ts: now_ms(),
        };
        let mut results = self.attempt(&envelope, &users, false).await;
        self.retry_stale(&envelope, &users, &mut results).await;
        let mut status: BTreeMap<String, Outcome> = rejected
            .into_iter()
            .map(|raw| (raw.to_string(), Outcome::Rejected))
            .collect();
        for (user, attempt) in users.iter().zip(results) {
            let outcome = attempt.outcome();
            count(outcome, 1);
            status.insert(user.as_str().to_owned(), outcome);
        }
        Report::direct(message.id.as_str().to_string(), status)
    }

    /// Routes `message` to every member of `group` but the sender: a center resolves the
    /// members by gateway, then one deliver request goes to each gateway. `by` is the
    /// sender whose right to send is checked (`None`: a trusted backend).
    pub(crate) async fn route_group(
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
        let (users, routes) = member_routes(&reply);
        let envelope = Envelope {
            message,
            to: Cow::Borrowed(&[]),
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
        for (user, attempt) in users.iter().zip(results) {
            let outcome = attempt.outcome();
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
        results: &mut [Attempt],
    ) {
        if !results.iter().any(|r| r.stale()) {
            return;
        }
        let stale: Vec<usize> = (0..users.len()).filter(|&i| results[i].stale()).collect();
        for &i in &stale {
            self.resolver.invalidate(&users[i]);
        }
        // Deliver requests name direct receivers by position among all of them: the
        // retry routes only the stale ones but keeps their positions.
        let fresh = match self
            .resolver
            .resolve_each(stale.iter().map(|&i| &users[i]), true)
            .await
        {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, "directory look-up failed");
                for &i in &stale {
                    results[i] = Attempt::Failed;
                }
                return;
            }
        };
        let mut routes: Vec<Option<Route>> = vec![None; users.len()];
        for (&i, route) in stale.iter().zip(fresh) {
            routes[i] = route;
        }
        let again = self.deliver_round(envelope, users, &routes).await;
        for &i in &stale {
            results[i] = results[i].then(again[i]);
        }
    }

    /// One resolve + deliver round for `users`.
    async fn attempt(
        &self,
        envelope: &Envelope<'_>,
        users: &[UserId],
        fresh: bool,
    ) -> Vec<Attempt> {
        match self.resolver.resolve_each(users.iter(), fresh).await {
            Ok(routes) => self.deliver_round(envelope, users, &routes).await,
            Err(e) => {
                tracing::warn!(error = %e, "directory look-up failed");
                vec![Attempt::Failed; users.len()]
            }
        }
    }

    /// One deliver request per destination gateway (per [`DELIVER_CHUNK`] receivers),
    /// all at once; what happened to each of `users` (`routes[i]` is where `users[i]` is;
    /// receivers without a route are not sent anywhere).
    async fn deliver_round(
        &self,
        envelope: &Envelope<'_>,
        users: &[UserId],
        routes: &[Option<Route>],
    ) -> Vec<Attempt> {
        let mut results: Vec<Attempt> = routes
            .iter()
            .map(|r| match r {
                Some(_) => Attempt::Absent,
                None => Attempt::NoRoute,
            })
            .collect();
        let by_gateway = group_by_gateway(routes);
        let jobs: Vec<(&GatewayId, &[usize])> = by_gateway
            .iter()
            .flat_map(|(gateway, rcpt)| rcpt.chunks(DELIVER_CHUNK).map(|chunk| (*gateway, chunk)))
            .collect();
        // One destination (every 1:1 message): no join machinery around the one request.
        if let [(gateway, rcpt)] = jobs[..] {
            let request = envelope.request(users, rcpt);
            let result = self.deliver_to(gateway, &request).await;
            merge(&mut results, users, rcpt, result);
            return results;
        }
        let requests: Vec<DeliverRequest<'_>> = jobs
            .iter()
            .map(|&(_, rcpt)| envelope.request(users, rcpt))
            .collect();
        let deliveries = jobs
            .iter()
            .zip(&requests)
            .map(|(&(gateway, _), request)| self.deliver_to(gateway, request));
        let replies = futures::future::join_all(deliveries).await;
        for (&(_, rcpt), result) in jobs.iter().zip(replies) {
            merge(&mut results, users, rcpt, result);
        }
        results
    }

    /// One deliver request; this gateway delivers to itself without a NATS round trip.
    async fn deliver_to<'a>(
        &self,
        gateway: &GatewayId,
        request: &'a DeliverRequest<'_>,
    ) -> Result<DeliverReply<'a>, RequestFailure> {
        let requests = if *gateway == self.gateway {
            telemetry::static_counter!(telemetry::GATEWAY_DELIVER_REQUESTS, "target" => "local")
        } else {
            telemetry::static_counter!(telemetry::GATEWAY_DELIVER_REQUESTS, "target" => "remote")
        };
        requests.increment(1);
        if *gateway == self.gateway {
            return Ok(deliver(&self.sessions, request));
        }
        self.batches
            .deliver(gateway, compact::encode(request))
            .await
    }
}

/// The members of a resolved group and where each is (a member with sessions on several
/// gateways is listed under each of them in the reply, and once here).
fn member_routes(reply: &ResolveReply) -> (Vec<UserId>, Vec<Option<Route>>) {
    let mut users: Vec<UserId> = Vec::new();
    let mut gateways: Vec<Vec<GatewayId>> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (gateway, members) in &reply.gateways {
        let Ok(gateway) = GatewayId::new(gateway) else {
            continue;
        };
        for member in members {
            let i = match position.get(member.as_str()) {
                Some(&i) => i,
                None => {
                    let Ok(user) = UserId::new(member) else {
                        continue;
                    };
                    position.insert(member, users.len());
                    users.push(user);
                    gateways.push(Vec::new());
                    users.len() - 1
                }
            };
            gateways[i].push(gateway.clone());
        }
    }
    let routes = gateways.into_iter().map(|g| Some(g.into())).collect();
    (users, routes)
}

/// Counts `n` receivers with `outcome` in the metrics (once per report and outcome: a
/// counter look-up per group member was 4% of a gateway's CPU in group sends).
fn count(outcome: Outcome, n: u64) {
    if n > 0 {
        telemetry::deliveries(outcome, n);
    }
}

/// Positions of the receivers per destination gateway, in order of first appearance; a
/// user on several gateways is listed under each.
fn group_by_gateway(routes: &[Option<Route>]) -> Vec<(&GatewayId, Vec<usize>)> {
    let mut by_gateway: Vec<(&GatewayId, Vec<usize>)> = Vec::new();
    // Few destinations are searched; many get an index.
    let mut index: HashMap<&GatewayId, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        for gateway in route.iter().flat_map(|r| r.iter()) {
            let slot = if by_gateway.len() <= 8 {
                by_gateway.iter().position(|(g, _)| *g == gateway)
            } else {
                if index.is_empty() {
                    index.extend(by_gateway.iter().enumerate().map(|(k, (g, _))| (*g, k)));
                }
                index.get(gateway).copied()
            };
            match slot {
                Some(k) => by_gateway[k].1.push(i),
                None => {
                    if !index.is_empty() {
                        index.insert(gateway, by_gateway.len());
                    }
                    by_gateway.push((gateway, vec![i]));
                }
            }
        }
    }
    by_gateway
}

/// Folds one gateway's answer about the receivers at positions `rcpt` into `results`:
/// delivered anywhere wins, then failed (we cannot know), then absent.
fn merge(
    results: &mut [Attempt],
    users: &[UserId],
    rcpt: &[usize],
    result: Result<DeliverReply<'_>, RequestFailure>,
) {
    let mut raise = |i: usize, to: Attempt| {
        results[i] = match (results[i], to) {
            (Attempt::Delivered, _) | (_, Attempt::Delivered) => Attempt::Delivered,
            (Attempt::Failed, _) | (_, Attempt::Failed) => Attempt::Failed,
            _ => Attempt::Absent,
        };
    };
    match result {
        Ok(reply) => {
            // A chunk names up to 1000 receivers: a long reply is looked up in a set.
            let set: Option<HashSet<&str>> =
                (reply.delivered.len() > 8).then(|| reply.delivered.iter().map(|d| &**d).collect());
            for &i in rcpt {
                let id = users[i].as_str();
                let delivered = match &set {
                    Some(set) => set.contains(id),
                    None => reply.delivered.iter().any(|d| d == id),
                };
                if delivered {
                    raise(i, Attempt::Delivered);
                }
            }
        }
        Err(RequestFailure::NoResponders) => {}
        Err(e) => {
            tracing::warn!(error = %e, "deliver request failed");
            for &i in rcpt {
                raise(i, Attempt::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
