//! Configuration: `homewright.yaml` read into a raw serde mirror ([`raw`]), then validated into the typed
//! [`Config`] the rest of the engine uses (`validate`). Every problem is reported at once, each with
//! the key it belongs to and its line, and secrets never reach a log or an error.

pub mod gpio;
mod locate;
pub mod outbound;
pub mod raw;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use outbound::OutboundConfig;
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
    /// The house's page, when configured.
    pub web: Option<WebConfig>,
    /// Notification channels, the hosts `http()` may call, and how deliveries are tried.
    pub outbound: OutboundConfig,
    /// Replication of the history to PostgreSQL, when configured.
    pub replicate: Option<ReplicateConfig>,
}

/// How the engine talks to the broker.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Where to connect; with `broker.embedded: true`, the embedded broker's listen address (with
    /// `auto`, the engine points it there at start when it starts that broker).
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

/// PEM material for TLS, read from the files `mqtt.tls` or `history.replicate.tls` names when the config is loaded, so that a
/// missing or unreadable file is a config problem rather than a connection failure.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The CA file, for messages.
    pub ca_path: PathBuf,
    /// The CA certificate(s) the server's certificate must chain to.
    pub ca: Vec<u8>,
    /// A client certificate chain and its private key, for servers that require one.
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
    /// The file the password was read from (the config itself, or `mqtt.password_file`); `None` for
    /// `mqtt.password_env`.
    pub kept_in: Option<PathBuf>,
}

impl Credentials {
    /// A warning when other users of the machine can read the file holding the password.
    pub fn exposure(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let file = self.kept_in.as_ref()?;
        let mode = std::fs::metadata(file).ok()?.permissions().mode();
        (mode & 0o004 != 0).then(|| {
            format!(
                "{} holds the MQTT password and every user of this machine can read it (mode {:o}): run `chmod o-r {}`, or keep the password in mqtt.password_file or mqtt.password_env",
                file.display(),
                mode & 0o777,
                file.display()
            )
        })
    }
}

/// A password: its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for handing to the MQTT client or into a request, and nothing else.
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
    /// `history.replicate.tls`: TLS to the server, its certificate checked against this CA (and the
    /// system's) and its host name (as `sslmode=verify-full`).
    pub tls: Option<TlsConfig>,
}

/// The embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub embedded: Embedded,
    pub listen: SocketAddr,
    /// Where the embedded broker keeps retained messages and sessions across restarts.
    pub state_dir: PathBuf,
}

/// `broker.embedded`: whether the engine runs its own broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// Use the broker that answers at `mqtt.host:mqtt.port`; start the embedded one only when nothing
    /// listens there.
    Auto,
    /// Always start the embedded broker, and connect to it.
    Always,
    /// Never: connect to `mqtt.host:mqtt.port`, retrying until a broker answers.
    Never,
}

/// Why the embedded broker may not listen on `listen` without a login, or None when it may: on an
/// address other machines can reach, every client must log in.
pub fn login_required(listen: SocketAddr, credentials: Option<&Credentials>) -> Option<String> {
    if listen.ip().is_loopback() || credentials.is_some() {
        return None;
    }
    Some(format!(
        "the embedded broker would listen on {listen}, which other machines can reach, without a \
         login: set mqtt.username and a password (mqtt.password, mqtt.password_file or \
         mqtt.password_env) that every client must then use, or set broker.listen to 127.0.0.1:{}",
        listen.port()
    ))
}

/// The SQLite history.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    /// How long messages are kept, by topic: the first matching entry wins, no match keeps forever.
    pub retention: Vec<Retention>,
    /// How long the trace of each rule run is kept.
    pub rule_runs_keep: Duration,
    /// Longest a received message waits for its commit (QoS 1/2 messages are committed sooner when the
    /// broker's in-flight window asks for it): what a power cut can cost at QoS 0.
    pub commit_interval: Duration,
}

/// `database.commit_interval` when not configured: long enough that a commit carries a house's
/// messages of several seconds (an SD card wears by the pages each commit rewrites), short enough that
/// a power cut costs little at QoS 0 and the history is seconds behind at most.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// The longest `database.commit_interval` accepted.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(60);

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
    /// When a rule that feeds itself is paused.
    pub loop_guard: crate::rules::pace::LoopGuard,
    /// Memory one run may take, and one rule may keep in its captured variables.
    pub max_run_memory: usize,
    /// One `store_set` value (key and JSON), one timer's captured variables.
    pub max_value_size: usize,
    /// All `store_set` values together; all pending timers' captured variables together.
    pub max_store_size: usize,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

/// `web:` the house's page.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// Asked at the login page; `None` (only allowed on loopback) leaves the pages open.
    pub password: Option<Secret>,
    /// Whether `/metrics` on `listen` asks for the login too (a Prometheus server cannot log in).
    pub metrics_login: bool,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The OS error is part of the message and deliberately not a `source`: a report that prints
    /// the chain would show it twice.
    #[error("cannot read config {path}: {error} ({})", read_hint(.error))]
    Read { path: PathBuf, error: std::io::Error },
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

/// What to do about a config that cannot be read: a missing one is usually a first run in a new
/// directory.
fn read_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::NotFound {
        "run `homewright init` to write one here, or pass another file with -c FILE"
    } else {
        "pass another file with -c FILE"
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    from_yaml(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_password_file_others_can_read_is_named_and_a_private_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("homewright.yaml");
        std::fs::write(&file, "mqtt: { password: x }").unwrap();
        let credentials = Credentials {
            username: "alice".into(),
            password: Secret::new("x".into()),
            kept_in: Some(file.clone()),
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = credentials.exposure().unwrap_or_default();
        assert!(
            warning.contains("(mode 644)") && warning.contains("chmod o-r"),
            "{warning}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(credentials.exposure(), None);
        let from_env = Credentials {
            kept_in: None,
            ..credentials
        };
        assert_eq!(from_env.exposure(), None);
    }
}
