//! Plain SQL over the history, for owners (`homewright query`) and rules (`sql()`), always on a
//! read-only connection. Values come back as SQLite typed them, so a caller can print or convert them
//! without guessing.

use std::time::Instant;

use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use super::HistoryReader;

/// SQLite's own operation budget between two checks of a query's deadline.
const PROGRESS_INTERVAL_OPS: i32 = 10_000;

/// One value of a result cell or a bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A result set: column names and rows of values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
}

/// Why a query failed, worded for the person who wrote it.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the history is read-only here: statements that change it are refused ({0})")]
    ReadOnly(String),
    #[error("ATTACH is not allowed: queries read only the history database")]
    Attach,
    #[error("loading SQLite extensions is not allowed")]
    Extension,
    #[error("the query took too long and was stopped")]
    Interrupted,
    #[error("{0}")]
    Sql(String),
}

impl From<sqlx::Error> for QueryError {
    fn from(error: sqlx::Error) -> Self {
        let text = match &error {
            sqlx::Error::Database(e) => e.message().to_string(),
            other => other.to_string(),
        };
        if text.contains("readonly database") || text.contains("query_only") {
            QueryError::ReadOnly(text)
        } else if text.contains("too many attached databases") {
            QueryError::Attach
        } else if text.contains("not authorized") {
            QueryError::Extension
        } else if text.contains("interrupted") {
            QueryError::Interrupted
        } else {
            QueryError::Sql(text)
        }
    }
}

/// Makes a freshly opened read-only connection refuse ATTACH and writes, on top of the read-only open.
pub(super) async fn lock_down(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    {
        let mut handle = conn.lock_handle().await?;
        let raw = handle.as_raw_handle();
        // SAFETY: `raw` is the live sqlite3 handle of this connection, held locked for the duration of
        // the call; sqlite3_limit only reads and writes the connection's limit table.
        unsafe {
            libsqlite3_sys::sqlite3_limit(raw.as_ptr(), libsqlite3_sys::SQLITE_LIMIT_ATTACHED, 0);
        }
    }
    conn.execute("PRAGMA query_only = ON").await?;
    Ok(())
}

impl HistoryReader {
    /// Runs `sql` with `params` bound to its `?` placeholders. With a `deadline`, SQLite interrupts the
    /// query when it passes.
    pub async fn query(
        &self,
        sql: &str,
        params: &[SqlValue],
        deadline: Option<Instant>,
    ) -> Result<QueryResult, QueryError> {
        let mut conn = self.pool.acquire().await?;
        if let Some(deadline) = deadline {
            let mut handle = conn.lock_handle().await?;
            handle.set_progress_handler(PROGRESS_INTERVAL_OPS, move || Instant::now() < deadline);
        }
        let result = run(&mut conn, sql, params).await;
        if deadline.is_some() {
            conn.lock_handle().await?.remove_progress_handler();
        }
        result
    }
}

async fn run(conn: &mut SqliteConnection, sql: &str, params: &[SqlValue]) -> Result<QueryResult, QueryError> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_string()));
    for param in params {
        query = match param {
            SqlValue::Null => query.bind(None::<i64>),
            SqlValue::Integer(i) => query.bind(*i),
            SqlValue::Real(f) => query.bind(*f),
            SqlValue::Text(t) => query.bind(t.clone()),
            SqlValue::Blob(b) => query.bind(b.clone()),
        };
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let columns = match rows.first() {
        Some(row) => row.columns().iter().map(|c| c.name().to_string()).collect(),
        // No row to read names from: ask the prepared statement.
        None => match conn.prepare(AssertSqlSafe(sql.to_string()).into_sql_str()).await {
            Ok(statement) => statement.columns().iter().map(|c| c.name().to_string()).collect(),
            Err(_) => Vec::new(),
        },
    };
    let rows = rows.iter().map(decode_row).collect::<Result<_, sqlx::Error>>()?;
    Ok(QueryResult { columns, rows })
}

/// Decodes each cell by the type SQLite gave the value (not the column's declared type, which SQLite
/// does not enforce: `payload` holds TEXT or BLOB).
fn decode_row(row: &SqliteRow) -> Result<Vec<SqlValue>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(SqlValue::Null);
            }
            let kind = raw.type_info().name().to_string();
            Ok(match kind.as_str() {
                "INTEGER" | "BOOLEAN" => SqlValue::Integer(row.try_get(i)?),
                "REAL" => SqlValue::Real(row.try_get(i)?),
                "BLOB" => SqlValue::Blob(row.try_get(i)?),
                _ => SqlValue::Text(row.try_get(i)?),
            })
        })
        .collect()
}
