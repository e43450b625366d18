//! Ownership: every resource may belong to a team (`owner`), carry free
//! `labels`, and be `shared` so other owners' resources may refer to it.
//! Owners are themselves a kind ([`Owner`]) the operators manage; a resource
//! without an owner belongs to the operators.
//!
//! What holds for the configuration as a whole is checked here, on the state
//! a change would leave ([`check_state`]): references across owners only to
//! shared resources, and no team's route capturing another team's paths.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConfigState, FieldError, Kind, NAME_PATTERN, PathMatch, Reference, Resource, Route, check_name,
};

/// Free key/value labels on a resource.
pub type Labels = BTreeMap<String, String>;

/// Labels of resources that have none.
pub static NO_LABELS: Labels = BTreeMap::new();

/// At most this many labels on one resource.
pub const MAX_LABELS: usize = 32;

/// A team that owns resources. Scoped admin tokens and scoped applies name
/// one; only the operators (unscoped tokens) manage owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Resource for Owner {
    const KIND: Kind = Kind::Owner;

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name(&self.name, "name", &mut errors);
        if let Some(d) = &self.description
            && (d.len() > 256 || d.chars().any(char::is_control))
        {
            errors.push(FieldError::new(
                "description",
                "at most 256 characters, no control characters",
            ));
        }
        errors
    }
}

/// The accessors a kind with `owner`, `labels` and `shared` fields gives
/// [`Resource`]; expands inside its `impl Resource` block.
macro_rules! owned {
    () => {
        fn owner(&self) -> Option<&str> {
            self.owner.as_deref()
        }

        fn set_owner(&mut self, owner: Option<String>) {
            self.owner = owner;
        }

        fn labels(&self) -> &$crate::model::ownership::Labels {
            &self.labels
        }

        fn shared(&self) -> bool {
            self.shared
        }
    };
}
pub(crate) use owned;

/// Checks `owner` and `labels`, common to every owned kind.
pub fn validate_meta<R: Resource>(resource: &R) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(owner) = resource.owner() {
        check_name(owner, "owner", &mut errors);
    }
    let labels = resource.labels();
    if labels.len() > MAX_LABELS {
        errors.push(FieldError::new(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (key, value) in labels {
        if !is_label_key(key) {
            errors.push(FieldError::new(
                format!("labels.{key}"),
                "a label key is 1-63 lower-case letters, digits or . _ / -, starting and ending with a letter or digit",
            ));
        }
        if value.len() > 63 || value.chars().any(char::is_control) {
            errors.push(FieldError::new(
                format!("labels.{key}"),
                "a label value is at most 63 characters, no control characters",
            ));
        }
    }
    errors
}

fn is_label_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    bytes.len() <= 63
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(b))
}

/// How an owner is shown in messages: the operators own what has none.
pub fn describe(owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("owner {owner}"),
        None => "the operators".into(),
    }
}

/// What the whole-configuration checks need of one resource.
struct Entry<'a> {
    kind: Kind,
    name: &'a str,
    owner: Option<&'a str>,
    shared: bool,
    references: Vec<Reference>,
}

fn entries<'a, R: Resource>(map: &'a BTreeMap<String, R>, out: &mut Vec<Entry<'a>>) {
    out.extend(map.values().map(|r| Entry {
        kind: R::KIND,
        name: r.name(),
        owner: r.owner(),
        shared: r.shared(),
        references: r.references(),
    }));
}

/// Errors in the configuration as a whole: references from one owner's
/// resource to another owner's that is not shared, and routes of two teams
/// that would take each other's requests. Empty when nothing is owned.
pub fn check_state(state: &ConfigState) -> Vec<FieldError> {
    let mut all = Vec::new();
    entries(&state.services, &mut all);
    entries(&state.routes, &mut all);
    entries(&state.consumers, &mut all);
    entries(&state.jwt_issuers, &mut all);
    entries(&state.introspection_providers, &mut all);
    entries(&state.plans, &mut all);
    entries(&state.rate_limit_policies, &mut all);
    entries(&state.certificates, &mut all);
    entries(&state.gateways, &mut all);
    entries(&state.topics, &mut all);
    entries(&state.grpc_apis, &mut all);
    if all.iter().all(|e| e.owner.is_none()) {
        return Vec::new();
    }
    let targets: BTreeMap<(Kind, &str), (Option<&str>, bool)> = all
        .iter()
        .map(|e| ((e.kind, e.name), (e.owner, e.shared)))
        .collect();
    let mut errors = Vec::new();
    for e in &all {
        for r in &e.references {
            let Some(&(owner, shared)) = targets.get(&(r.kind, r.name.as_str())) else {
                continue; // dangling references are the store's to refuse
            };
            if owner != e.owner && !shared {
                errors.push(FieldError::new(
                    r.field.clone(),
                    format!(
                        "{} {:?} ({}) refers to {} {:?} of {}, which is not shared",
                        e.kind.as_str(),
                        e.name,
                        describe(e.owner),
                        r.kind.as_str(),
                        r.name,
                        describe(owner)
                    ),
                ));
            }
        }
    }
    errors.extend(route_conflicts(state.routes.values()));
    errors
}

/// A route's claim on request space: its hosts (empty: every host) and path.
struct Claim<'a> {
    route: &'a Route,
    owner: &'a str,
    hosts: Vec<String>,
    path: PathMatch<'a>,
    text: &'a str,
}

impl Claim<'_> {
    fn shares_a_host(&self, other: &Claim<'_>) -> bool {
        self.hosts.is_empty()
            || other.hosts.is_empty()
            || self.hosts.iter().any(|h| other.hosts.contains(h))
    }
}

/// Whether two paths can match the same request. Regexes are not compared
/// (they cannot be, in general); the README says so.
fn paths_overlap(a: PathMatch<'_>, b: PathMatch<'_>) -> bool {
    match (a, b) {
        (PathMatch::Prefix(a), PathMatch::Prefix(b)) => a.starts_with(b) || b.starts_with(a),
        (PathMatch::Prefix(p), PathMatch::Exact(e))
        | (PathMatch::Exact(e), PathMatch::Prefix(p)) => e.starts_with(p),
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        _ => false,
    }
}

/// Routes of two different teams on a common host whose paths overlap
/// (equal, or one prefix within the other): the more specific would take
/// the other team's requests. The operators' routes (no owner) are exempt.
///
/// Paths sorted as text put every path that starts with another right
/// after it, so each route is compared only with those: O(n log n) plus
/// the nested pairs, not every pair.
fn route_conflicts<'a>(routes: impl Iterator<Item = &'a Route>) -> Vec<FieldError> {
    let mut claims: Vec<Claim<'_>> = routes
        .filter_map(|route| {
            let path = route.matches.path()?;
            let text = match path {
                PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
                PathMatch::Regex(_) => return None,
            };
            Some(Claim {
                owner: route.owner.as_deref()?,
                hosts: route
                    .matches
                    .hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                route,
                path,
                text,
            })
        })
        .collect();
    claims.sort_by(|a, b| (a.text, &a.route.name).cmp(&(b.text, &b.route.name)));
    let mut errors = Vec::new();
    for (i, a) in claims.iter().enumerate() {
        for b in claims[i + 1..]
            .iter()
            .take_while(|b| b.text.starts_with(a.text))
        {
            if a.owner == b.owner || !a.shares_a_host(b) || !paths_overlap(a.path, b.path) {
                continue;
            }
            errors.push(FieldError::new(
                "match",
                format!(
                    "route {:?} (owner {}) and route {:?} (owner {}) would match the same requests ({} and {}{}): routes of different owners must not overlap",
                    a.route.name,
                    a.owner,
                    b.route.name,
                    b.owner,
                    show(a.path),
                    show(b.path),
                    common_host(a, b),
                ),
            ));
        }
    }
    errors
}

fn show(path: PathMatch<'_>) -> String {
    match path {
        PathMatch::Prefix(p) => format!("prefix {p}"),
        PathMatch::Exact(p) => format!("path {p}"),
        PathMatch::Regex(p) => format!("regex {p}"),
    }
}

fn common_host(a: &Claim<'_>, b: &Claim<'_>) -> String {
    let host = a
        .hosts
        .iter()
        .find(|h| b.hosts.is_empty() || b.hosts.contains(h))
        .or_else(|| b.hosts.first());
    match host {
        Some(host) => format!(" on host {host}"),
        None => " on every host".into(),
    }
}

#[cfg(test)]
mod tests;
