//! `homewright why RULE`: "why did (or didn't) it fire?" How often it ran over the period, failed and did
//! nothing; its latest failures (however old, within the period) with their place among the runs; its
//! recent runs (trigger, topic, duration, outcome with the error's position); and the messages that
//! matched an `on_message` trigger but made it do nothing.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::format::{Format, write_result};
use crate::config::{self, Config};
use crate::event::now_millis;
use crate::relays::model::RelayModel;
use crate::rules::host::TriggerKind;
use crate::rules::{Limits, RuleSet};
use crate::scheduler::Clock;
use crate::scheduler::Zone;
use crate::scheduler::when::format_local;
use crate::store::{HistoryReader, QueryResult, SqlValue};

const COUNTS: &str = "\
SELECT count(*), coalesce(sum(error IS NOT NULL), 0), coalesce(sum(error IS NULL AND actions = 0), 0)
FROM rule_runs WHERE rule = ? AND ts >= ?";

/// Failures numbered by their place among all runs of the period (1 = the first run), newest first.
const FAILURES: &str = "\
SELECT time, '#' || n AS run, trigger, topic, error FROM (
    SELECT id, ts AS time, trigger, coalesce(topic, '') AS topic, error,
           row_number() OVER (ORDER BY id) AS n
    FROM rule_runs WHERE rule = ? AND ts >= ?)
WHERE error IS NOT NULL ORDER BY id DESC LIMIT ?";

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

/// What the history says about a rule over the period.
struct Report {
    runs: i64,
    failed: i64,
    idle_runs: i64,
    failures: QueryResult,
    recent: QueryResult,
    idle: QueryResult,
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

fn integer(result: &QueryResult, column: usize) -> i64 {
    match result.rows.first().and_then(|row| row.get(column)) {
        Some(SqlValue::Integer(n)) => *n,
        _ => 0,
    }
}

pub fn why(args: Why<'_>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = config::load(args.config)?;
    let now = now_millis();
    let since = super::time_arg("--since", args.since, &config.location.timezone, now)?;
    let file = config.rules.dir.join(format!("{}.rhai", args.rule));
    let db = super::history_path(args.db, Some(&config), args.config)?;
    let report = read(&db, &args, since)?;
    let zone = &config.location.timezone;
    if report.runs == 0 {
        if !file.is_file() {
            anyhow::bail!(
                "there is no rule `{}` (no {}) and it has not run since {}",
                args.rule,
                file.display(),
                args.since
            );
        }
        let hint = idle_hint(&config, &file, now);
        writeln!(
            out,
            "{} has not run since {} ({}): {hint}",
            args.rule,
            args.since,
            file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{} since {}: {} runs, {} failed, {} did nothing",
        args.rule,
        format_local(since, zone),
        report.runs,
        report.failed,
        report.idle_runs
    )?;
    if report.failed > 0 {
        let shown = report.failures.rows.len();
        let more = if (shown as i64) < report.failed {
            format!(", the latest {shown} shown")
        } else {
            String::new()
        };
        writeln!(
            out,
            "\nFailures (newest first; `run` counts from the period's first run{more}):"
        )?;
        write_result(out, &local_times(report.failures, zone), Format::Table)?;
    }
    writeln!(out, "\nRecent runs (newest first):")?;
    write_result(out, &local_times(report.recent, zone), Format::Table)?;
    writeln!(
        out,
        "\nMessages that matched an on_message trigger but made it do nothing:"
    )?;
    if report.idle.rows.is_empty() {
        writeln!(out, "(none)")?;
    } else {
        write_result(out, &local_times(report.idle, zone), Format::Table)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn read(db: &Path, args: &Why<'_>, since: i64) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let reader = HistoryReader::open(db).await?;
        let period = [SqlValue::Text(args.rule.into()), SqlValue::Integer(since)];
        let limited = [
            SqlValue::Text(args.rule.into()),
            SqlValue::Integer(since),
            SqlValue::Integer(args.limit),
        ];
        let counts = reader.query(COUNTS, &period, None).await?;
        anyhow::Ok(Report {
            runs: integer(&counts, 0),
            failed: integer(&counts, 1),
            idle_runs: integer(&counts, 2),
            failures: reader.query(FAILURES, &limited, None).await?,
            recent: reader.query(RUNS, &limited, None).await?,
            idle: reader.query(IDLE, &limited, None).await?,
        })
    })
}

/// Why a rule that exists may not have run: what its triggers wait for.
fn idle_hint(config: &Config, file: &Path, now: i64) -> String {
    let limits = Limits::of(config);
    let location = config.location.clone();
    let mut rules = RuleSet::new(limits, None, Default::default(), Clock::Wall, location.clone());
    let relays = RelayModel::start_states(&config.gpio, &Default::default(), 0);
    rules.set_relays(config.gpio.clone(), &config.mqtt.base_topic, relays);
    if let Err(problem) = rules.load_file(file) {
        return format!("it does not load: {problem}");
    }
    let Some(rule) = rules.rules().first() else {
        return "it does not load".into();
    };
    let mut hints = Vec::new();
    let mut filters = false;
    for trigger in rule.triggers() {
        match trigger {
            TriggerKind::Message { .. }
            | TriggerKind::Change { .. }
            | TriggerKind::Held { .. }
            | TriggerKind::Silent { .. } => filters = true,
            TriggerKind::Start => hints.push("on_start runs only when the engine starts".to_string()),
            TriggerKind::Timed { recurrence, .. } => {
                hints.push(match recurrence.next_after(now, &location) {
                    Some(at) => format!(
                        "{} next fires at {}",
                        recurrence.describe(),
                        format_local(at, &location.timezone)
                    ),
                    None => format!("{} never fires here", recurrence.describe()),
                })
            }
        }
    }
    if filters {
        hints.insert(
            0,
            "no message matched its triggers: check their topic filters against mqtt.subscribe, and `homewright check`".into(),
        );
    }
    if hints.is_empty() {
        return "it registers no trigger".into();
    }
    hints.join("; ")
}
