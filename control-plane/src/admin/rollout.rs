//! The fleet's rollout: what is served and held back, the operator's
//! release of refusals after investigating them, and the confirmation that
//! this store is the one to serve to nodes held on a configuration it does
//! not have (see `xds/guard.rs`).

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AdminState, ApiError, VERSION_HEADER, decode_json, version_header, writer};
use crate::{model::FieldError, store::Source};

/// Longest reason a release may give.
const MAX_REASON: usize = 1_000;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodesQuery {
    /// Also: whether this owner's newest change reached the fleet.
    owner: Option<String>,
}

/// The fleet's rollout (newest and served version, rejections) and every
/// connected node with what it acknowledged; with `?owner=`, how far that
/// owner's newest change got (the one part that reads the store).
pub(super) async fn nodes(
    State(state): State<AdminState>,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let rollout = state.rollout.status();
    let nodes = state.nodes.nodes();
    let held_nodes = nodes.iter().filter(|n| n.held.is_some()).count();
    // Nodes by fleet (their node `cluster`).
    let mut fleets: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for n in &nodes {
        fleets
            .entry(n.cluster.as_str())
            .or_default()
            .push(n.id.as_str());
    }
    let mut body = json!({
        "latest_version": rollout.latest_version,
        "served_version": rollout.served_version,
        "held_back": rollout.held_back,
        "rejections": rollout.rejections,
        "canary": rollout.canary,
        "certificates": rollout.certificates,
        "held_nodes": held_nodes,
        "fleets": fleets,
        "nodes": nodes,
    });
    if let Some(owner) = query.owner {
        let newest = state
            .store
            .history(1, None, Some(&owner))
            .await?
            .first()
            .map(|v| v.version);
        // A node is current when every type it takes is at that version or later.
        let current = nodes
            .iter()
            .filter(|n| {
                newest.is_some_and(|v| {
                    !n.types.is_empty()
                        && n.types.values().all(|t| {
                            t.acked_version
                                .as_deref()
                                .and_then(|a| a.parse::<u64>().ok())
                                .is_some_and(|a| a >= v)
                        })
                })
            })
            .count();
        body["owner"] = json!({
            "name": owner,
            "latest_version": newest,
            "served": newest.is_some_and(|v| rollout.served_version.is_some_and(|s| s >= v)),
            "nodes_current": current,
            "nodes": nodes.len(),
        });
    }
    Ok(Json(body))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

/// The optional `{"reason": …}` body of a release or a canary abort (an
/// empty body gives none), checked.
pub(super) fn reason(body: &[u8]) -> Result<Option<String>, ApiError> {
    let request: ReasonBody = if body.is_empty() {
        ReasonBody::default()
    } else {
        decode_json(body)?
    };
    if let Some(reason) = &request.reason
        && (reason.len() > MAX_REASON || reason.chars().any(char::is_control))
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "reason",
            format!("at most {MAX_REASON} bytes, without control characters"),
        )]));
    }
    Ok(request.reason)
}

/// Forgets every recorded refusal so the newest version rolls out again,
/// as a version of its own in the history (source `release`, with a note).
pub(super) async fn release(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Why: kept in the history.
    let reason = reason(&body)?;
    let released = writer(&state, &headers, Source::Release, &None)?
        .release_rejections(reason.as_deref())
        .await?;
    state.rollout.release();
    tracing::warn!(
        version = released.version,
        released = released.released.len(),
        "refusals released by an operator; the newest version rolls out"
    );
    let listed: Vec<Value> = released
        .released
        .iter()
        .map(|r| {
            json!({"type": r.r#type, "name": r.name, "version": r.version,
                   "node": r.node, "error_detail": r.error_detail})
        })
        .collect();
    Ok((
        [(VERSION_HEADER, version_header(released.version))],
        Json(json!({"version": released.version, "released": listed})),
    )
        .into_response())
}

/// Confirms that this store is the one to serve: nodes held because they
/// hold a configuration it does not have are served it (and may lose what
/// they had). Logged as a warning with how many nodes it released.
pub(super) async fn confirm(State(state): State<AdminState>) -> Json<Value> {
    let held = state.nodes.confirm();
    tracing::warn!(
        held,
        "an operator confirmed this store: held nodes are served its configuration"
    );
    Json(json!({ "released_nodes": held }))
}
