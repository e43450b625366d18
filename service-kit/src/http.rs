//! HTTP/1 APIs (the admin API) served so that a hostile client costs
//! little and holds nothing for long.
//!
//! Half a request no longer keeps a connection open forever: the request
//! head must arrive within [`HttpLimits::header_read_timeout`] (which also
//! closes a kept-alive connection that stays idle that long), and each part
//! of a body within [`HttpLimits::body_read_timeout`]. At most
//! [`HttpLimits::max_connections`] connections are served at once; past
//! that a new one is closed as soon as it is accepted, before anything is
//! read, so the slots free up as the timeouts expire and never the file
//! descriptors run out first (see [`raise_open_files_limit`]). A failed
//! accept (out of descriptors) is logged and retried after a pause rather
//! than ending the server or spinning.

use std::{future::Future, sync::Arc, time::Duration};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::{debug, warn};

/// How much an HTTP API lets each client hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Time for a request's head to arrive, and for an idle kept-alive
    /// connection to start its next request.
    pub header_read_timeout: Duration,
    /// Time for each part of a request body to arrive.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4_096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Largest request head (and read buffer) one connection may hold.
const MAX_BUFFER: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish (the caller bounds how long).
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(
                limit = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(MAX_BUFFER)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// Raises this process's open-files limit to the most it may have (the
/// hard limit), so connection bounds, not descriptors, decide how many
/// clients are served. Returns the limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            warn!(error = %e, "cannot raise the open-files limit");
            None
        }
    }
}
