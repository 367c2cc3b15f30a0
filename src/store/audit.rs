//! The record of what rules did (`actions`), how each run went (`rule_runs`), and what they persisted
//! (`store`), written in batches by the actions stage.

use std::collections::HashMap;

use bytes::Bytes;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::{Store, StoreError, discard_on_error};
use crate::event::{RuleRun, TimerRecord};
use crate::gpio::model::RelayState;

/// Rows per INSERT statement (at most 8 values each, far below SQLite's bind limit).
const ROWS_PER_STATEMENT: usize = 1_000;

/// One row of `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub ts: i64,
    pub rule: String,
    /// `publish` or `relay`.
    pub kind: &'static str,
    /// What asked for it: `rule`, or for a relay also `set_topic`, `cli`, `on_for`, `max_on`, ...
    pub cause: &'static str,
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
    /// Timers set and done, in the order they happened (a timer may be set and done in one batch).
    pub timers: Vec<TimerOp>,
    /// Latest run per (rule, trigger) of catch-up triggers.
    pub trigger_runs: HashMap<(String, String), i64>,
    /// Latest state per relay.
    pub relays: HashMap<String, RelayState>,
}

/// A change to the persisted one-shot timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOp {
    Set(TimerRecord),
    Done(i64),
}

/// What the scheduler needs back at start.
#[derive(Debug, Default)]
pub struct Persisted {
    /// `store_set` values (JSON text).
    pub kv: HashMap<String, String>,
    /// Pending one-shot timers, in due order.
    pub timers: Vec<TimerRecord>,
    /// Last run per (rule, trigger) of catch-up triggers.
    pub trigger_runs: HashMap<(String, String), i64>,
    /// Each relay's last state.
    pub relays: HashMap<String, RelayState>,
}

impl AuditBatch {
    /// Rows waiting to be written.
    pub fn len(&self) -> usize {
        self.actions.len()
            + self.runs.len()
            + self.store.len()
            + self.timers.len()
            + self.trigger_runs.len()
            + self.relays.len()
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

    /// Everything the rules persisted: `store_set` values, pending timers, catch-up trigger runs.
    pub async fn load_persisted(&self) -> Result<Persisted, StoreError> {
        let timers =
            sqlx::query("SELECT id, rule, callback, captured, due, position FROM timers ORDER BY due, id")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(TimerRecord {
                        id: row.try_get(0)?,
                        rule: row.try_get(1)?,
                        callback: row.try_get(2)?,
                        captured: row.try_get(3)?,
                        due: row.try_get(4)?,
                        position: row.try_get(5)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
        let trigger_runs = sqlx::query("SELECT rule, trigger, last_run FROM trigger_runs")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let relays = sqlx::query("SELECT name, is_on, since, off_due FROM relays")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let state = RelayState {
                    on: row.try_get(1)?,
                    since: row.try_get(2)?,
                    off_due: row.try_get(3)?,
                };
                Ok((row.try_get(0)?, state))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Persisted {
            kv: self.load_kv().await?,
            timers,
            trigger_runs,
            relays,
        })
    }

    /// Deletes up to `batch` rule runs older than `before` (unix ms); returns how many went.
    pub async fn purge_rule_runs(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM rule_runs WHERE id IN (SELECT id FROM rule_runs WHERE ts < ? ORDER BY id LIMIT ?)",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
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
            QueryBuilder::new("INSERT INTO actions (ts, rule, kind, target, cause, value) ");
        insert.push_values(chunk, |mut row, a| {
            row.push_bind(a.ts)
                .push_bind(a.rule.as_str())
                .push_bind(a.kind)
                .push_bind(a.target.as_str())
                .push_bind(a.cause);
            match std::str::from_utf8(&a.value) {
                Ok(text) => row.push_bind(text),
                Err(_) => row.push_bind(&a.value[..]),
            };
        });
        insert.build().execute(&mut *tx).await?;
    }
    for chunk in batch.runs.chunks(ROWS_PER_STATEMENT) {
        let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO rule_runs (ts, rule, trigger, topic, duration_us, error, actions, late) ",
        );
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.ts)
                .push_bind(&*r.rule)
                .push_bind(r.trigger)
                .push_bind(r.topic.as_deref())
                .push_bind(r.duration_us)
                .push_bind(r.error.as_deref())
                .push_bind(r.actions)
                .push_bind(r.late);
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
    for op in &batch.timers {
        match op {
            TimerOp::Set(t) => sqlx::query(
                "INSERT OR REPLACE INTO timers (id, rule, callback, captured, due, position) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(t.id)
            .bind(&t.rule)
            .bind(&t.callback)
            .bind(t.captured.as_deref())
            .bind(t.due)
            .bind(&t.position),
            TimerOp::Done(id) => sqlx::query("DELETE FROM timers WHERE id = ?").bind(*id),
        }
        .execute(&mut *tx)
        .await?;
    }
    for ((rule, trigger), ts) in &batch.trigger_runs {
        sqlx::query(
            "INSERT INTO trigger_runs (rule, trigger, last_run) VALUES (?, ?, ?) \
             ON CONFLICT (rule, trigger) DO UPDATE SET last_run = max(last_run, excluded.last_run)",
        )
        .bind(rule)
        .bind(trigger)
        .bind(ts)
        .execute(&mut *tx)
        .await?;
    }
    for (name, state) in &batch.relays {
        sqlx::query(
            "INSERT INTO relays (name, is_on, since, off_due) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET is_on = excluded.is_on, since = excluded.since, off_due = excluded.off_due",
        )
        .bind(name)
        .bind(state.on)
        .bind(state.since)
        .bind(state.off_due)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
