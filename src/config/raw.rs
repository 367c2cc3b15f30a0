//! The serde mirror of `homewright.yaml`: exactly the keys a user may write, nothing typed yet.
//!
//! No `deny_unknown_fields`: a key these types do not know is collected with its path while the file is
//! read (`validate::from_yaml`, with serde_ignored) and reported as an error together with every other
//! problem, rather than a silently ignored setting or the only error shown. Values stay as written (strings for durations and sizes) so that validation can
//! report every problem at once with the key it belongs to.

use serde::Deserialize;

/// The whole file. Every section is optional; missing ones take their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub mqtt: RawMqtt,
    pub broker: RawBroker,
    pub database: RawDatabase,
    pub rules: RawRules,
    pub location: RawLocation,
    pub gpio: super::gpio::RawGpio,
    pub homeassistant: super::gpio::RawHomeAssistant,
    pub metrics: RawMetrics,
    /// Notification channels by name.
    pub notify: std::collections::BTreeMap<String, super::outbound::RawChannel>,
    pub http: super::outbound::RawHttp,
    pub history: RawHistory,
    pub web: RawWeb,
}

/// `mqtt:` the connection the engine ingests from and publishes to.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMqtt {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub keep_alive: Option<String>,
    pub subscribe: Option<Vec<String>>,
    pub qos: Option<u8>,
    pub base_topic: Option<String>,
    /// A number of bytes or a size such as `1MiB`.
    pub max_packet_size: Option<serde_yaml::Value>,
    pub tls: Option<RawTls>,
}

/// `mqtt.tls:` PEM files for a TLS connection to the broker.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `broker:` the in-process broker for a first run with nothing else installed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBroker {
    /// `auto`, `true` or `false`; kept as written so a wrong word is reported with its key.
    pub embedded: Option<serde_yaml::Value>,
    pub listen: Option<String>,
    pub state_dir: Option<String>,
}

/// `database:` where the history lives.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDatabase {
    pub path: Option<String>,
    pub retention: Option<Vec<RawRetention>>,
    /// How long `rule_runs` rows are kept, e.g. `14d`.
    pub rule_runs_keep: Option<String>,
    /// Longest a received message waits before it is committed, e.g. `10s`.
    pub commit_interval: Option<String>,
}

/// `location:` for sunrise/sunset and local time.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLocation {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub timezone: Option<String>,
}

/// One `database.retention` entry: how long messages on matching topics are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRetention {
    pub topics: Option<String>,
    pub keep: Option<String>,
}

/// `rules:` where the scripts are and how much one run may do.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRules {
    pub dir: Option<String>,
    pub max_operations: Option<u64>,
    pub timeout: Option<String>,
    pub loop_guard_rate: Option<u32>,
    pub loop_guard_pause: Option<String>,
    pub max_run_memory: Option<serde_yaml::Value>,
    pub max_value_size: Option<serde_yaml::Value>,
    pub max_store_size: Option<serde_yaml::Value>,
}

/// `metrics:` the optional Prometheus endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

/// `web:` the house's page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawWeb {
    pub listen: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub metrics_login: Option<bool>,
}

/// `history:` what happens to the history beyond the local file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistory {
    pub replicate: Option<RawReplicate>,
}

/// `history.replicate:` a PostgreSQL database that receives a copy of everything stored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReplicate {
    pub url: Option<String>,
    pub site: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub tls: Option<RawTls>,
}
