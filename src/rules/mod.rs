//! Rules: the owner's Rhai scripts. Each `rules/*.rhai` is compiled once, its top level runs once to
//! register triggers, and the [`worker`] runs those triggers on one dedicated thread, in arrival order,
//! turning events into [`Output`](crate::event::Output)s for the actions stage.
//!
//! A rule that fails to compile is skipped with its position logged; a run that fails or runs away is
//! stopped, logged and traced; nothing else stops.

pub mod api;
mod clock_jump;
pub mod diagnostic;
pub mod engine;
mod held;
pub mod host;
mod library;
mod lifecycle;
pub mod pace;
mod paced;
mod persist;
mod pieces;
mod set;
mod size;
mod timed;
pub mod watch;
pub mod worker;

pub use diagnostic::Diagnostic;
pub use engine::Limits;
pub use host::Services;
pub use set::{Rule, RuleSet, rule_files};
