//! One integration-test binary (as ripgrep does): a real broker over TCP, a real SQLite file.

mod support;

mod cli;
mod end_to_end;
mod init;
mod interop;
mod metrics;
mod packaging;
mod plot;
mod rule_safety;
mod service;
mod shutdown;
