//! The admin API's OpenAPI 3.1 document, served at `/v1/openapi.json`.
//!
//! Schemas are generated from the same serde types the handlers parse and
//! return (`schemars`), so they cannot drift from the code; the paths are
//! declared here, next to the router, and a schemathesis run against a real
//! control plane checks server and document against each other.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::{
    admin::keys::{KeyView, NewKey, Rotation},
    model::{
        Certificate, ConfigDocument, Consumer, Gateway, IntrospectionProvider, JwtIssuer, Owner,
        Plan, RateLimitPolicy, Route, Service, Topic,
    },
    store::{AdminTokenRecord, Applied, VersionRecord},
    xds::rollout::{Analysis, CanaryStatus, Selector},
};

/// JSON Schema (2020-12) of the declarative configuration document.
pub fn document_schema() -> Value {
    let schema = SchemaGenerator::new(SchemaSettings::draft2020_12())
        .into_root_schema_for::<ConfigDocument>();
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

struct Schemas {
    generator: SchemaGenerator,
}

impl Schemas {
    fn of<T: JsonSchema>(&mut self) -> Value {
        serde_json::to_value(self.generator.subschema_for::<T>()).unwrap_or(Value::Null)
    }
}

fn problem_responses(codes: &[u16]) -> Map<String, Value> {
    codes
        .iter()
        .map(|code| {
            let mut response = json!({
                "description": "An RFC 7807 problem",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            });
            if *code == 503 {
                // `starting` (the store is being prepared) or `unavailable`.
                response["description"] =
                    json!("An RFC 7807 problem: the control plane is starting or its store is unreachable");
                response["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "integer"}
                }});
            }
            (code.to_string(), response)
        })
        .collect()
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn operation(summary: &str, success: (&str, Value), errors: &[u16]) -> Value {
    let mut responses = problem_responses(errors);
    responses.insert(success.0.to_owned(), success.1);
    json!({"summary": summary, "responses": responses})
}

/// Adds the request body, and the 413 for bodies over the limit.
fn with_body(mut operation: Value, schema: Value) -> Value {
    operation["requestBody"] =
        json!({"required": true, "content": {"application/json": {"schema": schema}}});
    operation["responses"]["413"] = problem_responses(&[413])["413"].clone();
    operation
}

/// Adds path parameters, and the 400 for a segment that does not decode.
fn with_parameters(mut operation: Value, parameters: Value) -> Value {
    operation["responses"]["400"] = problem_responses(&[400])["400"].clone();
    operation["parameters"] = parameters;
    operation
}

fn name_parameter() -> Value {
    json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn resource_paths<R: JsonSchema>(
    paths: &mut Map<String, Value>,
    schemas: &mut Schemas,
    plural: &str,
    kind: &str,
) {
    let schema = schemas.of::<R>();
    paths.insert(
        format!("/v1/{plural}"),
        json!({
            "get": with_parameters(
                operation(&format!("List {plural} (a token that reads only its own owner's sees those and shared ones)"), ("200", ok("All of them", json!({"type": "array", "items": schema}))), &[401, 403, 422, 503]),
                json!([
                    {"name": "owner", "in": "query", "schema": {"type": "string"}, "description": "only this owner's"},
                    {"name": "label", "in": "query", "schema": {"type": "string"}, "description": "only those with this label, key=value"}
                ]),
            ),
            "post": with_body(
                operation(&format!("Create a {kind} (409 if the name exists)"), ("201", ok("Created", schema.clone())), &[401, 403, 409, 422, 503]),
                schema.clone(),
            ),
        }),
    );
    paths.insert(
        format!("/v1/{plural}/{{name}}"),
        json!({
            "get": with_parameters(operation(&format!("Read a {kind}"), ("200", ok("Found", schema.clone())), &[401, 403, 404, 503]), name_parameter()),
            "put": with_parameters(
                with_body(
                    operation(&format!("Create or replace a {kind}"), ("200", ok("Replaced (201 when created)", schema.clone())), &[401, 403, 412, 422, 503]),
                    schema.clone(),
                ),
                name_parameter(),
            ),
            "delete": with_parameters(
                json!({"summary": format!("Delete a {kind}"), "responses": {
                    "204": {"description": "Deleted"},
                    "401": problem_responses(&[401])["401"], "403": problem_responses(&[403])["403"],
                    "404": problem_responses(&[404])["404"], "409": problem_responses(&[409])["409"],
                    "412": problem_responses(&[412])["412"], "422": problem_responses(&[422])["422"],
                    "503": problem_responses(&[503])["503"]}}),
                name_parameter(),
            ),
        }),
    );
}

fn key_paths(paths: &mut Map<String, Value>, schemas: &mut Schemas) {
    let key = schemas.of::<KeyView>();
    let new_key = schemas.of::<NewKey>();
    let rotation = schemas.of::<Rotation>();
    let consumer =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert(
        "/v1/consumers/{name}/keys".into(),
        json!({
            "get": with_parameters(operation("List a consumer's API keys (never the keys)", ("200", ok("Keys", json!({"type": "array", "items": key.clone()}))), &[401, 403, 404, 503]), json!([consumer.clone()])),
            "post": with_parameters(with_body(
                operation("Create an API key; the key is returned once", ("201", ok("Created", key.clone())), &[401, 403, 404, 422, 503]),
                new_key,
            ), json!([consumer.clone()])),
        }),
    );
    paths.insert(
        "/v1/consumers/{name}/keys/{id}/revoke".into(),
        json!({"post": with_parameters(
            json!({"summary": "Revoke an API key at once", "responses": {"204": {"description": "Revoked"},
                "401": problem_responses(&[401])["401"], "403": problem_responses(&[403])["403"],
                "404": problem_responses(&[404])["404"], "503": problem_responses(&[503])["503"]}}),
            json!([consumer.clone(), id.clone()]),
        )}),
    );
    paths.insert(
        "/v1/consumers/{name}/keys/{id}/rotate".into(),
        json!({"post": with_parameters(with_body(
            operation("Replace an API key; the old one works until the grace period ends", ("201", ok("The new key, returned once", key)), &[401, 403, 404, 409, 422, 503]),
            rotation,
        ), json!([consumer, id]))}),
    );
}

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Schemas {
        generator: SchemaSettings::draft2020_12()
            .with(|s| s.definitions_path = "/components/schemas".into())
            .into_generator(),
    };
    let mut paths = Map::new();
    resource_paths::<Owner>(&mut paths, &mut schemas, "owners", "owner (team)");
    resource_paths::<Service>(&mut paths, &mut schemas, "services", "service");
    resource_paths::<Route>(&mut paths, &mut schemas, "routes", "route");
    resource_paths::<Consumer>(&mut paths, &mut schemas, "consumers", "consumer");
    resource_paths::<JwtIssuer>(&mut paths, &mut schemas, "jwt-issuers", "JWT issuer");
    resource_paths::<IntrospectionProvider>(
        &mut paths,
        &mut schemas,
        "introspection-providers",
        "introspection provider",
    );
    resource_paths::<Plan>(&mut paths, &mut schemas, "plans", "plan");
    resource_paths::<Certificate>(&mut paths, &mut schemas, "certificates", "certificate");
    resource_paths::<Gateway>(&mut paths, &mut schemas, "gateways", "gateway");
    resource_paths::<RateLimitPolicy>(
        &mut paths,
        &mut schemas,
        "rate-limit-policies",
        "rate limit policy",
    );
    resource_paths::<Topic>(&mut paths, &mut schemas, "topics", "broker topic");
    resource_paths::<crate::model::GrpcApi>(
        &mut paths,
        &mut schemas,
        "grpc-apis",
        "gRPC API (descriptor set)",
    );
    key_paths(&mut paths, &mut schemas);
    let config = schemas.of::<ConfigDocument>();
    let applied = schemas.of::<Applied>();
    let version_record = schemas.of::<VersionRecord>();
    let token = schemas.of::<AdminTokenRecord>();
    let node_token = schemas.of::<crate::model::node_token::StoredNodeToken>();
    let canary = schemas.of::<CanaryStatus>();
    let selector = schemas.of::<Selector>();
    let analysis = schemas.of::<Analysis>();
    let any_object = json!({"type": "object"});
    let text = |description: &str| json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}});
    let entries = [
        (
            "/healthz",
            json!({"get": {"summary": "Liveness", "responses": {"200": text("Alive")}}}),
        ),
        (
            "/readyz",
            json!({"get": {"summary": "Readiness: store reachable and a snapshot served", "responses": {"200": text("Ready"), "503": text("Not ready")}}}),
        ),
        (
            "/metrics",
            json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OpenMetrics text", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}}),
        ),
        (
            "/v1/openapi.json",
            json!({"get": operation("This document", ("200", ok("OpenAPI 3.1", any_object.clone())), &[401, 403])}),
        ),
        (
            "/v1/config/schema.json",
            json!({"get": operation("JSON Schema of the configuration document", ("200", ok("JSON Schema 2020-12", any_object.clone())), &[401, 403])}),
        ),
        (
            "/v1/config",
            json!({
                "get": with_parameters(
                    operation("Export the whole configuration (ETag: the config version)", ("200", ok("The document", config.clone())), &[401, 403, 422, 503]),
                    json!([{"name": "owner", "in": "query", "schema": {"type": "string"}, "description": "only this owner's resources, as its document (owner at the top)"}]),
                ),
                "put": with_parameters(
                    with_body(
                        operation("Apply a whole document atomically; with an owner (the document's `owner`, this parameter or a scoped token), only that owner's resources are seen, changed and pruned", ("200", ok("The changes, and the new version", applied.clone())), &[401, 403, 409, 412, 422, 503]),
                        config,
                    ),
                    json!([
                        {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                        {"name": "prune", "in": "query", "schema": {"type": "boolean"}},
                        {"name": "if_version", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {"name": "owner", "in": "query", "schema": {"type": "string"}}
                    ]),
                ),
            }),
        ),
        (
            "/v1/config/version",
            json!({"get": operation("Stored and served config versions", ("200", ok("Versions", json!({
            "type": "object", "properties": {"version": {"type": "integer"}, "served_version": {"type": ["integer", "null"]}}}))), &[401, 403, 503])}),
        ),
        (
            "/v1/config/versions",
            json!({"get": with_parameters(
                operation("Version history, newest first", ("200", ok("Versions", json!({"type": "array", "items": version_record.clone()}))), &[401, 403, 422, 503]),
                json!([
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 4294967295_u64}},
                    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "owner", "in": "query", "schema": {"type": "string"}, "description": "only versions that changed this owner's resources"}
                ]),
            )}),
        ),
        (
            "/v1/config/versions/{version}",
            json!({"get": with_parameters(
                operation("One version with each change's spec before and after", ("200", ok("The version", version_record)), &[400, 401, 403, 404, 503]),
                json!([{"name": "version", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}}]),
            )}),
        ),
        (
            "/v1/config/rollback",
            json!({"post": with_body(
                operation("Restore a version's configuration as a new version", ("200", ok("The changes", applied)), &[401, 403, 409, 412, 422, 503]),
                json!({"type": "object", "required": ["to"], "additionalProperties": false, "properties": {"to": {"type": "integer", "minimum": 0}}}),
            )}),
        ),
        (
            "/v1/rollout",
            json!({
                "get": operation("The current or last canary rollout and the connected nodes in it", ("200", ok("Canary", json!({"type": "object", "properties": {
                    "canary": {"anyOf": [canary.clone(), {"type": "null"}]}, "canary_nodes": {"type": "array", "items": {"type": "string"}}}}))), &[401, 403]),
                "post": with_body(
                    operation("Start a canary: matching nodes get every new version, the rest stay on the one served now (409 if one runs or a version is held back; 422 if the selector matches no connected node)", ("201", ok("Started", canary.clone())), &[401, 403, 409, 422]),
                    json!({"type": "object", "required": ["selector"], "additionalProperties": false, "properties": {"selector": selector, "analysis": analysis}}),
                ),
            }),
        ),
        (
            "/v1/rollout/promote",
            json!({"post": operation("Promote the running canary: every node gets the newest version", ("200", ok("Promoted", canary.clone())), &[401, 403, 409])}),
        ),
        (
            "/v1/rollout/abort",
            json!({"post": with_body(
                operation("Abort the running canary: its nodes go back to the stable version and what it changed is held back like a refused version", ("200", ok("Aborted", canary)), &[401, 403, 409, 422]),
                json!({"type": "object", "additionalProperties": false, "properties": {"reason": {"type": "string", "maxLength": 1000}}}),
            )}),
        ),
        (
            "/v1/status/nodes",
            json!({"get": with_parameters(
                operation("Connected Envoys: acked version and last NACK per type; the rollout and canary state", ("200", ok("Nodes", any_object.clone())), &[401, 403, 422, 503]),
                json!([{"name": "owner", "in": "query", "schema": {"type": "string"}, "description": "also: this owner's newest change version, whether it is served and how many nodes have it"}]),
            )}),
        ),
        (
            "/v1/usage",
            json!({"get": with_parameters(
                operation("Requests per route and consumer from Envoy's usage log: hourly rows, or summed over the span (by=total, busiest first)",
                    ("200", ok("Usage", json!({"type": "object", "required": ["since_ms", "until_ms", "by", "rows", "truncated"], "properties": {
                        "since_ms": {"type": "integer"}, "until_ms": {"type": "integer"}, "by": {"enum": ["hour", "total"]},
                        "truncated": {"type": "boolean", "description": "limit rows were returned; there may be more"},
                        "rows": {"type": "array", "items": {"type": "object", "required": ["route", "consumer", "requests"], "properties": {
                            "hour_ms": {"type": "integer", "description": "the hour's start (by=hour only)"},
                            "route": {"type": "string"},
                            "consumer": {"type": "string", "description": "empty for requests without an authenticated consumer"},
                            "requests": {"type": "integer"}, "unauthorized": {"type": "integer", "description": "401 answers"},
                            "forbidden": {"type": "integer", "description": "403 answers"}, "rate_limited": {"type": "integer", "description": "429 answers"},
                            "client_errors": {"type": "integer", "description": "other 4xx"}, "server_errors": {"type": "integer", "description": "5xx, and requests with no response"},
                            "bytes_in": {"type": "integer"}, "bytes_out": {"type": "integer"}}}}}}))),
                    &[401, 403, 422, 503]),
                json!([
                    {"name": "consumer", "in": "query", "schema": {"type": "string", "maxLength": 256}, "description": "only this consumer (empty: requests without one)"},
                    {"name": "route", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                    {"name": "since", "in": "query", "schema": {"type": "integer"}, "description": "Unix milliseconds (default: 24 hours before until); from the start of its hour"},
                    {"name": "until", "in": "query", "schema": {"type": "integer"}, "description": "Unix milliseconds (default: now)"},
                    {"name": "by", "in": "query", "schema": {"enum": ["hour", "total"], "default": "hour"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}}
                ]),
            )}),
        ),
        (
            "/v1/status/release",
            json!({"post": with_body(
                operation("Forget every recorded refusal so the newest version rolls out again (admin role; recorded in the history)",
                    ("200", ok("What was released, and the version recording it", json!({"type": "object", "required": ["version", "released"], "properties": {
                        "version": {"type": "integer"}, "released": {"type": "array", "items": any_object.clone()}}}))),
                    &[401, 403, 409, 422, 503]),
                json!({"type": "object", "additionalProperties": false, "properties": {"reason": {"type": "string", "maxLength": 1000}}}),
            )}),
        ),
        (
            "/v1/status/confirm",
            json!({"post": operation("Confirm this store is the one to serve: nodes held on a configuration it does not have are served it (admin role)",
                ("200", ok("How many nodes were held", json!({"type": "object", "required": ["released_nodes"], "properties": {"released_nodes": {"type": "integer"}}}))),
                &[401, 403])}),
        ),
        (
            "/v1/admin-tokens",
            json!({
                "get": operation("List admin tokens (never their secrets)", ("200", ok("Tokens", json!({"type": "array", "items": token.clone()}))), &[401, 403, 503]),
                "post": with_body(
                    operation("Create an admin token; the secret is returned once", ("201", ok("Created", token)), &[401, 403, 409, 422, 503]),
                    json!({"type": "object", "required": ["name", "role"], "additionalProperties": false, "properties": {
                        "name": {"type": "string"}, "role": {"enum": ["viewer", "editor", "admin"]},
                        "owner": {"type": "string", "description": "scoped to this owner: writes only its resources (viewer or editor)"},
                        "read": {"enum": ["all", "own"], "default": "all", "description": "with owner: what the token reads"}}}),
                ),
            }),
        ),
        (
            "/v1/xds-tokens",
            json!({
                "get": operation("List node and fleet xDS tokens (never the tokens)", ("200", ok("Tokens", json!({"type": "array", "items": node_token.clone()}))), &[401, 403, 503]),
                "post": with_body(
                    operation("Create an xDS token bound to a fleet and/or a node; the token is returned once (admin role)", ("201", ok("Created", node_token)), &[401, 403, 409, 422, 503]),
                    json!({"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                        "name": {"type": "string"},
                        "fleet": {"type": "string", "description": "only nodes whose cluster is this"},
                        "node": {"type": "string", "description": "only the node with this id"}}}),
                ),
            }),
        ),
        (
            "/v1/xds-tokens/{name}",
            json!({"delete": with_parameters(
                json!({"summary": "Revoke an xDS token: its streams are closed", "responses": {"204": {"description": "Revoked"},
                    "401": problem_responses(&[401])["401"], "403": problem_responses(&[403])["403"], "404": problem_responses(&[404])["404"]}}),
                name_parameter(),
            )}),
        ),
        (
            "/v1/admin-tokens/{name}",
            json!({"delete": with_parameters(
                json!({"summary": "Revoke an admin token", "responses": {"204": {"description": "Revoked"},
                    "401": problem_responses(&[401])["401"], "403": problem_responses(&[403])["403"], "404": problem_responses(&[404])["404"]}}),
                name_parameter(),
            )}),
        ),
    ];
    for (path, item) in entries {
        paths.insert(path.to_owned(), item);
    }
    let mut components = schemas.generator.take_definitions(true);
    components.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"}}}}
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Gatehouse admin API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "schemas": components,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"adminToken": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap_or_default();
            let pointer = target.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
        }
        assert!(doc.pointer("/components/schemas/Route").is_some());
        assert!(doc.pointer("/paths/~1v1~1config/put/requestBody").is_some());
    }

    #[test]
    fn document_schema_rejects_unknown_fields() {
        let schema = document_schema();
        assert_eq!(schema["additionalProperties"], false, "{schema}");
    }
}
