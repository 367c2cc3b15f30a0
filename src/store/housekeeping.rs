//! The SQL of housekeeping: which topics exist, deleting one topic's old messages or old rule runs a
//! batch at a time, and handing freed pages back to the file system. The policy (which topic keeps how
//! long, how often, how fast) is in [`crate::housekeeping`].

use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

impl Store {
    /// Every topic that ever had messages or rule runs (the `topics` table).
    pub async fn topics(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT topic FROM topics")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Deletes up to `limit` messages on `topic` received before `before` (unix ms) with an id up to
    /// `ceiling` (what replication allows), oldest first, in one short transaction; returns how many.
    /// Uses the `(topic_id, ts)` index.
    pub async fn purge_batch(
        &self,
        topic: &str,
        before: i64,
        ceiling: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM message_rows WHERE id IN \
             (SELECT id FROM message_rows WHERE topic_id = (SELECT id FROM topics WHERE topic = ?) \
              AND ts < ? AND id <= ? ORDER BY ts LIMIT ?)",
        )
        .bind(topic)
        .bind(before)
        .bind(ceiling)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Pages in the file that hold no data (freed by deletes).
    pub async fn free_pages(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("PRAGMA freelist_count").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    /// Returns up to `pages` free pages to the file system (auto_vacuum is INCREMENTAL, so the file
    /// shrinks instead of only reusing them).
    pub async fn incremental_vacuum(&self, pages: u32) -> Result<(), StoreError> {
        // A PRAGMA takes no bound parameters; `pages` is our own number.
        sqlx::query(AssertSqlSafe(format!("PRAGMA incremental_vacuum({pages})")))
            .fetch_all(&self.pool)
            .await?;
        Ok(())
    }

    /// SQLite's auto_vacuum mode of this file: 0 none, 1 full, 2 incremental.
    pub async fn auto_vacuum(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("PRAGMA auto_vacuum").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    /// Deletes up to `batch` rule runs older than `before` (unix ms) with an id up to `ceiling`;
    /// returns how many went.
    pub async fn purge_rule_runs(&self, before: i64, ceiling: i64, batch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM rule_run_rows WHERE id IN \
             (SELECT id FROM rule_run_rows WHERE ts < ? AND id <= ? ORDER BY id LIMIT ?)",
        )
        .bind(before)
        .bind(ceiling)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
