//! The state of one ADS stream and the decision of what to push next.
//!
//! Shared by the state-of-the-world and delta variants: per resource type it
//! tracks what the node subscribed to, what it acknowledged, and the one
//! response in flight. Pushes are ordered make-before-break:
//!
//! - clusters first, then their endpoints;
//! - listeners and route configurations only once every cluster they send
//!   traffic to is acknowledged (and, for EDS clusters, warmed by an
//!   acknowledged load assignment);
//! - clusters and endpoints that the snapshot dropped stay until listeners and
//!   routes have converged, so no route ever points at a removed cluster.
//!
//! One response per type is in flight at a time; a stale nonce is ignored and
//! content the node rejected is not pushed again until it changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use super::snapshot::{ResourceType, Snapshot, XdsResource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    StateOfTheWorld,
    Delta,
}

/// What the node holds of one resource.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    version: String,
    /// Unknown for resources a delta client announced on reconnect.
    resource: Option<Arc<XdsResource>>,
}

impl From<&Arc<XdsResource>> for Held {
    fn from(resource: &Arc<XdsResource>) -> Self {
        Held {
            version: resource.version.clone(),
            resource: Some(resource.clone()),
        }
    }
}

type HeldSet = BTreeMap<String, Held>;

#[derive(Debug)]
struct InFlight {
    /// What the node will hold once it acknowledges.
    resulting: HeldSet,
    version_info: String,
}

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    answered: bool,
    /// SotW: the subscription changed, so the node needs an answer.
    must_answer: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    acked: HeldSet,
    in_flight: Option<InFlight>,
    /// The nonce of the latest response sent; requests quoting another are stale.
    last_nonce: Option<String>,
    /// Fingerprint of the last content the node rejected.
    rejected: Option<u64>,
}

/// What a request meant, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A first request or a subscription change.
    Subscribe(ResourceType),
    Ack {
        kind: ResourceType,
        version: String,
    },
    Nack {
        kind: ResourceType,
        version: String,
        error: String,
        /// The resources the rejected response changed for this node
        /// (name, content version): one of them is what the node refused.
        suspects: Vec<(String, String)>,
    },
    /// Answers a response that was superseded: ignored.
    Stale(ResourceType),
    UnknownType(String),
}

/// One response to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub kind: ResourceType,
    pub nonce: String,
    pub version_info: String,
    /// SotW: every resource the node should hold. Delta: only the changed ones.
    pub resources: Vec<Arc<XdsResource>>,
    /// Delta only: names the node should drop.
    pub removed: Vec<String>,
}

/// A request, decoded from either wire variant.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub type_url: &'a str,
    pub response_nonce: &'a str,
    pub error_detail: Option<&'a str>,
    /// SotW: the full subscription. Delta: names added.
    pub subscribe: Vec<&'a str>,
    /// Delta only: names removed.
    pub unsubscribe: Vec<&'a str>,
    /// Delta only, first request per type: what the node already holds.
    pub initial_versions: Vec<(&'a str, &'a str)>,
}

#[derive(Debug)]
pub struct StreamState {
    variant: Variant,
    types: [TypeState; ResourceType::ALL.len()],
    nonces: u64,
    /// The connection is encrypted and authenticated: sensitive resources
    /// (uploaded private keys) may go out on it.
    secure: bool,
    /// The node's fleet (its `cluster`): resources for other fleets are
    /// never sent.
    fleet: Option<String>,
}

impl StreamState {
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            types: Default::default(),
            nonces: 0,
            secure: false,
            fleet: None,
        }
    }

    /// The node's fleet, from its first request.
    pub fn set_fleet(&mut self, fleet: &str) {
        self.fleet = Some(fleet.to_owned());
    }

    fn for_this_node(&self, resource: &XdsResource) -> bool {
        (self.secure || !resource.sensitive)
            && (resource.fleets.is_empty()
                || self
                    .fleet
                    .as_ref()
                    .is_some_and(|f| resource.fleets.contains(f)))
    }

    /// Marks the stream as encrypted and authenticated (TLS and a token).
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    fn state(&self, kind: ResourceType) -> &TypeState {
        &self.types[kind as usize]
    }

    fn state_mut(&mut self, kind: ResourceType) -> &mut TypeState {
        &mut self.types[kind as usize]
    }

    /// Applies a request: subscription changes, then ACK/NACK.
    pub fn on_request(&mut self, request: &Request<'_>) -> RequestOutcome {
        let Some(kind) = ResourceType::from_type_url(request.type_url) else {
            return RequestOutcome::UnknownType(request.type_url.to_owned());
        };
        let variant = self.variant;
        let st = self.state_mut(kind);
        let latest = st.last_nonce.as_deref() == Some(request.response_nonce);
        let stale = !request.response_nonce.is_empty() && !latest;
        if variant == Variant::StateOfTheWorld && stale {
            return RequestOutcome::Stale(kind);
        }
        match variant {
            Variant::StateOfTheWorld => st.subscribe_sotw(kind, &request.subscribe),
            Variant::Delta => st.subscribe_delta(kind, request),
        }
        st.requested = true;
        if stale {
            return RequestOutcome::Stale(kind);
        }
        if !latest {
            return RequestOutcome::Subscribe(kind);
        }
        let Some(done) = st.in_flight.take() else {
            return RequestOutcome::Subscribe(kind);
        };
        match request.error_detail {
            Some(error) => {
                st.rejected = Some(fingerprint(&done.resulting));
                let suspects = done
                    .resulting
                    .iter()
                    .filter(|(name, held)| st.acked.get(*name) != Some(*held))
                    .map(|(name, held)| (name.clone(), held.version.clone()))
                    .collect();
                RequestOutcome::Nack {
                    kind,
                    version: done.version_info,
                    error: error.to_owned(),
                    suspects,
                }
            }
            None => {
                st.acked = done.resulting;
                st.rejected = None;
                RequestOutcome::Ack {
                    kind,
                    version: done.version_info,
                }
            }
        }
    }

    /// Everything to send now, in make-before-break order.
    /// Whether anything was pushed on this stream yet.
    pub fn served_any(&self) -> bool {
        self.nonces > 0
    }

    pub fn pushes(&mut self, snapshot: &Snapshot) -> Vec<Push> {
        let mut pushes = Vec::new();
        for kind in ResourceType::ALL {
            let st = self.state(kind);
            if !st.requested || st.in_flight.is_some() {
                continue;
            }
            let Some(target) = self.target(kind, snapshot) else {
                continue;
            };
            if let Some(push) = self.push(kind, target, snapshot.version) {
                pushes.push(push);
            }
        }
        pushes
    }

    fn push(&mut self, kind: ResourceType, target: HeldSet, version: u64) -> Option<Push> {
        let variant = self.variant;
        let st = self.state(kind);
        let changed: Vec<Arc<XdsResource>> = target
            .iter()
            .filter(|(name, held)| st.acked.get(*name).map(|a| &a.version) != Some(&held.version))
            .filter_map(|(_, held)| held.resource.clone())
            .collect();
        let removed: Vec<String> = st
            .acked
            .keys()
            .filter(|name| !target.contains_key(*name))
            .cloned()
            .collect();
        let differs = !changed.is_empty() || !removed.is_empty();
        if st.answered && !st.must_answer && !differs {
            return None;
        }
        if st.rejected == Some(fingerprint(&target)) {
            return None;
        }
        let (resources, removed) = match variant {
            Variant::StateOfTheWorld => (
                target.values().filter_map(|h| h.resource.clone()).collect(),
                Vec::new(),
            ),
            Variant::Delta => (changed, removed),
        };
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let version_info = version.to_string();
        let st = self.state_mut(kind);
        st.answered = true;
        st.must_answer = false;
        st.last_nonce = Some(nonce.clone());
        st.in_flight = Some(InFlight {
            resulting: target,
            version_info: version_info.clone(),
        });
        Some(Push {
            kind,
            nonce,
            version_info,
            resources,
            removed,
        })
    }

    /// What the node should hold of `kind` now, or `None` to hold back.
    fn target(&self, kind: ResourceType, snapshot: &Snapshot) -> Option<HeldSet> {
        let st = self.state(kind);
        let wanted = |name: &String| st.wildcard || st.names.contains(name);
        let mut target: HeldSet = snapshot
            .resources(kind)
            .iter()
            .filter(|(name, _)| wanted(name))
            .filter(|(_, r)| self.for_this_node(r))
            .map(|(name, r)| (name.clone(), Held::from(r)))
            .collect();
        match kind {
            ResourceType::Cluster | ResourceType::Endpoint => {
                // Removals last: keep what the node holds until the filter
                // configurations, listeners and routes that may still use it
                // have converged.
                if !self.converged(ResourceType::ExtensionConfig, snapshot)
                    || !self.converged(ResourceType::Listener, snapshot)
                    || !self.converged(ResourceType::Route, snapshot)
                {
                    for (name, held) in &st.acked {
                        if wanted(name) {
                            target.entry(name.clone()).or_insert_with(|| held.clone());
                        }
                    }
                }
                Some(target)
            }
            // Our own services' state depends on no Envoy resource; nor
            // does a secret.
            ResourceType::Auth
            | ResourceType::RateLimit
            | ResourceType::Broker
            | ResourceType::Secret => Some(target),
            ResourceType::ExtensionConfig | ResourceType::Listener | ResourceType::Route => {
                // Strict order: nothing that routes traffic goes out while
                // clusters or endpoints are still being delivered, and routes
                // (whose per-filter settings name parts of the filter
                // configurations) wait for those configurations. Listeners
                // cannot wait: Envoy asks for their filter configurations
                // only once it has them, and warms them until they arrive.
                if self.state(ResourceType::Cluster).in_flight.is_some()
                    || self.state(ResourceType::Endpoint).in_flight.is_some()
                    || (kind == ResourceType::Route
                        && self
                            .state(ResourceType::ExtensionConfig)
                            .in_flight
                            .is_some())
                {
                    return None;
                }
                let ready = target
                    .values()
                    .filter_map(|h| h.resource.as_ref())
                    .flat_map(|r| r.clusters.iter())
                    .all(|cluster| self.cluster_ready(cluster, snapshot));
                ready.then_some(target)
            }
        }
    }

    /// A cluster can take traffic once acknowledged and, for EDS, warmed.
    fn cluster_ready(&self, cluster: &str, snapshot: &Snapshot) -> bool {
        self.state(ResourceType::Cluster)
            .acked
            .contains_key(cluster)
            && (!snapshot.is_eds_cluster(cluster)
                || self
                    .state(ResourceType::Endpoint)
                    .acked
                    .contains_key(cluster))
    }

    /// The node holds exactly the snapshot's resources of `kind`.
    fn converged(&self, kind: ResourceType, snapshot: &Snapshot) -> bool {
        let st = self.state(kind);
        if st.in_flight.is_some() {
            return false;
        }
        let wanted = |name: &String| st.wildcard || st.names.contains(name);
        let expected: BTreeMap<&String, &String> = snapshot
            .resources(kind)
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, r)| (name, &r.version))
            .collect();
        let held: BTreeMap<&String, &String> = st
            .acked
            .iter()
            .map(|(name, h)| (name, &h.version))
            .collect();
        expected == held
    }

    /// Types whose acknowledged resources are exactly the snapshot's.
    pub fn in_sync(&self, snapshot: &Snapshot) -> Vec<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .filter(|kind| self.state(*kind).requested && self.converged(*kind, snapshot))
            .collect()
    }

    /// Names of the resources of `kind` the node holds.
    pub fn holds(&self, kind: ResourceType) -> Vec<String> {
        self.state(kind).acked.keys().cloned().collect()
    }
}

impl TypeState {
    fn subscribe_sotw(&mut self, kind: ResourceType, names: &[&str]) {
        let wildcard = kind.is_wildcard() && (names.is_empty() || names.contains(&"*"));
        let names: BTreeSet<String> = names
            .iter()
            .filter(|n| **n != "*")
            .map(|n| (*n).to_owned())
            .collect();
        if wildcard != self.wildcard || names != self.names {
            self.must_answer = true;
            // SotW: what the node holds outside its subscription is gone.
            if !wildcard {
                self.acked.retain(|name, _| names.contains(name));
            }
        }
        self.wildcard = wildcard;
        self.names = names;
    }

    fn subscribe_delta(&mut self, kind: ResourceType, request: &Request<'_>) {
        if !self.requested {
            self.wildcard = kind.is_wildcard() && request.subscribe.is_empty();
            for (name, version) in &request.initial_versions {
                self.acked.insert(
                    (*name).to_owned(),
                    Held {
                        version: (*version).to_owned(),
                        resource: None,
                    },
                );
            }
        }
        for name in &request.subscribe {
            match *name {
                "*" => self.wildcard = true,
                name => {
                    self.names.insert(name.to_owned());
                }
            }
        }
        for name in &request.unsubscribe {
            match *name {
                "*" => self.wildcard = false,
                name => {
                    self.names.remove(name);
                    self.acked.remove(name);
                }
            }
        }
    }
}

/// Identifies a set of resources by names and content versions.
fn fingerprint(set: &HeldSet) -> u64 {
    let mut bytes = Vec::new();
    for (name, held) in set {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(held.version.as_bytes());
        bytes.push(0);
    }
    super::snapshot::fnv1a(&bytes)
}

#[cfg(test)]
mod tests;
