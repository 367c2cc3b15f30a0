//! Rules on virtual time, without a broker: the [`harness`] (a [`Simulation`] over a real history file)
//! the [`scenario`] files of `homewright test` played on it, and [`replay`] of a stored period
//! (`homewright replay`). The tests use the same harness.

pub mod harness;
pub mod replay;
pub mod scenario;

pub use harness::{Options, RuleSource, Simulation, SimulationError};
