//! The control plane's write path against etcd's, on the same machine in the same run.
//!
//! `cargo bench -p netting-control --bench cluster` starts 3 release `netting-control`
//! replicas on loopback (default Raft timings, fsync on every commit), measures sequential
//! write latency, throughput of concurrent writers (spread over the 3 replicas and all on the
//! leader) and failover after `kill -9` of the leader, then does the same to a 3-member etcd
//! cluster (installing Debian's `etcd-server` when `etcd` is missing) and prints one table for
//! BENCHMARKS.md.
//!
//! Run length, from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `NETTING_BENCH_SEQUENTIAL` | 500 | sequential writes |
//! | `NETTING_BENCH_SECONDS` | 10 | length of each throughput phase |
//! | `NETTING_BENCH_WRITERS` | 64 | concurrent writers |
//! | `NETTING_BENCH_PAYLOAD` | 256 | bytes per write (encoded register request / etcd value) |
//! | `NETTING_BENCH_FAILOVERS` | 20 | leader kills |
//! | `NETTING_BENCH_PROBE_MS` | 5 | interval between writes while measuring failover |
//! | `NETTING_BENCH_NETTING_ARGS` | none | extra flags for every replica, space-separated (e.g. other Raft timings) |
//! | `NETTING_BENCH_BIN` | this build's | the `netting-control` binary to run (to compare builds under one load) |
//! | `NETTING_BENCH_ETCD` | 1 | 0 skips etcd |
//! | `NETTING_BENCH_ETCD_HEARTBEAT_MS` / `_ELECTION_MS` | 20 / 100 | etcd's Raft timings |
//! | `NETTING_BENCH_DIR` | system temp dir | where data directories go |
//! | `NETTING_BENCH_KEEP` | 0 | 1 keeps data directories and logs |
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Modules live under benches/cluster/ with explicit paths: a plain benches/*.rs file would be
// picked up by cargo as a bench target of its own.
#[path = "cluster/etcd.rs"]
mod etcd;
#[path = "common/host.rs"]
mod host;
#[path = "cluster/load.rs"]
mod load;
#[path = "cluster/machine.rs"]
mod machine;
#[path = "cluster/netting.rs"]
mod netting;
#[path = "cluster/procs.rs"]
mod procs;
#[path = "cluster/web.rs"]
mod web;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use load::{Cluster, Failover, Sequential, Throughput, ms};
use machine::{Machine, took};
use prost::Message as _;

#[derive(Debug, Clone)]
struct Settings {
    sequential: usize,
    seconds: u64,
    writers: usize,
    payload: usize,
    failovers: usize,
    probe_every: Duration,
    netting_args: Vec<String>,
    etcd: bool,
    etcd_timing: etcd::Timing,
    dir: Option<PathBuf>,
    keep: bool,
}

/// `name` parsed, or `default` when unset; a value that does not parse stops the run.
fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let settings = Settings {
            sequential: env_or("NETTING_BENCH_SEQUENTIAL", 500),
            seconds: env_or("NETTING_BENCH_SECONDS", 10),
            writers: env_or("NETTING_BENCH_WRITERS", 64),
            payload: env_or("NETTING_BENCH_PAYLOAD", 256),
            failovers: env_or("NETTING_BENCH_FAILOVERS", 20),
            probe_every: Duration::from_millis(env_or("NETTING_BENCH_PROBE_MS", 5)),
            netting_args: std::env::var("NETTING_BENCH_NETTING_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            etcd: env_or::<u8>("NETTING_BENCH_ETCD", 1) != 0,
            etcd_timing: etcd::Timing {
                heartbeat_ms: env_or("NETTING_BENCH_ETCD_HEARTBEAT_MS", 20),
                election_ms: env_or("NETTING_BENCH_ETCD_ELECTION_MS", 100),
            },
            dir: std::env::var_os("NETTING_BENCH_DIR").map(PathBuf::from),
            keep: env_or::<u8>("NETTING_BENCH_KEEP", 0) != 0,
        };
        assert!(settings.writers > 0, "NETTING_BENCH_WRITERS must be > 0");
        assert!(
            settings.probe_every > Duration::ZERO,
            "NETTING_BENCH_PROBE_MS must be > 0"
        );
        settings
    }
}

/// Everything measured on one system.
#[derive(Debug, Clone)]
struct Results {
    sequential: Sequential,
    spread: Throughput,
    leader: Throughput,
    failover: Option<Failover>,
}

async fn measure<C: Cluster>(cluster: &mut C, s: &Settings, failover: bool) -> Results {
    let duration = Duration::from_secs(s.seconds);
    let sequential = load::sequential(cluster, s.sequential).await;
    let spread = load::throughput(cluster, s.writers, duration, true).await;
    let leader = load::throughput(cluster, s.writers, duration, false).await;
    let failover = if failover && s.failovers > 0 {
        Some(load::failover(cluster, s.failovers, s.probe_every).await)
    } else {
        None
    };
    Results {
        sequential,
        spread,
        leader,
        failover,
    }
}

fn main() {
    // cargo passes `--bench`; everything else comes from the environment (see the top).
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(run(settings));
}

async fn run(s: Settings) {
    let started = Instant::now();
    let mut builder = tempfile::Builder::new();
    builder.prefix("netting-bench-");
    let dir = match &s.dir {
        Some(base) => builder.tempdir_in(base),
        None => builder.tempdir(),
    }
    .expect("cannot create the benchmark's data directory");
    let machine = Machine::describe(dir.path());
    let fsync = machine::fsync_latency(dir.path(), 200);

    println!("== Netting cluster benchmark ==");
    println!("settings: {s:?}");
    println!("data: {} on {}", dir.path().display(), machine.filesystem);
    println!("load average (1 min) at start: {}", procs::load_average());
    println!(
        "disk: 4 KiB write + fdatasync, 200 times: {}",
        fsync.summary()
    );
    let sample = netting::request(7, 123_456, s.payload);
    println!(
        "netting payload: RegisterRequest of {} bytes protobuf-encoded (new endpoint, 2 labels, \
         pod name padded to size)",
        sample.encoded_len()
    );

    let netting = {
        let t = Instant::now();
        let mut cluster =
            netting::Netting::start(&dir.path().join("netting"), s.payload, &s.netting_args).await;
        println!("netting: 3 replicas up with a leader after {}", took(t));
        let results = measure(&mut cluster, &s, true).await;
        let (min, max) = netting::sizes_sent();
        println!("netting: encoded RegisterRequest sizes sent: {min}..={max} bytes");
        results
        // The replicas are killed here, before etcd starts: the two never share the CPU.
    };

    let mut etcd_version = None;
    let (etcd, etcd_grpc) = if !s.etcd {
        println!("etcd: skipped (NETTING_BENCH_ETCD=0)");
        (None, None)
    } else {
        match etcd::find_or_install() {
            Err(e) => {
                println!("etcd: SKIPPED, cannot get etcd: {e}");
                (None, None)
            }
            Ok(bin) => {
                let version = etcd::version(&bin);
                println!("etcd: {} ({version})", bin.display());
                etcd_version = Some(version);
                let value = etcd::value(s.payload);
                println!(
                    "etcd payload: value of {} bytes, key of {} bytes; gateway JSON body {} bytes, \
                     gRPC PutRequest {} bytes",
                    value.len(),
                    etcd::key(7, 123_456).len(),
                    etcd::put_body(&etcd::key(7, 123_456), &etcd::encode_value(&value)).len(),
                    etcd::pb::PutRequest {
                        key: etcd::key(7, 123_456).into_bytes(),
                        value,
                    }
                    .encoded_len()
                );
                let t = Instant::now();
                let mut cluster =
                    etcd::Etcd::start(&bin, &dir.path().join("etcd"), s.etcd_timing, s.payload)
                        .await;
                println!("etcd: 3 members up with a leader after {}", took(t));
                let gateway = measure(&mut cluster, &s, true).await;
                cluster.transport = etcd::Transport::Grpc;
                let grpc = measure(&mut cluster, &s, false).await;
                (Some(gateway), Some(grpc))
            }
        }
    };

    report(
        &s,
        &machine,
        &fsync,
        etcd_version.as_deref(),
        &netting,
        etcd.as_ref(),
        etcd_grpc.as_ref(),
    );
    println!(
        "total run time: {}; load average (1 min) at the end: {}",
        took(started),
        procs::load_average()
    );
    if s.keep {
        let kept = dir.keep();
        println!("data directories and logs kept in {}", kept.display());
    }
}

/// One row: a figure per system, and netting ÷ etcd.
struct Row {
    metric: String,
    netting: Option<f64>,
    etcd: Option<f64>,
    etcd_grpc: Option<f64>,
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn report(
    s: &Settings,
    machine: &Machine,
    fsync: &load::Latencies,
    etcd_version: Option<&str>,
    netting: &Results,
    etcd: Option<&Results>,
    etcd_grpc: Option<&Results>,
) {
    let w = s.writers;
    let seq =
        |r: Option<&Results>, p: f64| r.and_then(|r| millis(r.sequential.latencies.percentile(p)));
    let rate = |t: Option<&Throughput>| t.map(Throughput::per_second);
    let tp = |t: Option<&Throughput>, p: f64| t.and_then(|t| millis(t.latencies.percentile(p)));
    let fo = |r: Option<&Results>, p: Option<f64>| {
        r.and_then(|r| r.failover.as_ref())
            .and_then(|f| millis(p.map_or_else(|| f.times.max(), |p| f.times.percentile(p))))
    };
    fn spread(r: Option<&Results>) -> Option<&Throughput> {
        r.map(|r| &r.spread)
    }
    fn leader(r: Option<&Results>) -> Option<&Throughput> {
        r.map(|r| &r.leader)
    }
    let cpu_per_write = |t: Option<&Throughput>| t.and_then(Throughput::server_cpu_per_write_us);
    let cores = |t: Option<&Throughput>, f: fn(&Throughput) -> Duration| {
        t.map(|t| f(t).as_secs_f64() / t.elapsed.as_secs_f64())
    };
    let syncs = |t: Option<&Throughput>| t.and_then(Throughput::syncs_per_write).map(|v| v * 100.0);
    let n = Some(netting);
    let rows = vec![
        Row {
            metric: "sequential write p50 (ms)".into(),
            netting: seq(n, 50.0),
            etcd: seq(etcd, 50.0),
            etcd_grpc: seq(etcd_grpc, 50.0),
        },
        Row {
            metric: "sequential write p99 (ms)".into(),
            netting: seq(n, 99.0),
            etcd: seq(etcd, 99.0),
            etcd_grpc: seq(etcd_grpc, 99.0),
        },
        Row {
            metric: format!("{w} writers over 3 members (writes/s)"),
            netting: rate(spread(n)),
            etcd: rate(spread(etcd)),
            etcd_grpc: rate(spread(etcd_grpc)),
        },
        Row {
            metric: format!("{w} writers over 3 members p50 (ms)"),
            netting: tp(spread(n), 50.0),
            etcd: tp(spread(etcd), 50.0),
            etcd_grpc: tp(spread(etcd_grpc), 50.0),
        },
        Row {
            metric: format!("{w} writers over 3 members p99 (ms)"),
            netting: tp(spread(n), 99.0),
            etcd: tp(spread(etcd), 99.0),
            etcd_grpc: tp(spread(etcd_grpc), 99.0),
        },
        Row {
            metric: format!("{w} writers over 3 members: server CPU per write (us)"),
            netting: cpu_per_write(spread(n)),
            etcd: cpu_per_write(spread(etcd)),
            etcd_grpc: cpu_per_write(spread(etcd_grpc)),
        },
        Row {
            metric: format!("{w} writers over 3 members: servers' CPU (cores busy)"),
            netting: cores(spread(n), |t| t.server_cpu),
            etcd: cores(spread(etcd), |t| t.server_cpu),
            etcd_grpc: cores(spread(etcd_grpc), |t| t.server_cpu),
        },
        Row {
            metric: format!("{w} writers over 3 members: clients' CPU (cores busy)"),
            netting: cores(spread(n), |t| t.client_cpu),
            etcd: cores(spread(etcd), |t| t.client_cpu),
            etcd_grpc: cores(spread(etcd_grpc), |t| t.client_cpu),
        },
        Row {
            metric: format!("{w} writers over 3 members: rest of the machine's CPU (cores busy)"),
            netting: cores(spread(n), |t| t.other_cpu),
            etcd: cores(spread(etcd), |t| t.other_cpu),
            etcd_grpc: cores(spread(etcd_grpc), |t| t.other_cpu),
        },
        Row {
            metric: format!("{w} writers over 3 members: hypervisor steal (cores)"),
            netting: cores(spread(n), |t| t.steal),
            etcd: cores(spread(etcd), |t| t.steal),
            etcd_grpc: cores(spread(etcd_grpc), |t| t.steal),
        },
        Row {
            metric: format!("{w} writers over 3 members: log fsyncs per 100 writes"),
            netting: syncs(spread(n)),
            etcd: syncs(spread(etcd)),
            etcd_grpc: syncs(spread(etcd_grpc)),
        },
        Row {
            metric: format!("{w} writers on the leader (writes/s)"),
            netting: rate(leader(n)),
            etcd: rate(leader(etcd)),
            etcd_grpc: rate(leader(etcd_grpc)),
        },
        Row {
            metric: format!("{w} writers on the leader p50 (ms)"),
            netting: tp(leader(n), 50.0),
            etcd: tp(leader(etcd), 50.0),
            etcd_grpc: tp(leader(etcd_grpc), 50.0),
        },
        Row {
            metric: format!("{w} writers on the leader p99 (ms)"),
            netting: tp(leader(n), 99.0),
            etcd: tp(leader(etcd), 99.0),
            etcd_grpc: tp(leader(etcd_grpc), 99.0),
        },
        Row {
            metric: format!("{w} writers on the leader: server CPU per write (us)"),
            netting: cpu_per_write(leader(n)),
            etcd: cpu_per_write(leader(etcd)),
            etcd_grpc: cpu_per_write(leader(etcd_grpc)),
        },
        Row {
            metric: "failover p50 (ms)".into(),
            netting: fo(n, Some(50.0)),
            etcd: fo(etcd, Some(50.0)),
            etcd_grpc: None,
        },
        Row {
            metric: "failover p99 (ms)".into(),
            netting: fo(n, Some(99.0)),
            etcd: fo(etcd, Some(99.0)),
            etcd_grpc: None,
        },
        Row {
            metric: "failover max (ms)".into(),
            netting: fo(n, None),
            etcd: fo(etcd, None),
            etcd_grpc: None,
        },
    ];

    println!();
    println!("== Results ==");
    println!(
        "machine: {} cores, {}, {} RAM, Linux {}, {}",
        machine.host.cores,
        machine.host.cpu,
        machine.host.memory,
        machine.host.kernel,
        machine.host.date
    );
    println!("data on: {}", machine.filesystem);
    println!(
        "disk fsync (4 KiB write + fdatasync): p50 {} ms, p99 {} ms",
        ms(fsync.percentile(50.0)),
        ms(fsync.percentile(99.0))
    );
    if s.netting_args.is_empty() {
        println!(
            "netting-control {} (release), default flags: heartbeat 50 ms, election 100-200 ms, pre-vote, \
             fast failover, fsync per commit",
            env!("CARGO_PKG_VERSION")
        );
    } else {
        println!(
            "netting-control {} (release), fsync per commit, NOT the defaults: extra flags {:?}",
            env!("CARGO_PKG_VERSION"),
            s.netting_args
        );
    }
    match etcd_version {
        Some(v) => println!(
            "etcd: {v}, heartbeat {} ms, election {} ms (randomised up to 2x), fsync on (default)",
            s.etcd_timing.heartbeat_ms, s.etcd_timing.election_ms
        ),
        None => println!("etcd: not measured"),
    }
    println!(
        "load: {} sequential writes; {w} writers x {} s per throughput phase; {} B payload; \
         {} failovers, probe every {:?}",
        s.sequential, s.seconds, s.payload, s.failovers, s.probe_every
    );
    println!();
    println!(
        "| metric | netting | etcd (JSON gateway) | ratio netting/etcd | etcd (gRPC) | ratio netting/etcd-gRPC |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.metric,
            cell(r.netting),
            cell(r.etcd),
            ratio(r.netting, r.etcd),
            cell(r.etcd_grpc),
            ratio(r.netting, r.etcd_grpc)
        );
    }
    let errors = |r: Option<&Results>| {
        r.map_or_else(
            || "-".into(),
            |r| {
                format!(
                    "{}/{}/{}",
                    r.sequential.errors, r.spread.errors, r.leader.errors
                )
            },
        )
    };
    println!(
        "| write errors (sequential/over 3/on leader) | {} | {} | | {} | |",
        errors(n),
        errors(etcd),
        errors(etcd_grpc)
    );
    let failed = |r: Option<&Results>| {
        r.and_then(|r| r.failover.as_ref())
            .map_or_else(|| "-".into(), |f| format!("{}", f.failed))
    };
    println!(
        "| failovers without a new leader in 30 s | {} | {} | | | |",
        failed(n),
        failed(etcd)
    );

    println!();
    println!("== Goals ==");
    let p99 = fo(n, Some(99.0));
    let failover_met =
        p99.is_some_and(|p| p < 300.0) && netting.failover.as_ref().is_some_and(|f| f.failed == 0);
    println!(
        "failover p99 under 300 ms: {} ms -> {}",
        cell(p99),
        if failover_met { "MET" } else { "NOT MET" }
    );
    match (rate(spread(n)), rate(spread(etcd))) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => {
            let x = ours / theirs;
            println!(
                "throughput >= 3x etcd ({w} writers over 3 members, etcd through its JSON \
                 gateway): {ours:.0} vs {theirs:.0} writes/s = {x:.2}x -> {}",
                if x >= 3.0 { "MET" } else { "NOT MET" }
            );
        }
        _ => println!("throughput >= 3x etcd: NOT MEASURED (no etcd figures)"),
    }
    if let (Some(ours), Some(theirs)) = (rate(spread(n)), rate(spread(etcd_grpc))) {
        println!(
            "  same load against etcd's native gRPC API: {ours:.0} vs {theirs:.0} writes/s = {:.2}x",
            ours / theirs
        );
    }
}
