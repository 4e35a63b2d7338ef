//! Reconnect delays: exponential ceiling with full jitter.
//!
//! Full jitter (a uniform draw between zero and the ceiling) spreads the reconnects of every
//! proxy that lost the same replica at the same instant, so the surviving replicas are not hit
//! by a synchronised wave. The RNG is a parameter so the sequence is testable.

use std::time::Duration;

use rand::Rng;

/// The state of one client's reconnect delays.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last reset; the ceiling is `min * 2^attempt`, capped.
    attempt: u32,
}

impl Backoff {
    /// `min` ≤ `max` is checked by the config.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        // Past 2^31 the cap has long been reached; `checked_*` keeps huge attempt counts
        // from overflowing instead of wrapping to a short delay.
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .map_or(self.max, |ceiling| ceiling.min(self.max))
    }

    /// The delay before the next attempt; each call raises the ceiling for the one after.
    pub(crate) fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let delay = full_jitter(self.ceiling(), rng);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Back to the shortest delays, after a stream that did useful work.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniform draw from `[0, ceiling]`.
pub(crate) fn full_jitter<R: Rng + ?Sized>(ceiling: Duration, rng: &mut R) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const MS: Duration = Duration::from_millis(1);

    /// The ceiling doubles from `min` on each attempt and stops at `max`.
    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(100 * MS, 5000 * MS);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(backoff.ceiling());
            backoff.next_delay(&mut rng);
        }
        let expected: Vec<Duration> = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
            .iter()
            .map(|&ms| ms * MS)
            .collect();
        assert_eq!(ceilings, expected);
    }

    /// Every delay lies within `[0, ceiling]`, and the draws are actually spread out.
    #[test]
    fn delays_are_within_bounds_and_jittered() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut backoff = Backoff::new(100 * MS, 5000 * MS);
        for _ in 0..50 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= ceiling, "{delay:?} above {ceiling:?}");
        }
        let draws: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| full_jitter(100 * MS, &mut rng)).collect();
        assert!(draws.len() > 40, "full jitter should rarely repeat a draw");
        assert!(draws.iter().any(|d| *d < 50 * MS) && draws.iter().any(|d| *d > 50 * MS));
    }

    /// Resetting brings the ceiling back to `min`.
    #[test]
    fn reset_returns_to_min() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::new(100 * MS, 5000 * MS);
        for _ in 0..5 {
            backoff.next_delay(&mut rng);
        }
        assert_eq!(backoff.ceiling(), 3200 * MS);
        backoff.reset();
        assert_eq!(backoff.ceiling(), 100 * MS);
        assert!(backoff.next_delay(&mut rng) <= 100 * MS);
        assert_eq!(backoff.ceiling(), 200 * MS);
    }

    /// Thousands of failures never overflow into a short or a panicking delay.
    #[test]
    fn many_attempts_stay_at_the_cap() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for _ in 0..10_000 {
            assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(3600));
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(3600));
        // A ceiling beyond u64 nanoseconds saturates instead of panicking.
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(), Duration::MAX);
        full_jitter(huge.ceiling(), &mut rng);
    }
}
