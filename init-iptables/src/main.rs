//! `netting-init`: see the library documentation for the rules it writes.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use netting_init::{Args, Invocation, SystemXtables, run};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap exits with status 2 on a malformed command line.
    let args = Args::parse();
    init_tracing();
    let invocation = match Invocation::from_args(&args) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("netting-init: error: {e}");
            return ExitCode::from(2);
        }
    };
    let xtables = SystemXtables::new(invocation.iptables_dir.clone());
    match run(&invocation, &xtables, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netting-init: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr (stdout carries the dry-run output): level from `NETTING_LOG` or
/// `RUST_LOG` (default `info`), JSON when `NETTING_LOG_FORMAT=json`.
fn init_tracing() {
    let filter = std::env::var("NETTING_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = std::env::var("NETTING_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
