//! The time axis of a chart: ticks at round local times (a whole minute, hour or day in the house's
//! zone, as a person reads a clock) and their labels. A step is picked from a ladder of clock-friendly
//! steps so that at most a given number of ticks fit; a tick that falls in a skipped hour of a
//! daylight-saving change is left out, a repeated hour is ticked once.

use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, TimeZone, Timelike};

use crate::scheduler::Zone;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The steps a tick may take; all below a day divide a day, so ticks stay on round clock times.
const STEPS: [i64; 21] = [
    SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
    28 * DAY,
];

/// A guard against a runaway loop on a nonsensical range.
const MAX_CANDIDATES: usize = 10_000;

/// Ticks for the range `[from, to]` (unix ms) in `zone`.
#[derive(Debug, Clone)]
pub struct Ticks {
    /// The tick instants, ascending.
    pub at: Vec<i64>,
    /// The step between ticks, in ms (28 days stands for "the first of each month").
    pub step: i64,
    span: i64,
    zone: Zone,
}

impl Ticks {
    /// At most `max` ticks (at least one step's worth) at round local times between `from` and `to`.
    pub fn new(from: i64, to: i64, zone: &Zone, max: usize) -> Ticks {
        let span = (to - from).max(1);
        let max = max.max(2) as i64;
        let step = STEPS
            .iter()
            .copied()
            .find(|step| span / step < max)
            .unwrap_or(STEPS[STEPS.len() - 1]);
        let at = if step < DAY {
            clock_ticks(from, to, step, zone)
        } else {
            day_ticks(from, to, step, zone)
        };
        Ticks {
            at,
            step,
            span,
            zone: zone.clone(),
        }
    }

    /// A tick's label: the clock time (with seconds for steps under a minute), the date for steps of a
    /// day or more, and both when a chart of clock-time ticks spans more than a day.
    pub fn label(&self, at: i64) -> String {
        let Some(time) = self.zone.timestamp_millis_opt(at).earliest() else {
            return String::new();
        };
        let format = if self.step >= DAY {
            "%m-%d"
        } else if self.step < MINUTE {
            "%H:%M:%S"
        } else if self.span > DAY {
            "%m-%d %H:%M"
        } else {
            "%H:%M"
        };
        time.format(format).to_string()
    }
}

fn local(at: i64, zone: &Zone) -> Option<NaiveDateTime> {
    zone.timestamp_millis_opt(at).earliest().map(|t| t.naive_local())
}

fn instant(local: NaiveDateTime, zone: &Zone) -> Option<i64> {
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// Ticks every `step` (under a day) of local clock time, counted from local midnight.
fn clock_ticks(from: i64, to: i64, step: i64, zone: &Zone) -> Vec<i64> {
    let Some(start) = local(from, zone) else {
        return Vec::new();
    };
    let step_seconds = step / SECOND;
    let since_midnight = i64::from(start.num_seconds_from_midnight());
    let mut tick = start.date().and_time(chrono::NaiveTime::MIN)
        + chrono::TimeDelta::seconds(since_midnight / step_seconds * step_seconds);
    let mut ticks = Vec::new();
    for _ in 0..MAX_CANDIDATES {
        if let Some(at) = instant(tick, zone) {
            if at > to {
                break;
            }
            if at >= from && ticks.last() != Some(&at) {
                ticks.push(at);
            }
        }
        tick += chrono::TimeDelta::seconds(step_seconds);
    }
    ticks
}

/// Ticks at local midnights: every day, every other day, each Monday, every other Monday, or the first
/// of each month.
fn day_ticks(from: i64, to: i64, step: i64, zone: &Zone) -> Vec<i64> {
    let Some(start) = local(from, zone) else {
        return Vec::new();
    };
    let days = (step / DAY) as u64;
    let mut date = start.date();
    let keeps = |date: NaiveDate| match days {
        1 => true,
        2 => date.num_days_from_ce() % 2 == 0,
        7 => date.weekday() == chrono::Weekday::Mon,
        14 => date.weekday() == chrono::Weekday::Mon && date.iso_week().week().is_multiple_of(2),
        _ => date.day() == 1,
    };
    let mut ticks = Vec::new();
    for _ in 0..MAX_CANDIDATES {
        if let Some(at) = instant(date.and_time(chrono::NaiveTime::MIN), zone) {
            if at > to {
                break;
            }
            if at >= from && keeps(date) {
                ticks.push(at);
            }
        }
        let Some(next) = date.checked_add_days(Days::new(1)) else {
            break;
        };
        date = next;
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amsterdam() -> Zone {
        Zone::named("Europe/Amsterdam").unwrap()
    }

    fn at(text: &str) -> i64 {
        crate::scheduler::when::parse_instant(text, &amsterdam()).unwrap()
    }

    #[test]
    fn six_minutes_tick_every_minute_on_the_minute() {
        let from = at("2026-12-04T10:00:17");
        let ticks = Ticks::new(from, from + 6 * MINUTE, &amsterdam(), 8);
        assert_eq!(ticks.step, MINUTE);
        let labels: Vec<String> = ticks.at.iter().map(|&t| ticks.label(t)).collect();
        assert_eq!(labels, ["10:01", "10:02", "10:03", "10:04", "10:05", "10:06"]);
    }

    #[test]
    fn a_day_ticks_on_whole_local_hours() {
        let from = at("2026-12-04T10:23");
        let ticks = Ticks::new(from, from + DAY, &amsterdam(), 8);
        assert_eq!(ticks.step, 6 * HOUR);
        let labels: Vec<String> = ticks.at.iter().map(|&t| ticks.label(t)).collect();
        assert_eq!(labels, ["12:00", "18:00", "00:00", "06:00"]);
    }

    #[test]
    fn a_week_ticks_at_local_midnights() {
        let from = at("2026-11-27T16:05");
        let ticks = Ticks::new(from, from + 7 * DAY, &amsterdam(), 8);
        assert_eq!(ticks.step, DAY);
        assert_eq!(ticks.at.len(), 7);
        for &tick in &ticks.at {
            let local = local(tick, &amsterdam()).unwrap();
            assert_eq!((local.hour(), local.minute()), (0, 0), "{local}");
        }
        assert_eq!(ticks.label(ticks.at[0]), "11-28");
    }

    #[test]
    fn ticks_follow_the_zone_across_a_daylight_saving_change() {
        // 2026-03-29: Amsterdam skips 02:00-03:00, so six hours from 23:00 end at 06:00.
        let from = at("2026-03-28T23:00");
        let ticks = Ticks::new(from, from + 6 * HOUR, &amsterdam(), 8);
        assert_eq!(ticks.step, HOUR);
        let labels: Vec<String> = ticks.at.iter().map(|&t| ticks.label(t)).collect();
        assert_eq!(
            labels,
            ["23:00", "00:00", "01:00", "03:00", "04:00", "05:00", "06:00"]
        );
    }
}
