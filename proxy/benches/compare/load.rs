//! A constant-rate HTTP/1.1 load generator: Debian has `wrk` but not `wrk2`, and `h2load
//! --rate` sets a rate of new connections, not of requests, so latency at a fixed request rate
//! is measured here.
//!
//! `connections` keep-alive connections share the rate: connection `k` sends request `i` at
//! `start + k·T/connections + i·T`, with `T = connections / rate`. The schedule is open-loop:
//! a late response does not push the next send back, the next send is just late. Latency is
//! measured from the actual send, unless the send was more than [`SLACK`] behind its schedule
//! (the connection was still waiting for an earlier response); then it is measured from the
//! scheduled time, so that a stall is charged to every request it delayed (no coordinated
//! omission). The slack absorbs tokio's 1 ms timer granularity, which would otherwise add up to
//! a millisecond to every figure.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, sleep_until, timeout};

use super::netns;

/// How late a send may be and still be timed from itself.
const SLACK: Duration = Duration::from_millis(2);
/// A request that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One constant-rate run.
#[derive(Debug, Clone)]
pub(crate) struct RateRun {
    /// The latencies of the measured requests, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Requests that failed or timed out (each also reconnects its connection).
    pub(crate) errors: u64,
    /// Sends more than [`SLACK`] behind schedule (timed from the schedule).
    pub(crate) late: u64,
}

impl RateRun {
    /// Adds another run's samples and counts to this one.
    pub(crate) fn merge(&mut self, other: RateRun) {
        self.latencies.extend(other.latencies);
        self.latencies.sort();
        self.errors += other.errors;
        self.late += other.late;
    }

    /// The `q`-quantile (0 < q ≤ 1), nearest rank.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Where to send and how hard.
#[derive(Debug, Clone)]
pub(crate) struct RateSpec {
    /// The client's namespace: its sockets are made there (redirection applies).
    pub(crate) namespace: String,
    pub(crate) target: SocketAddr,
    pub(crate) rate: u32,
    pub(crate) connections: usize,
    /// Sent at the rate but not measured: connection set-up, caches, the balancer's estimates.
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
}

async fn connect(spec: &RateSpec) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let socket = netns::socket(&spec.namespace).context("socket in the client namespace")?;
    let stream = timeout(REQUEST_TIMEOUT, socket.connect(spec.target))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connecting to {}", spec.target))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn one_request(sender: &mut SendRequest<Empty<Bytes>>, host: &str) -> anyhow::Result<()> {
    sender.ready().await?;
    let request = Request::get("/")
        .header(http::header::HOST, host)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        anyhow::bail!("status {}", response.status());
    }
    response.into_body().collect().await?;
    Ok(())
}

/// Runs the schedule; fails only when a connection cannot be opened at the start.
pub(crate) async fn constant_rate(spec: &RateSpec) -> anyhow::Result<RateRun> {
    let mut senders = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        senders.push(connect(spec).await?);
    }
    let period = Duration::from_secs_f64(spec.connections as f64 / f64::from(spec.rate));
    let base = Instant::now() + Duration::from_millis(50);
    let measure_from = base + spec.warmup;
    let end = measure_from + spec.duration;
    let host = spec.target.to_string();

    let mut workers = Vec::new();
    for (k, mut sender) in senders.into_iter().enumerate() {
        let spec = spec.clone();
        let host = host.clone();
        let first = base + period.mul_f64(k as f64 / spec.connections as f64);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut late) = (0u64, 0u64);
            let mut due = first;
            while due < end {
                sleep_until(due).await;
                let sent = Instant::now();
                let origin = if sent.duration_since(due) > SLACK {
                    if due >= measure_from {
                        late += 1;
                    }
                    due
                } else {
                    sent
                };
                let outcome = timeout(REQUEST_TIMEOUT, one_request(&mut sender, &host)).await;
                let done = Instant::now();
                match outcome {
                    Ok(Ok(())) => {
                        if due >= measure_from {
                            latencies.push(done.duration_since(origin));
                        }
                    }
                    _ => {
                        errors += 1;
                        if let Ok(fresh) = connect(&spec).await {
                            sender = fresh;
                        }
                    }
                }
                due += period;
            }
            (latencies, errors, late)
        }));
    }
    let mut run = RateRun {
        latencies: Vec::new(),
        errors: 0,
        late: 0,
    };
    for worker in workers {
        let (latencies, errors, late) = worker.await.context("a load worker panicked")?;
        run.latencies.extend(latencies);
        run.errors += errors;
        run.late += late;
    }
    run.latencies.sort();
    Ok(run)
}
