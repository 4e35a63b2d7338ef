//! Endpoint choice: power of two choices over a peak-EWMA cost.
//!
//! Each endpoint has a latency estimate that jumps up at once to a slower sample (the "peak")
//! and decays towards faster ones with a time constant, so a slow or failing endpoint is
//! avoided immediately and trusted again gradually. Its cost is that estimate times one plus
//! the requests (or connections) in flight to it. A pick draws two distinct endpoints at random
//! and takes the cheaper: almost as good as scanning all of them, at constant cost, and without
//! every proxy herding onto the same "best" endpoint.
//!
//! Statistics are kept per endpoint address, across config versions: an endpoint that stays
//! in the catalog keeps what was learnt about it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The estimate of an endpoint never measured: optimistic enough that new endpoints get
/// traffic, not so low that they take all of it.
const DEFAULT_LATENCY: Duration = Duration::from_millis(10);
/// What a failure (connect error, reset, timeout) counts as: the endpoint is avoided until
/// the penalty decays.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Time constant of the decay towards faster samples.
const DECAY: Duration = Duration::from_secs(10);

/// How a request or connection to an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success(Duration),
    Failure,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    /// Latency estimate, in nanoseconds; meaningful once `measured`.
    estimate: f64,
    measured: bool,
    updated: Instant,
    in_flight: u32,
}

impl Stats {
    fn new(now: Instant) -> Stats {
        Stats {
            estimate: DEFAULT_LATENCY.as_nanos() as f64,
            measured: false,
            updated: now,
            in_flight: 0,
        }
    }

    fn observe(&mut self, sample: Duration, now: Instant) {
        if !self.measured {
            self.measured = true;
            self.estimate = sample.as_nanos() as f64;
            self.updated = now;
            return;
        }
        let sample = sample.as_nanos() as f64;
        if sample > self.estimate {
            self.estimate = sample;
        } else {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            let keep = (-elapsed / DECAY.as_secs_f64()).exp();
            self.estimate = self.estimate * keep + sample * (1.0 - keep);
        }
        self.updated = now;
    }

    /// The estimate times the load; an endpoint not measured yet is assumed as fast as the
    /// average measured one (`typical`), so it competes on load alone: a fixed default would
    /// make it lose forever to fast endpoints, or win everything against slow ones.
    fn cost(&self, typical: f64) -> f64 {
        let estimate = if self.measured {
            self.estimate
        } else {
            typical
        };
        estimate * f64::from(self.in_flight + 1)
    }
}

/// The balancer of one proxy, shared by all its connections.
#[derive(Debug)]
pub struct Balancer {
    stats: Mutex<HashMap<SocketAddr, Stats>>,
    rng: Mutex<SmallRng>,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer::new()
    }
}

impl Balancer {
    pub fn new() -> Balancer {
        Balancer::with_rng(SmallRng::from_os_rng())
    }

    /// A balancer whose random draws are repeatable (tests).
    pub fn seeded(seed: u64) -> Balancer {
        Balancer::with_rng(SmallRng::seed_from_u64(seed))
    }

    fn with_rng(rng: SmallRng) -> Balancer {
        Balancer {
            stats: Mutex::new(HashMap::new()),
            rng: Mutex::new(rng),
        }
    }

    /// One of `endpoints`: the cheaper of two drawn at random; `None` when there are none.
    pub fn pick(&self, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        match endpoints.len() {
            0 => None,
            1 => Some(endpoints[0]),
            n => {
                let (a, b) = {
                    let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
                    let a = rng.random_range(0..n);
                    // A second index, distinct from the first.
                    let b = (a + rng.random_range(1..n)) % n;
                    (endpoints[a], endpoints[b])
                };
                let now = Instant::now();
                let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                let typical = typical_estimate(&stats, a, b);
                let cost = |addr: &SocketAddr| {
                    stats
                        .get(addr)
                        .copied()
                        .unwrap_or(Stats::new(now))
                        .cost(typical)
                };
                Some(if cost(&b) < cost(&a) { b } else { a })
            }
        }
    }

    /// Counts one request or connection in flight to `endpoint` until the guard finishes.
    pub fn start(self: &Arc<Self>, endpoint: SocketAddr) -> InFlight {
        let now = Instant::now();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats
            .entry(endpoint)
            .or_insert_with(|| Stats::new(now))
            .in_flight += 1;
        InFlight {
            balancer: Arc::clone(self),
            endpoint,
            started: now,
            finished: false,
        }
    }

    /// Forgets endpoints for which `keep` is false and nothing is in flight: called when the
    /// config changes, so the table does not grow with every endpoint ever seen.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.retain(|addr, s| s.in_flight > 0 || keep(addr));
    }

    /// The current latency estimate and requests in flight of `endpoint` (tests, debugging).
    pub fn snapshot(&self, endpoint: SocketAddr) -> Option<(Duration, u32)> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats
            .get(&endpoint)
            .map(|s| (Duration::from_nanos(s.estimate as u64), s.in_flight))
    }

    fn end(&self, endpoint: SocketAddr, outcome: Outcome) {
        let now = Instant::now();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = stats.entry(endpoint).or_insert_with(|| Stats::new(now));
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Success(latency) => entry.observe(latency, now),
            Outcome::Failure => entry.observe(FAILURE_PENALTY, now),
        }
    }
}

/// The estimate an unmeasured endpoint is given when compared with `a` or `b`: the mean of
/// whichever of the two is measured, else the default.
fn typical_estimate(stats: &HashMap<SocketAddr, Stats>, a: SocketAddr, b: SocketAddr) -> f64 {
    let measured: Vec<f64> = [a, b]
        .iter()
        .filter_map(|addr| stats.get(addr).filter(|s| s.measured).map(|s| s.estimate))
        .collect();
    if measured.is_empty() {
        DEFAULT_LATENCY.as_nanos() as f64
    } else {
        measured.iter().sum::<f64>() / measured.len() as f64
    }
}

/// A request or connection in flight to one endpoint.
#[derive(Debug)]
pub struct InFlight {
    balancer: Arc<Balancer>,
    endpoint: SocketAddr,
    started: Instant,
    finished: bool,
}

impl InFlight {
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Records a success, with the time since the guard was made as its latency.
    pub fn succeeded(self) {
        let latency = self.started.elapsed();
        self.finish(Outcome::Success(latency));
    }

    /// Records how it ended.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.balancer.end(self.endpoint, outcome);
    }
}

impl Drop for InFlight {
    /// A guard dropped without an outcome (the request was cancelled, the task panicked)
    /// counts as a failure: not knowing is no reason to prefer the endpoint.
    fn drop(&mut self) {
        if !self.finished {
            self.balancer.end(self.endpoint, Outcome::Failure);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect()
    }

    #[test]
    fn no_endpoints_no_pick_and_one_endpoint_always() {
        let balancer = Balancer::seeded(1);
        assert_eq!(balancer.pick(&[]), None);
        let one = addrs(1);
        assert_eq!(balancer.pick(&one), Some(one[0]));
    }

    #[test]
    fn untried_endpoints_share_the_load() {
        let balancer = Balancer::seeded(2);
        let endpoints = addrs(3);
        let mut counts = HashMap::new();
        for _ in 0..3000 {
            *counts
                .entry(balancer.pick(&endpoints).unwrap())
                .or_insert(0) += 1;
        }
        for endpoint in &endpoints {
            let share = counts[endpoint];
            assert!((700..1300).contains(&share), "{counts:?}");
        }
    }

    #[test]
    fn a_failing_endpoint_is_avoided() {
        let balancer = Arc::new(Balancer::seeded(3));
        let endpoints = addrs(2);
        balancer.start(endpoints[0]).finish(Outcome::Failure);
        balancer
            .start(endpoints[1])
            .finish(Outcome::Success(Duration::from_millis(5)));
        // With two endpoints both are always drawn, so the cheaper always wins.
        for _ in 0..100 {
            assert_eq!(balancer.pick(&endpoints), Some(endpoints[1]));
        }
    }

    #[test]
    fn requests_in_flight_raise_the_cost() {
        let balancer = Arc::new(Balancer::seeded(4));
        let endpoints = addrs(2);
        let busy: Vec<InFlight> = (0..3).map(|_| balancer.start(endpoints[0])).collect();
        assert_eq!(balancer.snapshot(endpoints[0]).unwrap().1, 3);
        assert_eq!(balancer.pick(&endpoints), Some(endpoints[1]));
        for guard in busy {
            guard.succeeded();
        }
        assert_eq!(balancer.snapshot(endpoints[0]).unwrap().1, 0);
    }

    #[test]
    fn a_slow_sample_counts_at_once_and_fast_ones_decay_towards_it() {
        let now = Instant::now();
        let mut stats = Stats::new(now);
        stats.observe(Duration::from_millis(20), now);
        assert_eq!(stats.estimate, 20e6);
        // Slower: taken at once.
        stats.observe(Duration::from_millis(100), now);
        assert_eq!(stats.estimate, 100e6);
        // A fast sample right away moves the estimate hardly at all...
        stats.observe(Duration::from_millis(1), now);
        assert!(stats.estimate > 99e6, "{}", stats.estimate);
        // ...and after several time constants it has mostly taken over.
        stats.observe(Duration::from_millis(1), now + DECAY * 5);
        assert!(stats.estimate < 2e6, "{}", stats.estimate);
    }

    #[test]
    fn an_unmeasured_endpoint_competes_with_a_measured_fast_one() {
        let balancer = Arc::new(Balancer::seeded(6));
        let endpoints = addrs(2);
        balancer
            .start(endpoints[0])
            .finish(Outcome::Success(Duration::from_micros(200)));
        // Sequential picks: with nothing in flight the unmeasured endpoint ties with the
        // measured one (same assumed latency), so it is tried, not starved.
        let mut seen_new = false;
        for _ in 0..50 {
            let pick = balancer.pick(&endpoints).unwrap();
            seen_new |= pick == endpoints[1];
            balancer
                .start(pick)
                .finish(Outcome::Success(Duration::from_micros(200)));
        }
        assert!(seen_new, "the new endpoint never got a request");
    }

    #[test]
    fn a_dropped_guard_counts_as_a_failure_and_retain_forgets_idle_endpoints() {
        let balancer = Arc::new(Balancer::seeded(5));
        let endpoints = addrs(2);
        drop(balancer.start(endpoints[0]));
        assert_eq!(balancer.snapshot(endpoints[0]).unwrap().0, FAILURE_PENALTY);
        let held = balancer.start(endpoints[1]);
        balancer.retain(|_| false);
        assert!(balancer.snapshot(endpoints[0]).is_none());
        // Still in flight: kept until it ends.
        assert!(balancer.snapshot(endpoints[1]).is_some());
        held.succeeded();
    }
}
