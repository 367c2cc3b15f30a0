//! The rule thread: Rhai evaluation is synchronous and CPU-bound, so rules run on one dedicated OS
//! thread (never on a tokio worker), taking events in arrival order and handing what rules asked for
//! to the actions stage, and the record of each run (and what rules persist) straight to the recorder.
//! A record has nothing to perform: passing it through the actions stage woke that stage for every rule
//! run, which at full message rate cost more than writing the row. The same thread drains the scheduler: it waits for the next event or the next deadline,
//! whichever comes first. It ends when its input closes, after handing over everything.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::set::RuleSet;
use crate::event::{ActionRequest, Event, Output};
use crate::metrics::METRICS;

/// Events queued for the rule thread. Rules take microseconds per run, so this absorbs bursts; when it
/// is full the subscriber waits (back-pressure) rather than dropping a message.
pub const INPUT_CAPACITY: usize = 4_096;

/// Outputs queued toward the actions stage; full means the broker or the database is slow, and the
/// rule thread waits rather than dropping what a rule did.
pub const OUTPUT_CAPACITY: usize = 4_096;

/// Stack of the rule thread: deep (but limited) script recursion needs more than the default in debug
/// builds.
pub const STACK_SIZE: usize = 16 * 1024 * 1024;

/// Longest sleep between two looks at the wall clock. A Pi has no real-time clock and its time jumps
/// when NTP syncs after boot; waking this often notices a jump within a second (see
/// [`Clock::resync`](crate::scheduler::Clock::resync)).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// How long a rule file must stay unchanged before it is reloaded: one save is often several file
/// events (write, then close; or a temp file renamed), and a half-written file must not be compiled.
const RELOAD_SETTLE: Duration = Duration::from_millis(100);

/// Most events taken from the input in one go, between two looks at the timers.
const DRAIN: usize = 64;

/// The rule thread's work.
pub struct RuleWorker {
    pub rules_dir: PathBuf,
    pub rules: RuleSet,
    /// A flume channel: the async subscriber sends, this thread waits with a timeout.
    pub input: flume::Receiver<Event>,
    /// What must be performed.
    pub output: mpsc::Sender<ActionRequest>,
    /// Every other output, for the recorder. The recorder takes them on a tick, so sending one wakes
    /// nobody.
    pub records: mpsc::Sender<Vec<Output>>,
    /// Outputs to record of the events taken since the last flush to the recorder.
    pub pending: Vec<Output>,
    /// Told once the rules are loaded and `on_start` has run.
    pub ready: Option<oneshot::Sender<()>>,
}

impl RuleWorker {
    /// The rule thread's work: `rules` loaded from `rules_dir`, events from `input`, actions to `output`,
    /// the rest to `records`; `ready` is told once `on_start` has run.
    pub fn new(
        rules_dir: PathBuf,
        rules: RuleSet,
        input: flume::Receiver<Event>,
        output: mpsc::Sender<ActionRequest>,
        records: mpsc::Sender<Vec<Output>>,
        ready: oneshot::Sender<()>,
    ) -> RuleWorker {
        RuleWorker {
            rules_dir,
            rules,
            input,
            output,
            records,
            pending: Vec::new(),
            ready: Some(ready),
        }
    }

    /// Loads the rules, then runs events and deadlines until the input closes. Blocking: call on its own
    /// thread.
    pub fn run(mut self) {
        self.load();
        let mut reloads: HashMap<PathBuf, Instant> = HashMap::new();
        'events: loop {
            if let Some(jump) = self.rules.clock.resync() {
                let moved = self.guarded(|rules| rules.clock_jumped(jump));
                if !self.send(moved) {
                    break;
                }
            }
            let now = self.rules.clock.now();
            let due = self.guarded(|rules| rules.fire_due(now));
            if !self.send(due) {
                break;
            }
            if !self.reload_settled(&mut reloads) {
                break;
            }
            let mut wait = self.rules.next_due().map_or(MAX_WAIT, |at| {
                Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(MAX_WAIT)
            });
            if let Some(settles) = reloads.values().min() {
                wait = wait.min(settles.saturating_duration_since(Instant::now()));
            }
            self.flush();
            let event = match self.input.recv_timeout(wait) {
                Ok(event) => event,
                Err(flume::RecvTimeoutError::Timeout) => continue,
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            if !self.take(event, &mut reloads) {
                break;
            }
            // Then what else has arrived, before looking at the clock and the timers again: at full
            // message rate that look cost more than dispatching a message no rule matches. Timers are
            // late by at most this many runs (microseconds each).
            for _ in 1..DRAIN {
                let Ok(event) = self.input.try_recv() else {
                    break;
                };
                if !self.take(event, &mut reloads) {
                    break 'events;
                }
            }
        }
        self.flush();
        info!("rules stopped");
    }

    /// Runs what `event` triggers and hands the outputs on (a rule file's change waits until it
    /// settles). False when the actions stage is gone.
    fn take(&mut self, event: Event, reloads: &mut HashMap<PathBuf, Instant>) -> bool {
        if let Event::RuleFile(path) = event {
            reloads.insert(path, Instant::now() + RELOAD_SETTLE);
            return true;
        }
        let is_start = matches!(event, Event::Start);
        let outputs = self.guarded(|rules| rules.handle(&event));
        if !self.send(outputs) {
            return false;
        }
        if is_start && let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        true
    }

    /// Reloads the files whose last change is [`RELOAD_SETTLE`] old. False when the actions stage is gone.
    fn reload_settled(&mut self, reloads: &mut HashMap<PathBuf, Instant>) -> bool {
        let now = Instant::now();
        let settled: Vec<PathBuf> = reloads
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in settled {
            reloads.remove(&path);
            let outputs = self.guarded(|rules| rules.handle(&Event::RuleFile(path)));
            if !self.send(outputs) {
                return false;
            }
        }
        true
    }

    /// A panic in a binding or in Rhai must cost one event, not every rule from now on.
    fn guarded(&mut self, work: impl FnOnce(&mut RuleSet) -> Vec<Output>) -> Vec<Output> {
        let rules = &mut self.rules;
        std::panic::catch_unwind(AssertUnwindSafe(|| work(rules))).unwrap_or_else(|_| {
            error!("a rule run panicked; the event was skipped and rules go on");
            Vec::new()
        })
    }

    /// Hands outputs on. False when the actions stage is gone; a recorder that is gone only costs the
    /// trace and state rows (logged once), as it did when records passed through the actions stage.
    fn send(&mut self, outputs: Vec<Output>) -> bool {
        for output in outputs {
            if let Output::Action { rule, ts, action } = output {
                if self
                    .output
                    .blocking_send(ActionRequest { rule, ts, action })
                    .is_err()
                {
                    error!("the actions stage is gone; rule outputs can no longer be performed");
                    return false;
                }
                continue;
            }
            if let Output::Run(run) = &output {
                METRICS.rule_run(run);
            }
            self.pending.push(output);
        }
        true
    }

    /// Hands the records gathered since the last call to the recorder, as one group. Called before
    /// the thread waits for the next event, so no record waits on a quiet input.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.pending);
        if !self.records.is_closed() && self.records.blocking_send(records).is_err() {
            error!("the recorder is gone; rule runs are no longer recorded");
        }
    }

    fn load(&mut self) {
        match self.rules.load_dir(&self.rules_dir) {
            Ok(problems) => {
                for problem in problems {
                    error!("{problem} (this rule is skipped; the others run)");
                }
            }
            Err(e) => warn!(
                "cannot read the rules directory {}: {e}; running with no rules",
                self.rules_dir.display()
            ),
        }
        let names: Vec<&str> = self.rules.rules().iter().map(|r| &*r.name).collect();
        info!(count = names.len(), "rules loaded: {}", names.join(", "));
    }
}
