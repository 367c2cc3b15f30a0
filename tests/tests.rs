//! One integration-test binary (as ripgrep does): a real broker over TCP, a real SQLite file.

mod support;

mod auto_broker;
mod bad_input;
mod cli;
mod commits;
mod crash;
mod database_faults;
mod embedded_broker;
mod end_to_end;
mod examples;
mod first_week;
mod held;
mod init;
mod interop;
mod memory_bombs;
mod metrics;
mod outage;
mod outbound;
mod packaging;
mod plot;
mod qos2;
mod refused_publishes;
mod relays;
mod reload;
mod replication;
mod retention;
mod rule_safety;
mod rules_md;
mod scenarios;
mod scheduler;
mod security;
mod service;
mod shutdown;
mod sql_docs;
mod traces;
