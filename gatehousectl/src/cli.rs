//! The command line: global flags and every subcommand (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::parse_span;

#[derive(Debug, Parser)]
#[command(
    name = "gatehousectl",
    version,
    about = "Manage a Gatehouse gateway: declarative apply, diff, export",
    after_help = "Exit codes: 0 success or no changes; 1 changes found (diff --exit-code); \
                  2 usage error; 3 invalid input, nothing applied; 4 server unreachable or failing."
)]
pub struct Cli {
    /// Admin API of the control plane.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_SERVER",
        default_value = "http://127.0.0.1:8001"
    )]
    pub server: String,

    /// Admin token (`Authorization: Bearer`); its name is recorded in the history.
    #[arg(long, global = true, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Who is making changes, recorded in the version history (without a token).
    #[arg(long, global = true, env = "GATEHOUSE_ACTOR")]
    pub actor: Option<String>,

    /// `human` (coloured on a terminal) or `json` for machines.
    #[arg(
        long,
        short,
        global = true,
        env = "GATEHOUSE_OUTPUT",
        value_enum,
        default_value = "human"
    )]
    pub output: Output,

    /// How messages on stderr (errors) are written: `text`, or `json` (one
    /// object a line, for log collectors), as every Gatehouse binary takes.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// Only versions that changed this owner's resources.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Restore an earlier version's configuration, as a new version.
    Rollback {
        #[arg(long)]
        to: u64,
    },
    /// Print the whole configuration as a document `apply` takes; with
    /// `--owner`, that owner's document (`owner` at the top).
    Export {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Print resources of one kind (owners, services, routes, consumers,
    /// jwt-issuers, introspection-providers, plans, rate-limit-policies,
    /// certificates, gateways, topics, grpc-apis), or one by name.
    Get {
        kind: String,
        name: Option<String>,
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Only those with this label (`key=value`).
        #[arg(long)]
        label: Option<String>,
    },
    /// Connected Envoys and the config versions they acknowledged; with
    /// `--owner`, whether that owner's newest change reached them.
    Status {
        #[arg(long)]
        owner: Option<String>,
    },
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
    /// Canary rollouts: new versions go to part of the fleet first.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Admin API tokens (needs an admin token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// A consumer's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// xDS tokens bound to a fleet or a node (needs an admin token).
    #[command(subcommand, name = "xds-tokens")]
    XdsTokens(XdsTokensCommand),
}

#[derive(Debug, Subcommand)]
pub enum XdsTokensCommand {
    /// Create a token for the Envoys of a fleet (their node cluster) and/or
    /// one node; it is printed once.
    Create {
        name: String,
        #[arg(long, required_unless_present = "node")]
        fleet: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
    /// List tokens (names, bindings, prefixes; never the tokens).
    List,
    /// Revoke a token: the streams using it are closed.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
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
pub enum RolloutCommand {
    /// Start a canary: nodes matching any condition get every new version;
    /// the rest stay on the version served now.
    Start {
        /// Envoy node cluster (repeat for several).
        #[arg(long = "cluster")]
        clusters: Vec<String>,
        /// Envoy node id (repeat for several).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Zone of the node's locality (repeat for several).
        #[arg(long = "zone")]
        zones: Vec<String>,
        /// A share of the nodes (1-99), chosen by a stable hash of their id.
        #[arg(long)]
        percent: Option<u8>,
    },
    /// Every node gets the newest version.
    Promote,
    /// The canary nodes go back; what the canary changed is held back
    /// (`release` lets it out again).
    Abort {
        #[arg(long)]
        reason: Option<String>,
    },
    /// The current or last canary and the nodes in it.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// viewer (reads), editor (reads and writes) or admin (also tokens).
        #[arg(long, value_parser = ["viewer", "editor", "admin"])]
        role: String,
        /// Scope the token to one owner: it writes only that owner's
        /// resources (viewer or editor).
        #[arg(long)]
        owner: Option<String>,
        /// What a scoped token reads: all (default) or own (its owner's and
        /// shared resources).
        #[arg(long, value_parser = ["all", "own"], requires = "owner")]
        read: Option<String>,
    },
    /// List tokens (names, roles, prefixes; never secrets).
    List,
    /// Revoke a token at once.
    Revoke { name: String },
}

#[derive(Debug, clap::Args)]
pub struct DocumentArgs {
    /// YAML or JSON document; `-` reads standard input.
    #[arg(long, short)]
    pub file: PathBuf,
    /// Delete resources the document does not list (with an owner: only
    /// that owner's).
    #[arg(long)]
    pub prune: bool,
    /// The owner the document belongs to (as its top-level `owner`): only
    /// that owner's resources are seen, changed and pruned.
    #[arg(long)]
    pub owner: Option<String>,
}
