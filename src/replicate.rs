//! Replication of the history to PostgreSQL (`history.replicate`): one stage that copies `messages`,
//! `actions` and `rule_runs` from the local SQLite history to a shared database, in batches, in id order,
//! each row tagged with the site.
//!
//! Invariants:
//! - Ingest and rules never wait on it: it reads on its own read-only connection and writes only its
//!   high-water marks (one tiny statement per batch) on the shared writer.
//! - Each row arrives once: a table's mark moves only after the server committed the batch, and the
//!   server ignores rows it has (keyed by site and id), so a crash in between repeats nothing.
//! - An unreachable server or a refused login is logged with the setting to check and retried with
//!   backoff, for as long as it takes; the engine meanwhile stores locally, and retention keeps what
//!   was not copied yet (see [`crate::housekeeping`]).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ReplicateConfig;
use crate::store::postgres::{PgError, PgHistory};
use crate::store::replica::Table;
use crate::store::{HistoryReader, Store, StoreError};

/// Rows per batch (and per server transaction).
pub const BATCH_ROWS: i64 = 2_000;
/// Pause when every table is copied, before looking for new rows.
pub const IDLE_PAUSE: Duration = Duration::from_millis(500);
/// First wait after a failure; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A batch the server has not committed in this time counts as failed (a network that drops packets
/// rather than refusing connections would otherwise hold the stage forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A progress line after this many rows, for a long catch-up.
const PROGRESS_EVERY: u64 = 100_000;

/// Why copying stopped.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Remote(#[from] PgError),
    #[error("the local history: {0}")]
    Local(#[from] StoreError),
    #[error("the server did not commit a batch within {0:?}")]
    Timeout(Duration),
}

/// The replication stage. Build it with [`Replicator::new`]; `run` it until shutdown.
pub struct Replicator {
    store: Store,
    reader: HistoryReader,
    config: ReplicateConfig,
}

impl Replicator {
    /// Replication of `store` (whose file is read on a connection of its own) as `config` says.
    pub async fn new(store: Store, config: &ReplicateConfig) -> Result<Replicator, StoreError> {
        let reader = HistoryReader::open(store.path()).await?;
        Ok(Replicator {
            store,
            reader,
            config: config.clone(),
        })
    }

    /// Connects, copies, and on any failure waits and starts again, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let failure = match PgHistory::connect(&self.config).await {
                Ok(mut server) => {
                    info!(
                        target_db = %self.config.target,
                        site = %self.config.site,
                        "replicating the history to PostgreSQL"
                    );
                    let result = self.copy(&mut server, &shutdown, &mut backoff).await;
                    server.close().await;
                    match result {
                        Ok(()) => return,
                        Err(failure) => failure,
                    }
                }
                Err(e) => Failure::Remote(e),
            };
            let setting = match &failure {
                Failure::Remote(e) => e.setting(),
                _ => "history.replicate.url",
            };
            error!(
                "cannot replicate to PostgreSQL at {} ({setting}): {failure}; retrying in {:.1}s \
                 (the engine keeps storing locally)",
                self.config.target,
                backoff.as_secs_f64()
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Copies every table above its mark until `shutdown` (Ok) or a failure.
    async fn copy(
        &self,
        server: &mut PgHistory,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), Failure> {
        let mut marks = [0; 3];
        for (mark, table) in marks.iter_mut().zip(Table::ALL) {
            *mark = self.store.replication_mark(table).await?;
        }
        let started = Instant::now();
        let mut copied: u64 = 0;
        let mut next_progress = PROGRESS_EVERY;
        loop {
            let mut this_round = 0;
            for (mark, table) in marks.iter_mut().zip(Table::ALL) {
                let batch = self.reader.replica_batch(table, *mark, BATCH_ROWS).await?;
                let Some(last) = batch.last_id() else {
                    continue;
                };
                tokio::select! {
                    written = tokio::time::timeout(WRITE_TIMEOUT, server.write(&batch)) => {
                        written.map_err(|_| Failure::Timeout(WRITE_TIMEOUT))?.map_err(PgError::from)?;
                    }
                    // An unfinished batch is rolled back by the server and sent again next time.
                    _ = shutdown.cancelled() => return Ok(()),
                }
                self.store.set_replication_mark(table, last).await?;
                *mark = last;
                this_round += batch.len();
                // The server took a batch: the next failure starts waiting short again.
                *backoff = MIN_BACKOFF;
            }
            copied += this_round as u64;
            if copied >= next_progress {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(
                    rows = copied,
                    rows_per_s = (copied as f64 / secs) as u64,
                    "replication catching up"
                );
                next_progress += PROGRESS_EVERY;
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if this_round == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_PAUSE) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// Warns once at start when replication is off but an earlier run left marks (nothing to do, but an
/// owner who removed the setting by mistake should hear that retention no longer waits for it).
pub async fn note_unconfigured(store: &Store) {
    if let Ok(mark) = store.replication_mark(Table::Messages).await
        && mark > 0
    {
        warn!(
            "history.replicate is not set: this history was replicated before (up to message {mark}); \
             retention no longer waits for replication"
        );
    }
}
