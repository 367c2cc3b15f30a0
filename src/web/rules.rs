//! The Rules page: every rule file with its triggers, its runs and failures in the last 24 hours, its
//! last error with `file:line:col`, and its recent runs and actions (what `homewright why` prints); a
//! file that does not load shows its error with the source line and a caret.
//!
//! The files are compiled here as `homewright check` compiles them (on a blocking thread, with the
//! rules' limits), so the page shows what is on disk now, including an edit the engine refused and
//! runs the last good version of.

use std::fmt::Write;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::html::{self, age, escape};
use super::topic::local_time;
use super::{AppState, Shared, gate, logout_token};
use crate::event::now_millis;
use crate::relays::model::RelayModel;
use crate::rules::host::{Pacing, TriggerKind};
use crate::rules::{Limits, RuleSet};
use crate::scheduler::Clock;
use crate::store::{QueryResult, SqlValue};

const DAY_MS: i64 = 86_400_000;

/// How long one query of the page may take: a busy rule's day of runs is large on a Pi.
const QUERY_TIME: Duration = Duration::from_secs(10);

/// Recent runs and actions shown per rule.
const RECENT: i64 = 10;

const COUNTS: &str = "\
SELECT count(*), coalesce(sum(error IS NOT NULL), 0) FROM rule_runs WHERE rule = ? AND ts >= ?";

const LAST_ERROR: &str = "\
SELECT ts, error FROM rule_runs WHERE rule = ? AND ts >= ? AND error IS NOT NULL ORDER BY ts DESC, id DESC LIMIT 1";

const RUNS: &str = "\
SELECT ts, trigger, coalesce(topic, ''), duration_us,
       CASE WHEN error IS NOT NULL THEN 'failed: ' || error
            WHEN actions = 0 THEN 'did nothing' ELSE actions || ' action(s)' END
FROM rule_runs WHERE rule = ? AND ts >= ? ORDER BY id DESC LIMIT ?";

const ACTIONS: &str = "\
SELECT ts, kind, target, coalesce(CAST(value AS TEXT), '') FROM actions
WHERE rule = ? AND ts >= ? ORDER BY id DESC LIMIT ?";

/// A rule file as compiled now.
struct RuleFile {
    name: String,
    triggers: Vec<String>,
    /// The error with the source line and caret, when it does not load.
    broken: Option<String>,
}

pub(super) async fn page(State(state): AppState, headers: HeaderMap) -> Response {
    let csrf = match gate(&state, &headers, true) {
        Ok(csrf) => csrf,
        Err(denied) => return denied.into_response(),
    };
    let config = std::sync::Arc::clone(&state.config);
    let files = tokio::task::spawn_blocking(move || compile(&config)).await;
    let body = match files {
        Ok(Ok(files)) => render(&state, files).await,
        Ok(Err(e)) => format!("<p class=\"error\">{}</p>", escape(&e)),
        Err(e) => format!(
            "<p class=\"error\">Cannot compile the rules: {}</p>",
            escape(&e.to_string())
        ),
    };
    html::page("Rules", "/rules", logout_token(&state, &csrf), &body)
}

/// Every rule file of `rules.dir`, loaded as `homewright check` loads them.
fn compile(config: &crate::config::Config) -> Result<Vec<RuleFile>, String> {
    let limits = Limits::of(config);
    let mut rules = RuleSet::new(
        limits,
        None,
        Default::default(),
        Clock::Wall,
        config.location.clone(),
    );
    let relays = RelayModel::start_states(&config.gpio, &Default::default(), 0);
    rules.set_relays(config.gpio.clone(), &config.mqtt.base_topic, relays);
    let problems = rules.load_dir(&config.rules.dir).map_err(|e| {
        format!(
            "{}: cannot read the rules directory: {e} (rules.dir)",
            config.rules.dir.display()
        )
    })?;
    let mut files: Vec<RuleFile> = rules
        .rules()
        .iter()
        .map(|rule| RuleFile {
            name: rule.name.to_string(),
            triggers: rule.triggers().map(describe).collect(),
            broken: None,
        })
        .collect();
    for problem in problems {
        let name = problem
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push(RuleFile {
            name,
            triggers: Vec::new(),
            broken: Some(problem.render()),
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn describe(trigger: &TriggerKind) -> String {
    let paced = |pacing: &Option<Pacing>| match pacing {
        Some(Pacing::Debounce(ms)) => format!(" (debounce {})", millis(*ms)),
        Some(Pacing::Throttle(ms)) => format!(" (throttle {})", millis(*ms)),
        None => String::new(),
    };
    match trigger {
        TriggerKind::Message { filter, pacing } => format!("on_message {filter}{}", paced(pacing)),
        TriggerKind::Change { filter, pacing } => format!("on_change {filter}{}", paced(pacing)),
        TriggerKind::Held { filter, duration, .. } => format!("on_held {filter} for {}", millis(*duration)),
        TriggerKind::Silent { filter, duration } => format!("on_silent {filter} for {}", millis(*duration)),
        TriggerKind::Start => "on_start".into(),
        TriggerKind::Timed { recurrence, .. } => recurrence.describe(),
    }
}

fn millis(ms: i64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

async fn render(state: &Shared, files: Vec<RuleFile>) -> String {
    let now = now_millis();
    let since = now - DAY_MS;
    let zone = &state.config.location.timezone;
    let mut body = String::from("<h1>Rules</h1>");
    if files.is_empty() {
        let _ = write!(
            body,
            "<p class=\"muted\">No rule files in {}.</p>",
            escape(&state.config.rules.dir.display().to_string())
        );
    }
    for file in files {
        let name = escape(&file.name);
        let params = [SqlValue::Text(file.name.clone()), SqlValue::Integer(since)];
        let counts = query(state, COUNTS, &params).await;
        let (runs, failures) = match counts.rows.first().map(Vec::as_slice) {
            Some([SqlValue::Integer(runs), SqlValue::Integer(failures)]) => (*runs, *failures),
            _ => (0, 0),
        };
        let class = if file.broken.is_some() {
            "rule broken"
        } else {
            "rule"
        };
        let _ = write!(
            body,
            "<section class=\"{class}\" data-rule=\"{name}\" id=\"rule-{name}\"><h2>{name}</h2>"
        );
        if let Some(broken) = &file.broken {
            let _ = write!(
                body,
                "<div class=\"error\"><p>Does not load:</p><pre>{}</pre></div>",
                escape(broken)
            );
        }
        if !file.triggers.is_empty() {
            body.push_str("<p class=\"triggers\">");
            for (i, trigger) in file.triggers.iter().enumerate() {
                let sep = if i > 0 { " · " } else { "" };
                let _ = write!(body, "{sep}<code>{}</code>", escape(trigger));
            }
            body.push_str("</p>");
        }
        let noun = if runs == 1 { "run" } else { "runs" };
        let _ = write!(
            body,
            "<p>Last 24 h: <span class=\"runs\">{runs}</span> {noun}, <span class=\"failures\">{failures}</span> failed</p>"
        );
        let last_error = query(
            state,
            LAST_ERROR,
            &[
                SqlValue::Text(file.name.clone()),
                SqlValue::Integer(now - 7 * DAY_MS),
            ],
        )
        .await;
        if let Some([SqlValue::Integer(ts), SqlValue::Text(error)]) =
            last_error.rows.first().map(Vec::as_slice)
            && file.broken.is_none()
        {
            let _ = write!(
                body,
                "<p>Last error, {} ago:</p><pre class=\"error\">{}</pre>",
                age(now, *ts),
                escape(error)
            );
        }
        let limited = [
            SqlValue::Text(file.name.clone()),
            SqlValue::Integer(since),
            SqlValue::Integer(RECENT),
        ];
        let recent = query(state, RUNS, &limited).await;
        if !recent.rows.is_empty() {
            body.push_str("<details><summary>Recent runs</summary><table class=\"runs-list\"><thead><tr><th>Time</th><th>Trigger</th><th>Topic</th><th>µs</th><th>Outcome</th></tr></thead><tbody>");
            for row in &recent.rows {
                let [
                    SqlValue::Integer(ts),
                    SqlValue::Text(trigger),
                    SqlValue::Text(topic),
                    SqlValue::Integer(us),
                    SqlValue::Text(outcome),
                ] = row.as_slice()
                else {
                    continue;
                };
                let _ = write!(
                    body,
                    "<tr><td class=\"when\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{us}</td><td>{}</td></tr>",
                    escape(&local_time(*ts, zone)),
                    escape(trigger),
                    escape(topic),
                    escape(outcome)
                );
            }
            body.push_str("</tbody></table></details>");
        }
        let actions = query(state, ACTIONS, &limited).await;
        if !actions.rows.is_empty() {
            body.push_str("<details><summary>Recent actions</summary><table class=\"actions\"><thead><tr><th>Time</th><th>Kind</th><th>Target</th><th>Value</th></tr></thead><tbody>");
            for row in &actions.rows {
                let [
                    SqlValue::Integer(ts),
                    SqlValue::Text(kind),
                    SqlValue::Text(target),
                    SqlValue::Text(value),
                ] = row.as_slice()
                else {
                    continue;
                };
                let _ = write!(
                    body,
                    "<tr><td class=\"when\">{}</td><td>{}</td><td>{}</td><td class=\"value\">{}</td></tr>",
                    escape(&local_time(*ts, zone)),
                    escape(kind),
                    escape(target),
                    escape(&html::payload_text(&SqlValue::Text(value.clone())))
                );
            }
            body.push_str("</tbody></table></details>");
        }
        let _ = write!(
            body,
            "<p class=\"muted\">In a terminal: <code>homewright why {name}</code></p></section>"
        );
    }
    body
}

/// A query of the page with its time bound; a failure or a timeout shows as nothing found.
async fn query(state: &Shared, sql: &str, params: &[SqlValue]) -> QueryResult {
    state
        .reader
        .query(sql, params, Some(Instant::now() + QUERY_TIME))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_their_largest_whole_unit() {
        assert_eq!(millis(7_200_000), "2h");
        assert_eq!(millis(90_000), "90s");
        assert_eq!(millis(120_000), "2m");
        assert_eq!(millis(1_500), "1500ms");
    }
}
