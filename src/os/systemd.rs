//! The service manager's side channel (sd_notify(3)): `READY=1` once the stages are up, `WATCHDOG=1`
//! while they stay up, `STOPPING=1` when a stop begins. Outside systemd (`NOTIFY_SOCKET` unset) every
//! call does nothing, so the engine, the tests and a terminal run share one code path.
//!
//! READY is sent when every stage is running and the ingest connection is being made, not when the
//! broker first answers: an external broker that is down at boot would otherwise hold the unit in
//! `activating` until systemd's start timeout failed it, and the engine already reconnects by itself.
//! The watchdog is what catches a wedged engine: pings come from a task on the same runtime as the
//! stages, and stop as soon as any stage has ended before a stop was asked for, or while ingest is
//! stuck ([`crate::os::health`]), so systemd (`WatchdogSec=`, `Restart=on-failure`) restarts a
//! service that is half dead or wedged.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Tells the service manager the engine is up, with a one-line status for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager a stop has begun (the drain may take a few seconds).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // Only possible under a service manager, which then cannot see our state: say so once.
        warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// Pings the service manager's watchdog at half its timeout while the engine is healthy.
pub struct Watchdog {
    interval: Duration,
    healthy: Box<dyn FnMut(Instant) -> Result<(), String> + Send>,
}

impl Watchdog {
    /// A watchdog when the service manager asked for one (`WATCHDOG_USEC`, and `WATCHDOG_PID` is ours
    /// or unset). `healthy` is made from the service manager's timeout and, called at every tick,
    /// says what is wrong when the engine should not be vouched for now.
    pub fn from_env<H>(healthy: impl FnOnce(Duration) -> H) -> Option<Watchdog>
    where
        H: FnMut(Instant) -> Result<(), String> + Send + 'static,
    {
        let timeout = sd_notify::watchdog_enabled()?;
        // Half the timeout, as sd_watchdog_enabled(3) recommends, so one late ping is not fatal.
        let interval = (timeout / 2).max(Duration::from_millis(10));
        Some(Watchdog {
            interval,
            healthy: Box::new(healthy(timeout)),
        })
    }

    /// Pings until `shutdown` while the engine is healthy. While it is not, no ping is sent, so the
    /// service manager kills and restarts the service once its timeout passes; a problem that clears
    /// before that (a database locked for a moment) resumes the pings.
    pub async fn run(mut self, shutdown: CancellationToken) {
        debug!(interval = ?self.interval, "pinging the systemd watchdog");
        // The first ping one interval after READY, not at once.
        let start = tokio::time::Instant::now() + self.interval;
        let mut ticks = tokio::time::interval_at(start, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silent = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match (self.healthy)(Instant::now()) {
                Err(problem) => {
                    if !silent {
                        error!(
                            "{problem}; no longer pinging the systemd watchdog, so systemd restarts the service"
                        );
                        silent = true;
                    }
                }
                Ok(()) => {
                    if silent {
                        warn!("the engine makes progress again; pinging the systemd watchdog again");
                        silent = false;
                    }
                    send(&[NotifyState::Watchdog]);
                }
            }
        }
    }
}
