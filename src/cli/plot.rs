//! `homewright plot TOPIC[:$.field] [--since 24h] [--until TIME] [--out FILE.svg|.png]`: a topic's
//! history as a chart file, or as text in the terminal.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};

use crate::config::{self, units::parse_duration};
use crate::event::now_millis;
use crate::plot::{self, Series, Spec, chart, terminal};
use crate::store::HistoryReader;

/// What `plot` was asked for.
pub struct PlotArgs<'a> {
    pub config: &'a Path,
    pub db: Option<&'a Path>,
    pub spec: &'a str,
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub out: Option<&'a Path>,
}

pub fn plot(args: PlotArgs<'_>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let spec = Spec::parse(args.spec).map_err(anyhow::Error::msg)?;
    let now = now_millis();
    let from = parse_time(args.since, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let to = match args.until {
        Some(until) => parse_time(until, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?,
        None => now,
    };
    anyhow::ensure!(from < to, "--since must be before --until (or before now)");
    if let Some(path) = args.out {
        chart::Format::for_path(path).map_err(anyhow::Error::msg)?;
    }
    let db = match args.db {
        Some(path) => path.to_path_buf(),
        None => {
            config::load(args.config)
                .context("cannot find the database (pass --db PATH, or -c FILE for its config)")?
                .database
                .path
        }
    };
    let series = load(&db, &spec, from, to)?;
    if series.points.is_empty() {
        anyhow::bail!(
            "no values for {} since {} ({} messages without a value; for JSON payloads name a field: {}:$.temperature)",
            spec.text,
            chart::time_label(from, i64::MAX),
            series.skipped,
            spec.topic
        );
    }
    match args.out {
        Some(path) => {
            chart::write(path, &spec.text, &series, from, to).map_err(anyhow::Error::msg)?;
            writeln!(out, "wrote {} ({} values)", path.display(), series.points.len())?;
        }
        None => write!(out, "{}", terminal::render(&spec.text, &series, from, to))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn load(db: &Path, spec: &Spec, from: i64, to: i64) -> anyhow::Result<Series> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let reader = HistoryReader::open(db).await?;
        anyhow::Ok(plot::load(&reader, spec, from, to).await?)
    })
}

/// A time on the command line, as unix ms: a duration meaning that long ago (`24h`, `7d`), a date
/// (`2026-11-24`, local midnight), a local date and time (`2026-11-24T18:00`), or RFC 3339.
fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    if let Ok(ago) = parse_duration(text) {
        return Ok(now - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX / 2));
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(Default::default())));
    match local.map(|t| Local.from_local_datetime(&t).earliest()) {
        Ok(Some(time)) => Ok(time.timestamp_millis()),
        Ok(None) => Err(format!(
            "`{text}` does not exist in the local time zone (a DST gap)"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a time (write 24h, 7d, 2026-11-24, 2026-11-24T18:00 or an RFC 3339 time)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_durations_ago_or_dates() {
        assert_eq!(parse_time("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert_eq!(parse_time("2026-11-24T18:00:00Z", 0), Ok(1_795_543_200_000));
        assert!(parse_time("2026-11-24", 0).is_ok());
        assert!(parse_time("2026-11-24T18:00", 0).is_ok());
        assert!(parse_time("yesterday", 0).unwrap_err().contains("is not a time"));
    }
}
