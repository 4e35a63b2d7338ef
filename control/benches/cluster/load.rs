//! The load both systems get: the same writers, phases and measurements, whatever the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::etcd;
use crate::netting;
use crate::procs::{cpu_time, machine_cpu};
use crate::web::{self, Http};

/// Longest a write of the sequential and throughput phases may take before it counts as an
/// error. Far above any healthy latency; it only keeps a wedged cluster from hanging the run.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a failover probe waits. Probes start every few milliseconds whatever the others
/// do, so one stuck on a dead leader never delays the measurement.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a failover may take before the repetition counts as failed.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Sequence numbers for every write of the run, so every write creates something new.
static SEQ: AtomicU64 = AtomicU64::new(1);

fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A client of one member, sending the writes of one writer.
#[derive(Clone)]
pub(crate) enum Writer {
    Netting {
        /// The member it writes to, then the ones it fails over to.
        clients: Vec<CatalogClient<Channel>>,
        writer: usize,
        payload: usize,
    },
    EtcdGateway {
        http: Http,
        uri: Arc<str>,
        writer: usize,
        value_b64: Arc<str>,
    },
    EtcdGrpc {
        grpc: tonic::client::Grpc<Channel>,
        writer: usize,
        value: Bytes,
    },
}

impl Writer {
    async fn write(&mut self, n: u64) -> Result<Ack, String> {
        match self {
            Writer::Netting {
                clients,
                writer,
                payload,
            } => netting::write(clients, *writer, n, *payload).await,
            Writer::EtcdGateway {
                http,
                uri,
                writer,
                value_b64,
            } => etcd::put_gateway(http, uri, *writer, n, value_b64).await,
            Writer::EtcdGrpc {
                grpc,
                writer,
                value,
            } => etcd::put_grpc(grpc, *writer, n, value).await,
        }
    }

    async fn write_timed(&mut self) -> Result<Ack, String> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.write(next_seq())).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
        }
    }
}

/// What an acknowledgement says about who committed the write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    /// The leader that committed it (Netting answers with it).
    pub(crate) leader: Option<u64>,
    /// The Raft term of the member that answered (etcd answers with it).
    pub(crate) term: Option<u64>,
}

/// Acknowledgements that prove a new leader took over. An acknowledgement that arrives just
/// after the kill may be for a write the killed leader had already committed; it says nothing
/// about failover and must not stop the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Era {
    /// Netting: committed by a leader other than the killed one.
    NotLedBy(u64),
    /// etcd: answered in a term after the killed leader's.
    AfterTerm(u64),
}

impl Era {
    fn includes(self, ack: &Ack) -> bool {
        match self {
            Era::NotLedBy(killed) => ack.leader.is_some_and(|l| l != killed),
            Era::AfterTerm(term) => ack.term.is_some_and(|t| t > term),
        }
    }
}

/// What the phases need from a cluster of 3 members, indexed 0..3.
pub(crate) trait Cluster {
    fn name(&self) -> &'static str;
    /// Polls until every running member names the same leader; returns its index.
    async fn wait_leader(&self) -> usize;
    /// A connected client of `member` for writer number `writer`.
    async fn writer(&self, member: usize, writer: usize) -> Writer;
    /// How to recognise acknowledgements of writes committed after `leader` is gone.
    async fn era(&self, leader: usize) -> Era;
    /// Process ids of the running members.
    fn pids(&self) -> Vec<u32>;
    /// Each member's Prometheus page while it runs, by index.
    fn metrics_uris(&self) -> Vec<Option<String>>;
    /// The histogram whose count is the member's log fsyncs.
    fn sync_histogram(&self) -> &'static str;
    /// Histograms of the leader's write path worth showing after a throughput phase.
    fn leader_histograms(&self) -> &'static [&'static str];
    /// `kill -9` of `member`; the instant the signal was sent.
    fn kill(&mut self, member: usize) -> Instant;
    /// Starts a killed member again on its data directory.
    fn restart(&mut self, member: usize);
    /// Polls until all 3 members run, agree on the leader and hold the same log.
    async fn wait_converged(&self);
}

/// Latencies, sorted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latencies(Vec<Duration>);

impl Latencies {
    pub(crate) fn new(mut all: Vec<Duration>) -> Self {
        all.sort_unstable();
        Latencies(all)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    pub(crate) fn percentile(&self, p: f64) -> Option<Duration> {
        if self.0.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        Some(self.0[rank.clamp(1, self.0.len()) - 1])
    }

    pub(crate) fn max(&self) -> Option<Duration> {
        self.0.last().copied()
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms (n={})",
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.max()),
            self.len()
        )
    }
}

/// Milliseconds with one decimal, or "-" when there is nothing.
pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

#[derive(Debug, Clone)]
pub(crate) struct Sequential {
    pub(crate) latencies: Latencies,
    pub(crate) errors: usize,
}

/// `n` writes one after another to the leader.
pub(crate) async fn sequential<C: Cluster>(cluster: &C, n: usize) -> Sequential {
    let leader = cluster.wait_leader().await;
    let mut writer = cluster.writer(leader, 0).await;
    // The same few unmeasured writes for every system: connection set-up and first-use paths
    // are not what this phase measures.
    for _ in 0..10 {
        let _ = writer.write_timed().await;
    }
    let internals = Internals::start(cluster, leader).await;
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    for _ in 0..n {
        let started = Instant::now();
        match writer.write_timed().await {
            Ok(_) => latencies.push(started.elapsed()),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let result = Sequential {
        latencies: Latencies::new(latencies),
        errors,
    };
    println!(
        "{} sequential, {n} writes to the leader (node {leader}): {}, errors {errors}{}",
        cluster.name(),
        result.latencies.summary(),
        first_error.map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    internals.finish().await;
    result
}

#[derive(Debug, Clone)]
pub(crate) struct Throughput {
    pub(crate) writes: usize,
    pub(crate) errors: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Latencies,
    /// CPU the 3 members used during the phase.
    pub(crate) server_cpu: Duration,
    /// CPU the benchmark process (the clients) used during the phase.
    pub(crate) client_cpu: Duration,
    /// CPU everything else on the machine used during the phase: noise if not near zero.
    pub(crate) other_cpu: Duration,
    /// Time the hypervisor ran other guests on our cores during the phase.
    pub(crate) steal: Duration,
    /// Log fsyncs on all members during the phase.
    pub(crate) log_syncs: Option<f64>,
}

impl Throughput {
    pub(crate) fn per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU per acknowledged write, in microseconds.
    pub(crate) fn server_cpu_per_write_us(&self) -> Option<f64> {
        (self.writes > 0).then(|| self.server_cpu.as_secs_f64() * 1e6 / self.writes as f64)
    }

    /// Log fsyncs (all members) per acknowledged write.
    pub(crate) fn syncs_per_write(&self) -> Option<f64> {
        let syncs = self.log_syncs?;
        (self.writes > 0).then(|| syncs / self.writes as f64)
    }
}

/// CPU used so far by `pids` together.
fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|pid| cpu_time(&pid.to_string()))
        .sum()
}

/// `writers` concurrent writers, each writing as fast as its acknowledgements come back, for
/// `duration`. Spread: writer k talks to member k mod 3 (followers pass writes on to the
/// leader); otherwise all talk to the leader.
pub(crate) async fn throughput<C: Cluster>(
    cluster: &C,
    writers: usize,
    duration: Duration,
    spread: bool,
) -> Throughput {
    let leader = cluster.wait_leader().await;
    let mut clients = Vec::with_capacity(writers);
    for w in 0..writers {
        let member = if spread { w % 3 } else { leader };
        clients.push(cluster.writer(member, w).await);
    }
    let pids = cluster.pids();
    let http = web::client();
    let uris: Vec<String> = cluster.metrics_uris().into_iter().flatten().collect();
    let sync_count = format!("{}_count", cluster.sync_histogram());
    let syncs_before = web::metric_sum(&http, &uris, &sync_count).await;
    let internals = Internals::start(cluster, leader).await;
    let server_before = cpu_of(&pids);
    let client_before = cpu_time("self").unwrap_or_default();
    let machine_before = machine_cpu();
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = JoinSet::new();
    for mut client in clients {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                match client.write_timed().await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(e) => errors.push(e),
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.expect("a writer task panicked");
        latencies.extend(l);
        errors.extend(e);
    }
    // Until the last writer's last answer: every counted write fits in this time.
    let elapsed = started.elapsed();
    let server_cpu = cpu_of(&pids).saturating_sub(server_before);
    let client_cpu = cpu_time("self")
        .unwrap_or_default()
        .saturating_sub(client_before);
    let (other_cpu, steal) = match (machine_before, machine_cpu()) {
        (Some((busy0, steal0)), Some((busy1, steal1))) => (
            busy1
                .saturating_sub(busy0)
                .saturating_sub(server_cpu)
                .saturating_sub(client_cpu),
            steal1.saturating_sub(steal0),
        ),
        _ => (Duration::ZERO, Duration::ZERO),
    };
    let log_syncs = match (
        syncs_before,
        web::metric_sum(&http, &uris, &sync_count).await,
    ) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };

    let result = Throughput {
        writes: latencies.len(),
        errors: errors.len(),
        elapsed,
        latencies: Latencies::new(latencies),
        server_cpu,
        client_cpu,
        other_cpu,
        steal,
        log_syncs,
    };
    println!(
        "{} throughput, {writers} writers {} for {:.1} s: {} writes, {:.0} writes/s, {}, errors {}{}",
        cluster.name(),
        if spread {
            "spread over the 3 members".to_owned()
        } else {
            format!("all on the leader (node {leader})")
        },
        elapsed.as_secs_f64(),
        result.writes,
        result.per_second(),
        result.latencies.summary(),
        result.errors,
        errors
            .first()
            .map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    let secs = elapsed.as_secs_f64();
    println!(
        "    CPU: servers {:.2} cores ({} us per write), clients {:.2} cores, rest of the \
         machine {:.2} cores, steal {:.2} cores; log fsyncs on all members: {} ({} per write)",
        server_cpu.as_secs_f64() / secs,
        result
            .server_cpu_per_write_us()
            .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
        client_cpu.as_secs_f64() / secs,
        other_cpu.as_secs_f64() / secs,
        steal.as_secs_f64() / secs,
        log_syncs.map_or_else(|| "-".into(), |v| format!("{v:.0}")),
        result
            .syncs_per_write()
            .map_or_else(|| "-".into(), |v| format!("{v:.3}")),
    );
    internals.finish().await;
    result
}

/// The leader's own view of a phase: means of its write-path histograms between two scrapes
/// of its /metrics page. Shows where the time of a write goes (disk, batching, replication).
struct Internals {
    http: Http,
    leader: usize,
    uri: Option<String>,
    names: &'static [&'static str],
    before: String,
}

impl Internals {
    async fn start<C: Cluster>(cluster: &C, leader: usize) -> Internals {
        let http = web::client();
        let uri = cluster.metrics_uris().get(leader).cloned().flatten();
        let before = scrape(&http, uri.as_deref()).await;
        Internals {
            http,
            leader,
            uri,
            names: cluster.leader_histograms(),
            before,
        }
    }

    async fn finish(self) {
        let after = scrape(&self.http, self.uri.as_deref()).await;
        let means: Vec<String> = self
            .names
            .iter()
            .filter_map(|name| mean_between(&self.before, &after, name))
            .collect();
        if !means.is_empty() {
            println!(
                "    leader (node {}) during the phase: {}",
                self.leader,
                means.join("; ")
            );
        }
    }
}

async fn scrape(http: &Http, uri: Option<&str>) -> String {
    match uri {
        Some(uri) => web::get(http, uri)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// "name mean M (n=N)" of the observations a histogram or summary got between two scrapes;
/// durations in milliseconds.
fn mean_between(before: &str, after: &str, name: &str) -> Option<String> {
    let delta = |suffix: &str| {
        let key = format!("{name}_{suffix}");
        Some(web::metric(after, &key)? - web::metric(before, &key).unwrap_or(0.0))
    };
    let (sum, count) = (delta("sum")?, delta("count")?);
    if count <= 0.0 {
        return None;
    }
    Some(if name.ends_with("_seconds") {
        format!("{name} mean {:.2} ms (n={count:.0})", sum / count * 1000.0)
    } else {
        format!("{name} mean {:.1} (n={count:.0})", sum / count)
    })
}

#[derive(Debug, Clone)]
pub(crate) struct Failover {
    pub(crate) times: Latencies,
    pub(crate) failed: usize,
}

/// `repetitions` times: writes keep flowing through the two followers, the leader is killed
/// with SIGKILL, and the time from the signal to the first write acknowledged by a new leader
/// is recorded. The killed member is then restarted and the cluster converges before the next
/// repetition.
pub(crate) async fn failover<C: Cluster>(
    cluster: &mut C,
    repetitions: usize,
    probe_every: Duration,
) -> Failover {
    let mut times = Vec::new();
    let mut failed = 0;
    for rep in 1..=repetitions {
        cluster.wait_converged().await;
        let leader = cluster.wait_leader().await;
        let era = cluster.era(leader).await;
        let survivors: Vec<usize> = (0..3).filter(|m| *m != leader).collect();
        let mut writers = Vec::new();
        for (k, member) in survivors.iter().enumerate() {
            writers.push(cluster.writer(*member, 1000 + rep * 2 + k).await);
        }
        let (tx, mut acks) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let probes = tokio::spawn(probe(writers, probe_every, Arc::clone(&stop), tx));

        // Writes are flowing before the kill, so the clock measures failover, not warm-up.
        let mut flowing = 0;
        while flowing < 5 {
            match tokio::time::timeout(FAILOVER_PATIENCE, acks.recv()).await {
                Ok(Some((_, Ok(_)))) => flowing += 1,
                Ok(Some((_, Err(_)))) => {}
                _ => panic!(
                    "{}: writes through the followers never succeeded",
                    cluster.name()
                ),
            }
        }

        let wall = std::time::SystemTime::now();
        let killed = cluster.kill(leader);
        let deadline = tokio::time::Instant::from_std(killed + FAILOVER_PATIENCE);
        let mut refused = 0;
        let outcome = loop {
            match tokio::time::timeout_at(deadline, acks.recv()).await {
                Ok(Some((at, Ok(ack)))) if at >= killed && era.includes(&ack) => {
                    break Some(at - killed);
                }
                Ok(Some((at, Err(_)))) if at >= killed => refused += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break None,
            }
        };
        stop.store(true, Ordering::Relaxed);
        let _ = probes.await;
        match outcome {
            Some(took) => {
                println!(
                    "{} failover {rep}/{repetitions}: killed leader node {leader} at {}; next \
                     write acknowledged by a new leader after {} ms ({refused} probes failed \
                     meanwhile)",
                    cluster.name(),
                    time_of_day(wall),
                    ms(Some(took))
                );
                times.push(took);
            }
            None => {
                failed += 1;
                println!(
                    "{} failover {rep}/{repetitions}: killed leader node {leader} at {}; NO \
                     write acknowledged by a new leader within {FAILOVER_PATIENCE:?}",
                    cluster.name(),
                    time_of_day(wall)
                );
            }
        }
        cluster.restart(leader);
    }
    cluster.wait_converged().await;
    let result = Failover {
        times: Latencies::new(times),
        failed,
    };
    println!(
        "{} failover over {repetitions} kills: {}, failed {failed}",
        cluster.name(),
        result.times.summary()
    );
    result
}

type Probed = (Instant, Result<Ack, String>);

/// Starts a write every `every`, alternating over `writers`, until `stop`; reports each
/// answer with the instant it arrived. Open loop: a write stuck on the dead leader does not
/// hold back the next one.
async fn probe(
    writers: Vec<Writer>,
    every: Duration,
    stop: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Probed>,
) {
    let mut in_flight = JoinSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut writer = writers[k % writers.len()].clone();
        k += 1;
        let tx = tx.clone();
        in_flight.spawn(async move {
            let result = tokio::time::timeout(PROBE_TIMEOUT, writer.write(next_seq())).await;
            let at = Instant::now();
            let result = result.unwrap_or_else(|_| Err("timed out".into()));
            let _ = tx.send((at, result));
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// "HH:MM:SS.mmm" UTC, to find a kill in the members' logs.
fn time_of_day(t: std::time::SystemTime) -> String {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}
