//! Rules on virtual time, without a broker: the [`harness`] (a [`Simulation`] over a real history file)
//! and the [`scenario`] files of `homewright test` played on it. `homewright replay` and the tests use
//! the same harness.

pub mod harness;
pub mod scenario;

pub use harness::{Options, RuleSource, Simulation, SimulationError};
