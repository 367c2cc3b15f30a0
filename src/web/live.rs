//! `/events`: the House page's live values, as server-sent events. Each open page gets a stream that
//! looks at the history once a second for messages stored since the page (only the newest of each
//! topic) and for relays whose state changed. Reading what was committed, rather than tapping the
//! message path, keeps the page off ingest's path entirely: with no page open it costs nothing, and a
//! value shows up once it is stored (within `database.commit_interval`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};

use super::html::payload_text;
use super::{AppState, Shared, gate};
use crate::store::{HistoryReader, SqlValue};

/// How often an open page's stream looks at the history.
const POLL: Duration = Duration::from_secs(1);

/// Polls without news between two keep-alive comments (a closed page is noticed when one fails).
const KEEP_ALIVE_POLLS: u32 = 15;

/// The newest message of each topic among those stored after `id`, oldest first.
const NEW_VALUES: &str = "\
SELECT m.id, m.ts, t.topic, m.payload FROM message_rows m JOIN topics t ON t.id = m.topic_id
WHERE m.id IN (SELECT max(id) FROM message_rows WHERE id > ? GROUP BY topic_id) ORDER BY m.id";

#[derive(serde::Deserialize)]
pub(super) struct After {
    /// The newest message id the page showed.
    #[serde(default)]
    after: i64,
}

/// The id of the newest stored message (0 for an empty history).
pub(super) async fn newest_id(reader: &HistoryReader) -> Result<i64, String> {
    let result = reader
        .query("SELECT coalesce(max(id), 0) FROM message_rows", &[], None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match result.rows.first().map(Vec::as_slice) {
        Some([SqlValue::Integer(id)]) => *id,
        _ => 0,
    })
}

pub(super) async fn events(
    State(state): AppState,
    headers: HeaderMap,
    Query(after): Query<After>,
) -> Response {
    if let Err(denied) = gate(&state, &headers, false) {
        return denied.into_response();
    }
    let watch = Watch {
        state,
        after: after.after,
        relays: HashMap::new(),
        quiet: 0,
        first: true,
    };
    Sse::new(stream_of(watch)).into_response()
}

/// One page's view of what it has been sent.
struct Watch {
    state: Arc<Shared>,
    after: i64,
    /// Each relay's (on, since) as last sent.
    relays: HashMap<String, (bool, i64)>,
    quiet: u32,
    first: bool,
}

fn stream_of(watch: Watch) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(watch, |mut watch| async move {
        loop {
            if !watch.first {
                tokio::time::sleep(POLL).await;
            }
            watch.first = false;
            let events = watch.poll().await;
            if !events.is_empty() {
                watch.quiet = 0;
                return Some((events, watch));
            }
            watch.quiet += 1;
            if watch.quiet >= KEEP_ALIVE_POLLS {
                watch.quiet = 0;
                return Some((vec![SseEvent::default().comment("")], watch));
            }
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)))
}

impl Watch {
    /// What changed since the last look. A history that cannot be read now is tried again next time.
    async fn poll(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let reader = &self.state.reader;
        if let Ok(result) = reader
            .query(NEW_VALUES, &[SqlValue::Integer(self.after)], None)
            .await
        {
            for row in &result.rows {
                let [
                    SqlValue::Integer(id),
                    SqlValue::Integer(ts),
                    SqlValue::Text(topic),
                    payload,
                ] = row.as_slice()
                else {
                    continue;
                };
                self.after = self.after.max(*id);
                let data = serde_json::json!({ "topic": topic, "ts": ts, "payload": payload_text(payload) });
                events.push(SseEvent::default().event("value").data(data.to_string()));
            }
        }
        if let Ok(relays) = super::house::relay_rows(&self.state).await {
            for relay in relays {
                let now = (relay.on, relay.since);
                if self.relays.get(&relay.name) == Some(&now) {
                    continue;
                }
                self.relays.insert(relay.name.clone(), now);
                let data = serde_json::json!({
                    "name": relay.name, "on": relay.on, "since": relay.since, "cause": relay.cause,
                });
                events.push(SseEvent::default().event("relay").data(data.to_string()));
            }
        }
        events
    }
}
