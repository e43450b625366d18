//! `gatehousectl`: the Gatehouse admin API from the command line and from CI.
//!
//! Exit codes: 0 success (or no changes); 1 `diff --exit-code` found changes;
//! 2 usage error; 3 invalid input (nothing was applied); 4 the server could not
//! be reached or failed.

mod cli;
mod client;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, LogFormat};

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
    match runtime.block_on(commands::run(cli)) {
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
