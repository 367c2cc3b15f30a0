//! The scheduler: a time-ordered queue of what is due next (recurring triggers and one-shot timers),
//! the [`Clock`] it is read against, and the calendars of recurring triggers ([`spec`]).
//!
//! The queue is drained by the rule thread itself, which sleeps until the earliest deadline or the next
//! event, whichever comes first: timers and messages are then handled in one order on one thread, so a
//! timer can never race the rule that set or cancelled it.

pub mod clock;
pub mod rebase;
pub mod spec;
pub mod when;
pub mod zone;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use clock::Clock;
pub use spec::{Location, Recurrence, Sun};
pub use zone::Zone;

/// What falls due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The recurring trigger number `index` of `rule`.
    Trigger { rule: Arc<str>, index: usize },
    /// The one-shot timer `id` (skipped when it was cancelled in the meantime).
    Timer { id: i64 },
    /// A relay's on_for or max_on deadline (skipped when it is stale).
    Relay { name: Arc<str> },
    /// A debounced or throttled message trigger (number `index` of `rule`) may be due for `topic`.
    Paced {
        rule: Arc<str>,
        index: usize,
        topic: Arc<str>,
    },
    /// An `on_held` or `on_silent` trigger (number `index` of `rule`) may be due for `topic`.
    Watch {
        rule: Arc<str>,
        index: usize,
        topic: Arc<str>,
    },
}

/// Deadlines in time order; equal deadlines keep the order they were added in.
#[derive(Debug, Default)]
pub struct Schedule {
    queue: BTreeMap<(i64, u64), Due>,
    sequence: u64,
}

impl Schedule {
    /// Adds `due` at `at` (unix ms).
    pub fn insert(&mut self, at: i64, due: Due) {
        self.sequence += 1;
        self.queue.insert((at, self.sequence), due);
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<i64> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, Due)> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let ((at, _), due) = entry.remove_entry();
        Some((at, due))
    }

    /// Moves every entry to the time `retime` gives it (`None`: drops it), keeping the order of entries
    /// that end up at the same time.
    pub fn retime(&mut self, mut retime: impl FnMut(i64, &Due) -> Option<i64>) {
        let queue = std::mem::take(&mut self.queue);
        self.queue = queue
            .into_iter()
            .filter_map(|((at, sequence), due)| Some(((retime(at, &due)?, sequence), due)))
            .collect();
    }

    /// Forgets the recurring triggers and topic watches of `rule` (before it is loaded again).
    pub fn remove_rule(&mut self, rule: &str) {
        self.queue.retain(|_, due| {
            !matches!(due, Due::Trigger { rule: r, .. } | Due::Watch { rule: r, .. } | Due::Paced { rule: r, .. } if &**r == rule)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_time_order_and_only_when_due() {
        let mut schedule = Schedule::default();
        schedule.insert(30, Due::Timer { id: 3 });
        schedule.insert(10, Due::Timer { id: 1 });
        schedule.insert(10, Due::Timer { id: 2 });
        assert_eq!(schedule.next(), Some(10));
        assert_eq!(schedule.pop_due(5), None);
        assert_eq!(schedule.pop_due(10), Some((10, Due::Timer { id: 1 })));
        assert_eq!(schedule.pop_due(10), Some((10, Due::Timer { id: 2 })));
        assert_eq!(schedule.pop_due(29), None);
        assert_eq!(schedule.pop_due(100), Some((30, Due::Timer { id: 3 })));
        assert_eq!(schedule.next(), None);
    }

    #[test]
    fn retimed_entries_move_or_go() {
        let mut schedule = Schedule::default();
        schedule.insert(10, Due::Timer { id: 1 });
        schedule.insert(20, Due::Timer { id: 2 });
        schedule.insert(30, Due::Timer { id: 3 });
        schedule.retime(|at, due| match due {
            Due::Timer { id: 2 } => None,
            _ => Some(at + 100),
        });
        assert_eq!(schedule.pop_due(110), Some((110, Due::Timer { id: 1 })));
        assert_eq!(schedule.pop_due(1_000), Some((130, Due::Timer { id: 3 })));
        assert_eq!(schedule.next(), None);
    }
}
