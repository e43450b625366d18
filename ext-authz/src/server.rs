//! The `envoy.service.auth.v3.Authorization` gRPC service and the HTTP
//! endpoints (`/healthz`, `/readyz`, `/metrics`) served on the same port.
//!
//! Denials are `Ok(CheckResponse)` with the HTTP response Envoy sends; a
//! gRPC error is returned only before the first configuration arrives, so
//! the route's failure mode decides.

use std::{collections::HashMap, sync::Arc, time::Instant};

use arc_swap::ArcSwapOption;
use gatehouse_proto::{
    auth_service::{
        CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
        authorization_server::{Authorization, AuthorizationServer},
        check_response::HttpResponse,
    },
    core::{HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction},
    http_types::HttpStatus,
    protobuf::{Struct, Value, value::Kind},
    rpc,
};
use gatehouse_service_kit::events::{EventKey, Events};
use tracing::Instrument;

use crate::{
    decision::{Allow, Decision, Deny, RequestView, decide},
    metrics::{DecisionLabels, Metrics},
    state::AuthState,
};

/// The current state; `None` until the first snapshot.
pub type SharedState = Arc<ArcSwapOption<AuthState>>;

#[derive(Clone)]
pub struct AuthzService {
    pub state: SharedState,
    pub metrics: Metrics,
    /// Authentication failures as summarised events.
    pub events: Option<Events>,
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let span = gatehouse_service_kit::trace::server_span(request.metadata(), || {
            tracing::info_span!(
                "ext_authz.check",
                otel.name = "ext-authz Check",
                otel.kind = "server",
                trace_id = tracing::field::Empty,
                gatehouse.route = tracing::field::Empty,
                gatehouse.auth.result = tracing::field::Empty,
                gatehouse.auth.method = tracing::field::Empty,
                gatehouse.consumer = tracing::field::Empty,
                gatehouse.auth.code = tracing::field::Empty,
            )
        });
        let Some(state) = self.state.load_full() else {
            return Err(tonic::Status::unavailable("no configuration received yet"));
        };
        let check = request.into_inner();
        let response = respond(&state, &check, &self.metrics, self.events.as_ref())
            .instrument(span)
            .await;
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(tonic::Response::new(response))
    }
}

/// Decides a Check request and builds Envoy's response.
pub async fn check_response(
    state: &AuthState,
    check: &CheckRequest,
    metrics: &Metrics,
) -> CheckResponse {
    respond(state, check, metrics, None).await
}

/// [`check_response`], recording a refusal in `events`.
async fn respond(
    state: &AuthState,
    check: &CheckRequest,
    metrics: &Metrics,
    events: Option<&Events>,
) -> CheckResponse {
    static EMPTY: std::sync::LazyLock<HashMap<String, String>> =
        std::sync::LazyLock::new(HashMap::new);
    let attributes = check.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let view = RequestView {
        headers: http.map_or(&EMPTY, |h| &h.headers),
        path: http.map_or("", |h| h.path.as_str()),
        context: attributes.map_or(&EMPTY, |a| &a.context_extensions),
        peer_certificate: attributes
            .and_then(|a| a.source.as_ref())
            .map_or("", |s| s.certificate.as_str()),
    };
    let decision = decide(state, &view).await;
    record(&view, &decision);
    if let (Some(events), Decision::Deny(deny)) = (events, &decision) {
        let client_ip = attributes
            .and_then(|a| a.source.as_ref())
            .and_then(|s| s.address.as_ref())
            .and_then(|a| match &a.address {
                Some(gatehouse_proto::core::address::Address::SocketAddress(s)) => {
                    Some(s.address.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        events.record(
            EventKey {
                route: view
                    .context
                    .get(gatehouse_proto::auth::context::ROUTE)
                    .cloned()
                    .unwrap_or_default(),
                reason: deny.code.to_owned(),
                consumer: String::new(),
                client_ip,
            },
            view.headers
                .get("traceparent")
                .and_then(|t| gatehouse_service_kit::events::trace_id(t)),
        );
    }
    match &decision {
        Decision::Allow(allow) => metrics.allowed(allow.method as usize),
        Decision::Deny(deny) => {
            let labels = DecisionLabels {
                result: "deny",
                method: deny.method.map_or("none", |m| m.as_str()),
                code: deny.code,
            };
            metrics.decisions.get_or_create(&labels).inc();
        }
    }
    match decision {
        Decision::Allow(allow) => allowed_response(allow),
        Decision::Deny(deny) => denied(deny),
    }
}

/// The decision on the request's span (a no-op when it is not traced).
fn record(view: &RequestView<'_>, decision: &Decision) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(route) = view.context.get(gatehouse_proto::auth::context::ROUTE) {
        span.record("gatehouse.route", route.as_str());
    }
    match decision {
        Decision::Allow(allow) => {
            span.record("gatehouse.auth.result", "allow");
            span.record("gatehouse.auth.method", allow.method.as_str());
            span.record("gatehouse.consumer", allow.consumer.as_str());
        }
        Decision::Deny(deny) => {
            span.record("gatehouse.auth.result", "deny");
            span.record(
                "gatehouse.auth.method",
                deny.method.map_or("none", |m| m.as_str()),
            );
            span.record("gatehouse.auth.code", deny.code);
        }
    }
}

fn header(key: impl Into<String>, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// Envoy's answer for an allowed request: the identity headers, the
/// headers to remove, and consumer and plan as dynamic metadata.
pub fn allowed_response(allow: Allow) -> CheckResponse {
    let metadata = Struct {
        fields: [
            ("consumer".to_owned(), string_value(allow.consumer)),
            ("plan".to_owned(), string_value(allow.plan)),
            ("method".to_owned(), string_value(allow.method.as_str())),
        ]
        .into_iter()
        .collect(),
    };
    CheckResponse {
        status: Some(rpc::Status::default()),
        dynamic_metadata: Some(metadata),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: allow
                .set_headers
                .into_iter()
                .map(|(k, v)| header(k, v))
                .collect(),
            headers_to_remove: allow.remove_headers,
            query_parameters_to_remove: allow.remove_query,
            ..Default::default()
        })),
    }
}

fn denied(deny: Deny) -> CheckResponse {
    let body = serde_json::json!({"error": deny.code, "message": deny.message}).to_string();
    let mut headers = vec![
        header("content-type", "application/json"),
        header("cache-control", "no-store"),
    ];
    if !deny.challenge.is_empty() {
        headers.push(header("www-authenticate", deny.challenge));
    }
    CheckResponse {
        status: Some(rpc::Status {
            // UNAUTHENTICATED or PERMISSION_DENIED
            code: if deny.status == 401 { 16 } else { 7 },
            message: deny.code.to_owned(),
            details: Vec::new(),
        }),
        dynamic_metadata: deny.consumer.map(|consumer| Struct {
            fields: [("consumer".to_owned(), string_value(consumer))]
                .into_iter()
                .collect(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(deny.status),
            }),
            headers,
            body,
        })),
    }
}

/// gRPC Check, the usage log Envoy streams, and the HTTP endpoints, on one port.
pub fn routes(service: AuthzService) -> tonic::service::Routes {
    let state = service.state.clone();
    let metrics = service.metrics.clone();
    let http =
        gatehouse_service_kit::endpoints(move || state.load().is_some(), move || metrics.render());
    let usage_log = service.metrics.traffic.service();
    tonic::service::Routes::from(http)
        .add_service(AuthorizationServer::new(service))
        .add_service(usage_log)
}
