//! The outbox of notifications and HTTP calls (`deliveries`): what rules asked to have sent, kept in
//! order until it was delivered, refused or too old. See [`crate::outbound`] for when rows are written
//! and removed. A notification's row names its channel and never holds the channel's secrets.

use bytes::Bytes;
use sqlx::Row;

use super::{Store, StoreError};

/// One row of `deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    /// Delivery order; `0` for a row not yet written.
    pub id: i64,
    /// When the rule asked, unix ms.
    pub ts: i64,
    pub rule: String,
    /// `notify` or `http`.
    pub kind: String,
    /// The request as JSON: the channel and notification, or the method, URL and headers.
    pub request: String,
    /// The body of an HTTP call; empty for a notification.
    pub body: Bytes,
}

impl Store {
    /// Appends a delivery; returns its id.
    pub async fn push_delivery(&self, row: &StoredDelivery) -> Result<i64, StoreError> {
        let inserted =
            sqlx::query("INSERT INTO deliveries (ts, rule, kind, request, body) VALUES (?, ?, ?, ?, ?)")
                .bind(row.ts)
                .bind(row.rule.as_str())
                .bind(row.kind.as_str())
                .bind(row.request.as_str())
                .bind(&row.body[..])
                .execute(&self.pool)
                .await?;
        Ok(inserted.last_insert_rowid())
    }

    /// Every waiting delivery, oldest first.
    pub async fn deliveries(&self) -> Result<Vec<StoredDelivery>, StoreError> {
        let rows = sqlx::query("SELECT id, ts, rule, kind, request, body FROM deliveries ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let body: Vec<u8> = row.try_get(5)?;
                Ok(StoredDelivery {
                    id: row.try_get(0)?,
                    ts: row.try_get(1)?,
                    rule: row.try_get(2)?,
                    kind: row.try_get(3)?,
                    request: row.try_get(4)?,
                    body: Bytes::from(body),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Removes a finished delivery.
    pub async fn remove_delivery(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM deliveries WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
