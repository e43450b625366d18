//! A versioned, internally consistent set of xDS resources.
//!
//! Snapshots are immutable and shared (`Arc`) by every stream. Each resource
//! carries a content version (a hash of its encoding) and the clusters it
//! depends on, which the streams use to order pushes make-before-break.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use gatehouse_proto::{auth, broker, protobuf::Any, ratelimit, type_url};

/// The resource types Gatehouse serves, in the order updates are pushed:
/// clusters before the endpoints that warm them, before the filter
/// configurations, listeners and routes that send traffic to them. Then Gatehouse's own types, which only
/// our services subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    /// HTTP filter configurations (ECDS) the listeners refer to: kept out of
    /// the listener so changing them does not drain its connections.
    ExtensionConfig,
    /// TLS certificates (SDS), named by listeners and clusters.
    Secret,
    Listener,
    Route,
    /// The authentication state ext-authz decides from.
    Auth,
    /// The policies and plans ratelimit-service decides from.
    RateLimit,
    /// The topics the broker serves.
    Broker,
}

impl ResourceType {
    pub const ALL: [ResourceType; 9] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::ExtensionConfig,
        ResourceType::Secret,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Auth,
        ResourceType::RateLimit,
        ResourceType::Broker,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => type_url::CLUSTER,
            ResourceType::Endpoint => type_url::ENDPOINT,
            ResourceType::ExtensionConfig => type_url::EXTENSION_CONFIG,
            ResourceType::Secret => type_url::SECRET,
            ResourceType::Listener => type_url::LISTENER,
            ResourceType::Route => type_url::ROUTE,
            ResourceType::Auth => auth::TYPE_URL,
            ResourceType::RateLimit => ratelimit::TYPE_URL,
            ResourceType::Broker => broker::TYPE_URL,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short label for status output and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::ExtensionConfig => "ecds",
            ResourceType::Secret => "sds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Auth => "auth",
            ResourceType::RateLimit => "ratelimit",
            ResourceType::Broker => "broker",
        }
    }

    /// Clusters and listeners are subscribed as a whole (wildcard); endpoints,
    /// filter configurations and route configurations by name.
    pub fn is_wildcard(self) -> bool {
        matches!(
            self,
            ResourceType::Cluster
                | ResourceType::Listener
                | ResourceType::Auth
                | ResourceType::RateLimit
                | ResourceType::Broker
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One encoded resource.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    pub name: String,
    /// Content version: a stable hash of the encoded resource.
    pub version: String,
    pub resource: Any,
    /// Clusters this resource sends traffic to (routes, listeners).
    pub clusters: Vec<String>,
    /// Holds a private key: sent only over an encrypted, authenticated stream.
    pub sensitive: bool,
    /// The fleets (node `cluster`s) that get it; empty: every node.
    pub fleets: Vec<String>,
}

impl XdsResource {
    pub fn new(name: impl Into<String>, resource: Any, clusters: Vec<String>) -> Self {
        let version = format!("{:016x}", fnv1a(&resource.value));
        Self {
            name: name.into(),
            version,
            resource,
            clusters,
            sensitive: false,
            fleets: Vec::new(),
        }
    }

    /// Only nodes of `fleets` get it (none given: every node).
    pub fn for_fleets(mut self, fleets: Vec<String>) -> Self {
        self.fleets = fleets;
        self
    }
}

/// FNV-1a: stable across processes and builds, so replicas and restarted
/// control planes agree on delta xDS resource versions.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub type Resources = BTreeMap<String, Arc<XdsResource>>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConsistencyError {
    #[error("duplicate {} resource {name:?}", kind.label())]
    Duplicate { kind: ResourceType, name: String },
    #[error("{} resource {from:?} refers to missing cluster {cluster:?}", kind.label())]
    MissingCluster {
        kind: ResourceType,
        from: String,
        cluster: String,
    },
    #[error("EDS cluster {0:?} has no load assignment")]
    MissingEndpoints(String),
    #[error("load assignment {0:?} has no cluster")]
    OrphanEndpoints(String),
}

/// When a served certificate expires (`/v1/status/nodes`, the
/// `gatehouse_certificate_not_after_seconds` metric).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateExpiry {
    pub name: String,
    /// notAfter in seconds since the Unix epoch; unknown (`None`) for files
    /// on the Envoy hosts, which Envoy's own expiry metric covers.
    pub not_after_s: Option<i64>,
}

/// Everything one Envoy needs, checked for consistency before it is served.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The store's config version this snapshot was built from.
    pub version: u64,
    /// The certificates its secrets carry.
    pub certificates: Vec<CertificateExpiry>,
    /// Per-node and per-fleet xDS tokens valid at this version (hashes).
    pub node_tokens: Arc<Vec<crate::model::node_token::StoredNodeToken>>,
    resources: [Resources; ResourceType::ALL.len()],
    /// Clusters whose endpoints arrive over EDS (and so must be warmed).
    eds_clusters: BTreeSet<String>,
}

/// The resources of a snapshot before they are checked.
#[derive(Debug, Default)]
pub struct SnapshotParts {
    pub clusters: Vec<XdsResource>,
    pub eds_clusters: BTreeSet<String>,
    pub endpoints: Vec<XdsResource>,
    pub extension_configs: Vec<XdsResource>,
    pub secrets: Vec<XdsResource>,
    pub listeners: Vec<XdsResource>,
    pub routes: Vec<XdsResource>,
    pub certificates: Vec<CertificateExpiry>,
    pub node_tokens: Vec<crate::model::node_token::StoredNodeToken>,
    pub auth: Vec<XdsResource>,
    pub ratelimit: Vec<XdsResource>,
    pub broker: Vec<XdsResource>,
}

impl Snapshot {
    /// Builds a snapshot, refusing one with duplicate names or dangling references.
    pub fn new(version: u64, parts: SnapshotParts) -> Result<Self, ConsistencyError> {
        let mut snapshot = Snapshot {
            version,
            certificates: parts.certificates,
            node_tokens: Arc::new(parts.node_tokens),
            eds_clusters: parts.eds_clusters,
            ..Snapshot::default()
        };
        let typed = [
            (ResourceType::Cluster, parts.clusters),
            (ResourceType::Endpoint, parts.endpoints),
            (ResourceType::ExtensionConfig, parts.extension_configs),
            (ResourceType::Secret, parts.secrets),
            (ResourceType::Listener, parts.listeners),
            (ResourceType::Route, parts.routes),
            (ResourceType::Auth, parts.auth),
            (ResourceType::RateLimit, parts.ratelimit),
            (ResourceType::Broker, parts.broker),
        ];
        for (kind, list) in typed {
            let map = &mut snapshot.resources[kind.index()];
            for resource in list {
                let name = resource.name.clone();
                if map.insert(name.clone(), Arc::new(resource)).is_some() {
                    return Err(ConsistencyError::Duplicate { kind, name });
                }
            }
        }
        snapshot.check()?;
        Ok(snapshot)
    }

    fn check(&self) -> Result<(), ConsistencyError> {
        let clusters = self.resources(ResourceType::Cluster);
        for kind in [
            ResourceType::ExtensionConfig,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
            for resource in self.resources(kind).values() {
                if let Some(cluster) = resource
                    .clusters
                    .iter()
                    .find(|c| !clusters.contains_key(*c))
                {
                    return Err(ConsistencyError::MissingCluster {
                        kind,
                        from: resource.name.clone(),
                        cluster: cluster.clone(),
                    });
                }
            }
        }
        let endpoints = self.resources(ResourceType::Endpoint);
        if let Some(missing) = self
            .eds_clusters
            .iter()
            .find(|c| !endpoints.contains_key(*c))
        {
            return Err(ConsistencyError::MissingEndpoints(missing.clone()));
        }
        if let Some(orphan) = endpoints.keys().find(|e| !self.eds_clusters.contains(*e)) {
            return Err(ConsistencyError::OrphanEndpoints(orphan.clone()));
        }
        Ok(())
    }

    pub fn resources(&self, kind: ResourceType) -> &Resources {
        &self.resources[kind.index()]
    }

    pub fn is_eds_cluster(&self, name: &str) -> bool {
        self.eds_clusters.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, clusters: &[&str]) -> XdsResource {
        XdsResource::new(
            name,
            Any {
                type_url: String::new(),
                value: name.as_bytes().to_vec(),
            },
            clusters.iter().map(|c| c.to_string()).collect(),
        )
    }

    #[test]
    fn rejects_routes_to_missing_clusters() {
        let parts = SnapshotParts {
            clusters: vec![res("a", &[])],
            routes: vec![res("http", &["a", "b"])],
            ..SnapshotParts::default()
        };
        assert_eq!(
            Snapshot::new(1, parts).unwrap_err(),
            ConsistencyError::MissingCluster {
                kind: ResourceType::Route,
                from: "http".into(),
                cluster: "b".into()
            }
        );
    }

    #[test]
    fn rejects_duplicates_and_unwarmed_eds_clusters() {
        let dup = SnapshotParts {
            clusters: vec![res("a", &[]), res("a", &[])],
            ..SnapshotParts::default()
        };
        assert!(matches!(
            Snapshot::new(1, dup),
            Err(ConsistencyError::Duplicate { .. })
        ));
        let no_endpoints = SnapshotParts {
            clusters: vec![res("a", &[])],
            eds_clusters: ["a".to_string()].into(),
            ..SnapshotParts::default()
        };
        assert_eq!(
            Snapshot::new(1, no_endpoints).unwrap_err(),
            ConsistencyError::MissingEndpoints("a".into())
        );
    }

    #[test]
    fn content_versions_are_stable() {
        assert_eq!(res("x", &[]).version, res("x", &[]).version);
        assert_ne!(res("x", &[]).version, res("y", &[]).version);
    }
}
