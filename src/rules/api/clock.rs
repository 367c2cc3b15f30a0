//! Local time for rules: `time()`, `time_between(from, to)`, `is_weekday()` and `is_weekend()`. They
//! read the engine's clock (virtual in `test` and `replay`) in `location.timezone`, so a rule sees the
//! wall clock of the house, daylight saving days included, never the machine's own zone.

use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, TimeZone, Timelike, Weekday};
use rhai::{Dynamic, Engine, EvalAltResult, INT, Map, NativeCallContext};

use super::error_at;
use crate::rules::host::Host;
use crate::scheduler::Zone;

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let time = Arc::clone(host);
    engine.register_fn("time", move || -> Map { time_map(&local(&time)) });
    let between = Arc::clone(host);
    engine.register_fn(
        "time_between",
        move |ctx: NativeCallContext, from: &str, to: &str| -> Result<bool> {
            let describe = |e: String| error_at(&ctx, format!("time_between(\"{from}\", \"{to}\"): {e}"));
            let start = parse_clock(from).map_err(describe)?;
            let end = parse_clock(to).map_err(describe)?;
            if start == end {
                return Err(describe(
                    "the start and the end are the same time, so no moment is between them".into(),
                ));
            }
            Ok(in_window(second_of_day(&local(&between)), start, end))
        },
    );
    let weekday = Arc::clone(host);
    engine.register_fn("is_weekday", move || !is_weekend(&local(&weekday)));
    let weekend = Arc::clone(host);
    engine.register_fn("is_weekend", move || is_weekend(&local(&weekend)));
}

/// The engine's current time as the house's clocks show it.
fn local(host: &Host) -> NaiveDateTime {
    local_at(host.now(), &host.location().timezone)
}

/// `at` (unix ms) on the wall clock of `zone`.
pub fn local_at(at: i64, zone: &Zone) -> NaiveDateTime {
    zone.timestamp_millis_opt(at)
        .single()
        .map(|t| t.naive_local())
        .unwrap_or_default()
}

fn time_map(t: &NaiveDateTime) -> Map {
    let mut map = Map::new();
    let mut put = |key: &str, value: Dynamic| {
        map.insert(key.into(), value);
    };
    put("year", Dynamic::from(INT::from(t.year())));
    put("month", Dynamic::from(INT::from(t.month())));
    put("day", Dynamic::from(INT::from(t.day())));
    put("hour", Dynamic::from(INT::from(t.hour())));
    put("minute", Dynamic::from(INT::from(t.minute())));
    put("second", Dynamic::from(INT::from(t.second())));
    put("weekday", Dynamic::from(weekday_name(t.weekday()).to_string()));
    put("date", Dynamic::from(t.format("%Y-%m-%d").to_string()));
    put("clock", Dynamic::from(t.format("%H:%M").to_string()));
    map
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Mon",
        Weekday::Tue => "Tue",
        Weekday::Wed => "Wed",
        Weekday::Thu => "Thu",
        Weekday::Fri => "Fri",
        Weekday::Sat => "Sat",
        Weekday::Sun => "Sun",
    }
}

fn is_weekend(t: &NaiveDateTime) -> bool {
    matches!(t.weekday(), Weekday::Sat | Weekday::Sun)
}

fn second_of_day(t: &NaiveDateTime) -> u32 {
    t.num_seconds_from_midnight()
}

/// Whether `now` (seconds since local midnight) is in `[start, end)`, the window wrapping midnight when
/// it ends before it starts (`22:00` to `06:30`).
fn in_window(now: u32, start: u32, end: u32) -> bool {
    if start < end {
        start <= now && now < end
    } else {
        now >= start || now < end
    }
}

/// `HH:MM` or `HH:MM:SS`, 24-hour, as seconds since midnight.
fn parse_clock(text: &str) -> std::result::Result<u32, String> {
    let bad = || format!("`{text}` is not a time of day (use HH:MM or HH:MM:SS, 24-hour, e.g. \"06:30\")");
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let mut numbers = [0u32; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        *slot = part.parse().map_err(|_| bad())?;
    }
    let [hour, minute, second] = numbers;
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    Ok(hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_midnight_and_end_before_their_end() {
        let at = |t: &str| parse_clock(t).unwrap();
        let (start, end) = (at("22:00"), at("06:30"));
        assert!(in_window(at("23:59:59"), start, end));
        assert!(in_window(at("00:00"), start, end));
        assert!(in_window(at("06:29:59"), start, end));
        assert!(!in_window(at("06:30"), start, end));
        assert!(!in_window(at("21:59:59"), start, end));
        assert!(in_window(at("22:00"), start, end));
        assert!(in_window(at("12:00"), at("06:30"), at("22:00")));
        assert!(!in_window(at("22:00"), at("06:30"), at("22:00")));
    }

    #[test]
    fn clock_times_are_checked() {
        assert_eq!(parse_clock("06:30:15"), Ok(6 * 3600 + 30 * 60 + 15));
        for bad in [
            "6", "24:00", "12:60", "1:2:3:4", "aa:bb", "12:", "-1:00", "123:00",
        ] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_clock("6:05"), Ok(6 * 3600 + 5 * 60));
    }
}
