//! Logging and metrics. Logs: `tracing` to stderr, filtered by `MRC_LOG`, as text or, with
//! `MRC_LOG_FORMAT=json`, one JSON object per line for log collectors.
//! Metrics: the `metrics` facade, rendered in Prometheus text by whoever serves `/metrics`
//! ([`Exporter`], which adds the process's own metrics from `/proc`); every metric name is
//! declared here (`mrc_<process>_<what>_<unit>`).

pub(crate) mod http;
mod process;

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// What `--help` of every binary says about logging.
pub const LOG_HELP: &str = "Logging (to stderr):
  MRC_LOG         what is logged, as a tracing filter (default: info; for mrc: warn),
                  e.g. MRC_LOG=warn or MRC_LOG=info,mrc::gateway::reconcile=debug
  MRC_LOG_FORMAT  text (default) or json: one JSON object per line, the event's fields
                  at the top level next to timestamp, level and target";

/// How log lines are written (`MRC_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The format `MRC_LOG_FORMAT` names; unset or empty is text.
    fn parse(value: Option<&str>) -> anyhow::Result<LogFormat> {
        match value.map(str::trim) {
            None | Some("" | "text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => anyhow::bail!("MRC_LOG_FORMAT {other:?}: use text or json"),
        }
    }
}

/// Installs the global log subscriber, logging `default_filter` unless `MRC_LOG` says
/// otherwise. Call once, first thing in `main`; an unknown `MRC_LOG_FORMAT` is a
/// configuration error (nothing is logged yet, so the caller reports it).
pub fn init(default_filter: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let format = LogFormat::parse(std::env::var("MRC_LOG_FORMAT").ok().as_deref())?;
    let filter =
        EnvFilter::try_from_env("MRC_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            keep_filter_handle(builder.reload_handle());
            builder.init();
        }
        // Flattened: `message` and the event's fields sit beside `timestamp` and `level`,
        // where log collectors look for them.
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_ansi(false)
                .with_filter_reloading();
            keep_filter_handle(builder.reload_handle());
            builder.init();
        }
    }
    Ok(())
}

/// Replaces the log filter (`--log` / `MRC_LOG` syntax), e.g. from a configuration
/// reloaded on SIGHUP.
pub fn set_log_filter(filter: &str) -> anyhow::Result<()> {
    let set = LOG_FILTER
        .get()
        .ok_or_else(|| anyhow::anyhow!("logging is not set up"))?;
    set(filter)
}

type SetFilter = Box<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// What replaces the filter of the subscriber `init` installed.
static LOG_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

fn keep_filter_handle<S: 'static>(handle: tracing_subscriber::reload::Handle<EnvFilter, S>) {
    let set: SetFilter = Box::new(move |filter| {
        let filter = EnvFilter::try_new(filter)
            .map_err(|e| anyhow::anyhow!("log filter {filter:?}: {e}"))?;
        handle.reload(filter)?;
        Ok(())
    });
    let _ = LOG_FILTER.set(set);
}

/// How often the exporter folds buffered histogram samples into its buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Installs the global metrics recorder of server process `process` (`mrc-gateway`,
/// `mrc-center`) and sets its `mrc_build_info`. Call it inside the runtime: it spawns the
/// recorder's upkeep task. The exporter buffers every histogram sample until an upkeep or
/// a scrape folds it in, so without that task a process nobody scraped grew by about 8
/// bytes per NATS request, without bound.
pub fn install_metrics(process: &'static str) -> anyhow::Result<Exporter> {
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    describe_gateway();
    describe_center();
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1: the version and process of this build"
    );
    metrics::gauge!(BUILD_INFO, "version" => crate::VERSION, "process" => process).set(1.0);
    let upkept = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(METRICS_UPKEEP).await;
            upkept.run_upkeep();
        }
    });
    Ok(Exporter { handle })
}

/// Renders `/metrics` of a server process: what the recorder holds, then the process's own
/// metrics, read from `/proc` at each scrape.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// The Prometheus text of every metric.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        process::Sample::read().render(&mut text);
        text
    }
}

/// `mrc_build_info{version,process}`, always 1: which build runs where.
pub(crate) const BUILD_INFO: &str = "mrc_build_info";

/// Client connections open (any door), logged in or not.
pub(crate) const GATEWAY_CONNECTIONS: &str = "mrc_gateway_connections";
/// Logged-in sessions.
pub(crate) const GATEWAY_SESSIONS: &str = "mrc_gateway_sessions";
/// Messages accepted for routing, by `door` (ws, tcp, http, nats).
pub(crate) const GATEWAY_MESSAGES_IN: &str = "mrc_gateway_messages_in_total";
/// Frames queued to clients (messages, reports, errors...).
pub(crate) const GATEWAY_FRAMES_OUT: &str = "mrc_gateway_frames_out_total";
/// Per-receiver results of routed messages, by `outcome`.
pub(crate) const GATEWAY_DELIVERIES: &str = "mrc_gateway_deliveries_total";
/// Route cache look-ups, by `result` (hit, miss).
pub(crate) const GATEWAY_ROUTE_CACHE: &str = "mrc_gateway_route_cache_total";
/// `mrc.dir.lookup` requests sent.
pub(crate) const GATEWAY_LOOKUP_REQUESTS: &str = "mrc_gateway_lookup_requests_total";
/// Deliver requests made, by `target` (local: this gateway, remote: over NATS).
pub(crate) const GATEWAY_DELIVER_REQUESTS: &str = "mrc_gateway_deliver_requests_total";
/// NATS requests that carried several requests at once (batches), by `kind` (deliver,
/// register, unregister).
pub(crate) const BATCHES: &str = "mrc_gateway_batches_total";
/// Error frames and replies sent, by `code`.
pub(crate) const GATEWAY_ERRORS: &str = "mrc_gateway_errors_total";
/// Sessions closed because their outbound queue was full.
pub(crate) const GATEWAY_INBOX: &str = "mrc_gateway_inbox_total";
pub(crate) const GATEWAY_SLOW_CONSUMERS: &str = "mrc_gateway_slow_consumers_total";
/// Duration of NATS requests, by `kind` (lookup, register, deliver...).
pub(crate) const NATS_REQUEST_SECONDS: &str = "mrc_gateway_nats_request_seconds";
pub(crate) const ROUTE_SECONDS: &str = "mrc_gateway_route_seconds";

fn describe_gateway() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        GATEWAY_CONNECTIONS,
        "Client connections open, logged in or not"
    );
    describe_gauge!(GATEWAY_SESSIONS, "Logged-in client sessions");
    describe_counter!(
        GATEWAY_MESSAGES_IN,
        "Messages accepted for routing, by door"
    );
    describe_counter!(GATEWAY_FRAMES_OUT, "Frames queued to clients");
    describe_counter!(
        GATEWAY_DELIVERIES,
        "Per-receiver results of routed messages, by outcome"
    );
    describe_counter!(GATEWAY_ROUTE_CACHE, "Route cache look-ups, by result");
    describe_counter!(GATEWAY_LOOKUP_REQUESTS, "Directory look-up requests sent");
    describe_counter!(
        GATEWAY_DELIVER_REQUESTS,
        "Deliver requests made, by target (local, remote)"
    );
    describe_counter!(
        BATCHES,
        "NATS requests carrying several requests at once, by kind"
    );
    describe_counter!(GATEWAY_ERRORS, "Error frames and replies sent, by code");
    describe_counter!(GATEWAY_SLOW_CONSUMERS, "Sessions closed as slow consumers");
    describe_counter!(
        GATEWAY_INBOX,
        "Durable inbox: messages stored, refused as inbox_full, pushed to sessions, acked"
    );
    describe_histogram!(
        NATS_REQUEST_SECONDS,
        Unit::Seconds,
        "NATS request duration, by kind"
    );
    describe_histogram!(
        ROUTE_SECONDS,
        Unit::Seconds,
        "From a message accepted to its report ready (every receiver's outcome known), by kind (direct, group, durable)"
    );
}

/// Records how long one message took from accepted to reported: `kind` is `direct`,
/// `group` or `durable`.
pub(crate) fn routed(kind: Routed, took: Duration) {
    static HISTOGRAMS: [std::sync::OnceLock<metrics::Histogram>; 3] =
        [const { std::sync::OnceLock::new() }; 3];
    let label = match kind {
        Routed::Direct => "direct",
        Routed::Group => "group",
        Routed::Durable => "durable",
    };
    HISTOGRAMS[kind as usize]
        .get_or_init(|| metrics::histogram!(ROUTE_SECONDS, "kind" => label))
        .record(took.as_secs_f64());
}

/// The kinds of [`routed`] messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Routed {
    Direct = 0,
    Group = 1,
    Durable = 2,
}

/// A counter registered once and kept in a static where it is written:
/// `metrics::counter!` looks its key up in the recorder's registry on every call (hashing
/// name and labels; 3.5% of a gateway's CPU at 45k msg/s). For label values fixed at the
/// call site. The first use keeps the recorder installed then, so [`install_metrics`]
/// comes first in `main` (before it, metrics go nowhere, as with `counter!`).
macro_rules! static_counter {
    ($name:expr $(, $key:literal => $value:literal)* $(,)?) => {{
        static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
        COUNTER.get_or_init(|| metrics::counter!($name $(, $key => $value)*))
    }};
}
pub(crate) use static_counter;

/// Counts one message accepted for routing through `door` (ws, tcp, http, nats).
pub(crate) fn message_in(door: &'static str) {
    let counter = match door {
        "ws" => static_counter!(GATEWAY_MESSAGES_IN, "door" => "ws"),
        "tcp" => static_counter!(GATEWAY_MESSAGES_IN, "door" => "tcp"),
        "http" => static_counter!(GATEWAY_MESSAGES_IN, "door" => "http"),
        "nats" => static_counter!(GATEWAY_MESSAGES_IN, "door" => "nats"),
        other => return metrics::counter!(GATEWAY_MESSAGES_IN, "door" => other).increment(1),
    };
    counter.increment(1);
}

/// Counts `n` receivers of routed messages with `outcome`.
pub(crate) fn deliveries(outcome: crate::protocol::code::Outcome, n: u64) {
    use crate::protocol::code::Outcome;
    let counter = match outcome {
        Outcome::Delivered => static_counter!(GATEWAY_DELIVERIES, "outcome" => "delivered"),
        Outcome::Offline => static_counter!(GATEWAY_DELIVERIES, "outcome" => "offline"),
        Outcome::Rejected => static_counter!(GATEWAY_DELIVERIES, "outcome" => "rejected"),
        Outcome::Unavailable => static_counter!(GATEWAY_DELIVERIES, "outcome" => "unavailable"),
        Outcome::Stored => static_counter!(GATEWAY_DELIVERIES, "outcome" => "stored"),
        Outcome::InboxFull => static_counter!(GATEWAY_DELIVERIES, "outcome" => "inbox_full"),
    };
    counter.increment(n);
}

/// What happened in the durable inbox, for [`inbox`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum InboxEvent {
    /// A message kept for a receiver.
    Stored,
    /// Refused: the receiver's inbox (or the cluster's) is full.
    Full,
    /// A stored message pushed to a session.
    Pushed,
    /// Stored messages removed by an acknowledgement.
    Acked,
    /// Pushed to a session that ended before acknowledging them: the inbox keeps them
    /// and pushes them again at the user's next login (counted when the session ends).
    Redelivered,
    /// A read of a user's inbox failed (it is retried).
    ReadFailed,
}

/// Counts `n` inbox events.
pub(crate) fn inbox(event: InboxEvent, n: u64) {
    let counter = match event {
        InboxEvent::Stored => static_counter!(GATEWAY_INBOX, "event" => "stored"),
        InboxEvent::Full => static_counter!(GATEWAY_INBOX, "event" => "inbox_full"),
        InboxEvent::Pushed => static_counter!(GATEWAY_INBOX, "event" => "pushed"),
        InboxEvent::Acked => static_counter!(GATEWAY_INBOX, "event" => "acked"),
        InboxEvent::Redelivered => static_counter!(GATEWAY_INBOX, "event" => "redelivered"),
        InboxEvent::ReadFailed => static_counter!(GATEWAY_INBOX, "event" => "read_failed"),
    };
    counter.increment(n);
}

/// Every label [`metric_kind`] gives a request subject in metrics.
pub(crate) const METRIC_KINDS: [&str; 7] = [
    "lookup",
    "register",
    "unregister",
    "purge",
    "deliver",
    "send",
    "other",
];

/// The label of a request subject in metrics: its last token when that is one of
/// [`METRIC_KINDS`] (`lookup`, `register`, `deliver`, `send`...), else `other`; never a
/// user id.
pub(crate) fn metric_kind(subject: &str) -> &'static str {
    // A byte search: `rsplit` with its char searcher was ~200 instructions per request.
    let start = subject
        .bytes()
        .rposition(|b| b == b'.')
        .map_or(0, |dot| dot + 1);
    let last = &subject[start..];
    METRIC_KINDS
        .into_iter()
        .find(|&kind| kind == last)
        .unwrap_or("other")
}

/// Records one NATS request's duration. `kind` is one of [`METRIC_KINDS`], whose handles
/// are registered once each, at first use (a look-up by key hashed it every call).
pub(crate) fn nats_request(kind: &'static str, took: Duration) {
    static HISTOGRAMS: [std::sync::OnceLock<metrics::Histogram>; METRIC_KINDS.len()] =
        [const { std::sync::OnceLock::new() }; METRIC_KINDS.len()];
    let seconds = took.as_secs_f64();
    match METRIC_KINDS.iter().position(|&k| k == kind) {
        Some(i) => HISTOGRAMS[i]
            .get_or_init(|| metrics::histogram!(NATS_REQUEST_SECONDS, "kind" => kind))
            .record(seconds),
        None => metrics::histogram!(NATS_REQUEST_SECONDS, "kind" => kind).record(seconds),
    }
}

/// Counts one error sent to a client or backend.
pub(crate) fn error(code: crate::protocol::code::ErrorCode) {
    metrics::counter!(GATEWAY_ERRORS, "code" => code.as_str()).increment(1);
}

/// Requests a center answered, by `endpoint` (`dir.lookup`, `grp.create`...).
pub(crate) const CENTER_REQUESTS: &str = "mrc_center_requests_total";
/// Errors a center answered, by `endpoint` and `code`: whole replies, and the elements of
/// batched (un)registrations answered with an error.
pub(crate) const CENTER_ERRORS: &str = "mrc_center_errors_total";
/// How long a center took to answer a request, by `endpoint`.
pub(crate) const CENTER_REQUEST_SECONDS: &str = "mrc_center_request_seconds";
/// Online users in the center's mirror of the directory, read at each scrape.
pub(crate) const CENTER_USERS: &str = "mrc_center_users";
/// Gateways holding sessions in the center's mirror of the directory.
pub(crate) const CENTER_GATEWAYS: &str = "mrc_center_gateways";
/// Groups in the center's mirror of the groups bucket.
pub(crate) const CENTER_GROUPS: &str = "mrc_center_groups";
/// The last directory bucket revision the center's mirror applied: compare centers to see
/// one lag.
pub(crate) const CENTER_DIRECTORY_REVISION: &str = "mrc_center_directory_revision";
/// Purges of a silent gateway's sessions by this center that removed some (an eviction
/// retried after a partial failure counts once per purge).
pub(crate) const CENTER_EVICTIONS: &str = "mrc_center_evictions_total";

fn describe_center() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CENTER_REQUESTS, "Requests answered, by endpoint");
    describe_counter!(
        CENTER_ERRORS,
        "Errors answered (whole replies and batch elements), by endpoint and code"
    );
    describe_histogram!(
        CENTER_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer a request, by endpoint"
    );
    describe_gauge!(
        CENTER_USERS,
        "Online users in this center's directory mirror"
    );
    describe_gauge!(CENTER_GATEWAYS, "Gateways holding sessions in the mirror");
    describe_gauge!(CENTER_GROUPS, "Groups in this center's groups mirror");
    describe_gauge!(
        CENTER_DIRECTORY_REVISION,
        "Last directory bucket revision the mirror applied"
    );
    describe_counter!(
        CENTER_EVICTIONS,
        "Purges of silent gateways' sessions that removed some"
    );
}

/// The metrics of one center endpoint, registered once when the service starts (a look-up
/// by key per request would hash name and labels every time).
#[derive(Clone)]
pub(crate) struct EndpointMetrics {
    /// `dir.lookup`, `grp.create`...: the same whatever `--prefix` is.
    endpoint: metrics::SharedString,
    requests: metrics::Counter,
    seconds: metrics::Histogram,
}

impl EndpointMetrics {
    pub(crate) fn new(endpoint: String) -> EndpointMetrics {
        let endpoint = metrics::SharedString::from(endpoint);
        EndpointMetrics {
            requests: metrics::counter!(CENTER_REQUESTS, "endpoint" => endpoint.clone()),
            seconds: metrics::histogram!(CENTER_REQUEST_SECONDS, "endpoint" => endpoint.clone()),
            endpoint,
        }
    }

    /// Counts one request answered after `took`.
    pub(crate) fn answered(&self, took: Duration) {
        self.requests.increment(1);
        self.seconds.record(took.as_secs_f64());
    }

    /// Counts one error answered (errors are rare: looked up by key).
    pub(crate) fn error(&self, code: crate::protocol::code::ErrorCode) {
        let endpoint = self.endpoint.clone();
        metrics::counter!(CENTER_ERRORS, "endpoint" => endpoint, "code" => code.as_str())
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_text_unless_json_is_asked_for() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("text")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some(" json")).unwrap(), LogFormat::Json);
        let e = LogFormat::parse(Some("xml")).unwrap_err().to_string();
        assert!(e.contains("MRC_LOG_FORMAT"), "{e}");
    }

    #[test]
    fn metric_kinds_are_the_known_last_tokens_and_never_an_id() {
        assert_eq!(metric_kind("mrc.dir.lookup"), "lookup");
        assert_eq!(metric_kind("mrc.dir.unregister"), "unregister");
        assert_eq!(metric_kind("mrc.gw.g1.deliver"), "deliver");
        assert_eq!(metric_kind("mrc.send"), "send");
        assert_eq!(metric_kind("mrc.to.alice"), "other");
        assert_eq!(metric_kind(""), "other");
        for subject in ["mrc.dir.purge", "mrc.grp.resolve", "mrc.dir.register"] {
            assert!(METRIC_KINDS.contains(&metric_kind(subject)), "{subject}");
        }
    }
}
