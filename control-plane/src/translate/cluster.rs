//! Services → Envoy clusters: EDS for IP endpoints (so endpoint changes
//! touch nothing else), STRICT_DNS with inline endpoints for DNS names,
//! HTTP/2 upstream for gRPC and h2 services, endpoints grouped by failover
//! priority, the service's protection (`resilience.rs`); static clusters
//! for our own gRPC services.

use std::net::SocketAddr;

use gatehouse_proto::{cluster, core, endpoint, protobuf, to_any, upstream_http};

use super::{ads, balancing, duration_ms, resilience, socket_address};
use crate::model::Service;

/// A service with only IP endpoints (or none) gets its endpoints over EDS.
pub fn uses_eds(service: &Service) -> bool {
    service.endpoints.iter().all(|e| e.ip().is_some())
}

pub fn cluster(service: &Service) -> cluster::Cluster {
    use cluster::cluster::{
        ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig,
    };

    let mut c = cluster::Cluster {
        name: service.name.clone(),
        connect_timeout: Some(duration_ms(service.connect_timeout_ms)),
        ..Default::default()
    };
    if uses_eds(service) {
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        c.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
    } else {
        c.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
        c.load_assignment = Some(load_assignment(service));
    }
    balancing::apply(service, &mut c);
    resilience::protect(service, &mut c);
    c
}

/// Makes the cluster speak HTTP/2 to its endpoints (gRPC, h2 services).
fn speak_http2_upstream(c: &mut cluster::Cluster) {
    use upstream_http::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    let options = upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    core::Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        to_any(&options),
    );
}

/// A static HTTP/2 cluster for one of our gRPC services.
pub fn grpc_cluster(name: &str, address: SocketAddr) -> cluster::Cluster {
    grpc_cluster_at(name, &address.ip().to_string(), address.port())
}

/// An HTTP/2 cluster for a gRPC server at `host` (an IP address: static; a
/// DNS name: resolved by Envoy, one logical host).
pub fn grpc_cluster_at(name: &str, host: &str, port: u16) -> cluster::Cluster {
    use cluster::cluster::{ClusterDiscoveryType, DiscoveryType};

    let discovery = if host.parse::<std::net::IpAddr>().is_ok() {
        DiscoveryType::Static
    } else {
        DiscoveryType::LogicalDns
    };
    let mut c = cluster::Cluster {
        name: name.into(),
        connect_timeout: Some(duration_ms(1_000)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(socket_address(host, u32::from(port))),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    speak_http2_upstream(&mut c);
    c
}

/// The service's endpoints, one group per failover priority (0 first).
pub fn load_assignment(service: &Service) -> endpoint::ClusterLoadAssignment {
    let mut by_priority: std::collections::BTreeMap<u32, Vec<endpoint::LbEndpoint>> =
        std::collections::BTreeMap::new();
    for e in &service.endpoints {
        by_priority
            .entry(e.priority.unwrap_or(0))
            .or_default()
            .push(endpoint::LbEndpoint {
                host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                    endpoint::Endpoint {
                        address: Some(socket_address(&e.host, e.port)),
                        ..Default::default()
                    },
                )),
                load_balancing_weight: e.weight.map(|value| protobuf::UInt32Value { value }),
                ..Default::default()
            });
    }
    let mut endpoints: Vec<endpoint::LocalityLbEndpoints> = by_priority
        .into_iter()
        .map(|(priority, lb_endpoints)| endpoint::LocalityLbEndpoints {
            lb_endpoints,
            priority,
            ..Default::default()
        })
        .collect();
    if endpoints.is_empty() {
        endpoints.push(endpoint::LocalityLbEndpoints::default());
    }
    endpoint::ClusterLoadAssignment {
        cluster_name: service.name.clone(),
        endpoints,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::cluster::cluster::ClusterDiscoveryType;
    use prost::Message;
    use serde_json::json;

    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("service")
    }

    #[test]
    fn ip_services_use_eds_and_dns_services_strict_dns() {
        use cluster::cluster::DiscoveryType;

        let ip = service(
            json!({"name": "a", "endpoints": [{"host": "10.0.0.1", "port": 80, "weight": 3}],
                                "connect_timeout_ms": 1500}),
        );
        let c = cluster(&ip);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert!(c.load_assignment.is_none());
        assert_eq!(
            c.connect_timeout,
            Some(protobuf::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let cla = load_assignment(&ip);
        let endpoint = &cla.endpoints[0].lb_endpoints[0];
        assert_eq!(
            endpoint.load_balancing_weight,
            Some(protobuf::UInt32Value { value: 3 })
        );

        let dns = service(
            json!({"name": "b", "endpoints": [{"host": "backend.internal", "port": 8080}]}),
        );
        let c = cluster(&dns);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        assert_eq!(
            c.load_assignment.as_ref().map(|l| l.cluster_name.as_str()),
            Some("b")
        );
        assert!(
            c.typed_extension_protocol_options.is_empty(),
            "http1 needs no options"
        );
    }

    #[test]
    fn grpc_and_http2_services_speak_http2_upstream() {
        let c = cluster(&service(json!({"name": "g", "protocol": "grpc"})));
        let options = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let decoded =
            upstream_http::HttpProtocolOptions::decode(options.value.as_slice()).expect("decode");
        assert!(format!("{decoded:?}").contains("Http2ProtocolOptions"));
    }
}
