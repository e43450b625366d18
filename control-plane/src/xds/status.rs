//! Which nodes are connected and what each acknowledged or rejected, per type.
//! Backs `GET /v1/status/nodes`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::watch;

use super::{
    rollout::Placement,
    snapshot::ResourceType,
    stream::{RequestOutcome, Variant},
};

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub id: String,
    pub cluster: String,
    /// Its locality's zone, if it names one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub zone: String,
    pub variant: &'static str,
    pub connected_at_ms: u64,
    /// Why the node is held on the configuration it has (it holds one this
    /// store does not have; see `xds/guard.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The types the node has answered for, keyed by `cds`, `eds`, `lds`,
    /// `rds` (Envoy) or `auth` (ext-authz).
    pub types: BTreeMap<&'static str, TypeStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// The newest config version the node acknowledged for this type.
    pub acked_version: Option<String>,
    /// From the control plane serving that version to this node's ACK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_delay_ms: Option<u64>,
    pub nacks: u64,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub version: String,
    pub error_detail: String,
    pub at_ms: u64,
}

/// Shared registry of live streams.
#[derive(Debug, Clone)]
pub struct NodeRegistry {
    inner: Arc<Mutex<Registry>>,
    /// Bumped when an operator confirms this store is the one to serve:
    /// every held node is then served it.
    confirmations: Arc<watch::Sender<u64>>,
}

impl Default for NodeRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            confirmations: Arc::new(watch::channel(0).0),
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    streams: BTreeMap<u64, NodeStatus>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl NodeRegistry {
    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Registers a stream; the handle removes it when dropped.
    pub fn connect(&self, node: &Placement, variant: Variant) -> StreamHandle {
        let status = NodeStatus {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            zone: node.zone.clone(),
            variant: match variant {
                Variant::StateOfTheWorld => "sotw",
                Variant::Delta => "delta",
            },
            connected_at_ms: now_ms(),
            held: None,
            types: BTreeMap::new(),
        };
        let key = self.with(|r| {
            r.next_id += 1;
            r.streams.insert(r.next_id, status);
            r.next_id
        });
        StreamHandle {
            registry: self.clone(),
            key,
            connected: std::time::Instant::now(),
        }
    }

    /// An operator confirmed this store: held nodes are served it. Returns
    /// how many nodes were held.
    pub fn confirm(&self) -> usize {
        let held = self.with(|r| r.streams.values().filter(|s| s.held.is_some()).count());
        self.confirmations.send_modify(|n| *n += 1);
        held
    }

    /// Confirmations so far, to wait for the next.
    pub fn confirmations(&self) -> watch::Receiver<u64> {
        self.confirmations.subscribe()
    }

    /// Where every connected node is (what canary selectors match).
    pub fn placements(&self) -> Vec<Placement> {
        self.nodes()
            .into_iter()
            .map(|n| Placement {
                id: n.id,
                cluster: n.cluster,
                zone: n.zone,
            })
            .collect()
    }

    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.with(|r| r.streams.values().cloned().collect())
    }
}

/// A connected stream's entry in the registry.
#[derive(Debug)]
pub struct StreamHandle {
    registry: NodeRegistry,
    key: u64,
    connected: std::time::Instant,
}

impl StreamHandle {
    /// Records an ACK or NACK. For an ACK of a version this stream had not
    /// acknowledged yet for that type, `offered_at` (when the control plane
    /// began serving it) gives the delay, kept and returned; versions
    /// offered before the stream connected give none.
    pub fn record(
        &self,
        outcome: &RequestOutcome,
        offered_at: impl FnOnce(&str) -> Option<std::time::Instant>,
    ) -> Option<std::time::Duration> {
        let kind = match outcome {
            RequestOutcome::Ack { kind, .. } | RequestOutcome::Nack { kind, .. } => *kind,
            _ => return None,
        };
        self.registry.with(|r| {
            let t = r
                .streams
                .get_mut(&self.key)
                .map(|s| s.types.entry(kind.label()).or_default())?;
            match outcome {
                RequestOutcome::Ack { version, .. } => {
                    if t.acked_version.as_ref() == Some(version) {
                        return None;
                    }
                    t.acked_version = Some(version.clone());
                    let delay = offered_at(version)
                        .filter(|at| *at >= self.connected)
                        .map(|at| at.elapsed());
                    t.ack_delay_ms = delay.map(|d| d.as_millis() as u64);
                    delay
                }
                RequestOutcome::Nack { version, error, .. } => {
                    t.nacks += 1;
                    t.last_nack = Some(Nack {
                        version: version.clone(),
                        error_detail: error.clone(),
                        at_ms: now_ms(),
                    });
                    None
                }
                _ => None,
            }
        })
    }
}

impl StreamHandle {
    /// The node holds exactly snapshot `version` for these types.
    pub fn in_sync(&self, kinds: &[ResourceType], version: u64) {
        let version = version.to_string();
        self.registry.with(|r| {
            if let Some(stream) = r.streams.get_mut(&self.key) {
                for kind in kinds {
                    stream.types.entry(kind.label()).or_default().acked_version =
                        Some(version.clone());
                }
            }
        });
    }
}

impl StreamHandle {
    /// Why the node is held on its own configuration, or `None` once served.
    pub fn hold(&self, why: Option<&str>) {
        self.registry.with(|r| {
            if let Some(stream) = r.streams.get_mut(&self.key) {
                stream.held = why.map(str::to_owned);
            }
        });
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.registry.with(|r| r.streams.remove(&self.key));
    }
}
