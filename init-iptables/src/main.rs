//! `netting-init`: see the library documentation for the rules it writes.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use netting_init::{Args, Invocation, SystemXtables, run};

fn main() -> ExitCode {
    // clap exits with status 2 on a malformed command line.
    let args = Args::parse();
    // Logs go to stderr: stdout carries the dry-run output.
    netting_log::init("info");
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
