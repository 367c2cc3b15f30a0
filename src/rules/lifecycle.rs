//! A rule's life while the engine runs: an edited, new or removed rule file is picked up (the rule
//! thread's watcher sends [`Event::RuleFile`](crate::event::Event::RuleFile) once a save settles), and
//! an edited module of rules/lib/ reloads every rule that imports it.
//! Loading at start is [`RuleSet::load_dir`]; this is what changes after.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::library::LIB_DIR;
use super::set::RuleSet;
use crate::event::Output;

impl RuleSet {
    /// Picks up an edited, new or removed rule file while running. A file that no longer compiles keeps
    /// its last good version running; a removed file's triggers and timers go away. A reloaded rule's
    /// `on_start` triggers run, since its state starts afresh.
    pub(super) fn reload(&mut self, path: &Path, outputs: &mut Vec<Output>) {
        if self.is_module(path) {
            self.reload_importers(path, outputs);
        } else {
            self.reload_rule(path, false, outputs);
        }
    }

    /// Whether `path` is a module of rules/lib/ rather than a rule.
    fn is_module(&self, path: &Path) -> bool {
        self.dir
            .as_ref()
            .is_some_and(|dir| path.parent() == Some(dir.join(LIB_DIR).as_path()))
    }

    /// A module was edited, created or removed: every rule that imports it (or failed to, for want of
    /// it) loads again, in name order, as if it had been edited itself.
    fn reload_importers(&mut self, module: &Path, outputs: &mut Vec<Output>) {
        let mut importers: Vec<PathBuf> = self
            .rules
            .iter()
            .filter(|rule| rule.modules.iter().any(|m| m == module))
            .map(|rule| rule.path.clone())
            .chain(
                self.failed_imports
                    .iter()
                    .filter(|(_, modules)| modules.iter().any(|m| m == module))
                    .map(|(rule, _)| rule.clone()),
            )
            .collect();
        importers.sort();
        importers.dedup();
        if importers.is_empty() {
            info!("{} changed; no rule imports it", module.display());
            return;
        }
        let names: Vec<String> = importers.iter().map(|p| p.display().to_string()).collect();
        info!(
            "{} changed: reloading the rules that import it ({})",
            module.display(),
            names.join(", ")
        );
        for rule in importers {
            self.reload_rule(&rule, true, outputs);
        }
    }

    /// Loads the rule file at `path` again; unless `forced` (a module it imports changed), only when its
    /// text differs from what runs or last failed.
    fn reload_rule(&mut self, path: &Path, forced: bool, outputs: &mut Vec<Output>) {
        let name: Arc<str> = path
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
            .into();
        if !path.exists() {
            self.failed_imports.remove(path);
            if self.rule(&name).is_some() {
                self.unload(&name, outputs);
                info!(rule = %name, "{} was removed: its triggers and timers are gone", path.display());
            }
            return;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let seen = self.rule(&name).is_some_and(|rule| rule.source() == text);
        if !forced && seen && self.last_failed.remove(&*name).is_some() {
            // Back to the text that kept running after a broken edit: nothing to load, but the owner who
            // saw the error must see that it is over.
            info!(rule = %name, "{} reloaded (back to the version that kept running)", path.display());
            return;
        }
        if !forced && (seen || self.last_failed.get(&*name) == Some(&text)) {
            return; // another event for the same save, or the same broken text again
        }
        match self.load_file(path) {
            Ok(()) => {
                info!(rule = %name, "{} reloaded", path.display());
                self.last_failed.remove(&*name);
                self.drop_orphaned_timers(&name, outputs);
                self.rearm_watches(&name, outputs);
                self.forget_paced(&name);
                if let Some(rule) = self.rule(&name) {
                    self.run_on_start(rule, outputs);
                }
            }
            Err(problem) => {
                self.last_failed.insert(name.to_string(), text);
                let kept = if self.rule(&name).is_some() {
                    "the last good version keeps running"
                } else {
                    "it is not loaded"
                };
                tracing::error!("{problem} ({kept}){}", problem.snippet());
            }
        }
    }

    /// After a reload: pending timers whose closure no longer exists in the new text cannot run; they are
    /// dropped with a warning, as at a restart.
    fn drop_orphaned_timers(&self, name: &str, outputs: &mut Vec<Output>) {
        let Some(rule) = self.rule(name) else { return };
        let functions: std::collections::HashSet<String> =
            rule.ast.iter_functions().map(|f| f.name.to_string()).collect();
        for id in self
            .host
            .take_timers_of_where(name, |callback| !functions.contains(callback))
        {
            warn!(
                rule = name,
                "a pending timer is dropped: its closure changed in the edited rule"
            );
            outputs.push(Output::TimerDone { id });
        }
    }

    /// Restarts the rules whose captured variables grew too large (see `RuleSet::measure_kept`): loaded
    /// again from their file, as after an edit, so their variables start afresh.
    pub(super) fn restart_oversized(&mut self, outputs: &mut Vec<Output>) {
        let names = std::mem::take(&mut *self.oversized.borrow_mut());
        for name in names {
            let Some(path) = self.rule(&name).map(|rule| rule.path.clone()) else {
                continue;
            };
            match self.load_file(&path) {
                Ok(()) => {
                    warn!(rule = %name, "{} restarted with fresh captured variables", path.display());
                    self.drop_orphaned_timers(&name, outputs);
                    self.rearm_watches(&name, outputs);
                    self.forget_paced(&name);
                    if let Some(rule) = self.rule(&name) {
                        self.run_on_start(rule, outputs);
                    }
                }
                Err(problem) => tracing::error!(
                    "{problem} (so its oversized captured variables could not be dropped){}",
                    problem.snippet()
                ),
            }
        }
    }

    fn unload(&mut self, name: &str, outputs: &mut Vec<Output>) {
        self.rules.retain(|r| &*r.name != name);
        self.forget_routes();
        self.host.unschedule_rule(name);
        for id in self.host.take_timers_of(name) {
            outputs.push(Output::TimerDone { id });
        }
        self.forget_watches(name, |_| true, outputs);
        self.forget_paced(name);
    }
}
