//! The local side of replication to PostgreSQL: reading the rows above a table's high-water mark, in id
//! order, on the read-only connection, and moving the mark once the server committed them. The server's
//! side is in [`super::postgres`]; the stage that drives both is [`crate::replicate`].

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, TypeInfo, ValueRef};

use super::{HistoryReader, Store, StoreError};

/// A tables that is replicated, by the name of its view (and of its mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Messages,
    Actions,
    RuleRuns,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Messages, Table::Actions, Table::RuleRuns];

    pub fn name(self) -> &'static str {
        match self {
            Table::Messages => "messages",
            Table::Actions => "actions",
            Table::RuleRuns => "rule_runs",
        }
    }
}

/// A value that SQLite holds as TEXT or BLOB (`payload`, `value`): PostgreSQL keeps text as `text` and
/// anything else byte for byte in a `bytea` column beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytes {
    Text(String),
    Blob(Vec<u8>),
}

/// One row of `messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: i64,
    pub ts: i64,
    pub topic: String,
    pub payload: Bytes,
    pub qos: i64,
    pub retain: i64,
    pub dup: i64,
}

/// One row of `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    pub id: i64,
    pub ts: i64,
    pub rule: String,
    pub kind: String,
    pub target: String,
    pub value: Option<Bytes>,
    pub cause: Option<String>,
}

/// One row of `rule_runs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRunRow {
    pub id: i64,
    pub ts: i64,
    pub rule: String,
    pub trigger: String,
    pub topic: Option<String>,
    pub duration_us: i64,
    pub error: Option<String>,
    pub actions: i64,
    pub late: i64,
}

/// Rows of one table read above its mark, in id order.
#[derive(Debug, Clone)]
pub enum Batch {
    Messages(Vec<MessageRow>),
    Actions(Vec<ActionRow>),
    RuleRuns(Vec<RuleRunRow>),
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Messages(rows) => rows.len(),
            Batch::Actions(rows) => rows.len(),
            Batch::RuleRuns(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest id in the batch: the table's next mark.
    pub fn last_id(&self) -> Option<i64> {
        match self {
            Batch::Messages(rows) => rows.last().map(|r| r.id),
            Batch::Actions(rows) => rows.last().map(|r| r.id),
            Batch::RuleRuns(rows) => rows.last().map(|r| r.id),
        }
    }
}

fn bytes(row: &SqliteRow, i: usize) -> Result<Option<Bytes>, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(None);
    }
    let blob = raw.type_info().name() == "BLOB";
    Ok(Some(if blob {
        Bytes::Blob(row.try_get(i)?)
    } else {
        let text: String = row.try_get(i)?;
        // PostgreSQL's text cannot hold NUL; such a payload goes byte for byte.
        if text.contains('\0') {
            Bytes::Blob(text.into_bytes())
        } else {
            Bytes::Text(text)
        }
    }))
}

impl HistoryReader {
    /// Up to `limit` rows of `table` with an id above `after`, in id order.
    pub async fn replica_batch(&self, table: Table, after: i64, limit: i64) -> Result<Batch, StoreError> {
        let sql = match table {
            Table::Messages => {
                "SELECT m.id, m.ts, t.topic, m.payload, m.qos, m.retain, m.dup FROM message_rows m \
                 JOIN topics t ON t.id = m.topic_id WHERE m.id > ? ORDER BY m.id LIMIT ?"
            }
            Table::Actions => {
                "SELECT id, ts, rule, kind, target, value, cause FROM actions WHERE id > ? ORDER BY id LIMIT ?"
            }
            Table::RuleRuns => {
                "SELECT r.id, r.ts, k.rule, k.trigger, t.topic, r.duration_us, r.error, r.actions, r.late \
                 FROM rule_run_rows r JOIN run_kinds k ON k.id = r.kind_id LEFT JOIN topics t ON t.id = r.topic_id \
                 WHERE r.id > ? ORDER BY r.id LIMIT ?"
            }
        };
        let rows = sqlx::query(sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let batch = match table {
            Table::Messages => Batch::Messages(
                rows.iter()
                    .map(|r| {
                        Ok(MessageRow {
                            id: r.try_get(0)?,
                            ts: r.try_get(1)?,
                            topic: r.try_get(2)?,
                            payload: bytes(r, 3)?.unwrap_or(Bytes::Blob(Vec::new())),
                            qos: r.try_get(4)?,
                            retain: r.try_get(5)?,
                            dup: r.try_get(6)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?,
            ),
            Table::Actions => Batch::Actions(
                rows.iter()
                    .map(|r| {
                        Ok(ActionRow {
                            id: r.try_get(0)?,
                            ts: r.try_get(1)?,
                            rule: r.try_get(2)?,
                            kind: r.try_get(3)?,
                            target: r.try_get(4)?,
                            value: bytes(r, 5)?,
                            cause: r.try_get(6)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?,
            ),
            Table::RuleRuns => Batch::RuleRuns(
                rows.iter()
                    .map(|r| {
                        Ok(RuleRunRow {
                            id: r.try_get(0)?,
                            ts: r.try_get(1)?,
                            rule: r.try_get(2)?,
                            trigger: r.try_get(3)?,
                            topic: r.try_get(4)?,
                            duration_us: r.try_get(5)?,
                            error: r.try_get(6)?,
                            actions: r.try_get(7)?,
                            late: r.try_get(8)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?,
            ),
        };
        Ok(batch)
    }
}

impl Store {
    /// The highest id of `table` the server has committed (0 before the first batch).
    pub async fn replication_mark(&self, table: Table) -> Result<i64, StoreError> {
        let mark: Option<i64> = sqlx::query_scalar("SELECT last_id FROM replication_marks WHERE tbl = ?")
            .bind(table.name())
            .fetch_optional(&self.pool)
            .await?;
        Ok(mark.unwrap_or(0))
    }

    /// Records that the server committed `table`'s rows up to `last_id`.
    pub async fn set_replication_mark(&self, table: Table, last_id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replication_marks (tbl, last_id) VALUES (?, ?) \
             ON CONFLICT (tbl) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
        )
        .bind(table.name())
        .bind(last_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The highest id of `table` that retention may delete while replicating: the mark, and never the
    /// table's newest row (SQLite gives a new row the newest id plus one, so deleting it could hand a
    /// replicated id to a new row, which replication would then skip).
    pub async fn purge_ceiling(&self, table: Table) -> Result<i64, StoreError> {
        let newest = match table {
            Table::Messages => "SELECT coalesce(max(id), 0) FROM message_rows",
            Table::Actions => "SELECT coalesce(max(id), 0) FROM actions",
            Table::RuleRuns => "SELECT coalesce(max(id), 0) FROM rule_run_rows",
        };
        let newest: i64 = sqlx::query_scalar(newest).fetch_one(&self.pool).await?;
        let mark = self.replication_mark(table).await?;
        Ok(mark.min(newest - 1))
    }

    /// Whether `topic` has messages older than `before` above `ceiling` (kept back for replication).
    pub async fn held_back(&self, topic: &str, before: i64, ceiling: i64) -> Result<bool, StoreError> {
        let held: i64 = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM message_rows WHERE topic_id = (SELECT id FROM topics WHERE topic = ?) \
             AND ts < ? AND id > ?)",
        )
        .bind(topic)
        .bind(before)
        .bind(ceiling)
        .fetch_one(&self.pool)
        .await?;
        Ok(held != 0)
    }
}
