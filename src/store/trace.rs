//! The trace: what rules did (`actions`) and how each run went (`rule_runs`, with its `run_kinds`),
//! written in batches by the recorder; the same transaction carries the rules' durable state
//! ([`super::state`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::messages::{TopicIds, topic_id};
use super::rows::{MultiRowInsert, ROWS_PER_STATEMENT, Values};
use super::{RecordBatch, Store, StoreError, discard_on_error};
#[cfg(test)]
use crate::event::RuleRun;

/// Rows per INSERT statement of `actions` (8 values each, far below SQLite's bind limit).
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
    /// `publish`, `relay`, `notify` or `http`.
    pub kind: &'static str,
    /// What asked for it: `rule`, or for a relay also `set_topic`, `cli`, `on_for`, `max_on`, ...
    pub cause: &'static str,
    /// The topic, relay name, notification channel, or an HTTP call's method and URL without secrets.
    pub target: String,
    pub value: Bytes,
    /// How a notification or HTTP call ended: `sent`, `failed` or `dropped`.
    pub outcome: Option<&'static str>,
    /// The last HTTP status of a notification or HTTP call.
    pub status: Option<u16>,
}

impl Store {
    /// Writes a batch, trace and state, in one transaction: the state a run changed is never committed
    /// without the trace of that run.
    ///
    /// A batch of rule runs alone is committed without syncing the disk (`synchronous = NORMAL`): the
    /// next commit of messages syncs the log, and these rows with it. A process crash loses none of
    /// them (they are in the log); a power cut can lose the runs since the last commit of messages.
    /// That saves a sync per batch of runs, which at a house's rate were most of the engine's syncs.
    pub async fn write_records(&self, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let relaxed = self.durable && batch.is_runs_only();
        let result = async {
            if relaxed {
                sqlx::raw_sql("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await?;
            }
            write_records(&mut conn, batch, &self.run_kinds, &self.topic_ids).await?;
            if relaxed {
                sqlx::raw_sql("PRAGMA synchronous = FULL")
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }
        .await;
        discard_on_error(&mut conn, result)
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

async fn write_records(
    conn: &mut SqliteConnection,
    batch: &RecordBatch,
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
            QueryBuilder::new("INSERT INTO actions (ts, rule, kind, target, cause, outcome, status, value) ");
        insert.push_values(chunk, |mut row, a| {
            row.push_bind(a.ts)
                .push_bind(a.rule.as_str())
                .push_bind(a.kind)
                .push_bind(a.target.as_str())
                .push_bind(a.cause)
                .push_bind(a.outcome)
                .push_bind(a.status.map(i64::from));
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
    super::state::write(&mut tx, batch).await?;
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
            let batch = RecordBatch {
                runs: vec![
                    run("porch", "on_message", Some("hall/motion"), ts),
                    run("fan", "on_message", Some("new/topic"), ts),
                    run("porch", "on_start", None, ts),
                ],
                ..RecordBatch::default()
            };
            store.write_records(&batch).await.unwrap();
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
        assert_eq!(store.purge_rule_runs(15, i64::MAX, 100).await.unwrap(), 4);
        let left: Vec<i64> = runs(&pool).await.iter().map(|r| r.4).collect();
        assert_eq!(left, [20, 20]);
    }
}
