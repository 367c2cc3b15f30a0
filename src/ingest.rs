//! Ingest: stores every received message in batched transactions and acknowledges QoS 1/2 messages to
//! the broker only after their batch is committed, in the order they were received.
//!
//! That ordering is the whole durability promise: a crash at any moment loses nothing the broker handed
//! over, because whatever was not yet committed was not yet acknowledged and is redelivered. The price is
//! a possible duplicate when the crash falls between commit and acknowledgement.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::mqtt::subscriber::{Acker, Incoming};
use crate::store::Store;

/// Most messages per transaction. Each commit rewrites every index page it touched (one per topic in
/// the batch) and syncs the disk, so large batches keep the bytes written per message, an SD card's
/// wear and the CPU the kernel spends writing low. A batch is also closed by age ([`MAX_BATCH_AGE`]),
/// so this many only gather at 80,000 messages a second or more.
pub const MAX_BATCH: usize = 4_000;

/// Most messages awaiting an acknowledgement (QoS 1/2) per transaction. Acknowledgements wait for the
/// commit, so a batch that holds the broker's whole in-flight window (the 1,000 the README recommends
/// for Mosquitto) would leave the broker idle during every commit; half of it lets the broker send the
/// next half meanwhile.
pub const MAX_UNACKED_PER_BATCH: usize = 500;

/// Longest a received message waits for its batch to fill before it is committed (and acknowledged).
pub const MAX_BATCH_AGE: Duration = Duration::from_millis(50);

/// How often a batch being filled looks for more messages; a tick in which none came closes it early
/// (see [`fill`]).
pub const GATHER_TICK: Duration = Duration::from_millis(1);

/// Messages between the subscriber and ingest: two batches, so the stream keeps coming while one
/// commits; beyond that the subscriber waits, and so does the broker's TCP stream.
pub const CHANNEL_CAPACITY: usize = 2 * MAX_BATCH;

/// Pauses between retries of a failed commit (a full disk, a locked file).
const RETRY_START: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Commit attempts while stopping before giving up; what is not committed is not acknowledged either,
/// so the broker redelivers it to the next run.
const ATTEMPTS_WHEN_STOPPING: u32 = 3;

/// The ingest stage. Ends when its input closes, after committing and acknowledging what it holds.
pub struct Ingest {
    pub store: Store,
    pub acker: Acker,
    pub input: mpsc::Receiver<Incoming>,
}

impl Ingest {
    /// Batches, commits and acknowledges until the input closes.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stored: u64 = 0;
        loop {
            let open = fill(&mut self.input, &mut batch).await;
            if !batch.is_empty() {
                if self.commit(&batch, !open).await {
                    stored += batch.iter().filter(|i| i.message.is_some()).count() as u64;
                    self.acknowledge(&mut batch);
                }
                batch.clear();
            }
            if !open {
                break;
            }
        }
        // Dropping the acker (with self) tells the subscriber that every acknowledgement is queued.
        info!(
            stored,
            "ingest stopped: every received message is committed and acknowledged"
        );
    }

    /// Commits `batch`, retrying with backoff: a transient error (disk full, database locked) stalls
    /// ingest, and with it the acknowledgements, but never ends the service or drops a message.
    async fn commit(&self, batch: &[Incoming], stopping: bool) -> bool {
        let messages: Vec<_> = batch.iter().filter_map(|i| i.message.as_ref()).collect();
        if messages.is_empty() {
            return true;
        }
        let mut pause = RETRY_START;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.store.insert_messages(&messages).await {
                Ok(()) => {
                    crate::metrics::METRICS.committed(messages.iter().map(|m| m.ts));
                    if attempts > 1 {
                        info!("storing messages works again after {attempts} attempts");
                    }
                    return true;
                }
                // The input closes when the engine stops: a fault that outlasts the stop must not hold
                // it up, since the broker keeps what is not acknowledged.
                Err(e) if (stopping || self.input.is_closed()) && attempts >= ATTEMPTS_WHEN_STOPPING => {
                    error!(
                        "cannot store {} messages while stopping: {e}; they were not acknowledged and the broker will redeliver them",
                        batch.len()
                    );
                    return false;
                }
                Err(e) => {
                    crate::metrics::METRICS.store_errors.add(1);
                    if attempts == 1 {
                        let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
                        error!(
                            "cannot store {} received messages in {}: {e}{hint}; not acknowledging them, so the broker keeps them; retrying",
                            batch.len(),
                            self.store.path().display()
                        );
                    } else {
                        debug!("store retry {attempts} failed: {e}");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn acknowledge(&self, batch: &mut Vec<Incoming>) {
        let tokens: Vec<_> = batch.drain(..).filter_map(|incoming| incoming.ack).collect();
        if let Err(e) = self.acker.ack(tokens) {
            // Only when the connection is gone; the broker redelivers, and we store a duplicate.
            warn!("cannot acknowledge stored messages: {e}");
        }
    }
}

/// Waits for a first message, then gathers more while they keep coming: the batch closes when it is
/// full (see [`MAX_UNACKED_PER_BATCH`] too), when it is [`MAX_BATCH_AGE`] old, or when a [`GATHER_TICK`]
/// passed without a new message.
/// Closing on a quiet tick matters because the broker stops sending once its in-flight window of
/// unacknowledged messages is full (Mosquitto's default is 20): waiting out the whole age then would cap
/// ingest at one window per 50 ms. Returns false once the input is closed (the batch holds whatever
/// came before).
///
/// Between ticks it takes whatever has arrived instead of waiting on the channel for each message:
/// ingest stores faster than messages arrive, so waiting on the channel would wake it (a futex and a
/// context switch, on a core the broker needs) for every single message. Profiling the engine at full
/// speed showed such wakeups costing more CPU than SQLite.
async fn fill(input: &mut mpsc::Receiver<Incoming>, batch: &mut Vec<Incoming>) -> bool {
    match input.recv().await {
        Some(first) => batch.push(first),
        None => return false,
    }
    let deadline = Instant::now() + MAX_BATCH_AGE;
    let mut unacked = batch.iter().filter(|i| i.ack.is_some()).count();
    let mut ticked = false;
    loop {
        let before = batch.len();
        while batch.len() < MAX_BATCH && unacked < MAX_UNACKED_PER_BATCH {
            match input.try_recv() {
                Ok(incoming) => {
                    unacked += usize::from(incoming.ack.is_some());
                    batch.push(incoming);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        let now = Instant::now();
        let full = batch.len() >= MAX_BATCH || unacked >= MAX_UNACKED_PER_BATCH;
        if full || now >= deadline || (ticked && batch.len() == before) {
            return true;
        }
        tokio::time::sleep_until((now + GATHER_TICK).min(deadline)).await;
        ticked = true;
    }
}
