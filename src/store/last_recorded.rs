//! The latest time the history holds. At start, a clock behind it has been set back since (a Pi without
//! a real-time clock boots on the time it last saved), which the engine must know before it re-arms
//! what the last run left pending ([`crate::scheduler::rebase`]).

use super::{Store, StoreError};

impl Store {
    /// The newest time of the last message, rule run and action, relay change and catch-up run
    /// (unix ms); `None` for an empty history. Each table's last row by id, not a scan.
    pub async fn last_recorded(&self) -> Result<Option<i64>, StoreError> {
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT max(ts) FROM (
                 SELECT (SELECT ts FROM message_rows ORDER BY id DESC LIMIT 1) AS ts
                 UNION ALL SELECT (SELECT ts FROM rule_run_rows ORDER BY id DESC LIMIT 1)
                 UNION ALL SELECT (SELECT ts FROM actions ORDER BY id DESC LIMIT 1)
                 UNION ALL SELECT max(since) FROM relays
                 UNION ALL SELECT max(last_run) FROM trigger_runs
             )",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(latest)
    }
}
