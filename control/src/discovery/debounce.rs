//! When to push catalog changes to sidecars.
//!
//! The first change after a quiet period goes out at once. Changes that follow within the
//! window are merged and go out when the catalog has been quiet for `quiet`, or at the latest
//! `max_delay` after the window opened, so constant churn can never starve pushes. A pure state
//! machine over explicit instants, so every case is tested without a clock.

use std::time::{Duration, Instant};

/// What the caller does after telling the debouncer something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Push the current catalog now.
    pub push: bool,
    /// Call [`Debouncer::on_timer`] at this instant.
    pub wake_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    last_change: Instant,
    /// A change arrived after the last push of this window.
    dirty: bool,
}

#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    max_delay: Duration,
    window: Option<Window>,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Self {
            quiet,
            max_delay: max_delay.max(quiet),
            window: None,
        }
    }

    /// A change was applied at `now`.
    pub fn on_change(&mut self, now: Instant) -> Decision {
        let Some(window) = &mut self.window else {
            self.window = Some(Window {
                started: now,
                last_change: now,
                dirty: false,
            });
            return Decision {
                push: true,
                wake_at: Some(now + self.quiet),
            };
        };
        window.dirty = true;
        window.last_change = now;
        if now.duration_since(window.started) >= self.max_delay {
            return self.push_and_reopen(now);
        }
        Decision {
            push: false,
            wake_at: Some(self.next_deadline()),
        }
    }

    /// The timer asked for by an earlier decision fired at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Decision {
        let Some(window) = self.window else {
            return Decision {
                push: false,
                wake_at: None,
            };
        };
        let quiet_for = now.duration_since(window.last_change);
        if !window.dirty {
            if quiet_for >= self.quiet {
                self.window = None;
                return Decision {
                    push: false,
                    wake_at: None,
                };
            }
            return Decision {
                push: false,
                wake_at: Some(window.last_change + self.quiet),
            };
        }
        if quiet_for >= self.quiet || now.duration_since(window.started) >= self.max_delay {
            return self.push_and_reopen(now);
        }
        Decision {
            push: false,
            wake_at: Some(self.next_deadline()),
        }
    }

    fn push_and_reopen(&mut self, now: Instant) -> Decision {
        self.window = Some(Window {
            started: now,
            last_change: now,
            dirty: false,
        });
        Decision {
            push: true,
            wake_at: Some(now + self.quiet),
        }
    }

    fn next_deadline(&self) -> Instant {
        match self.window {
            Some(w) => (w.last_change + self.quiet).min(w.started + self.max_delay),
            // Not reached: callers ask only while a window is open.
            None => Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(100);

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    /// The first change of a quiet period goes out at once.
    #[test]
    fn leading_edge_is_immediate() {
        let t = Instant::now();
        let mut d = Debouncer::new(QUIET, MAX);
        assert_eq!(
            d.on_change(t),
            Decision {
                push: true,
                wake_at: Some(ms(t, 10))
            }
        );
        // Nothing more happened: the window closes without a push.
        assert_eq!(
            d.on_timer(ms(t, 10)),
            Decision {
                push: false,
                wake_at: None
            }
        );
        assert!(
            d.on_change(ms(t, 50)).push,
            "a new quiet period starts with an immediate push"
        );
    }

    /// A burst inside the window is merged into one push once the catalog is quiet.
    #[test]
    fn burst_is_merged() {
        let t = Instant::now();
        let mut d = Debouncer::new(QUIET, MAX);
        assert!(d.on_change(t).push);
        assert_eq!(
            d.on_change(ms(t, 2)),
            Decision {
                push: false,
                wake_at: Some(ms(t, 12))
            }
        );
        assert_eq!(
            d.on_change(ms(t, 5)),
            Decision {
                push: false,
                wake_at: Some(ms(t, 15))
            }
        );
        assert_eq!(
            d.on_timer(ms(t, 12)),
            Decision {
                push: false,
                wake_at: Some(ms(t, 15))
            }
        );
        assert_eq!(
            d.on_timer(ms(t, 15)),
            Decision {
                push: true,
                wake_at: Some(ms(t, 25))
            }
        );
    }

    /// Constant churn still pushes at least every max delay.
    #[test]
    fn churn_cannot_starve_pushes() {
        let t = Instant::now();
        let mut d = Debouncer::new(QUIET, MAX);
        let mut pushes = vec![0];
        assert!(d.on_change(t).push);
        for step in 1..=300u64 {
            // A change every 5 ms: never quiet for 10 ms.
            let now = ms(t, step * 5);
            let decision = d.on_change(now);
            if decision.push {
                pushes.push(step * 5);
            }
        }
        let gaps: Vec<u64> = pushes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 10, "{pushes:?}");
        assert!(gaps.iter().all(|g| *g <= 100), "gaps {gaps:?}");
    }

    /// A max delay shorter than the quiet period is raised to it.
    #[test]
    fn max_delay_at_least_quiet() {
        let t = Instant::now();
        let mut d = Debouncer::new(QUIET, Duration::from_millis(1));
        assert!(d.on_change(t).push);
        assert!(!d.on_change(ms(t, 5)).push);
    }
}
