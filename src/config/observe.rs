//! How operators watch a center: an HTTP listener for probes and metrics. Off unless set,
//! since a center needs no HTTP to work (it is found and checked over NATS with
//! `$SRV.PING.mrc-center`), but orchestrators and Prometheus speak HTTP.

use std::net::SocketAddr;

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Observability")]
pub struct Observe {
    /// HTTP listener for operators: `/healthz`, `/readyz`, `/metrics` (port 0 picks a free
    /// port; the `mrc-center listening` and `ready` lines name it). Off unless set.
    #[arg(long = "http-listen", env = "MRC_CENTER_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
}
