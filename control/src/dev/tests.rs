#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use clap::Parser;

use super::plan::{self, Layout, LayoutFlags, PlanError};
use super::probe;
use super::state::{self, ClusterFile, DirError, DirState, ReplicaState};
use super::supervise::{self, Order};
use crate::config::{ReplicaConfig, RunArgs};

fn layout(grpc: u16, admin: u16, replicas: u8) -> Layout {
    Layout {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        grpc_base_port: grpc,
        admin_base_port: admin,
        replicas,
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/dev-dir")
}

// ---- layout: defaults, reuse, refusal ----

/// Without flags or an earlier run, the documented defaults apply.
#[test]
fn layout_defaults() {
    let l = plan::resolve_layout(LayoutFlags::default(), None, &dir()).unwrap();
    assert_eq!(l, layout(7100, 7190, 3));
}

/// Without flags, an earlier run's layout is reused as it was, even if not the default.
#[test]
fn layout_reused_from_earlier_run() {
    let earlier = Layout {
        bind: "0.0.0.0".parse().unwrap(),
        ..layout(17100, 17190, 5)
    };
    let l = plan::resolve_layout(LayoutFlags::default(), Some(&earlier), &dir()).unwrap();
    assert_eq!(l, earlier);
}

/// Flags equal to the earlier run's values are accepted.
#[test]
fn layout_same_explicit_flags_accepted() {
    let earlier = layout(17100, 17190, 3);
    let flags = LayoutFlags {
        grpc_base_port: Some(17100),
        replicas: Some(3),
        ..LayoutFlags::default()
    };
    assert_eq!(
        plan::resolve_layout(flags, Some(&earlier), &dir()).unwrap(),
        earlier
    );
}

/// A flag that differs from the earlier run is refused, naming only what differs and
/// pointing to --clean.
#[test]
fn layout_changed_flag_refused() {
    let earlier = layout(7100, 7190, 3);
    let flags = LayoutFlags {
        grpc_base_port: Some(7200),
        admin_base_port: Some(7190),
        replicas: Some(5),
        ..LayoutFlags::default()
    };
    let err = plan::resolve_layout(flags, Some(&earlier), &dir()).unwrap_err();
    assert_eq!(
        err,
        PlanError::LayoutChanged {
            dir: "/dev-dir".into(),
            previous: "--grpc-base-port 7100 --replicas 3".into(),
            requested: "--grpc-base-port 7200 --replicas 5".into(),
        }
    );
    assert!(err.to_string().contains("--clean"));
}

/// Replica counts outside 1..=7, port 0, ranges past 65535 and overlapping ranges are refused.
#[test]
fn layout_validation() {
    let check = |flags: LayoutFlags| plan::resolve_layout(flags, None, &dir());
    let flags = |grpc, admin, replicas| LayoutFlags {
        bind: None,
        grpc_base_port: Some(grpc),
        admin_base_port: Some(admin),
        replicas: Some(replicas),
    };
    assert_eq!(check(flags(7100, 7190, 0)), Err(PlanError::Replicas(0)));
    assert_eq!(check(flags(7100, 7190, 8)), Err(PlanError::Replicas(8)));
    assert!(matches!(
        check(flags(0, 7190, 3)),
        Err(PlanError::ZeroPort {
            flag: "--grpc-base-port"
        })
    ));
    assert!(matches!(
        check(flags(7100, 65534, 3)),
        Err(PlanError::PortOverflow {
            flag: "--admin-base-port",
            ..
        })
    ));
    assert!(check(flags(7100, 65533, 3)).is_ok());
    assert!(matches!(
        check(flags(7100, 7102, 3)),
        Err(PlanError::Overlap { .. })
    ));
    assert!(matches!(
        check(flags(7102, 7100, 3)),
        Err(PlanError::Overlap { .. })
    ));
    assert!(check(flags(7100, 7103, 3)).is_ok());
    assert!(check(flags(7100, 7101, 1)).is_ok());
}

// ---- replicas and their command lines ----

/// Replica K gets id K, ports base+K and its own data directory and log file.
#[test]
fn replica_plan() {
    let rs = plan::plan_replicas(&layout(7100, 7190, 3), Path::new("/d"));
    assert_eq!(rs.len(), 3);
    let r = &rs[2];
    assert_eq!(r.node_id, 2);
    assert_eq!(
        r.grpc_listen,
        "127.0.0.1:7102".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        r.admin_listen,
        "127.0.0.1:7192".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(r.grpc_addr, r.grpc_listen);
    assert_eq!(r.data_dir, PathBuf::from("/d/node-2"));
    assert_eq!(r.log_file, PathBuf::from("/d/node-2.log"));
    assert_eq!(
        plan::nettingctl_addrs(&rs),
        "127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102"
    );
}

/// A wildcard bind listens on the wildcard but is dialled (by peers, probes, nettingctl) on
/// loopback of the same family.
#[test]
fn wildcard_bind_dials_loopback() {
    assert_eq!(
        plan::connect_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    );
    assert_eq!(
        plan::connect_ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    );
    let l = Layout {
        bind: "0.0.0.0".parse().unwrap(),
        ..layout(7100, 7190, 1)
    };
    let r = &plan::plan_replicas(&l, Path::new("/d"))[0];
    assert_eq!(r.grpc_listen.to_string(), "0.0.0.0:7100");
    assert_eq!(r.grpc_addr.to_string(), "127.0.0.1:7100");
    assert_eq!(r.admin_addr.to_string(), "127.0.0.1:7190");
}

/// The child command line is exactly `run` with the replica's id, paths, listen addresses,
/// every peer, and the catalog when given.
#[test]
fn child_command_line() {
    let rs = plan::plan_replicas(&layout(7100, 7190, 3), Path::new("/d"));
    let args = plan::child_args(&rs[1], &rs, Some(Path::new("/cat.yaml")));
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "run",
            "--node-id",
            "1",
            "--data-dir",
            "/d/node-1",
            "--grpc-listen",
            "127.0.0.1:7101",
            "--admin-listen",
            "127.0.0.1:7191",
            "--peer",
            "0=127.0.0.1:7100,1=127.0.0.1:7101,2=127.0.0.1:7102",
            "--catalog-file",
            "/cat.yaml",
        ]
    );
    let without = plan::child_args(&rs[1], &rs, None);
    assert!(!without.iter().any(|a| a == "--catalog-file"));
}

#[derive(Debug, Parser)]
struct RunCli {
    #[command(flatten)]
    run: RunArgs,
}

/// The child command line is accepted by `netting-control run` and gives each replica the
/// planned id, listen addresses, advertised address and full peer set, also for a wildcard
/// bind.
#[test]
fn child_command_line_is_a_valid_run() {
    for bind in ["127.0.0.1", "0.0.0.0", "::1"] {
        let l = Layout {
            bind: bind.parse().unwrap(),
            ..layout(7100, 7190, 3)
        };
        let rs = plan::plan_replicas(&l, Path::new("/d"));
        for r in &rs {
            let mut argv = vec!["netting-control".into()];
            // Skip the subcommand: RunCli is `run`'s flags alone.
            argv.extend(
                plan::child_args(r, &rs, Some(Path::new("/c.yaml")))
                    .into_iter()
                    .skip(1),
            );
            let cli = RunCli::try_parse_from(argv).unwrap();
            let cfg = ReplicaConfig::try_from(cli.run).unwrap();
            assert_eq!(cfg.node_id, r.node_id);
            assert_eq!(cfg.grpc_listen, r.grpc_listen);
            assert_eq!(cfg.admin_listen, r.admin_listen);
            assert_eq!(cfg.grpc_advertise, r.grpc_addr.to_string());
            assert_eq!(cfg.peers.len(), 3);
            assert_eq!(cfg.data_dir, r.data_dir);
            assert_eq!(cfg.catalog_file.as_deref(), Some(Path::new("/c.yaml")));
        }
    }
}

/// Every NETTING_ variable that places or shapes a replica is scrubbed from a child's
/// environment, so an operator's shell cannot turn a dev replica into something else.
#[test]
fn scrubbed_env_covers_placement_vars() {
    for var in [
        "NETTING_STATEFULSET",
        "NETTING_PEERS",
        "NETTING_GRPC_ADVERTISE",
        "NETTING_CATALOG_FILE",
        "NETTING_DATA_DIR",
    ] {
        assert!(plan::SCRUBBED_ENV.contains(&var), "{var}");
    }
    assert!(!plan::SCRUBBED_ENV.contains(&"NETTING_LOG"));
}

/// Printed commands quote what a shell would interpret and leave plain words alone.
#[test]
fn shell_quoting() {
    assert_eq!(
        plan::shell_quote("/usr/bin/nettingctl"),
        "/usr/bin/nettingctl"
    );
    assert_eq!(
        plan::shell_quote("/my dir/nettingctl"),
        "'/my dir/nettingctl'"
    );
    assert_eq!(plan::shell_quote("it's"), r"'it'\''s'");
    assert_eq!(plan::shell_quote(""), "''");
}

/// nettingctl is shown by name when on PATH, else by the path of the binary built next to
/// this one.
#[test]
fn nettingctl_program_choice() {
    let sibling = Path::new("/t/debug/nettingctl");
    assert_eq!(plan::nettingctl_program(true, Some(sibling)), "nettingctl");
    assert_eq!(
        plan::nettingctl_program(false, Some(sibling)),
        "/t/debug/nettingctl"
    );
    assert_eq!(plan::nettingctl_program(false, None), "nettingctl");
}

/// A cluster of N tolerates the failures that leave a majority.
#[test]
fn tolerated_failures() {
    let got: Vec<u8> = (1..=7).map(plan::tolerated_failures).collect();
    assert_eq!(got, [0, 0, 1, 1, 2, 2, 3]);
}

// ---- the directory ----

fn sample_cluster(dir: &Path, l: Layout) -> ClusterFile {
    let rs = plan::plan_replicas(&l, dir);
    let ctl = format!("nettingctl --addr {}", plan::nettingctl_addrs(&rs));
    ClusterFile::new(l, None, ctl, &rs)
}

/// A missing directory, an empty one (or one with only a leftover lock), ours, and anyone
/// else's are told apart.
#[test]
fn inspect_dir_states() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("dev");
    assert_eq!(state::inspect_dir(&d).unwrap(), DirState::Missing);
    std::fs::create_dir(&d).unwrap();
    assert_eq!(state::inspect_dir(&d).unwrap(), DirState::Empty);
    std::fs::write(d.join(state::LOCK_FILE), "").unwrap();
    assert_eq!(state::inspect_dir(&d).unwrap(), DirState::Empty);
    sample_cluster(&d, layout(7100, 7190, 3)).save(&d).unwrap();
    assert_eq!(state::inspect_dir(&d).unwrap(), DirState::Dev);

    let foreign = tmp.path().join("home");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "years of work").unwrap();
    assert!(matches!(
        state::inspect_dir(&foreign).unwrap(),
        DirState::Foreign { .. }
    ));
    // A cluster.json that is not ours does not make a directory ours.
    std::fs::write(foreign.join("cluster.json"), r#"{"nodes": 3}"#).unwrap();
    assert!(matches!(
        state::inspect_dir(&foreign).unwrap(),
        DirState::Foreign { .. }
    ));

    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        state::inspect_dir(&file),
        Err(DirError::NotADirectory { .. })
    ));
}

/// --clean refuses a non-empty directory without our cluster.json and deletes nothing in it,
/// not even by leaving a lock file behind.
#[test]
fn clean_refuses_foreign_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "keep me").unwrap();
    std::fs::create_dir(tmp.path().join("node-0")).unwrap();
    for clean in [true, false] {
        let err = super::prepare_dir(tmp.path(), clean).err().unwrap();
        assert!(err.to_string().contains("refusing"), "{err}");
    }
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["node-0", "notes.txt"]);
}

/// --clean empties a dev directory (data, logs, cluster.json) but keeps the lock it holds,
/// and the run then starts from the defaults.
#[test]
fn clean_wipes_dev_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    sample_cluster(d, layout(17100, 17190, 5)).save(d).unwrap();
    std::fs::create_dir_all(d.join("node-0/raft")).unwrap();
    std::fs::write(d.join("node-0/raft/log"), "x").unwrap();
    std::fs::write(d.join("node-0.log"), "x").unwrap();
    let prepared = super::prepare_dir(d, true).unwrap();
    assert!(prepared.reuse.is_none());
    let names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [state::LOCK_FILE]);
}

/// Cleaning removes a symlink in the dev directory, never what it points to.
#[test]
fn clean_does_not_follow_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "x").unwrap();
    let d = tmp.path().join("dev");
    std::fs::create_dir(&d).unwrap();
    sample_cluster(&d, layout(7100, 7190, 3)).save(&d).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("link")).unwrap();
    state::clean_dir(&d).unwrap();
    assert!(!d.join("link").exists());
    assert!(outside.join("precious").exists());
}

/// Without --clean, a dev directory's cluster.json is read back for reuse.
#[test]
fn prepare_reuses_dev_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let l = layout(17100, 17190, 5);
    sample_cluster(d, l).save(d).unwrap();
    let prepared = super::prepare_dir(d, false).unwrap();
    assert_eq!(prepared.reuse.map(|c| c.layout), Some(l));
}

/// cluster.json round-trips, is written without leaving its temporary file, and a file of
/// another format is refused with a pointer to --clean.
#[test]
fn cluster_file_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut c = sample_cluster(d, layout(7100, 7190, 3));
    c.set_running(1, 4242);
    c.save(d).unwrap();
    assert_eq!(state::load_cluster(d).unwrap(), c);
    let names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cluster.json"]);

    let text = std::fs::read_to_string(d.join("cluster.json")).unwrap();
    std::fs::write(
        d.join("cluster.json"),
        text.replace("\"format\": 1", "\"format\": 2"),
    )
    .unwrap();
    let err = state::load_cluster(d).unwrap_err();
    assert!(matches!(err, DirError::BadClusterFile { .. }));
    assert!(err.to_string().contains("--clean"));
}

/// Ended replicas lose their pid, and a stopped cluster keeps no pid at all.
#[test]
fn cluster_file_lifecycle() {
    let mut c = sample_cluster(Path::new("/d"), layout(7100, 7190, 3));
    for id in 0..3 {
        c.set_running(id, 100 + u32::try_from(id).unwrap());
    }
    c.set_ended(1, "signal 9, SIGKILL", false);
    assert_eq!(c.replicas[1].pid, None);
    assert_eq!(c.replicas[1].state, ReplicaState::Exited);
    assert_eq!(
        c.replicas[1].exit_status.as_deref(),
        Some("signal 9, SIGKILL")
    );
    c.set_stopped();
    assert_eq!(c.supervisor_pid, None);
    assert!(c.replicas.iter().all(|r| r.pid.is_none()));
    assert_eq!(c.replicas[0].state, ReplicaState::Stopped);
    assert_eq!(c.replicas[1].state, ReplicaState::Exited);
}

/// While one run holds a directory's lock, another is refused and told the holder's pid.
#[test]
fn lock_excludes_second_run() {
    let tmp = tempfile::tempdir().unwrap();
    let _held = state::lock_dir(tmp.path(), None).unwrap();
    let err = state::lock_dir(tmp.path(), Some(77)).unwrap_err();
    assert!(matches!(err, DirError::Locked { pid: Some(77), .. }));
    assert!(err.to_string().contains("pid 77"));
}

// ---- arguments, ports and probes ----

/// A --catalog that is missing or not a file is an error naming it; a file is made absolute.
#[test]
fn catalog_must_be_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.yaml");
    let err = super::resolve_catalog(&missing).unwrap_err();
    assert!(format!("{err:#}").contains("nope.yaml"), "{err:#}");
    let err = super::resolve_catalog(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("not a file"));
    let file = tmp.path().join("c.yaml");
    std::fs::write(&file, "services: []").unwrap();
    assert!(super::resolve_catalog(&file).unwrap().is_absolute());
}

#[derive(Debug, Parser)]
struct DevCli {
    #[command(flatten)]
    dev: super::DevArgs,
}

/// Flags left out stay unset (so an earlier run's layout can be reused) and --replicas is
/// limited to 1..=7 at parse time.
#[test]
fn dev_args_parse() {
    let cli = DevCli::try_parse_from(["dev"]).unwrap();
    assert_eq!(cli.dev.dir, PathBuf::from("./.netting-dev"));
    assert_eq!(cli.dev.layout_flags(), LayoutFlags::default());
    let cli =
        DevCli::try_parse_from(["dev", "--grpc-base-port", "17100", "--bind", "::1"]).unwrap();
    assert_eq!(cli.dev.grpc_base_port, Some(17100));
    assert_eq!(cli.dev.bind, Some("::1".parse().unwrap()));
    assert!(DevCli::try_parse_from(["dev", "--replicas", "8"]).is_err());
    assert!(DevCli::try_parse_from(["dev", "--replicas", "0"]).is_err());
}

/// The port check names the busy port and which replica needed it.
#[test]
fn busy_port_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut rs = plan::plan_replicas(&layout(7100, 7190, 1), Path::new("/d"));
    rs[0].grpc_listen = free;
    rs[0].admin_listen = busy_addr;
    let err = probe::check_ports(&rs).unwrap_err();
    assert_eq!(err.addr, busy_addr);
    assert_eq!(
        err.to_string(),
        format!(
            "port {} (replica 0 admin, {busy_addr}) is already in use",
            busy_addr.port()
        )
    );
}

/// Status lines are parsed; anything else is not a status.
#[test]
fn status_line_parsing() {
    assert_eq!(
        probe::parse_status_line(b"HTTP/1.1 200 OK\r\nx: y\r\n"),
        Some(200)
    );
    assert_eq!(
        probe::parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
        Some(503)
    );
    assert_eq!(probe::parse_status_line(b"HTTP/1.1 204\r\n"), Some(204));
    assert_eq!(probe::parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
    assert_eq!(probe::parse_status_line(b"HTTP/1.1 20 OK\r\n"), None);
    assert_eq!(probe::parse_status_line(b""), None);
}

/// The probe returns the server's status, and a connection error when nothing listens.
#[tokio::test]
async fn http_probe() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"GET /readyz HTTP/1.1\r\n"));
        s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
    });
    let timeout = std::time::Duration::from_secs(5);
    assert_eq!(probe::http_status(addr, "/readyz", timeout).await, Ok(503));
    server.await.unwrap();
    // The listener is gone, so the port refuses connections.
    assert!(matches!(
        probe::http_status(addr, "/readyz", timeout).await,
        Err(probe::ProbeError::Io(_))
    ));
}

// ---- processes ----

/// Exit statuses read as an operator would say them.
#[test]
fn exit_status_descriptions() {
    assert_eq!(
        supervise::describe_status(ExitStatus::from_raw(9)),
        "signal 9, SIGKILL"
    );
    assert_eq!(
        supervise::describe_status(ExitStatus::from_raw(1 << 8)),
        "exit code 1"
    );
    assert_eq!(
        supervise::describe_status(ExitStatus::from_raw(0)),
        "exit code 0"
    );
}

/// A log tail keeps the last non-blank lines.
#[test]
fn log_tail_lines() {
    assert_eq!(supervise::last_lines("a\nb\n\nc\nd\n", 2), ["c", "d"]);
    assert_eq!(supervise::last_lines("a\n", 5), ["a"]);
    assert!(supervise::last_lines("", 5).is_empty());
}

async fn watched(
    program: &str,
    args: &[&str],
) -> (
    tokio::sync::watch::Sender<Order>,
    tokio::sync::mpsc::Receiver<supervise::Exit>,
) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (orders, orders_rx) = tokio::sync::watch::channel(Order::Run);
    let (exits_tx, exits) = tokio::sync::mpsc::channel(1);
    tokio::spawn(supervise::watch_child(7, child, orders_rx, exits_tx));
    (orders, exits)
}

/// A child that ends on its own is reported once, with its id and exit code.
#[tokio::test]
async fn child_exit_is_reported() {
    let (_orders, mut exits) = watched("sh", &["-c", "exit 3"]).await;
    let exit = exits.recv().await.unwrap();
    assert_eq!(exit.node_id, 7);
    assert_eq!(exit.describe(), "exit code 3");
}

/// The terminate order sends SIGTERM; the kill order SIGKILL, for a child that ignores
/// SIGTERM.
#[tokio::test]
async fn child_orders_signal_it() {
    let (orders, mut exits) = watched("sleep", &["30"]).await;
    orders.send_replace(Order::Terminate);
    assert_eq!(exits.recv().await.unwrap().describe(), "signal 15, SIGTERM");

    let (orders, mut exits) =
        watched("sh", &["-c", "trap '' TERM; while :; do sleep 0.1; done"]).await;
    // Let the shell install its trap before it is signalled.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    orders.send_replace(Order::Terminate);
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), exits.recv()).await;
    assert!(early.is_err(), "a child ignoring SIGTERM must still run");
    orders.send_replace(Order::Kill);
    assert_eq!(exits.recv().await.unwrap().describe(), "signal 9, SIGKILL");
}

// ---- what is printed ----

/// The summary lists every replica's addresses and the nettingctl commands with all of them,
/// and suggests a failover only where one can happen.
#[test]
fn summary_shows_addresses_and_commands() {
    let mut c = sample_cluster(Path::new("/d"), layout(7100, 7190, 3));
    c.set_running(0, 4242);
    let text = super::summary(&c, Path::new("/d"), true);
    let ctl = "nettingctl --addr 127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102";
    assert!(text.contains(&format!("{ctl} status")), "{text}");
    assert!(
        text.contains(&format!("{ctl} catalog register default/web --address")),
        "{text}"
    );
    assert!(text.contains(&format!("{ctl} catalog list")), "{text}");
    assert!(text.contains("127.0.0.1:7192"), "{text}");
    assert!(text.contains("4242"), "{text}");
    assert!(text.contains("/d/node-<id>.log"), "{text}");
    assert!(text.contains("tolerates 1 failure)"), "{text}");
    assert!(!text.contains("not built yet"), "{text}");
    assert!(super::summary(&c, Path::new("/d"), false).contains("not built yet"));
    assert!(text.contains("kill -9"), "{text}");
    // A single replica has no failover to watch, so none is suggested.
    let single = sample_cluster(Path::new("/d"), layout(7100, 7190, 1));
    assert!(!super::summary(&single, Path::new("/d"), true).contains("kill -9"));
}

/// A busy port on a reused directory suggests new ports together with --clean.
#[test]
fn port_hint_mentions_clean_when_reusing() {
    assert!(super::port_hint(None, true).contains("--clean"));
    assert!(!super::port_hint(None, false).contains("--clean"));
}
