//! The rule thread: Rhai evaluation is synchronous and CPU-bound, so rules run on one dedicated OS
//! thread (never on a tokio worker), taking events in arrival order and handing outputs to the actions
//! stage. It ends when its input closes, after handing over everything.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::set::RuleSet;
use crate::event::{Event, Output};

/// Events queued for the rule thread. Rules take microseconds per run, so this absorbs bursts; when it
/// is full the subscriber waits (back-pressure) rather than dropping a message.
pub const INPUT_CAPACITY: usize = 4_096;

/// Outputs queued toward the actions stage; full means the broker or the database is slow, and the
/// rule thread waits rather than dropping what a rule did.
pub const OUTPUT_CAPACITY: usize = 4_096;

/// Stack of the rule thread: deep (but limited) script recursion needs more than the default in debug
/// builds.
pub const STACK_SIZE: usize = 16 * 1024 * 1024;

/// The rule thread's work.
pub struct RuleWorker {
    pub rules_dir: PathBuf,
    pub rules: RuleSet,
    pub input: mpsc::Receiver<Event>,
    pub output: mpsc::Sender<Output>,
}

impl RuleWorker {
    /// Loads the rules, then runs events until the input closes. Blocking: call on its own thread.
    pub fn run(mut self) {
        self.load();
        while let Some(event) = self.input.blocking_recv() {
            // A panic in a binding or in Rhai must cost one event, not every rule from now on.
            let handled = std::panic::catch_unwind(AssertUnwindSafe(|| self.rules.handle(&event)));
            let Ok(outputs) = handled else {
                error!("a rule run panicked; the event was skipped and rules go on");
                continue;
            };
            for output in outputs {
                if self.output.blocking_send(output).is_err() {
                    error!("the actions stage is gone; rule outputs can no longer be performed");
                    return;
                }
            }
        }
        info!("rules stopped");
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
