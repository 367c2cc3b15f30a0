//! Time as rules see it. `run` uses the wall clock; tests (and later `homewright test` and `replay`) use
//! a virtual clock that only moves when the driver moves it, so a week of timers runs in milliseconds
//! and no test sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::event::now_millis;

/// The source of "now", in unix milliseconds.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    Wall,
    /// A clock that stands still until [`Clock::set`] moves it.
    Virtual(Arc<AtomicI64>),
}

impl Clock {
    /// A virtual clock showing `start` (unix milliseconds).
    pub fn virtual_at(start: i64) -> Self {
        Clock::Virtual(Arc::new(AtomicI64::new(start)))
    }

    /// The current time in unix milliseconds.
    pub fn now(&self) -> i64 {
        match self {
            Clock::Wall => now_millis(),
            Clock::Virtual(at) => at.load(Ordering::SeqCst),
        }
    }

    /// Moves a virtual clock to `at`; the wall clock cannot be moved and ignores this.
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
