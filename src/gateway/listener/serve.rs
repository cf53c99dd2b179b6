//! Serving the HTTP listener with hyper directly. `axum::serve` gives hyper no timer, so
//! its header read timeout never fired: a socket that sent no request was held until the
//! client left, outside every limit (connections count from the WebSocket upgrade on).
//! Here each connection must send its request headers within `--header-read-timeout-ms`;
//! upgrades (WebSocket) are supported, and a stop closes idle keep-alive connections and
//! waits for the requests in progress.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Serves `app` on `listener` until `shutdown`; each request knows its peer
/// (`ConnectInfo<SocketAddr>`).
pub(crate) fn spawn<L>(
    mut listener: L,
    app: axum::Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    tokio::spawn(async move {
        let connections = TaskTracker::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        loop {
            let (io, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let service = app
                .clone()
                .map_request(move |mut request: axum::extract::Request<_>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
            let connection = http
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .with_upgrades();
            let stop = shutdown.clone();
            connections.spawn(async move {
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = stop.cancelled() => {
                        // Idle keep-alives close now; a request in progress finishes.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        Ok(())
    })
}
