//! What Gatehouse's own services share: the common flags and exit 64 on an
//! invalid configuration ([`config`]), the runtime, start-up and a shutdown
//! bounded by a deadline ([`run`]), one port for gRPC and the HTTP endpoints
//! (`/healthz`, `/readyz`, `/metrics`), and the receiver for the single
//! resource each service gets over ADS ([`snapshot`]).

pub mod alloc;
pub mod config;
pub mod events;
pub mod http;
pub mod otlp;
pub mod run;
pub mod snapshot;
pub mod trace;

pub use config::{CommonArgs, Defaults, LogFormat};
pub use http::{HttpLimits, raise_open_files_limit, serve_http};
pub use otlp::{OtlpEndpoint, TelemetryArgs, parse_sampling_percent};
pub use run::{Server, StartError, Started};

use std::{future::Future, sync::Arc};

use axum::{http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

/// `/healthz`, `/readyz` (503 until `ready`) and `/metrics` (`render`).
pub fn endpoints(
    ready: impl Fn() -> bool + Send + Sync + 'static,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> axum::Router {
    let ready = Arc::new(ready);
    let render = Arc::new(render);
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "no configuration yet")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}

/// Why a service stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// A long-lived background task (the xDS subscription, say) ended while
    /// the service was serving: it stops rather than serve a frozen state.
    #[error("{task} stopped while serving: {why}")]
    TaskEnded { task: &'static str, why: String },
}

/// Why a task that should have run until shutdown ended.
pub fn why_ended<E: std::fmt::Display>(
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> String {
    match result {
        Ok(Ok(())) => "stopped unexpectedly".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Serves like [`serve`], watching the service's long-lived `tasks`: if one
/// ends before `shutdown`, serving stops and the error names it. After
/// serving, `stop` is cancelled and every task is awaited.
pub async fn serve_watched(
    listener: TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
) -> Result<(), ServeError> {
    let mut watched = tokio::task::JoinSet::new();
    for (name, task) in tasks {
        watched.spawn(async move { (name, task.await) });
    }
    let halt = tokio_util::sync::CancellationToken::new();
    let halted = halt.clone();
    let server = serve(listener, routes, async move {
        tokio::select! {
            () = shutdown => {}
            () = halted.cancelled() => {}
        }
    });
    tokio::pin!(server);
    let mut ended = None;
    let served = tokio::select! {
        served = &mut server => served,
        Some(joined) = watched.join_next() => {
            ended = Some(match joined {
                Ok((task, Ok(()))) => (task, "returned".to_owned()),
                Ok((task, Err(e))) => (task, e.to_string()),
                Err(e) => ("a task", e.to_string()),
            });
            halt.cancel();
            server.await
        }
    };
    stop.cancel();
    while watched.join_next().await.is_some() {}
    if let Some((task, why)) = ended {
        tracing::error!(task, error = %why, "a background task stopped; stopping");
        return Err(ServeError::TaskEnded { task, why });
    }
    Ok(served?)
}

/// Serves gRPC and HTTP/1 (the endpoints) on a pre-bound listener until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The Tokio runtime a service runs on, from `--worker-threads`.
///
/// `1` is a single-threaded runtime: every task (each Envoy connection, the
/// Redis connection, the ADS stream) runs on one thread, so a request never
/// waits for a wake-up from another thread, and each decision costs about a
/// third less CPU than on a work-stealing pool (BENCHMARKS.md), CPU left to
/// Envoy on a shared host. A larger number is a work-stealing pool of that
/// many threads, for a service answering many Envoys or doing heavy work
/// per request; `0` is one thread per CPU.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::runtime::RuntimeFlavor;

    use super::{ServeError, runtime, serve_watched};

    fn routes() -> tonic::service::Routes {
        tonic::service::Routes::from(super::endpoints(|| true, String::new))
    }

    #[tokio::test]
    async fn a_background_task_that_ends_stops_serving() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let stop = tokio_util::sync::CancellationToken::new();
        let waits = stop.clone();
        let patient = tokio::spawn(async move { waits.cancelled().await });
        let dies = tokio::spawn(async { panic!("the subscription broke") });
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            serve_watched(
                listener,
                routes(),
                std::future::pending(),
                stop.clone(),
                vec![("patient", patient), ("the xDS subscription", dies)],
            ),
        )
        .await
        .expect("stops by itself");
        match served {
            Err(ServeError::TaskEnded { task, why }) => {
                assert_eq!(task, "the xDS subscription");
                assert!(why.contains("panicked"), "{why}");
            }
            other => panic!("expected the task's end, got {other:?}"),
        }
        assert!(stop.is_cancelled(), "the other tasks were told to stop");
    }

    #[tokio::test]
    async fn shutdown_stops_the_tasks_and_is_no_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let stop = tokio_util::sync::CancellationToken::new();
        let waits = stop.clone();
        let task = tokio::spawn(async move { waits.cancelled().await });
        let served = serve_watched(
            listener,
            routes(),
            tokio::time::sleep(Duration::from_millis(50)),
            stop,
            vec![("task", task)],
        )
        .await;
        assert!(served.is_ok(), "{served:?}");
    }

    #[test]
    fn worker_threads_choose_the_runtime() {
        let single = runtime(1).expect("runtime");
        assert_eq!(
            single.handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        let pool = runtime(3).expect("runtime");
        assert_eq!(pool.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(pool.metrics().num_workers(), 3);
        let per_cpu = runtime(0).expect("runtime");
        assert_eq!(
            per_cpu.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        assert_eq!(
            per_cpu.metrics().num_workers(),
            std::thread::available_parallelism().map_or(1, usize::from)
        );
    }
}
