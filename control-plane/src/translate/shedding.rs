//! Load shedding for best-effort routes: Envoy's adaptive concurrency
//! filter, off by default and switched on by the routes that set
//! `load_shedding`. One limit per gateway, shared by those routes: it shrinks
//! while their p90 latency stays above the target and grows below it; a
//! request over the limit gets a fast JSON 503 with `Retry-After` (in
//! `resilience::overload_replies`). `priority: high` routes never run it.

use gatehouse_proto::{adaptive_concurrency as ac, hcm, http_types, protobuf, route, to_any};

use super::duration_ms;
use crate::model::Route;

pub const SHEDDING_FILTER: &str = "envoy.filters.http.adaptive_concurrency";
/// Envoy's response code details for a request over the limit.
pub const SHED_DETAILS: &str = "reached_concurrency_limit";

/// The gateway-wide parameters (control-plane flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SheddingSettings {
    /// Above this p90 latency the best-effort routes are overloaded.
    pub target_latency_ms: u32,
    /// The limit never grows past this many requests at once.
    pub max_concurrency: u32,
}

impl Default for SheddingSettings {
    fn default() -> Self {
        Self {
            target_latency_ms: 250,
            max_concurrency: 1_000,
        }
    }
}

/// The filter, disabled unless a route enables it. The target latency is
/// fixed rather than sampled: Envoy's sampling pins the limit to a handful
/// of requests for a while every interval, which would shed healthy traffic.
pub fn shedding_filter(settings: &SheddingSettings) -> hcm::HttpFilter {
    use ac::gradient_controller_config::{
        ConcurrencyLimitCalculationParams, MinimumRttCalculationParams,
    };
    let gradient = ac::GradientControllerConfig {
        sample_aggregate_percentile: Some(http_types::Percent { value: 90.0 }),
        concurrency_limit_params: Some(ConcurrencyLimitCalculationParams {
            max_concurrency_limit: Some(protobuf::UInt32Value {
                value: settings.max_concurrency,
            }),
            concurrency_update_interval: Some(duration_ms(100)),
            ..Default::default()
        }),
        min_rtt_calc_params: Some(MinimumRttCalculationParams {
            // No interval: never sampled, the fixed value holds.
            fixed_value: Some(duration_ms(settings.target_latency_ms)),
            ..Default::default()
        }),
    };
    hcm::HttpFilter {
        name: SHEDDING_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(to_any(
            &ac::AdaptiveConcurrency {
                concurrency_controller_config: Some(
                    ac::adaptive_concurrency::ConcurrencyControllerConfig::GradientControllerConfig(
                        gradient,
                    ),
                ),
                ..Default::default()
            },
        ))),
        disabled: true,
        ..Default::default()
    }
}

/// Switches the filter on for a route that asks to be shed first.
pub fn apply(r: &Route, envoy: &mut route::Route) {
    if r.load_shedding {
        super::enable_filter(envoy, SHEDDING_FILTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_off_until_a_route_enables_it() {
        let filter = shedding_filter(&SheddingSettings::default());
        assert!(filter.disabled);
        let r: Route = serde_json::from_value(serde_json::json!({
            "name": "r", "match": {"path_prefix": "/"}, "destination": {"service": "s"},
            "load_shedding": true
        }))
        .expect("a route");
        let mut envoy = route::Route::default();
        apply(&r, &mut envoy);
        let enabled = envoy.typed_per_filter_config.get(SHEDDING_FILTER);
        assert_eq!(
            enabled.map(|a| a.type_url.as_str()),
            Some("type.googleapis.com/envoy.config.route.v3.FilterConfig")
        );
    }
}
