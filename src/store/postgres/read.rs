//! One site's history read back from PostgreSQL, for `homewright plot` and `homewright replay` with
//! `--db postgres://...`: the same questions the local [`HistoryReader`](crate::store::HistoryReader)
//! answers, asked of the rows replication copied, on a session that cannot write.

use std::str::FromStr;

use bytes::Bytes;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{CONNECT_TIMEOUT, describe};
use crate::event::Message;

/// Whether `db` (a `--db` argument) names a PostgreSQL database rather than a file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Why a site's history cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("cannot read the URL: {0}")]
    Url(sqlx::Error),
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
    /// No such site, or none named where several share the database.
    #[error("{0}")]
    Site(String),
}

/// A site of the shared history, on a read-only session.
pub struct PgSiteReader {
    pool: PgPool,
    pub site: String,
    pub target: String,
}

impl PgSiteReader {
    /// Connects to `url` and picks `site`: when none is given, the only site the database holds.
    pub async fn open(url: &str, site: Option<&str>) -> Result<PgSiteReader, ReadError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(ReadError::Url)?
            .application_name("homewright")
            // Reading only: the server refuses anything else on this session.
            .options([("default_transaction_read_only", "on")]);
        let target = describe(&options);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| ReadError::Connect {
                target: target.clone(),
                source,
            })?;
        let sites: Vec<String> = match sqlx::query_scalar("SELECT DISTINCT site FROM topics ORDER BY site")
            .fetch_all(&pool)
            .await
        {
            Ok(sites) => sites,
            // undefined_table: nothing was ever replicated into this database.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let site = match (site, sites.as_slice()) {
            (Some(site), _) if sites.iter().any(|s| s == site) => site.to_string(),
            (_, []) => {
                return Err(ReadError::Site(format!(
                    "{target} holds no replicated history (set history.replicate in an engine's config)"
                )));
            }
            (Some(site), _) => {
                return Err(ReadError::Site(format!(
                    "no site `{site}` in {target}; it holds: {}",
                    sites.join(", ")
                )));
            }
            (None, [only]) => only.clone(),
            (None, _) => {
                return Err(ReadError::Site(format!(
                    "{target} holds several sites: name one with --site ({})",
                    sites.join(", ")
                )));
            }
        };
        Ok(PgSiteReader { pool, site, target })
    }

    /// `(ts, payload)` of `topic` in [`from`, `to`), oldest first.
    pub async fn payloads(
        &self,
        topic: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT ts, coalesce(convert_to(payload, 'UTF8'), payload_bytes) FROM message_rows \
             WHERE site = $1 AND topic = $2 AND ts >= $3 AND ts < $4 ORDER BY ts, id",
        )
        .bind(&self.site)
        .bind(topic)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get::<Option<Vec<u8>>, _>(1)?.unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Whether the site has ever stored a message on `topic`.
    pub async fn knows_topic(&self, topic: &str) -> Result<bool, sqlx::Error> {
        let known = sqlx::query("SELECT 1 FROM topics WHERE site = $1 AND topic = $2")
            .bind(&self.site)
            .bind(topic)
            .fetch_optional(&self.pool)
            .await?;
        Ok(known.is_some())
    }

    /// How many messages the site received in [`since`, `until`).
    pub async fn count_messages(&self, since: i64, until: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM message_rows WHERE site = $1 AND ts >= $2 AND ts < $3")
            .bind(&self.site)
            .bind(since)
            .bind(until)
            .fetch_one(&self.pool)
            .await
    }

    /// The id just below the site's first message in [`since`, `until`), to page from.
    pub async fn id_before(&self, since: i64, until: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT coalesce(min(id), 1) - 1 FROM message_rows WHERE site = $1 AND ts >= $2 AND ts < $3",
        )
        .bind(&self.site)
        .bind(since)
        .bind(until)
        .fetch_one(&self.pool)
        .await
    }

    /// Up to `limit` of the site's messages in [`since`, `until`) with an id above `after_id`, in
    /// arrival order (the site's ids), each with its id.
    pub async fn messages_page(
        &self,
        since: i64,
        until: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Message)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT ts, topic, coalesce(convert_to(payload, 'UTF8'), payload_bytes), qos, retain, id \
             FROM message_rows WHERE site = $1 AND id > $2 AND ts >= $3 AND ts < $4 ORDER BY id LIMIT $5",
        )
        .bind(&self.site)
        .bind(after_id)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(5)?, message_of(r)?))).collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn message_of(row: &PgRow) -> Result<Message, sqlx::Error> {
    let topic: String = row.try_get(1)?;
    let payload: Option<Vec<u8>> = row.try_get(2)?;
    Ok(Message {
        ts: row.try_get(0)?,
        topic: topic.into(),
        payload: Bytes::from(payload.unwrap_or_default()),
        qos: u8::try_from(row.try_get::<i16, _>(3)?).unwrap_or(0),
        retain: row.try_get::<i16, _>(4)? != 0,
        dup: false,
    })
}
