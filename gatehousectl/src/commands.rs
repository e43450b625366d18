//! What each command does against the admin API, and how its answer is shown.

use std::{
    io::{IsTerminal, Read},
    path::PathBuf,
};

use serde_json::Value;

use crate::{
    Failure,
    cli::{
        Cli, Command, DocumentArgs, KeysCommand, Output, RolloutCommand, TokensCommand,
        XdsTokensCommand,
    },
    client::Client,
    render::{self, Style},
};

/// Runs a command; the output is printed even when the command fails.
/// `--since`: a span like `90m`, `24h` or `7d`, in milliseconds.
pub fn parse_span(span: &str) -> Result<u64, String> {
    let unit = span.chars().last().unwrap_or('?');
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return Err("ends with s, m, h or d (e.g. 24h)".into()),
    };
    span[..span.len() - 1]
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(ms))
        .ok_or_else(|| "a positive number, then s, m, h or d (e.g. 24h)".into())
}

pub async fn run(cli: Cli) -> Result<String, (String, Failure)> {
    let no_output = |f| (String::new(), f);
    let client =
        Client::new(&cli.server, cli.actor.clone(), cli.token.clone()).map_err(no_output)?;
    let style = Style {
        color: cli.output == Output::Human
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
    };
    let json = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    match cli.command {
        Command::Diff {
            document,
            exit_code,
        } => {
            let applied = apply(&client, &document, true, None)
                .await
                .map_err(no_output)?;
            let changes = applied["changes"].as_array().cloned().unwrap_or_default();
            let out = match cli.output {
                Output::Json => json(&applied),
                Output::Human if changes.is_empty() => "no changes\n".into(),
                Output::Human => render::diff(&changes, &style),
            };
            if exit_code && !changes.is_empty() {
                return Err((out, Failure::Changes));
            }
            Ok(out)
        }
        Command::Apply {
            document,
            dry_run,
            if_version,
        } => {
            let applied = apply(&client, &document, dry_run, if_version)
                .await
                .map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&applied),
                Output::Human => {
                    let verb = if dry_run { "would apply" } else { "applied" };
                    render::applied(&applied, verb, &style)
                }
            })
        }
        Command::History { limit, owner } => {
            let limit = limit.to_string();
            let path = with_query(
                "/v1/config/versions",
                &[("limit", Some(&limit)), ("owner", owner.as_ref())],
            );
            let versions = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&versions),
                Output::Human => render::history(versions.as_array().map_or(&[], Vec::as_slice)),
            })
        }
        Command::Rollback { to } => {
            let applied = client
                .post("/v1/config/rollback", &serde_json::json!({ "to": to }))
                .await
                .map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&applied),
                Output::Human => {
                    render::applied(&applied, &format!("rolled back to version {to}:"), &style)
                }
            })
        }
        Command::Export { owner } => {
            let path = with_query("/v1/config", &[("owner", owner.as_ref())]);
            let document = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&document),
                Output::Human => render::yaml(&document),
            })
        }
        Command::Get {
            kind,
            name,
            owner,
            label,
        } => {
            let kind = match kind.as_str() {
                "owner" | "owners" | "teams" => "owners",
                "service" | "services" | "svc" => "services",
                "route" | "routes" => "routes",
                "consumer" | "consumers" => "consumers",
                "jwt-issuer" | "jwt-issuers" | "issuers" => "jwt-issuers",
                "introspection-provider" | "introspection-providers" => "introspection-providers",
                "plan" | "plans" => "plans",
                "rate-limit-policy" | "rate-limit-policies" | "policies" => "rate-limit-policies",
                "certificate" | "certificates" | "certs" => "certificates",
                "gateway" | "gateways" => "gateways",
                "topic" | "topics" => "topics",
                "grpc-api" | "grpc-apis" => "grpc-apis",
                other => {
                    return Err(no_output(Failure::Invalid(format!(
                        "unknown kind {other:?} (owners, services, routes, consumers, jwt-issuers, introspection-providers, plans, rate-limit-policies, certificates, gateways, topics, grpc-apis)"
                    ))));
                }
            };
            let path = match &name {
                Some(name) => format!("/v1/{kind}/{name}"),
                None => with_query(
                    &format!("/v1/{kind}"),
                    &[("owner", owner.as_ref()), ("label", label.as_ref())],
                ),
            };
            let value = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&value),
                Output::Human => render::yaml(&value),
            })
        }
        Command::Tokens(TokensCommand::Create {
            name,
            role,
            owner,
            read,
        }) => {
            let mut body = serde_json::json!({ "name": name, "role": role });
            if let Some(owner) = &owner {
                body["owner"] = owner.as_str().into();
            }
            if let Some(read) = &read {
                body["read"] = read.as_str().into();
            }
            let created = client
                .post("/v1/admin-tokens", &body)
                .await
                .map_err(no_output)?;
            let scoped = owner.map_or(String::new(), |o| format!(" for owner {o}"));
            Ok(match cli.output {
                Output::Json => json(&created),
                Output::Human => format!(
                    "created {role} token {name:?}{scoped}; store it now, it is not shown again:\n{}\n",
                    created["token"].as_str().unwrap_or_default()
                ),
            })
        }
        Command::Tokens(TokensCommand::List) => {
            let tokens = client.get("/v1/admin-tokens").await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&tokens),
                Output::Human => render::yaml(&tokens),
            })
        }
        Command::Tokens(TokensCommand::Revoke { name }) => {
            client
                .delete(&format!("/v1/admin-tokens/{name}"))
                .await
                .map_err(no_output)?;
            Ok(format!("revoked token {name:?}\n"))
        }
        Command::Keys(command) => keys(&client, command, cli.output).await,
        Command::XdsTokens(command) => xds_tokens(&client, command, cli.output).await,
        Command::Rollout(command) => rollout(&client, command, cli.output).await,
        Command::Release { reason } => {
            let released = client
                .post(
                    "/v1/status/release",
                    &serde_json::json!({ "reason": reason }),
                )
                .await
                .map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&released),
                Output::Human => render::released(&released),
            })
        }
        Command::Confirm => {
            let confirmed = client
                .post("/v1/status/confirm", &serde_json::json!({}))
                .await
                .map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&confirmed),
                Output::Human => format!(
                    "confirmed: {} held node(s) are served this store's configuration\n",
                    confirmed["released_nodes"].as_u64().unwrap_or_default()
                ),
            })
        }
        Command::Usage {
            consumer,
            route,
            since,
            hourly,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let since = now.saturating_sub(since).to_string();
            let by = if hourly { "hour" } else { "total" }.to_owned();
            let path = with_query(
                "/v1/usage",
                &[
                    ("since", Some(&since)),
                    ("by", Some(&by)),
                    ("consumer", consumer.as_ref()),
                    ("route", route.as_ref()),
                ],
            );
            let usage = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&usage),
                Output::Human => render::usage(&usage),
            })
        }
        Command::Status { owner } => {
            let path = with_query("/v1/status/nodes", &[("owner", owner.as_ref())]);
            let status = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&status),
                Output::Human => render::status(&status),
            })
        }
    }
}

async fn keys(
    client: &Client,
    command: KeysCommand,
    output: Output,
) -> Result<String, (String, Failure)> {
    let no_output = |f| (String::new(), f);
    let json = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    let created = |key: &Value, what: &str| match output {
        Output::Json => json(key),
        Output::Human => format!(
            "{what} key {} for {}; store it now, it is not shown again:\n{}\n",
            key["id"].as_str().unwrap_or_default(),
            key["consumer"].as_str().unwrap_or_default(),
            key["key"].as_str().unwrap_or_default()
        ),
    };
    match command {
        KeysCommand::Create {
            consumer,
            scopes,
            ttl_seconds,
        } => {
            let mut body = serde_json::json!({ "scopes": scopes });
            if let Some(ttl) = ttl_seconds {
                body["ttl_seconds"] = ttl.into();
            }
            let key = client
                .post(&format!("/v1/consumers/{consumer}/keys"), &body)
                .await
                .map_err(no_output)?;
            Ok(created(&key, "created"))
        }
        KeysCommand::List { consumer } => {
            let keys = client
                .get(&format!("/v1/consumers/{consumer}/keys"))
                .await
                .map_err(no_output)?;
            Ok(match output {
                Output::Json => json(&keys),
                Output::Human => render::yaml(&keys),
            })
        }
        KeysCommand::Revoke { consumer, id } => {
            client
                .post(
                    &format!("/v1/consumers/{consumer}/keys/{id}/revoke"),
                    &serde_json::json!({}),
                )
                .await
                .map_err(no_output)?;
            Ok(format!("revoked key {id} of {consumer}\n"))
        }
        KeysCommand::Rotate {
            consumer,
            id,
            grace_seconds,
        } => {
            let key = client
                .post(
                    &format!("/v1/consumers/{consumer}/keys/{id}/rotate"),
                    &serde_json::json!({ "grace_seconds": grace_seconds }),
                )
                .await
                .map_err(no_output)?;
            Ok(created(
                &key,
                &format!("rotated {id} ({grace_seconds} s grace) into"),
            ))
        }
    }
}

async fn rollout(
    client: &Client,
    command: RolloutCommand,
    output: Output,
) -> Result<String, (String, Failure)> {
    let no_output = |f| (String::new(), f);
    let (answer, done) = match command {
        RolloutCommand::Start {
            clusters,
            nodes,
            zones,
            percent,
        } => {
            let selector = serde_json::json!({"clusters": clusters, "nodes": nodes,
                "zones": zones, "percent": percent});
            let body = serde_json::json!({ "selector": selector });
            (client.post("/v1/rollout", &body).await, "canary started")
        }
        RolloutCommand::Promote => (
            client
                .post("/v1/rollout/promote", &serde_json::json!({}))
                .await,
            "canary promoted",
        ),
        RolloutCommand::Abort { reason } => (
            client
                .post(
                    "/v1/rollout/abort",
                    &serde_json::json!({ "reason": reason }),
                )
                .await,
            "canary aborted",
        ),
        RolloutCommand::Status => (client.get("/v1/rollout").await, ""),
    };
    let answer = answer.map_err(no_output)?;
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n",
        Output::Human if done.is_empty() => render::yaml(&answer),
        Output::Human => format!("{done}:\n{}", render::yaml(&answer)),
    })
}

async fn apply(
    client: &Client,
    args: &DocumentArgs,
    dry_run: bool,
    if_version: Option<u64>,
) -> Result<Value, Failure> {
    let document = read_document(&args.file)?;
    let (dry_run, prune) = (dry_run.to_string(), args.prune.to_string());
    let if_version = if_version.map(|v| v.to_string());
    let path = with_query(
        "/v1/config",
        &[
            ("dry_run", Some(&dry_run)),
            ("prune", Some(&prune)),
            ("if_version", if_version.as_ref()),
            ("owner", args.owner.as_ref()),
        ],
    );
    client.put(&path, &document).await
}

/// `path` with the given query parameters (absent ones left out), encoded.
fn with_query(path: &str, pairs: &[(&str, Option<&String>)]) -> String {
    let mut encoded = reqwest::Url::parse("http://gatehouse/").map_or(String::new(), |mut url| {
        url.query_pairs_mut()
            .extend_pairs(pairs.iter().filter_map(|(k, v)| Some((*k, (*v)?))));
        url.query().unwrap_or_default().to_owned()
    });
    if !encoded.is_empty() {
        encoded.insert(0, '?');
    }
    format!("{path}{encoded}")
}

/// Reads a YAML or JSON document into a generic value; the server validates
/// it and names any bad field by its path in the document.
fn read_document(path: &PathBuf) -> Result<Value, Failure> {
    let shown = path.display();
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| Failure::Invalid(format!("cannot read {shown}: {e}")))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let value: Value = if is_json {
        serde_json::from_str(&text)
            .map_err(|e| Failure::Invalid(format!("{shown}: invalid JSON: {e}")))?
    } else {
        serde_saphyr::from_str(&text)
            .map_err(|e| Failure::Invalid(format!("{shown}: invalid YAML: {e}")))?
    };
    if !value.is_object() {
        return Err(Failure::Invalid(format!(
            "{shown}: the document must be a mapping with `services` and `routes`"
        )));
    }
    Ok(value)
}

async fn xds_tokens(
    client: &Client,
    command: XdsTokensCommand,
    output: Output,
) -> Result<String, (String, Failure)> {
    let no_output = |f| (String::new(), f);
    let json = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    match command {
        XdsTokensCommand::Create { name, fleet, node } => {
            let mut body = serde_json::json!({ "name": name });
            if let Some(fleet) = &fleet {
                body["fleet"] = fleet.as_str().into();
            }
            if let Some(node) = &node {
                body["node"] = node.as_str().into();
            }
            let created = client
                .post("/v1/xds-tokens", &body)
                .await
                .map_err(no_output)?;
            Ok(match output {
                Output::Json => json(&created),
                Output::Human => format!(
                    "created xDS token {name:?}; put it in the Envoy bootstrap now, it is not shown again:\n{}\n",
                    created["token"].as_str().unwrap_or_default()
                ),
            })
        }
        XdsTokensCommand::List => {
            let tokens = client.get("/v1/xds-tokens").await.map_err(no_output)?;
            Ok(match output {
                Output::Json => json(&tokens),
                Output::Human => render::yaml(&tokens),
            })
        }
        XdsTokensCommand::Revoke { name } => {
            client
                .delete(&format!("/v1/xds-tokens/{name}"))
                .await
                .map_err(no_output)?;
            Ok(format!(
                "revoked xDS token {name:?}; its streams are closed\n"
            ))
        }
    }
}
