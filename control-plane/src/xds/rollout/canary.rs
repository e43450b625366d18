//! Canary rollouts of configuration: while one runs, the nodes its selector
//! matches get every new version, the rest stay pinned on the version served
//! when it started (`stable`). Promote unpins everyone; abort sends the
//! canary nodes back to `stable` and holds back what the canary changed, as
//! a refusal (released like one), so no later version brings it to the
//! fleet unchanged. A NACK during a canary aborts it.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Rollout, Snapshot, analysis::Analysis};
use crate::{clock::now_ms, store::RejectedResource, xds::snapshot::ResourceType};

/// Which nodes are in a canary: any node matching one of the conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Envoy node clusters (`--service-cluster`, the bootstrap's `node.cluster`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Envoy node ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Zones of the nodes' locality (the bootstrap's `node.locality.zone`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// A share of the nodes, 1-99, chosen by a stable hash of their id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

impl Selector {
    /// What is wrong with it, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.clusters.is_empty()
            && self.nodes.is_empty()
            && self.zones.is_empty()
            && self.percent.is_none()
        {
            problems.push((
                "selector",
                "name clusters, nodes, zones or a percent of nodes".to_owned(),
            ));
        }
        if let Some(p) = self.percent
            && !(1..=99).contains(&p)
        {
            problems.push(("selector.percent", "must be 1-99".to_owned()));
        }
        let long = |s: &String| s.is_empty() || s.len() > 256 || s.chars().any(char::is_control);
        if self.clusters.iter().any(long) {
            problems.push(("selector.clusters", "1-256 characters each".to_owned()));
        }
        if self.nodes.iter().any(long) {
            problems.push(("selector.nodes", "1-256 characters each".to_owned()));
        }
        if self.zones.iter().any(long) {
            problems.push(("selector.zones", "1-256 characters each".to_owned()));
        }
        problems
    }

    pub fn matches(&self, node: &Placement) -> bool {
        self.clusters.contains(&node.cluster)
            || self.nodes.contains(&node.id)
            || (!node.zone.is_empty() && self.zones.contains(&node.zone))
            || self
                .percent
                .is_some_and(|p| bucket(&node.id) < u64::from(p))
    }
}

/// Where a node is: what selectors match on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub id: String,
    pub cluster: String,
    /// Its locality's zone (may be empty).
    pub zone: String,
}

impl Placement {
    pub fn of(node: &gatehouse_proto::core::Node) -> Placement {
        Placement {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            zone: node
                .locality
                .as_ref()
                .map(|l| l.zone.clone())
                .unwrap_or_default(),
        }
    }
}

/// A node's place among 100 buckets: FNV-1a of its id, the same in every
/// build and replica.
fn bucket(node: &str) -> u64 {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % 100
}

/// What streams need while a canary runs: who is in it, and what the rest
/// are pinned to.
#[derive(Debug)]
pub struct Pin {
    pub selector: Selector,
    pub stable: Arc<Snapshot>,
}

impl Pin {
    /// The snapshot a node is served: the newest for canary nodes, the
    /// stable one for the rest.
    pub fn snapshot_for(&self, node: &Placement, newest: &Arc<Snapshot>) -> Arc<Snapshot> {
        if self.selector.matches(node) {
            newest.clone()
        } else {
            self.stable.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    Promoted,
    Aborted,
}

/// The current or last canary, as status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CanaryStatus {
    pub phase: Phase,
    pub selector: Selector,
    /// Its automatic analysis' thresholds (`analysis.rs`).
    pub analysis: Analysis,
    /// What the other nodes stay on while it runs.
    pub stable_version: u64,
    /// The newest version the canary nodes were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<u64>,
    pub started_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Why it was aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a canary operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanaryError {
    #[error("a canary is already running (started with version {0}); promote or abort it first")]
    Running(u64),
    /// With how the last one ended, if there was one.
    #[error("no canary is running{}", .0.as_ref().map_or(String::new(), |last| format!(" (the last one was {last})")))]
    NotRunning(Option<String>),
    #[error("the selector matches none of the {0} connected nodes")]
    NoNodeMatches(usize),
    #[error("nothing is served yet, or a version is held back: release or fix it first")]
    NotSteady,
}

fn describe(status: &CanaryStatus) -> String {
    match (&status.phase, &status.reason) {
        (Phase::Aborted, Some(reason)) => format!("aborted: {reason}"),
        (Phase::Aborted, None) => "aborted".into(),
        (Phase::Promoted, _) => "promoted".into(),
        (Phase::Running, _) => "running".into(),
    }
}

impl Rollout {
    /// Starts a canary: nodes matching `selector` (of those `connected`)
    /// get every new version; the rest stay on what is served now.
    pub fn start_canary(
        &self,
        selector: Selector,
        analysis: Analysis,
        connected: &[Placement],
    ) -> Result<CanaryStatus, CanaryError> {
        if !connected.iter().any(|n| selector.matches(n)) {
            return Err(CanaryError::NoNodeMatches(connected.len()));
        }
        let status = self.with(|s| {
            if let Some(c) = s.canary.as_ref().filter(|c| c.phase == Phase::Running) {
                return Err(CanaryError::Running(c.stable_version));
            }
            let stable = s.current().cloned().ok_or(CanaryError::NotSteady)?;
            if s.latest.as_ref().map(|l| l.version) != Some(stable.version) {
                return Err(CanaryError::NotSteady);
            }
            let status = CanaryStatus {
                phase: Phase::Running,
                selector: selector.clone(),
                analysis,
                stable_version: stable.version,
                canary_version: None,
                started_at_ms: now_ms() as u64,
                ended_at_ms: None,
                reason: None,
            };
            s.canary = Some(status.clone());
            s.pinned = Some(stable);
            Ok(status)
        })?;
        info!(stable = status.stable_version, selector = ?status.selector, "canary started");
        self.publish_pin();
        Ok(status)
    }

    /// Every node gets the newest version.
    pub fn promote_canary(&self) -> Result<CanaryStatus, CanaryError> {
        let status = self.end_canary(Phase::Promoted, None)?;
        info!(version = ?status.canary_version, "canary promoted to every node");
        self.publish_pin();
        Ok(status)
    }

    /// Canary nodes go back to the stable version; what the canary changed
    /// is held back like a refused version (see [`Rollout::release`]).
    pub fn abort_canary(&self, reason: &str) -> Result<CanaryStatus, CanaryError> {
        let (status, suspects, stable) = self.with(|s| {
            let stable = s.pinned.clone();
            let newest = s.current().cloned();
            let status = end(s, Phase::Aborted, Some(reason))?;
            let mut suspects = Vec::new();
            if let (Some(stable), Some(newest)) = (&stable, &newest) {
                for kind in ResourceType::ALL {
                    let before = stable.resources(kind);
                    for (name, r) in newest.resources(kind) {
                        if before.get(name).is_none_or(|b| b.version != r.version) {
                            suspects.push((kind, name.clone(), r.version.clone()));
                        }
                    }
                }
                for suspect in &suspects {
                    s.suspects.insert(suspect.clone());
                }
                s.push_served(stable.clone());
            }
            Ok((status, suspects, stable))
        })?;
        warn!(
            reason,
            held = suspects.len(),
            "canary aborted: its nodes go back"
        );
        if let Some(log) = &self.refusals {
            let version = status.canary_version.unwrap_or_default().to_string();
            let at_ms = now_ms();
            log.record(
                suspects
                    .iter()
                    .map(|(kind, name, content)| RejectedResource {
                        r#type: kind.label().to_owned(),
                        name: name.clone(),
                        content_version: content.clone(),
                        version: version.clone(),
                        node: "canary".into(),
                        error_detail: format!("canary aborted: {reason}"),
                        at_ms,
                    })
                    .collect(),
            );
        }
        if let Some(stable) = stable {
            self.served.send_replace(Some(stable));
        }
        self.publish_pin();
        Ok(status)
    }

    /// The current or last canary.
    pub fn canary(&self) -> Option<CanaryStatus> {
        self.with(|s| view(s))
    }

    /// What streams serve around a running canary (`None`: no canary).
    pub fn pin(&self) -> tokio::sync::watch::Receiver<Option<Arc<Pin>>> {
        self.pin.subscribe()
    }

    fn end_canary(&self, phase: Phase, reason: Option<&str>) -> Result<CanaryStatus, CanaryError> {
        self.with(|s| end(s, phase, reason))
    }

    fn publish_pin(&self) {
        let pin = self.with(|s| {
            let canary = s.canary.as_ref().filter(|c| c.phase == Phase::Running)?;
            Some(Arc::new(Pin {
                selector: canary.selector.clone(),
                stable: s.pinned.clone()?,
            }))
        });
        self.pin.send_replace(pin);
    }
}

/// The current or last canary; a running one with the version its nodes get.
pub(super) fn view(s: &super::State) -> Option<CanaryStatus> {
    let mut status = s.canary.clone()?;
    if status.phase == Phase::Running {
        status.canary_version = s.current().map(|c| c.version);
    }
    Some(status)
}

fn end(
    s: &mut super::State,
    phase: Phase,
    reason: Option<&str>,
) -> Result<CanaryStatus, CanaryError> {
    let canary_version = s.current().map(|c| c.version);
    let Some(canary) = s.canary.as_mut().filter(|c| c.phase == Phase::Running) else {
        return Err(CanaryError::NotRunning(s.canary.as_ref().map(describe)));
    };
    canary.phase = phase;
    canary.canary_version = canary_version;
    canary.ended_at_ms = Some(now_ms() as u64);
    canary.reason = reason.map(str::to_owned);
    let status = canary.clone();
    s.pinned = None;
    Ok(status)
}

#[cfg(test)]
mod tests;
