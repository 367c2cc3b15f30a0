//! Whether ingest is healthy, as the watchdog vouches for it: received messages get stored, and the
//! ingest connection, once the broker accepts it, stays up.
//!
//! The subscriber and ingest bump a few relaxed atomic counters (no lock on the message path); the
//! watchdog samples them at each of its ticks and judges by what changed. An engine that has nothing
//! to do is healthy: only messages waiting without progress, or a connection that the broker accepts
//! and that fails again and again, count against it. A broker that cannot be reached at all does not:
//! the engine reconnects by itself, and a restart would not bring the broker back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest time without progress that counts as stuck, whatever the watchdog's own timeout: a
/// commit on a busy SD card, or a database locked for a moment by `sqlite3`, may take seconds.
pub const MIN_STALL: Duration = Duration::from_secs(3);

/// Accepted sessions lost within one stall period that make the connection count as failing: one
/// or two are a broker restart or a network blip; a broker that accepts and drops us over and over
/// (a message the client library cannot take, a second engine with our client id) is not.
pub const FLAPS: u64 = 3;

/// Counters the ingest path bumps. Shared (in an `Arc`) by the subscriber, ingest and the watchdog.
#[derive(Debug, Default)]
pub struct IngestProgress {
    /// Messages the subscriber handed to ingest.
    forwarded: AtomicU64,
    /// Messages ingest is done with: committed and acknowledged, or given up while stopping.
    finished: AtomicU64,
    /// Connections the broker accepted (ConnAck) that failed afterwards.
    sessions_lost: AtomicU64,
    /// Why the last of them failed, for the log.
    last_loss: Mutex<String>,
    /// Whether the ingest connection is up now (for the health page).
    connected: AtomicBool,
}

impl IngestProgress {
    /// One message handed to ingest.
    pub fn forwarded(&self) {
        // Relaxed: the watchdog reads each counter on its own and tolerates a stale value for a tick.
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Ingest is done with `count` messages.
    pub fn finished(&self, count: usize) {
        self.finished
            .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The ingest connection came up (the broker's ConnAck) or went down.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Whether the ingest connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Accepted connections that failed since the start.
    pub fn sessions_lost(&self) -> u64 {
        self.sessions_lost.load(Ordering::Relaxed)
    }

    /// A connection the broker had accepted failed, for `why`.
    pub fn session_lost(&self, why: &str) {
        *self.last_loss.lock().unwrap_or_else(|p| p.into_inner()) = why.to_string();
        self.sessions_lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// The watchdog's judgement over time: what it saw at its earlier ticks.
pub struct IngestCheck {
    progress: Arc<IngestProgress>,
    stall: Duration,
    finished: u64,
    /// When messages were last seen stored, or none waiting.
    last_progress: Instant,
    /// (tick, sessions lost so far) for the ticks of the last stall period.
    losses: VecDeque<(Instant, u64)>,
}

impl IngestCheck {
    /// Judges `progress`, counting `stall` (at least [`MIN_STALL`]) without progress as stuck.
    pub fn new(progress: Arc<IngestProgress>, stall: Duration, now: Instant) -> Self {
        IngestCheck {
            progress,
            stall: stall.max(MIN_STALL),
            finished: 0,
            last_progress: now,
            losses: VecDeque::from([(now, 0)]),
        }
    }

    /// `Ok` while ingest makes progress or has nothing to do; else which stage is stuck and how.
    pub fn check(&mut self, now: Instant) -> Result<(), String> {
        let forwarded = self.progress.forwarded.load(Ordering::Relaxed);
        let finished = self.progress.finished.load(Ordering::Relaxed);
        let waiting = forwarded.saturating_sub(finished);
        if waiting == 0 || finished != self.finished {
            self.last_progress = now;
        }
        self.finished = finished;
        let lost = self.progress.sessions_lost.load(Ordering::Relaxed);
        self.losses.push_back((now, lost));
        while self
            .losses
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.stall)
        {
            self.losses.pop_front();
        }
        let recent = lost - self.losses.front().map_or(lost, |(_, n)| *n);
        if recent >= FLAPS {
            let why = self
                .progress
                .last_loss
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(format!(
                "the subscriber stage is stuck: the broker accepted the ingest connection and it failed again {recent} times within {:?} (last: {why})",
                self.stall
            ));
        }
        let stalled = now.duration_since(self.last_progress);
        if stalled > self.stall {
            return Err(format!(
                "the ingest stage is stuck: {waiting} received messages have waited {:.0?} to be stored and acknowledged (see the errors above: a locked database or a full disk?)",
                stalled
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_or_progressing_is_healthy_and_waiting_without_progress_is_not() {
        let progress = Arc::new(IngestProgress::default());
        let start = Instant::now();
        let mut check = IngestCheck::new(Arc::clone(&progress), Duration::from_secs(1), start);
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(check.check(at(10)).is_ok(), "nothing to do");
        progress.forwarded();
        progress.forwarded();
        assert!(check.check(at(11)).is_ok());
        progress.finished(1);
        assert!(check.check(at(13)).is_ok(), "progress");
        let stuck = check.check(at(17)).expect_err("one message waiting 4 s");
        assert!(stuck.contains("ingest stage"), "{stuck}");
        progress.finished(1);
        assert!(check.check(at(18)).is_ok(), "recovered");
    }

    #[test]
    fn an_accepted_connection_failing_again_and_again_is_stuck() {
        let progress = Arc::new(IngestProgress::default());
        let start = Instant::now();
        let mut check = IngestCheck::new(Arc::clone(&progress), Duration::from_secs(3), start);
        let at = |s: u64| start + Duration::from_secs(s);
        progress.session_lost("broker restarted");
        assert!(check.check(at(1)).is_ok());
        progress.session_lost("again");
        assert!(check.check(at(10)).is_ok(), "two, far apart");
        for _ in 0..3 {
            progress.session_lost("unsolicited ack");
        }
        let stuck = check.check(at(11)).expect_err("three within the period");
        assert!(
            stuck.contains("subscriber stage") && stuck.contains("unsolicited ack"),
            "{stuck}"
        );
        assert!(check.check(at(20)).is_ok(), "quiet again");
    }
}
