//! `netting-control dev` as an operator runs it: three replicas on fixed local ports, usable
//! with nettingctl, stopped cleanly by SIGTERM, and started again on the same directory with
//! the catalog kept; `--clean` never deletes a directory a dev run did not create.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use serde_json::Value;
use support::*;

/// Two disjoint blocks of three free ports: gRPC and admin bases.
fn dev_ports() -> (u16, u16) {
    loop {
        let grpc = free_port_block(3);
        let admin = free_port_block(3);
        if grpc.abs_diff(admin) >= 3 {
            return (grpc, admin);
        }
    }
}

/// A running `netting-control dev`, stopped (and, failing that, killed with its replicas)
/// when dropped, so a failed test leaves no process behind.
struct DevRun {
    child: Option<Child>,
    dir: PathBuf,
    output: PathBuf,
}

impl DevRun {
    fn start(dir: &Path, output: PathBuf, grpc_base: u16, admin_base: u16) -> DevRun {
        Self::start_with(dir, output, grpc_base, admin_base, &[])
    }

    fn start_with(
        dir: &Path,
        output: PathBuf,
        grpc_base: u16,
        admin_base: u16,
        extra: &[&str],
    ) -> DevRun {
        let out = File::create(&output).unwrap();
        let child = Command::new(BIN)
            .arg("dev")
            .arg("--dir")
            .arg(dir)
            .args(["--grpc-base-port", &grpc_base.to_string()])
            .args(["--admin-base-port", &admin_base.to_string()])
            .args(extra)
            .env("NETTING_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        DevRun {
            child: Some(child),
            dir: dir.to_owned(),
            output,
        }
    }

    fn output_text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    fn cluster_file(&self) -> Option<Value> {
        let bytes = std::fs::read(self.dir.join("cluster.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Fails the test (with the dev run's output) if the dev process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "netting-control dev exited early ({status}):\n{}",
                self.output_text()
            );
        }
    }

    /// Waits until `cluster.json` says the cluster runs and lists three replicas with pids;
    /// returns those pids and the replicas' gRPC and admin addresses.
    async fn wait_running(&mut self) -> Replicas {
        let found = wait_until(PATIENCE, || {
            self.assert_running();
            let file = self.cluster_file();
            async move {
                let file = file?;
                if file["state"] != "running" {
                    return None;
                }
                let replicas = file["replicas"].as_array()?;
                let listed: Option<Vec<(u32, String, String)>> = replicas
                    .iter()
                    .map(|r| {
                        Some((
                            u32::try_from(r["pid"].as_u64()?).ok()?,
                            r["grpc_address"].as_str()?.to_owned(),
                            r["admin_address"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                listed.filter(|l| l.len() == 3)
            }
        })
        .await;
        let listed = found.unwrap_or_else(|| {
            panic!(
                "cluster.json never listed 3 running replicas with pids: {:?}\n{}",
                self.cluster_file(),
                self.output_text()
            )
        });
        Replicas {
            pids: listed.iter().map(|(pid, _, _)| *pid).collect(),
            grpc: listed.iter().map(|(_, grpc, _)| grpc.clone()).collect(),
            admin: listed.iter().map(|(_, _, admin)| admin.clone()).collect(),
        }
    }

    /// SIGTERM, then waits up to 30 s for the dev process to exit by itself.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("dev run already stopped");
        sigterm(child.id());
        wait_exit(&mut child, EXIT_PATIENCE)
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        sigterm(child.id());
        let deadline = std::time::Instant::now() + EXIT_PATIENCE;
        while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Replicas orphaned by a dev process that had to be killed.
        let pids = self
            .cluster_file()
            .and_then(|f| f["replicas"].as_array().cloned())
            .unwrap_or_default();
        for pid in pids.iter().filter_map(|r| r["pid"].as_u64()) {
            let pid = u32::try_from(pid).unwrap();
            if pid_alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

struct Replicas {
    pids: Vec<u32>,
    grpc: Vec<String>,
    admin: Vec<String>,
}

impl Replicas {
    fn addr_flag(&self) -> String {
        self.grpc.join(",")
    }

    async fn wait_ready(&self, run: &DevRun) {
        for admin in &self.admin {
            let ready = wait_until(PATIENCE, || async {
                let answer = http_get(admin, "/readyz").await?;
                is_http_ok(&answer).then_some(())
            })
            .await;
            assert!(
                ready.is_some(),
                "{admin}/readyz never answered 200\n{}",
                run.output_text()
            );
        }
    }
}

/// Runs nettingctl to completion.
fn nettingctl(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(CTL);
    cmd.args(args);
    output_within(cmd, EXIT_PATIENCE)
}

/// The endpoints (`address:port`) of `default/web` in `nettingctl catalog list --output json`,
/// once the replica asked lists it.
async fn wait_web_listed(replicas: &Replicas) -> Vec<String> {
    wait_web_listed_at(&replicas.addr_flag()).await
}

/// Like [`wait_web_listed`], asking the replicas at `addr` only (reads are served from the
/// replica's own applied catalog).
async fn wait_web_listed_at(addr: &str) -> Vec<String> {
    let mut last = String::new();
    let found = wait_until(PATIENCE, || {
        let output = nettingctl(&["--addr", addr, "catalog", "list", "--output", "json"]);
        last = format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        async move {
            if !output.status.success() {
                return None;
            }
            let list: Value = serde_json::from_slice(&output.stdout).unwrap();
            let web = list["services"]
                .as_array()?
                .iter()
                .find(|s| s["namespace"] == "default" && s["name"] == "web")?
                .clone();
            let endpoints = web["endpoints"]
                .as_array()?
                .iter()
                .map(|e| format!("{}:{}", e["address"].as_str().unwrap_or("?"), e["port"]))
                .collect();
            Some(endpoints)
        }
    })
    .await;
    found.unwrap_or_else(|| panic!("default/web never listed; last answer:\n{last}"))
}

fn assert_all_gone(pids: &[u32]) {
    let alive: Vec<u32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "replicas still running: {alive:?}");
}

/// A dev cluster starts 3 replicas that become ready and serve nettingctl; SIGTERM stops it
/// with exit 0 and no replica left running; the same command on the same directory starts it
/// again with the catalog kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_serves_stops_cleanly_and_keeps_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (grpc_base, admin_base) = dev_ports();

    let mut run = DevRun::start(&dir, tmp.path().join("dev-1.out"), grpc_base, admin_base);
    let replicas = run.wait_running().await;
    replicas.wait_ready(&run).await;

    register_web(&replicas.addr_flag());
    assert_eq!(wait_web_listed(&replicas).await, vec!["10.0.0.1:8080"]);

    let status = run.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "dev must exit 0 on SIGTERM\n{}",
        run.output_text()
    );
    assert_all_gone(&replicas.pids);
    assert_eq!(run.cluster_file().unwrap()["state"], "stopped");

    // The same command again: same ports, data kept.
    let mut again = DevRun::start(&dir, tmp.path().join("dev-2.out"), grpc_base, admin_base);
    let restarted = again.wait_running().await;
    assert_eq!(restarted.grpc, replicas.grpc, "the ports are kept");
    restarted.wait_ready(&again).await;
    assert_eq!(
        wait_web_listed(&restarted).await,
        vec!["10.0.0.1:8080"],
        "the service registered in the first run is still there"
    );

    let status = again.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "dev must exit 0 on SIGTERM\n{}",
        again.output_text()
    );
    assert_all_gone(&restarted.pids);
}

/// `dev --clean` on a directory that a dev run did not create refuses, exits non-zero, and
/// leaves every file in it as it was.
#[test]
fn clean_refuses_a_foreign_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("precious");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("notes.txt"), "do not delete").unwrap();
    std::fs::write(dir.join("sub").join("data.bin"), [1u8, 2, 3]).unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = (
        listing(&dir),
        files_digest(&dir),
        files_digest(&dir.join("sub")),
    );
    let (grpc_base, admin_base) = dev_ports();

    let mut cmd = Command::new(BIN);
    cmd.arg("dev")
        .arg("--dir")
        .arg(&dir)
        .arg("--clean")
        .args(["--grpc-base-port", &grpc_base.to_string()])
        .args(["--admin-base-port", &admin_base.to_string()]);
    let output = output_within(cmd, EXIT_PATIENCE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "--clean must refuse\n{stderr}");
    assert!(
        stderr.contains("refusing to --clean") && stderr.contains("Nothing was deleted"),
        "the message must say it refuses and deleted nothing:\n{stderr}"
    );
    let after = (
        listing(&dir),
        files_digest(&dir),
        files_digest(&dir.join("sub")),
    );
    assert!(after == before, "the directory changed: {:?}", after.0);
}

/// Registers `default/web` at 10.0.0.1:8080 through any of `addr`, failing the test if it fails.
fn register_web(addr: &str) {
    let registered = nettingctl(&[
        "--addr",
        addr,
        "catalog",
        "register",
        "default/web",
        "--address",
        "10.0.0.1",
        "--port",
        "8080",
    ]);
    assert!(
        registered.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Replica `index` as `cluster.json` has it, once `accept` holds for it.
async fn wait_replica_entry(
    run: &mut DevRun,
    index: usize,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let found = wait_until(PATIENCE, || {
        run.assert_running();
        let entry = run
            .cluster_file()
            .and_then(|f| f["replicas"].get(index).cloned())
            .filter(|e| accept(e));
        async move { entry }
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "cluster.json never showed replica {index} as expected: {:?}\n{}",
            run.cluster_file(),
            run.output_text()
        )
    })
}

/// Checks that replica `index`, started again after being killed, runs under a new pid with
/// one restart counted, answers /readyz, and serves the write made while it was down from
/// its own catalog.
async fn assert_came_back(run: &mut DevRun, replicas: &Replicas, index: usize) {
    let old_pid = u64::from(replicas.pids[index]);
    let entry = wait_replica_entry(run, index, |e| {
        e["state"] == "running" && e["pid"].as_u64().is_some_and(|p| p != old_pid)
    })
    .await;
    assert_eq!(entry["restarts"], 1, "one restart counted: {entry}");
    let admin = &replicas.admin[index];
    let ready = wait_until(PATIENCE, || async {
        is_http_ok(&http_get(admin, "/readyz").await?).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "restarted replica {index} never became ready\n{}",
        run.output_text()
    );
    assert_eq!(
        wait_web_listed_at(&replicas.grpc[index]).await,
        vec!["10.0.0.1:8080"],
        "the restarted replica caught up with the write it missed"
    );
    let output = run.output_text();
    assert!(
        output.contains(&format!("replica {index} exited (signal 9, SIGKILL)"))
            && output.contains(&format!("replica {index} restarted")),
        "the dev run reports the death and the restart:\n{output}"
    );
}

/// `kill -9` of a replica, then `netting-control dev restart`: the dev run starts it again on
/// its data, counts the restart, and the replica catches up with a write made while it was
/// down. A second request with every replica running changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_restart_brings_a_killed_replica_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (grpc_base, admin_base) = dev_ports();
    let mut run = DevRun::start(&dir, tmp.path().join("dev.out"), grpc_base, admin_base);
    let replicas = run.wait_running().await;
    replicas.wait_ready(&run).await;

    sigkill(replicas.pids[1]);
    wait_replica_entry(&mut run, 1, |e| e["state"] == "exited").await;
    register_web(&replicas.addr_flag());

    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "restart", "--dir"]).arg(&dir);
    let asked = output_within(cmd, EXIT_PATIENCE);
    let said = String::from_utf8_lossy(&asked.stdout);
    assert!(
        asked.status.success() && said.contains("replica 1 runs again"),
        "dev restart failed: {said}{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    assert_came_back(&mut run, &replicas, 1).await;

    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "restart", "--dir"]).arg(&dir);
    let again = output_within(cmd, EXIT_PATIENCE);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("every replica"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let status = run.stop();
    assert_eq!(status.code(), Some(0), "{}", run.output_text());
}

/// With `--restart-after`, a replica killed with `kill -9` comes back on its own after the
/// pause, and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_brings_a_killed_replica_back_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (grpc_base, admin_base) = dev_ports();
    let mut run = DevRun::start_with(
        &dir,
        tmp.path().join("dev.out"),
        grpc_base,
        admin_base,
        &["--restart-after", "300ms"],
    );
    let replicas = run.wait_running().await;
    replicas.wait_ready(&run).await;

    sigkill(replicas.pids[2]);
    register_web(&replicas.addr_flag());
    assert_came_back(&mut run, &replicas, 2).await;
    assert!(run.output_text().contains("restarting replica 2 in 300ms"));
    let status = run.stop();
    assert_eq!(status.code(), Some(0), "{}", run.output_text());
}

/// `dev restart` on a directory whose dev run is not running says so and fails.
#[test]
fn dev_restart_without_a_running_cluster_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "restart", "--dir"]).arg(tmp.path());
    let output = output_within(cmd, EXIT_PATIENCE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("holds no dev cluster"), "{stderr}");
}
