//! Canary rollouts over the API: start one for part of the fleet, promote
//! it to every node, or abort it (see `xds/rollout/canary.rs`).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AdminState, ApiError, decode_json};
use crate::{
    model::FieldError,
    xds::rollout::{Analysis, CanaryError, Selector},
};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    selector: Selector,
    /// Thresholds of the automatic analysis (defaults when absent).
    #[serde(default)]
    analysis: Analysis,
}

impl From<CanaryError> for ApiError {
    fn from(e: CanaryError) -> Self {
        match e {
            CanaryError::NoNodeMatches(_) => {
                ApiError::Validation(vec![FieldError::new("selector", e.to_string())])
            }
            CanaryError::Running(_) | CanaryError::NotRunning(_) | CanaryError::NotSteady => {
                ApiError::Conflict(e.to_string())
            }
        }
    }
}

/// The current or last canary, and which connected nodes are in it.
pub(super) async fn status(State(state): State<AdminState>) -> Response {
    let canary = state.rollout.canary();
    let in_canary: Vec<String> = match &canary {
        Some(c) if c.phase == crate::xds::rollout::Phase::Running => state
            .nodes
            .placements()
            .into_iter()
            .filter(|n| c.selector.matches(n))
            .map(|n| n.id)
            .collect(),
        _ => Vec::new(),
    };
    Json(json!({"canary": canary, "canary_nodes": in_canary})).into_response()
}

/// Starts a canary: the nodes the selector matches get every new version;
/// the rest stay on what is served now.
pub(super) async fn start(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Start = decode_json(&body)?;
    let mut problems = request.selector.problems();
    problems.extend(request.analysis.problems());
    if !problems.is_empty() {
        return Err(ApiError::Validation(
            problems
                .into_iter()
                .map(|(field, message)| FieldError::new(field, message))
                .collect(),
        ));
    }
    let started = state.rollout.start_canary(
        request.selector,
        request.analysis,
        &state.nodes.placements(),
    )?;
    Ok((StatusCode::CREATED, Json(started)).into_response())
}

pub(super) async fn promote(State(state): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(state.rollout.promote_canary()?).into_response())
}

pub(super) async fn abort(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reason = super::rollout::reason(&body)?.unwrap_or_else(|| "aborted by an operator".into());
    Ok(Json(state.rollout.abort_canary(&reason)?).into_response())
}
