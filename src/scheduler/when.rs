//! Times as people write them on the command line and in scenario files: `2026-11-24`,
//! `2026-11-24T18:00`, an RFC 3339 time, or (where "ago" makes sense) a duration such as `24h` or `7d`.
//! Times without an offset are local to the configured time zone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};

use super::zone::Zone;

/// Parses an absolute time into unix ms.
pub fn parse_instant(text: &str, zone: &Zone) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    let Some(naive) = naive else {
        return Err(format!(
            "`{text}` is not a time (write 2026-11-24, 2026-11-24T18:00 or an RFC 3339 time)"
        ));
    };
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| {
            format!(
                "`{text}` does not exist in {} (it falls in a DST gap)",
                zone.name()
            )
        })
}

/// Parses an absolute time, or a duration meaning that long before `now`.
pub fn parse_since(text: &str, zone: &Zone, now: i64) -> Result<i64, String> {
    if let Ok(ago) = crate::config::units::parse_duration(text) {
        return Ok(now - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX));
    }
    parse_instant(text, zone).map_err(|_| {
        format!("`{text}` is not a time (write 24h or 7d for that long ago, 2026-11-24, 2026-11-24T18:00, or an RFC 3339 time)")
    })
}

/// A unix ms time as local RFC 3339 (`2026-11-24T18:00:00.000+01:00`).
pub fn format_local(at: i64, zone: &Zone) -> String {
    zone.timestamp_millis_opt(at)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_form() {
        let zone = &Zone::named("Europe/Amsterdam").unwrap();
        let six = parse_instant("2026-11-24T18:00", zone).unwrap();
        assert_eq!(parse_instant("2026-11-24T17:00:00Z", zone), Ok(six));
        assert_eq!(parse_instant("2026-11-24 18:00", zone), Ok(six));
        assert_eq!(parse_instant("2026-11-24", zone), Ok(six - 18 * 3_600_000));
        assert_eq!(parse_since("24h", zone, six), Ok(six - 86_400_000));
        assert!(parse_instant("yesterday", zone).is_err());
        assert_eq!(format_local(six, zone), "2026-11-24T18:00:00.000+01:00");
    }
}
