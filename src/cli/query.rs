//! `homewright query`: SQL over the history on a read-only connection, or with `--db postgres://...`
//! in a read-only transaction on the shared PostgreSQL history.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::Context;

use super::format::{Format, write_result};
use crate::store::HistoryReader;
use crate::store::query::QueryError;

/// A duration as the user wrote it: `200ms`, `30s`.
fn humanize(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        _ => format!("{}ms", duration.as_millis()),
    }
}

pub fn query(
    config_path: &Path,
    db: Option<&Path>,
    format: Format,
    sql: &str,
    timeout: Duration,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    // The config gives the database and the time zone; with --db and no usable config, the system's zone.
    let config = crate::config::load(config_path).ok();
    if let Some(config) = &config {
        super::local_time_follows(&config.location.timezone);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(url) = db
        .and_then(Path::to_str)
        .filter(|d| d.starts_with("postgres://") || d.starts_with("postgresql://"))
    {
        let result = runtime.block_on(crate::store::postgres::query_read_only(url, sql, timeout));
        let result = match result {
            Err(QueryError::Interrupted) => anyhow::bail!(
                "the query ran longer than {} (--timeout) and was stopped; narrow it (e.g. WHERE ts > ...) or pass a longer --timeout",
                humanize(timeout)
            ),
            result => result?,
        };
        write_result(out, &result, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = super::history_path(db, config.as_ref(), config_path)?;
    let result = runtime.block_on(async {
        let reader = HistoryReader::open(&path).await?;
        // SQLite checks the deadline while it works, so even a runaway recursive query stops on time.
        let deadline = Instant::now() + timeout;
        match reader.query(sql, &[], Some(deadline)).await {
            Err(QueryError::Interrupted) => Err(anyhow::anyhow!(
                "the query ran longer than {} (--timeout) and was stopped; narrow it (e.g. WHERE ts > ...) or pass a longer --timeout",
                humanize(timeout)
            )),
            result => anyhow::Ok(result?),
        }
    })?;
    write_result(out, &result, format)?;
    Ok(ExitCode::SUCCESS)
}
