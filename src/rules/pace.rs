//! The loop guard: a rule that publishes to a topic it listens to (itself, or through another rule)
//! runs as fast as the broker delivers, and every turn is stored. A rule whose runs on topics the rules
//! themselves published to average above a rate over [`HOT_SECONDS`] is paused a while, with one
//! error line and one `rule_runs` row naming it and the topic; other rules and ingest go on. An average
//! over the window, not every second above the rate: a loop through the broker is bursty (the broker's
//! in-flight window, the machine's load), and one slow second must not hide it.
//!
//! Only runs driven by the rules' own publishes count: a rule that reads a busy sensor at thousands of
//! messages a second is not a loop, and must not be paused for being busy.

use std::sync::Arc;

use tracing::{error, info};

use super::set::RuleSet;
use crate::event::{Output, RuleRun};

/// The window, in seconds, over which the rate is averaged.
pub const HOT_SECONDS: usize = 5;

/// `rules.loop_guard_rate` and `rules.loop_guard_pause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopGuard {
    /// Runs per second on the rules' own topics above which a rule is looping; 0 turns the guard off.
    pub rate: u32,
    /// How long a looping rule is paused, ms.
    pub pause: i64,
}

impl Default for LoopGuard {
    fn default() -> Self {
        LoopGuard {
            rate: 100,
            pause: 60_000,
        }
    }
}

/// One rule's recent pace.
#[derive(Debug, Default)]
pub(super) struct Pace {
    /// The latest second (unix) counted.
    second: i64,
    /// Runs on the rules' own topics in each of the last [`HOT_SECONDS`] seconds, by second modulo.
    runs: [u32; HOT_SECONDS],
    /// Until when the rule is paused (unix ms); 0: it is not.
    paused_until: i64,
}

impl Pace {
    /// The wall clock jumped by `jump` ms: a pause keeps its length, and the count starts again (its
    /// seconds are of the old time).
    pub(super) fn shift(&mut self, jump: i64) {
        if self.paused_until != 0 {
            self.paused_until = self.paused_until.saturating_add(jump);
        }
        self.second = 0;
        self.runs = [0; HOT_SECONDS];
    }
}

impl RuleSet {
    /// Sets the loop guard (the default is [`LoopGuard::default`]).
    pub fn set_loop_guard(&mut self, guard: LoopGuard) {
        self.loop_guard = guard;
    }

    /// Whether rule `r` may run for a message on `topic` now; counts the run when the topic is one the
    /// rules published to (`fed`), and pauses the rule when that makes a loop.
    pub(super) fn admit(&mut self, r: usize, topic: &Arc<str>, fed: bool, outputs: &mut Vec<Output>) -> bool {
        let guard = self.loop_guard;
        if guard.rate == 0 {
            return true;
        }
        let now = self.clock.now();
        let rule = &self.rules[r];
        let pace = self.paces.entry(Arc::clone(&rule.name)).or_default();
        if pace.paused_until != 0 {
            if now < pace.paused_until {
                return false;
            }
            pace.paused_until = 0;
            info!(rule = %rule.name, "the loop guard's pause is over; the rule runs again");
        }
        if !fed {
            return true;
        }
        let second = now.div_euclid(1000);
        let window = HOT_SECONDS as i64;
        // The seconds since the last count had no runs.
        for passed in (pace.second + 1..=second).take(HOT_SECONDS) {
            pace.runs[passed.rem_euclid(window) as usize] = 0;
        }
        pace.second = pace.second.max(second);
        pace.runs[second.rem_euclid(window) as usize] += 1;
        let total: u64 = pace.runs.iter().map(|n| u64::from(*n)).sum();
        if total <= u64::from(guard.rate) * window as u64 {
            return true;
        }
        *pace = Pace {
            paused_until: now + guard.pause,
            ..Pace::default()
        };
        let message = format!(
            "rules/{}.rhai ran more than {} times a second over {HOT_SECONDS} s on topics rules publish to \
             (the last one {topic}): a loop? It is paused for {} s (rules.loop_guard_rate, rules.loop_guard_pause)",
            rule.name,
            guard.rate,
            guard.pause / 1000
        );
        error!("{message}");
        outputs.push(Output::Run(RuleRun {
            ts: now,
            rule: Arc::clone(&rule.name),
            trigger: "loop_guard",
            topic: Some(Arc::clone(topic)),
            duration_us: 0,
            error: Some(message),
            actions: 0,
            late: false,
        }));
        false
    }
}
