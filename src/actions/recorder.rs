//! Writes the audit trail (`actions`, `rule_runs`, `store`) in batched transactions, retrying a failed
//! commit so a busy or full disk delays the trail instead of losing it.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info};

use crate::event::RuleRun;
use crate::event::TimerRecord;
use crate::store::Store;
use crate::store::audit::{ActionRecord, AuditBatch, TimerOp};

/// Groups of records waiting for the recorder; when full, the rule thread and the actions stage wait.
/// The rule thread sends what a burst of events produced as one group (at most a record per rule run of
/// its `DRAIN` events, and what those runs persisted), the actions stage one record at a time: sending
/// every run's record alone was the rule thread's costliest step after Rhai itself (`perf`).
pub const CHANNEL_CAPACITY: usize = 512;
/// Most rows per transaction: a rule that reads every message records a run per message, and every
/// commit syncs the disk (see `ingest::MAX_BATCH`). Also closed by age, [`MAX_BATCH_AGE`].
const MAX_BATCH: usize = 4_000;
/// Longest a record waits before its batch is written.
const MAX_BATCH_AGE: Duration = Duration::from_millis(100);
/// How often a batch being filled takes the records that arrived (see [`Recorder::fill`]).
const GATHER_TICK: Duration = Duration::from_millis(10);
/// Pause between retries of a failed write.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Write attempts once the input is closed, before giving up on the last batch.
const ATTEMPTS_WHEN_STOPPING: u32 = 3;

/// One row for the audit trail.
#[derive(Debug)]
pub enum Record {
    Action(ActionRecord),
    Run(RuleRun),
    Store {
        key: String,
        value: String,
    },
    TimerSet(TimerRecord),
    TimerDone(i64),
    TriggerRan {
        rule: String,
        trigger: String,
        ts: i64,
    },
    RelayState {
        name: String,
        state: crate::gpio::model::RelayState,
    },
}

/// The recorder stage. Ends when its input closes, after writing what it holds.
pub struct Recorder {
    pub store: Store,
    pub input: mpsc::Receiver<Vec<Record>>,
}

impl Recorder {
    /// Batches and writes until the input closes.
    pub async fn run(mut self) {
        let mut open = true;
        while open {
            let mut batch = AuditBatch::default();
            open = self.fill(&mut batch).await;
            if !batch.is_empty() {
                self.write(&batch, !open).await;
            }
        }
        info!("recorder stopped");
    }

    /// Waits for a first record, then takes what arrived every [`GATHER_TICK`] until the batch is full or
    /// [`MAX_BATCH_AGE`] old. Waiting on the channel for each record instead would wake the recorder for
    /// every rule run (a futex and a context switch each), which at full message rate cost more CPU
    /// than writing the rows.
    async fn fill(&mut self, batch: &mut AuditBatch) -> bool {
        let Some(first) = self.input.recv().await else {
            return false;
        };
        first.into_iter().for_each(|record| add(batch, record));
        let deadline = Instant::now() + MAX_BATCH_AGE;
        loop {
            while batch.len() < MAX_BATCH {
                match self.input.try_recv() {
                    Ok(records) => records.into_iter().for_each(|record| add(batch, record)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                }
            }
            let now = Instant::now();
            if batch.len() >= MAX_BATCH || now >= deadline {
                return true;
            }
            tokio::time::sleep_until((now + GATHER_TICK).min(deadline)).await;
        }
    }

    async fn write(&self, batch: &AuditBatch, stopping: bool) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.store.write_audit(batch).await {
                Ok(()) => return,
                Err(e) if stopping && attempts >= ATTEMPTS_WHEN_STOPPING => {
                    error!(
                        "cannot record {} rows of rule activity while stopping: {e}; they are lost",
                        batch.len()
                    );
                    return;
                }
                Err(e) => {
                    if attempts == 1 {
                        let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
                        error!("cannot record rule activity: {e}{hint}; retrying");
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

/// Adds one record to a batch.
pub fn add(batch: &mut AuditBatch, record: Record) {
    match record {
        Record::Action(action) => batch.actions.push(action),
        Record::Run(run) => batch.runs.push(run),
        Record::Store { key, value } => {
            batch.store.insert(key, value);
        }
        Record::TimerSet(timer) => batch.timers.push(TimerOp::Set(timer)),
        Record::TimerDone(id) => batch.timers.push(TimerOp::Done(id)),
        Record::RelayState { name, state } => {
            batch.relays.insert(name, state);
        }
        Record::TriggerRan { rule, trigger, ts } => {
            let last = batch.trigger_runs.entry((rule, trigger)).or_insert(ts);
            *last = (*last).max(ts);
        }
    }
}
