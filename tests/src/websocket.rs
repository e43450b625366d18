//! WebSockets for the WebSocket route and broker tests: an upstream that
//! greets each connection with what it received (path, query, headers, the
//! subprotocol it chose: `chat` when offered) and echoes text frames; and a
//! client that connects with chosen headers and reports a refused upgrade's
//! status.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{Message, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, Uri},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

/// A WebSocket upstream: see the module doc.
pub struct WsUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a WebSocket upstream");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new().fallback(greet).with_state(name.to_owned());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }

    /// The service body for the admin API.
    pub fn service(&self) -> Value {
        json!({"endpoints": [{"host": "127.0.0.1", "port": self.addr.port()}]})
    }
}

async fn greet(
    State(name): State<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let seen: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::from(v.to_str().unwrap_or_default()),
            )
        })
        .collect();
    let mut hello =
        json!({"name": name, "path": uri.path(), "query": uri.query(), "headers": seen});
    let Ok(ws) = ws else {
        return axum::Json(hello).into_response();
    };
    ws.protocols(["chat"])
        .on_upgrade(move |mut socket| async move {
            hello["protocol"] = socket
                .protocol()
                .and_then(|p| p.to_str().ok())
                .map_or(Value::Null, Value::from);
            if socket
                .send(Message::Text(hello.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            while let Some(Ok(message)) = socket.recv().await {
                let echoed = match message {
                    Message::Text(text) => socket.send(Message::Text(text)).await.is_ok(),
                    Message::Close(_) => false,
                    _ => true,
                };
                if !echoed {
                    return;
                }
            }
        })
        .into_response()
}

pub type WsClient = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// An open client connection and the upgrade response's headers.
pub struct Connected {
    pub socket: WsClient,
    pub headers: reqwest::header::HeaderMap,
}

/// Connects to `url` (`ws://…`) with `headers`; a refused upgrade gives
/// its HTTP status (0 when there was no HTTP answer at all).
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Connected, u16> {
    let mut request = url.into_client_request().map_err(|_| 0u16)?;
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| 0u16)?;
        let value = tungstenite::http::HeaderValue::from_str(value).map_err(|_| 0u16)?;
        request.headers_mut().insert(name, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let mut headers = reqwest::header::HeaderMap::new();
            for (k, v) in response.headers() {
                if let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
                    reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
                ) {
                    headers.insert(k, v);
                }
            }
            Ok(Connected { socket, headers })
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// What came next on a connection, within `wait`.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Text(String),
    /// Closed by the peer, with its close code (if it sent one).
    Closed(Option<u16>),
    /// Nothing within the wait.
    Silent,
}

impl Next {
    /// The text as JSON (`Null` for anything else).
    pub fn json(&self) -> Value {
        match self {
            Next::Text(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// Reads the next text frame or the close (pings and pongs are skipped).
pub async fn next(socket: &mut WsClient, wait: Duration) -> Next {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, socket.next()).await {
            Err(_) => return Next::Silent,
            Ok(None) | Ok(Some(Err(_))) => return Next::Closed(None),
            Ok(Some(Ok(tungstenite::Message::Text(text)))) => return Next::Text(text.to_string()),
            Ok(Some(Ok(tungstenite::Message::Close(frame)))) => {
                return Next::Closed(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Sends a text frame (an error means the connection is gone).
pub async fn send(socket: &mut WsClient, text: &str) -> Result<(), tungstenite::Error> {
    socket
        .send(tungstenite::Message::Text(text.to_owned().into()))
        .await
}

/// Sends a binary frame.
pub async fn send_binary(socket: &mut WsClient, bytes: &[u8]) -> Result<(), tungstenite::Error> {
    socket
        .send(tungstenite::Message::Binary(bytes.to_vec().into()))
        .await
}

/// Closes the connection normally.
pub async fn close(socket: &mut WsClient) {
    let _ = socket
        .close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
}
