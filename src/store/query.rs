//! Plain SQL over the history, for owners (`homewright query`) and rules (`sql()`), always on a
//! read-only connection. Values come back as SQLite typed them, so a caller can print or convert them
//! without guessing.

use std::time::Instant;

use futures_util::TryStreamExt;

use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use super::HistoryReader;

/// SQLite's own operation budget between two checks of a query's deadline.
const PROGRESS_INTERVAL_OPS: i32 = 10_000;

/// How much one query may return; beyond either bound it fails instead of taking the memory. For
/// rules' `sql()`: a Pi has 1-4 GB, and a query like `SELECT randomblob(1000000000)` once took 2 GB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most rows.
    pub rows: usize,
    /// Most bytes of values in all rows together (text and blobs by length, numbers as 8). Also
    /// SQLite's own limit on one value (`SQLITE_LIMIT_LENGTH`) during the query, so a single huge
    /// value fails inside SQLite before it is made.
    pub bytes: usize,
}

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
    TooLarge(String),
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
        } else if text.contains("too big") {
            QueryError::TooLarge(format!(
                "{text}: a value in the result is larger than a query may return here"
            ))
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
        self.query_bounded(sql, params, deadline, None).await
    }

    /// Like [`HistoryReader::query`], failing once the result passes `bounds`.
    pub async fn query_bounded(
        &self,
        sql: &str,
        params: &[SqlValue],
        deadline: Option<Instant>,
        bounds: Option<Bounds>,
    ) -> Result<QueryResult, QueryError> {
        let mut conn = self.pool.acquire().await?;
        if let Some(deadline) = deadline {
            let mut handle = conn.lock_handle().await?;
            handle.set_progress_handler(PROGRESS_INTERVAL_OPS, move || Instant::now() < deadline);
        }
        let length = match bounds {
            Some(bounds) => Some(set_length_limit(&mut conn, bounds.bytes).await?),
            None => None,
        };
        let result = run(&mut conn, sql, params, bounds).await;
        if let Some(previous) = length {
            set_length_limit(&mut conn, previous).await?;
        }
        if deadline.is_some() {
            conn.lock_handle().await?.remove_progress_handler();
        }
        result
    }
}

/// Sets SQLite's limit on the size of one value on this connection and returns the one it replaces.
async fn set_length_limit(conn: &mut SqliteConnection, bytes: usize) -> Result<usize, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle();
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    // SAFETY: `raw` is the live sqlite3 handle of this connection, held locked for the duration of
    // the call; sqlite3_limit only reads and writes the connection's limit table.
    let previous =
        unsafe { libsqlite3_sys::sqlite3_limit(raw.as_ptr(), libsqlite3_sys::SQLITE_LIMIT_LENGTH, bytes) };
    Ok(usize::try_from(previous).unwrap_or(0))
}

async fn run(
    conn: &mut SqliteConnection,
    sql: &str,
    params: &[SqlValue],
    bounds: Option<Bounds>,
) -> Result<QueryResult, QueryError> {
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
    // Row by row, so a result past its bounds is dropped as soon as it passes them.
    let mut columns = None;
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    {
        let mut stream = query.fetch(&mut *conn);
        while let Some(row) = stream.try_next().await? {
            if columns.is_none() {
                columns = Some(row.columns().iter().map(|c| c.name().to_string()).collect());
            }
            let values = decode_row(&row)?;
            if let Some(bounds) = bounds {
                bytes += values.iter().map(SqlValue::size).sum::<usize>();
                if rows.len() >= bounds.rows {
                    return Err(QueryError::TooLarge(format!(
                        "the result has more than {} rows; add a LIMIT or aggregate in SQL",
                        bounds.rows
                    )));
                }
                if bytes > bounds.bytes {
                    return Err(QueryError::TooLarge(format!(
                        "the result is larger than {} bytes (at row {}); select fewer or shorter values",
                        bounds.bytes,
                        rows.len() + 1
                    )));
                }
            }
            rows.push(values);
        }
    }
    let columns = match columns {
        Some(columns) => columns,
        // No row to read names from: ask the prepared statement.
        None => match conn.prepare(AssertSqlSafe(sql.to_string()).into_sql_str()).await {
            Ok(statement) => statement.columns().iter().map(|c| c.name().to_string()).collect(),
            Err(_) => Vec::new(),
        },
    };
    Ok(QueryResult { columns, rows })
}

impl SqlValue {
    /// What the value counts toward [`Bounds::bytes`].
    fn size(&self) -> usize {
        match self {
            SqlValue::Null => 0,
            SqlValue::Integer(_) | SqlValue::Real(_) => 8,
            SqlValue::Text(t) => t.len(),
            SqlValue::Blob(b) => b.len(),
        }
    }
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
