//! When recurring triggers fire: `every`, `cron` and sunrise/sunset, each turned into "the next instant
//! after T". Calendars are the crates' (croner, jiff through [`super::zone`], sunrise), not ours: the next time is always
//! computed in the configured time zone from the previous firing, which is what makes DST right (a job in
//! the skipped hour runs once just after it, a job in the repeated hour runs once).

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use croner::Cron;
use croner::parser::CronParser;
use sunrise::{Coordinates, SolarDay, SolarEvent};

use super::zone::Zone;

/// Where the house is and its time zone.
#[derive(Debug, Clone)]
pub struct Location {
    pub timezone: Zone,
    /// Latitude and longitude, when configured (sun triggers and `is_dark()` need them).
    pub coordinates: Option<(f64, f64)>,
}

impl Default for Location {
    fn default() -> Self {
        Location {
            timezone: Zone::system(),
            coordinates: None,
        }
    }
}

/// Sunrise or sunset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sun {
    Rise,
    Set,
}

/// A recurring schedule.
#[derive(Debug, Clone)]
pub enum Recurrence {
    /// Every `interval` milliseconds, counted from when the rule loaded.
    Every { interval: i64 },
    /// A cron pattern (5 fields, or 6 with seconds first), in local time.
    Cron { pattern: String, cron: Box<Cron> },
    /// Sunrise or sunset plus `offset` milliseconds (negative: before).
    Sun { event: Sun, offset: i64 },
}

impl Recurrence {
    /// Parses a cron pattern, with or without a seconds field.
    pub fn cron(pattern: &str) -> Result<Recurrence, String> {
        let cron = CronParser::new()
            .parse(pattern)
            .map_err(|e| format!("`{pattern}` is not a cron pattern: {e}"))?;
        Ok(Recurrence::Cron {
            pattern: pattern.to_string(),
            cron: Box::new(cron),
        })
    }

    /// A short description for logs and trigger identities, e.g. `every 10m`, `cron 0 7 * * *`.
    pub fn describe(&self) -> String {
        match self {
            Recurrence::Every { interval } => format!("every {interval}ms"),
            Recurrence::Cron { pattern, .. } => format!("cron {pattern}"),
            Recurrence::Sun {
                event: Sun::Rise,
                offset,
            } => format!("sunrise {offset:+}ms"),
            Recurrence::Sun {
                event: Sun::Set,
                offset,
            } => format!("sunset {offset:+}ms"),
        }
    }

    /// The first instant strictly after `after` (unix ms) when this fires; `None` when it never does
    /// (no location for a sun trigger, or no sunrise/sunset for a year: polar regions).
    pub fn next_after(&self, after: i64, location: &Location) -> Option<i64> {
        match self {
            Recurrence::Every { interval } => after.checked_add(*interval),
            Recurrence::Cron { cron, .. } => {
                let local = location.timezone.timestamp_millis_opt(after).single()?;
                cron.find_next_occurrence(&local, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
            Recurrence::Sun { event, offset } => {
                let (lat, lon) = location.coordinates?;
                let local_date = location
                    .timezone
                    .timestamp_millis_opt(after)
                    .single()?
                    .date_naive();
                // From the day before (a negative offset can move an event across midnight) onward.
                (-1..=366).find_map(|days| {
                    let date = local_date.checked_add_signed(ChronoDuration::days(days))?;
                    let at = sun_event(lat, lon, date, *event)?.timestamp_millis() + offset;
                    (at > after).then_some(at)
                })
            }
        }
    }
}

/// The time of sunrise or sunset on `date` at (`lat`, `lon`); `None` in polar day or night.
pub fn sun_event(lat: f64, lon: f64, date: NaiveDate, event: Sun) -> Option<DateTime<Utc>> {
    let coordinates = Coordinates::new(lat, lon)?;
    let event = match event {
        Sun::Rise => SolarEvent::Sunrise,
        Sun::Set => SolarEvent::Sunset,
    };
    SolarDay::new(coordinates, date).event_time(event)
}

/// Whether the sun is down at `at` (unix ms): before today's sunrise or after today's sunset. On a
/// day with neither (polar day or night) the season decides: summer is the half year with the pole
/// tilted toward the sun.
pub fn is_dark(at: i64, location: &Location) -> Option<bool> {
    let (lat, lon) = location.coordinates?;
    let local = location.timezone.timestamp_millis_opt(at).single()?;
    let date = local.date_naive();
    let rise = sun_event(lat, lon, date, Sun::Rise).map(|t| t.timestamp_millis());
    let set = sun_event(lat, lon, date, Sun::Set).map(|t| t.timestamp_millis());
    Some(match (rise, set) {
        (Some(rise), Some(set)) => at < rise || at >= set,
        (Some(rise), None) => at < rise,
        (None, Some(set)) => at >= set,
        (None, None) => {
            let northern_summer = (4..=9).contains(&date.month());
            northern_summer != (lat >= 0.0)
        }
    })
}

/// Parses a signed offset such as `-15m`, `+1h` or `30s` into milliseconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let duration = crate::config::units::parse_duration(magnitude)?;
    let millis = i64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))?;
    Ok(sign * millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amsterdam() -> Location {
        Location {
            timezone: Zone::named("Europe/Amsterdam").unwrap(),
            coordinates: Some((52.37, 4.89)),
        }
    }

    fn at(zone: &Zone, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    #[test]
    fn sunset_in_amsterdam_on_midsummer_is_the_published_time() {
        let location = amsterdam();
        let sunset = Recurrence::Sun {
            event: Sun::Set,
            offset: 0,
        };
        let next = sunset
            .next_after(at(&location.timezone, 2026, 6, 21, 12, 0), &location)
            .unwrap();
        let published = at(&location.timezone, 2026, 6, 21, 22, 6);
        assert!(
            (next - published).abs() <= 2 * 60_000,
            "sunset {next} vs published {published}"
        );
        let early = Recurrence::Sun {
            event: Sun::Set,
            offset: -15 * 60_000,
        };
        assert_eq!(
            early.next_after(at(&location.timezone, 2026, 6, 21, 12, 0), &location),
            Some(next - 15 * 60_000)
        );
    }

    #[test]
    fn polar_day_has_no_sunset_for_months() {
        let svalbard = Location {
            timezone: Zone::named("Arctic/Longyearbyen").unwrap(),
            coordinates: Some((78.22, 15.65)),
        };
        let sunset = Recurrence::Sun {
            event: Sun::Set,
            offset: 0,
        };
        let next = sunset
            .next_after(at(&svalbard.timezone, 2026, 6, 1, 12, 0), &svalbard)
            .unwrap();
        let august = at(&svalbard.timezone, 2026, 8, 1, 0, 0);
        assert!(next > august, "the sun does not set on Svalbard in June and July");
        assert_eq!(
            is_dark(at(&svalbard.timezone, 2026, 6, 21, 0, 0), &svalbard),
            Some(false)
        );
        assert_eq!(
            is_dark(at(&svalbard.timezone, 2026, 12, 21, 12, 0), &svalbard),
            Some(true)
        );
    }

    #[test]
    fn dark_between_sunset_and_sunrise() {
        let location = amsterdam();
        assert_eq!(
            is_dark(at(&location.timezone, 2026, 6, 21, 23, 0), &location),
            Some(true)
        );
        assert_eq!(
            is_dark(at(&location.timezone, 2026, 6, 21, 12, 0), &location),
            Some(false)
        );
        assert_eq!(
            is_dark(at(&location.timezone, 2026, 6, 21, 3, 0), &location),
            Some(true)
        );
        assert_eq!(
            is_dark(
                0,
                &Location {
                    coordinates: None,
                    ..location
                }
            ),
            None
        );
    }

    #[test]
    fn offsets_are_signed_durations() {
        assert_eq!(parse_offset("-15m"), Ok(-900_000));
        assert_eq!(parse_offset("+1h"), Ok(3_600_000));
        assert_eq!(parse_offset("0s"), Ok(0));
        assert!(parse_offset("soon").is_err());
    }

    #[test]
    fn cron_accepts_five_or_six_fields_and_names() {
        assert!(Recurrence::cron("0 7 * * Mon-Fri").is_ok());
        assert!(Recurrence::cron("0 30 6 * * MON-FRI").is_ok());
        assert!(Recurrence::cron("0 0 1 Jan *").is_ok());
        assert!(Recurrence::cron("61 * * * *").is_err());
    }
}
