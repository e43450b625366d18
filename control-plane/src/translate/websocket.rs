//! WebSocket routes → Envoy: the connection manager allows no upgrade
//! ([`upgrade_configs`]), a WebSocket route turns it back on for itself
//! ([`apply`]) with no request timeout (a connection lasts until its
//! maximum duration or idle timeout) and tells ext-authz it is one, so it
//! reads browsers' credentials from the query and `Sec-WebSocket-Protocol`.

use gatehouse_proto::{hcm, protobuf, route};

use super::duration_ms;
use crate::model::Route;

const WEBSOCKET: &str = "websocket";

/// The connection manager's upgrades: WebSocket known, off by default.
pub fn upgrade_configs() -> Vec<hcm::http_connection_manager::UpgradeConfig> {
    vec![hcm::http_connection_manager::UpgradeConfig {
        upgrade_type: WEBSOCKET.into(),
        enabled: Some(protobuf::BoolValue { value: false }),
        ..Default::default()
    }]
}

/// Turns the upgrade on for a WebSocket route.
pub fn apply(r: &Route, envoy: &mut route::Route) {
    let Some(ws) = &r.websocket else {
        return;
    };
    let Some(route::route::Action::Route(action)) = envoy.action.as_mut() else {
        return;
    };
    action.upgrade_configs = vec![route::route_action::UpgradeConfig {
        upgrade_type: WEBSOCKET.into(),
        enabled: Some(protobuf::BoolValue { value: true }),
        ..Default::default()
    }];
    action.timeout = Some(duration_ms(0));
    action.max_stream_duration =
        ws.max_duration_ms
            .map(|ms| route::route_action::MaxStreamDuration {
                max_stream_duration: Some(duration_ms(ms)),
                ..Default::default()
            });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: serde_json::Value) -> Route {
        serde_json::from_value(json).expect("route")
    }

    #[test]
    fn only_websocket_routes_allow_the_upgrade() {
        let plain = route(
            serde_json::json!({"name": "a", "match": {"path_prefix": "/a"},
            "destination": {"service": "s"}}),
        );
        let mut envoy = super::super::envoy_route(&plain);
        apply(&plain, &mut envoy);
        let Some(route::route::Action::Route(action)) = &envoy.action else {
            panic!("a route action");
        };
        assert!(action.upgrade_configs.is_empty());
        assert_eq!(
            upgrade_configs()[0].enabled,
            Some(protobuf::BoolValue { value: false })
        );

        let ws = route(
            serde_json::json!({"name": "a", "match": {"path_prefix": "/a"},
            "destination": {"service": "s"}, "websocket": {"max_duration_ms": 60000}}),
        );
        let mut envoy = super::super::envoy_route(&ws);
        apply(&ws, &mut envoy);
        let Some(route::route::Action::Route(action)) = &envoy.action else {
            panic!("a route action");
        };
        assert_eq!(
            action.upgrade_configs[0].enabled,
            Some(protobuf::BoolValue { value: true })
        );
        assert_eq!(action.timeout, Some(duration_ms(0)));
        let max = action
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.max_stream_duration);
        assert_eq!(max, Some(duration_ms(60_000)));
    }
}
