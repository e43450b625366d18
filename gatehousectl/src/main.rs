//! `gatehousectl`: the Gatehouse admin API from the command line and from CI.
//!
//! Exit codes: 0 success (or no changes); 1 `diff --exit-code` found changes;
//! 2 usage error; 3 invalid input (nothing was applied); 4 the server could not
//! be reached or failed.

mod client;
mod render;

use std::{
    io::{IsTerminal, Read},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::{client::Client, render::Style};

#[derive(Debug, Parser)]
#[command(
    name = "gatehousectl",
    version,
    about = "Manage a Gatehouse gateway: declarative apply, diff, export",
    after_help = "Exit codes: 0 success or no changes; 1 changes found (diff --exit-code); \
                  2 usage error; 3 invalid input, nothing applied; 4 server unreachable or failing."
)]
struct Cli {
    /// Admin API of the control plane.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_SERVER",
        default_value = "http://127.0.0.1:8001"
    )]
    server: String,

    /// Admin token (`Authorization: Bearer`); its name is recorded in the history.
    #[arg(long, global = true, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Who is making changes, recorded in the version history (without a token).
    #[arg(long, global = true, env = "GATEHOUSE_ACTOR")]
    actor: Option<String>,

    /// `human` (coloured on a terminal) or `json` for machines.
    #[arg(
        long,
        short,
        global = true,
        env = "GATEHOUSE_OUTPUT",
        value_enum,
        default_value = "human"
    )]
    output: Output,

    /// How messages on stderr (errors) are written: `text`, or `json` (one
    /// object a line, for log collectors), as every Gatehouse binary takes.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// An error on stderr, in the chosen format.
fn report_error(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({"level": "ERROR", "target": "gatehousectl", "message": message})
        ),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what applying a document would change.
    Diff {
        #[command(flatten)]
        document: DocumentArgs,
        /// Exit with 1 when there are changes (for CI).
        #[arg(long)]
        exit_code: bool,
    },
    /// Apply a document atomically: all of it, as one new version, or nothing.
    Apply {
        #[command(flatten)]
        document: DocumentArgs,
        /// Validate and show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if the configuration is still at this version (the one
        /// the diff was made against); otherwise fail with exit code 3.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// The version history, newest first: who, when, and what changed.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Restore an earlier version's configuration, as a new version.
    Rollback {
        #[arg(long)]
        to: u64,
    },
    /// Print the whole configuration as a document `apply` takes.
    Export,
    /// Print resources of one kind (services, routes, consumers, jwt-issuers,
    /// introspection-providers, plans, rate-limit-policies, certificates,
    /// gateways, topics), or one by name.
    Get { kind: String, name: Option<String> },
    /// Connected Envoys and the config versions they acknowledged.
    Status,
    /// Requests per route and consumer (with 401/403, 429, errors and
    /// bytes), summed over the span or hour by hour.
    Usage {
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        route: Option<String>,
        /// How far back: a number with s, m, h or d (e.g. 90m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_span)]
        since: u64,
        /// One row per hour instead of one per route and consumer.
        #[arg(long)]
        hourly: bool,
    },
    /// Release a version held back because a node refused it, after
    /// investigating (`status` shows why): the newest version rolls out
    /// again. Needs an admin token; recorded in the history.
    Release {
        /// Why, kept in the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Confirm this control plane's store is the one to serve: nodes held
    /// because they hold a configuration it does not have (`status` shows
    /// them) are served it. Needs an admin token.
    Confirm,
    /// Admin API tokens (needs an admin token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// A consumer's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key; the key is printed once.
    Create {
        consumer: String,
        /// A scope the key grants (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_seconds: Option<u64>,
    },
    /// List a consumer's keys (ids, prefixes, scopes, status; never the keys).
    List { consumer: String },
    /// Revoke a key at once.
    Revoke { consumer: String, id: String },
    /// Replace a key: the old one keeps working for the grace period.
    Rotate {
        consumer: String,
        id: String,
        #[arg(long)]
        grace_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// viewer (reads), editor (reads and writes) or admin (also tokens).
        #[arg(long, value_parser = ["viewer", "editor", "admin"])]
        role: String,
    },
    /// List tokens (names, roles, prefixes; never secrets).
    List,
    /// Revoke a token at once.
    Revoke { name: String },
}

#[derive(Debug, clap::Args)]
struct DocumentArgs {
    /// YAML or JSON document; `-` reads standard input.
    #[arg(long, short)]
    file: PathBuf,
    /// Delete resources the document does not list.
    #[arg(long)]
    prune: bool,
}

/// Why a command did not succeed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Server(String),
    /// `diff --exit-code` found changes (not an error message).
    #[error("changes found")]
    Changes,
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Changes => 1,
            Failure::Invalid(_) => 3,
            Failure::Server(_) => 4,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report_error(log_format, &format!("cannot start: {e}"));
            return ExitCode::from(4);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err((out, failure)) => {
            print!("{out}");
            if !matches!(failure, Failure::Changes) {
                report_error(log_format, &failure.to_string());
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Runs a command; the output is printed even when the command fails.
/// `--since`: a span like `90m`, `24h` or `7d`, in milliseconds.
fn parse_span(span: &str) -> Result<u64, String> {
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

async fn run(cli: Cli) -> Result<String, (String, Failure)> {
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
        Command::History { limit } => {
            let versions = client
                .get(&format!("/v1/config/versions?limit={limit}"))
                .await
                .map_err(no_output)?;
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
        Command::Export => {
            let document = client.get("/v1/config").await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&document),
                Output::Human => render::yaml(&document),
            })
        }
        Command::Get { kind, name } => {
            let kind = match kind.as_str() {
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
                other => {
                    return Err(no_output(Failure::Invalid(format!(
                        "unknown kind {other:?} (services, routes, consumers, jwt-issuers, introspection-providers, plans, rate-limit-policies, certificates, gateways, topics)"
                    ))));
                }
            };
            let path = match &name {
                Some(name) => format!("/v1/{kind}/{name}"),
                None => format!("/v1/{kind}"),
            };
            let value = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&value),
                Output::Human => render::yaml(&value),
            })
        }
        Command::Tokens(TokensCommand::Create { name, role }) => {
            let created = client
                .post(
                    "/v1/admin-tokens",
                    &serde_json::json!({ "name": name, "role": role }),
                )
                .await
                .map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&created),
                Output::Human => format!(
                    "created {role} token {name:?}; store it now, it is not shown again:\n{}\n",
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
            let mut url = reqwest::Url::parse("http://gatehouse/v1/usage")
                .map_err(|e| (String::new(), Failure::Invalid(e.to_string())))?;
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("since", &now.saturating_sub(since).to_string());
                query.append_pair("by", if hourly { "hour" } else { "total" });
                if let Some(consumer) = &consumer {
                    query.append_pair("consumer", consumer);
                }
                if let Some(route) = &route {
                    query.append_pair("route", route);
                }
            }
            let path = format!("/v1/usage?{}", url.query().unwrap_or_default());
            let usage = client.get(&path).await.map_err(no_output)?;
            Ok(match cli.output {
                Output::Json => json(&usage),
                Output::Human => render::usage(&usage),
            })
        }
        Command::Status => {
            let status = client.get("/v1/status/nodes").await.map_err(no_output)?;
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

async fn apply(
    client: &Client,
    args: &DocumentArgs,
    dry_run: bool,
    if_version: Option<u64>,
) -> Result<Value, Failure> {
    let document = read_document(&args.file)?;
    let mut path = format!("/v1/config?dry_run={dry_run}&prune={}", args.prune);
    if let Some(version) = if_version {
        path += &format!("&if_version={version}");
    }
    client.put(&path, &document).await
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
