//! A real OTLP/gRPC receiver for tests (no collector binary can be
//! installed here): it keeps every span and log record it is sent, with its
//! service's name and attributes, until stopped. Built on `opentelemetry-proto`'s generated
//! server, like the test upstreams are real HTTP servers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
};
use tokio::{net::TcpListener, sync::oneshot};

/// One span as received: ids in lowercase hex ("" for no parent).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
}

/// One log record as received.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub service: String,
    pub body: String,
    pub trace_id: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default, Clone)]
struct Sink(Arc<Mutex<Vec<ReceivedSpan>>>);

#[derive(Default, Clone)]
struct LogSink(Arc<Mutex<Vec<ReceivedLog>>>);

#[tonic::async_trait]
impl LogsService for LogSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_logs in request.into_inner().resource_logs {
            let service = service_name(resource_logs.resource.as_ref());
            for scope in resource_logs.scope_logs {
                for record in scope.log_records {
                    received.push(ReceivedLog {
                        service: service.clone(),
                        body: text(record.body.as_ref()),
                        trace_id: hex::encode(record.trace_id),
                        attributes: attributes(&record.attributes),
                    });
                }
            }
        }
        if let Ok(mut logs) = self.0.lock() {
            logs.extend(received);
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// The `service.name` of an exported batch's resource ("" without one).
fn service_name(resource: Option<&Resource>) -> String {
    resource
        .map(|r| attributes(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent_span_id: hex::encode(span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(received);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The receiver; stops (and closes its port) when dropped or stopped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    sink: Sink,
    logs: LogSink,
    stop: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sink = Sink::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let logs = LogSink::default();
        let service = TraceServiceServer::new(sink.clone());
        let logs_service = LogsServiceServer::new(logs.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(logs_service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            sink,
            logs,
            stop: Some(stop),
        }
    }

    /// `host:port`, as `--otlp-endpoint` takes it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.logs.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits up to `within` until `done` holds for the spans received.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}
