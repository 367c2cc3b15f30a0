//! The record of what rules did (`actions`), how each run went (`rule_runs`), and what they persisted
//! (`store`), written in batches by the actions stage.

use std::collections::HashMap;

use bytes::Bytes;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::{Store, StoreError, discard_on_error};
use crate::event::RuleRun;

/// Rows per INSERT statement (at most 8 values each, far below SQLite's bind limit).
const ROWS_PER_STATEMENT: usize = 1_000;

/// One row of `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub ts: i64,
    pub rule: String,
    /// `publish` or `relay`.
    pub kind: &'static str,
    /// The topic or relay name.
    pub target: String,
    pub value: Bytes,
}

/// Everything the actions stage has to write, gathered so it goes in one transaction.
#[derive(Debug, Default)]
pub struct AuditBatch {
    pub actions: Vec<ActionRecord>,
    pub runs: Vec<RuleRun>,
    /// Latest value per key (JSON text); later writes of a key replace earlier ones.
    pub store: HashMap<String, String>,
}

impl AuditBatch {
    /// Rows waiting to be written.
    pub fn len(&self) -> usize {
        self.actions.len() + self.runs.len() + self.store.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store {
    /// Writes a batch in one transaction.
    pub async fn write_audit(&self, batch: &AuditBatch) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = write_audit(&mut conn, batch).await;
        discard_on_error(&mut conn, result)
    }

    /// Everything `store_set` persisted, as JSON text per key.
    pub async fn load_kv(&self) -> Result<HashMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM store")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }
}

async fn write_audit(conn: &mut SqliteConnection, batch: &AuditBatch) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    for chunk in batch.actions.chunks(ROWS_PER_STATEMENT) {
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO actions (ts, rule, kind, target, value) ");
        insert.push_values(chunk, |mut row, a| {
            row.push_bind(a.ts)
                .push_bind(a.rule.as_str())
                .push_bind(a.kind)
                .push_bind(a.target.as_str());
            match std::str::from_utf8(&a.value) {
                Ok(text) => row.push_bind(text),
                Err(_) => row.push_bind(&a.value[..]),
            };
        });
        insert.build().execute(&mut *tx).await?;
    }
    for chunk in batch.runs.chunks(ROWS_PER_STATEMENT) {
        let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO rule_runs (ts, rule, trigger, topic, duration_us, error, actions) ",
        );
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.ts)
                .push_bind(&*r.rule)
                .push_bind(r.trigger)
                .push_bind(r.topic.as_deref())
                .push_bind(r.duration_us)
                .push_bind(r.error.as_deref())
                .push_bind(r.actions);
        });
        insert.build().execute(&mut *tx).await?;
    }
    for (key, value) in &batch.store {
        sqlx::query("INSERT INTO store (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
