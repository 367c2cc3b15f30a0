//! Ingest: stores every received message in batched transactions and acknowledges QoS 1/2 messages to
//! the broker only after their batch is committed, in the order they were received.
//!
//! That ordering is the whole durability promise: a crash at any moment loses nothing the broker handed
//! over, because whatever was not yet committed was not yet acknowledged and is redelivered. The price is
//! a possible duplicate when the crash falls between commit and acknowledgement.
//!
//! When to commit is what decides how fast an SD card wears: every commit rewrites whole pages (the
//! table's last leaf, an index leaf per topic in the batch) and syncs them, whatever the batch holds.
//! So a batch is committed when it is `Ingest::interval` old (`database.commit_interval`), not when
//! the stream pauses; QoS 1/2 messages bring the commit forward just enough that the broker, which
//! stops delivering once its in-flight window of unacknowledged messages is full, never has to wait
//! (see `Ingest::threshold`): waiting there would delay every message behind, rules' included.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::mqtt::subscriber::{Acker, Incoming};
use crate::store::Store;

/// Most messages per transaction: what a flood gathers in a few tens of milliseconds. Larger batches
/// gain little (the pages rewritten per message are already few) and hold more memory.
pub const MAX_BATCH: usize = 4_000;

/// The broker's in-flight window (how many QoS 1/2 messages it sends before it waits for their
/// acknowledgements) assumed until a larger one is seen: Mosquitto's default `max_inflight_messages`.
/// MQTT 3.1.1 has no way to ask the broker.
pub const ASSUMED_WINDOW: usize = 20;

/// Unacknowledged messages kept free of the window at the least when deciding to commit (see
/// [`Ingest::threshold`]).
const MIN_RESERVE: usize = 2;

/// A batch holding QoS 1/2 messages is committed once no message came for this many mean gaps between
/// them (and at least [`MIN_STALL`]): the broker's window is then likely full (a broker with a smaller
/// window than assumed, or a larger one guessed from a reconnection's backlog). In a stream with random
/// gaps, a silence of 5 mean gaps happens before fewer than 1 message in 100.
const STALL_GAPS: f64 = 5.0;
const MIN_STALL: Duration = Duration::from_millis(50);

/// How often a batch being filled from a busy stream takes what arrived (see `Ingest::fill`).
pub const GATHER_TICK: Duration = Duration::from_millis(1);

/// Messages found at once that make a stream busy: gathered by [`GATHER_TICK`] rather than woken for
/// one by one.
const BUSY: usize = 8;

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
    /// `database.commit_interval`: the longest a received message waits for its commit.
    interval: Duration,
    /// The largest number of messages seen awaiting an acknowledgement at once: the broker's in-flight
    /// window, as far as it showed it (at first [`ASSUMED_WINDOW`]). It only grows; an estimate too
    /// large (Mosquitto sends a reconnecting client its backlog past its window, which looks like a
    /// larger one) is caught by the stall rule ([`STALL_GAPS`]), at the cost of a short pause per
    /// window of messages.
    window: usize,
    pace: Pace,
}

/// What ingest has seen of the stream of QoS 1/2 messages and of its own commits.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Mean gap between QoS 1/2 messages (moving average, seconds).
    gap: f64,
    /// When the last QoS 1/2 message was taken from the channel.
    last: Option<Instant>,
    /// How long a commit takes, the slowest of the recent ones (seconds, decaying slowly).
    commit: f64,
}

impl Pace {
    fn new() -> Self {
        Pace {
            gap: 1.0,
            last: None,
            commit: 0.01,
        }
    }

    fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last {
            // A long silence says the stream is slow, not that it will stay silent: capped.
            let gap = (now - last).as_secs_f64().min(10.0);
            self.gap = 0.9 * self.gap + 0.1 * gap;
        }
        self.last = Some(now);
    }

    fn committed(&mut self, took: Duration) {
        self.commit = took.as_secs_f64().max(self.commit * 0.9);
    }

    /// When a batch with unacknowledged messages counts as stalled (see [`STALL_GAPS`]).
    fn stall_at(&self, now: Instant) -> Instant {
        let stall = Duration::from_secs_f64(self.gap * STALL_GAPS).max(MIN_STALL);
        self.last.unwrap_or(now) + stall
    }
}

impl Ingest {
    pub fn new(store: Store, acker: Acker, input: mpsc::Receiver<Incoming>, interval: Duration) -> Self {
        Ingest {
            store,
            acker,
            input,
            interval,
            window: ASSUMED_WINDOW,
            pace: Pace::new(),
        }
    }

    /// Batches, commits and acknowledges until the input closes.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stored: u64 = 0;
        loop {
            let (open, cap) = self.fill(&mut batch).await;
            self.observe_window(&batch, cap);
            if !batch.is_empty() {
                let started = Instant::now();
                let committed = self.commit(&batch, !open).await;
                self.pace.committed(started.elapsed());
                if committed {
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
        self.acker.finished(batch.len());
        let tokens: Vec<_> = batch.drain(..).filter_map(|incoming| incoming.ack).collect();
        if let Err(e) = self.acker.ack(tokens) {
            // Only when the connection is gone; the broker redelivers, and we store a duplicate.
            warn!("cannot acknowledge stored messages: {e}");
        }
    }
}

/// Unacknowledged messages at which a batch is committed, for a broker `window`, a stream of QoS 1/2
/// messages `gap` seconds apart and commits taking `commit` seconds (see `Ingest::threshold`).
fn threshold(window: usize, gap: f64, commit: f64) -> usize {
    // What arrives while the batch is gathered and committed, twice over: a commit's time varies.
    let during_commit = (commit + GATHER_TICK.as_secs_f64()) / gap.max(1e-6) * 2.0;
    let reserve = MIN_RESERVE.saturating_add(during_commit.ceil().min(1e9) as usize);
    if reserve > window / 2 {
        // Commits too slow for the window to stay open: the broker waits whatever ingest does, so
        // commit whatever has arrived as soon as the previous commit is done (the batch then holds what
        // came during it). Measured at 1,000 msg/s with slow commits: batches held at half the window
        // fell behind, and rules' answers took 120 ms at p90.
        return 1;
    }
    (window - reserve).clamp(1, MAX_BATCH)
}

/// The window estimate after a batch closed with `unacked` messages awaiting acknowledgement, its cap
/// `cap`, and `queued` messages waiting behind it.
fn next_window(window: usize, unacked: usize, cap: usize, queued: usize) -> usize {
    if unacked < cap {
        // Closed by its age or on a stall: the broker's window did not show.
        return window;
    }
    window.max(unacked + queued)
}

impl Ingest {
    /// Unacknowledged messages at which the batch being filled is committed: the broker's window less
    /// what arrives while the commit is under way (at least [`MIN_RESERVE`]). So at a house's rate a
    /// commit carries nearly a whole window (17 of Mosquitto's default 20), and at 1,000 msg/s with
    /// commits of a few milliseconds it comes early enough that the window never fills.
    fn threshold(&self) -> usize {
        threshold(self.window, self.pace.gap, self.pace.commit)
    }

    /// Waits for a first message, then gathers more until the batch is [`Ingest::interval`] old, holds
    /// [`MAX_BATCH`] messages, holds [`Ingest::threshold`] unacknowledged ones, or holds some and the
    /// stream of them stalled (see [`STALL_GAPS`]). Returns whether the input is still open (the batch
    /// holds whatever came before it closed) and the threshold it was filled to.
    ///
    /// A slow stream wakes it once per message, a busy one (at least [`BUSY`] messages found at once)
    /// every [`GATHER_TICK`]: waiting on the channel for each message of a flood would wake it (a futex
    /// and a context switch, on a core the broker needs) for every single message, which profiling at
    /// full speed showed costing more CPU than SQLite.
    async fn fill(&mut self, batch: &mut Vec<Incoming>) -> (bool, usize) {
        let mut cap = self.threshold();
        match self.input.recv().await {
            Some(first) => self.take(batch, first),
            None => return (false, cap),
        }
        let deadline = Instant::now() + self.interval;
        let mut unacked = batch.iter().filter(|i| i.ack.is_some()).count();
        loop {
            cap = self.threshold();
            let before = batch.len();
            // Everything that has arrived, up to the window, goes into this batch: it is received
            // already, and one commit for all of it is the cheapest.
            while batch.len() < MAX_BATCH && unacked < cap.max(self.window) {
                match self.input.try_recv() {
                    Ok(incoming) => {
                        unacked += usize::from(incoming.ack.is_some());
                        self.take(batch, incoming);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return (false, cap),
                }
            }
            let now = Instant::now();
            let stall_at = self.pace.stall_at(now);
            let stalled = unacked > 0 && now >= stall_at;
            if batch.len() >= MAX_BATCH || unacked >= cap || now >= deadline || stalled {
                return (true, cap);
            }
            let wake = if unacked > 0 {
                deadline.min(stall_at)
            } else {
                deadline
            };
            if batch.len() - before >= BUSY {
                tokio::time::sleep_until((now + GATHER_TICK).min(wake)).await;
                continue;
            }
            tokio::select! {
                incoming = self.input.recv() => match incoming {
                    Some(incoming) => {
                        unacked += usize::from(incoming.ack.is_some());
                        self.take(batch, incoming);
                    }
                    None => return (false, cap),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn take(&mut self, batch: &mut Vec<Incoming>, incoming: Incoming) {
        if incoming.ack.is_some() {
            self.pace.arrived(Instant::now());
        }
        batch.push(incoming);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_leaves_room_in_the_window_for_what_arrives_meanwhile() {
        // A house: 20 msg/s, commits of 10 ms. A commit carries 17 of Mosquitto's 20.
        assert_eq!(threshold(ASSUMED_WINDOW, 0.05, 0.01), 17);
        // 1,000 msg/s with commits of 3 ms: about 8 arrive during one, twice that is kept free.
        assert_eq!(threshold(ASSUMED_WINDOW, 0.001, 0.003), 10);
        // Commits slower than the window lasts: whatever has arrived (the broker waits anyway).
        assert_eq!(threshold(ASSUMED_WINDOW, 0.000_1, 0.02), 1);
        assert_eq!(threshold(1, 0.05, 0.01), 1);
        // A large window: at most a full batch.
        assert_eq!(threshold(100_000, 0.000_01, 0.01), MAX_BATCH);
    }

    #[test]
    fn the_window_estimate_grows_with_what_the_broker_shows() {
        // A batch at its cap with 4,500 more waiting: the broker sends 5,000 before it waits.
        assert_eq!(next_window(ASSUMED_WINDOW, 18, 18, 4_982), 5_000);
        // A batch closed below its cap (by age, on a stall) says nothing about the window, and a
        // smaller count later does not shrink it.
        assert_eq!(next_window(5_000, 900, 2_500, 9_000), 5_000);
        assert_eq!(next_window(5_000, 2_500, 2_500, 0), 5_000);
    }
}
