//! The record of what rules did (`actions`), how each run went (`rule_runs`), and what they persisted
//! (`store`), written in batches by the recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::messages::{TopicIds, topic_id};
use super::rows::{MultiRowInsert, ROWS_PER_STATEMENT, Values};
use super::{Store, StoreError, discard_on_error};
use crate::event::{RuleRun, TimerRecord};
use crate::gpio::model::RelayState;

/// Rows per INSERT statement of `actions` (6 values each, far below SQLite's bind limit).
const ACTIONS_PER_STATEMENT: usize = 1_000;

static INSERT_RUNS: MultiRowInsert = MultiRowInsert::new(
    "rule_run_rows (ts, kind_id, topic_id, duration_us, error, actions, late)",
    7,
);

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
        let result = write_audit(&mut conn, batch, &self.run_kinds, &self.topic_ids).await;
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
            "DELETE FROM rule_run_rows WHERE id IN (SELECT id FROM rule_run_rows WHERE ts < ? ORDER BY id LIMIT ?)",
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

/// `run_kinds.id` of each (rule, trigger) this writer has stored or looked up (see the migration
/// `rule_run_ids`). Only ids of committed rows enter it, as with topic ids.
#[derive(Debug, Default)]
pub(super) struct RunKinds(Mutex<foldhash::HashMap<(Arc<str>, &'static str), i64>>);

impl RunKinds {
    fn lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<(Arc<str>, &'static str), i64>> {
        // Only ever extended: a panic elsewhere cannot leave it half-updated.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The id of a (rule, trigger) pair, adding it to `run_kinds` when it is new.
async fn run_kind_id(conn: &mut SqliteConnection, rule: &str, trigger: &str) -> Result<i64, StoreError> {
    sqlx::query("INSERT OR IGNORE INTO run_kinds (rule, trigger) VALUES (?, ?)")
        .bind(rule)
        .bind(trigger)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query("SELECT id FROM run_kinds WHERE rule = ? AND trigger = ?")
        .bind(rule)
        .bind(trigger)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

async fn write_audit(
    conn: &mut SqliteConnection,
    batch: &AuditBatch,
    kinds: &RunKinds,
    topics: &TopicIds,
) -> Result<(), StoreError> {
    let cached_kinds: Vec<Option<i64>> = {
        let known = kinds.lock();
        batch
            .runs
            .iter()
            .map(|r| known.get(&(Arc::clone(&r.rule), r.trigger)).copied())
            .collect()
    };
    let cached_topics = topics.cached(batch.runs.iter().map(|r| r.topic.as_deref()));
    let mut tx = conn.begin().await?;
    let mut fresh_kinds: foldhash::HashMap<(Arc<str>, &'static str), i64> = Default::default();
    let mut fresh_topics: foldhash::HashMap<&str, i64> = Default::default();
    let mut ids = Vec::with_capacity(batch.runs.len());
    for ((run, kind), topic) in batch.runs.iter().zip(cached_kinds).zip(cached_topics) {
        let key = (Arc::clone(&run.rule), run.trigger);
        let kind = match kind.or_else(|| fresh_kinds.get(&key).copied()) {
            Some(id) => id,
            None => {
                let id = run_kind_id(&mut tx, &run.rule, run.trigger).await?;
                fresh_kinds.insert(key, id);
                id
            }
        };
        let topic = match (topic, run.topic.as_deref()) {
            (Some(id), _) => Some(id),
            (None, None) => None,
            (None, Some(text)) => Some(match fresh_topics.get(text) {
                Some(id) => *id,
                None => {
                    let id = topic_id(&mut tx, text).await?;
                    fresh_topics.insert(text, id);
                    id
                }
            }),
        };
        ids.push((kind, topic));
    }
    for chunk in batch.actions.chunks(ACTIONS_PER_STATEMENT) {
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
    for (chunk, chunk_ids) in batch
        .runs
        .chunks(ROWS_PER_STATEMENT)
        .zip(ids.chunks(ROWS_PER_STATEMENT))
    {
        let mut values = Values::with_capacity(chunk.len() * 7);
        for (r, (kind, topic)) in chunk.iter().zip(chunk_ids) {
            values
                .add(r.ts)?
                .add(*kind)?
                .add(*topic)?
                .add(r.duration_us)?
                .add(r.error.as_deref())?
                .add(r.actions)?
                .add(r.late)?;
        }
        sqlx::query_with(INSERT_RUNS.sql(chunk.len()), values.into_arguments())
            .execute(&mut *tx)
            .await?;
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
    kinds.lock().extend(fresh_kinds);
    topics.remember(fresh_topics);
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    use super::*;

    fn run(rule: &str, trigger: &'static str, topic: Option<&str>, ts: i64) -> RuleRun {
        RuleRun {
            ts,
            rule: Arc::from(rule),
            trigger,
            topic: topic.map(Arc::from),
            duration_us: 5,
            error: None,
            actions: 1,
            late: false,
        }
    }

    type Row = (i64, String, String, Option<String>, i64);

    async fn runs(pool: &SqlitePool) -> Vec<Row> {
        sqlx::query_as("SELECT id, rule, trigger, topic, ts FROM rule_runs ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    fn row(id: i64, rule: &str, trigger: &str, topic: Option<&str>, ts: i64) -> Row {
        (id, rule.into(), trigger.into(), topic.map(str::to_string), ts)
    }

    /// Runs recorded by the schema with text columns keep their ids and columns through the migration;
    /// the engine then writes after them with ids for rule, trigger and topic, and the view shows the
    /// same columns, takes the owner's DELETE, and the retention purge still works.
    #[tokio::test]
    async fn the_rule_run_migration_keeps_old_runs_and_the_view_behaves_like_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let old = crate::store::migrated_until(&path, "rule run ids").await;
        sqlx::raw_sql(
            "INSERT INTO messages (ts, topic, payload, qos, retain) VALUES (1, 'hall/motion', 'on', 0, 0); \
             INSERT INTO rule_runs (ts, rule, trigger, topic, duration_us, error, actions, late) VALUES \
             (1, 'porch', 'on_message', 'hall/motion', 7, NULL, 1, 0), \
             (2, 'porch', 'every', NULL, 3, NULL, 0, 1), \
             (3, 'fan', 'on_message', 'bath/humidity', 4, 'rules/fan.rhai:1:2: oops', 0, 0)",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = Store::open(&path).await.unwrap();
        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let migrated = vec![
            row(1, "porch", "on_message", Some("hall/motion"), 1),
            row(2, "porch", "every", None, 2),
            row(3, "fan", "on_message", Some("bath/humidity"), 3),
        ];
        assert_eq!(runs(&pool).await, migrated);
        let (error, late): (Option<String>, i64) =
            sqlx::query_as("SELECT error, late FROM rule_runs WHERE id = 3")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(error.as_deref(), Some("rules/fan.rhai:1:2: oops"));
        assert_eq!(late, 0);

        // Two batches: the second uses the ids the first made or found.
        for ts in [10, 20] {
            let batch = AuditBatch {
                runs: vec![
                    run("porch", "on_message", Some("hall/motion"), ts),
                    run("fan", "on_message", Some("new/topic"), ts),
                    run("porch", "on_start", None, ts),
                ],
                ..AuditBatch::default()
            };
            store.write_audit(&batch).await.unwrap();
        }
        let all = runs(&pool).await;
        assert_eq!(all.len(), 9);
        assert_eq!(all[..3], migrated[..]);
        assert_eq!(all[3], row(4, "porch", "on_message", Some("hall/motion"), 10));
        assert_eq!(all[7], row(8, "fan", "on_message", Some("new/topic"), 20));
        assert_eq!(all[8], row(9, "porch", "on_start", None, 20));
        let kinds: i64 = sqlx::query_scalar("SELECT count(*) FROM run_kinds")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(kinds, 4, "each (rule, trigger) is stored once");
        let topics: i64 = sqlx::query_scalar("SELECT count(*) FROM topics")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(topics, 3, "a run's topic shares the messages' topic ids");

        sqlx::raw_sql("DELETE FROM rule_runs WHERE rule = 'fan'")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(runs(&pool).await.len(), 6);
        assert_eq!(store.purge_rule_runs(15, 100).await.unwrap(), 4);
        let left: Vec<i64> = runs(&pool).await.iter().map(|r| r.4).collect();
        assert_eq!(left, [20, 20]);
    }
}
