//! The chaos lab as the test suite runs it: the short run (a dozen faults, fixed seed) must
//! pass every check, bad options must be refused before anything starts, and an interrupted
//! run must leave nothing behind.
//!
//! Runs that need root, `ip` and `iptables` skip with the reason printed when those are
//! missing, unless `NETTING_REQUIRE_TOOLS=1` (set by CI), which turns the skip into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CHAOS: &str = env!("CARGO_BIN_EXE_netting-chaos");

/// `true` when the test may go on: the lab's own preflight (root, `ip`, `iptables`, working
/// namespaces) prints why not, or fails when `NETTING_REQUIRE_TOOLS=1` (CI).
fn lab_available(test: &str) -> bool {
    netting_chaos::lab::preflight::tools_or_skip(test).is_some()
}

/// The netting-control binary of this workspace, built now so the lab never runs a stale one.
fn control_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "-p", "netting-control", "--bin", "netting-control"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cannot run cargo to build netting-control");
    assert!(status.success(), "building netting-control failed");
    let binary = Path::new(CHAOS).with_file_name("netting-control");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

fn chaos(args: &[&str]) -> Output {
    Command::new(CHAOS)
        .args(args)
        .env("NETTING_LOG", "info")
        .output()
        .expect("cannot start netting-chaos")
}

/// `netting-chaos run ARGS --report-dir DIR`: its output, its stdout and its `report.json`.
fn run_with_report(args: &[&str], report_dir: &Path) -> (Output, String, Value) {
    let mut args = args.to_vec();
    args.extend(["--report-dir", report_dir.to_str().unwrap()]);
    let output = chaos(&args);
    let stdout = text(&output.stdout);
    let report: Value = serde_json::from_slice(
        &std::fs::read(report_dir.join("report.json"))
            .unwrap_or_else(|e| panic!("no report.json ({e})\n{stdout}")),
    )
    .unwrap();
    (output, stdout, report)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn namespaces() -> String {
    text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
}

#[test]
fn the_short_run_passes_every_check() {
    if !lab_available("the_short_run_passes_every_check") {
        return;
    }
    let binary = control_binary();
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let output = chaos(&[
        "run",
        "--short",
        "--control-binary",
        binary.to_str().unwrap(),
        "--report-dir",
        report_dir.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    let report: Value = serde_json::from_slice(
        &std::fs::read(report_dir.join("report.json"))
            .unwrap_or_else(|e| panic!("no report.json ({e})\n{stdout}\n{stderr}")),
    )
    .unwrap();
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] != Value::Bool(true))
        .collect();
    assert!(
        output.status.success() && failed.is_empty(),
        "status {:?}, failed checks {failed:#?}\n{stdout}\n{}",
        output.status,
        stderr.lines().rev().take(60).collect::<Vec<_>>().join("\n")
    );
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in [
        "no-lost-writes",
        "replicas-equal",
        "linearizable",
        "writes-applied-once",
        "requests-applied-once",
        "sidecars-never-backwards",
        "sidecars-converged",
        "one-leader-per-term",
        "no-replica-crashed",
        "recovered-after-each-heal",
    ] {
        assert!(checks.contains(&name), "check {name} missing: {checks:?}");
    }
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 12, "{stdout}");
    // Every fault was followed by acknowledged writes: the cluster failed over each time.
    for fault in faults {
        assert!(
            fault["heal_to_first_ack"].is_u64(),
            "no write acknowledged after {fault}"
        );
    }
    assert!(report["writes"]["ok"].as_u64().unwrap() > 100, "{stdout}");
    assert!(report_dir.join("summary.txt").is_file());
    let svg = std::fs::read_to_string(report_dir.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
    assert!(stdout.contains("PASSED"), "{stdout}");
}

/// Pre-vote: a follower cut off from everyone for a while does not raise its term while alone,
/// so when the network heals it rejoins under the same leader, in the same term, instead of
/// deposing it.
#[test]
fn an_isolated_follower_rejoins_without_an_election() {
    if !lab_available("an_isolated_follower_rejoins_without_an_election") {
        return;
    }
    let binary = control_binary();
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let schedule = dir.path().join("schedule.json");
    // Held for many election timeouts: without pre-vote the follower would stand several times.
    std::fs::write(
        &schedule,
        r#"{"faults": [
            {"action": "isolate", "target": {"follower": {"pick": 0}}, "hold": 1500},
            {"action": "isolate", "target": {"follower": {"pick": 1}}, "hold": 1500}
        ]}"#,
    )
    .unwrap();
    let (output, stdout, report) = run_with_report(
        &[
            "run",
            "--schedule",
            schedule.to_str().unwrap(),
            "--sidecars",
            "20",
            "--raw-sidecars",
            "4",
            "--control-binary",
            binary.to_str().unwrap(),
        ],
        &report_dir,
    );
    assert!(output.status.success(), "{stdout}");
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{stdout}");
    for fault in faults {
        // leader_after is only set when the leadership moved.
        assert!(
            fault["leader_after"].is_null(),
            "the isolated follower's return changed the leadership: {fault}\n{stdout}"
        );
    }
    let terms = report["terms"].as_array().unwrap();
    assert_eq!(
        terms.len(),
        1,
        "one leader, one term, all run long: {terms:?}\n{stdout}"
    );
}

/// Every acknowledged write takes effect once, at the index its writer was told, and the
/// registers stay linearizable, through `schedules/paused-then-isolated.json`: the leader is
/// paused, and the new leader is isolated soon after the heal. A write a follower forwarded to
/// a leader that stops answering fails at the follower, which retries it on the next leader;
/// when the first try was already in the log that leader commits, the write is applied twice,
/// which `writes-applied-once` finds (and, when another writer changed the register in
/// between, `linearizable` too).
#[test]
fn writes_survive_a_paused_then_isolated_leader_exactly_once() {
    if !lab_available("writes_survive_a_paused_then_isolated_leader_exactly_once") {
        return;
    }
    let binary = control_binary();
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let schedule =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules/paused-then-isolated.json");
    let (output, stdout, report) = run_with_report(
        &[
            "run",
            "--schedule",
            schedule.to_str().unwrap(),
            "--control-binary",
            binary.to_str().unwrap(),
        ],
        &report_dir,
    );
    let check = |name: &str| -> Value {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("check {name} missing\n{stdout}"))
            .clone()
    };
    for name in [
        "writes-applied-once",
        "requests-applied-once",
        "linearizable",
        "no-lost-writes",
    ] {
        let result = check(name);
        assert_eq!(
            result["passed"],
            Value::Bool(true),
            "{name}: {}\n{:#}",
            result["detail"],
            result["violations"]
        );
    }
    assert_eq!(report["faults"].as_array().unwrap().len(), 30, "{stdout}");
    // Exit 1 (another check failed) is left to the short run above, which holds every check:
    // under a loaded test machine a 2.8 s pause can outlast the settle bound, which says
    // nothing of exactly-once. The lab itself must not have failed (2, 3).
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{:?}\n{stdout}",
        output.status
    );
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let schedule = dir.path().join("schedule.json");
    std::fs::write(
        &schedule,
        r#"{"faults": [{"action": "kill", "target": {"replica": {"index": 7}}, "hold": 100}]}"#,
    )
    .unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--replicas", "4"], "--replicas"),
        (&["--duration", "soon"], "--duration"),
        (
            &["--schedule", schedule.to_str().unwrap()],
            "target replica 7 does not exist",
        ),
        (
            &["--control-binary", "/nonexistent/netting-control"],
            "--control-binary",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["run", "--report-dir", report_dir.to_str().unwrap()];
        args.extend_from_slice(flags);
        if !flags.contains(&"--control-binary") {
            args.extend_from_slice(&["--control-binary", "/bin/true"]);
        }
        let output = chaos(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!report_dir.exists(), "{flags:?} created the report dir");
    }
}

#[test]
fn missing_privileges_are_named() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED missing_privileges_are_named: needs root to drop to another user");
        return;
    }
    // The same run as an unprivileged user: refused before anything is created.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            CHAOS,
            "run",
            "--control-binary",
            "/bin/true",
            "--report-dir",
            "/nonexistent/netting-chaos-report",
        ])
        .output()
        .expect("setpriv (util-linux) is needed to run as another user");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not running as root"), "{stderr}");
}

#[test]
fn a_replica_that_cannot_start_is_reported_with_its_log() {
    if !lab_available("a_replica_that_cannot_start_is_reported_with_its_log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A "replica" that prints something and exits at once.
    let fake = dir.path().join("broken-control");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'refusing to start: broken on purpose' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = chaos(&[
        "run",
        "--faults",
        "1",
        "--control-binary",
        fake.to_str().unwrap(),
        "--report-dir",
        dir.path().join("report").to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("a replica did not start"), "{stderr}");
    assert!(stderr.contains("broken on purpose"), "{stderr}");
}

#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    if !lab_available("an_interrupted_run_leaves_nothing_behind") {
        return;
    }
    let binary = control_binary();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(CHAOS)
        .args([
            "run",
            "--faults",
            "50",
            "--sidecars",
            "5",
            "--raw-sidecars",
            "1",
            "--control-binary",
            binary.to_str().unwrap(),
            "--report-dir",
            dir.path().join("report").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("nch{}", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !namespaces().contains(&prefix) {
        assert!(
            Instant::now() < deadline,
            "the run never created its namespaces"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the replicas start, then interrupt.
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert!(
        !namespaces().contains(&prefix),
        "namespaces left: {}",
        namespaces()
    );
    let links = text(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(!links.contains(&prefix), "links left: {links}");
    // Replicas run with their data directories under the report directory.
    let report_dir = dir.path().to_str().unwrap();
    let processes = text(
        &Command::new("pgrep")
            .args(["-f", report_dir])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(processes.trim().is_empty(), "processes left: {processes}");
}
