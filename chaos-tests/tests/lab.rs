//! The lab against the real kernel: namespaces, the bridge, cuts, processes, teardown, the
//! stale sweep. Needs root, `ip`, `iptables` and `python3`; without them each test prints why
//! and passes, unless `NETTING_REQUIRE_TOOLS=1`, which makes it fail instead.
//!
//! Every test names its lab with its own tag letter so that tests can run in parallel in one
//! process. "Must work" checks poll until a deadline; "must fail" checks make one attempt with
//! a short timeout, after the same connection was seen working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netting_chaos::lab::owner::{process_state, start_time};
use netting_chaos::lab::preflight::{self, Tools, locate};
use netting_chaos::lab::process::netns_command;
use netting_chaos::lab::sweep::sweep_stale_holding;
use netting_chaos::lab::{Cuts, LabError, Network, ReplicaProcess, RunId, SweepLock, sweep_stale};

/// A timeout for connections that must fail.
const FAIL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a "must work" check keeps trying.
const WORK_DEADLINE: Duration = Duration::from_secs(30);

const LISTEN: &str = "\
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
print('listening', flush=True)
while True:
    s.accept()[0].close()
";

const CONNECT: &str = "\
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(1)
";

/// The tools, or `None` (after saying why) when this machine cannot run the lab.
fn lab_or_skip(test: &str) -> Option<Tools> {
    let tools = preflight::tools_or_skip(test)?;
    if python().is_none() {
        let reason = "python3 not found (the tests' listeners and clients are python3)";
        if std::env::var(preflight::REQUIRE_TOOLS_ENV).is_ok_and(|v| v == "1") {
            panic!("{test}: {reason}");
        }
        eprintln!("skipping {test}: {reason}");
        return None;
    }
    Some(tools)
}

/// The system python (quicker to start than a pyenv shim).
fn python() -> Option<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        Some(system.to_path_buf())
    } else {
        locate("python3")
    }
}

fn id(tag: char) -> RunId {
    RunId::new(std::process::id(), Some(tag)).unwrap()
}

/// A TCP listener on replica `i`'s address and `port`, inside its namespace.
fn listen(net: &Network, i: usize, port: u16, dir: &Path) -> ReplicaProcess {
    let addr = net.replica_addr(i).to_string();
    let port = port.to_string();
    ReplicaProcess::start(
        net.namespace(i),
        python().unwrap(),
        ["-c", LISTEN, &addr, &port],
        dir.join(format!("listen-{i}-{port}.log")),
        &[],
    )
    .unwrap()
}

/// One TCP connect from replica `from`'s namespace to `to`:`port`.
fn connects(net: &Network, from: usize, to: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    net.command_in(from, python().unwrap())
        .args([
            "-c",
            CONNECT,
            &to.to_string(),
            &port.to_string(),
            &timeout.as_secs_f64().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// One TCP connect from the host (this process, root namespace).
fn host_connects(to: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((to, port)), timeout).is_ok()
}

/// Polls `check` until it holds; panics with `what` at the deadline.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WORK_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until process `pid` is running `sleep` (the program every process test starts ends in
/// it, directly or after `exec`).
fn wait_for_sleep(pid: u32, what: &str) {
    eventually(what, || {
        fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() == "sleep\n"
    });
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Namespaces and root-namespace links that belong to run `id`.
fn names_of(id: RunId) -> Vec<String> {
    let namespaces = ip(&["netns", "list"]);
    let links = ip(&["-o", "link", "show"]);
    let link_names = links
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| n.trim_end_matches(':').split('@').next().unwrap_or(n));
    namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .chain(link_names)
        .filter(|n| RunId::parse(n) == Some(id))
        .map(str::to_owned)
        .collect()
}

#[test]
fn preflight_finds_working_tools() {
    let Some(tools) = lab_or_skip("preflight_finds_working_tools") else {
        return;
    };
    assert!(tools.ip.ends_with("ip"));
    assert!(
        tools
            .iptables_restore
            .to_string_lossy()
            .ends_with("-restore")
    );
    assert!(tools.iptables_version.contains("iptables"), "{tools:?}");
    // An explicit choice that does not exist is refused with what to install.
    let err = preflight::check(Some("iptables-no-such-backend")).unwrap_err();
    assert!(
        err.to_string()
            .contains("install the Debian package iptables"),
        "{err}"
    );
}

#[test]
fn ip_netns_exec_execs_in_place() {
    let Some(tools) = lab_or_skip("ip_netns_exec_execs_in_place") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&tools, id('e'), 1).unwrap();
    let mut sleeper = ReplicaProcess::start(
        net.namespace(0),
        "sleep",
        ["1000"],
        dir.path().join("sleep.log"),
        &[],
    )
    .unwrap();
    let pid = sleeper.pid();
    // `ip` execs the program in its own process: the child's pid becomes `sleep`.
    wait_for_sleep(pid, "the child to become sleep");
    let inside = fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino();
    let namespace = fs::metadata(Path::new("/run/netns").join(net.namespace(0)))
        .unwrap()
        .ino();
    assert_eq!(
        inside, namespace,
        "the program runs in the replica's namespace"
    );
    assert!(sleeper.is_running());
}

#[test]
fn partition_blocks_across_and_heal_restores() {
    let Some(tools) = lab_or_skip("partition_blocks_across_and_heal_restores") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&tools, id('p'), 3).unwrap();
    assert_eq!(net.replicas(), 3);
    let _listeners: Vec<_> = (0..3).map(|i| listen(&net, i, 8080, dir.path())).collect();
    let (a0, a1, a2) = (
        net.replica_addr(0),
        net.replica_addr(1),
        net.replica_addr(2),
    );
    eventually("0 -> 1", || connects(&net, 0, a1, 8080, FAIL_TIMEOUT));
    eventually("1 -> 2", || connects(&net, 1, a2, 8080, FAIL_TIMEOUT));
    eventually("2 -> 0", || connects(&net, 2, a0, 8080, FAIL_TIMEOUT));

    let cuts = Cuts::partition(&[0], &[1, 2]);
    net.set_cuts(&cuts).unwrap();
    assert_eq!(net.current_cuts(), cuts);
    assert!(!connects(&net, 0, a1, 8080, FAIL_TIMEOUT), "0 -> 1 is cut");
    assert!(!connects(&net, 2, a0, 8080, FAIL_TIMEOUT), "2 -> 0 is cut");
    eventually("1 -> 2 on the same side", || {
        connects(&net, 1, a2, 8080, FAIL_TIMEOUT)
    });
    // The host is not part of the partition.
    eventually("host -> 0", || host_connects(a0, 8080, FAIL_TIMEOUT));

    // Setting the same cuts again changes nothing; another set replaces them.
    net.set_cuts(&cuts).unwrap();
    net.set_cuts(&Cuts::partition(&[2], &[0, 1])).unwrap();
    eventually("0 -> 1 after the partition moved", || {
        connects(&net, 0, a1, 8080, FAIL_TIMEOUT)
    });
    assert!(!connects(&net, 1, a2, 8080, FAIL_TIMEOUT), "1 -> 2 is cut");

    net.heal().unwrap();
    assert!(net.current_cuts().is_empty());
    eventually("1 -> 2 after heal", || {
        connects(&net, 1, a2, 8080, FAIL_TIMEOUT)
    });
    eventually("2 -> 0 after heal", || {
        connects(&net, 2, a0, 8080, FAIL_TIMEOUT)
    });
}

#[test]
fn one_way_cut_blocks_one_sender_only() {
    let Some(tools) = lab_or_skip("one_way_cut_blocks_one_sender_only") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&tools, id('o'), 3).unwrap();
    let _listener = listen(&net, 1, 8080, dir.path());
    let a1 = net.replica_addr(1);
    eventually("0 -> 1", || connects(&net, 0, a1, 8080, FAIL_TIMEOUT));

    net.set_cuts(&Cuts::one_way(0, 1)).unwrap();
    assert!(!connects(&net, 0, a1, 8080, FAIL_TIMEOUT), "0 -> 1 is cut");
    eventually("host -> 1", || host_connects(a1, 8080, FAIL_TIMEOUT));
    eventually("2 -> 1", || connects(&net, 2, a1, 8080, FAIL_TIMEOUT));
}

#[test]
fn clients_cut_closes_one_port_to_the_host() {
    let Some(tools) = lab_or_skip("clients_cut_closes_one_port_to_the_host") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&tools, id('c'), 2).unwrap();
    let _grpc = listen(&net, 1, 8080, dir.path());
    let _admin = listen(&net, 1, 8081, dir.path());
    let a1 = net.replica_addr(1);
    eventually("host -> 1:8080", || host_connects(a1, 8080, FAIL_TIMEOUT));
    eventually("host -> 1:8081", || host_connects(a1, 8081, FAIL_TIMEOUT));

    net.set_cuts(&Cuts::clients_cut(1, 8080)).unwrap();
    assert!(
        !host_connects(a1, 8080, FAIL_TIMEOUT),
        "the clients' port is cut"
    );
    eventually("host -> 1:8081 (admin stays open)", || {
        host_connects(a1, 8081, FAIL_TIMEOUT)
    });
    eventually("0 -> 1:8080 (peers are not clients)", || {
        connects(&net, 0, a1, 8080, FAIL_TIMEOUT)
    });

    // Isolation with clients: the peer and the clients' port are cut, admin stays.
    net.set_cuts(&Cuts::isolate(1, 2, Some(8080))).unwrap();
    assert!(!connects(&net, 0, a1, 8080, FAIL_TIMEOUT));
    assert!(!host_connects(a1, 8080, FAIL_TIMEOUT));
    eventually("host -> 1:8081 while isolated", || {
        host_connects(a1, 8081, FAIL_TIMEOUT)
    });

    net.heal().unwrap();
    eventually("host -> 1:8080 after heal", || {
        host_connects(a1, 8080, FAIL_TIMEOUT)
    });
}

/// Host FORWARD rules added by a test, deleted again on drop (also when the test fails).
struct HostForwardRules {
    iptables: PathBuf,
    rules: Vec<Vec<String>>,
}

impl HostForwardRules {
    fn drop_all(iptables: &Path, subnet: &str) -> Self {
        let mut added = Self {
            iptables: iptables.to_path_buf(),
            rules: Vec::new(),
        };
        for direction in ["-s", "-d"] {
            let rule: Vec<String> = [direction, subnet, "-j", "DROP"]
                .map(str::to_owned)
                .to_vec();
            let status = Command::new(iptables)
                .args(["-w", "-I", "FORWARD", "1"])
                .args(&rule)
                .status()
                .unwrap();
            assert!(status.success());
            added.rules.push(rule);
        }
        added
    }
}

impl Drop for HostForwardRules {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = Command::new(&self.iptables)
                .args(["-w", "-D", "FORWARD"])
                .args(rule)
                .status();
        }
    }
}

/// Docker sets the host's FORWARD policy to DROP, and with `br_netfilter` loaded bridged
/// packets go through the FORWARD chain of the bridge's namespace. The lab's bridge is in the
/// hub namespace, so a host FORWARD chain that drops the lab's subnet changes nothing. (Where
/// `br_netfilter` is not loaded this passes trivially.)
#[test]
fn bridged_traffic_ignores_the_hosts_forward_chain() {
    let Some(tools) = lab_or_skip("bridged_traffic_ignores_the_hosts_forward_chain") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&tools, id('f'), 2).unwrap();
    let _listener = listen(&net, 1, 8080, dir.path());
    let a1 = net.replica_addr(1);
    eventually("0 -> 1", || connects(&net, 0, a1, 8080, FAIL_TIMEOUT));
    let sysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if Path::new(sysctl).exists() {
        // br_netfilter is loaded; the hub does not hand its bridged packets to iptables.
        let out = netns_command(&tools.ip, net.hub_namespace(), "cat")
            .arg(sysctl)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
    }
    let _rules = HostForwardRules::drop_all(&tools.iptables, &net.subnet().to_string());
    eventually("0 -> 1 with the host's FORWARD dropping the lab", || {
        connects(&net, 0, a1, 8080, FAIL_TIMEOUT)
    });
    eventually("host -> 1 with the host's FORWARD dropping the lab", || {
        host_connects(a1, 8080, FAIL_TIMEOUT)
    });
}

#[test]
fn legacy_iptables_backend_cuts_too() {
    let Some(tools) = lab_or_skip("legacy_iptables_backend_cuts_too") else {
        return;
    };
    let (Some(iptables), Some(restore)) =
        (locate("iptables-legacy"), locate("iptables-legacy-restore"))
    else {
        eprintln!("skipping legacy_iptables_backend_cuts_too: no iptables-legacy");
        return;
    };
    let legacy = Tools {
        iptables,
        iptables_restore: restore,
        ..tools
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&legacy, id('l'), 2).unwrap();
    let _listener = listen(&net, 1, 8080, dir.path());
    let a1 = net.replica_addr(1);
    eventually("0 -> 1", || connects(&net, 0, a1, 8080, FAIL_TIMEOUT));
    net.set_cuts(&Cuts::one_way(0, 1)).unwrap();
    assert!(!connects(&net, 0, a1, 8080, FAIL_TIMEOUT));
    let rules = netns_command(&legacy.ip, net.namespace(0), &legacy.iptables)
        .args(["-w", "-S"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.contains(&format!("-A NETTING-CHAOS-OUT -d {a1}/32 -j DROP")),
        "{rules}"
    );
    net.heal().unwrap();
    eventually("0 -> 1 after heal", || {
        connects(&net, 0, a1, 8080, FAIL_TIMEOUT)
    });
}

#[test]
fn invalid_cuts_are_refused() {
    let Some(tools) = lab_or_skip("invalid_cuts_are_refused") else {
        return;
    };
    let net = Network::create_with_id(&tools, id('i'), 2).unwrap();
    assert!(matches!(
        net.set_cuts(&Cuts::one_way(0, 2)),
        Err(LabError::InvalidCut(_))
    ));
    assert!(net.current_cuts().is_empty());
}

#[tokio::test]
async fn pause_resume_kill_terminate_restart() {
    let Some(tools) = lab_or_skip("pause_resume_kill_terminate_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("replica.log");
    let net = Network::create_with_id(&tools, id('k'), 1).unwrap();
    let mut p = ReplicaProcess::start(
        net.namespace(0),
        "sh",
        ["-c", "echo started; exec sleep 1000"],
        &log,
        &[],
    )
    .unwrap();
    let pid = p.pid();
    wait_for_sleep(pid, "sleep to run");

    p.pause().unwrap();
    assert!(p.is_paused());
    assert_eq!(process_state(pid), Some('T'));
    assert!(p.is_running(), "a paused process is still running");
    p.resume().unwrap();
    assert!(!p.is_paused());
    assert_ne!(process_state(pid), Some('T'));

    // SIGKILL works on a paused process.
    p.pause().unwrap();
    let status = p.kill().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(!p.is_running());
    assert_eq!(p.exit_status().map(|s| s.signal()), Some(Some(9)));
    assert!(matches!(p.pause(), Err(LabError::NotRunning { .. })));
    assert_eq!(p.kill().unwrap().signal(), Some(9), "kill again is a no-op");

    // A restart appends to the same log, after a marker line.
    p.restart().unwrap();
    assert_eq!(p.starts(), 2);
    assert!(p.is_running());
    let pid = p.pid();
    wait_for_sleep(pid, "the restarted sleep to run");
    let text = fs::read_to_string(&log).unwrap();
    let first = text.find("=== start #1 at ").unwrap();
    let second = text.find("=== start #2 at ").unwrap();
    assert!(first < second, "{text}");
    assert_eq!(text.matches("started\n").count(), 2, "{text}");

    // SIGTERM reaches a paused process only once it is continued; terminate does that.
    p.pause().unwrap();
    let started = Instant::now();
    let status = p.terminate(Duration::from_secs(20)).await.unwrap();
    assert_eq!(status.signal(), Some(15), "ended by SIGTERM, not SIGKILL");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A program that ignores SIGTERM is killed after the grace period.
    let mut stubborn = ReplicaProcess::start(
        net.namespace(0),
        "sh",
        ["-c", "trap '' TERM; echo ready; exec sleep 1000"],
        dir.path().join("stubborn.log"),
        &[],
    )
    .unwrap();
    let spid = stubborn.pid();
    wait_for_sleep(spid, "the stubborn sleep to run");
    let status = stubborn
        .terminate(Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn dropping_a_process_kills_it() {
    let Some(tools) = lab_or_skip("dropping_a_process_kills_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create_with_id(&tools, id('x'), 1).unwrap();
    let p = ReplicaProcess::start(
        net.namespace(0),
        "sleep",
        ["1000"],
        dir.path().join("sleep.log"),
        &[],
    )
    .unwrap();
    let pid = p.pid();
    let started = start_time(pid).unwrap();
    drop(p);
    // Reaped: gone (or, should the pid have been reused at once, another process).
    assert_ne!(start_time(pid), Some(started));
}

#[test]
fn teardown_removes_everything_and_is_idempotent() {
    let Some(tools) = lab_or_skip("teardown_removes_everything_and_is_idempotent") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = id('d');
    let mut net = Network::create_with_id(&tools, run, 2).unwrap();
    let host_link = net.host_link().to_owned();
    assert!(host_link.len() <= 15);
    let mut names = names_of(run);
    names.sort();
    assert_eq!(
        names,
        vec![
            run.prefix(),
            format!("{run}-0"),
            format!("{run}-1"),
            format!("{run}-hub")
        ]
    );
    let address = ip(&["-o", "-4", "addr", "show", "dev", &host_link]);
    assert!(
        address.contains(&format!("{}/24", net.host_addr())),
        "{address}"
    );
    // A process left in a namespace is killed by the teardown.
    let mut orphan = ReplicaProcess::start(
        net.namespace(1),
        "sleep",
        ["1000"],
        dir.path().join("sleep.log"),
        &[],
    )
    .unwrap();
    let pid = orphan.pid();
    wait_for_sleep(pid, "sleep to run");

    net.teardown().unwrap();
    assert_eq!(names_of(run), Vec::<String>::new());
    eventually("the process in the namespace to die", || {
        !orphan.is_running()
    });
    assert_eq!(orphan.exit_status().unwrap().signal(), Some(9));
    net.teardown().unwrap();
    drop(net);

    // Dropping without teardown removes everything too.
    let run = id('y');
    let net = Network::create_with_id(&tools, run, 1).unwrap();
    assert!(!names_of(run).is_empty());
    drop(net);
    assert_eq!(names_of(run), Vec::<String>::new());
}

#[test]
fn two_networks_at_once_do_not_clash() {
    let Some(tools) = lab_or_skip("two_networks_at_once_do_not_clash") else {
        return;
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Network::create_with_id(&tools, id('a'), 3).unwrap());
        let b = s.spawn(|| Network::create_with_id(&tools, id('b'), 3).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.subnet(), b.subnet());
    assert!(!a.subnet().overlaps(&b.subnet()));
    assert_ne!(a.host_link(), b.host_link());
    for i in 0..3 {
        assert_ne!(a.namespace(i), b.namespace(i));
        assert_ne!(a.replica_addr(i), b.replica_addr(i));
    }
    let mut all = names_of(a.id());
    all.extend(names_of(b.id()));
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count);
    assert_eq!(count, 10, "{all:?}");
}

/// A child process killed and reaped on drop, so that a failing test leaves nothing behind
/// (and no process holding the test harness's output pipe open).
struct Reaped(std::process::Child);

impl Reaped {
    fn spawn(command: &mut Command) -> Self {
        Self(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sweep_removes_dead_runs_and_keeps_live_ones() {
    let Some(tools) = lab_or_skip("sweep_removes_dead_runs_and_keeps_live_ones") else {
        return;
    };
    // No other sweep (another test, a concurrent run) may remove the fake dead runs first.
    let lock = SweepLock::acquire().unwrap();
    // A run whose process is gone: the pid of a `true` that has exited.
    let mut done = Command::new("true").spawn().unwrap();
    let dead_pid = done.id();
    done.wait().unwrap();
    let dead = RunId::new(dead_pid, None).unwrap();
    let dead_net = Network::create_with_id(&tools, dead, 2).unwrap();
    let mut left_behind =
        Reaped::spawn(netns_command(&tools.ip, dead_net.namespace(0), "sleep").arg("1000"));
    // As if the run had been killed with SIGKILL: no teardown.
    std::mem::forget(dead_net);

    // A run named after a live process that did not create it (a reused pid): no marker.
    let mut unrelated = Reaped::spawn(Command::new("sleep").arg("1000"));
    let reused = RunId::new(unrelated.0.id(), None).unwrap();
    std::mem::forget(Network::create_with_id(&tools, reused, 1).unwrap());

    // A live run of this process.
    let live = Network::create_with_id(&tools, id('s'), 2).unwrap();
    let live_names = names_of(live.id());
    assert_eq!(live_names.len(), 4);

    assert!(!names_of(dead).is_empty());
    let report = sweep_stale_holding(&lock, &tools.ip).unwrap();
    assert!(report.stale_runs.contains(&dead_pid), "{report:?}");
    assert!(report.stale_runs.contains(&reused.pid()), "{report:?}");
    assert!(report.killed.contains(&left_behind.0.id()), "{report:?}");
    assert!(!report.stale_runs.contains(&std::process::id()));
    assert_eq!(names_of(dead), Vec::<String>::new(), "{report:?}");
    assert_eq!(names_of(reused), Vec::<String>::new(), "{report:?}");
    let mut still = names_of(live.id());
    still.sort();
    let mut expected = live_names;
    expected.sort();
    assert_eq!(still, expected, "the live run is left alone");

    // The process left in the dead run's namespace was killed; the unrelated one was not.
    eventually("the left-behind process to die", || {
        left_behind.0.try_wait().unwrap().is_some()
    });
    assert_eq!(left_behind.0.wait().unwrap().signal(), Some(9));
    assert!(unrelated.0.try_wait().unwrap().is_none());

    // Nothing stale is left, so a second sweep finds nothing of these runs.
    let again = sweep_stale_holding(&lock, &tools.ip).unwrap();
    assert!(!again.stale_runs.contains(&dead_pid), "{again:?}");
    assert!(!again.stale_runs.contains(&reused.pid()), "{again:?}");
    drop(lock);
    // The ordinary entry point takes the lock itself.
    sweep_stale().unwrap();
}

#[test]
fn a_failed_create_removes_what_it_made_and_nothing_else() {
    let Some(tools) = lab_or_skip("a_failed_create_removes_what_it_made_and_nothing_else") else {
        return;
    };
    let run = id('h');
    // Someone else's namespace where replica 1's will go.
    ip(&["netns", "add", &run.replica_namespace(1)]);
    let err = Network::create_with_id(&tools, run, 3).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("netns add {}", run.replica_namespace(1))),
        "{message}"
    );
    assert_eq!(names_of(run), vec![run.replica_namespace(1)]);
    ip(&["netns", "delete", &run.replica_namespace(1)]);

    // A second network under a name in use fails without harming the first.
    let run = id('g');
    let first = Network::create_with_id(&tools, run, 1).unwrap();
    assert!(Network::create_with_id(&tools, run, 1).is_err());
    assert_eq!(names_of(run).len(), 3);
    drop(first);
    assert_eq!(names_of(run), Vec::<String>::new());
}

#[test]
fn sweep_cleans_up_after_a_run_killed_with_sigkill() {
    let Some(tools) = lab_or_skip("sweep_cleans_up_after_a_run_killed_with_sigkill") else {
        return;
    };
    // A real run whose "replicas" only sleep: it builds its lab and waits for a leader that
    // never comes, which is when it is killed.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("sleeping-control");
    fs::write(&fake, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_netting-chaos"))
        .args(["run", "--faults", "1", "--control-binary"])
        .arg(&fake)
        .arg("--report-dir")
        .arg(dir.path().join("report"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut helper = Reaped(child);
    let helper_pid = helper.0.id();
    let run = RunId::new(helper_pid, None).unwrap();
    let replica_namespace = run.replica_namespace(1);
    let mut sleeper = None;
    eventually("the run to start a replica in its lab", || {
        let pids = Command::new(&tools.ip)
            .args(["netns", "pids", &replica_namespace])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // Only the replica's `sleep`: the run also starts short-lived commands in the
        // namespace while it builds the lab, and one of those may be gone a moment later.
        sleeper = pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
            });
        sleeper.is_some()
    });
    let sleeper = sleeper.unwrap();
    // The run has swept already; from now on no other sweep may remove its lab before this
    // test looks at it.
    let lock = SweepLock::acquire().unwrap();
    // The hub and the three replica namespaces, and the host's veth.
    assert!(names_of(run).len() >= 4, "{:?}", names_of(run));
    let marker = Path::new("/run/netting-chaos").join(helper_pid.to_string());
    assert!(marker.exists());
    let sleeper_start = start_time(sleeper).unwrap();

    // The run dies without a chance to clean up.
    helper.0.kill().unwrap();
    helper.0.wait().unwrap();
    assert!(
        !names_of(run).is_empty(),
        "a killed run leaves its lab behind"
    );

    let report = sweep_stale_holding(&lock, &tools.ip).unwrap();
    assert!(report.stale_runs.contains(&helper_pid), "{report:?}");
    assert!(report.killed.contains(&sleeper), "{report:?}");
    assert_eq!(names_of(run), Vec::<String>::new());
    assert!(!marker.exists());
    eventually("the orphan in the dead lab to die", || {
        start_time(sleeper) != Some(sleeper_start) || process_state(sleeper) == Some('Z')
    });
}
