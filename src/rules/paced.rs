//! Debounce and throttle of `on_message` and `on_change`, per topic: `#{ debounce: "2s" }` runs once the
//! topic has been quiet that long, with the last message; `#{ throttle: "1m" }` runs on the first
//! message, then at most once per period, with the last message of the period when more came.
//!
//! A message held back is in memory only: a restart or a reload of the rule drops it (it would be
//! stale by then, and a debounce of a burst that ended during an outage has nothing to say).

use std::collections::HashMap;
use std::sync::Arc;

use rhai::Dynamic;

use super::host::Pacing;
use super::set::{RuleSet, RunKind};
use crate::event::Output;
use crate::scheduler::Due;

/// One topic's state under one paced trigger.
#[derive(Debug)]
pub(super) struct Paced {
    /// The arguments of the run held back, if any.
    pending: Option<Vec<Dynamic>>,
    /// Debounce: when the topic will have been quiet long enough. Throttle: when the period ends.
    until: i64,
    /// A deadline for this topic is queued.
    queued: bool,
}

/// Keyed by (rule, trigger index, topic).
pub(super) type PacedTopics = HashMap<(Arc<str>, usize, Arc<str>), Paced>;

/// Moves every topic's deadline by `jump` ms: the wall clock jumped and a quiet time or a period keeps
/// its length.
pub(super) fn shift(topics: &mut PacedTopics, jump: i64) {
    for state in topics.values_mut().filter(|s| s.until != i64::MIN) {
        state.until = state.until.saturating_add(jump);
    }
}

impl RuleSet {
    /// A message for trigger `t` of rule `r`, paced: runs it now or holds it back.
    pub(super) fn pace(
        &mut self,
        r: usize,
        t: usize,
        pacing: Pacing,
        topic: &Arc<str>,
        args: Vec<Dynamic>,
        outputs: &mut Vec<Output>,
    ) {
        let now = self.clock.now();
        let name = Arc::clone(&self.rules[r].name);
        let state = self
            .paced
            .entry((Arc::clone(&name), t, Arc::clone(topic)))
            .or_insert(Paced {
                pending: None,
                until: i64::MIN,
                queued: false,
            });
        // For on_change, a message held back over another keeps the older `old`: the run compares
        // the value before the burst with the last one.
        let args = match state.pending.take() {
            Some(mut held) if held.len() == 2 && args.len() == 2 => {
                held[1] = args.into_iter().nth(1).unwrap_or_default();
                held
            }
            _ => args,
        };
        let run_now = match pacing {
            Pacing::Debounce(quiet) => {
                state.pending = Some(args);
                state.until = now.saturating_add(quiet);
                None
            }
            Pacing::Throttle(_) if now < state.until => {
                state.pending = Some(args);
                None
            }
            Pacing::Throttle(period) => {
                state.until = now.saturating_add(period);
                Some(args)
            }
        };
        if state.pending.is_some() && !state.queued {
            state.queued = true;
            let due = Due::Paced {
                rule: name,
                index: t,
                topic: Arc::clone(topic),
            };
            self.host.schedule(state.until, due);
        }
        if let Some(args) = run_now {
            self.run_paced(r, t, topic, args, outputs);
        }
    }

    /// A paced trigger's deadline for `topic`.
    pub(super) fn fire_paced(
        &mut self,
        rule: &str,
        index: usize,
        topic: &Arc<str>,
        now: i64,
        outputs: &mut Vec<Output>,
    ) {
        let Some(r) = self.rules.iter().position(|x| &*x.name == rule) else {
            return;
        };
        let pacing = match &self.rules[r].triggers.get(index).map(|t| &t.kind) {
            Some(super::host::TriggerKind::Message {
                pacing: Some(pacing), ..
            })
            | Some(super::host::TriggerKind::Change {
                pacing: Some(pacing), ..
            }) => *pacing,
            _ => return,
        };
        let key = (Arc::clone(&self.rules[r].name), index, Arc::clone(topic));
        let Some(state) = self.paced.get_mut(&key) else {
            return;
        };
        state.queued = false;
        if state.until > now {
            // A later message moved the deadline.
            state.queued = true;
            self.host.schedule(
                state.until,
                Due::Paced {
                    rule: key.0,
                    index,
                    topic: Arc::clone(topic),
                },
            );
            return;
        }
        let Some(args) = state.pending.take() else {
            return;
        };
        if let Pacing::Throttle(period) = pacing {
            // The run at the end of a period starts the next one.
            state.until = now.saturating_add(period);
        }
        self.run_paced(r, index, topic, args, outputs);
    }

    fn run_paced(&self, r: usize, t: usize, topic: &Arc<str>, args: Vec<Dynamic>, outputs: &mut Vec<Output>) {
        let rule = &self.rules[r];
        let trigger = &rule.triggers[t];
        let run = RunKind {
            name: trigger.kind.name(),
            position: trigger.position,
            topic: Some(topic),
            late: false,
        };
        self.run(rule, run, |e, ast| trigger.callback.call(e, ast, args), outputs);
    }

    /// Drops what the paced triggers of `rule` held back (it was reloaded or removed).
    pub(super) fn forget_paced(&mut self, rule: &str) {
        self.paced.retain(|(r, ..), _| &**r != rule);
    }
}
