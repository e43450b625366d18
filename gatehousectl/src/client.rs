//! The admin API over HTTP, with RFC 7807 problems turned into [`Failure`]s.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::Failure;

pub struct Client {
    base: String,
    http: reqwest::Client,
    actor: Option<String>,
    token: Option<String>,
}

impl Client {
    pub fn new(
        server: &str,
        actor: Option<String>,
        token: Option<String>,
    ) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::Server(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            base: server.trim_end_matches('/').to_owned(),
            http,
            actor,
            token,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::DELETE, path, None).await
    }

    /// Sends, and sends again while the control plane answers that it is
    /// busy or starting (which means nothing was done), after the wait its
    /// `Retry-After` asks for, for at most [`RETRY_FOR`] in all.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let started = std::time::Instant::now();
        loop {
            match self.send_once(method.clone(), path, body).await? {
                Sent::Done(value) => return Ok(value),
                Sent::Later(wait) if started.elapsed() + wait < RETRY_FOR => {
                    tokio::time::sleep(wait).await
                }
                Sent::Later(_) => {
                    return Err(Failure::Server(format!(
                        "the control plane stayed busy for {} s; nothing was changed",
                        RETRY_FOR.as_secs()
                    )));
                }
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Sent, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(actor) = &self.actor {
            request = request.header("x-gatehouse-actor", actor);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            Failure::Server(format!("cannot reach {}: {}", self.base, root_cause(&e)))
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let text = response
            .text()
            .await
            .map_err(|e| Failure::Server(format!("reading the response from {url}: {e}")))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(Sent::Done(json));
        }
        let kind = json["type"].as_str().unwrap_or_default();
        let nothing_done = kind.ends_with(":busy") || kind.ends_with(":starting");
        match retry_after {
            Some(seconds) if status == StatusCode::SERVICE_UNAVAILABLE && nothing_done => Ok(
                Sent::Later(std::time::Duration::from_secs(seconds.clamp(1, 10))),
            ),
            _ => Err(problem(status, &json)),
        }
    }
}

/// How long a command keeps trying while the control plane is busy.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

enum Sent {
    Done(Value),
    /// Busy or starting: nothing was done; try again after this.
    Later(std::time::Duration),
}

/// The innermost error, which says what actually went wrong (refused, DNS…).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn problem(status: StatusCode, body: &Value) -> Failure {
    let title = body["title"]
        .as_str()
        .unwrap_or(status.canonical_reason().unwrap_or("error"));
    let mut lines = vec![match body["detail"].as_str() {
        Some(detail) if body["errors"].as_array().is_none_or(|e| e.is_empty()) => {
            format!("{title}: {detail}")
        }
        _ => title.to_owned(),
    }];
    for error in body["errors"].as_array().into_iter().flatten() {
        let field = error["field"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        lines.push(if field.is_empty() {
            format!("  {message}")
        } else {
            format!("  {field}: {message}")
        });
    }
    let message = lines.join("\n");
    if status.is_client_error() {
        Failure::Invalid(message)
    } else {
        Failure::Server(format!("server error ({status}): {message}"))
    }
}
