//! `nettingctl`, the operator's command-line client for a Netting control plane.
//!
//! - [`args`] holds the command line (clap) and the checks that refuse bad input before sending;
//! - [`target`] normalises replica addresses and picks them from the flag, env or default;
//! - [`client`] makes one bounded attempt per replica and fails over across the list;
//! - [`commands`] implements `status`, `catalog ...`, `members ...`, `sessions` and `config`;
//! - [`output`] renders tables and JSON;
//! - [`error`] defines failures and their exit codes.
//!
//! The binary only parses, calls [`run`] and prints the error; everything else is here so that
//! tests can drive whole commands against a fake replica and read what they print.

pub mod args;
pub mod call_error;
pub mod client;
pub mod commands;
pub mod error;
pub mod output;
pub mod target;

#[cfg(test)]
mod grpc_tests;

use std::io::Write;

pub use args::Cli;
pub use error::CtlError;

use args::Command;
use client::Client;

/// Where `run` reads environment variables, so tests never set the process environment.
pub trait Environment {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        // A value that is not UTF-8 is passed on lossily so that it fails address parsing
        // loudly instead of silently falling back to the default address.
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

/// Runs one parsed command, writing its result to `out` and what the operator should know
/// about how it went (a write retried on another replica) to `notes`, one line each, whether
/// the command succeeded or not.
pub async fn run<W: Write, N: Write>(
    cli: Cli,
    env: &dyn Environment,
    out: &mut W,
    notes: &mut N,
) -> Result<(), CtlError> {
    let targets = target::resolve(&cli.global.addr, env.var(target::ADDR_ENV).as_deref())?;
    let client = Client::new(targets, cli.global.timeout);
    let result = run_command(&client, cli, out).await;
    for note in client.take_notes() {
        // Best effort: a closed stderr must not turn a done write into a failure.
        let _ = writeln!(notes, "note: {note}");
    }
    result
}

async fn run_command<W: Write>(client: &Client, cli: Cli, out: &mut W) -> Result<(), CtlError> {
    let format = cli.global.output;
    match cli.command {
        Command::Status => commands::status::run(client, format, out).await,
        Command::Catalog(command) => commands::catalog::run(client, command, format, out).await,
        Command::Members(command) => commands::members::run(client, command, format, out).await,
        Command::Sessions(args) => commands::sessions::run(client, &args, format, out).await,
        Command::Config(args) => commands::config::run(client, &args, format, out).await,
    }
}
