//! Housekeeping of the history while the service runs: the trace of rule runs is kept for
//! `database.rule_runs_keep` (they are written at message rate and only recent ones answer "why?").
//! Deleted in small batches, so ingest never waits long for the write lock. The query planner's
//! statistics are refreshed on the same beat, as SQLite recommends for a long-lived connection.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::event::now_millis;
use crate::store::Store;

/// How often old rule runs are purged.
const INTERVAL: Duration = Duration::from_secs(3_600);
/// Rows per DELETE: one short transaction each.
const BATCH: i64 = 5_000;

/// The purge stage. Ends at shutdown.
pub struct Maintenance {
    pub store: Store,
    pub rule_runs_keep: Duration,
}

impl Maintenance {
    /// Purges at start and then every [`INTERVAL`], until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let keep = i64::try_from(self.rule_runs_keep.as_millis()).unwrap_or(i64::MAX);
            let before = now_millis().saturating_sub(keep);
            let mut purged = 0;
            loop {
                match self.store.purge_rule_runs(before, BATCH).await {
                    Ok(0) => break,
                    Ok(n) => purged += n,
                    Err(e) => {
                        warn!("cannot purge old rule runs: {e}; trying again later");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            if purged > 0 {
                info!(purged, "old rule runs purged (database.rule_runs_keep)");
            }
            if let Err(e) = self.store.optimize(false).await {
                warn!("cannot refresh the query planner's statistics: {e}; trying again later");
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
