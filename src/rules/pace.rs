//! The loop guard: a rule that publishes to a topic it listens to (itself, or through another rule)
//! runs as fast as the broker delivers, and every turn is stored. A rule whose runs on topics the rules
//! themselves published to stay above a rate for [`HOT_SECONDS`] is paused a while, with one error
//! line and one `rule_runs` row naming it and the topic; other rules and ingest go on.
//!
//! Only runs driven by the rules' own publishes count: a rule that reads a busy sensor at thousands of
//! messages a second is not a loop, and must not be paused for being busy.

use std::sync::Arc;

use tracing::{error, info};

use super::set::RuleSet;
use crate::event::{Output, RuleRun};

/// Seconds in a row above the rate that make a loop.
pub const HOT_SECONDS: u32 = 5;

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
    /// The second (unix) being counted.
    second: i64,
    /// Runs on the rules' own topics in that second.
    runs: u32,
    /// Seconds in a row before it that were above the rate.
    hot: u32,
    /// Until when the rule is paused (unix ms); 0: it is not.
    paused_until: i64,
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
        if second != pace.second {
            let was_hot = pace.runs > guard.rate;
            pace.hot = if was_hot && second == pace.second + 1 {
                pace.hot + 1
            } else {
                0
            };
            pace.second = second;
            pace.runs = 0;
        }
        pace.runs += 1;
        if pace.hot + 1 < HOT_SECONDS || pace.runs <= guard.rate {
            return true;
        }
        *pace = Pace {
            paused_until: now + guard.pause,
            ..Pace::default()
        };
        let message = format!(
            "rules/{}.rhai ran more than {} times a second for {HOT_SECONDS} s on topics rules publish to \
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
