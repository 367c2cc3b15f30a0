//! The timed side of a [`RuleSet`]: what runs at start (on_start, timers that fell due while the engine
//! was down, missed catch-up triggers) and what runs when deadlines pass, on wall or virtual time.
//!
//! The restart policy: a pending `after` timer is re-armed at its original due time, or run once at
//! start (marked late) if that time passed while the engine was down; a recurring trigger missed during
//! an outage runs at most once at start, and only when it asked for `catch_up: true`.

use std::sync::Arc;

use tracing::{info, warn};

use super::host::{OneShot, TriggerKind};
use super::persist;
use super::set::{Rule, RuleSet, RunKind};
use crate::event::Output;
use crate::scheduler::{Due, Location, Recurrence};

impl RuleSet {
    /// At start: `on_start` triggers, then persisted timers, then missed catch-up triggers.
    pub(super) fn start(&mut self, outputs: &mut Vec<Output>) {
        self.start_relays(outputs);
        for rule in &self.rules {
            self.run_on_start(rule, outputs);
        }
        self.restore_timers(outputs);
        self.catch_up(outputs);
        self.restore_watches(outputs);
    }

    /// Runs the `on_start` triggers of `rule`.
    pub(super) fn run_on_start(&self, rule: &Rule, outputs: &mut Vec<Output>) {
        for trigger in rule
            .triggers
            .iter()
            .filter(|t| matches!(t.kind, TriggerKind::Start))
        {
            let run = RunKind {
                name: "on_start",
                position: trigger.position,
                topic: None,
                late: false,
            };
            self.run(rule, run, |e, ast| trigger.callback.call(e, ast, ()), outputs);
        }
    }

    fn restore_timers(&mut self, outputs: &mut Vec<Output>) {
        let now = self.clock.now();
        let timers = std::mem::take(&mut self.persisted.timers);
        for record in timers {
            self.host.reserve_timer_ids(record.id);
            let restored = self
                .rule(&record.rule)
                .ok_or_else(|| "its rule is no longer loaded".to_string())
                .and_then(|rule| {
                    let callback = persist::restore_callback(&record)?;
                    // Rhai names a closure after a hash of its source: a missing name means it changed.
                    let exists = rule.ast.iter_functions().any(|f| f.name == record.callback);
                    exists
                        .then_some((Arc::clone(&rule.name), callback))
                        .ok_or_else(|| "the rule changed since it was set".into())
                });
            let (rule, callback) = match restored {
                Ok(found) => found,
                Err(why) => {
                    warn!(
                        "timer set by rules/{}.rhai:{} is dropped: {why}",
                        record.rule, record.position
                    );
                    outputs.push(Output::TimerDone { id: record.id });
                    continue;
                }
            };
            let position = parse_position(&record.position);
            if record.due > now {
                self.host.restore_timer(
                    record.id,
                    OneShot {
                        rule,
                        callback,
                        due: record.due,
                        position,
                        bytes: record.captured.as_ref().map_or(0, String::len),
                    },
                );
                continue;
            }
            info!(rule = %rule, "timer fell due while the engine was down; running it now (late)");
            if let Some(rule) = self.rule(&rule) {
                let run = RunKind {
                    name: "after",
                    position,
                    topic: None,
                    late: true,
                };
                self.run(rule, run, |e, ast| callback.call(e, ast), outputs);
            }
            outputs.push(Output::TimerDone { id: record.id });
        }
    }

    /// Runs each catch-up trigger that missed a firing, once, oldest missed firing first: two crons
    /// that set and clear a flag, both missed, leave it as the later one would have.
    fn catch_up(&mut self, outputs: &mut Vec<Output>) {
        let now = self.clock.now();
        let runs = std::mem::take(&mut self.persisted.trigger_runs);
        self.last_runs.clone_from(&runs);
        let location = self.host.location();
        let mut missed = Vec::new();
        for (rule_index, rule) in self.rules.iter().enumerate() {
            for (index, trigger) in rule.triggers.iter().enumerate() {
                let TriggerKind::Timed {
                    recurrence,
                    catch_up: true,
                    ..
                } = &trigger.kind
                else {
                    continue;
                };
                let key = rule.trigger_key(index);
                let Some(last) = runs.get(&(rule.name.to_string(), key.clone())) else {
                    // First start with this trigger: from now on an outage can be told.
                    outputs.push(Output::TriggerRan {
                        rule: Arc::clone(&rule.name),
                        trigger: key,
                        ts: now,
                    });
                    continue;
                };
                if let Some(at) = latest_missed(recurrence, *last, now, location) {
                    missed.push((at, rule_index, index));
                }
            }
        }
        // Stable: triggers missed at the same instant keep the order they were registered in.
        missed.sort_by_key(|(at, ..)| *at);
        for (_, rule_index, index) in missed {
            let rule = &self.rules[rule_index];
            let trigger = &rule.triggers[index];
            let TriggerKind::Timed { recurrence, name, .. } = &trigger.kind else {
                continue;
            };
            info!(rule = %rule.name, "{} was missed while the engine was down; running it once now", recurrence.describe());
            let run = RunKind {
                name,
                position: trigger.position,
                topic: None,
                late: true,
            };
            self.run(rule, run, |e, ast| trigger.callback.call(e, ast, ()), outputs);
            outputs.push(Output::TriggerRan {
                rule: Arc::clone(&rule.name),
                trigger: rule.trigger_key(index),
                ts: now,
            });
        }
        for output in outputs.iter() {
            self.note_trigger_ran(Some(output));
        }
    }

    /// Remembers when a catch-up trigger ran (the latest time seen), if `output` says one did.
    fn note_trigger_ran(&mut self, output: Option<&Output>) {
        if let Some(Output::TriggerRan { rule, trigger, ts }) = output {
            let last = self
                .last_runs
                .entry((rule.to_string(), trigger.clone()))
                .or_insert(*ts);
            *last = (*last).max(*ts);
        }
    }

    /// The earliest deadline of a trigger or timer.
    pub fn next_due(&self) -> Option<i64> {
        self.host.next_due()
    }

    /// Runs everything due at `now`, in deadline order, and plans each recurring trigger's next firing.
    pub fn fire_due(&mut self, now: i64) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some((at, due)) = self.host.pop_due(now) {
            match due {
                Due::Trigger { rule, index } => {
                    self.fire_trigger(&rule, index, at, now, &mut outputs);
                    self.note_trigger_ran(outputs.last());
                }
                Due::Timer { id } => {
                    let Some(timer) = self.host.take_timer(id) else {
                        continue;
                    }; // cancelled
                    if let Some(rule) = self.rule(&timer.rule) {
                        let run = RunKind {
                            name: "after",
                            position: timer.position,
                            topic: None,
                            late: false,
                        };
                        self.run(rule, run, |e, ast| timer.callback.call(e, ast), &mut outputs);
                    }
                    outputs.push(Output::TimerDone { id });
                }
                Due::Relay { name } => self.relay_deadline(&name, at, &mut outputs),
                Due::Paced { rule, index, topic } => self.fire_paced(&rule, index, &topic, now, &mut outputs),
                Due::Watch { rule, index, topic } => {
                    self.fire_watch(&rule, index, &topic, now, false, &mut outputs)
                }
            }
        }
        self.restart_oversized(&mut outputs);
        outputs
    }

    fn fire_trigger(&self, name: &str, index: usize, at: i64, now: i64, outputs: &mut Vec<Output>) {
        let Some(rule) = self.rule(name) else { return };
        let Some(trigger) = rule.triggers.get(index) else {
            return;
        };
        let TriggerKind::Timed {
            name: kind,
            recurrence,
            catch_up,
        } = &trigger.kind
        else {
            return;
        };
        let run = RunKind {
            name: kind,
            position: trigger.position,
            topic: None,
            late: false,
        };
        self.run(rule, run, |e, ast| trigger.callback.call(e, ast, ()), outputs);
        if *catch_up {
            outputs.push(Output::TriggerRan {
                rule: Arc::clone(&rule.name),
                trigger: rule.trigger_key(index),
                ts: now,
            });
        }
        // From the planned time, so firings do not drift; from now when that is already past (the
        // machine slept), so a backlog never runs more than once.
        let location = self.host.location();
        let next = recurrence
            .next_after(at, location)
            .filter(|n| *n > now)
            .or_else(|| recurrence.next_after(now, location));
        if let Some(next) = next {
            note_polar_gap(&rule.name, recurrence, now, next);
            self.host.schedule(
                next,
                Due::Trigger {
                    rule: Arc::clone(&rule.name),
                    index,
                },
            );
        }
    }

    /// On a virtual clock: moves time to `target`, firing everything due on the way at its own time.
    pub fn advance_to(&mut self, target: i64) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some(due) = self.next_due().filter(|d| *d <= target) {
            self.clock.set(due.max(self.clock.now()));
            outputs.extend(self.fire_due(due));
        }
        self.clock.set(target.max(self.clock.now()));
        outputs
    }
}

/// The last firing of `recurrence` after `last` and at or before `now`, if any was missed. Looked for
/// in the most recent minute, hour, day, ... first, so a trigger every second over a week-long outage
/// takes a few steps, not half a million.
pub(super) fn latest_missed(
    recurrence: &Recurrence,
    last: i64,
    now: i64,
    location: &Location,
) -> Option<i64> {
    const WINDOWS: [i64; 6] = [
        60_000,
        3_600_000,
        86_400_000,
        7 * 86_400_000,
        32 * 86_400_000,
        367 * 86_400_000,
    ];
    let first = recurrence.next_after(last, location).filter(|at| *at <= now)?;
    let from = WINDOWS
        .iter()
        .map(|window| now - window)
        .filter(|from| *from > last)
        .find_map(|from| recurrence.next_after(from, location).filter(|at| *at <= now))
        .unwrap_or(first);
    let mut latest = from;
    while let Some(next) = recurrence.next_after(latest, location).filter(|at| *at <= now) {
        latest = next;
    }
    Some(latest)
}

/// Logs, once per gap, that a sun trigger skips days because the sun does not rise or set there.
pub(super) fn note_polar_gap(rule: &str, recurrence: &Recurrence, now: i64, next: i64) {
    const DAY: i64 = 86_400_000;
    if matches!(recurrence, Recurrence::Sun { .. }) && next - now > 2 * DAY {
        info!(
            rule,
            "{}: no such event here for the next {} days (polar day or night); next at {}",
            recurrence.describe(),
            (next - now) / DAY,
            chrono::DateTime::from_timestamp_millis(next)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        );
    }
}

fn parse_position(text: &str) -> rhai::Position {
    let mut parts = text.split(':').map(|p| p.parse::<usize>().unwrap_or(0));
    match (parts.next(), parts.next()) {
        (Some(line), Some(column)) if line > 0 => rhai::Position::new(line as u16, column as u16),
        _ => rhai::Position::NONE,
    }
}
