//! Hot reload: watches the rules directory and its `lib/` of modules (inotify on Linux, through notify)
//! and hands the paths of changed `*.rhai` files to the rule thread, which reloads them (or, for a
//! module, the rules that import it) between two events. The watcher only forwards; the rule thread
//! debounces, since one save is often several file events.

use std::path::Path;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::warn;

use super::library::LIB_DIR;
use crate::event::Event;

/// Keeps watching while it lives; drop it to stop (and to let the rule thread's input close).
pub struct RuleWatcher {
    _watcher: RecommendedWatcher,
}

/// Starts watching `dir`, sending an [`Event::RuleFile`] for each changed rule or module file.
pub fn watch(dir: &Path, events: flume::Sender<Event>) -> Result<RuleWatcher, notify::Error> {
    let rules = dir.to_path_buf();
    let modules = dir.join(LIB_DIR);
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            // Only changes: reading a file (as the reload itself does) raises access events, which
            // would otherwise schedule another reload, forever.
            Ok(event) if changes_content(&event.kind) => {
                for path in event.paths {
                    let parent = path.parent();
                    // Recursive, so that a lib/ made after the start is watched too; files deeper down
                    // (scenarios in tests/) are no rules.
                    let ours = parent == Some(rules.as_path()) || parent == Some(modules.as_path());
                    if ours && path.extension().is_some_and(|e| e == "rhai") {
                        // Blocking is fine on the watcher's own thread; a full queue just slows reloads.
                        let _ = events.send(Event::RuleFile(path));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => warn!("watching the rules directory failed: {e}"),
        })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(RuleWatcher { _watcher: watcher })
}

/// Whether a file event can change what a rule file holds (written, created, renamed, removed).
fn changes_content(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    #[test]
    fn reads_do_not_count_as_changes() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
    }
}
