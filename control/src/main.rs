//! `netting-control`: one control-plane replica (`run`), or a local 3-replica cluster (`dev`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netting_control::config::{ReplicaConfig, RunArgs};
use netting_control::{dev, node, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "netting-control",
    version,
    about = "Netting control-plane replica"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one replica.
    Run(Box<RunArgs>),
    /// Run a 3-replica cluster on this machine, as three child processes.
    Dev(dev::DevArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_tracing();
    let result = match cli.command {
        Command::Run(args) => match ReplicaConfig::try_from(*args) {
            Ok(config) => run_in_system(node::run(config)),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
        Command::Dev(args) => run_in_system(dev::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `fut` inside an actix System backed by tokio's multi-thread runtime: actors live on
/// the System's arbiter, while gRPC, hyper and Raft run on the worker threads.
fn run_in_system(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("netting-worker")
            .build()
            .unwrap_or_else(|err| {
                // Without a runtime there is nothing to run; this only fails when the OS
                // refuses threads or file descriptors.
                eprintln!("error: cannot start the tokio runtime: {err}");
                std::process::exit(1)
            })
    });
    system.block_on(fut)
}
