//! What NATS itself does on this machine, measured in the same run as MRC so MRC's
//! figures can be given as ratios: request-reply with a fixed number of requests in
//! flight (a responder on a second connection of this process echoes the payload), and
//! publish-subscribe of the same payload from one connection to another.
//!
//! For the durable inbox, the raw JetStream publish rate ([`jetstream_publish`]): the
//! same publish-and-wait-for-the-ack that storing a message is, minus everything MRC
//! does around it.
//!
//! Subjects are fresh inboxes (the JetStream baseline: `bench.jetstream.<nuid>` in a
//! stream of its own), so a baseline never touches an MRC subject.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::Client;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::output::Output;
use super::procs::{self, Watched};
use super::stats::{self, Micros, Percentiles, Rate};
use mrc::sync;
use mrc::{config, connection};

/// The baseline figures.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Request-reply round trips per second.
    pub request_reply: f64,
    /// Messages per second the subscriber received.
    pub pub_sub: f64,
}

/// Hard cap on operations per measurement, whatever the duration.
const MAX_OPS: u64 = 100_000_000;

/// Measures both baselines; `when` names the measurement in what is printed and recorded
/// (`before` or `after` the load steps).
pub async fn run(
    nats: &config::Nats,
    payload: usize,
    in_flight: usize,
    duration: Duration,
    when: &str,
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<Baseline> {
    let requester = connection::connect(nats, "mrc bench requester")
        .await?
        .client;
    let responder = connection::connect(nats, "mrc bench responder")
        .await?
        .client;
    let body = Bytes::from(vec![b'x'; payload]);

    let before = watched.sample();
    let (request_reply, request_latency) =
        request_reply(&requester, &responder, body.clone(), in_flight, duration).await?;
    let rr_usage = watched.usage(&before, &watched.sample());
    println!(
        "baseline ({when}): NATS request-reply, {in_flight} in flight, {payload} B: {} (p50 {}, p99 {})",
        Rate(request_reply),
        Micros(request_latency.p50),
        Micros(request_latency.p99)
    );
    println!("  {:>9} {}", "cpu/rss", procs::describe(&rr_usage));

    let before = watched.sample();
    let (published, pub_sub) = pub_sub(&requester, &responder, body, duration).await?;
    let ps_usage = watched.usage(&before, &watched.sample());
    println!(
        "baseline ({when}): NATS publish-subscribe, {payload} B: {} received ({} published)",
        Rate(pub_sub),
        Rate(published)
    );
    println!("  {:>9} {}", "cpu/rss", procs::describe(&ps_usage));
    out.record(
        "baseline",
        "nats",
        serde_json::json!({
            "when": when,
            "payload": payload,
            "in_flight": in_flight,
            "duration_s": duration.as_secs_f64(),
            "request_reply_per_s": request_reply,
            "request_latency": request_latency.to_json(),
            "request_reply_procs": procs::to_json(&rr_usage),
            "pub_sub_per_s": pub_sub,
            "published_per_s": published,
            "pub_sub_procs": procs::to_json(&ps_usage),
        }),
    );
    Ok(Baseline {
        request_reply,
        pub_sub,
    })
}

/// Round trips per second with `in_flight` requests outstanding, and their latency.
async fn request_reply(
    requester: &Client,
    responder: &Client,
    body: Bytes,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Percentiles)> {
    let subject = responder.new_inbox();
    let mut requests = responder.subscribe(subject.clone()).await?;
    let echo = responder.clone();
    let serving = tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                let _ = echo.publish(reply, msg.payload).await;
            }
        }
    });
    responder.flush().await?;
    let one = || {
        let (requester, subject, body) = (requester.clone(), subject.clone(), body.clone());
        async move {
            let r = tokio::time::timeout(Duration::from_secs(5), requester.request(subject, body))
                .await;
            matches!(r, Ok(Ok(_)))
        }
    };
    let (rate, failed, latency) = keep_in_flight(in_flight, duration, one).await;
    serving.abort();
    if failed > 0 {
        eprintln!("baseline: {failed} requests failed or timed out");
    }
    Ok((rate, latency))
}

/// Runs `one()` with `in_flight` of them outstanding at a time for `duration` (each says
/// whether it succeeded): successes per second, failures, and the successes' latency.
async fn keep_in_flight<F, Fut>(
    in_flight: usize,
    duration: Duration,
    one: F,
) -> (f64, u64, Percentiles)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let timed = |t0: Instant| {
        let op = one();
        async move { (t0, op.await) }
    };
    let mut latency = stats::histogram();
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    let end = start + duration;
    let (mut done, mut failed) = (0u64, 0u64);
    for _ in 0..in_flight.max(1) {
        pending.push(timed(Instant::now()));
    }
    while let Some((t0, ok)) = pending.next().await {
        if ok {
            done += 1;
            latency.saturating_record(t0.elapsed().as_micros().max(1) as u64);
        } else {
            failed += 1;
        }
        if Instant::now() < end && done + failed < MAX_OPS {
            pending.push(timed(Instant::now()));
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    (rate, failed, Percentiles::of(&latency))
}

/// Publishes as fast as the client takes messages for `duration`; returns the publish
/// rate and the rate the subscriber received at (until it had everything, or 5 s more).
async fn pub_sub(
    publisher: &Client,
    subscriber: &Client,
    body: Bytes,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let subject = subscriber.new_inbox();
    let mut messages = subscriber.subscribe(subject.clone()).await?;
    subscriber.flush().await?;
    let received = Arc::new(AtomicU64::new(0));
    let last = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let counting = {
        let (received, last) = (received.clone(), last.clone());
        tokio::spawn(async move {
            while messages.next().await.is_some() {
                received.fetch_add(1, Relaxed);
                *sync::lock(&last) = Some(Instant::now());
            }
        })
    };
    let start = Instant::now();
    let end = start + duration;
    let mut published = 0u64;
    while published < MAX_OPS {
        // Check the clock every 256 messages: publishing is far cheaper than reading it.
        if published % 256 == 0 && Instant::now() >= end {
            break;
        }
        publisher
            .publish(subject.clone(), body.clone())
            .await
            .context("publishing")?;
        published += 1;
    }
    publisher.flush().await.context("flushing")?;
    let publish_time = start.elapsed();
    let wait_end = Instant::now() + Duration::from_secs(5);
    while received.load(Relaxed) < published && Instant::now() < wait_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    counting.abort();
    let got = received.load(Relaxed);
    let until = sync::lock(&last).unwrap_or(start + publish_time);
    let receive_time = until.saturating_duration_since(start).max(publish_time);
    if got < published {
        eprintln!(
            "baseline: the subscriber missed {} of {published} (slow consumer)",
            published - got
        );
    }
    Ok((
        published as f64 / publish_time.as_secs_f64(),
        got as f64 / receive_time.as_secs_f64(),
    ))
}

/// The raw JetStream publish rate: `in_flight` publishes of `payload` bytes outstanding
/// at a time, each awaited until JetStream acknowledged it, for `duration`, into a
/// temporary stream with file storage and one replica (what `scripts/bench.sh` gives the
/// inbox stream), deleted afterwards. No `Nats-Msg-Id` and one subject: the floor a
/// stored send cannot go below, not a model of the inbox. Publishes per second.
pub async fn jetstream_publish(
    nats: &config::Nats,
    payload: usize,
    in_flight: usize,
    duration: Duration,
    when: &str,
    watched: &Watched,
    out: &mut Output,
) -> anyhow::Result<f64> {
    let client = connection::connect(nats, "mrc bench jetstream")
        .await?
        .client;
    let js = async_nats::jetstream::new(client.client().clone());
    let name = format!("mrc_bench_{}", nuid::next());
    let subject = format!("bench.jetstream.{}", nuid::next());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the baseline stream {name}"))?;
    let body = Bytes::from(vec![b'x'; payload]);
    let one = || {
        let (js, subject, body) = (js.clone(), subject.clone(), body.clone());
        async move {
            let publish = async move { js.publish(subject, body).await.ok()?.await.ok() };
            let acked = tokio::time::timeout(Duration::from_secs(5), publish).await;
            matches!(acked, Ok(Some(_)))
        }
    };
    let before = watched.sample();
    let (rate, failed, latency) = keep_in_flight(in_flight, duration, one).await;
    let usage = watched.usage(&before, &watched.sample());
    if let Err(e) = js.delete_stream(&name).await {
        eprintln!("baseline: the stream {name} was not deleted: {e}");
    }
    println!(
        "baseline ({when}): JetStream publish, {in_flight} in flight, {payload} B, file storage: {} (p50 {}, p99 {}{})",
        Rate(rate),
        Micros(latency.p50),
        Micros(latency.p99),
        if failed > 0 { format!(", {failed} failed") } else { String::new() }
    );
    println!("  {:>9} {}", "cpu/rss", procs::describe(&usage));
    out.record(
        "jetstream_baseline",
        "inbox",
        serde_json::json!({
            "when": when,
            "payload": payload,
            "in_flight": in_flight,
            "duration_s": duration.as_secs_f64(),
            "publish_per_s": rate,
            "failed": failed,
            "latency": latency.to_json(),
            "procs": procs::to_json(&usage),
        }),
    );
    Ok(rate)
}
