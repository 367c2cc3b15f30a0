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

/// The broker's in-flight window (how many QoS 1/2 messages it sends before it waits for their
/// acknowledgements) assumed until a larger one is seen. MQTT 3.1.1 has no way to ask the broker.
pub const ASSUMED_WINDOW: usize = 1_000;

/// Fewest messages awaiting an acknowledgement that a batch may be closed for (see `Ingest::window`).
pub const MIN_UNACKED_PER_BATCH: usize = ASSUMED_WINDOW / 2;

/// Longest a received message waits for its batch to fill before it is committed (and acknowledged).
pub const MAX_BATCH_AGE: Duration = Duration::from_millis(50);

/// How often a batch being filled looks for more messages; a tick in which none came closes it early
/// (see `Ingest::fill`).
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
    /// The largest number of messages seen awaiting an acknowledgement at once: the broker's in-flight
    /// window, as far as it showed it (at first [`ASSUMED_WINDOW`]).
    ///
    /// Acknowledgements wait for the commit, so a batch that held the whole window would leave the
    /// broker idle during every commit; a batch of half of it lets the broker send the other half
    /// meanwhile. So a batch closes at half the window (at least [`MIN_UNACKED_PER_BATCH`], at most
    /// [`MAX_BATCH`]). With Mosquitto's default window of 20 the batches close earlier, when the stream
    /// pauses; with the 10,000 `docs/durability.md` recommends they hold 4,000, as at QoS 0, and commit an
    /// eighth as often as half of a 1,000 window did.
    ///
    /// The estimate only grows. Mosquitto sends a reconnecting client its backlog past its window,
    /// which looks like a larger one; batches then close on a pause instead of at half the window, a
    /// slower pace but never a wrong one: the estimate decides how often to commit, not what is
    /// acknowledged. (Shrinking it whenever a batch below its cap closed on a pause with 500 or more
    /// waiting was tried: under full load such pauses come from scheduling alone, and the cap swung
    /// between 500 and 4,000 within seconds.)
    window: usize,
}

impl Ingest {
    pub fn new(store: Store, acker: Acker, input: mpsc::Receiver<Incoming>) -> Self {
        Ingest {
            store,
            acker,
            input,
            window: ASSUMED_WINDOW,
        }
    }

    /// Batches, commits and acknowledges until the input closes.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stored: u64 = 0;
        loop {
            let cap = unacked_cap(self.window);
            let open = fill(&mut self.input, &mut batch, cap).await;
            self.observe_window(&batch, cap);
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

    /// Raises [`Ingest::window`] when a batch closed at its cap of unacknowledged messages with more
    /// waiting behind it (those count too: nearly always the subscription's QoS is the same for all).
    fn observe_window(&mut self, batch: &[Incoming], cap: usize) {
        let unacked = batch.iter().filter(|i| i.ack.is_some()).count();
        let window = next_window(self.window, unacked, cap, self.input.len());
        if window != self.window {
            debug!(
                window,
                "the broker's window (messages it sends before waiting for acknowledgements) looks different"
            );
            self.window = window;
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

/// Most messages awaiting an acknowledgement in one batch, for a broker `window` (see `Ingest::window`).
fn unacked_cap(window: usize) -> usize {
    (window / 2).clamp(MIN_UNACKED_PER_BATCH, MAX_BATCH)
}

/// The window estimate after a batch closed with `unacked` messages awaiting acknowledgement, its cap
/// `cap`, and `queued` messages waiting behind it.
fn next_window(window: usize, unacked: usize, cap: usize, queued: usize) -> usize {
    if unacked < cap {
        // Closed by its age or on a pause: the broker's window did not show.
        return window;
    }
    window.max(unacked + queued)
}

/// Waits for a first message, then gathers more while they keep coming: the batch closes when it is
/// full (or holds `max_unacked` messages awaiting an acknowledgement, see [`Ingest::window`]), when it
/// is [`MAX_BATCH_AGE`] old, or when a [`GATHER_TICK`] passed without a new message.
/// Closing on a quiet tick matters because the broker stops sending once its in-flight window of
/// unacknowledged messages is full (Mosquitto's default is 20): waiting out the whole age then would cap
/// ingest at one window per 50 ms. Returns false once the input is closed (the batch holds whatever
/// came before).
///
/// Between ticks it takes whatever has arrived instead of waiting on the channel for each message:
/// ingest stores faster than messages arrive, so waiting on the channel would wake it (a futex and a
/// context switch, on a core the broker needs) for every single message. Profiling the engine at full
/// speed showed such wakeups costing more CPU than SQLite.
async fn fill(input: &mut mpsc::Receiver<Incoming>, batch: &mut Vec<Incoming>, max_unacked: usize) -> bool {
    match input.recv().await {
        Some(first) => batch.push(first),
        None => return false,
    }
    let deadline = Instant::now() + MAX_BATCH_AGE;
    let mut unacked = batch.iter().filter(|i| i.ack.is_some()).count();
    let mut ticked = false;
    loop {
        let before = batch.len();
        while batch.len() < MAX_BATCH && unacked < max_unacked {
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
        let full = batch.len() >= MAX_BATCH || unacked >= max_unacked;
        if full || now >= deadline || (ticked && batch.len() == before) {
            return true;
        }
        tokio::time::sleep_until((now + GATHER_TICK).min(deadline)).await;
        ticked = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_with_the_window_the_broker_shows() {
        assert_eq!(unacked_cap(ASSUMED_WINDOW), 500);
        // A batch at its cap with 4,500 more waiting: the broker sends 5,000 before it waits.
        let window = next_window(ASSUMED_WINDOW, 500, 500, 4_500);
        assert_eq!(window, 5_000);
        assert_eq!(unacked_cap(window), 2_500);
        // At most a full batch, however large the window.
        assert_eq!(unacked_cap(next_window(window, 2_500, 2_500, 8_000)), MAX_BATCH);
        // A batch closed below its cap (by age, on a pause) says nothing about the window, and a
        // smaller count later does not shrink it (see `Ingest::window`).
        assert_eq!(next_window(window, 900, 2_500, 9_000), window);
        assert_eq!(next_window(window, 2_500, 2_500, 0), window);
        // Mosquitto's default window of 20: batches close on a pause, the cap stays at its floor.
        assert_eq!(
            unacked_cap(next_window(ASSUMED_WINDOW, 20, 500, 0)),
            MIN_UNACKED_PER_BATCH
        );
    }
}
