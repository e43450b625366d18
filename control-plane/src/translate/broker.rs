//! Topics → the broker's one `BrokerConfig` resource (streamed to
//! `gatehouse-broker` over ADS, like ratelimit-service's policies).

use gatehouse_proto::broker as proto;

use crate::model::{ConfigState, SlowConsumer, TopicAccess};

fn access(a: &TopicAccess) -> proto::Access {
    proto::Access {
        scopes: a.scopes.clone(),
        roles: a.roles.clone(),
    }
}

/// Every topic, in name order.
pub fn broker_config(state: &ConfigState) -> proto::BrokerConfig {
    proto::BrokerConfig {
        topics: state
            .topics
            .values()
            .map(|t| proto::Topic {
                name: t.name.clone(),
                pattern: t.pattern().to_owned(),
                publish: Some(access(&t.publish)),
                subscribe: Some(access(&t.subscribe)),
                max_message_bytes: t.max_message_bytes,
                retain: t.retain,
                drop_oldest: t.slow_consumer == SlowConsumer::DropOldest,
            })
            .collect(),
    }
}
