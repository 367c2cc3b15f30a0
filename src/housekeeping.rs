//! Housekeeping of the history while the service runs, one stage on one beat: shortly after start and
//! then every [`PURGE_INTERVAL`],
//! - the retention purge deletes messages older than `database.retention` allows for their topic (the
//!   first matching entry wins; no match keeps forever);
//! - the trace of rule runs is kept for `database.rule_runs_keep` (runs are written at message rate and
//!   only recent ones answer "why?");
//! - the query planner's statistics are refreshed, as SQLite recommends for a long-lived connection.
//!
//! Invariants:
//! - Ingest never waits long on it: every delete is a transaction of at most [`BATCH_ROWS`] messages
//!   (or [`RULE_RUN_BATCH_ROWS`] rule runs) on the shared writer connection, with a pause between
//!   batches in which a waiting commit gets its turn.
//! - The file stops growing once retention is reached: SQLite reuses freed pages, and since the file
//!   is created with `auto_vacuum = INCREMENTAL`, freed pages are also handed back to the file system,
//!   a few at a time, after each purge.
//! - While the history is replicated to PostgreSQL (`history.replicate`), no row the server has not
//!   committed is deleted: the purge stops at each table's high-water mark, and says so in the log.
//! - A failure (locked or full database) is logged and the purge tried again at the next interval; it
//!   never ends the service.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config;
use crate::event::now_millis;
use crate::mqtt::topic;
use crate::store::replica::Table;
use crate::store::{Store, StoreError};

/// Time between two purges. Retention is counted in days, so an hour late is nothing.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3_600);
/// How long after start the first purge begins: the engine first catches up with what the broker held.
pub const FIRST_PURGE_DELAY: Duration = Duration::from_secs(10);
/// Messages per delete transaction: a few milliseconds of the writer, even on an SD card.
pub const BATCH_ROWS: i64 = 1_000;
/// Rule runs per delete transaction: their rows are a fraction of a message's.
pub const RULE_RUN_BATCH_ROWS: i64 = 5_000;
/// Pause between two batches, so a commit of received messages waiting for the writer goes first.
pub const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// Pages handed back to the file system per step (4 MiB with SQLite's 4 KiB pages).
const VACUUM_PAGES: u32 = 1_024;
/// A progress line after this many deleted rows, for a first purge of a large history.
const PROGRESS_EVERY: u64 = 100_000;

/// What one purge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub deleted: u64,
    /// Topics with expired messages kept because they are not yet replicated.
    pub held_back: u64,
    pub pages_freed: i64,
}

/// How long messages on `topic` are kept under `rules`: the first matching rule's `keep`, or forever.
pub fn keep_for(rules: &[config::Retention], topic: &str) -> Option<Duration> {
    rules
        .iter()
        .find(|rule| topic::matches(topic, &rule.topics))
        .map(|rule| rule.keep)
}

/// The housekeeping stage. Build it from `database`'s settings; `run` it until shutdown.
pub struct Housekeeping {
    pub store: Store,
    /// `database.retention`: empty keeps every message.
    pub retention: Vec<config::Retention>,
    /// `database.rule_runs_keep`.
    pub rule_runs_keep: Duration,
    /// Whether `history.replicate` is on: then only replicated rows may go.
    pub replicating: bool,
}

impl Housekeeping {
    /// Housekeeping of `store` as `database` configures it.
    pub fn new(store: Store, config: &config::Config) -> Housekeeping {
        Housekeeping {
            store,
            retention: config.database.retention.clone(),
            rule_runs_keep: config.database.rule_runs_keep,
            replicating: config.replicate.is_some(),
        }
    }

    /// The highest id of `table` this purge may delete.
    async fn ceiling(&self, table: Table) -> Result<i64, StoreError> {
        if self.replicating {
            self.store.purge_ceiling(table).await
        } else {
            Ok(i64::MAX)
        }
    }

    /// Purges after [`FIRST_PURGE_DELAY`] and then every [`PURGE_INTERVAL`] until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if !self.retention.is_empty() {
            self.check_auto_vacuum().await;
        }
        let mut pause = FIRST_PURGE_DELAY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            self.round(&shutdown).await;
            pause = PURGE_INTERVAL;
        }
    }

    /// One round of every job; a failure is logged and the job tried again at the next round.
    async fn round(&self, shutdown: &CancellationToken) {
        let retry = PURGE_INTERVAL.as_secs() / 3_600;
        if !self.retention.is_empty()
            && let Err(e) = self.purge(shutdown).await
        {
            warn!("retention purge failed: {e}; trying again in {retry}h");
        }
        if let Err(e) = self.purge_rule_runs(shutdown).await {
            warn!("cannot purge old rule runs: {e}; trying again in {retry}h");
        }
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(e) = self.store.optimize(false).await {
            warn!("cannot refresh the query planner's statistics: {e}; trying again in {retry}h");
        }
    }

    async fn check_auto_vacuum(&self) {
        match self.store.auto_vacuum().await {
            Ok(2) => {}
            Ok(_) => info!(
                "{} was created without incremental auto_vacuum: old messages are deleted and their space reused, \
                 but the file does not shrink (to change that, stop the engine and run \
                 `sqlite3 FILE 'PRAGMA auto_vacuum = INCREMENTAL; VACUUM'` once)",
                self.store.path().display()
            ),
            Err(e) => debug!("cannot read auto_vacuum: {e}"),
        }
    }

    /// Deletes the rule runs older than `database.rule_runs_keep`, a batch at a time; returns how many
    /// went. Stops early on `shutdown`.
    pub async fn purge_rule_runs(&self, shutdown: &CancellationToken) -> Result<u64, StoreError> {
        let keep = i64::try_from(self.rule_runs_keep.as_millis()).unwrap_or(i64::MAX);
        let before = now_millis().saturating_sub(keep);
        let ceiling = self.ceiling(Table::RuleRuns).await?;
        let mut purged = 0;
        while !shutdown.is_cancelled() {
            let deleted = self
                .store
                .purge_rule_runs(before, ceiling, RULE_RUN_BATCH_ROWS)
                .await?;
            purged += deleted;
            if deleted < RULE_RUN_BATCH_ROWS as u64 {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        if purged > 0 {
            info!(purged, "old rule runs purged (database.rule_runs_keep)");
        }
        Ok(purged)
    }

    /// One retention purge over every topic, then hands freed pages back. Stops early on `shutdown`.
    pub async fn purge(&self, shutdown: &CancellationToken) -> Result<PurgeReport, StoreError> {
        let now = now_millis();
        let mut report = PurgeReport::default();
        let mut next_progress = PROGRESS_EVERY;
        let ceiling = self.ceiling(Table::Messages).await?;
        let mut held_back = 0;
        for topic in self.store.topics().await? {
            let Some(keep) = self.keep(&topic) else {
                continue;
            };
            let before = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            loop {
                if shutdown.is_cancelled() {
                    return Ok(report);
                }
                let deleted = self
                    .store
                    .purge_batch(&topic, before, ceiling, BATCH_ROWS)
                    .await?;
                report.deleted += deleted;
                if report.deleted >= next_progress {
                    info!(deleted = report.deleted, "retention purge in progress");
                    next_progress += PROGRESS_EVERY;
                }
                if deleted < BATCH_ROWS as u64 {
                    break;
                }
                tokio::time::sleep(BATCH_PAUSE).await;
            }
            if self.replicating && self.store.held_back(&topic, before, ceiling).await? {
                held_back += 1;
            }
        }
        if held_back > 0 {
            warn!(
                topics = held_back,
                "retention keeps messages that are not yet replicated to PostgreSQL (history.replicate): \
                 the file grows until replication catches up"
            );
        }
        report.held_back = held_back;
        report.pages_freed = self.vacuum(shutdown).await?;
        if report.deleted > 0 {
            info!(
                deleted = report.deleted,
                pages_freed = report.pages_freed,
                "retention purge done"
            );
        }
        Ok(report)
    }

    fn keep(&self, topic: &str) -> Option<Duration> {
        keep_for(&self.retention, topic)
    }

    /// Hands free pages back in steps, pausing between them like the deletes.
    async fn vacuum(&self, shutdown: &CancellationToken) -> Result<i64, StoreError> {
        let start = self.store.free_pages().await?;
        if start == 0 || self.store.auto_vacuum().await? != 2 {
            return Ok(0);
        }
        let mut left = start;
        while left > 0 && !shutdown.is_cancelled() {
            self.store.incremental_vacuum(VACUUM_PAGES).await?;
            let now_free = self.store.free_pages().await?;
            if now_free >= left {
                break; // nothing more could be freed
            }
            left = now_free;
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        Ok(start - left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_decides_and_no_match_keeps_forever() {
        let rule = |topics: &str, days: u64| config::Retention {
            topics: topics.into(),
            keep: Duration::from_secs(days * 86_400),
        };
        let rules = [rule("zigbee2mqtt/+/linkquality", 7), rule("zigbee2mqtt/#", 365)];
        let keep = |t: &str| keep_for(&rules, t).map(|k| k.as_secs() / 86_400);
        assert_eq!(keep("zigbee2mqtt/porch/linkquality"), Some(7));
        assert_eq!(keep("zigbee2mqtt/porch"), Some(365));
        assert_eq!(keep("homewright/status"), None);
    }
}
