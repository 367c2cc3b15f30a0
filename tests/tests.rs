//! One integration-test binary (as ripgrep does): a real broker over TCP, a real SQLite file.

mod support;

mod bad_input;
mod cli;
mod crash;
mod database_faults;
mod end_to_end;
mod interop;
mod outage;
mod retention;
mod rule_safety;
mod security;
mod shutdown;
