//! The Health page: is the engine keeping up? The broker and the engine's connection to it, the
//! queues between stages, commits, what waits in the outboxes, and the history's size on disk with how
//! fast it grows (from samples this server takes every few minutes while it runs).

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::html::{self, age, escape};
use super::{AppState, Shared, gate, logout_token};
use crate::config::Embedded;
use crate::event::now_millis;
use crate::metrics::METRICS;
use crate::store::SqlValue;

/// How often the history's size is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(600);

/// Samples kept: a day's.
const SAMPLES: usize = 145;

/// Samples the history's size until `shutdown`, for the growth rate.
pub(super) async fn sample_disk(state: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let bytes = history_bytes(&state.config.database.path);
        {
            let mut disk = state.disk.lock().unwrap_or_else(|p| p.into_inner());
            if disk.len() >= SAMPLES {
                disk.pop_front();
            }
            disk.push_back((now_millis(), bytes));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// The history's files together: the database, its write-ahead log and its shared-memory index.
fn history_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut name = db.as_os_str().to_os_string();
            name.push(suffix);
            std::fs::metadata(name).ok().map(|m| m.len())
        })
        .sum()
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes the struct it is given and reads the NUL-terminated path; both live
    // across the call, and the struct is read only when it reports success.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(super) async fn page(State(state): AppState, headers: HeaderMap) -> Response {
    let csrf = match gate(&state, &headers, true) {
        Ok(csrf) => csrf,
        Err(denied) => return denied.into_response(),
    };
    let body = render(&state).await;
    html::page("Health", "/health", logout_token(&state, &csrf), &body)
}

async fn count(state: &Shared, sql: &str) -> Option<i64> {
    let result = state.reader.query(sql, &[], None).await.ok()?;
    match result.rows.first().map(Vec::as_slice) {
        Some([SqlValue::Integer(n)]) => Some(*n),
        _ => None,
    }
}

async fn render(state: &Shared) -> String {
    let config = &state.config;
    let now = now_millis();
    let mut body = String::from("<h1>Health</h1>");

    body.push_str("<h2>Broker</h2><table id=\"broker\"><tbody>");
    let broker = match config.broker.embedded {
        Embedded::Always => format!("embedded, listening on {}", config.broker.listen),
        Embedded::Auto => format!(
            "{}:{} (or the embedded one on {} when nothing answered there at start)",
            config.mqtt.host, config.mqtt.port, config.broker.listen
        ),
        Embedded::Never => format!("{}:{}", config.mqtt.host, config.mqtt.port),
    };
    let _ = write!(body, "<tr><th>Broker</th><td>{}</td></tr>", escape(&broker));
    let link = if state.ingest.is_connected() {
        "connected"
    } else {
        "not connected (reconnecting)"
    };
    let _ = write!(
        body,
        "<tr><th>Engine's connection</th><td class=\"connection\">{link}</td></tr>\
         <tr><th>Connections lost since start</th><td class=\"num\">{}</td></tr>",
        state.ingest.sessions_lost()
    );
    let last = count(
        state,
        "SELECT coalesce(max(ts), 0) FROM message_rows WHERE id = (SELECT max(id) FROM message_rows)",
    )
    .await;
    let last = match last {
        Some(ts) if ts > 0 => format!("{} ago", age(now, ts)),
        _ => "none yet".into(),
    };
    let _ = write!(
        body,
        "<tr><th>Last message stored</th><td class=\"last-message\">{last}</td></tr>"
    );
    let _ = write!(
        body,
        "<tr><th>Received / stored since start</th><td class=\"num\">{} / {}</td></tr>",
        METRICS.received.get(),
        METRICS.stored.get()
    );
    body.push_str("</tbody></table>");

    body.push_str("<h2>Queues between stages</h2><table id=\"queues\"><thead><tr><th>Queue</th><th>Waiting</th><th>Bound</th></tr></thead><tbody>");
    for (name, depth, bound) in state.queues.depths() {
        let _ = write!(
            body,
            "<tr data-queue=\"{name}\"><td>{name}</td><td class=\"num depth\">{depth}</td><td class=\"num\">{bound}</td></tr>"
        );
    }
    body.push_str("</tbody></table>");

    let stored = METRICS.stored.get();
    let commits = METRICS.commits.get();
    let per_commit = if commits > 0 {
        format!("{:.1}", stored as f64 / commits as f64)
    } else {
        "-".into()
    };
    let _ = write!(
        body,
        "<h2>Commits</h2><table id=\"commits\"><tbody>\
         <tr><th>Commits since start</th><td class=\"num commits\">{commits}</td></tr>\
         <tr><th>Messages per commit</th><td class=\"num\">{per_commit}</td></tr>\
         <tr><th>Failed commits (retried)</th><td class=\"num\">{}</td></tr>\
         <tr><th>Commit interval</th><td>{} ms</td></tr></tbody></table>",
        METRICS.store_errors.get(),
        config.database.commit_interval.as_millis()
    );

    body.push_str("<h2>Outboxes</h2><table id=\"outboxes\"><tbody>");
    for (label, sql) in [
        ("Publishes waiting for the broker", "SELECT count(*) FROM outbox"),
        (
            "Notifications and HTTP calls waiting",
            "SELECT count(*) FROM deliveries",
        ),
        (
            "Publishes the broker refused",
            "SELECT count(*) FROM outbox_refused",
        ),
    ] {
        let value = count(state, sql)
            .await
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        let _ = write!(body, "<tr><th>{label}</th><td class=\"num\">{value}</td></tr>");
    }
    body.push_str("</tbody></table>");

    let db = &config.database.path;
    let bytes = history_bytes(db);
    let growth = {
        let disk = state.disk.lock().unwrap_or_else(|p| p.into_inner());
        match (disk.front(), disk.back()) {
            (Some(first), Some(last)) if last.0 - first.0 >= 30 * 60_000 => {
                let per_day = (last.1 as f64 - first.1 as f64) / ((last.0 - first.0) as f64 / 86_400_000.0);
                let sign = if per_day < 0.0 { "-" } else { "" };
                format!(
                    "{sign}{} per day (over the last {})",
                    size(per_day.abs() as u64),
                    age(last.0, first.0)
                )
            }
            _ => "measured after the first half hour".to_string(),
        }
    };
    let free = free_bytes(db).map_or_else(|| "?".to_string(), size);
    let _ = write!(
        body,
        "<h2>Disk</h2><table id=\"disk\"><tbody>\
         <tr><th>History</th><td>{}</td></tr>\
         <tr><th>Size</th><td class=\"num\">{}</td></tr>\
         <tr><th>Growth</th><td>{}</td></tr>\
         <tr><th>Free</th><td class=\"num\">{free}</td></tr></tbody></table>",
        escape(&db.display().to_string()),
        size(bytes),
        escape(&growth),
    );
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
