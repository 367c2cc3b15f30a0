//! One integration-test binary (as ripgrep does): a real broker over TCP, a real SQLite file.

mod support;

mod cli;
mod end_to_end;
mod examples;
mod init;
mod interop;
mod metrics;
mod packaging;
mod plot;
mod relays;
mod reload;
mod rule_safety;
mod scenarios;
mod scheduler;
mod service;
mod shutdown;
mod traces;
