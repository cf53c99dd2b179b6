//! Deliver requests to one destination gateway travel in batches when they pile up.
//!
//! Each destination has a small task with at most [`IN_FLIGHT`] NATS requests out at once.
//! A deliver request that finds a free slot goes out alone, at once (no added latency at
//! low load); those that arrive while every slot is busy wait and leave together, as one
//! JSON array, in the next free slot. Under load the writes, wake-ups and request
//! overheads per message shrink with the batch size (docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::{request, RequestFailure};
use crate::ident::GatewayId;
use crate::protocol::nats::DeliverReply;
use crate::subject::Subjects;

/// NATS requests out at once to one destination gateway.
pub const IN_FLIGHT: usize = 4;
/// Most deliver requests in one batch.
const MAX_BATCH: usize = 64;
/// Most bytes in one batch (well below NATS `max_payload`; one request may exceed it alone).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Deliver requests waiting for one destination before senders wait too.
const QUEUE: usize = 4096;

type Answer = oneshot::Sender<Result<DeliverReply, RequestFailure>>;

/// One encoded deliver request and who waits for its reply.
struct Job {
    payload: Bytes,
    answer: Answer,
}

/// The batching senders, one per destination gateway, created on first use.
pub struct Batches {
    client: Client,
    subjects: Subjects,
    timeout: Duration,
    senders: Mutex<HashMap<GatewayId, mpsc::Sender<Job>>>,
}

impl Batches {
    pub fn new(client: Client, subjects: Subjects, timeout: Duration) -> Self {
        Batches {
            client,
            subjects,
            timeout,
            senders: Mutex::default(),
        }
    }

    /// Sends one encoded deliver request to `gateway` and waits for its own reply.
    pub async fn deliver(
        &self,
        gateway: &GatewayId,
        payload: Bytes,
    ) -> Result<DeliverReply, RequestFailure> {
        let sender = self.sender(gateway);
        let (answer, reply) = oneshot::channel();
        if sender.send(Job { payload, answer }).await.is_err() {
            return Err(RequestFailure::Other("deliver batcher stopped".into()));
        }
        reply
            .await
            .unwrap_or_else(|_| Err(RequestFailure::Other("deliver batch dropped".into())))
    }

    fn sender(&self, gateway: &GatewayId) -> mpsc::Sender<Job> {
        let mut senders = self
            .senders
            .lock()
            .expect("batch lock is never held across a panic");
        if let Some(sender) = senders.get(gateway).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let subject = self.subjects.deliver(gateway);
        tokio::spawn(run(self.client.clone(), subject, self.timeout, rx));
        senders.insert(gateway.clone(), tx.clone());
        tx
    }
}

/// The task of one destination: takes a free slot, then everything queued meanwhile.
async fn run(client: Client, subject: String, timeout: Duration, mut rx: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots semaphore is never closed");
        let mut jobs = vec![first];
        let mut bytes = jobs[0].payload.len();
        while jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.payload.len() + 1;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (client, subject) = (client.clone(), subject.clone());
        tokio::spawn(async move {
            send(&client, subject, timeout, jobs).await;
            drop(slot);
        });
    }
}

/// One NATS request for `jobs`: a single deliver request as it is, several as an array.
async fn send(client: &Client, subject: String, timeout: Duration, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let _ = job
            .answer
            .send(request(client, subject, job.payload, timeout).await);
        return;
    }
    metrics::counter!(crate::telemetry::GATEWAY_DELIVER_BATCHES).increment(1);
    let mut payload =
        BytesMut::with_capacity(jobs.iter().map(|j| j.payload.len() + 1).sum::<usize>() + 1);
    payload.put_u8(b'[');
    for (i, job) in jobs.iter().enumerate() {
        if i > 0 {
            payload.put_u8(b',');
        }
        payload.put_slice(&job.payload);
    }
    payload.put_u8(b']');
    let replies: Result<Vec<DeliverReply>, RequestFailure> =
        request(client, subject, payload.freeze(), timeout).await;
    match replies {
        Ok(replies) if replies.len() == jobs.len() => {
            for (job, reply) in jobs.into_iter().zip(replies) {
                let _ = job.answer.send(Ok(reply));
            }
        }
        Ok(replies) => {
            let why = format!("{} replies to a batch of {}", replies.len(), jobs.len());
            for job in jobs {
                let _ = job.answer.send(Err(RequestFailure::Other(why.clone())));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.answer.send(Err(e.same()));
            }
        }
    }
}
