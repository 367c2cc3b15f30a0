//! Writing received messages in batches, and reading the latest one of a topic.

use bytes::Bytes;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::{HistoryReader, Store, StoreError, discard_on_error};
use crate::event::Message;

/// Rows per INSERT statement: 5 bound values each stays far below SQLite's 32,766 bind limit, and one
/// multi-row statement is 10-40x faster than a statement per row (CRATES.md section 5).
const ROWS_PER_STATEMENT: usize = 1_000;

impl Store {
    /// Stores a batch of messages in one transaction: all of them or, on error, none.
    pub async fn insert_messages(&self, batch: &[&Message]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = insert_messages(&mut conn, batch).await;
        discard_on_error(&mut conn, result)
    }
}

async fn insert_messages(conn: &mut SqliteConnection, batch: &[&Message]) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO messages (ts, topic, payload, qos, retain, dup) ");
        insert.push_values(chunk, |mut row, m| {
            row.push_bind(m.ts).push_bind(m.topic.as_str());
            // Text when it is text, so SQL's string and JSON functions work; bytes otherwise.
            match std::str::from_utf8(&m.payload) {
                Ok(text) => row.push_bind(text),
                Err(_) => row.push_bind(&m.payload[..]),
            };
            row.push_bind(i64::from(m.qos))
                .push_bind(m.retain)
                .push_bind(m.dup);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

impl HistoryReader {
    /// Up to `limit` messages received in [`since`, `until`) with an id above `after_id`, in arrival
    /// order, each with its id (to ask for the next page).
    pub async fn messages_page(
        &self,
        since: i64,
        until: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Message)>, StoreError> {
        // Start at the first id in range (found through the ts index), then walk ids: arrival order.
        let rows = sqlx::query(
            "SELECT ts, topic, CAST(payload AS BLOB), qos, retain, id FROM messages \
             WHERE id > max(?, (SELECT coalesce(min(id), 0) - 1 FROM messages WHERE ts >= ?)) AND ts >= ? AND ts < ? \
             ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(since)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(5)?, message_of(row)?)))
            .collect()
    }

    /// How many messages were received in [`since`, `until`).
    pub async fn count_messages(&self, since: i64, until: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT count(*) FROM messages WHERE ts >= ? AND ts < ?")
            .bind(since)
            .bind(until)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The newest stored message of every topic.
    pub async fn latest_all(&self) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query("SELECT ts, topic, CAST(payload AS BLOB), qos, retain FROM latest")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_of).collect()
    }

    /// The newest stored message on `topic`, if any.
    pub async fn latest(&self, topic: &str) -> Result<Option<Message>, StoreError> {
        let row =
            sqlx::query("SELECT ts, topic, CAST(payload AS BLOB), qos, retain FROM latest WHERE topic = ?")
                .bind(topic)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(message_of).transpose()
    }
}

fn message_of(row: &sqlx::sqlite::SqliteRow) -> Result<Message, StoreError> {
    let payload: Vec<u8> = row.try_get(2)?;
    Ok(Message {
        ts: row.try_get(0)?,
        topic: row.try_get(1)?,
        payload: Bytes::from(payload),
        qos: u8::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
        retain: row.try_get(4)?,
        dup: false,
    })
}
