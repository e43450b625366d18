//! A service's protection → its Envoy cluster: active health checks,
//! outlier detection (only the triggers asked for: Envoy's own defaults
//! would otherwise eject on five 5xx in a row and on success rate), and
//! circuit breakers for both priority classes, always set (the documented
//! defaults, not Envoy's 1,024).

use gatehouse_proto::{cluster, core, hcm, http_types, protobuf};

use super::{details_start_with, duration_ms, shedding::SHED_DETAILS};
use crate::model::{
    CircuitBreakers, HealthCheck, HealthCheckKind, OutlierDetection, Protocol, Service, Thresholds,
    resilience::{
        DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PENDING_REQUESTS, DEFAULT_MAX_REQUESTS,
        DEFAULT_MIN_RETRY_CONCURRENCY, DEFAULT_RETRY_BUDGET_PERCENT,
    },
};

fn uint(value: u32) -> Option<protobuf::UInt32Value> {
    Some(protobuf::UInt32Value { value })
}

fn percent(value: u32) -> Option<http_types::Percent> {
    Some(http_types::Percent {
        value: f64::from(value),
    })
}

/// Adds the service's health checks, outlier detection and circuit
/// breakers to its cluster.
pub fn protect(service: &Service, c: &mut cluster::Cluster) {
    if let Some(check) = &service.health_check {
        c.health_checks = vec![health_check(service, check)];
    }
    if let Some(outliers) = &service.outlier_detection {
        c.outlier_detection = Some(outlier_detection(outliers));
    }
    if service.health_check.is_some() || service.outlier_detection.is_some() {
        // Unhealthy and ejected endpoints get no traffic, however many they
        // are: with none left Envoy answers 503 at once (Envoy's default
        // spreads traffic over all of them below 50 % healthy).
        c.common_lb_config = Some(cluster::cluster::CommonLbConfig {
            healthy_panic_threshold: percent(0),
            ..Default::default()
        });
    }
    c.circuit_breakers = Some(circuit_breakers(service.circuit_breakers.as_ref()));
}

/// Envoy's own 503s when a service is at capacity (`UO`: a circuit
/// breaker), has no healthy endpoint (`UH`) or a best-effort route is shed
/// (`shedding.rs`), as JSON with `Retry-After`, so clients back off instead
/// of hammering.
pub fn overload_replies() -> Vec<hcm::ResponseMapper> {
    [
        (
            super::response_flag("UO"),
            "overloaded",
            "the service is at capacity; retry later",
        ),
        (
            details_start_with(SHED_DETAILS),
            "overloaded",
            "the gateway is shedding best-effort traffic; retry later",
        ),
        (
            super::response_flag("UH"),
            "unavailable",
            "the service has no healthy endpoint; retry later",
        ),
    ]
    .into_iter()
    .map(|(filter, code, message)| hcm::ResponseMapper {
        headers_to_add: vec![super::set_header("retry-after", "1".into())],
        ..super::json_reply(filter, code, message)
    })
    .collect()
}

fn health_check(service: &Service, check: &HealthCheck) -> core::HealthCheck {
    use core::health_check::{GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck};

    let checker = match check.kind {
        HealthCheckKind::Http => {
            let statuses = if check.expected_statuses.is_empty() {
                vec![200]
            } else {
                check.expected_statuses.clone()
            };
            HealthChecker::HttpHealthCheck(HttpHealthCheck {
                host: check.host.clone().unwrap_or_else(|| service.name.clone()),
                path: check.path.clone().unwrap_or_else(|| "/".into()),
                expected_statuses: statuses
                    .into_iter()
                    .map(|s| http_types::Int64Range {
                        start: i64::from(s),
                        end: i64::from(s) + 1,
                    })
                    .collect(),
                codec_client_type: if matches!(service.protocol, Protocol::Http2 | Protocol::Grpc) {
                    http_types::CodecClientType::Http2 as i32
                } else {
                    http_types::CodecClientType::Http1 as i32
                },
                ..Default::default()
            })
        }
        HealthCheckKind::Grpc => HealthChecker::GrpcHealthCheck(GrpcHealthCheck {
            service_name: check.grpc_service.clone().unwrap_or_default(),
            ..Default::default()
        }),
        HealthCheckKind::Tcp => HealthChecker::TcpHealthCheck(TcpHealthCheck::default()),
    };
    core::HealthCheck {
        timeout: Some(duration_ms(check.timeout_ms)),
        interval: Some(duration_ms(check.interval_ms)),
        interval_jitter: (check.jitter_ms > 0).then(|| duration_ms(check.jitter_ms)),
        healthy_threshold: uint(check.healthy_threshold),
        unhealthy_threshold: uint(check.unhealthy_threshold),
        // A new endpoint is checked at once, and one that went unhealthy
        // is checked at the same pace, so recovery is seen promptly.
        no_traffic_interval: Some(duration_ms(check.interval_ms)),
        health_checker: Some(checker),
        ..Default::default()
    }
}

fn outlier_detection(o: &OutlierDetection) -> cluster::OutlierDetection {
    let enforcing = |set: bool| uint(if set { 100 } else { 0 });
    let failure = o.failure_percentage.as_ref();
    let success = o.success_rate.as_ref();
    cluster::OutlierDetection {
        consecutive_5xx: o.consecutive_5xx.and_then(uint),
        enforcing_consecutive_5xx: enforcing(o.consecutive_5xx.is_some()),
        consecutive_gateway_failure: o.consecutive_gateway_failures.and_then(uint),
        enforcing_consecutive_gateway_failure: enforcing(o.consecutive_gateway_failures.is_some()),
        failure_percentage_threshold: failure.and_then(|f| uint(f.threshold)),
        enforcing_failure_percentage: enforcing(failure.is_some()),
        failure_percentage_request_volume: failure.and_then(|f| uint(f.minimum_requests)),
        // Judged even with two endpoints (Envoy's default needs five).
        failure_percentage_minimum_hosts: failure.and(uint(1)),
        enforcing_success_rate: enforcing(success.is_some()),
        success_rate_minimum_hosts: success.and_then(|s| uint(s.minimum_hosts)),
        success_rate_request_volume: success.and_then(|s| uint(s.minimum_requests)),
        success_rate_stdev_factor: success.and_then(|s| uint(s.stdev_factor)),
        interval: Some(duration_ms(o.interval_ms)),
        base_ejection_time: Some(duration_ms(o.base_ejection_ms)),
        max_ejection_percent: uint(o.max_ejection_percent),
        ..Default::default()
    }
}

fn circuit_breakers(set: Option<&CircuitBreakers>) -> cluster::CircuitBreakers {
    use core::RoutingPriority;

    let class = |priority: RoutingPriority, t: Option<&Thresholds>| {
        let t = t.cloned().unwrap_or_default();
        let budget = t.retry_budget.clone();
        cluster::circuit_breakers::Thresholds {
            priority: priority as i32,
            max_connections: uint(t.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)),
            max_pending_requests: uint(
                t.max_pending_requests
                    .unwrap_or(DEFAULT_MAX_PENDING_REQUESTS),
            ),
            max_requests: uint(t.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS)),
            max_retries: t.max_retries.and_then(uint),
            retry_budget: match (t.max_retries, budget) {
                // Only a fixed number of retries was asked for.
                (Some(_), None) => None,
                (_, budget) => Some(cluster::circuit_breakers::thresholds::RetryBudget {
                    budget_percent: percent(
                        budget
                            .as_ref()
                            .map_or(DEFAULT_RETRY_BUDGET_PERCENT, |b| b.percent),
                    ),
                    min_retry_concurrency: uint(
                        budget
                            .as_ref()
                            .map_or(DEFAULT_MIN_RETRY_CONCURRENCY, |b| b.min_concurrency),
                    ),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }
    };
    cluster::CircuitBreakers {
        thresholds: vec![
            class(
                RoutingPriority::Default,
                set.and_then(|c| c.default.as_ref()),
            ),
            class(RoutingPriority::High, set.and_then(|c| c.high.as_ref())),
        ],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn protected(json: serde_json::Value) -> cluster::Cluster {
        let service: Service = serde_json::from_value(json).expect("service");
        let mut c = cluster::Cluster::default();
        protect(&service, &mut c);
        c
    }

    #[test]
    fn every_cluster_gets_the_documented_circuit_breakers() {
        let c = protected(json!({"name": "a"}));
        let breakers = c.circuit_breakers.expect("always set");
        assert_eq!(breakers.thresholds.len(), 2);
        for t in &breakers.thresholds {
            assert_eq!(t.max_requests, uint(DEFAULT_MAX_REQUESTS));
            let budget = t.retry_budget.as_ref().expect("a retry budget");
            assert_eq!(budget.budget_percent, percent(20));
        }
        assert!(c.outlier_detection.is_none() && c.health_checks.is_empty());
    }

    #[test]
    fn only_the_outlier_triggers_asked_for_are_enforced() {
        let c = protected(json!({"name": "a", "outlier_detection": {
            "failure_percentage": {"threshold": 50, "minimum_requests": 10}, "interval_ms": 1000}}));
        let o = c.outlier_detection.expect("set");
        assert_eq!(o.enforcing_consecutive_5xx, uint(0));
        assert_eq!(o.enforcing_success_rate, uint(0));
        assert_eq!(o.enforcing_failure_percentage, uint(100));
        assert_eq!(o.failure_percentage_minimum_hosts, uint(1));
        assert_eq!(o.failure_percentage_request_volume, uint(10));
    }

    #[test]
    fn the_success_rate_test_is_enforced_only_when_asked_for() {
        let c = protected(json!({"name": "a", "outlier_detection": {
            "success_rate": {"minimum_hosts": 2, "stdev_factor": 1000}}}));
        let o = c.outlier_detection.expect("set");
        assert_eq!(o.enforcing_success_rate, uint(100));
        assert_eq!(o.enforcing_failure_percentage, uint(0));
        assert_eq!(o.success_rate_minimum_hosts, uint(2));
        assert_eq!(o.success_rate_request_volume, uint(100));
        assert_eq!(o.success_rate_stdev_factor, uint(1000));
    }

    #[test]
    fn a_fixed_retry_limit_replaces_the_budget() {
        let c = protected(json!({"name": "a", "circuit_breakers": {
            "high": {"max_retries": 5, "max_pending_requests": 10}}}));
        let high = &c.circuit_breakers.expect("set").thresholds[1];
        assert_eq!(high.max_retries, uint(5));
        assert!(high.retry_budget.is_none());
        assert_eq!(high.max_pending_requests, uint(10));
    }
}
