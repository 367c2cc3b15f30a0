//! Writing received messages in batches, and reading the latest one of a topic.
//!
//! Rows name their topic by an integer id (`topics.id`; see the migration `topic_ids`). The writer
//! keeps the ids it knows in memory, so storing a message costs no topic lookup in SQLite.

use std::sync::Mutex;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row};

use super::rows::{MultiRowInsert, ROWS_PER_STATEMENT, Values};
use super::{HistoryReader, Store, StoreError, discard_on_error};
use crate::event::Message;

static INSERT: MultiRowInsert =
    MultiRowInsert::new("message_rows (ts, topic_id, payload, qos, retain, dup)", 6);

/// Most topic ids kept in memory (about 100 bytes each).
const MAX_KNOWN_TOPICS: usize = 100_000;

/// Topic text to `topics.id`, for every topic this writer has stored or looked up. Only ids of
/// committed rows enter it: an id made in a transaction that then failed no longer exists.
#[derive(Debug, Default)]
pub(super) struct TopicIds(Mutex<HashMap<String, i64>>);

impl TopicIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // The map is only ever extended, so a panic elsewhere cannot leave it half-updated.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The known id of each topic, in order (`None` for a topic not known yet, or for no topic).
    pub(super) fn cached<'a>(&self, topics: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<i64>> {
        let known = self.lock();
        topics
            .map(|topic| topic.and_then(|t| known.get(t).copied()))
            .collect()
    }

    /// Remembers the ids a transaction made or looked up, once it is committed.
    pub(super) fn remember(&self, fresh: HashMap<&str, i64>) {
        let mut known = self.lock();
        // Devices that put a unique id in every topic would otherwise grow it without end; a cleared map
        // refills from `topics` as messages come.
        if known.len() > MAX_KNOWN_TOPICS {
            known.clear();
        }
        known.extend(fresh.into_iter().map(|(topic, id)| (topic.to_string(), id)));
    }
}

impl Store {
    /// Stores a batch of messages in one transaction: all of them or, on error, none.
    pub async fn insert_messages(&self, batch: &[&Message]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = insert_messages(&mut conn, &self.topic_ids, batch).await;
        discard_on_error(&mut conn, result)
    }
}

async fn insert_messages(
    conn: &mut SqliteConnection,
    known: &TopicIds,
    batch: &[&Message],
) -> Result<(), StoreError> {
    let cached = known.cached(batch.iter().map(|m| Some(&*m.topic)));
    let mut tx = conn.begin().await?;
    let mut fresh: HashMap<&str, i64> = HashMap::new();
    let mut ids = Vec::with_capacity(batch.len());
    for (cached, m) in cached.into_iter().zip(batch) {
        let id = match cached.or_else(|| fresh.get(&*m.topic).copied()) {
            Some(id) => id,
            None => {
                let id = topic_id(&mut tx, &m.topic).await?;
                fresh.insert(&m.topic, id);
                id
            }
        };
        ids.push(id);
    }
    for (chunk, chunk_ids) in batch
        .chunks(ROWS_PER_STATEMENT)
        .zip(ids.chunks(ROWS_PER_STATEMENT))
    {
        let mut values = Values::with_capacity(chunk.len() * 6);
        for (m, topic_id) in chunk.iter().zip(chunk_ids) {
            values
                .add(m.ts)?
                .add(*topic_id)?
                .add_payload(&m.payload)?
                .add(i64::from(m.qos))?
                .add(m.retain)?
                .add(m.dup)?;
        }
        sqlx::query_with(INSERT.sql(chunk.len()), values.into_arguments())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    known.remember(fresh);
    Ok(())
}

/// The id of `topic`, adding it to `topics` when it is new.
pub(super) async fn topic_id(conn: &mut SqliteConnection, topic: &str) -> Result<i64, StoreError> {
    sqlx::query("INSERT OR IGNORE INTO topics (topic) VALUES (?)")
        .bind(topic)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query("SELECT id FROM topics WHERE topic = ?")
        .bind(topic)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

impl HistoryReader {
    /// The id after which the messages received at or after `since` (unix ms) begin, to start paging
    /// with [`HistoryReader::messages_page`]: the smallest id among them, read from each topic's range
    /// of the (topic_id, ts) index (exact also for rows imported out of time order; the cost grows with
    /// the rows in range, which a replay reads anyway).
    pub async fn id_before(&self, since: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT coalesce(min((SELECT min(r.id) FROM message_rows r \
             WHERE r.topic_id = t.id AND r.ts >= ?1)), 1) - 1 FROM topics t",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Up to `limit` messages received in [`since`, `until`) with an id above `after_id`, in arrival
    /// order, each with its id (to ask for the next page).
    pub async fn messages_page(
        &self,
        since: i64,
        until: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Message)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ts, topic, CAST(payload AS BLOB), qos, retain, id FROM messages \
             WHERE id > ? AND ts >= ? AND ts < ? ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(5)?, message_of(row)?)))
            .collect()
    }

    /// How many messages were received in [`since`, `until`): counted in each topic's index range.
    pub async fn count_messages(&self, since: i64, until: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT coalesce(sum((SELECT count(*) FROM message_rows r \
             WHERE r.topic_id = t.id AND r.ts >= ?1 AND r.ts < ?2)), 0) FROM topics t",
        )
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    use super::*;

    fn message(topic: &str, payload: &'static str, ts: i64) -> Message {
        Message {
            ts,
            topic: topic.into(),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: 1,
            retain: false,
            dup: false,
        }
    }

    async fn connect(path: &Path) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
            .await
            .unwrap()
    }

    async fn rows(pool: &SqlitePool, sql: &'static str) -> Vec<(i64, String, String)> {
        sqlx::query_as(sql).fetch_all(pool).await.unwrap()
    }

    /// A history written by the first schema (topic text in every row) keeps every row, its id and its
    /// `latest`, and the views accept the owner's INSERT and DELETE as the table did.
    #[tokio::test]
    async fn the_topic_id_migration_keeps_an_existing_history_and_the_views_behave_like_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let old = crate::store::migrated_until(&path, "topic ids").await;
        sqlx::raw_sql(
            "INSERT INTO messages (ts, topic, payload, qos, retain) VALUES \
             (1, 'a', 'x', 0, 0), (2, 'b', 'y', 1, 0), (3, 'a', 'z', 1, 1)",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = Store::open(&path).await.unwrap();
        let pool = connect(&path).await;
        let all = "SELECT id, topic, CAST(payload AS TEXT) FROM messages ORDER BY id";
        let expected = |rows: &[(i64, &str, &str)]| -> Vec<(i64, String, String)> {
            rows.iter().map(|&(i, t, p)| (i, t.into(), p.into())).collect()
        };
        assert_eq!(
            rows(&pool, all).await,
            expected(&[(1, "a", "x"), (2, "b", "y"), (3, "a", "z")])
        );
        let latest = "SELECT id, topic, CAST(payload AS TEXT) FROM latest ORDER BY topic";
        assert_eq!(
            rows(&pool, latest).await,
            expected(&[(3, "a", "z"), (2, "b", "y")])
        );

        // The engine writes after the migrated rows, reusing the migrated topic ids.
        store
            .insert_messages(&[&message("b", "w", 4), &message("c", "v", 4)])
            .await
            .unwrap();
        sqlx::raw_sql(
            "INSERT INTO messages (ts, topic, payload, qos, retain) VALUES (5, 'd', 'u', 0, 0); \
             DELETE FROM messages WHERE topic = 'a'",
        )
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(
            rows(&pool, all).await,
            expected(&[(2, "b", "y"), (4, "b", "w"), (5, "c", "v"), (6, "d", "u")])
        );
        assert_eq!(
            rows(&pool, latest).await,
            expected(&[(4, "b", "w"), (5, "c", "v"), (6, "d", "u")])
        );
        let topics: i64 = sqlx::query_scalar("SELECT count(*) FROM topics")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(topics, 4, "a topic is stored once");

        // An owner's INSERT OR REPLACE must not give the topic a new id (which would orphan its rows).
        sqlx::raw_sql(
            "INSERT OR REPLACE INTO messages (ts, topic, payload, qos, retain) VALUES (8, 'b', 't', 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let b: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE topic = 'b'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(b, 3, "the rows of b stay visible");
        store.insert_messages(&[&message("b", "s", 9)]).await.unwrap();
        let b: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE topic = 'b'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(b, 4, "and the engine's cached id still names b");
    }

    /// A batch that fails after adding a new topic rolls the topic back; the writer must not keep its
    /// id, which the next new topic then gets.
    #[tokio::test]
    async fn a_failed_batch_leaves_no_stale_topic_id_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = Store::open(&path).await.unwrap();
        let pool = connect(&path).await;
        sqlx::raw_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON message_rows WHEN new.payload = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&pool)
        .await
        .unwrap();
        assert!(
            store
                .insert_messages(&[&message("first", "boom", 1)])
                .await
                .is_err()
        );
        store
            .insert_messages(&[&message("second", "ok", 2)])
            .await
            .unwrap();
        store
            .insert_messages(&[&message("first", "ok", 3)])
            .await
            .unwrap();
        let all = "SELECT id, topic, CAST(payload AS TEXT) FROM messages ORDER BY id";
        assert_eq!(
            rows(&pool, all).await,
            vec![
                (1, "second".into(), "ok".into()),
                (2, "first".into(), "ok".into())
            ]
        );
    }
}
