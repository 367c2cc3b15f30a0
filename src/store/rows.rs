//! Multi-row INSERTs for the writer's hot tables (`message_rows`, `rule_run_rows`).
//!
//! One statement of many rows is 10-40x faster than a statement per row (one parse,
//! one step into SQLite per statement instead of per row). It is
//! built here rather than with sqlx's `QueryBuilder`, which formats every placeholder and separator
//! through `fmt::Write` for every batch: with two rows stored per message that was a few percent of
//! the engine's CPU at full message rate (`perf`). The text of a full statement is made once
//! and shared; only a shorter last chunk of a batch gets a text of its own.

use std::sync::{Arc, OnceLock};

use sqlx::encode::Encode;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Sqlite, Type};

use super::StoreError;

/// Rows per statement: with at most 7 values a row, far below SQLite's limit of 32,766 bound values.
pub(super) const ROWS_PER_STATEMENT: usize = 1_000;

/// `INSERT OR ROLLBACK INTO <table> (<columns>) VALUES (?, ...), (?, ...), ...`.
///
/// `OR ROLLBACK`: a failing row (a NOT NULL, an owner's trigger) ends the whole transaction, which is
/// what the writer does anyway (it never commits part of a batch). With the default `OR ABORT`,
/// SQLite keeps a statement journal of every page the statement changes, to undo that statement
/// alone: a copy of each page, a tenth of the writer's time in `perf`.
pub(super) struct MultiRowInsert {
    table_and_columns: &'static str,
    columns: usize,
    full: OnceLock<Arc<str>>,
}

impl MultiRowInsert {
    /// `table_and_columns` is e.g. `message_rows (ts, topic_id)`, naming `columns` columns.
    pub(super) const fn new(table_and_columns: &'static str, columns: usize) -> Self {
        MultiRowInsert {
            table_and_columns,
            columns,
            full: OnceLock::new(),
        }
    }

    /// The statement for `rows` rows (1 to [`ROWS_PER_STATEMENT`]).
    pub(super) fn sql(&self, rows: usize) -> AssertSqlSafe<Arc<str>> {
        if rows == ROWS_PER_STATEMENT {
            let full = self.full.get_or_init(|| self.text(rows).into());
            return AssertSqlSafe(Arc::clone(full));
        }
        AssertSqlSafe(self.text(rows).into())
    }

    fn text(&self, rows: usize) -> String {
        let mut row = String::with_capacity(2 * self.columns + 1);
        row.push('(');
        for column in 0..self.columns {
            row.push_str(if column == 0 { "?" } else { ",?" });
        }
        row.push(')');
        let head = format!("INSERT OR ROLLBACK INTO {} VALUES ", self.table_and_columns);
        let mut sql = String::with_capacity(head.len() + rows * (row.len() + 1));
        sql.push_str(&head);
        for n in 0..rows {
            if n > 0 {
                sql.push(',');
            }
            sql.push_str(&row);
        }
        sql
    }
}

/// Bound values for one statement.
pub(super) struct Values(SqliteArguments);

impl Values {
    pub(super) fn with_capacity(values: usize) -> Self {
        let mut arguments = SqliteArguments::default();
        arguments.reserve(values, 0);
        Values(arguments)
    }

    pub(super) fn add<'q, T: Encode<'q, Sqlite> + Type<Sqlite>>(
        &mut self,
        value: T,
    ) -> Result<&mut Self, StoreError> {
        self.0.add(value).map_err(sqlx::Error::Encode)?;
        Ok(self)
    }

    /// The payload as TEXT when it is UTF-8, so that SQL's string and JSON functions work on it, and
    /// as a BLOB otherwise.
    pub(super) fn add_payload(&mut self, payload: &[u8]) -> Result<&mut Self, StoreError> {
        match std::str::from_utf8(payload) {
            Ok(text) => self.add(text),
            Err(_) => self.add(payload),
        }
    }

    pub(super) fn into_arguments(self) -> SqliteArguments {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_one_placeholder_per_value() {
        let insert = MultiRowInsert::new("t (a, b)", 2);
        assert_eq!(
            insert.sql(3).0.as_ref(),
            "INSERT OR ROLLBACK INTO t (a, b) VALUES (?,?),(?,?),(?,?)"
        );
        let full = insert.sql(ROWS_PER_STATEMENT);
        assert_eq!(full.0.matches('?').count(), 2 * ROWS_PER_STATEMENT);
        assert!(
            Arc::ptr_eq(&full.0, &insert.sql(ROWS_PER_STATEMENT).0),
            "the full statement's text is made once"
        );
    }
}
