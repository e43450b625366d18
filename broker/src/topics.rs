//! The topics in force (from the control plane's `BrokerConfig`): which
//! rule covers a topic name (an exact pattern before the longest `prefix.*`)
//! and whether a caller may publish or subscribe.

use std::collections::HashMap;

use gatehouse_proto::broker as proto;

/// Who is calling, from the identity headers ext-authz sets (the broker is
/// reached only through the gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub consumer: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
}

impl Access {
    fn from(access: Option<proto::Access>) -> Self {
        let access = access.unwrap_or_default();
        Self {
            scopes: access.scopes,
            roles: access.roles,
        }
    }

    /// Every listed scope and role held.
    pub fn allows(&self, who: &Identity) -> bool {
        self.scopes.iter().all(|s| who.scopes.contains(s))
            && self.roles.iter().all(|r| who.roles.contains(r))
    }
}

/// One topic resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub publish: Access,
    pub subscribe: Access,
    pub max_message_bytes: usize,
    pub retain: usize,
    pub drop_oldest: bool,
}

/// The rules by pattern.
#[derive(Debug, Default)]
pub struct Topics {
    exact: HashMap<String, Rule>,
    /// `(prefix with its dot, rule)`, longest first.
    prefixes: Vec<(String, Rule)>,
}

impl Topics {
    pub fn new(config: proto::BrokerConfig) -> Self {
        let mut topics = Topics::default();
        for t in config.topics {
            let rule = Rule {
                name: t.name,
                publish: Access::from(t.publish),
                subscribe: Access::from(t.subscribe),
                max_message_bytes: t.max_message_bytes as usize,
                retain: t.retain as usize,
                drop_oldest: t.drop_oldest,
            };
            match t.pattern.strip_suffix('*') {
                Some(prefix) => topics.prefixes.push((prefix.to_owned(), rule)),
                None => {
                    topics.exact.insert(t.pattern, rule);
                }
            }
        }
        topics
            .prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        topics
    }

    /// The rule covering a topic name, if any.
    pub fn rule(&self, topic: &str) -> Option<&Rule> {
        self.exact.get(topic).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| {
                    topic.starts_with(prefix.as_str()) && topic.len() > prefix.len()
                })
                .map(|(_, rule)| rule)
        })
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub use gatehouse_proto::broker::is_topic_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, pattern: &str, scope: &str) -> proto::Topic {
        proto::Topic {
            name: name.into(),
            pattern: pattern.into(),
            publish: Some(proto::Access {
                scopes: vec![scope.into()],
                roles: Vec::new(),
            }),
            subscribe: None,
            max_message_bytes: 1024,
            retain: 10,
            drop_oldest: false,
        }
    }

    #[test]
    fn exact_patterns_win_then_the_longest_prefix() {
        let topics = Topics::new(proto::BrokerConfig {
            topics: vec![
                topic("all-orders", "orders.*", "a"),
                topic("eu-orders", "orders.eu.*", "b"),
                topic("the-eu", "orders.eu.main", "c"),
            ],
        });
        let name = |t: &str| topics.rule(t).map(|r| r.name.as_str());
        assert_eq!(name("orders.us"), Some("all-orders"));
        assert_eq!(name("orders.eu.west"), Some("eu-orders"));
        assert_eq!(name("orders.eu.main"), Some("the-eu"));
        assert_eq!(name("orders."), None);
        assert_eq!(name("news"), None);
        let who = Identity {
            consumer: "a".into(),
            scopes: vec!["b".into()],
            roles: Vec::new(),
        };
        let rule = topics.rule("orders.eu.west").expect("a rule");
        assert!(rule.publish.allows(&who) && rule.subscribe.allows(&who));
        assert!(
            !topics
                .rule("orders.us")
                .expect("a rule")
                .publish
                .allows(&who)
        );
    }
}
