//! A service's balancing → its cluster: the policy (with slow start),
//! DNS resolution settings, the connection pool and protocol options; and
//! the hash key → the route actions that send traffic to it.

use gatehouse_proto::{
    cluster, core, dns_cluster, dns_common, protobuf, route, to_any, upstream_http,
};

use super::duration_ms;
use crate::model::{Dns, DnsFamily, LbPolicy, Protocol, Service};

const PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Sets the service's balancing policy, DNS settings and protocol options.
pub fn apply(service: &Service, c: &mut cluster::Cluster) {
    use cluster::cluster::{
        LbConfig, LbPolicy as Envoy, LeastRequestLbConfig, RoundRobinLbConfig, SlowStartConfig,
    };

    if let Some(lb) = &service.load_balancing {
        c.lb_policy = match lb.policy {
            LbPolicy::RoundRobin => Envoy::RoundRobin,
            LbPolicy::LeastRequest => Envoy::LeastRequest,
            LbPolicy::Random => Envoy::Random,
            LbPolicy::RingHash => Envoy::RingHash,
            LbPolicy::Maglev => Envoy::Maglev,
        } as i32;
        let slow_start = lb.slow_start_ms.map(|ms| SlowStartConfig {
            slow_start_window: Some(duration_ms(ms)),
            ..Default::default()
        });
        c.lb_config = match (lb.policy, slow_start) {
            (LbPolicy::RoundRobin, Some(slow)) => {
                Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: Some(slow),
                }))
            }
            (LbPolicy::LeastRequest, slow) => {
                Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: slow,
                    ..Default::default()
                }))
            }
            _ => None,
        };
    }
    if let Some(dns) = &service.dns
        && !super::cluster::uses_eds(service)
    {
        dns_cluster(dns, c);
    }
    if let Some(options) = protocol_options(service) {
        c.typed_extension_protocol_options
            .insert(PROTOCOL_OPTIONS.into(), to_any(&options));
    }
}

/// A DNS-named service with DNS settings becomes Envoy's DNS cluster
/// extension (the successor of `STRICT_DNS` with cluster-level settings).
fn dns_cluster(dns: &Dns, c: &mut cluster::Cluster) {
    use dns_common::DnsLookupFamily as Family;

    let config = dns_cluster::DnsCluster {
        dns_refresh_rate: dns.refresh_ms.map(duration_ms),
        respect_dns_ttl: dns.respect_ttl,
        dns_lookup_family: match dns.family {
            DnsFamily::V4Preferred => Family::V4Preferred,
            DnsFamily::V4Only => Family::V4Only,
            DnsFamily::V6Only => Family::V6Only,
            DnsFamily::Auto => Family::Auto,
            DnsFamily::All => Family::All,
        } as i32,
        ..Default::default()
    };
    c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::ClusterType(
        cluster::cluster::CustomClusterType {
            name: "envoy.clusters.dns".into(),
            typed_config: Some(to_any(&config)),
        },
    ));
    c.dns_lookup_family = 0;
}

/// HTTP/2 for gRPC and h2 services, and the connection pool's settings;
/// `None` when Envoy's defaults (HTTP/1.1, no limits) are what is asked.
pub fn protocol_options(service: &Service) -> Option<upstream_http::HttpProtocolOptions> {
    use upstream_http::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };

    let http2 = matches!(service.protocol, Protocol::Http2 | Protocol::Grpc);
    let pool = service.connection_pool.clone().unwrap_or_default();
    let common = (pool.idle_timeout_ms.is_some() || pool.max_requests_per_connection.is_some())
        .then(|| core::HttpProtocolOptions {
            idle_timeout: pool.idle_timeout_ms.map(duration_ms),
            max_requests_per_connection: pool
                .max_requests_per_connection
                .map(|value| protobuf::UInt32Value { value }),
            ..Default::default()
        });
    if !http2 && common.is_none() {
        return None;
    }
    let protocol = if http2 {
        ProtocolConfig::Http2ProtocolOptions(core::Http2ProtocolOptions {
            connection_keepalive: pool.http2_keepalive_ms.map(|ms| core::KeepaliveSettings {
                interval: Some(duration_ms(ms)),
                timeout: Some(duration_ms(ms.clamp(1_000, 20_000))),
                ..Default::default()
            }),
            ..Default::default()
        })
    } else {
        ProtocolConfig::HttpProtocolOptions(core::Http1ProtocolOptions::default())
    };
    Some(upstream_http::HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(protocol),
            },
        )),
        ..Default::default()
    })
}

/// The hash key of the first service `services` names that hashes.
pub fn hash_policy(services: &[&Service]) -> Vec<route::route_action::HashPolicy> {
    use route::route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };

    let Some(hash) = services
        .iter()
        .find_map(|s| s.load_balancing.as_ref()?.hash_on.as_ref())
    else {
        return Vec::new();
    };
    let specifier = if let Some(header) = &hash.header {
        PolicySpecifier::Header(Header {
            header_name: header.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &hash.cookie {
        PolicySpecifier::Cookie(Cookie {
            name: cookie.name.clone(),
            ttl: Some(protobuf::Duration {
                seconds: i64::from(cookie.ttl_s),
                nanos: 0,
            }),
            path: "/".into(),
            ..Default::default()
        })
    } else if let Some(name) = &hash.query_parameter {
        PolicySpecifier::QueryParameter(QueryParameter { name: name.clone() })
    } else {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    };
    vec![route::route_action::HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("service")
    }

    #[test]
    fn the_policy_slow_start_and_pool_reach_the_cluster() {
        let s = service(
            json!({"name": "a", "load_balancing": {"policy": "least_request", "slow_start_ms": 30000},
                               "connection_pool": {"idle_timeout_ms": 60000, "max_requests_per_connection": 100}}),
        );
        let mut c = cluster::Cluster::default();
        apply(&s, &mut c);
        assert_eq!(c.lb_policy, cluster::cluster::LbPolicy::LeastRequest as i32);
        assert!(format!("{:?}", c.lb_config).contains("slow_start_window"));
        assert!(
            c.typed_extension_protocol_options
                .contains_key(PROTOCOL_OPTIONS)
        );
        assert!(protocol_options(&service(json!({"name": "b"}))).is_none());
    }

    #[test]
    fn routes_hash_on_the_services_key() {
        let s = service(
            json!({"name": "a", "load_balancing": {"policy": "ring_hash", "hash_on": {"cookie": {"name": "sid", "ttl_s": 60}}}}),
        );
        let policy = hash_policy(&[&s]);
        assert!(format!("{policy:?}").contains("sid"));
        assert!(hash_policy(&[&service(json!({"name": "b"}))]).is_empty());
    }
}
