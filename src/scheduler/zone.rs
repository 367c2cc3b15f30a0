//! The house's time zone, read from the system's tz database (`/usr/share/zoneinfo`, the `tzdata`
//! package) through jiff, and offered to chrono and croner as a [`chrono::TimeZone`].
//!
//! Why not chrono-tz: it compiles every zone's full history into the binary as tables of pointers, which
//! every start of a position-independent binary relocates and so keeps in private memory (1.4 MB, a
//! tenth of the engine's idle RSS), and its rules are frozen at build time. The system's
//! database is updated by the OS when a country changes its clocks, without a new homewright.

use std::fmt;

use chrono::{FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, Timelike};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A time zone by IANA name (or UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone(TimeZone);

impl Zone {
    /// Coordinated Universal Time; needs no tz database.
    pub fn utc() -> Zone {
        Zone(TimeZone::UTC)
    }

    /// The zone named `name` (e.g. `Europe/Amsterdam`) in the system's tz database.
    pub fn named(name: &str) -> Result<Zone, String> {
        if name.eq_ignore_ascii_case("UTC") {
            return Ok(Zone::utc());
        }
        TimeZone::get(name).map(Zone).map_err(|_| {
            let hint = if std::path::Path::new("/usr/share/zoneinfo").is_dir() {
                ""
            } else {
                " (this system has no /usr/share/zoneinfo: install the tzdata package)"
            };
            format!("`{name}` is not an IANA time zone (e.g. Europe/Amsterdam){hint}")
        })
    }

    /// The system's zone (TZ, /etc/localtime), or UTC when it cannot be told.
    pub fn system() -> Zone {
        Zone(TimeZone::try_system().unwrap_or(TimeZone::UTC))
    }

    /// The IANA name, when the zone has one (a zone from a `TZ` rule or a copied /etc/localtime has none).
    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or("the system's time zone")
    }

    fn offset_at(&self, utc: &NaiveDateTime) -> ZoneOffset {
        let at = utc.and_utc();
        let seconds = jiff::Timestamp::new(at.timestamp(), 0)
            .map(|t| self.0.to_offset(t).seconds())
            .unwrap_or(0);
        self.offset(seconds)
    }

    fn offset(&self, seconds: i32) -> ZoneOffset {
        ZoneOffset {
            zone: self.clone(),
            fixed: FixedOffset::east_opt(seconds).unwrap_or_else(|| chrono::Offset::fix(&chrono::Utc)),
        }
    }
}

/// A zone's offset from UTC at some instant; carries the zone, as chrono asks of an offset.
#[derive(Clone, Debug)]
pub struct ZoneOffset {
    zone: Zone,
    fixed: FixedOffset,
}

impl chrono::Offset for ZoneOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fixed, f)
    }
}

impl chrono::TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Zone {
        offset.zone.clone()
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<ZoneOffset> {
        self.offset_from_local_datetime(&local.and_time(chrono::NaiveTime::MIN))
    }

    /// A wall-clock time maps to one instant, none (skipped by a spring-forward) or two (repeated by a
    /// fall-back), as the zone's transitions say.
    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<ZoneOffset> {
        use chrono::Datelike;
        let civil = i16::try_from(local.year()).ok().and_then(|year| {
            jiff::civil::DateTime::new(
                year,
                local.month() as i8,
                local.day() as i8,
                local.hour() as i8,
                local.minute() as i8,
                local.second() as i8,
                0,
            )
            .ok()
        });
        let Some(civil) = civil else {
            return MappedLocalTime::None;
        };
        match self.0.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => MappedLocalTime::Single(self.offset(offset.seconds())),
            AmbiguousOffset::Gap { .. } => MappedLocalTime::None,
            AmbiguousOffset::Fold { before, after } => {
                MappedLocalTime::Ambiguous(self.offset(before.seconds()), self.offset(after.seconds()))
            }
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        self.offset_at(&utc.and_time(chrono::NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        self.offset_at(utc)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Timelike};

    use super::*;

    fn amsterdam() -> Zone {
        Zone::named("Europe/Amsterdam").unwrap()
    }

    #[test]
    fn summer_and_winter_offsets_come_from_the_system_database() {
        let zone = amsterdam();
        let summer = zone.timestamp_opt(1_782_036_000, 0).unwrap(); // 2026-06-21 10:00 UTC
        assert_eq!(summer.hour(), 12);
        let winter = zone.timestamp_opt(1_797_847_200, 0).unwrap(); // 2026-12-21 10:00 UTC
        assert_eq!(winter.hour(), 11);
        assert_eq!(zone.name(), "Europe/Amsterdam");
    }

    #[test]
    fn skipped_and_repeated_hours_map_to_none_and_to_two_instants() {
        let zone = amsterdam();
        let day = |d: u32, h: u32| {
            NaiveDate::from_ymd_opt(2026, 3, d)
                .unwrap()
                .and_hms_opt(h, 30, 0)
                .unwrap()
        };
        assert!(matches!(
            zone.from_local_datetime(&day(29, 2)),
            MappedLocalTime::None
        ));
        let october = NaiveDate::from_ymd_opt(2026, 10, 25)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        let MappedLocalTime::Ambiguous(first, second) = zone.from_local_datetime(&october) else {
            panic!("2:30 on 2026-10-25 happens twice in Amsterdam");
        };
        assert_eq!(second.timestamp() - first.timestamp(), 3_600);
        assert!(matches!(
            zone.from_local_datetime(&day(30, 2)),
            MappedLocalTime::Single(_)
        ));
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let error = Zone::named("Mars/Olympus").unwrap_err();
        assert!(
            error.starts_with("`Mars/Olympus` is not an IANA time zone"),
            "{error}"
        );
        assert_eq!(Zone::named("UTC").unwrap(), Zone::utc());
        assert_eq!(Zone::utc().name(), "UTC");
    }
}
