//! Deliver requests to each destination gateway go through one [`Batcher`] per
//! destination, created on first use: alone at low load, as JSON arrays when they pile up.
//! Their replies come back pooled (`crate::pooled`), and the replies this gateway owes a
//! destination leave with each request to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;

use crate::batch::{Batcher, Limits, Pooled};
use crate::connection::{Nats, RequestFailure};
use crate::ident::GatewayId;
use crate::pooled::Pool;
use crate::protocol::nats::DeliverReply;
use crate::replies::Replies;
use crate::subject::Subjects;
use crate::sync;

/// How deliver requests to one destination batch: at most 1024 deliver requests or 256 KiB
/// in one; `in_flight` is `--deliver-in-flight`. The byte bound is the one that binds (a
/// 1:1 deliver request is ~250 bytes): a count of 64 capped one destination at 4 × 64
/// messages in flight, i.e. at 51k msg/s once a round trip under load reaches 5 ms.
const LIMITS: Limits = Limits {
    in_flight: 4,
    max_calls: 1024,
    max_bytes: 256 * 1024,
    queue: 4096,
};

/// The batchers, one per destination gateway.
pub(crate) struct Batches {
    client: Nats,
    subjects: Subjects,
    timeout: Duration,
    limits: Limits,
    replies: Arc<Replies>,
    pool: Arc<Pool>,
    linger: Duration,
    batchers: Mutex<HashMap<GatewayId, Batcher>>,
}

impl Batches {
    pub(crate) fn new(
        client: Nats,
        subjects: Subjects,
        timeout: Duration,
        in_flight: usize,
        linger: Duration,
        (replies, pool): (Arc<Replies>, Arc<Pool>),
    ) -> Self {
        Batches {
            client,
            subjects,
            timeout,
            limits: Limits {
                in_flight,
                ..LIMITS
            },
            replies,
            pool,
            linger,
            batchers: Mutex::default(),
        }
    }

    /// Sends one encoded deliver request to `gateway` and waits for its own reply.
    pub(crate) async fn deliver(
        &self,
        gateway: &GatewayId,
        payload: Bytes,
    ) -> Result<DeliverReply<'static>, RequestFailure> {
        let batcher = self.batcher(gateway);
        let decode = |reply: &[u8]| DeliverReply::decode(reply).map_err(RequestFailure::from);
        batcher.request_with(payload, decode).await
    }

    fn batcher(&self, gateway: &GatewayId) -> Batcher {
        let mut batchers = sync::lock(&self.batchers);
        batchers
            .entry(gateway.clone())
            .or_insert_with(|| {
                let subject = self.subjects.deliver(gateway);
                let pooled = Pooled {
                    replies: self.replies.clone(),
                    pool: self.pool.clone(),
                    peer: self.subjects.replies(gateway),
                    linger: self.linger,
                };
                let (client, timeout) = (self.client.clone(), self.timeout);
                Batcher::start_pooled(client, subject, timeout, self.limits, pooled)
            })
            .clone()
    }
}
