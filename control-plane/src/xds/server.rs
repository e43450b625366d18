//! The ADS gRPC service (state-of-the-world and delta) serving what [`Rollout`] passes on.
//!
//! Each stream runs as one task: it applies the node's requests to its
//! [`StreamState`], and after every request or new snapshot sends whatever the
//! state says is due. Streams end when the node goes away or on shutdown.

use crate::xds::rollout::Placement;
use std::pin::Pin;

use gatehouse_proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};
use tracing::{debug, error, info, warn};

use super::{
    auth::{NodeBinding, PeerNames},
    guard::{Claim, mismatch},
    rollout::Rollout,
    snapshot::ResourceType,
    status::NodeRegistry,
    stream::{Push, Request, RequestOutcome, StreamState, Variant},
};
use crate::telemetry::{Metrics, TypeLabel};

/// Largest request accepted from a node (delta reconnects list every resource).
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

pub struct XdsServer {
    rollout: Rollout,
    registry: NodeRegistry,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Streams are encrypted and authenticated: uploaded keys may go out.
    secure: bool,
}

impl XdsServer {
    pub fn new(
        rollout: Rollout,
        registry: NodeRegistry,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        // Every type's series exists from the start (at 0), so rates and
        // alerts on them have data before the first NACK.
        for kind in ResourceType::ALL {
            let label = TypeLabel {
                r#type: kind.label(),
            };
            for family in [
                &metrics.xds_responses,
                &metrics.xds_acks,
                &metrics.xds_nacks,
            ] {
                let _ = family.get_or_create(&label);
            }
        }
        Self {
            rollout,
            registry,
            metrics,
            shutdown,
            secure: false,
        }
    }

    /// Whether the port is on TLS with a token (`StreamState::secure`).
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The tonic service, ready to add to a router.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    fn spawn<W: Wire>(
        &self,
        inbound: Streaming<W::Request>,
        binding: Option<NodeBinding>,
        peer: Option<PeerNames>,
    ) -> ReceiverStream<Result<W::Response, Status>> {
        let (tx, rx) = mpsc::channel(16);
        let task = StreamTask {
            rollout: self.rollout.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            secure: self.secure,
            binding,
            peer,
        };
        tokio::spawn(task.run::<W>(inbound, tx));
        ReceiverStream::new(rx)
    }
}

/// The client certificate's names, on an mTLS xDS port.
fn peer_names<T>(request: &GrpcRequest<T>) -> Option<PeerNames> {
    let certs = request.peer_certs()?;
    PeerNames::of(certs.first()?.as_ref())
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: GrpcRequest<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let binding = request.extensions().get::<NodeBinding>().cloned();
        let peer = peer_names(&request);
        Ok(Response::new(Box::pin(self.spawn::<StateOfTheWorld>(
            request.into_inner(),
            binding,
            peer,
        ))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: GrpcRequest<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let binding = request.extensions().get::<NodeBinding>().cloned();
        let peer = peer_names(&request);
        Ok(Response::new(Box::pin(self.spawn::<Delta>(
            request.into_inner(),
            binding,
            peer,
        ))))
    }
}

/// The two wire variants of ADS, mapped onto one stream state machine.
trait Wire: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const VARIANT: Variant;
    fn node(request: &Self::Request) -> Option<&gatehouse_proto::core::Node>;
    fn decode(request: &Self::Request) -> Request<'_>;
    /// What a node's first request for a type says it already holds.
    fn claim(request: &Self::Request) -> Option<Claim>;
    fn encode(push: Push) -> Self::Response;
}

struct StateOfTheWorld;

impl Wire for StateOfTheWorld {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const VARIANT: Variant = Variant::StateOfTheWorld;

    fn node(request: &DiscoveryRequest) -> Option<&gatehouse_proto::core::Node> {
        request.node.as_ref()
    }

    fn decode(r: &DiscoveryRequest) -> Request<'_> {
        Request {
            type_url: &r.type_url,
            response_nonce: &r.response_nonce,
            error_detail: r.error_detail.as_ref().map(|e| e.message.as_str()),
            subscribe: r.resource_names.iter().map(String::as_str).collect(),
            ..Request::default()
        }
    }

    fn claim(r: &DiscoveryRequest) -> Option<Claim> {
        if !r.response_nonce.is_empty() {
            return None;
        }
        Claim::from_request(Self::VARIANT, &r.version_info, 0)
    }

    fn encode(push: Push) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: push.version_info,
            resources: push.resources.iter().map(|r| r.resource.clone()).collect(),
            type_url: push.kind.type_url().to_owned(),
            nonce: push.nonce,
            ..Default::default()
        }
    }
}

struct Delta;

impl Wire for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const VARIANT: Variant = Variant::Delta;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&gatehouse_proto::core::Node> {
        request.node.as_ref()
    }

    fn decode(r: &DeltaDiscoveryRequest) -> Request<'_> {
        Request {
            type_url: &r.type_url,
            response_nonce: &r.response_nonce,
            error_detail: r.error_detail.as_ref().map(|e| e.message.as_str()),
            subscribe: r
                .resource_names_subscribe
                .iter()
                .map(String::as_str)
                .collect(),
            unsubscribe: r
                .resource_names_unsubscribe
                .iter()
                .map(String::as_str)
                .collect(),
            initial_versions: r
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }

    fn claim(r: &DeltaDiscoveryRequest) -> Option<Claim> {
        if !r.response_nonce.is_empty() {
            return None;
        }
        Claim::from_request(Self::VARIANT, "", r.initial_resource_versions.len())
    }

    fn encode(push: Push) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: push.version_info,
            resources: push
                .resources
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: push.kind.type_url().to_owned(),
            removed_resources: push.removed,
            nonce: push.nonce,
            ..Default::default()
        }
    }
}

struct StreamTask {
    rollout: Rollout,
    registry: NodeRegistry,
    metrics: Metrics,
    shutdown: CancellationToken,
    secure: bool,
    /// The node token the stream presented (`auth.rs`).
    binding: Option<NodeBinding>,
    /// The names of the node's client certificate (an mTLS xDS port).
    peer: Option<PeerNames>,
}

impl StreamTask {
    async fn run<W: Wire>(
        self,
        mut inbound: Streaming<W::Request>,
        tx: mpsc::Sender<Result<W::Response, Status>>,
    ) {
        let mut snapshots = self.rollout.watch();
        let mut pins = self.rollout.pin();
        let mut node = String::new();
        let mut placement = Placement::default();
        let mut state = StreamState::new(W::VARIANT).secure(self.secure);
        let mut handle = None;
        // What the node said it holds, until it is served (see guard.rs).
        let mut claim: Option<Claim> = None;
        let mut held = Held::new(self.metrics.xds_nodes_held.clone());
        let mut confirmations = self.registry.confirmations();
        self.metrics.xds_streams.inc();
        let _streams = scopeguard(self.metrics.xds_streams.clone());
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                changed = snapshots.changed() => if changed.is_err() { break },
                changed = pins.changed() => if changed.is_err() { break },
                confirmed = confirmations.changed() => {
                    if confirmed.is_err() { break }
                    if claim.take().is_some() && held.is() {
                        warn!(node, "an operator confirmed this store: serving the held node");
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => {
                        if handle.is_none() {
                            placement = W::node(&request).map(Placement::of).unwrap_or_default();
                            info!(node = placement.id, cluster = placement.cluster, zone = placement.zone, variant = ?W::VARIANT, "node connected");
                            node = placement.id.clone();
                            if let Some(peer) = &self.peer
                                && !peer.admits(&placement.id)
                            {
                                warn!(node = placement.id, names = ?peer.0, "a client certificate naming another node");
                                let _ = tx
                                    .send(Err(Status::permission_denied(
                                        "this client certificate does not name the node",
                                    )))
                                    .await;
                                break;
                            }
                            if let Some(binding) = &self.binding
                                && !binding.0.admits(&placement.id, &placement.cluster)
                            {
                                warn!(node = placement.id, cluster = placement.cluster, token = binding.0.name, "a node token used outside its binding");
                                let _ = tx
                                    .send(Err(Status::permission_denied(
                                        "this xDS token is bound to another fleet or node",
                                    )))
                                    .await;
                                break;
                            }
                            handle = Some(self.registry.connect(&placement, W::VARIANT));
                            state.set_fleet(&placement.cluster);
                        }
                        if !state.served_any()
                            && let Some(said) = W::claim(&request)
                        {
                            claim = Some(match claim.take() {
                                Some(before) => before.max(said),
                                None => said,
                            });
                        }
                        let outcome = state.on_request(&W::decode(&request));
                        self.observe(&node, &outcome);
                        if let Some(handle) = &handle {
                            let delay = handle.record(&outcome, |version| {
                                self.rollout.offered_at(version.parse().ok()?)
                            });
                            if let (Some(delay), RequestOutcome::Ack { kind, .. }) =
                                (delay, &outcome)
                            {
                                self.metrics
                                    .xds_ack_delay_seconds
                                    .get_or_create(&TypeLabel {
                                        r#type: kind.label(),
                                    })
                                    .observe(delay.as_secs_f64());
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        debug!(%status, "stream closed by error");
                        break;
                    }
                },
            }
            if let Some(binding) = &self.binding
                && !binding.valid(&self.rollout)
            {
                info!(
                    node,
                    token = binding.0.name,
                    "xDS token revoked: closing the stream"
                );
                let _ = tx
                    .send(Err(Status::unauthenticated("this xDS token was revoked")))
                    .await;
                break;
            }
            let snapshot = snapshots.borrow_and_update().clone();
            let pin = pins.borrow_and_update().clone();
            let Some(mut snapshot) = snapshot else {
                continue;
            };
            // While a canary runs, only its nodes get what is newest.
            if let Some(pin) = &pin {
                snapshot = pin.snapshot_for(&placement, &snapshot);
            }
            let latest = self
                .rollout
                .status()
                .latest_version
                .unwrap_or(snapshot.version);
            match claim.as_ref().and_then(|c| mismatch(c, latest)) {
                Some(why) => {
                    if !held.is() {
                        error!(node, reason = %why, "holding the node on the configuration it has");
                        held.set(true);
                        if let Some(handle) = &handle {
                            handle.hold(Some(&why));
                        }
                    }
                    continue;
                }
                None => {
                    if held.is() {
                        info!(node, version = latest, "serving the held node");
                        held.set(false);
                        if let Some(handle) = &handle {
                            handle.hold(None);
                        }
                    }
                    claim = None;
                }
            }
            let pushes = state.pushes(&snapshot);
            if let Some(handle) = &handle {
                handle.in_sync(&state.in_sync(&snapshot), snapshot.version);
            }
            for push in pushes {
                self.metrics
                    .xds_responses
                    .get_or_create(&TypeLabel {
                        r#type: push.kind.label(),
                    })
                    .inc();
                if tx.send(Ok(W::encode(push))).await.is_err() {
                    return;
                }
            }
        }
    }

    fn observe(&self, node: &str, outcome: &RequestOutcome) {
        match outcome {
            RequestOutcome::Ack { kind, .. } => {
                self.metrics
                    .xds_acks
                    .get_or_create(&TypeLabel {
                        r#type: kind.label(),
                    })
                    .inc();
            }
            RequestOutcome::Nack {
                kind,
                version,
                error,
                suspects,
            } => {
                warn!(
                    node,
                    r#type = kind.label(),
                    version,
                    error,
                    "node rejected config (NACK)"
                );
                self.rollout.reject(node, *kind, version, suspects, error);
                self.metrics
                    .xds_nacks
                    .get_or_create(&TypeLabel {
                        r#type: kind.label(),
                    })
                    .inc();
            }
            RequestOutcome::UnknownType(url) => debug!(type_url = url, "unsupported resource type"),
            RequestOutcome::Stale(kind) => debug!(r#type = kind.label(), "stale nonce ignored"),
            RequestOutcome::Subscribe(_) => {}
        }
    }
}

/// Whether this stream's node is held, counted in a gauge that the end of
/// the stream, however it ends, takes it out of.
struct Held {
    gauge: prometheus_client::metrics::gauge::Gauge,
    held: bool,
}

impl Held {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        Self { gauge, held: false }
    }

    fn is(&self) -> bool {
        self.held
    }

    fn set(&mut self, held: bool) {
        if held != self.held {
            if held {
                self.gauge.inc();
            } else {
                self.gauge.dec();
            }
            self.held = held;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Decrements the stream gauge when the stream task ends, however it ends.
struct StreamGauge(prometheus_client::metrics::gauge::Gauge);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn scopeguard(gauge: prometheus_client::metrics::gauge::Gauge) -> StreamGauge {
    StreamGauge(gauge)
}
