//! The persistent outbox: publishes that could not be handed to the broker (it was unreachable, or the
//! connection failed before it acknowledged them), kept in order until it did. See
//! [`crate::mqtt::publisher`] for when rows are written and removed.

use bytes::Bytes;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::{Store, StoreError, discard_on_error};
use crate::event::now_millis;

/// Rows per INSERT or DELETE statement: far below SQLite's bind limit (5 values a row).
const ROWS_PER_STATEMENT: usize = 1_000;

/// One publish waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPublish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

impl Store {
    /// Appends publishes to the outbox, in order, in one transaction.
    pub async fn push_outbox(&self, publishes: &[QueuedPublish]) -> Result<(), StoreError> {
        if publishes.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let result = push(&mut conn, publishes).await;
        discard_on_error(&mut conn, result)
    }

    /// Up to `limit` outbox rows with an id above `after`, oldest first.
    pub async fn outbox_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, QueuedPublish)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: Vec<u8> = row.try_get(2)?;
                Ok((
                    row.try_get(0)?,
                    QueuedPublish {
                        topic: row.try_get(1)?,
                        payload: Bytes::from(payload),
                        qos: u8::try_from(row.try_get::<i64, _>(3)?).unwrap_or(1).min(2),
                        retain: row.try_get(4)?,
                    },
                ))
            })
            .collect()
    }

    /// Counts a failed delivery of row `id` (the connection failed while it was the only publish in
    /// flight) and returns how many it has had; 0 when the row is gone.
    pub async fn outbox_failed(&self, id: i64) -> Result<i64, StoreError> {
        let attempts: Option<i64> =
            sqlx::query_scalar("UPDATE outbox SET attempts = attempts + 1 WHERE id = ? RETURNING attempts")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(attempts.unwrap_or(0))
    }

    /// Moves row `id` from the outbox to `outbox_refused`, where nothing sends it again.
    pub async fn refuse_outbox_row(&self, id: i64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = refuse(&mut conn, id).await;
        discard_on_error(&mut conn, result)
    }

    /// Removes delivered rows.
    pub async fn remove_from_outbox(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = remove(&mut conn, ids).await;
        discard_on_error(&mut conn, result)
    }
}

async fn push(conn: &mut SqliteConnection, publishes: &[QueuedPublish]) -> Result<(), StoreError> {
    let ts = now_millis();
    let mut tx = conn.begin().await?;
    for chunk in publishes.chunks(ROWS_PER_STATEMENT) {
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO outbox (ts, topic, payload, qos, retain) ");
        insert.push_values(chunk, |mut row, p| {
            row.push_bind(ts)
                .push_bind(p.topic.as_str())
                .push_bind(&p.payload[..])
                .push_bind(i64::from(p.qos))
                .push_bind(p.retain);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn refuse(conn: &mut SqliteConnection, id: i64) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO outbox_refused (id, ts, topic, payload, qos, retain, refused_at) \
         SELECT id, ts, topic, payload, qos, retain, ? FROM outbox WHERE id = ?",
    )
    .bind(now_millis())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM outbox WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn remove(conn: &mut SqliteConnection, ids: &[i64]) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut delete: QueryBuilder<Sqlite> = QueryBuilder::new("DELETE FROM outbox WHERE id IN (");
        let mut list = delete.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        delete.push(")");
        delete.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
