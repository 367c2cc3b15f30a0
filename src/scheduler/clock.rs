//! Time as rules see it. The engine runs on a [`Clock::Steady`] clock: unix milliseconds that advance
//! with the monotonic clock, so a duration (an `after` timer, `on_for`, `max_on`, `every`) lasts as
//! long as it says whatever the wall clock does meanwhile. A Pi has no real-time clock: it boots on the
//! time it last saved and jumps when NTP syncs. The rule thread asks [`Clock::resync`] on every wake;
//! when the wall clock has moved away from the steady one, the clock is set to the wall time again and
//! the jump is handed to the rules, which move their durations with it (see `rules::clock_jump`).
//!
//! Tests, `homewright test` and `replay` use a virtual clock that only moves when the driver moves it,
//! so a week of timers runs in milliseconds and no test sleeps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::event::now_millis;

/// A wall clock that moves further apart from the monotonic one than this has jumped. Both advance at
/// the same rate between steps (NTP slews them alike), and the two are read back to back, so anything
/// above scheduling noise is a step.
pub const JUMP_THRESHOLD_MS: i64 = 1_000;

/// The source of "now", in unix milliseconds.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock, read as it is (for commands that do not wait on time).
    #[default]
    Wall,
    /// The wall time at the last [`Clock::resync`], advanced by the monotonic clock since.
    Steady(Arc<Mutex<Anchor>>),
    /// A clock that stands still until [`Clock::set`] moves it.
    Virtual(Arc<AtomicI64>),
}

/// A wall time and the monotonic instant it was read at.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    /// The wall time at `at`, in microseconds: kept finer than the engine's milliseconds so that the
    /// steady clock never lags the wall clock by a truncated millisecond (a run stamped before the
    /// message that caused it).
    wall_us: i64,
    at: Instant,
}

impl Anchor {
    fn new() -> Self {
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Anchor {
            wall_us,
            at: Instant::now(),
        }
    }

    fn now(&self) -> i64 {
        let elapsed = i64::try_from(self.at.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.wall_us.saturating_add(elapsed) / 1000
    }
}

impl Clock {
    /// A virtual clock showing `start` (unix milliseconds).
    pub fn virtual_at(start: i64) -> Self {
        Clock::Virtual(Arc::new(AtomicI64::new(start)))
    }

    /// The engine's clock: the wall time now, advancing on the monotonic clock.
    pub fn steady() -> Self {
        Clock::Steady(Arc::new(Mutex::new(Anchor::new())))
    }

    /// The current time in unix milliseconds.
    pub fn now(&self) -> i64 {
        match self {
            Clock::Wall => now_millis(),
            Clock::Steady(anchor) => anchor.lock().unwrap_or_else(PoisonError::into_inner).now(),
            Clock::Virtual(at) => at.load(Ordering::SeqCst),
        }
    }

    /// On a steady clock, when the wall clock jumped since the last look: takes the wall time again and
    /// returns by how much it moved (positive: forward). `None` when it did not, and on other clocks.
    pub fn resync(&self) -> Option<i64> {
        let Clock::Steady(anchor) = self else {
            return None;
        };
        let mut anchor = anchor.lock().unwrap_or_else(PoisonError::into_inner);
        let wall = now_millis();
        let jump = wall.saturating_sub(anchor.now());
        if jump.abs() < JUMP_THRESHOLD_MS {
            // A small difference is the wall clock being slewed, not a jump: follow it, so the
            // engine's times stay those of the rest of the system.
            if jump != 0 {
                *anchor = Anchor::new();
            }
            return None;
        }
        *anchor = Anchor::new();
        Some(jump)
    }

    /// Moves a virtual clock to `at`; the wall and steady clocks cannot be moved and ignore this.
    pub fn set(&self, at: i64) {
        if let Clock::Virtual(now) = self {
            now.store(at, Ordering::SeqCst);
        }
    }

    /// Whether this is a virtual clock.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }
}

/// A jump for the log: `forward by 2h 0m 5s`, `back by 1m 30s`.
pub fn describe_jump(jump: i64) -> String {
    let direction = if jump > 0 { "forward" } else { "back" };
    format!("{direction} by {}", describe_span(jump))
}

/// The length of `ms` (either sign) for the log, to the second: `2h 0m 5s`, `1m 30s`, `2s`.
pub fn describe_span(ms: i64) -> String {
    let seconds = ms.unsigned_abs().div_ceil(1000);
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_clock_reads_the_wall_time_and_has_not_jumped() {
        let clock = Clock::steady();
        assert!((clock.now() - now_millis()).abs() < JUMP_THRESHOLD_MS);
        assert_eq!(clock.resync(), None);
        assert_eq!(Clock::Wall.resync(), None);
        assert_eq!(Clock::virtual_at(5).resync(), None);
    }

    #[test]
    fn jumps_are_described_in_the_log_with_their_direction() {
        assert_eq!(describe_jump(-3_600_000), "back by 1h 0m 0s");
        assert_eq!(describe_jump(90_000), "forward by 1m 30s");
        assert_eq!(describe_jump(1_500), "forward by 2s");
        assert_eq!(describe_jump(7_205_000), "forward by 2h 0m 5s");
    }
}
