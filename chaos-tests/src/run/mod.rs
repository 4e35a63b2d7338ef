//! One chaos run, start to end:
//!
//! 1. check the options (before anything is created), the privileges and the tools;
//! 2. sweep what crashed runs left behind, build the namespaces, start the replicas;
//! 3. start the observer, the sidecars, the writers and the readers;
//! 4. inject each fault, hold it, heal it, and wait for the cluster to recover;
//! 5. stop the writers, let the replicas catch up, read the final state of every register
//!    and every replica's catalog, and wait for the sidecars to converge;
//! 6. tear the lab down, check the invariants, and write the report.
//!
//! Dropping the run's future at any point (an interrupt) drops the lab, which kills the
//! replicas and deletes the namespaces.

pub mod cluster;
pub mod faults;
pub mod figures;
pub mod options;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netting_proto::catalog::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::check::invariants::{self, CatalogDump, ServiceDump, SidecarFinal};
use crate::check::linearizability;
use crate::check::{applied_once, replica_record};
use crate::history::{History, Micros};
use crate::report::{self, CheckResult, RunReport, SidecarSummary};
use crate::schedule::{Fault, FaultStream};
use crate::workload::catalog::{
    self as catalog_ops, Connections, ProbeSettings, Worker, WorkerSettings,
};
use crate::workload::keyspace::Keyspace;
use crate::workload::observer::Observer;
use crate::workload::sidecars::Sidecars;
use crate::workload::{Clock, LEDGER_NAMESPACE, REGISTER_NAMESPACE, Recorder};

use cluster::Cluster;
use figures::FaultLog;
pub use options::{FaultSource, OptionsError, RunOptions};

/// How often the observer looks at each replica.
const OBSERVE_EVERY: Duration = Duration::from_millis(50);
/// A sample older than this no longer tells who leads.
const FRESH: Duration = Duration::from_millis(400);
/// Slots of key-value registers, and operations per register before it rotates.
const REGISTER_SLOTS: usize = 8;
const OPS_PER_REGISTER: u32 = 64;
/// Probes waiting at once; beyond this a probe tick is skipped rather than pile up.
const PROBES_IN_FLIGHT: usize = 256;
/// Time allowed for the cluster to start and for the final catch-up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the sidecars have to converge after the last write before the check fails them.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the linearizability search may take over all registers.
const SEARCH_TIME: Duration = Duration::from_secs(300);

/// Why a run could not be carried out (as opposed to a run that found a violation).
#[derive(Debug, Error)]
pub enum RunError {
    #[error("bad option {0}")]
    Options(#[from] OptionsError),
    #[error("{0}")]
    Preflight(String),
    #[error("lab: {0}")]
    Lab(String),
    #[error("the cluster did not {what} within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("report: {0}")]
    Report(#[from] report::ReportError),
    #[error("{0}")]
    Other(String),
}

/// Runs one experiment and writes its report; `Ok` carries the report whether or not every
/// check passed.
pub async fn run(options: RunOptions) -> Result<RunReport, RunError> {
    options.validate()?;
    cluster::preflight(options.iptables.as_deref())?;
    std::fs::create_dir_all(&options.report_dir)
        .map_err(|e| RunError::Other(format!("{}: {e}", options.report_dir.display())))?;
    let started_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let clock = Clock::start();
    let mut cluster = Cluster::start(&options)?;
    let outcome = experiment(&options, &mut cluster, clock).await;
    let logs = cluster.log_dir();
    let replica_logs = cluster.log_paths();
    cluster.stop().await;
    let mut experiment = outcome?;
    experiment.replica_logs = replica_logs
        .into_iter()
        .map(|(replica, path)| {
            // A log that cannot be read is reported as such, and fails nothing by itself.
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                warn!(replica, path = %path.display(), error = %e, "cannot read a replica log");
                String::new()
            });
            (replica, text)
        })
        .collect();
    let end = clock.now();

    let checks = checks(&experiment);
    let passed = checks.iter().all(|c| c.passed);
    let records = figures::fault_records(&experiment.faults, &experiment.history, end);
    let (rate_bucket, acked_writes_per_bucket) = figures::write_rate(&experiment.history, end);
    let (writes, reads) = figures::counts(&experiment.history);
    let report = RunReport {
        seed: options.seed,
        replicas: options.replicas,
        sidecars: options.sidecars + options.raw_sidecars,
        started_unix_secs,
        duration: end,
        failover: figures::failover_stats(&records),
        faults: records,
        terms: figures::terms(&experiment.history),
        rate_bucket,
        acked_writes_per_bucket,
        writes,
        reads,
        sidecar_summary: SidecarSummary {
            count: experiment.sidecars.len(),
            versions_applied: experiment.history.sidecars.len() as u64,
            converged: experiment.converged,
            final_version: experiment.final_version,
        },
        checks,
        passed,
    };
    report::write_report(&options.report_dir, &report)?;
    if !passed || options.keep_history {
        let history = std::mem::take(&mut experiment.history);
        write_history(&options, &history)?;
    }
    info!(passed, logs = %logs.display(), "run finished");
    Ok(report)
}

fn write_history(options: &RunOptions, history: &History) -> Result<(), RunError> {
    let path = options.report_dir.join("history.json");
    let file = std::fs::File::create(&path)
        .map_err(|e| RunError::Other(format!("{}: {e}", path.display())))?;
    serde_json::to_writer(std::io::BufWriter::new(file), history)
        .map_err(|e| RunError::Other(format!("{}: {e}", path.display())))
}

/// What the experiment observed, for the checks and the figures.
#[derive(Debug, Default)]
struct Experiment {
    history: History,
    faults: Vec<FaultLog>,
    catalogs: Vec<(usize, CatalogDump)>,
    sidecars: Vec<SidecarFinal>,
    converged: usize,
    final_version: u64,
    subscribed: BTreeMap<String, ServiceDump>,
    crashes: Vec<String>,
    /// Each replica's log (every life of it), read after the run.
    replica_logs: Vec<(usize, String)>,
}

fn checks(experiment: &Experiment) -> Vec<CheckResult> {
    let history = &experiment.history;
    let linearizable = linearizable(&history.registers);
    let mut checks = vec![
        invariants::no_lost_writes(&history.ledger, &experiment.catalogs),
        invariants::replicas_equal(&experiment.catalogs),
        linearizable,
        applied_once::writes_applied_once(&history.registers),
        replica_record::requests_applied_once(&experiment.replica_logs),
        invariants::sidecars_never_backwards(history),
        invariants::sidecars_converged(&experiment.sidecars, &experiment.subscribed),
        invariants::one_leader_per_term(history),
    ];
    let unrecovered: Vec<String> = experiment
        .faults
        .iter()
        .enumerate()
        .filter(|(_, f)| f.recovered.is_none())
        .map(|(i, f)| {
            format!(
                "fault #{i} ({}, healed at {} µs): no single leader with every replica caught up",
                f.kind, f.healed
            )
        })
        .collect();
    checks.push(CheckResult {
        name: "no-replica-crashed".to_owned(),
        passed: experiment.crashes.is_empty(),
        detail: "a replica exits only when a fault stops it".to_owned(),
        violations: experiment.crashes.clone(),
    });
    checks.push(CheckResult {
        name: "recovered-after-each-heal".to_owned(),
        passed: unrecovered.is_empty(),
        detail: format!(
            "{} faults healed; each must leave one leader followed by every replica",
            experiment.faults.len()
        ),
        violations: unrecovered,
    });
    checks
}

/// The linearizability check, bounded in time: an undecided register fails it.
fn linearizable(registers: &[crate::history::RegisterOperation]) -> CheckResult {
    let budget = linearizability::Budget::until(std::time::Instant::now() + SEARCH_TIME);
    linearizability::check(registers, &budget).into_check_result()
}

/// Steps 3–5: the workload, the faults and the final state.
async fn experiment(
    options: &RunOptions,
    cluster: &mut Cluster,
    clock: Clock,
) -> Result<Experiment, RunError> {
    let recorder = Recorder::new();
    let addresses = cluster.addresses();
    let observer = Observer::start(addresses.clone(), OBSERVE_EVERY, recorder.clone(), clock);
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    while healthy(&observer, options.replicas, 0).is_none() {
        if let Some(crash) = cluster.find_crashes().pop() {
            return Err(RunError::Lab(format!("a replica did not start: {crash}")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RunError::Timeout {
                what: "elect a leader with every replica following it".to_owned(),
                timeout: STARTUP_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!("cluster is up");

    let sidecars = Sidecars::start(
        &addresses,
        options.sidecars,
        options.raw_sidecars,
        &recorder,
        clock,
        options.seed,
    )
    .map_err(|e| RunError::Other(format!("sidecar config: {e}")))?;
    let connections = Connections::new(addresses.clone());
    let keyspace = Arc::new(Keyspace::new(REGISTER_SLOTS, OPS_PER_REGISTER));
    let (stop_workers, stop_rx) = watch::channel(false);
    let settings = WorkerSettings {
        pause: options.operation_pause,
        seed: options.seed,
    };
    let mut next_client = 0u32;
    let mut worker = || {
        next_client += 1;
        Worker {
            client: next_client - 1,
            connections: connections.clone(),
            recorder: recorder.clone(),
            clock,
            stop: stop_rx.clone(),
        }
    };
    let mut workers = Vec::new();
    for _ in 0..options.register_writers {
        let task = catalog_ops::register_writer(worker(), keyspace.clone(), settings.clone());
        workers.push(tokio::spawn(task));
    }
    for _ in 0..options.ledger_writers {
        workers.push(tokio::spawn(catalog_ops::ledger_writer(
            worker(),
            settings.clone(),
        )));
    }
    let probes = ProbeSettings {
        interval: options.probe_interval,
        max_in_flight: PROBES_IN_FLIGHT,
        seed: options.seed,
    };
    workers.push(tokio::spawn(catalog_ops::probe_writer(worker(), probes)));
    for _ in 0..options.readers {
        let task = catalog_ops::register_reader(worker(), keyspace.clone(), settings.clone());
        workers.push(tokio::spawn(task));
    }
    let final_reader = worker();
    // Warm up: every sidecar has a config, writes flow.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let faults = inject_faults(options, cluster, &observer, clock).await;

    let _ = stop_workers.send(true);
    for worker in workers {
        if let Err(error) = worker.await {
            warn!(%error, "a worker task failed");
        }
    }
    // Everything healed: any replica still down would fail every check that follows.
    cluster.find_crashes();
    cluster.heal_everything().await?;
    let final_index = wait_quiet(&observer, options.replicas).await?;
    info!(final_index, "replicas caught up");

    // Final reads of every register, through the leader, go into the history too.
    let leader = observer.leader(FRESH).map_or(0, |(replica, _)| replica);
    for key in keyspace.all_used() {
        catalog_ops::read_register(&final_reader, leader, &key).await;
    }

    let mut catalogs = Vec::new();
    for replica in 0..options.replicas {
        match dump_catalog(&connections, replica).await {
            Ok(dump) => catalogs.push((replica, dump)),
            Err(error) => warn!(replica, %error, "cannot read the final catalog"),
        }
    }
    let subscribed: BTreeMap<String, ServiceDump> = catalogs
        .first()
        .map(|(_, dump)| {
            dump.iter()
                .filter(|(name, _)| name.starts_with(&format!("{REGISTER_NAMESPACE}/")))
                .map(|(name, service)| (name.clone(), service.clone()))
                .collect()
        })
        .unwrap_or_default();
    let final_version = subscribed
        .values()
        .map(|s| s.modify_index)
        .max()
        .unwrap_or(0);

    // Give the sidecars their bound to converge, then judge what they hold.
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    let mut finals = sidecar_finals(&sidecars, &recorder);
    while tokio::time::Instant::now() < deadline
        && !invariants::sidecars_converged(&finals, &subscribed).passed
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        finals = sidecar_finals(&sidecars, &recorder);
    }
    let converged = finals
        .iter()
        .filter(|s| invariants::sidecars_converged(std::slice::from_ref(s), &subscribed).passed)
        .count();
    sidecars.stop().await;
    observer.stop().await;
    cluster.find_crashes();
    Ok(Experiment {
        crashes: cluster.crashes().to_vec(),
        history: recorder.take(),
        faults,
        catalogs,
        sidecars: finals,
        converged,
        final_version,
        subscribed,
        replica_logs: Vec::new(),
    })
}

/// Injects the faults one after the other, each once the cluster recovered from the last.
async fn inject_faults(
    options: &RunOptions,
    cluster: &mut Cluster,
    observer: &Observer,
    clock: Clock,
) -> Vec<FaultLog> {
    let mut log = Vec::new();
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x9a9);
    let (mut stream, fixed, limit, until) = match &options.faults {
        FaultSource::Generated {
            faults,
            duration,
            profile,
        } => (
            Some(FaultStream::new(
                options.seed,
                options.replicas,
                profile.clone(),
            )),
            Vec::new(),
            faults.unwrap_or(usize::MAX),
            duration.map(|d| clock.elapsed() + d),
        ),
        FaultSource::File(schedule) => (None, schedule.faults.clone(), schedule.faults.len(), None),
    };
    let mut fixed = fixed.into_iter();
    for index in 0..limit {
        if until.is_some_and(|end| clock.elapsed() >= end) {
            break;
        }
        let fault: Fault = match &mut stream {
            Some(stream) => stream.next_fault(),
            None => match fixed.next() {
                Some(fault) => fault,
                None => break,
            },
        };
        cluster.find_crashes();
        let entry = faults::inject_and_heal(cluster, observer, clock, &fault, &mut rng).await;
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                warn!(index, %error, "fault could not be injected");
                continue;
            }
        };
        let healed_index = observer
            .leader(FRESH)
            .and_then(|(replica, _)| {
                observer
                    .fresh_samples(FRESH)
                    .get(&replica)
                    .map(|s| s.applied_index)
            })
            .unwrap_or(0);
        entry.recovered = wait_for("recover", options.settle_timeout, || {
            healthy(observer, options.replicas, healed_index).is_some()
        })
        .await
        .ok()
        .map(|()| clock.now());
        info!(
            index,
            kind = %entry.kind,
            recovered = entry.recovered.is_some(),
            "fault done"
        );
        log.push(entry);
        let gap = options.gap.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(gap).await;
    }
    log
}

/// The leader's replica when every replica answers, agrees on one leader in one term, and
/// has applied at least `index`.
fn healthy(observer: &Observer, replicas: usize, index: u64) -> Option<usize> {
    let samples = observer.fresh_samples(FRESH);
    if samples.len() < replicas {
        return None;
    }
    let (leader, term) = observer.leader(FRESH)?;
    let leader_node = samples.get(&leader)?.node_id;
    samples
        .values()
        .all(|s| s.term == term && s.leader == Some(leader_node) && s.applied_index >= index)
        .then_some(leader)
}

/// Waits until every replica applied the same index twice in a row, with one leader.
async fn wait_quiet(observer: &Observer, replicas: usize) -> Result<u64, RunError> {
    let mut previous = None;
    let deadline = tokio::time::Instant::now() + QUIESCE_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if healthy(observer, replicas, 0).is_some() {
            let samples = observer.fresh_samples(FRESH);
            let indexes: Vec<u64> = samples.values().map(|s| s.applied_index).collect();
            let first = indexes.first().copied().unwrap_or(0);
            if indexes.iter().all(|i| *i == first) {
                if previous == Some(first) {
                    return Ok(first);
                }
                previous = Some(first);
            }
        }
        tokio::time::sleep(OBSERVE_EVERY * 3).await;
    }
    Err(RunError::Timeout {
        what: "catch up on every replica after the last write".to_owned(),
        timeout: QUIESCE_TIMEOUT,
    })
}

/// Polls `ready` until it holds or `timeout` passes.
async fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), RunError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RunError::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One replica's whole catalog, read from its own applied state.
async fn dump_catalog(connections: &Connections, replica: usize) -> Result<CatalogDump, String> {
    let request = pb::ListServicesRequest {
        namespace: String::new(),
        consistency: pb::Consistency::Local as i32,
    };
    let response = connections
        .call(
            replica,
            |mut c| async move { c.list_services(request).await },
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut dump = CatalogDump::new();
    for service in response.services {
        if service.namespace != REGISTER_NAMESPACE && service.namespace != LEDGER_NAMESPACE {
            continue;
        }
        let endpoints = service
            .endpoints
            .iter()
            .map(|e| (e.address.clone(), e.port, e.ready, e.pod.clone()))
            .collect();
        dump.insert(
            format!("{}/{}", service.namespace, service.name),
            ServiceDump {
                endpoints,
                modify_index: service.modify_index,
            },
        );
    }
    Ok(dump)
}

/// What each sidecar holds now: client sidecars their published config, raw sidecars the
/// highest version they were sent.
fn sidecar_finals(sidecars: &Sidecars, recorder: &Recorder) -> Vec<SidecarFinal> {
    let mut finals: Vec<SidecarFinal> = sidecars
        .current_configs()
        .iter()
        .enumerate()
        .map(|(number, config)| SidecarFinal {
            sidecar: number as u32,
            version: config.version,
            services: Some(
                config
                    .services
                    .iter()
                    .map(|(name, service)| {
                        let routes = service
                            .endpoints
                            .iter()
                            .map(|e| (e.addr.to_string(), e.ready))
                            .collect();
                        (name.to_string(), routes)
                    })
                    .collect(),
            ),
        })
        .collect();
    let mut raw: BTreeMap<u32, u64> = BTreeMap::new();
    for event in recorder.raw_versions() {
        let best = raw.entry(event.0).or_insert(0);
        *best = (*best).max(event.1);
    }
    let clients = sidecars.client_count() as u32;
    for sidecar in clients..clients + sidecars.raw_count() as u32 {
        finals.push(SidecarFinal {
            sidecar,
            version: raw.get(&sidecar).copied().unwrap_or(0),
            services: None,
        });
    }
    finals
}

/// Microseconds as milliseconds for logs.
pub fn millis(value: Micros) -> f64 {
    value as f64 / 1000.0
}
