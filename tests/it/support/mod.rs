//! Test support: real nats-server instances, real MRC processes, real WebSocket clients.

pub mod blackhole;
pub mod client;
pub mod cluster;
pub mod converge;
pub mod keys;
pub mod ledger;
pub mod nats;
pub mod node;
pub mod peer;
pub mod process;
pub mod token;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one counter (summed over its labels) from a gateway's `/metrics`.
pub async fn counter(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An HTTP client whose requests give up after 10 s.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `/readyz`: its status and `reason` (`None` when ready).
pub async fn readyz(base: &str) -> (u16, Option<String>) {
    let response = http().get(format!("{base}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], status == 200, "{body}");
    (status, body["reason"].as_str().map(str::to_string))
}
