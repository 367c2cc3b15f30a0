//! Scenario tests (`homewright test`): a YAML file drives chosen rules on virtual time, publishing
//! messages, moving the clock and checking what the rules published and stored. An owner proves a rule
//! this way before trusting it with the heating; a week runs in milliseconds.
//!
//! The format is in `docs/rules.md`. [`file`](mod@file) reads it; [`run`](mod@run) plays it against a
//! [`Simulation`](crate::sim::Simulation) on a scratch history, so nothing real is touched.

pub mod file;
pub mod run;

pub use file::{Scenario, ScenarioError};
pub use run::{Outcome, run_scenario};
