//! `netting-chaos`: runs Netting's chaos lab (see the crate docs) or re-renders a report.
//!
//! Exit status: 0 when every check passed, 1 when a check found a violation, 2 for bad options
//! or missing privileges or tools (nothing was started), 3 when the lab itself failed, 130
//! when interrupted (after cleaning up).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use netting_chaos::report;
use netting_chaos::run::{self, FaultSource, RunError, RunOptions};
use netting_chaos::schedule::{Profile, Schedule};

#[derive(Debug, Parser)]
#[command(name = "netting-chaos", version, about = "Netting's chaos lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster in network namespaces, inject faults, check the invariants, report.
    Run(RunArgs),
    /// Write summary.txt and timeline.svg again from a report.json.
    Render {
        /// The report.json of a run.
        report: PathBuf,
        /// Where to write; defaults to the report's directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The short run of the test suite: 12 faults, fixed seed (other flags still apply).
    #[arg(long)]
    short: bool,
    /// Seed of the fault schedule; the same seed gives the same schedule.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many faults.
    #[arg(long)]
    faults: Option<usize>,
    /// Stop injecting faults after this long (e.g. `90s`, `15m`, `1h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Run the faults of this JSON file instead of a generated schedule.
    #[arg(long, conflicts_with_all = ["faults", "duration"])]
    schedule: Option<PathBuf>,
    /// 3 or 5.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Sidecars running the client library.
    #[arg(long, default_value_t = 200)]
    sidecars: usize,
    /// Sidecars speaking the raw protocol, whose received versions are checked directly.
    #[arg(long, default_value_t = 20)]
    raw_sidecars: usize,
    /// Shortest and longest time a generated fault is held before it heals.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    hold_min: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2500ms")]
    hold_max: Duration,
    /// Mean pause between recovery from one fault and the next fault.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    gap: Duration,
    /// How long the cluster may take to recover after a heal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    settle_timeout: Duration,
    /// The netting-control binary; defaults to the one next to this program.
    #[arg(long)]
    control_binary: Option<PathBuf>,
    /// Where the report, logs and data go; must be empty or absent.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// `iptables-nft` or `iptables-legacy`; detected when absent.
    #[arg(long)]
    iptables: Option<String>,
    /// Also write history.json (always written when a check fails).
    #[arg(long)]
    keep_history: bool,
}

const EXIT_VIOLATION: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_LAB: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    netting_log::init("info");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("netting-chaos: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_LAB);
        }
    };
    match cli.command {
        Command::Render { report, out } => render(&report, out),
        Command::Run(args) => match options(args) {
            Ok(options) => runtime.block_on(run_until_interrupted(options)),
            Err(error) => {
                eprintln!("netting-chaos: {error}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
    }
}

fn render(report_path: &std::path::Path, out: Option<PathBuf>) -> ExitCode {
    let result = report::read_report(report_path).and_then(|report| {
        let dir = out.unwrap_or_else(|| {
            report_path
                .parent()
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
        });
        report::write_report(&dir, &report)
    });
    match result {
        Ok(files) => {
            println!("{files:?}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("netting-chaos: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Turns the flags into checked options; nothing has started yet.
fn options(args: RunArgs) -> Result<RunOptions, String> {
    let control_binary = match args.control_binary {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}; pass --control-binary"))?
            .with_file_name("netting-control"),
    };
    let seed = args.seed.unwrap_or(if args.short {
        RunOptions::short(PathBuf::new(), PathBuf::new()).seed
    } else {
        rand::random()
    });
    let report_dir = args
        .report_dir
        .unwrap_or_else(|| PathBuf::from(format!("chaos-report-{seed}")));
    let mut options = RunOptions::short(control_binary, report_dir);
    options.seed = seed;
    options.replicas = args.replicas;
    options.sidecars = args.sidecars;
    options.raw_sidecars = args.raw_sidecars;
    options.gap = args.gap;
    options.settle_timeout = args.settle_timeout;
    options.iptables = args.iptables;
    options.keep_history = args.keep_history;
    let profile = Profile {
        min_hold: args.hold_min,
        max_hold: args.hold_max,
        ..Profile::default()
    };
    options.faults = match args.schedule {
        Some(path) => {
            FaultSource::File(Schedule::from_file(&path, args.replicas).map_err(|e| e.to_string())?)
        }
        None if args.short || (args.faults.is_none() && args.duration.is_none()) => {
            FaultSource::Generated {
                faults: Some(args.faults.unwrap_or(12)),
                duration: args.duration,
                profile,
            }
        }
        None => FaultSource::Generated {
            faults: args.faults,
            duration: args.duration,
            profile,
        },
    };
    options.validate().map_err(|e| e.to_string())?;
    Ok(options)
}

/// Runs until done or until SIGINT/SIGTERM; on a signal the run is dropped, which kills the
/// replicas and removes the namespaces before the program exits.
async fn run_until_interrupted(options: RunOptions) -> ExitCode {
    let report_dir = options.report_dir.clone();
    let interrupted = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match terminate.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    };
    tokio::select! {
        result = run::run(options) => match result {
            Ok(report) => {
                print!("{}", report::summary(&report));
                println!("report: {}", report_dir.display());
                if report.passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_VIOLATION)
                }
            }
            Err(error @ (RunError::Options(_) | RunError::Preflight(_))) => {
                eprintln!("netting-chaos: {error}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
            Err(error) => {
                eprintln!("netting-chaos: {error} (replica logs under {})", report_dir.display());
                ExitCode::from(EXIT_LAB)
            }
        },
        () = interrupted => {
            eprintln!("netting-chaos: interrupted; the lab was torn down");
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}
