//! The policies and plans in force, compiled from the control plane's
//! `RateLimitConfig`, and how a request's descriptors map onto counters.

use std::collections::HashMap;

use gatehouse_proto::{
    ratelimit::{self as rl, descriptor as d},
    ratelimit_common::RateLimitDescriptor,
};

use crate::{algorithm::Rule, counters::Item};

/// What a counter belongs to, for responses, metrics and hit logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `policy:<name>` or `plan:<name>`.
    pub label: String,
    pub fail_open: bool,
    /// The descriptor it came from.
    pub descriptor: usize,
    /// The descriptor's entries, for hit logs (consumer, route, ...).
    pub entries: Vec<(String, String)>,
}

struct PolicyRule {
    rule: Rule,
    shadow: bool,
    fail_open: bool,
    quota: bool,
}

/// A quota policy's limit, as a rate shared by the Envoys enforcing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaLimit {
    /// Requests per second, the whole fleet together.
    pub per_second: f64,
    /// Token bucket capacity (token bucket policies), or `None`: a second's
    /// worth.
    pub burst: Option<u64>,
}

#[derive(Default)]
pub struct Rules {
    /// The control plane's config version.
    pub version: String,
    policies: HashMap<String, PolicyRule>,
    plans: HashMap<String, Vec<Rule>>,
    /// Registered consumers' plans, for descriptors that name only the
    /// consumer (routes whose JWTs Envoy verifies).
    consumer_plans: HashMap<String, String>,
}

fn rule(algorithm: i32, limit: &rl::Limit, burst: u64) -> Rule {
    Rule {
        algorithm: rl::Algorithm::try_from(algorithm).unwrap_or(rl::Algorithm::FixedWindow),
        requests: limit.requests.max(1),
        period_ms: limit.period_seconds.max(1) * 1000,
        burst: if burst == 0 {
            limit.requests.max(1)
        } else {
            burst
        },
    }
}

/// Why a `RateLimitConfig` cannot be put in force.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("policy {0:?} has no limit")]
    NoLimit(String),
}

impl Rules {
    pub fn build(version: &str, config: rl::RateLimitConfig) -> Result<Rules, RulesError> {
        let mut policies = HashMap::new();
        for p in config.policies {
            let limit = p.limit.ok_or_else(|| RulesError::NoLimit(p.name.clone()))?;
            policies.insert(
                p.name,
                PolicyRule {
                    rule: rule(p.algorithm, &limit, p.burst),
                    shadow: p.shadow,
                    fail_open: p.fail_open,
                    quota: p.quota,
                },
            );
        }
        let plans = config
            .plans
            .into_iter()
            .map(|p| {
                let rules = p.limits.iter().map(|l| rule(p.algorithm, l, 0)).collect();
                (p.name, rules)
            })
            .collect();
        Ok(Rules {
            version: version.to_owned(),
            policies,
            plans,
            consumer_plans: config.consumer_plans,
        })
    }

    /// The limit of quota policy `name` (none for an exact one).
    pub fn quota(&self, name: &str) -> Option<QuotaLimit> {
        let p = self.policies.get(name).filter(|p| p.quota)?;
        Some(QuotaLimit {
            per_second: p.rule.requests as f64 * 1000.0 / p.rule.period_ms as f64,
            burst: (p.rule.algorithm == rl::Algorithm::TokenBucket).then_some(p.rule.burst),
        })
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// The counters a request touches. Descriptors Gatehouse did not
    /// configure (or for plans nobody has) touch none.
    pub fn items(
        &self,
        descriptors: &[RateLimitDescriptor],
        request_hits: u32,
    ) -> Vec<(Item, Origin)> {
        let mut items = Vec::new();
        for (index, descriptor) in descriptors.iter().enumerate() {
            let hits = match descriptor.hits_addend.as_ref().map(|h| h.value) {
                Some(h) => h,
                None => u64::from(request_hits),
            }
            .max(1);
            let Some((first, rest)) = descriptor.entries.split_first() else {
                continue;
            };
            // A consumer standing for its plan becomes that plan, so both
            // kinds of route count the same counter; no plan, no descriptor.
            let Some(entries) = rest
                .iter()
                .map(|e| match e.key.as_str() {
                    d::PLAN_OF_CONSUMER => self
                        .consumer_plans
                        .get(&e.value)
                        .map(|plan| (d::PLAN.to_owned(), plan.clone())),
                    _ => Some((e.key.clone(), e.value.clone())),
                })
                .collect::<Option<Vec<(String, String)>>>()
            else {
                continue;
            };
            let origin = |label: String, fail_open: bool| Origin {
                label,
                fail_open,
                descriptor: index,
                entries: entries.clone(),
            };
            match first.key.as_str() {
                d::POLICY => {
                    let Some(policy) = self.policies.get(&first.value) else {
                        continue;
                    };
                    items.push((
                        Item {
                            key: counter_key("p", &first.value, &entries, ""),
                            rule: policy.rule,
                            hits,
                            shadow: policy.shadow,
                        },
                        origin(format!("policy:{}", first.value), policy.fail_open),
                    ));
                }
                d::PLAN_QUOTA => {
                    let value = |key: &str| {
                        entries
                            .iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| v.as_str())
                    };
                    let Some(consumer) = value(d::CONSUMER) else {
                        continue;
                    };
                    // ext-authz names the plan; for a token Envoy verified,
                    // the consumer's registered plan.
                    let Some(plan) = value(d::PLAN)
                        .or_else(|| self.consumer_plans.get(consumer).map(String::as_str))
                    else {
                        continue;
                    };
                    let Some(rules) = self.plans.get(plan) else {
                        continue;
                    };
                    // The same counter whichever way the plan was found.
                    let counted = [
                        (d::PLAN.to_owned(), plan.to_owned()),
                        (d::CONSUMER.to_owned(), consumer.to_owned()),
                    ];
                    for rule in rules {
                        items.push((
                            Item {
                                key: counter_key("q", plan, &counted, &rule.period_ms.to_string()),
                                rule: *rule,
                                hits,
                                shadow: false,
                            },
                            Origin {
                                entries: counted.to_vec(),
                                ..origin(format!("plan:{plan}"), true)
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        items
    }
}

/// `gh:<kind>:{<name>|<entries>}<suffix>`: the braces are a Redis Cluster
/// hash tag, so one counter's keys live on one node. Entry values are
/// escaped so no two descriptors share a key.
pub fn counter_key(kind: &str, name: &str, entries: &[(String, String)], suffix: &str) -> String {
    let mut key = format!("gh:{kind}:{{{name}");
    for (k, v) in entries {
        key.push('|');
        escape_into(&mut key, k);
        key.push('=');
        escape_into(&mut key, v);
    }
    key.push('}');
    key.push_str(suffix);
    key
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '|' | '=' | '{' | '}' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::{protobuf::UInt64Value, ratelimit_common::rate_limit_descriptor::Entry};

    use super::*;

    fn descriptor(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            hits_addend: hits.map(|value| UInt64Value { value }),
            ..Default::default()
        }
    }

    fn rules() -> Rules {
        Rules::build(
            "1",
            rl::RateLimitConfig {
                policies: vec![rl::Policy {
                    name: "per-consumer".into(),
                    limit: Some(rl::Limit {
                        requests: 10,
                        period_seconds: 60,
                    }),
                    ..Default::default()
                }],
                plans: vec![rl::Plan {
                    name: "free".into(),
                    limits: vec![
                        rl::Limit {
                            requests: 5,
                            period_seconds: 1,
                        },
                        rl::Limit {
                            requests: 100,
                            period_seconds: 3600,
                        },
                    ],
                    algorithm: 0,
                }],
                consumer_plans: HashMap::from([("alice".to_owned(), "free".to_owned())]),
            },
        )
        .unwrap()
    }

    #[test]
    fn descriptors_map_to_counters_with_hits() {
        let rules = rules();
        let items = rules.items(
            &[
                descriptor(&[("policy", "per-consumer"), ("consumer", "alice")], None),
                descriptor(
                    &[("plan_quota", "1"), ("plan", "free"), ("consumer", "alice")],
                    Some(3),
                ),
                descriptor(&[("policy", "unknown")], None),
                descriptor(
                    &[("plan_quota", "1"), ("plan", "gold"), ("consumer", "bob")],
                    None,
                ),
            ],
            0,
        );
        let keys: Vec<(&str, u64, usize)> = items
            .iter()
            .map(|(i, o)| (i.key.as_str(), i.hits, o.descriptor))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("gh:p:{per-consumer|consumer=alice}", 1, 0),
                ("gh:q:{free|plan=free|consumer=alice}1000", 3, 1),
                ("gh:q:{free|plan=free|consumer=alice}3600000", 3, 1),
            ]
        );
    }

    #[test]
    fn a_consumer_stands_for_its_plan_on_routes_verified_in_envoy() {
        let rules = rules();
        let items = rules.items(
            &[
                // Plan quota with only the consumer: the same counters as
                // when ext-authz names the plan.
                descriptor(&[("plan_quota", "1"), ("consumer", "alice")], None),
                // A policy counting by plan.
                descriptor(
                    &[("policy", "per-consumer"), ("plan_of_consumer", "alice")],
                    None,
                ),
                // Unregistered consumers have no plan: nothing counted.
                descriptor(&[("plan_quota", "1"), ("consumer", "mallory")], None),
                descriptor(
                    &[("policy", "per-consumer"), ("plan_of_consumer", "mallory")],
                    None,
                ),
            ],
            0,
        );
        let keys: Vec<&str> = items.iter().map(|(i, _)| i.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "gh:q:{free|plan=free|consumer=alice}1000",
                "gh:q:{free|plan=free|consumer=alice}3600000",
                "gh:p:{per-consumer|plan=free}",
            ]
        );
        assert_eq!(
            items[0].1.entries,
            vec![
                ("plan".to_owned(), "free".to_owned()),
                ("consumer".to_owned(), "alice".to_owned())
            ]
        );
    }

    #[test]
    fn crafted_values_cannot_collide_with_other_keys() {
        let a = counter_key("p", "x", &[("header.t".into(), "a|consumer=b".into())], "");
        let b = counter_key(
            "p",
            "x",
            &[
                ("header.t".into(), "a".into()),
                ("consumer".into(), "b".into()),
            ],
            "",
        );
        assert_ne!(a, b);
        assert!(!a.contains("a|consumer"));
    }
}
