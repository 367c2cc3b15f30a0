//! homewright: a rule-based home automation engine.
//!
//! ```text
//! broker -> mqtt::subscriber -+-> ingest -> store (messages; ack after commit)
//!                             |
//!                             +-> rules (Rhai, own thread) -> actions -+-> mqtt::publisher -> broker
//!                                  ^                                   +-> recorder -> store (audit)
//!                   scheduler -----+ (deadlines drained on the rule thread)
//! ```
//!
//! - [`config`]: `homewright.yaml`, raw then validated, every problem at once.
//! - [`broker`]: the embedded rumqttd, with its own port check.
//! - [`mqtt`]: the subscriber (ingest source, manual acks) and publisher connections; topic filters.
//! - [`ingest`]: batches received messages into the store and acknowledges them after commit.
//! - [`rules`]: the hardened Rhai engine, the rule API, loading, and the rule thread.
//! - [`scheduler`]: the clock (wall or virtual), the deadline queue, every/cron/sun calendars.
//! - [`scenario`]: scenario files for `homewright test`, played on a simulation.
//! - [`simulation`]: rules on virtual time over a real history file, without a broker.
//! - [`actions`]: performs what rules asked for and records it, with every rule run.
//! - [`gpio`]: relays: the decision model (rule thread) and the rppal or simulated backend (actions).
//! - [`store`]: SQLite via sqlx: migrations, batched writes, the outbox, the read-only history.
//! - [`retention`]: deletes messages older than `database.retention` allows, in small batches.
//! - [`event`]: what crosses the stages.
//! - [`maintenance`]: purges old rule-run traces in small batches.
//! - [`app`]: the supervisor that wires the stages and drains them on shutdown.
//! - [`metrics`]: counters the stages bump, and the optional Prometheus endpoint.
//! - [`notify`]: systemd readiness, watchdog and stopping notifications.
//! - [`sched`]: marks the rule thread and the history writer as batch threads for the kernel.
//! - [`plot`]: a topic's history as an SVG/PNG chart or a terminal chart.
//! - [`logging`]: log lines for a terminal, the systemd journal, or tools (JSON).
//! - [`cli`]: the command line.

pub mod actions;
pub mod app;
pub mod broker;
pub mod cli;
pub mod config;
pub mod event;
pub mod housekeeping;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod os;
pub mod plot;
pub mod recorder;
pub mod relays;
pub mod rules;
pub mod scheduler;
pub mod sim;
pub mod store;
