//! The two value syntaxes config and rules share: durations (`500ms`, `30s`, `5m`, `2h`, `30d`, or
//! combined as `1h30m`) and byte sizes (`1048576`, `512KiB`, `1MiB`).

use std::time::Duration;

/// Parses a duration such as `500ms`, `30s`, `5m`, `2h`, `30d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("`{text}` is not a duration (write it like 500ms, 30s, 5m, 2h or 30d)");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let millis_per_unit = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        let millis = number.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(invalid)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// Parses a byte size: a plain number of bytes, or a number with `KiB`, `MiB` (also `KB`/`MB`, read as
/// binary units, since that is what people mean when they size an MQTT packet).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let invalid = || format!("`{text}` is not a size (write it like 65536, 512KiB or 1MiB)");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..split].parse().map_err(|_| invalid())?;
    let factor = match text[split..].trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "kB" | "K" | "k" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        _ => return Err(invalid()),
    };
    number.checked_mul(factor).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "",
            "5",
            "m",
            "5 minutes",
            "-5m",
            "1.5h",
            "5x",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("lots").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const UNITS: [(&str, u64); 5] = [
            ("ms", 1),
            ("s", 1_000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
        ];

        proptest! {
            #[test]
            fn a_written_duration_is_the_sum_of_its_parts(parts in prop::collection::vec((0u64..100_000, 0usize..5), 1..5)) {
                let text: String = parts.iter().map(|(n, u)| format!("{n}{}", UNITS[*u].0)).collect();
                let millis: u64 = parts.iter().map(|(n, u)| n * UNITS[*u].1).sum();
                prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(millis)));
            }

            #[test]
            fn any_text_is_a_duration_or_an_error_naming_it(text in ".{0,24}") {
                if let Err(message) = parse_duration(&text) {
                    prop_assert!(message.contains(text.trim()));
                }
            }

            #[test]
            fn numbers_without_a_unit_are_not_durations(n in any::<u64>()) {
                prop_assert!(parse_duration(&n.to_string()).is_err());
            }

            #[test]
            fn sizes_scale_by_their_unit(n in any::<u64>(), unit in 0usize..3) {
                let (suffix, factor) = [("", 1u64), ("KiB", 1 << 10), ("MiB", 1 << 20)][unit];
                let parsed = parse_size(&format!("{n}{suffix}"));
                match n.checked_mul(factor) {
                    Some(bytes) => prop_assert_eq!(parsed, Ok(bytes)),
                    None => prop_assert!(parsed.is_err()),
                }
            }

            #[test]
            fn any_text_is_a_size_or_an_error(text in ".{0,24}") {
                let _ = parse_size(&text);
            }
        }
    }
}
