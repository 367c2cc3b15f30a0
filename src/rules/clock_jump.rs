//! What a step of the wall clock does to the rules, while the engine runs. A Pi without a real-time
//! clock boots on the time it last saved and jumps, often by hours, when NTP syncs; a clock set by hand
//! jumps too. The engine's clock advances on the monotonic clock and notices such a step
//! ([`Clock::resync`](crate::scheduler::Clock::resync)); then:
//!
//! - durations keep their length: `after` timers, `on_for` and `max_on`, `every`, debounce and
//!   throttle, `on_held` and `on_silent`, the loop guard's pause all move by the jump, so each ends as
//!   long after it started as it says, in either direction (timers and relay states are written again
//!   with their moved times);
//! - calendar triggers (cron, sunrise, sunset) follow the new time. Forward: the firings jumped over
//!   are skipped, except that a `catch_up: true` trigger that really missed one (it did not run at or
//!   after that time) runs once, late, as after an outage. Back: a trigger that fires at least once per
//!   the jump's length follows the new time at once (and may run again at a time it already ran at);
//!   a rarer one never runs twice for the same time and waits for its next time after the last firing.

use std::sync::Arc;

use tracing::{info, warn};

use super::host::{Callback, OneShot, TriggerKind};
use super::persist;
use super::set::{RuleSet, RunKind};
use crate::event::{Output, TimerRecord};
use crate::scheduler::clock::describe_jump;
use crate::scheduler::{Due, Location, Recurrence};

impl RuleSet {
    /// The wall clock jumped by `jump` ms (positive: forward) and the rule set's clock shows the new
    /// time already: moves every duration with it and plans calendar triggers on the new time.
    pub fn clock_jumped(&mut self, jump: i64) -> Vec<Output> {
        let now = self.clock.now();
        warn!(
            "wall clock jumped {}; durations keep their length, calendar triggers follow the new time",
            describe_jump(jump)
        );
        let location = self.host.location().clone();
        let mut skipped = Vec::new();
        let rules = &self.rules;
        let last_runs = &self.last_runs;
        self.host.retime_schedule(|at, due| {
            let moved = Some(at.saturating_add(jump));
            let Due::Trigger { rule, index } = due else {
                return moved;
            };
            let Some((rule, trigger)) = rules
                .iter()
                .find(|r| r.name == *rule)
                .and_then(|r| Some((r, r.triggers.get(*index)?)))
            else {
                return moved;
            };
            let TriggerKind::Timed {
                recurrence, catch_up, ..
            } = &trigger.kind
            else {
                return moved;
            };
            if matches!(recurrence, Recurrence::Every { .. }) {
                return moved;
            }
            let next = calendar_after_jump(recurrence, at, jump, now, &location);
            if jump > 0 && at <= now {
                let last = last_runs
                    .get(&(rule.name.to_string(), rule.trigger_key(*index)))
                    .copied()
                    .unwrap_or(i64::MIN);
                let missed = *catch_up
                    && super::timed::latest_missed(recurrence, last.max(at - 1), now, &location).is_some();
                skipped.push((Arc::clone(&rule.name), *index, missed));
            }
            next.or(Some(at))
        });
        let timers = self.host.shift_timers(jump);
        super::paced::shift(&mut self.paced, jump);
        super::held::shift(&mut self.watches, jump);
        self.paces.values_mut().for_each(|pace| pace.shift(jump));
        let mut outputs: Vec<Output> = self
            .host
            .shift_relays(jump)
            .into_iter()
            .map(|(name, state)| Output::RelayState { name, state })
            .collect();
        // Written again, so a restart after the jump re-arms them at their moved time.
        outputs.extend(
            timers
                .iter()
                .map(|(id, timer)| Output::TimerSet(timer_record(*id, timer))),
        );
        for (rule, index, missed) in skipped {
            self.after_skip(&rule, index, missed, now, &mut outputs);
        }
        outputs
    }

    /// A calendar trigger's firing was jumped over: runs it once, late, when it is a catch-up trigger
    /// that missed it; otherwise says it was skipped.
    fn after_skip(&mut self, name: &str, index: usize, missed: bool, now: i64, outputs: &mut Vec<Output>) {
        let Some(rule) = self.rule(name) else { return };
        let Some(trigger) = rule.triggers.get(index) else {
            return;
        };
        let TriggerKind::Timed {
            recurrence,
            name: kind,
            ..
        } = &trigger.kind
        else {
            return;
        };
        if !missed {
            info!(rule = %rule.name, "{}: its time was jumped over; it runs next at its next time", recurrence.describe());
            return;
        }
        info!(rule = %rule.name, "{} was missed while the clock jumped; running it once now", recurrence.describe());
        let run = RunKind {
            name: kind,
            position: trigger.position,
            topic: None,
            late: true,
        };
        self.run(rule, run, |e, ast| trigger.callback.call(e, ast, ()), outputs);
        let key = rule.trigger_key(index);
        let rule = Arc::clone(&rule.name);
        self.last_runs.insert((rule.to_string(), key.clone()), now);
        outputs.push(Output::TriggerRan {
            rule,
            trigger: key,
            ts: now,
        });
    }
}

/// The row of a pending timer, as `after` first wrote it but for its due time.
fn timer_record(id: i64, timer: &OneShot) -> TimerRecord {
    let captured = match &timer.callback {
        Callback::Pointer(pointer) => persist::encode_captured(pointer.curry()),
        Callback::Restored { captured, .. } => persist::encode_captured(captured),
    };
    TimerRecord {
        id,
        rule: timer.rule.to_string(),
        callback: timer.callback.name().to_string(),
        captured,
        due: timer.due,
        position: format!(
            "{}:{}",
            timer.position.line().unwrap_or(0),
            timer.position.position().unwrap_or(0)
        ),
    }
}

/// When a calendar trigger planned at `at` fires after a jump of `jump` ms to `now`; `None` when it
/// keeps `at`.
fn calendar_after_jump(
    recurrence: &Recurrence,
    at: i64,
    jump: i64,
    now: i64,
    location: &Location,
) -> Option<i64> {
    if jump > 0 {
        return (at <= now)
            .then(|| recurrence.next_after(now, location))
            .flatten();
    }
    // Back: `at` is the first time after the last firing, so keeping it never repeats a time. That
    // costs a wait of up to one period plus the jump: worth it for a daily job, a stall for one that
    // fires every minute, which follows the new time instead.
    let period = recurrence.next_after(at, location)? - at;
    if period <= jump.saturating_neg() {
        recurrence.next_after(now, location)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Zone;

    fn utc() -> Location {
        Location {
            timezone: Zone::named("UTC").unwrap(),
            coordinates: None,
        }
    }

    const MINUTE: i64 = 60_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn a_forward_jump_plans_calendar_triggers_from_the_new_time() {
        let hourly = Recurrence::cron("0 * * * *").unwrap();
        // Planned at 01:00, the clock jumped from 00:30 to 03:30: next at 04:00, once.
        let next = calendar_after_jump(&hourly, 60 * MINUTE, 3 * 60 * MINUTE, 210 * MINUTE, &utc());
        assert_eq!(next, Some(240 * MINUTE));
        // Still ahead of the new time: kept.
        assert_eq!(
            calendar_after_jump(&hourly, 300 * MINUTE, 60 * MINUTE, 210 * MINUTE, &utc()),
            None
        );
    }

    #[test]
    fn a_backward_jump_repeats_frequent_triggers_and_not_rare_ones() {
        let every_minute = Recurrence::cron("* * * * *").unwrap();
        // Planned at 12:01, the clock went back 90 s from 12:00:30 to 11:59:00: it runs at 11:59:00 + 1m.
        let now = 12 * 60 * MINUTE - MINUTE;
        let next = calendar_after_jump(&every_minute, 12 * 60 * MINUTE + MINUTE, -90_000, now, &utc());
        assert_eq!(next, Some(now + MINUTE));
        let daily = Recurrence::cron("0 7 * * *").unwrap();
        // Ran at 07:00 today, the clock went back an hour at 07:30: no second run at 07:00.
        let next = calendar_after_jump(
            &daily,
            DAY + 7 * 60 * MINUTE,
            -60 * MINUTE,
            6 * 60 * MINUTE + 30 * MINUTE,
            &utc(),
        );
        assert_eq!(next, None, "keeps tomorrow's 07:00");
    }
}
