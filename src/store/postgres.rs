//! The history on PostgreSQL: its schema (migrations of its own, `migrations/postgres/`), the writes of
//! replication (each batch in one transaction, idempotent, with the month partitions it needs), and
//! read-only SQL for `homewright query --db postgres://...`.
//!
//! TLS is sqlx's rustls with the `ring` provider (no OpenSSL): `history.replicate.tls` verifies the
//! server's certificate and name as `sslmode=verify-full` does, and a URL given to the commands can
//! ask for the same with `?sslmode=verify-full&sslrootcert=FILE`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{AssertSqlSafe, Column, Executor, Postgres, QueryBuilder, Row, SqlSafeStr, TypeInfo, ValueRef};

use super::query::{QueryError, QueryResult, SqlValue};
use super::replica::{Batch, Bytes};
use crate::config::{ReplicateConfig, TlsConfig};

pub mod read;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long connecting may take before the attempt counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
    #[error("cannot create the PostgreSQL schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl PgError {
    /// The setting to look at for this failure.
    pub fn setting(&self) -> &'static str {
        match self {
            // invalid_password (an unknown role or a refused host is the URL's: 28000)
            PgError::Sql(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => {
                "history.replicate.password"
            }
            PgError::Sql(sqlx::Error::Tls(_)) => "history.replicate.tls",
            // A refused certificate surfaces as the handshake's I/O error.
            PgError::Sql(sqlx::Error::Io(e))
                if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                "history.replicate.tls"
            }
            _ => "history.replicate.url",
        }
    }
}

/// Checks a `postgres://` URL and returns `user@host:port/database` for messages (never the password).
pub fn describe_url(url: &str) -> Result<String, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("not a PostgreSQL URL: write postgres://USER@HOST:PORT/DATABASE".into());
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| format!("cannot read the URL: {e}"))?;
    Ok(describe(&options))
}

pub(crate) fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

fn connect_options(url: &str, password: Option<&str>) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("homewright");
    Ok(match password {
        Some(p) => options.password(p),
        None => options,
    })
}

/// TLS required, the certificate chained to the configured CA and naming the URL's host.
fn with_tls(options: PgConnectOptions, tls: &TlsConfig) -> PgConnectOptions {
    let options = options
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert_from_pem(tls.ca.clone());
    match &tls.client {
        Some(client) => options
            .ssl_client_cert_from_pem(&client.chain)
            .ssl_client_key_from_pem(&client.key),
        None => options,
    }
}

/// `YYYYMM` of a unix-millisecond time, and the month's bounds in unix milliseconds.
fn month_of(ts: i64) -> (i32, i64, i64) {
    let time = Utc.timestamp_millis_opt(ts).single().unwrap_or_default();
    let (year, month) = (time.year(), time.month());
    let start = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis());
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let end = Utc
        .with_ymd_and_hms(ny, nm, 1, 0, 0, 0)
        .single()
        .map_or(i64::MAX, |t| t.timestamp_millis());
    (year * 100 + month as i32, start, end)
}

fn text_and_bytes(value: Option<&Bytes>) -> (Option<&str>, Option<&[u8]>) {
    match value {
        Some(Bytes::Text(t)) => (Some(t), None),
        Some(Bytes::Blob(b)) => (None, Some(b)),
        None => (None, None),
    }
}

/// One engine's connection to the shared history.
pub struct PgHistory {
    pool: PgPool,
    site: String,
    /// Month partitions known to exist (`YYYYMM`).
    months: HashSet<i32>,
    pub target: String,
}

impl PgHistory {
    /// Connects as `config` says and brings the schema up to date.
    pub async fn connect(config: &ReplicateConfig) -> Result<PgHistory, PgError> {
        let mut options = connect_options(config.url.expose(), config.password.as_ref().map(|p| p.expose()))?;
        if let Some(tls) = &config.tls {
            options = with_tls(options, tls);
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgHistory {
            pool,
            site: config.site.clone(),
            months: HashSet::new(),
            target: config.target.clone(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates the month partitions `batch` needs, and the one after the newest, ahead of its rows.
    async fn ensure_partitions(&mut self, batch: &Batch) -> Result<(), sqlx::Error> {
        let Batch::Messages(rows) = batch else {
            return Ok(());
        };
        let mut needed: BTreeSet<(i32, i64, i64)> = rows.iter().map(|r| month_of(r.ts)).collect();
        if let Some(&(_, _, end)) = needed.last() {
            needed.insert(month_of(end));
        }
        needed.retain(|(month, _, _)| !self.months.contains(month));
        if needed.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // Two engines may need the same month at once: one creates it, the other then finds it.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('homewright partitions'))")
            .await?;
        for (month, start, end) in &needed {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS message_rows_p{month} PARTITION OF message_rows \
                 FOR VALUES FROM ({start}) TO ({end})"
            );
            // Our own numbers, no user text.
            tx.execute(AssertSqlSafe(sql)).await?;
        }
        tx.commit().await?;
        self.months.extend(needed.iter().map(|(m, _, _)| *m));
        Ok(())
    }

    /// Writes `batch` in one transaction; rows the server already has are skipped.
    pub async fn write(&mut self, batch: &Batch) -> Result<(), sqlx::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_partitions(batch).await?;
        let site = self.site.as_str();
        let mut tx = self.pool.begin().await?;
        match batch {
            Batch::Messages(rows) => {
                let mut insert = QueryBuilder::<Postgres>::new(
                    "INSERT INTO message_rows (site, id, ts, topic, payload, payload_bytes, qos, retain, dup) ",
                );
                insert.push_values(rows, |mut b, r| {
                    let (text, bytes) = text_and_bytes(Some(&r.payload));
                    b.push_bind(site)
                        .push_bind(r.id)
                        .push_bind(r.ts)
                        .push_bind(r.topic.as_str())
                        .push_bind(text)
                        .push_bind(bytes)
                        .push_bind(r.qos as i16)
                        .push_bind(r.retain as i16)
                        .push_bind(r.dup as i16);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(&mut *tx).await?;
                // The newest row per topic in this batch moves `latest`.
                let mut newest: HashMap<&str, (i64, i64)> = HashMap::new();
                for r in rows {
                    newest.insert(r.topic.as_str(), (r.id, r.ts));
                }
                let mut upsert =
                    QueryBuilder::<Postgres>::new("INSERT INTO topics (site, topic, latest_id, latest_ts) ");
                upsert.push_values(&newest, |mut b, (topic, (id, ts))| {
                    b.push_bind(site).push_bind(*topic).push_bind(*id).push_bind(*ts);
                });
                upsert.push(
                    " ON CONFLICT (site, topic) DO UPDATE SET latest_id = excluded.latest_id, \
                     latest_ts = excluded.latest_ts WHERE excluded.latest_id > topics.latest_id",
                );
                upsert.build().execute(&mut *tx).await?;
            }
            Batch::Actions(rows) => {
                let mut insert = QueryBuilder::<Postgres>::new(
                    "INSERT INTO actions (site, id, ts, rule, kind, target, value, cause, value_bytes) ",
                );
                insert.push_values(rows, |mut b, r| {
                    let (text, bytes) = text_and_bytes(r.value.as_ref());
                    b.push_bind(site)
                        .push_bind(r.id)
                        .push_bind(r.ts)
                        .push_bind(r.rule.as_str())
                        .push_bind(r.kind.as_str())
                        .push_bind(r.target.as_str())
                        .push_bind(text)
                        .push_bind(r.cause.as_deref())
                        .push_bind(bytes);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            Batch::RuleRuns(rows) => {
                let mut insert = QueryBuilder::<Postgres>::new(
                    "INSERT INTO rule_runs (site, id, ts, rule, trigger, topic, duration_us, error, actions, late) ",
                );
                insert.push_values(rows, |mut b, r| {
                    b.push_bind(site)
                        .push_bind(r.id)
                        .push_bind(r.ts)
                        .push_bind(r.rule.as_str())
                        .push_bind(r.trigger.as_str())
                        .push_bind(r.topic.as_deref())
                        .push_bind(r.duration_us)
                        .push_bind(r.error.as_deref())
                        .push_bind(r.actions)
                        .push_bind(r.late as i16);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await
    }
}

/// Runs `sql` in a READ ONLY transaction on the database at `url`: a statement that would change it
/// is refused by the server. One statement only (the extended protocol), so it cannot end the
/// transaction and go on writing.
pub async fn query_read_only(url: &str, sql: &str, timeout: Duration) -> Result<QueryResult, QueryError> {
    let options =
        connect_options(url, None).map_err(|e| QueryError::Sql(format!("cannot read the URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(|e| QueryError::Sql(format!("cannot connect to {}: {e}", describe(&options))))?;
    let mut tx = pool.begin().await.map_err(pg_error)?;
    tx.execute("SET TRANSACTION READ ONLY").await.map_err(pg_error)?;
    tx.execute(AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    )))
    .await
    .map_err(pg_error)?;
    let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
    let columns = match rows.first() {
        Some(row) => row.columns().iter().map(|c| c.name().to_string()).collect(),
        None => match tx.describe(AssertSqlSafe(sql.to_string()).into_sql_str()).await {
            Ok(d) => d.columns().iter().map(|c| c.name().to_string()).collect(),
            Err(_) => Vec::new(),
        },
    };
    let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
    let _ = tx.rollback().await;
    pool.close().await;
    Ok(QueryResult { columns, rows })
}

fn pg_error(error: sqlx::Error) -> QueryError {
    if let sqlx::Error::Database(e) = &error {
        match e.code().as_deref() {
            // read_only_sql_transaction
            Some("25006") => return QueryError::ReadOnly(e.message().to_string()),
            // query_canceled (statement_timeout)
            Some("57014") => return QueryError::Interrupted,
            _ => {}
        }
    }
    QueryError::from(error)
}

/// Decodes the cells by PostgreSQL type; a type without a plain form asks for a cast.
fn decode_row(row: &PgRow) -> Result<Vec<SqlValue>, QueryError> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(QueryError::from)?;
            if raw.is_null() {
                return Ok(SqlValue::Null);
            }
            let kind = raw.type_info().name().to_string();
            let cell = |e: sqlx::Error| QueryError::from(e);
            Ok(match kind.as_str() {
                "INT8" => SqlValue::Integer(row.try_get(i).map_err(cell)?),
                "INT4" => SqlValue::Integer(row.try_get::<i32, _>(i).map_err(cell)?.into()),
                "INT2" => SqlValue::Integer(row.try_get::<i16, _>(i).map_err(cell)?.into()),
                "BOOL" => SqlValue::Integer(row.try_get::<bool, _>(i).map_err(cell)?.into()),
                "FLOAT8" => SqlValue::Real(row.try_get(i).map_err(cell)?),
                "FLOAT4" => SqlValue::Real(row.try_get::<f32, _>(i).map_err(cell)?.into()),
                "NUMERIC" => {
                    let bytes = raw.as_bytes().map_err(|e| QueryError::Sql(e.to_string()))?;
                    SqlValue::Real(numeric_to_f64(bytes))
                }
                "BYTEA" => SqlValue::Blob(row.try_get(i).map_err(cell)?),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => SqlValue::Text(row.try_get(i).map_err(cell)?),
                "JSON" | "JSONB" => {
                    let bytes = raw.as_bytes().map_err(|e| QueryError::Sql(e.to_string()))?;
                    // JSONB's binary form is a version byte, then the text.
                    let text = if kind == "JSONB" { bytes.get(1..).unwrap_or_default() } else { bytes };
                    SqlValue::Text(String::from_utf8_lossy(text).into_owned())
                }
                other => {
                    let name = row.columns().get(i).map(|c| c.name().to_string()).unwrap_or_default();
                    return Err(QueryError::Sql(format!(
                        "column `{name}` is of type {other}, which query cannot show: cast it, e.g. {name}::text"
                    )));
                }
            })
        })
        .collect()
}

/// PostgreSQL's binary NUMERIC: digit count, weight, sign, scale, then base-10000 digits.
fn numeric_to_f64(bytes: &[u8]) -> f64 {
    let word = |i: usize| -> i64 {
        bytes
            .get(i * 2..i * 2 + 2)
            .map_or(0, |b| i64::from(i16::from_be_bytes([b[0], b[1]])))
    };
    let (count, weight, sign) = (word(0), word(1), word(2) as u16);
    if sign == 0xC000 {
        return f64::NAN;
    }
    let mut value = 0.0;
    for k in 0..count.max(0) {
        let digit = word(4 + k as usize) as f64;
        value += digit * 10_000f64.powi((weight - k) as i32);
    }
    if sign == 0x4000 { -value } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        // 2026-12-04T21:00:00Z
        let (month, start, end) = month_of(1_796_418_000_000);
        assert_eq!(month, 202612);
        assert_eq!(start, 1_796_083_200_000); // 2026-12-01
        assert_eq!(end, 1_798_761_600_000); // 2027-01-01
    }

    #[test]
    fn a_url_is_described_without_its_password() {
        let d = describe_url("postgres://hw:secret@nas:5433/history").unwrap();
        assert_eq!(d, "hw@nas:5433/history");
        assert!(
            describe_url("mysql://nas/history")
                .unwrap_err()
                .contains("postgres://")
        );
    }

    #[test]
    fn numeric_decodes() {
        // 12.5 = digits [12, 5000], weight 0, scale 1
        let bytes = [0, 2, 0, 0, 0, 0, 0, 1, 0, 12, 0x13, 0x88];
        assert_eq!(numeric_to_f64(&bytes), 12.5);
    }
}
