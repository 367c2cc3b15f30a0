//! `homewright why RULE`: "why did (or didn't) it fire?" Its recent runs (trigger, topic, duration,
//! outcome with the error's position) and the messages that matched an `on_message` trigger but made it
//! do nothing.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::format::{Format, write_result};
use crate::config;
use crate::event::now_millis;
use crate::scheduler::Zone;
use crate::scheduler::when::format_local;
use crate::store::{HistoryReader, QueryResult, SqlValue};

const RUNS: &str = "\
SELECT ts AS time, trigger, coalesce(topic, '') AS topic,
       duration_us, CASE WHEN error IS NOT NULL THEN 'failed: ' || error
                         WHEN actions = 0 THEN 'did nothing' ELSE actions || ' action(s)' END AS outcome,
       CASE WHEN late THEN 'late' ELSE '' END AS late
FROM rule_runs WHERE rule = ? AND ts >= ? ORDER BY id DESC LIMIT ?";

const IDLE: &str = "\
SELECT r.ts AS time, r.topic,
       (SELECT CAST(m.payload AS TEXT) FROM messages m WHERE m.topic = r.topic AND m.ts <= r.ts
        ORDER BY m.ts DESC, m.id DESC LIMIT 1) AS payload
FROM rule_runs r
WHERE r.rule = ? AND r.trigger = 'on_message' AND r.actions = 0 AND r.error IS NULL AND r.ts >= ?
ORDER BY r.id DESC LIMIT ?";

/// What to explain.
pub struct Why<'a> {
    pub config: &'a Path,
    pub db: Option<&'a Path>,
    pub rule: &'a str,
    pub since: &'a str,
    pub limit: i64,
}

/// Shows the first column (unix ms) as local time: SQLite knows no time zones but UTC and the host's.
fn local_times(mut result: QueryResult, zone: &Zone) -> QueryResult {
    for row in &mut result.rows {
        if let Some(SqlValue::Integer(ts)) = row.first() {
            row[0] = SqlValue::Text(format_local(*ts, zone));
        }
    }
    result
}

pub fn why(args: Why<'_>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = config::load(args.config)?;
    let since = super::time_arg("--since", args.since, &config.location.timezone, now_millis())?;
    let db = super::history_path(args.db, Some(&config), args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (runs, idle) = runtime.block_on(async {
        let reader = HistoryReader::open(&db).await?;
        let params = [
            SqlValue::Text(args.rule.into()),
            SqlValue::Integer(since),
            SqlValue::Integer(args.limit),
        ];
        let runs = reader.query(RUNS, &params, None).await?;
        let idle = reader.query(IDLE, &params, None).await?;
        anyhow::Ok((runs, idle))
    })?;
    let (runs, idle) = (
        local_times(runs, &config.location.timezone),
        local_times(idle, &config.location.timezone),
    );
    if runs.rows.is_empty() {
        let file = config.rules.dir.join(format!("{}.rhai", args.rule));
        let hint = if file.is_file() {
            "it is loaded but nothing triggered it: check its topic filters against mqtt.subscribe, and `homewright check`"
        } else {
            "there is no such rule file"
        };
        writeln!(
            out,
            "{} has not run since {}: {hint} ({})",
            args.rule,
            args.since,
            file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "Recent runs of {} (newest first):", args.rule)?;
    write_result(out, &runs, Format::Table)?;
    writeln!(
        out,
        "\nMessages that matched an on_message trigger but made it do nothing:"
    )?;
    if idle.rows.is_empty() {
        writeln!(out, "(none)")?;
    } else {
        write_result(out, &idle, Format::Table)?;
    }
    Ok(ExitCode::SUCCESS)
}
