//! The House page: the latest value of every topic, grouped by its first level, with its age and a
//! sparkline of the last day for numbers; the relays with their state, since when, what switched them
//! last, and buttons. And the one thing the page can change: a relay, switched as a command on its set
//! topic would switch it, recorded with cause `web`.

use std::fmt::Write;
use std::time::{Duration, Instant};

use axum::extract::{Extension, Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::{info, warn};

use super::html::{self, age, escape, payload_text, query_value};
use super::serve::Peer;
use super::{AppState, Shared, auth, gate, logout_token};
use crate::event::{Event, now_millis};
use crate::relays::model::Op;
use crate::store::{QueryResult, SqlValue};

/// Time all sparklines of one page may take together; the rest are left out rather than slow the page.
const SPARKLINE_BUDGET: Duration = Duration::from_millis(800);

/// Points of one sparkline at most (averaged buckets of the day).
const SPARKLINE_POINTS: i64 = 48;

const DAY_MS: i64 = 86_400_000;

const SCRIPT: &str = r#"
const filter = document.getElementById('filter');
function applyFilter() {
  const q = filter.value.toLowerCase();
  let group = null, shown = 0;
  for (const tr of document.querySelectorAll('#topics tbody tr')) {
    if (tr.classList.contains('group')) { if (group) group.hidden = !shown; group = tr; shown = 0; continue; }
    const ok = tr.dataset.topic.toLowerCase().includes(q);
    tr.hidden = !ok; if (ok) shown++;
  }
  if (group) group.hidden = !shown;
}
filter.addEventListener('input', applyFilter);
function fmt(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return s < 60 ? s + ' s' : s < 3600 ? Math.floor(s / 60) + ' min' : s < 86400 ? Math.floor(s / 3600) + ' h' : Math.floor(s / 86400) + ' d';
}
function ages() { const now = Date.now(); for (const el of document.querySelectorAll('[data-ts]')) el.textContent = fmt(now - Number(el.dataset.ts)); }
setInterval(ages, 1000);
function row(topic) {
  const tr = document.createElement('tr'); tr.dataset.topic = topic;
  const a = document.createElement('a'); a.className = 'topic-link'; a.textContent = topic;
  a.href = '/topic?name=' + encodeURIComponent(topic);
  const name = document.createElement('td'); name.appendChild(a);
  const value = document.createElement('td'); value.className = 'value';
  const age = document.createElement('td'); age.className = 'age';
  tr.append(name, value, age, document.createElement('td'));
  document.querySelector('#topics tbody').appendChild(tr);
  return tr;
}
const live = new EventSource('/events?after=' + document.getElementById('house').dataset.after);
live.addEventListener('value', e => {
  const m = JSON.parse(e.data);
  const tr = document.querySelector('tr[data-topic="' + CSS.escape(m.topic) + '"]') || row(m.topic);
  tr.querySelector('td.value').textContent = m.payload;
  tr.querySelector('td.age').dataset.ts = m.ts;
  ages(); applyFilter();
});
live.addEventListener('relay', e => {
  const r = JSON.parse(e.data);
  const el = document.querySelector('[data-relay="' + CSS.escape(r.name) + '"]');
  if (!el) return;
  const state = el.querySelector('.state');
  state.textContent = r.on ? 'ON' : 'OFF'; state.className = 'state ' + (r.on ? 'on' : 'off');
  el.querySelector('.since').dataset.ts = r.since;
  el.querySelector('.cause').textContent = r.cause;
  ages();
});
"#;

pub(super) async fn page(State(state): AppState, headers: HeaderMap) -> Response {
    let csrf = match gate(&state, &headers, true) {
        Ok(csrf) => csrf,
        Err(denied) => return denied.into_response(),
    };
    match render(&state, &csrf).await {
        Ok(body) => html::page("House", "/", logout_token(&state, &csrf), &body),
        Err(e) => html::respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("<p class=\"error\">Cannot read the history: {}</p>", escape(&e)),
        ),
    }
}

async fn render(state: &Shared, csrf: &str) -> Result<String, String> {
    let reader = &state.reader;
    let now = now_millis();
    let after = super::live::newest_id(reader).await?;
    let latest = reader
        .query("SELECT topic, ts, payload FROM latest ORDER BY topic", &[], None)
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::with_capacity(16 * 1024);
    let _ = write!(body, "<div id=\"house\" data-after=\"{after}\">");
    relays(state, csrf, now, &mut body).await?;
    body.push_str("<h2>Topics</h2><input id=\"filter\" type=\"search\" placeholder=\"Filter topics\" aria-label=\"Filter topics\" autocomplete=\"off\">");
    body.push_str("<table id=\"topics\"><thead><tr><th>Topic</th><th>Latest</th><th>Age</th><th>24 h</th></tr></thead><tbody>");
    let budget = Instant::now() + SPARKLINE_BUDGET;
    let mut group = None;
    for row in &latest.rows {
        let [SqlValue::Text(topic), SqlValue::Integer(ts), payload] = row.as_slice() else {
            continue;
        };
        let first = topic.split('/').next().unwrap_or_default();
        if group != Some(first) {
            let _ = write!(
                body,
                "<tr class=\"group\"><th colspan=\"4\">{}</th></tr>",
                escape(first)
            );
            group = Some(first);
        }
        let value = payload_text(payload);
        let spark = if value.trim().parse::<f64>().is_ok_and(f64::is_finite) && Instant::now() < budget {
            sparkline(state, topic, now, budget).await
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-topic=\"{t}\"><td><a class=\"topic-link\" href=\"/topic?name={q}\">{t}</a></td>\
             <td class=\"value\">{v}</td><td class=\"age\" data-ts=\"{ts}\">{a}</td><td class=\"spark\">{spark}</td></tr>",
            t = escape(topic),
            q = query_value(topic),
            v = escape(&value),
            a = age(now, *ts),
        );
    }
    body.push_str("</tbody></table>");
    if latest.rows.is_empty() {
        body.push_str("<p class=\"muted\">No message stored yet: values appear here as they arrive.</p>");
    }
    body.push_str("</div>");
    let _ = write!(body, "<script>{SCRIPT}</script>");
    Ok(body)
}

/// One relay's state as the history has it.
pub(super) struct RelayRow {
    pub name: String,
    pub on: bool,
    pub since: i64,
    /// What switched it last: `web`, `rule porch_light`, `set_topic`, ...
    pub cause: String,
}

/// Every configured relay's state, from the `relays` table and the `actions` row of its last switch.
pub(super) async fn relay_rows(state: &Shared) -> Result<Vec<RelayRow>, String> {
    let reader = &state.reader;
    let stored = reader
        .query("SELECT name, is_on, since FROM relays", &[], None)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for relay in &state.config.gpio.relays {
        let found = stored.rows.iter().find_map(|row| match row.as_slice() {
            [
                SqlValue::Text(name),
                SqlValue::Integer(on),
                SqlValue::Integer(since),
            ] if *name == relay.name => Some((*on != 0, *since)),
            _ => None,
        });
        let (on, since) = found.unwrap_or((false, 0));
        let cause = if found.is_some() {
            last_cause(state, &relay.name, since).await
        } else {
            String::new()
        };
        rows.push(RelayRow {
            name: relay.name.clone(),
            on,
            since,
            cause,
        });
    }
    Ok(rows)
}

/// The cause of the switch that set a relay's state at `since`: its `actions` row is from that
/// moment, so only rows since shortly before are looked at (the `actions_ts` index).
async fn last_cause(state: &Shared, name: &str, since: i64) -> String {
    let found = state
        .reader
        .query(
            "SELECT coalesce(cause, ''), rule FROM actions WHERE kind = 'relay' AND target = ? AND ts >= ? ORDER BY id DESC LIMIT 1",
            &[SqlValue::Text(name.into()), SqlValue::Integer(since - 60_000)],
            None,
        )
        .await;
    match found.as_ref().map(|r| r.rows.first().map(Vec::as_slice)) {
        Ok(Some([SqlValue::Text(cause), SqlValue::Text(rule)])) if cause == "rule" && !rule.is_empty() => {
            format!("rule {rule}")
        }
        Ok(Some([SqlValue::Text(cause), _])) => cause.clone(),
        _ => String::new(),
    }
}

async fn relays(state: &Shared, csrf: &str, now: i64, body: &mut String) -> Result<(), String> {
    let rows = relay_rows(state).await?;
    if rows.is_empty() {
        return Ok(());
    }
    body.push_str("<h2>Relays</h2><div class=\"relays\">");
    for relay in rows {
        let (word, class) = if relay.on { ("ON", "on") } else { ("OFF", "off") };
        let since = if relay.since > 0 {
            format!(
                "<span class=\"since\" data-ts=\"{}\">{}</span>",
                relay.since,
                age(now, relay.since)
            )
        } else {
            "<span class=\"since\"></span>".to_string()
        };
        let _ = write!(
            body,
            "<div class=\"relay\" data-relay=\"{n}\"><span class=\"name\">{n}</span> <span class=\"state {class}\">{word}</span>\
             <div class=\"muted\">for {since} · by <span class=\"cause\">{cause}</span></div>\
             <form method=\"post\" action=\"/relays/{q}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button name=\"action\" value=\"on\">On</button><button name=\"action\" value=\"off\">Off</button>\
             <button name=\"action\" value=\"toggle\">Toggle</button></form></div>",
            n = escape(&relay.name),
            q = query_value(&relay.name),
            cause = escape(&relay.cause),
            csrf = escape(csrf),
        );
    }
    body.push_str("</div>");
    Ok(())
}

/// A small line of the topic's last day, averaged into buckets; empty when it has under two values
/// or the page's time for sparklines is up.
async fn sparkline(state: &Shared, topic: &str, now: i64, deadline: Instant) -> String {
    let bucket = DAY_MS / SPARKLINE_POINTS;
    let result = state
        .reader
        .query(
            "SELECT ts / ? AS b, avg(CAST(payload AS REAL)) FROM messages WHERE topic = ? AND ts >= ? GROUP BY b ORDER BY b",
            &[
                SqlValue::Integer(bucket),
                SqlValue::Text(topic.into()),
                SqlValue::Integer(now - DAY_MS),
            ],
            Some(deadline),
        )
        .await;
    let Ok(QueryResult { rows, .. }) = result else {
        return String::new();
    };
    let points: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|row| match row.as_slice() {
            [SqlValue::Integer(b), SqlValue::Real(v)] => Some((*b as f64, *v)),
            [SqlValue::Integer(b), SqlValue::Integer(v)] => Some((*b as f64, *v as f64)),
            _ => None,
        })
        .collect();
    spark_svg(
        &points,
        (now - DAY_MS) as f64 / bucket as f64,
        SPARKLINE_POINTS as f64,
    )
}

/// A polyline of `points` (x from `x0` over `width` units) in an 80x20 box.
fn spark_svg(points: &[(f64, f64)], x0: f64, width: f64) -> String {
    if points.len() < 2 {
        return String::new();
    }
    let (low, high) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let span = if high > low { high - low } else { 1.0 };
    let mut line = String::new();
    for (x, y) in points {
        let px = ((x - x0) / width * 80.0).clamp(0.0, 80.0);
        let py = 19.0 - (y - low) / span * 18.0;
        let _ = write!(line, "{px:.1},{py:.1} ");
    }
    format!(
        "<svg class=\"spark\" width=\"80\" height=\"20\" viewBox=\"0 0 80 20\" aria-hidden=\"true\"><polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        line.trim_end()
    )
}

#[derive(serde::Deserialize)]
pub(super) struct SwitchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
}

/// `POST /relays/NAME` with `action` on, off or toggle: handed to the rule thread as a command (the
/// path of the set topic: interlocks and `max_on` apply), then back to the House page.
pub(super) async fn switch(
    State(state): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    Extension(Peer(peer)): Extension<Peer>,
    Form(form): Form<SwitchForm>,
) -> Response {
    let expected = match gate(&state, &headers, false) {
        Ok(csrf) => csrf,
        Err(denied) => return denied.into_response(),
    };
    if !auth::csrf_matches(&expected, &form.csrf) {
        warn!(client = %peer.ip(), relay = %name, "relay switch from the web refused: no valid CSRF token");
        return html::respond(
            StatusCode::FORBIDDEN,
            "<p class=\"error\">This form is out of date or came from another site: reload the page and try again.</p>".into(),
        );
    }
    if state.config.gpio.relay(&name).is_none() {
        return html::respond(
            StatusCode::NOT_FOUND,
            format!("<p class=\"error\">There is no relay `{}`.</p>", escape(&name)),
        );
    }
    let op = match form.action.as_str() {
        "on" => Op::On,
        "off" => Op::Off,
        "toggle" => Op::Toggle,
        other => {
            return html::respond(
                StatusCode::BAD_REQUEST,
                format!(
                    "<p class=\"error\">`{}` is not on, off or toggle.</p>",
                    escape(other)
                ),
            );
        }
    };
    let sent = match state.rules.upgrade() {
        Some(rules) => rules
            .send_async(Event::RelayCommand {
                name: name.clone(),
                op,
            })
            .await
            .is_ok(),
        None => false,
    };
    if !sent {
        return html::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "<p class=\"error\">The engine is stopping: the relay was not switched.</p>".into(),
        );
    }
    info!(client = %peer.ip(), relay = %name, action = %form.action, "relay switched from the web page");
    Redirect::to("/").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_spans_its_box_and_needs_two_points() {
        assert_eq!(spark_svg(&[(0.0, 1.0)], 0.0, 10.0), "");
        let svg = spark_svg(&[(0.0, 1.0), (10.0, 3.0)], 0.0, 10.0);
        assert!(svg.contains("points=\"0.0,19.0 80.0,1.0\""), "{svg}");
    }
}
