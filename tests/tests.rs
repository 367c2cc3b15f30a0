//! One integration-test binary (as ripgrep does): a real broker over TCP, a real SQLite file.

mod support;

mod bad_input;
mod cli;
mod crash;
mod database_faults;
mod end_to_end;
mod examples;
mod init;
mod interop;
mod metrics;
mod outage;
mod packaging;
mod plot;
mod relays;
mod reload;
mod replication;
mod retention;
mod rule_safety;
mod scenarios;
mod scheduler;
mod security;
mod service;
mod shutdown;
mod traces;
