//! What a live session does with each client request: answers pings, routes sends and
//! group operations in tasks of their own (bounded per connection and per gateway), keeps
//! its presence subscriptions, and rate-limits (closing a flood).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::live::Live;
use super::{too_large, Close};
use crate::gateway::ops::{self, Caller, Ops};
use crate::gateway::{presence, session};
use crate::ident::UserId;
use crate::protocol::client::{parse, Frame, FrameError, Request};
use crate::protocol::code::ErrorCode;
use crate::protocol::nats::SendRequest;
use crate::telemetry;

impl Live {
    /// Handles one frame. Sends and group operations run in their own task (at most
    /// `sends_in_flight` at once; more wait, which slows reading this connection only).
    /// `Err(Some(reason))` closes the connection; errors for the client are queued here.
    pub(super) async fn on_frame(&mut self, text: &str) -> Result<(), Option<Close>> {
        let cx = Arc::clone(&self.cx);
        let limits = &cx.ops.limits;
        if text.len() > limits.max_frame_bytes {
            self.error(too_large(text.len(), limits.max_frame_bytes));
            return Ok(());
        }
        let request = match parse(text) {
            Ok(request) => request,
            Err(e) => {
                self.error(e);
                return Ok(());
            }
        };
        let caller = Caller::User(self.user.clone());
        match request {
            Request::Login { .. } => {
                self.error(FrameError::new(
                    ErrorCode::AlreadyLoggedIn,
                    "this connection is logged in",
                ));
            }
            Request::Ping { id } => {
                self.reports
                    .push(Frame::Pong { id: id.as_deref() }.encode());
            }
            Request::Send {
                to,
                id,
                body,
                offline,
                durable,
            } => {
                self.rate_limit(&id)?;
                let door = self.door.label();
                let request = SendRequest {
                    to,
                    from: None,
                    id,
                    body,
                    offline,
                    durable,
                };
                match ops::Send::check(&cx.ops, door, &caller, request) {
                    Ok(send) => {
                        self.spawn(move |ops| async move {
                            let report = send.run(&ops).await;
                            Ok(Frame::Report { report: &report }.encode())
                        })
                        .await
                    }
                    Err(e) => self.error(e),
                }
            }
            Request::GroupSend { group, id, body } => {
                self.rate_limit(&id)?;
                let door = self.door.label();
                match ops::GroupSend::check(&cx.ops, door, &caller, None, &group, id, body) {
                    Ok(send) => {
                        self.spawn(move |ops| async move {
                            let report = send.run(&ops).await?;
                            Ok(Frame::Report { report: &report }.encode())
                        })
                        .await
                    }
                    Err(e) => self.error(e),
                }
            }
            Request::Group {
                endpoint,
                id,
                request,
            } => {
                self.rate_limit(&id)?;
                self.spawn(move |ops| async move {
                    answer(
                        id,
                        ops::manage_group(&ops, &caller, endpoint, request).await,
                    )
                })
                .await;
            }
            Request::Presence { id, users } => {
                self.spawn(move |ops| async move {
                    let reply = ops::presence(&ops, &caller, users).await;
                    answer(
                        id,
                        reply.map(|r| serde_json::to_value(&r).expect("replies are serializable")),
                    )
                })
                .await;
            }
            Request::PresenceSubscribe {
                id,
                users,
                subscribe,
            } => {
                self.rate_limit(&id)?;
                // Boxed: rare, and four times the room of the rest of this future, which
                // is allocated for every frame.
                let subscribing = Box::pin(self.presence_subscribe(caller, users, subscribe, &id));
                if let Err(e) = subscribing.await {
                    self.error(e.with_id(id));
                }
            }
            Request::Fetch { id, since, limit } => {
                let user = self.user.to_string();
                self.spawn(move |ops| async move {
                    let fetched = ops.inbox.fetch(&caller, &user, since, limit).await;
                    answer(id, fetched)
                })
                .await;
            }
            Request::Ack { id, seq } => {
                let (user, handle) = (self.user.clone(), self.reports.clone());
                self.spawn(move |ops| async move {
                    let acked = ops.inbox.ack(&caller, user.as_str(), seq).await;
                    if acked.is_ok() {
                        // Room in the window: push what waits.
                        handle.acked(seq);
                        let inbox = ops.inbox.clone();
                        inbox.tasks.spawn(inbox.clone().drain(user, handle));
                    }
                    let acked = acked.map(|r| serde_json::to_value(r).expect("replies serialize"));
                    answer(id, acked)
                })
                .await;
            }
            Request::GroupList { id } => {
                let user = self.user.to_string();
                self.spawn(move |ops| async move {
                    answer(id, ops::list_groups(&ops, &caller, user).await)
                })
                .await;
            }
        }
        Ok(())
    }

    /// Starts or stops this session's presence subscriptions; answers with a `result`:
    /// the current presence of the users now watched, and those the policy refused.
    async fn presence_subscribe(
        &mut self,
        caller: Caller,
        users: Vec<String>,
        subscribe: bool,
        id: &Option<String>,
    ) -> Result<(), FrameError> {
        let mut targets = Vec::with_capacity(users.len());
        for raw in &users {
            targets.push(
                UserId::new(raw)
                    .map_err(|e| FrameError::new(ErrorCode::BadId, format!("user: {e}")))?,
            );
        }
        let me = &self.reports.id;
        if !subscribe {
            for target in &targets {
                self.cx.presence.unwatch(target, me);
                self.watching.remove(target);
            }
            let result = serde_json::json!({ "unsubscribed": users });
            self.reports.push(
                Frame::Result {
                    id: id.as_deref(),
                    result: &result,
                }
                .encode(),
            );
            return Ok(());
        }
        let new: HashSet<&UserId> = targets
            .iter()
            .filter(|t| !self.watching.contains(*t))
            .collect();
        if self.watching.len() + new.len() > presence::MAX_WATCHED {
            let message = format!("a session watches at most {} users", presence::MAX_WATCHED);
            return Err(FrameError::new(ErrorCode::TooManyReceivers, message));
        }
        let cx = &self.cx;
        let reply = ops::presence(&cx.ops, &caller, users).await?;
        for target in targets
            .iter()
            .filter(|t| reply.users.contains_key(t.as_str()))
        {
            cx.presence
                .watch(target, self.reports.clone())
                .await
                .map_err(|e| {
                    FrameError::new(ErrorCode::Unavailable, format!("subscribing: {e:#}"))
                })?;
            self.watching.insert(target.clone());
        }
        let result = serde_json::to_value(&reply).expect("replies are serializable");
        self.reports.push(
            Frame::Result {
                id: id.as_deref(),
                result: &result,
            }
            .encode(),
        );
        Ok(())
    }

    /// Takes a token from the connection's bucket; refuses (and at last closes a flood).
    fn rate_limit(&mut self, id: &Option<String>) -> Result<(), Option<Close>> {
        if self.rate.check().is_ok() {
            self.limited_in_a_row = 0;
            return Ok(());
        }
        self.limited_in_a_row += 1;
        if self.limited_in_a_row >= self.cx.ops.limits.flood_after {
            return Err(Some(Close::Flood));
        }
        let mut e = FrameError::new(
            ErrorCode::RateLimited,
            "too many requests; this one was dropped",
        );
        e.id = id.clone();
        self.error(e);
        Err(None)
    }

    /// Runs `work` in its own task (bounded by `sends_in_flight`) and queues the frame it
    /// makes, or its error, on this session.
    async fn spawn<F, Fut>(&mut self, work: F)
    where
        F: FnOnce(Arc<Ops>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Bytes, FrameError>> + Send + 'static,
    {
        // This connection's share, then the gateway's: when the gateway is saturated it
        // stops reading its clients (TCP pushes back) instead of piling up routes that
        // would time out and be retried (docs/PERFORMANCE.md, overload).
        let in_flight = self.cx.ops.limits.sends_in_flight;
        let permit = self
            .sends
            .get_or_insert_with(|| Arc::new(Semaphore::new(in_flight)))
            .clone()
            .acquire_owned()
            .await
            .expect("the send semaphore is never closed");
        let routing = self
            .cx
            .routing
            .clone()
            .acquire_owned()
            .await
            .expect("the routing semaphore is never closed");
        let reports = self.reports.clone();
        // Boxed: a routing future is several KiB, and spawning moves a task's future more
        // than once (3% of a gateway's instructions were those copies).
        let work = Box::pin(work(self.cx.ops.clone()));
        self.cx.tracker.spawn(async move {
            let frame = match work.await {
                Ok(frame) => frame,
                Err(e) => {
                    telemetry::error(e.code);
                    Frame::from(&e).encode()
                }
            };
            // The session's only request in flight: its report goes into the socket from
            // here when the session's task waits. With others in flight their reports
            // may follow at once, and the session's task writes them together.
            if permit.semaphore().available_permits() + 1 >= in_flight {
                session::write_through(|| reports.push(frame));
            } else {
                reports.push(frame);
            }
            drop((permit, routing));
        });
    }
}

/// The `result` frame answering the frame `id`, or the error for it.
fn answer(
    id: Option<String>,
    result: Result<serde_json::Value, FrameError>,
) -> Result<Bytes, FrameError> {
    let result = result.map_err(|e| e.with_id(id.clone()))?;
    Ok(Frame::Result {
        id: id.as_deref(),
        result: &result,
    }
    .encode())
}
