//! The recorder stage: turns what rule runs produced (every [`Output`] but the actions still to be
//! performed) into the trace (`actions`, `rule_runs`) and the rules' durable state (`store`, `timers`,
//! `trigger_runs`, `relays`), and writes them in batched transactions, retrying a failed commit so a
//! busy or full disk delays the trail instead of losing it. It owns the conversion from a rule's output
//! to the store's rows: rules know nothing of the rows, the store nothing of rules' outputs.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info};

use bytes::Bytes;

use crate::event::{Action, Output};
use crate::store::state::TimerOp;
use crate::store::trace::ActionRecord;
use crate::store::{RecordBatch, Store};

/// Groups of outputs waiting for the recorder; when full, the rule thread and the actions stage wait.
/// The rule thread sends what a burst of events produced as one group (at most a record per rule run of
/// its `DRAIN` events, and what those runs persisted), the actions stage one record at a time: sending
/// every run's record alone was the rule thread's costliest step after Rhai itself (`perf`).
pub const CHANNEL_CAPACITY: usize = 512;
/// Most rows per transaction (see `ingest::MAX_BATCH`).
const MAX_BATCH: usize = 4_000;
/// Longest a batch holding actions or rules' state (`store`, timers, relay states) waits before it is
/// written: that state must survive a restart soon after it changed.
const MAX_BATCH_AGE: Duration = Duration::from_millis(100);
/// How often a batch being filled from a busy stream takes the records that arrived (see
/// [`Recorder::fill`]).
const GATHER_TICK: Duration = Duration::from_millis(10);
/// Groups found at once that make the stream busy: gathered by [`GATHER_TICK`] rather than woken for
/// one by one.
const BUSY: usize = 4;
/// Pause between retries of a failed write.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Write attempts once the input is closed, before giving up on the last batch.
const ATTEMPTS_WHEN_STOPPING: u32 = 3;

/// The recorder stage. Ends when its input closes, after writing what it holds.
pub struct Recorder {
    pub store: Store,
    pub input: mpsc::Receiver<Vec<Output>>,
    /// `database.commit_interval`: how long a batch of rule runs alone gathers. A rule that reads every
    /// message records a run per message; written every 100 ms, those runs rewrote the pages of
    /// `rule_run_rows` and its index ten times a second, more than the messages themselves cost.
    pub commit_interval: Duration,
}

impl Recorder {
    /// The recorder writing to `store` what arrives on `input`.
    pub fn new(store: Store, input: mpsc::Receiver<Vec<Output>>, commit_interval: Duration) -> Recorder {
        Recorder {
            store,
            input,
            commit_interval,
        }
    }

    /// Batches and writes until the input closes.
    pub async fn run(mut self) {
        let mut open = true;
        while open {
            let mut batch = RecordBatch::default();
            open = self.fill(&mut batch).await;
            if !batch.is_empty() {
                self.write(&batch, !open).await;
            }
        }
        info!("recorder stopped");
    }

    /// Waits for a first record, then gathers more until the batch is full, or [`MAX_BATCH_AGE`] old
    /// once it holds anything but rule runs, or [`Recorder::commit_interval`] old. A slow stream wakes
    /// it once per group of records, a busy one every [`GATHER_TICK`]: waiting on the channel for each
    /// group of a flood would wake the recorder for every rule run (a futex and a context switch
    /// each), which at full message rate cost more CPU than writing the rows.
    async fn fill(&mut self, batch: &mut RecordBatch) -> bool {
        let Some(first) = self.input.recv().await else {
            return false;
        };
        first.into_iter().for_each(|output| add(batch, output));
        let opened = Instant::now();
        loop {
            let mut groups = 0;
            while batch.len() < MAX_BATCH {
                match self.input.try_recv() {
                    Ok(outputs) => {
                        groups += 1;
                        outputs.into_iter().for_each(|output| add(batch, output));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                }
            }
            let age = if batch.is_runs_only() {
                self.commit_interval
            } else {
                MAX_BATCH_AGE.min(self.commit_interval)
            };
            let deadline = opened + age;
            let now = Instant::now();
            if batch.len() >= MAX_BATCH || now >= deadline {
                return true;
            }
            if groups >= BUSY {
                tokio::time::sleep_until((now + GATHER_TICK).min(deadline)).await;
                continue;
            }
            tokio::select! {
                outputs = self.input.recv() => match outputs {
                    Some(outputs) => outputs.into_iter().for_each(|output| add(batch, output)),
                    None => return false,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn write(&self, batch: &RecordBatch, stopping: bool) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.store.write_records(batch).await {
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

/// Adds what a rule run produced to a batch (an action: once it was performed).
pub fn add(batch: &mut RecordBatch, output: Output) {
    match output {
        Output::Action { rule, ts, action } => batch.actions.push(action_row(&rule, ts, action)),
        Output::Run(run) => batch.runs.push(run),
        Output::StoreSet { key, value } => {
            batch.store.insert(key, value);
        }
        Output::TimerSet(timer) => batch.timers.push(TimerOp::Set(timer)),
        Output::TimerDone { id } => batch.timers.push(TimerOp::Done(id)),
        Output::RelayState { name, state } => {
            batch.relays.insert(name, state);
        }
        Output::TriggerRan { rule, trigger, ts } => {
            let last = batch
                .trigger_runs
                .entry((rule.to_string(), trigger))
                .or_insert(ts);
            *last = (*last).max(ts);
        }
        Output::TopicWatch(watch) => {
            batch.topic_watches.insert(
                (watch.rule, watch.trigger, watch.topic),
                Some((watch.since, watch.fired)),
            );
        }
        Output::TopicWatchDone { rule, trigger, topic } => {
            batch.topic_watches.insert((rule, trigger, topic), None);
        }
    }
}

/// The `actions` row of a performed action.
fn action_row(rule: &str, ts: i64, action: Action) -> ActionRecord {
    match action {
        Action::Publish { topic, payload, .. } => ActionRecord {
            ts,
            rule: rule.to_string(),
            kind: "publish",
            target: topic,
            value: payload,
            // Rules have names; the engine's own publishes (state, discovery) have none.
            cause: if rule.is_empty() { "engine" } else { "rule" },
        },
        Action::Relay { name, on, cause } => ActionRecord {
            ts,
            rule: rule.to_string(),
            kind: "relay",
            target: name,
            value: Bytes::from_static(if on { b"ON" } else { b"OFF" }),
            cause,
        },
    }
}
