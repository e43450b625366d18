//! Real HTTP upstreams: each answers with its own name and echoes the
//! request (path, query, method, headers) as JSON, counts what it received,
//! and can be told to misbehave: fail a share of requests with a chosen
//! status, answer late, hang, or reset the connection.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode},
    response::IntoResponse,
};
use serde_json::Value;
use tokio::net::TcpListener;

/// How an upstream answers; change it at any time with [`Upstream::behave`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// Every `n`th request (counted from the first) gets `status` instead
    /// of 200: `Some((2, 503))` fails half of them.
    pub fail_every: Option<(u64, u16)>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Never answer (the connection stays open until the client gives up).
    pub hang: bool,
    /// Close the connection with a TCP reset instead of answering.
    pub reset: bool,
}

impl Behaviour {
    /// Fails `1 / every` of the requests with `status`.
    pub fn failing(every: u64, status: u16) -> Self {
        Self {
            fail_every: Some((every.max(1), status)),
            ..Self::default()
        }
    }

    pub fn delayed(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }

    pub fn hanging() -> Self {
        Self {
            hang: true,
            ..Self::default()
        }
    }

    pub fn resetting() -> Self {
        Self {
            reset: true,
            ..Self::default()
        }
    }
}

/// What an upstream received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    /// Every connection's task, so a kill closes them all.
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A real HTTP upstream on a loopback ephemeral port.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests received (answered or not).
    pub hits: Arc<AtomicU64>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// An upstream that answers every request 200 with its name.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, Behaviour::default()).await
    }

    pub async fn start_with(name: &str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            received: Mutex::default(),
            connections: Mutex::default(),
        });
        let task = tokio::spawn(serve(
            listener,
            name.to_owned(),
            hits.clone(),
            shared.clone(),
        ));
        Self {
            name: name.to_owned(),
            addr,
            hits,
            shared,
            task,
        }
    }

    /// Changes how the next requests are answered.
    pub fn behave(&self, behaviour: Behaviour) {
        *self
            .shared
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn hit_count(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The admin API body of a service pointing at this upstream.
    pub fn service(&self, name: &str) -> Value {
        serde_json::json!({
            "name": name,
            "endpoints": [{"host": "127.0.0.1", "port": self.addr.port()}],
        })
    }
}

impl Upstream {
    /// Dies as a crashed process would: the port closes and every open
    /// connection with it.
    pub fn kill(&self) {
        self.task.abort();
        for connection in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            connection.abort();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Accepts connections itself (so it can reset them) and serves the rest
/// over HTTP/1.1 with hyper through axum.
async fn serve(listener: TcpListener, name: String, hits: Arc<AtomicU64>, shared: Arc<Shared>) {
    let app = {
        let (hits, shared, name) = (hits.clone(), shared.clone(), name.clone());
        axum::Router::new().fallback(move |request: Request| {
            let (hits, shared, name) = (hits.clone(), shared.clone(), name.clone());
            async move { answer(request, &name, &hits, &shared).await }
        })
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let reset = shared
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reset;
        if reset {
            hits.fetch_add(1, Ordering::Relaxed);
            reset_connection(stream).await;
            continue;
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        let mut connections = shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.retain(|c| !c.is_finished());
        connections.push(connection.abort_handle());
    }
}

/// Reads the start of the request, then closes with RST (linger 0).
async fn reset_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await;
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn answer(
    request: Request,
    name: &str,
    hits: &AtomicU64,
    shared: &Shared,
) -> axum::response::Response {
    let count = hits.fetch_add(1, Ordering::Relaxed) + 1;
    let behaviour = shared
        .behaviour
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    shared
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            headers: headers.clone(),
        });
    if behaviour.hang {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = behaviour.delay {
        tokio::time::sleep(delay).await;
    }
    let status = match behaviour.fail_every {
        Some((every, status)) if count.is_multiple_of(every) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        _ => StatusCode::OK,
    };
    let body = serde_json::json!({
        "upstream": name,
        "path": request.uri().path(),
        "query": request.uri().query(),
        "method": request.method().as_str(),
        "headers": headers.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<_, _>>(),
    });
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(name) {
        response.headers_mut().insert("x-upstream", value);
    }
    response
}

/// Which upstream answered a GET through the proxy: (status, upstream name).
pub async fn probe(client: &reqwest::Client, url: &str) -> (u16, Option<String>) {
    match client.get(url).send().await {
        Ok(response) => {
            let upstream = response
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (response.status().as_u16(), upstream)
        }
        Err(_) => (0, None),
    }
}

/// A service body over `upstreams`, each with its failover priority, plus
/// `extra` fields.
pub fn service_over(upstreams: &[(&Upstream, u32)], extra: Value) -> Value {
    let mut body = serde_json::json!({
        "endpoints": upstreams.iter().map(|(u, priority)| serde_json::json!({
            "host": "127.0.0.1", "port": u.addr.port(), "priority": priority
        })).collect::<Vec<_>>(),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}
