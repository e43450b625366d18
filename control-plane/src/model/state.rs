//! The whole configuration at one version: what translation reads, what the
//! admission check sees, what history rebuilds. Read from the store in one
//! consistent statement.

use std::collections::BTreeMap;

use super::{
    Certificate, ConfigDocument, Consumer, Gateway, IntrospectionProvider, JwtIssuer, Kind, Owner,
    Plan, RateLimitPolicy, Resource, Route, Service, Topic, auth::StoredApiKey,
};

/// A stored spec that no longer reads as its kind.
#[derive(Debug, thiserror::Error)]
#[error("stored {} {name:?} cannot be read: {source}", kind.as_str())]
pub struct CorruptSpec {
    pub kind: Kind,
    pub name: String,
    pub source: serde_json::Error,
}

/// The whole configuration at one version, read in one consistent statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigState {
    pub version: u64,
    /// Teams (translation ignores them).
    pub owners: BTreeMap<String, Owner>,
    pub services: BTreeMap<String, Service>,
    pub routes: BTreeMap<String, Route>,
    pub consumers: BTreeMap<String, Consumer>,
    pub jwt_issuers: BTreeMap<String, JwtIssuer>,
    pub introspection_providers: BTreeMap<String, IntrospectionProvider>,
    pub plans: BTreeMap<String, Plan>,
    pub rate_limit_policies: BTreeMap<String, RateLimitPolicy>,
    pub certificates: BTreeMap<String, Certificate>,
    pub gateways: BTreeMap<String, Gateway>,
    pub topics: BTreeMap<String, Topic>,
    pub grpc_apis: BTreeMap<String, crate::model::GrpcApi>,
    /// Every key, including revoked and expired ones (translation filters).
    pub api_keys: Vec<StoredApiKey>,
    /// Uploaded certificates' private keys, decrypted, by the hex SHA-256 of
    /// their public key (`Certificate::needs_private_key`).
    pub private_keys: BTreeMap<String, crate::secret::Secret>,
    /// Per-node and per-fleet xDS tokens (hashes).
    pub node_tokens: Vec<crate::model::node_token::StoredNodeToken>,
}

impl ConfigState {
    /// The state as a document (the format `apply` takes and `export` gives).
    pub fn into_document(self) -> ConfigDocument {
        ConfigDocument {
            owner: None,
            owners: self.owners.into_values().collect(),
            services: self.services.into_values().collect(),
            routes: self.routes.into_values().collect(),
            consumers: self.consumers.into_values().collect(),
            jwt_issuers: self.jwt_issuers.into_values().collect(),
            introspection_providers: self.introspection_providers.into_values().collect(),
            plans: self.plans.into_values().collect(),
            rate_limit_policies: self.rate_limit_policies.into_values().collect(),
            certificates: self.certificates.into_values().collect(),
            gateways: self.gateways.into_values().collect(),
            topics: self.topics.into_values().collect(),
            grpc_apis: self.grpc_apis.into_values().collect(),
        }
    }

    /// Puts back a resource's earlier spec (`None`: it did not exist).
    /// Puts back a resource's spec (`None`: it did not exist); used to read
    /// a state and to undo later changes.
    pub fn restore(
        &mut self,
        kind: Kind,
        name: String,
        before: Option<String>,
    ) -> Result<(), CorruptSpec> {
        match kind {
            Kind::Owner => restore(&mut self.owners, kind, name, before),
            Kind::Service => restore(&mut self.services, kind, name, before),
            Kind::Route => restore(&mut self.routes, kind, name, before),
            Kind::Consumer => restore(&mut self.consumers, kind, name, before),
            Kind::JwtIssuer => restore(&mut self.jwt_issuers, kind, name, before),
            Kind::IntrospectionProvider => {
                restore(&mut self.introspection_providers, kind, name, before)
            }
            Kind::Plan => restore(&mut self.plans, kind, name, before),
            Kind::RateLimitPolicy => restore(&mut self.rate_limit_policies, kind, name, before),
            Kind::Certificate => restore(&mut self.certificates, kind, name, before),
            Kind::Gateway => restore(&mut self.gateways, kind, name, before),
            Kind::Topic => restore(&mut self.topics, kind, name, before),
            Kind::GrpcApi => restore(&mut self.grpc_apis, kind, name, before),
            // Keys are not configuration: a rollback never brings back a
            // revoked key nor removes a newer one.
            Kind::ApiKey => Ok(()),
        }
    }
}

fn restore<R: Resource>(
    map: &mut BTreeMap<String, R>,
    kind: Kind,
    name: String,
    before: Option<String>,
) -> Result<(), CorruptSpec> {
    match before {
        Some(spec) => {
            let resource = serde_json::from_str(&spec).map_err(|source| CorruptSpec {
                kind,
                name: name.clone(),
                source,
            })?;
            map.insert(name, resource);
        }
        None => {
            map.remove(&name);
        }
    }
    Ok(())
}
