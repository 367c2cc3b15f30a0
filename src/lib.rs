//! homewright: a rule-based home automation engine.
//!
//! ```text
//! broker -> mqtt::subscriber -+-> ingest -> store (messages; ack after commit)
//!                             |
//!                             +-> rules (Rhai, own thread) -+-> actions (ActionRequest) -+-> mqtt::publisher -> broker
//!                                  ^                        |                            +-> relays::driver (GPIO)
//!                   scheduler -----+                        |                            +-> outbound -> HTTP (notify, http)
//!                   (deadlines drained on the rule thread)  +-> recorder <---------------+ (performed actions)
//!                                                                  |  (Output: runs, store_set, timers, relay states)
//!                                                                  +-> store (trace + state, one transaction)
//!                                           housekeeping -> store (retention, old rule runs)
//! ```
//!
//! In data-flow order (`docs/architecture.md` has the whole map):
//! - [`config`]: `homewright.yaml`, raw then validated, every problem at once.
//! - [`broker`]: `broker.embedded` decided at start (auto probes for a broker), and the embedded mqtt5
//!   broker (feature `embedded-broker`).
//! - [`mqtt`]: the subscriber (ingest source, manual acks) and publisher (outbox) connections, topic
//!   filters, and every reach into rumqttc's internals (`mqtt::rumqttc_ext`).
//! - [`ingest`]: batches received messages into the store and acknowledges them after commit.
//! - [`event`]: what crosses the stages: messages, events, a rule run's output, an action request.
//! - [`rules`]: the hardened Rhai engine, the rule API, loading and reloading, and the rule thread.
//! - [`scheduler`]: the clock (wall or virtual), the deadline queue, every/cron/sun calendars.
//! - [`actions`]: performs what rules asked for (publishes, relay switches), on a channel of actions only.
//! - [`outbound`]: notifications and HTTP calls, delivered through a persistent outbox (`deliveries`).
//! - [`relays`]: the decision model (rule thread), MQTT commands, Home Assistant discovery, the driver
//!   and its rppal or simulated backend.
//! - [`recorder`]: turns rule outputs into trace and state rows and writes them in batches.
//! - [`store`]: SQLite via sqlx: migrations, messages, the trace, the rules' state, the outbox,
//!   housekeeping SQL, and the read-only history; and the shared history on PostgreSQL.
//! - [`housekeeping`]: one stage for the retention purge and the purge of old rule runs.
//! - [`replicate`]: one stage that copies the history to PostgreSQL (`history.replicate`).
//! - [`app`]: the supervisor that wires the stages and drains them on shutdown.
//! - [`sim`]: rules on virtual time over a real history file (scenarios, replay, tests).
//! - [`metrics`]: counters the stages bump, rendered for Prometheus.
//! - [`web`]: the HTTP server: the house's page (`web.listen`) and `/metrics`.
//! - [`os`]: systemd notifications, the ingest health the watchdog vouches for, and the kernel's
//!   thread policy.
//! - [`plot`]: a topic's history as an SVG/PNG chart or a terminal chart.
//! - [`logging`]: log lines for a terminal, the systemd journal, or tools (JSON).
//! - [`cli`]: the command line.

// Nothing a user or the network can influence may panic the engine; tests may unwrap freely.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

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
pub mod outbound;
pub mod plot;
pub mod recorder;
pub mod relays;
pub mod replicate;
pub mod rules;
pub mod scheduler;
pub mod sim;
pub mod store;
pub mod web;
