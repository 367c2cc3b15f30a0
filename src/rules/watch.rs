//! Hot reload: watches the rules directory (inotify on Linux, through notify) and hands the paths of
//! changed `*.rhai` files to the rule thread, which reloads them between two events. The watcher only
//! forwards; the rule thread debounces, since one save is often several file events.

use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tracing::warn;

use crate::event::Event;

/// Keeps watching while it lives; drop it to stop (and to let the rule thread's input close).
pub struct RuleWatcher {
    _watcher: RecommendedWatcher,
}

/// Starts watching `dir`, sending an [`Event::RuleFile`] for each changed rule file.
pub fn watch(dir: &Path, events: flume::Sender<Event>) -> Result<RuleWatcher, notify::Error> {
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) => {
                for path in event.paths {
                    if path.extension().is_some_and(|e| e == "rhai") {
                        // Blocking is fine on the watcher's own thread; a full queue just slows reloads.
                        let _ = events.send(Event::RuleFile(path));
                    }
                }
            }
            Err(e) => warn!("watching the rules directory failed: {e}"),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(RuleWatcher { _watcher: watcher })
}
