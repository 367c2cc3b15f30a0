//! The Topic page: a chart of a topic (or a JSON field of its payloads) over a chosen period, drawn as
//! SVG by the same code as `homewright plot`, and the topic's recent messages.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::{self, escape, payload_text, query_value};
use super::{AppState, Shared, gate, logout_token};
use crate::event::now_millis;
use crate::plot::{self, Spec, chart};
use crate::store::{Bounds, SqlValue};

/// The periods offered, as `homewright plot --since` writes them.
const PERIODS: [&str; 5] = ["1h", "6h", "24h", "7d", "30d"];

/// Recent messages listed.
const RECENT: i64 = 50;

/// Most messages one chart reads: a month of a value every 15 s; beyond, a shorter period is asked for.
const CHART_BOUNDS: Bounds = Bounds {
    rows: 200_000,
    bytes: 32 << 20,
};

#[derive(serde::Deserialize)]
pub(super) struct TopicQuery {
    #[serde(default)]
    name: String,
    /// A JSON path such as `$.temperature`.
    #[serde(default)]
    field: String,
    #[serde(default)]
    since: String,
}

pub(super) async fn page(
    State(state): AppState,
    headers: HeaderMap,
    Query(query): Query<TopicQuery>,
) -> Response {
    let csrf = match gate(&state, &headers, true) {
        Ok(csrf) => csrf,
        Err(denied) => return denied.into_response(),
    };
    let spec_text = if query.field.is_empty() {
        query.name.clone()
    } else {
        format!("{}:{}", query.name, query.field)
    };
    let spec = match Spec::parse(&spec_text) {
        Ok(spec) => spec,
        Err(e) => {
            return html::respond(
                StatusCode::BAD_REQUEST,
                format!(
                    "<p class=\"error\">{}</p><p><a href=\"/\">Back to the house</a></p>",
                    escape(&e)
                ),
            );
        }
    };
    let since = if PERIODS.contains(&query.since.as_str()) {
        query.since.as_str()
    } else {
        "24h"
    };
    let body = match render(&state, &spec, &query, since).await {
        Ok(body) => body,
        Err(e) => format!("<p class=\"error\">Cannot read the history: {}</p>", escape(&e)),
    };
    html::page(&spec.text, "", logout_token(&state, &csrf), &body)
}

async fn render(state: &Shared, spec: &Spec, query: &TopicQuery, since: &str) -> Result<String, String> {
    let reader = &state.reader;
    let period = crate::config::units::parse_duration(since).map_err(|e| e.to_string())?;
    let to = now_millis();
    let from = to - i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1><p class=\"periods\">", escape(&spec.text));
    for period in PERIODS {
        let field = if query.field.is_empty() {
            String::new()
        } else {
            format!("&amp;field={}", query_value(&query.field))
        };
        let here = if period == since { " class=\"here\"" } else { "" };
        let _ = write!(
            body,
            "<a{here} href=\"/topic?name={}{field}&amp;since={period}\">{period}</a>",
            query_value(&spec.topic)
        );
    }
    body.push_str("</p>");
    let zone = &state.config.location.timezone;
    match plot::load_bounded(reader, spec, (from, to), Some(CHART_BOUNDS)).await {
        Ok(series) if !series.points.is_empty() => {
            let title = format!("{} (last {since})", spec.text);
            // Charts are drawn on a blocking thread: plotters is synchronous and a long series takes a
            // while.
            let (title_for, zone) = (title.clone(), zone.clone());
            let drawn =
                tokio::task::spawn_blocking(move || chart::svg(&title_for, &series, from, to, &zone)).await;
            match drawn {
                Ok(Ok(svg)) => body.push_str(&svg.replacen("<svg ", "<svg class=\"chart\" role=\"img\" ", 1)),
                Ok(Err(e)) => {
                    let _ = write!(body, "<p class=\"error\">{}</p>", escape(&e));
                }
                Err(e) => {
                    let _ = write!(
                        body,
                        "<p class=\"error\">The chart failed: {}</p>",
                        escape(&e.to_string())
                    );
                }
            }
        }
        Ok(series) => {
            let hint = if series.skipped > 0 && spec.path.is_empty() {
                " For JSON payloads, name a field: add <code>&amp;field=$.temperature</code> to the address."
            } else {
                ""
            };
            let _ = write!(
                body,
                "<p class=\"muted\">No numbers or on/off values in the last {since} ({} messages without one).{hint}</p>",
                series.skipped
            );
        }
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"error\">Cannot chart the last {since}: {} (choose a shorter period)</p>",
                escape(&e.to_string())
            );
        }
    }
    let recent = reader
        .query(
            "SELECT ts, payload, qos, retain FROM messages WHERE topic = ? ORDER BY ts DESC, id DESC LIMIT ?",
            &[SqlValue::Text(spec.topic.clone()), SqlValue::Integer(RECENT)],
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    body.push_str("<h2>Recent messages</h2><table id=\"messages\"><thead><tr><th>Time</th><th>Payload</th><th>QoS</th><th>Retain</th></tr></thead><tbody>");
    for row in &recent.rows {
        let [
            SqlValue::Integer(ts),
            payload,
            SqlValue::Integer(qos),
            SqlValue::Integer(retain),
        ] = row.as_slice()
        else {
            continue;
        };
        let _ = write!(
            body,
            "<tr><td class=\"when\">{}</td><td class=\"value\">{}</td><td class=\"num\">{qos}</td><td>{}</td></tr>",
            escape(&local_time(*ts, zone)),
            escape(&payload_text(payload)),
            if *retain != 0 { "yes" } else { "" }
        );
    }
    body.push_str("</tbody></table>");
    if recent.rows.is_empty() {
        let _ = write!(
            body,
            "<p class=\"muted\">No message on {} is stored.</p>",
            escape(&spec.topic)
        );
    }
    Ok(body)
}

/// `2026-12-04 18:07:03` in the house's time zone.
pub(super) fn local_time(ts: i64, zone: &crate::scheduler::Zone) -> String {
    use chrono::TimeZone;
    zone.timestamp_millis_opt(ts)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ts.to_string())
}
