//! The rules' durable state: what `store_set` persisted (`store`), pending one-shot timers (`timers`),
//! the last run of catch-up triggers (`trigger_runs`) and each relay's state (`relays`). Written with
//! the trace by the recorder, read back once at start ([`Store::load_persisted`]).

use std::collections::HashMap;

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::{RecordBatch, Store, StoreError};
use crate::event::{Persisted, TimerRecord, TopicWatch};
use crate::relays::model::RelayState;

/// A change to the persisted one-shot timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOp {
    Set(TimerRecord),
    Done(i64),
}

impl Store {
    /// Everything the rules persisted: `store_set` values, pending timers, catch-up trigger runs.
    ///
    /// A stored value or a timer's captured variables longer than `max_value_size` (left by a version
    /// without that limit, or with a larger one) is not read: it would take the memory the limit
    /// protects before any rule runs. The value stays in the file, unseen by rules, with a warning; the
    /// timer is dropped as one whose values cannot be restored.
    pub async fn load_persisted(&self, max_value_size: usize) -> Result<Persisted, StoreError> {
        let most = i64::try_from(max_value_size).unwrap_or(i64::MAX);
        let timers = sqlx::query(
            "SELECT id, rule, callback, CASE WHEN octet_length(captured) <= ?1 THEN captured END, due, position, \
             octet_length(captured) FROM timers ORDER BY due, id",
        )
        .bind(most)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let record = TimerRecord {
                id: row.try_get(0)?,
                rule: row.try_get(1)?,
                callback: row.try_get(2)?,
                captured: row.try_get(3)?,
                due: row.try_get(4)?,
                position: row.try_get(5)?,
            };
            let length: Option<i64> = row.try_get(6)?;
            if record.captured.is_none() && length.is_some() {
                tracing::warn!(
                    "timer set by rules/{}.rhai:{} captured {} bytes, more than rules.max_value_size: it is dropped",
                    record.rule,
                    record.position,
                    length.unwrap_or(0)
                );
            }
            Ok(record)
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
        let topic_watches = sqlx::query("SELECT rule, trigger, topic, since, fired FROM topic_watches")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(TopicWatch {
                    rule: row.try_get(0)?,
                    trigger: row.try_get(1)?,
                    topic: row.try_get(2)?,
                    since: row.try_get(3)?,
                    fired: row.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Persisted {
            kv: self.load_kv(max_value_size).await?,
            timers,
            trigger_runs,
            relays,
            topic_watches,
        })
    }

    /// What `store_set` persisted, as JSON text per key, without the values longer than
    /// `max_value_size` (see [`Store::load_persisted`]).
    pub async fn load_kv(&self, max_value_size: usize) -> Result<HashMap<String, String>, StoreError> {
        let most = i64::try_from(max_value_size).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT key, CASE WHEN octet_length(key) + octet_length(value) <= ?1 THEN value END, \
             octet_length(value) FROM store",
        )
        .bind(most)
        .fetch_all(&self.pool)
        .await?;
        let mut kv = HashMap::new();
        for row in &rows {
            let key: String = row.try_get(0)?;
            match row.try_get::<Option<String>, _>(1)? {
                Some(value) => {
                    kv.insert(key, value);
                }
                None => {
                    let length: i64 = row.try_get(2)?;
                    let shown: String = key.chars().take(40).collect();
                    tracing::warn!(
                        "the stored value of `{shown}` is {length} bytes, more than rules.max_value_size: rules see () until it is set again"
                    );
                }
            }
        }
        Ok(kv)
    }
}

/// Writes the state rows of `batch` inside the caller's transaction.
pub(super) async fn write(tx: &mut SqliteConnection, batch: &RecordBatch) -> Result<(), StoreError> {
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
    for ((rule, trigger, topic), state) in &batch.topic_watches {
        match state {
            Some((since, fired)) => sqlx::query(
                "INSERT INTO topic_watches (rule, trigger, topic, since, fired) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (rule, trigger, topic) DO UPDATE SET since = excluded.since, fired = excluded.fired",
            )
            .bind(rule)
            .bind(trigger)
            .bind(topic)
            .bind(since)
            .bind(fired),
            None => sqlx::query("DELETE FROM topic_watches WHERE rule = ? AND trigger = ? AND topic = ?")
                .bind(rule)
                .bind(trigger)
                .bind(topic),
        }
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
