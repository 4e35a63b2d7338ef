//! Which requests may be retried, and how many retries the proxy can afford.
//!
//! A request is retried only when that cannot change what the server does (an idempotent
//! method) and its body can be sent again (none, or small and held in memory — large bodies
//! are never buffered just in case). It is retried when no response came back (connect
//! failure, reset) or the response says the endpoint could not serve it (502, 503, 504),
//! preferably on another endpoint, at most `max_retries` times, and only while the
//! [`RetryBudget`] allows: without a budget, retries during an outage multiply the load on
//! the endpoints that are still up exactly when they can least take it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

/// The largest request body held in memory so that the request can be retried.
pub(crate) const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Methods whose effect does not depend on how many times they are sent (RFC 9110, 9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Responses that mean "this endpoint could not serve it", worth trying elsewhere.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// How many retries a proxy may add to the requests it forwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per request forwarded, over the window (0.2: one per five requests).
    pub ratio: f64,
    /// Retries allowed per second of the window whatever the traffic, so that a proxy with
    /// little traffic can still retry.
    pub min_per_second: u32,
    /// How far back requests and retries count (rounded up to whole seconds).
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Counts requests and retries over a sliding window of one-second slots and allows a retry
/// while `retries < min_per_second × window + ratio × requests`. One per proxy, shared by all
/// its connections.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    config: BudgetConfig,
    origin: Instant,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The second (since `origin`) the counts belong to.
    second: u64,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    pub(crate) fn new(config: BudgetConfig) -> RetryBudget {
        RetryBudget::starting_at(config, Instant::now())
    }

    fn starting_at(config: BudgetConfig, origin: Instant) -> RetryBudget {
        let seconds = config.window.as_secs() + u64::from(config.window.subsec_nanos() > 0);
        let slots = usize::try_from(seconds.max(1))
            .unwrap_or(usize::MAX)
            .min(3600);
        RetryBudget {
            config,
            origin,
            slots: Mutex::new(vec![Slot::default(); slots]),
        }
    }

    /// Counts a request forwarded for the first time.
    pub(crate) fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget; `false` when there is none left.
    pub(crate) fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    fn deposit_at(&self, now: Instant) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let second = self.second(now);
        current(&mut slots, second).requests += 1;
    }

    fn withdraw_at(&self, now: Instant) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let second = self.second(now);
        let window = slots.len() as u64;
        let (requests, retries) = slots
            .iter()
            .filter(|slot| second.saturating_sub(slot.second) < window && slot.second <= second)
            .fold((0u64, 0u64), |(requests, retries), slot| {
                (requests + slot.requests, retries + slot.retries)
            });
        let allowed = f64::from(self.config.min_per_second) * window as f64
            + self.config.ratio * requests as f64;
        if (retries as f64) < allowed {
            current(&mut slots, second).retries += 1;
            true
        } else {
            false
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }
}

/// The slot of `second`, emptied first if it still holds an older second's counts.
fn current(slots: &mut [Slot], second: u64) -> &mut Slot {
    let index = (second % slots.len() as u64) as usize;
    let slot = &mut slots[index];
    if slot.second != second {
        *slot = Slot {
            second,
            ..Slot::default()
        };
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> (RetryBudget, Instant) {
        let origin = Instant::now();
        let config = BudgetConfig {
            ratio,
            min_per_second,
            window: Duration::from_secs(10),
        };
        (RetryBudget::starting_at(config, origin), origin)
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
        assert!(is_retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
    }

    #[test]
    fn retries_are_capped_at_the_ratio_of_requests() {
        let (budget, now) = budget(0.2, 0);
        assert!(
            !budget.withdraw_at(now),
            "no requests, no floor: no retries"
        );
        for _ in 0..100 {
            budget.deposit_at(now);
        }
        let granted = (0..100).filter(|_| budget.withdraw_at(now)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let (budget, now) = budget(0.2, 2);
        let granted = (0..100).filter(|_| budget.withdraw_at(now)).count();
        // Two per second over a ten-second window.
        assert_eq!(granted, 20);
    }

    #[test]
    fn old_requests_and_retries_leave_the_window() {
        let (budget, start) = budget(0.5, 0);
        for _ in 0..10 {
            budget.deposit_at(start);
        }
        assert_eq!((0..10).filter(|_| budget.withdraw_at(start)).count(), 5);
        // Nine seconds later the same requests still count, and the retries too.
        let later = start + Duration::from_secs(9);
        assert!(!budget.withdraw_at(later));
        // Once they left the window, new traffic earns new retries from zero.
        let much_later = start + Duration::from_secs(10);
        assert!(!budget.withdraw_at(much_later));
        for _ in 0..4 {
            budget.deposit_at(much_later);
        }
        assert_eq!(
            (0..10).filter(|_| budget.withdraw_at(much_later)).count(),
            2
        );
    }

    #[test]
    fn a_sustained_outage_gets_at_most_the_ratio_in_retries() {
        // Every request fails and asks for a retry: the extra load stays near 20%.
        let (budget, start) = budget(0.2, 1);
        let mut retries = 0;
        let requests = 10_000;
        for i in 0..requests {
            let now = start + Duration::from_millis(i * 10);
            budget.deposit_at(now);
            if budget.withdraw_at(now) {
                retries += 1;
            }
        }
        // 100 seconds: 20% of 10 000 requests, plus at most one per second of floor.
        assert!(retries <= 2000 + 100, "{retries}");
        assert!(retries >= 1900, "{retries}");
    }
}
