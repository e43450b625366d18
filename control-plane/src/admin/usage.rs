//! Usage per route and consumer (`GET /v1/usage`): the hourly rows that
//! ext-authz's counts of Envoy's usage log add up to, by hour or summed
//! over the span asked for.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AdminState, ApiError};
use crate::{model::FieldError, store::TrafficQuery};

const HOUR_MS: i64 = 3_600_000;
const DEFAULT_LIMIT: u32 = 1_000;
const MAX_LIMIT: u32 = 10_000;
const MAX_NAME: usize = 256;

/// One row per hour, or per route and consumer over the whole span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum By {
    #[default]
    Hour,
    Total,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// Only this consumer (empty: requests without one).
    consumer: Option<String>,
    route: Option<String>,
    /// Unix milliseconds; default 24 hours ago.
    since: Option<i64>,
    /// Unix milliseconds; default now (the current hour included).
    until: Option<i64>,
    #[serde(default)]
    by: By,
    limit: Option<u32>,
}

pub(super) async fn usage(
    State(state): State<AdminState>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let now = crate::clock::now_ms();
    let until = query.until.unwrap_or(now);
    let since = query.since.unwrap_or(until - 24 * HOUR_MS);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let mut errors = Vec::new();
    if since >= until {
        errors.push(FieldError::new("since", "must be before until"));
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    for (field, value) in [("consumer", &query.consumer), ("route", &query.route)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_NAME) {
            errors.push(FieldError::new(
                field,
                format!("must be at most {MAX_NAME} bytes"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Whole hours: the one `since` falls in, up to the one `until` falls in.
    let since_ms = since - since.rem_euclid(HOUR_MS);
    let rows = state
        .store
        .traffic(&TrafficQuery {
            consumer: query.consumer,
            route: query.route,
            since_ms,
            until_ms: until,
            by_hour: query.by == By::Hour,
            limit,
        })
        .await?;
    let truncated = rows.len() == limit as usize;
    Ok(Json(json!({
        "since_ms": since_ms,
        "until_ms": until,
        "by": match query.by { By::Hour => "hour", By::Total => "total" },
        "rows": rows,
        "truncated": truncated,
    }))
    .into_response())
}
