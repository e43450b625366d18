//! What the fleet is served: the newest snapshot, unless a node rejected it.
//!
//! The sync loop offers every consistent snapshot it builds; streams serve
//! what [`Rollout`] passes on. When a node NACKs, the resources that response
//! changed for it become suspect, and no snapshot carrying any of them is
//! served again: every node, including nodes that connect later, goes back to
//! (or stays on) the newest earlier snapshot without them. A newer version
//! that changes the suspect resources is rolled out as usual.
//!
//! Refused resources are recorded in the store: a restarted control plane
//! keeps the fleet off them, and starts from the newest earlier version
//! without them (rebuilt from history by the sync loop). Replicas sharing
//! the store learn each other's refusals the same way ([`Rollout::learn`]),
//! so a node connected to one replica never gets what a node of another
//! refused.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::snapshot::{ResourceType, Snapshot};
use crate::{clock::now_ms, store::RejectedResource};

pub mod analysis;
mod canary;
pub use analysis::Analysis;
pub use canary::{CanaryError, CanaryStatus, Phase, Pin, Placement, Selector};

/// Where the rollout keeps what nodes refused, so that a restarted control
/// plane and the other replicas keep the fleet off it too (the store).
pub trait RefusalLog: Send + Sync + 'static {
    /// Records refusals; must not block (the store writes in the background).
    fn record(&self, refused: Vec<RejectedResource>);
}

/// Snapshots kept to fall back to (each holds the whole config: at 10,000
/// routes a few MiB).
const FALLBACKS: usize = 4;
/// Rejections listed in status (the suspect set itself is not trimmed).
const REJECTIONS_SHOWN: usize = 20;
/// Versions whose offer time is kept: enough for every node to catch up.
const OFFERS_KEPT: usize = 64;

/// One NACK, as status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// The snapshot version the node was sent.
    pub version: String,
    pub node: String,
    pub r#type: &'static str,
    /// Names of the resources that response changed for the node.
    pub resources: Vec<String>,
    pub error_detail: String,
    pub at_ms: u64,
}

/// Fleet-wide rollout state for `GET /v1/status/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    /// The newest snapshot built from the store.
    pub latest_version: Option<u64>,
    /// The snapshot every node is being served.
    pub served_version: Option<u64>,
    /// True when the newest snapshot is held back because a node rejected it.
    pub held_back: bool,
    /// Most recent first.
    pub rejections: Vec<Rejection>,
    /// The current or last canary (`rollout/canary.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// The served snapshot's certificates and when they expire.
    pub certificates: Vec<super::snapshot::CertificateExpiry>,
}

#[derive(Debug, Default)]
struct State {
    latest: Option<Arc<Snapshot>>,
    /// Snapshots served so far, oldest first: the fallback candidates.
    served: VecDeque<Arc<Snapshot>>,
    /// (type, name, content version) of every resource a node refused.
    suspects: BTreeSet<(ResourceType, String, String)>,
    rejections: VecDeque<Rejection>,
    /// When each recent version was first offered (for ACK delays).
    offered: VecDeque<(u64, Instant)>,
    /// The current or last canary.
    canary: Option<CanaryStatus>,
    /// While a canary runs: what the other nodes stay on.
    pinned: Option<Arc<Snapshot>>,
}

impl State {
    fn is_suspect(&self, snapshot: &Snapshot) -> bool {
        self.suspects.iter().any(|(kind, name, version)| {
            snapshot
                .resources(*kind)
                .get(name)
                .is_some_and(|r| &r.version == version)
        })
    }

    /// Serves `snapshot` next, keeping at most [`FALLBACKS`] to go back to.
    fn push_served(&mut self, snapshot: Arc<Snapshot>) {
        self.served.push_back(snapshot);
        if self.served.len() > FALLBACKS {
            self.served.pop_front();
        }
    }

    fn current(&self) -> Option<&Arc<Snapshot>> {
        self.served.back()
    }

    /// When what is served carries a refused resource: the newest earlier
    /// served snapshot without any, to serve instead.
    fn fall_back(&mut self) -> Option<Arc<Snapshot>> {
        let current = self.current()?.clone();
        if !self.is_suspect(&current) {
            return None;
        }
        while self.current().is_some_and(|c| self.is_suspect(c)) {
            self.served.pop_back();
        }
        match self.current() {
            Some(good) => Some(good.clone()),
            None => {
                // Nothing earlier is clean: keep serving what nodes hold.
                error!(
                    version = current.version,
                    "a node rejected the config and no earlier snapshot is free of it"
                );
                self.served.push_back(current);
                None
            }
        }
    }
}

/// Shared between the sync loop's output, the streams and the admin API.
#[derive(Clone)]
pub struct Rollout {
    state: Arc<Mutex<State>>,
    served: watch::Sender<Option<Arc<Snapshot>>>,
    /// While a canary runs: who is in it and what the rest are pinned to.
    pin: watch::Sender<Option<Arc<Pin>>>,
    /// Where refusals are recorded, if anywhere.
    refusals: Option<Arc<dyn RefusalLog>>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("recorded", &self.refusals.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            served: watch::channel(None).0,
            pin: watch::channel(None).0,
            refusals: None,
        }
    }
}

impl Rollout {
    /// What to serve: `None` until the first consistent snapshot exists, so
    /// nothing is served before then, never an empty config.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.served.subscribe()
    }

    /// Records every refusal in `log` (see [`Rollout::learn`]).
    pub fn with_refusal_log(mut self, log: Arc<dyn RefusalLog>) -> Self {
        self.refusals = Some(log);
        self
    }

    /// Takes in refusals recorded in the store: at start, those from before
    /// a restart; later, those other replicas' nodes made. Returns whether
    /// any was new. When what is served now carries a newly refused
    /// resource, the fleet goes back to the newest earlier snapshot without
    /// any (see [`Rollout::serving_suspect`] for when there is none).
    pub fn learn(&self, rejected: Vec<RejectedResource>) -> bool {
        let fallback = self.with(|s| {
            let mut learned = false;
            for r in rejected {
                let Some(kind) = ResourceType::ALL
                    .into_iter()
                    .find(|k| k.label() == r.r#type)
                else {
                    continue;
                };
                if !s
                    .suspects
                    .insert((kind, r.name.clone(), r.content_version.clone()))
                {
                    continue;
                }
                learned = true;
                s.rejections.push_front(Rejection {
                    version: r.version,
                    node: r.node,
                    r#type: kind.label(),
                    resources: vec![r.name],
                    error_detail: r.error_detail,
                    at_ms: u64::try_from(r.at_ms).unwrap_or_default(),
                });
            }
            s.rejections.truncate(REJECTIONS_SHOWN);
            (learned, learned.then(|| s.fall_back()).flatten())
        });
        if let (_, Some(good)) = &fallback {
            info!(
                serving = good.version,
                "fleet back on the last good version: a node of another replica refused the newer one"
            );
            self.served.send_replace(Some(good.clone()));
        }
        fallback.0
    }

    /// Whether `snapshot` carries a resource some node refused.
    pub fn is_suspect(&self, snapshot: &Snapshot) -> bool {
        self.with(|s| s.is_suspect(snapshot))
    }

    /// Whether nothing has been served yet, or what is served carries a
    /// refused resource (nothing cleaner was at hand to go back to).
    pub fn serving_suspect(&self) -> bool {
        self.with(|s| s.current().is_none_or(|c| s.is_suspect(c)))
    }

    /// Serves `snapshot` (the newest earlier version without refused
    /// resources, rebuilt from history by the sync loop) when nothing is
    /// served yet or what is served carries a refused resource. At start
    /// with no such version the newest one is served anyway: nodes keep
    /// what they hold when they refuse, and new nodes get a config rather
    /// than none.
    pub fn fall_back_to(&self, snapshot: Arc<Snapshot>) {
        let serve = self.with(|s| {
            let replace = s.current().is_none_or(|c| s.is_suspect(c))
                && s.current().is_none_or(|c| c.version != snapshot.version);
            if replace {
                s.push_served(snapshot.clone());
            }
            replace
        });
        if serve {
            info!(version = snapshot.version, "serving the last good version");
            self.served.send_replace(Some(snapshot));
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A newly built snapshot: served unless it carries a refused resource.
    pub fn offer(&self, snapshot: Arc<Snapshot>) {
        let serve = self.with(|s| {
            s.latest = Some(snapshot.clone());
            if !s.offered.iter().any(|(v, _)| *v == snapshot.version) {
                s.offered.push_back((snapshot.version, Instant::now()));
                if s.offered.len() > OFFERS_KEPT {
                    s.offered.pop_front();
                }
            }
            if s.current().is_some_and(|c| c.version == snapshot.version) {
                return None;
            }
            if s.is_suspect(&snapshot) {
                warn!(
                    version = snapshot.version,
                    served = s.current().map(|c| c.version),
                    "not rolling out: carries a resource a node rejected"
                );
                return None;
            }
            s.push_served(snapshot.clone());
            Some(snapshot)
        });
        if let Some(snapshot) = serve {
            self.served.send_replace(Some(snapshot));
        }
    }

    /// When `version` was first offered, if it is recent.
    pub fn offered_at(&self, version: u64) -> Option<Instant> {
        self.with(|s| {
            s.offered
                .iter()
                .find(|(v, _)| *v == version)
                .map(|(_, at)| *at)
        })
    }

    /// A node refused `suspects` of `kind` in the response carrying `version`.
    pub fn reject(
        &self,
        node: &str,
        kind: ResourceType,
        version: &str,
        suspects: &[(String, String)],
        error_detail: &str,
    ) {
        if let Some(log) = &self.refusals {
            let at_ms = now_ms();
            let rejected: Vec<RejectedResource> = suspects
                .iter()
                .map(|(name, content)| RejectedResource {
                    r#type: kind.label().to_owned(),
                    name: name.clone(),
                    content_version: content.clone(),
                    version: version.to_owned(),
                    node: node.to_owned(),
                    error_detail: error_detail.to_owned(),
                    at_ms,
                })
                .collect();
            log.record(rejected);
        }
        let fallback = self.with(|s| {
            for (name, content) in suspects {
                s.suspects.insert((kind, name.clone(), content.clone()));
            }
            s.rejections.push_front(Rejection {
                version: version.to_owned(),
                node: node.to_owned(),
                r#type: kind.label(),
                resources: suspects.iter().map(|(name, _)| name.clone()).collect(),
                error_detail: error_detail.to_owned(),
                at_ms: u64::try_from(now_ms()).unwrap_or_default(),
            });
            s.rejections.truncate(REJECTIONS_SHOWN);
            s.fall_back()
        });
        if let Some(good) = fallback {
            info!(
                rejected = version,
                node,
                r#type = kind.label(),
                serving = good.version,
                "fleet back on the last good version"
            );
            self.served.send_replace(Some(good));
        }
        // Only canary nodes are given anything new while a canary runs.
        let reason = format!("node {node} rejected version {version}: {error_detail}");
        if self.abort_canary(&reason).is_ok() {
            warn!(
                node,
                version, "a canary node refused the configuration: canary aborted"
            );
        }
    }

    /// Forgets every refusal (an operator released them, or another
    /// replica's operator did): the newest snapshot is served again.
    pub fn release(&self) {
        let serve = self.with(|s| {
            s.suspects.clear();
            s.rejections.clear();
            let latest = s.latest.clone()?;
            if s.current().is_some_and(|c| c.version == latest.version) {
                return None;
            }
            s.push_served(latest.clone());
            Some(latest)
        });
        if let Some(latest) = serve {
            info!(
                version = latest.version,
                "refusals released: serving the newest version"
            );
            self.served.send_replace(Some(latest));
        }
    }

    /// The newest snapshot built from the store (served or held back).
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.with(|s| s.latest.clone())
    }

    pub fn status(&self) -> RolloutStatus {
        self.with(|s| {
            let latest_version = s.latest.as_ref().map(|l| l.version);
            let served_version = s.current().map(|c| c.version);
            RolloutStatus {
                latest_version,
                served_version,
                held_back: latest_version != served_version,
                rejections: s.rejections.iter().cloned().collect(),
                canary: canary::view(s),
                certificates: s
                    .current()
                    .map(|c| c.certificates.clone())
                    .unwrap_or_default(),
            }
        })
    }

    /// Per-type count of suspect resources (for tests and debugging).
    pub fn suspects(&self) -> BTreeMap<&'static str, usize> {
        self.with(|s| {
            let mut counts = BTreeMap::new();
            for (kind, _, _) in &s.suspects {
                *counts.entry(kind.label()).or_default() += 1;
            }
            counts
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::xds::snapshot::{SnapshotParts, XdsResource};
    use gatehouse_proto::protobuf::Any;

    /// A snapshot whose single route configuration has `content`.
    pub(in crate::xds::rollout) fn snapshot(version: u64, content: &str) -> Arc<Snapshot> {
        let routes = XdsResource::new(
            "routes",
            Any {
                type_url: ResourceType::Route.type_url().into(),
                value: content.as_bytes().to_vec(),
            },
            vec![],
        );
        let parts = SnapshotParts {
            routes: vec![routes],
            ..Default::default()
        };
        Arc::new(Snapshot::new(version, parts).expect("consistent"))
    }

    fn route_version(s: &Snapshot) -> (String, String) {
        let r = &s.resources(ResourceType::Route)["routes"];
        ("routes".into(), r.version.clone())
    }

    fn served(rollout: &Rollout) -> Option<u64> {
        rollout.watch().borrow().as_ref().map(|s| s.version)
    }

    #[test]
    fn a_release_serves_the_newest_version_again() {
        let rollout = Rollout::default();
        let bad = snapshot(2, "bad");
        rollout.offer(snapshot(1, "good"));
        rollout.offer(bad.clone());
        rollout.reject(
            "envoy-a",
            ResourceType::Route,
            "2",
            &[route_version(&bad)],
            "no",
        );
        assert_eq!(served(&rollout), Some(1));
        rollout.release();
        assert_eq!(served(&rollout), Some(2), "the newest again");
        let status = rollout.status();
        assert!(!status.held_back && status.rejections.is_empty());
        rollout.offer(snapshot(3, "bad"));
        assert_eq!(served(&rollout), Some(3), "no longer suspect");
    }

    #[test]
    fn a_rejected_version_sends_the_fleet_back_and_keeps_it_there() {
        let rollout = Rollout::default();
        let good = snapshot(1, "good");
        let bad = snapshot(2, "bad");
        rollout.offer(good.clone());
        rollout.offer(bad.clone());
        assert_eq!(served(&rollout), Some(2));

        rollout.reject(
            "envoy-a",
            ResourceType::Route,
            "2",
            &[route_version(&bad)],
            "no",
        );
        assert_eq!(served(&rollout), Some(1), "back on the last good version");
        let status = rollout.status();
        assert_eq!(status.latest_version, Some(2));
        assert!(status.held_back);
        assert_eq!(status.rejections[0].node, "envoy-a");
        assert_eq!(status.rejections[0].resources, vec!["routes"]);

        // A later version still carrying the refused content is not served.
        rollout.offer(snapshot(3, "bad"));
        assert_eq!(served(&rollout), Some(1));

        // A version that changes it is rolled out.
        rollout.offer(snapshot(4, "fixed"));
        assert_eq!(served(&rollout), Some(4));
        assert!(!rollout.status().held_back);
    }

    #[test]
    fn a_late_nack_for_an_older_version_does_not_touch_a_clean_newer_one() {
        let rollout = Rollout::default();
        rollout.offer(snapshot(1, "good"));
        let bad = snapshot(2, "bad");
        rollout.offer(bad.clone());
        rollout.offer(snapshot(3, "fixed"));
        rollout.reject(
            "envoy-a",
            ResourceType::Route,
            "2",
            &[route_version(&bad)],
            "no",
        );
        assert_eq!(served(&rollout), Some(3));
    }

    #[test]
    fn with_nothing_clean_to_go_back_to_the_current_version_stays() {
        let rollout = Rollout::default();
        let only = snapshot(1, "only");
        rollout.offer(only.clone());
        rollout.reject(
            "envoy-a",
            ResourceType::Route,
            "1",
            &[route_version(&only)],
            "no",
        );
        assert_eq!(served(&rollout), Some(1));
        assert_eq!(rollout.status().rejections.len(), 1);
    }

    fn recorded(snapshot: &Snapshot, node: &str) -> RejectedResource {
        let (name, content_version) = route_version(snapshot);
        RejectedResource {
            r#type: "rds".into(),
            name,
            content_version,
            version: snapshot.version.to_string(),
            node: node.into(),
            error_detail: "no".into(),
            at_ms: 1,
        }
    }

    #[test]
    fn a_refusal_recorded_by_another_replica_sends_the_fleet_back_once() {
        let rollout = Rollout::default();
        rollout.offer(snapshot(1, "good"));
        let bad = snapshot(2, "bad");
        rollout.offer(bad.clone());
        assert_eq!(served(&rollout), Some(2));

        assert!(rollout.learn(vec![recorded(&bad, "envoy-b")]));
        assert_eq!(served(&rollout), Some(1));
        assert!(!rollout.serving_suspect());
        let status = rollout.status();
        assert!(status.held_back);
        assert_eq!(status.rejections[0].node, "envoy-b");

        // Read again (every notification re-reads the table): nothing new.
        assert!(!rollout.learn(vec![recorded(&bad, "envoy-b")]));
        assert_eq!(rollout.status().rejections.len(), 1);
        rollout.offer(snapshot(3, "bad"));
        assert_eq!(served(&rollout), Some(1));
    }

    #[test]
    fn with_nothing_clean_served_before_a_version_rebuilt_from_history_takes_over() {
        let rollout = Rollout::default();
        let bad = snapshot(5, "bad");
        rollout.offer(bad.clone());
        assert!(rollout.learn(vec![recorded(&bad, "envoy-b")]));
        assert_eq!(served(&rollout), Some(5), "nothing earlier at hand");
        assert!(rollout.serving_suspect());

        rollout.fall_back_to(snapshot(4, "good"));
        assert_eq!(served(&rollout), Some(4));
        assert!(!rollout.serving_suspect());
        // Only a suspect (or no) current version is replaced.
        rollout.fall_back_to(snapshot(3, "older"));
        assert_eq!(served(&rollout), Some(4));
    }
}
