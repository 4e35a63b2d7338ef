//! `nettingctl`: the operator's command-line client for a Netting control plane.
//! Everything but parsing and reporting lives in `netting_control::ctl`.

use std::process::ExitCode;

use clap::Parser;
use netting_control::ctl::{self, Cli, ProcessEnv};

// One command at a time: a single-threaded runtime is all the concurrency `status` needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    netting_control::telemetry::init_cli_tracing();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    match ctl::run(cli, &ProcessEnv, &mut stdout, &mut stderr).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`); there is nobody to tell.
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
