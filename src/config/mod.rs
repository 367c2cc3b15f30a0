//! Configuration: `homewright.yaml` read into a raw serde mirror ([`raw`]), then validated into the typed
//! [`Config`] the rest of the engine uses (`validate`). Every problem is reported at once, each with
//! the key it belongs to and its line, and secrets never reach a log or an error.

pub mod gpio;
mod locate;
pub mod raw;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::from_yaml;

/// The file `homewright run` reads when no `-c` is given.
pub const DEFAULT_PATH: &str = "homewright.yaml";

/// A validated configuration. Relative paths in the file are resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub mqtt: MqttConfig,
    pub broker: BrokerConfig,
    pub database: DatabaseConfig,
    pub rules: RulesConfig,
    /// Where the house is, and its time zone (the system's when not configured).
    pub location: crate::scheduler::Location,
    /// Relays on GPIO pins.
    pub gpio: gpio::GpioConfig,
    pub metrics: MetricsConfig,
    /// Replication of the history to PostgreSQL, when configured.
    pub replicate: Option<ReplicateConfig>,
}

/// How the engine talks to the broker.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Where to connect; with the embedded broker, its listen address.
    pub host: String,
    pub port: u16,
    /// The ingest connection's id; the publishing connection uses `<client_id>-out`. Fixed, so the
    /// broker keeps our session (and the messages we have not acknowledged) across restarts.
    pub client_id: String,
    pub credentials: Option<Credentials>,
    pub keep_alive: Duration,
    pub subscribe: Vec<String>,
    pub qos: u8,
    pub base_topic: String,
    /// Largest packet accepted or sent, in bytes.
    pub max_packet_size: usize,
    /// TLS to the broker, when configured.
    pub tls: Option<TlsConfig>,
}

/// PEM material for TLS, read from the files `mqtt.tls` names when the config is loaded, so that a
/// missing or unreadable file is a config problem rather than a connection failure.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The CA file, for messages.
    pub ca_path: PathBuf,
    /// The CA certificate(s) the broker's certificate must chain to.
    pub ca: Vec<u8>,
    /// A client certificate chain and its private key, for brokers that require one.
    pub client: Option<ClientCert>,
}

/// A client certificate chain and its key (PEM); the key never shows in `Debug`.
#[derive(Clone)]
pub struct ClientCert {
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCert { chain, key: *** }")
    }
}

impl MqttConfig {
    /// `<base_topic>/status`, where `online` and `offline` are published.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.base_topic)
    }
}

/// A username and its password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// A password: its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for handing to the MQTT client and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `history.replicate`: where the history is copied to.
#[derive(Debug, Clone)]
pub struct ReplicateConfig {
    /// The `postgres://` URL as written (it may hold a password, so it is a secret).
    pub url: Secret,
    /// `user@host:port/database`, for messages.
    pub target: String,
    /// The name this engine's rows carry in the shared database.
    pub site: String,
    /// From `password`, `password_file` or `password_env`; overrides one in the URL.
    pub password: Option<Secret>,
}

/// The embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub embedded: bool,
    pub listen: SocketAddr,
}

/// The SQLite history.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    /// How long messages are kept, by topic: the first matching entry wins, no match keeps forever.
    pub retention: Vec<Retention>,
    /// How long the trace of each rule run is kept.
    pub rule_runs_keep: Duration,
}

/// One retention rule: messages on topics matching `topics` are deleted once older than `keep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub topics: String,
    pub keep: Duration,
}

/// The rule scripts and their limits.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub dir: PathBuf,
    /// Rhai operations one run may take before it is stopped.
    pub max_operations: u64,
    /// Wall-clock time one run may take before it is stopped.
    pub timeout: Duration,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source} (pass another file with -c FILE)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", Problem::list(.0))]
    Invalid(Vec<Problem>),
}

/// One problem in a config file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key path, e.g. `mqtt.port`; empty for the document as a whole.
    pub key: String,
    pub message: String,
}

impl Problem {
    fn list(problems: &[Problem]) -> String {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        lines.join("\n")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}:{}", self.column.unwrap_or(1))?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_yaml(&text, path)
}
