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
            kv: self.load_kv().await?,
            timers,
            trigger_runs,
            relays,
            topic_watches,
        })
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
