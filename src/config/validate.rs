//! Turns the raw config into typed values, collecting every problem with its key path and line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::locate;
use super::raw::{RawConfig, RawMqtt, RawReplicate, RawTls};
use super::units::{parse_duration, parse_size};
use super::{
    BrokerConfig, ClientCert, Config, ConfigError, Credentials, DatabaseConfig, Embedded, MetricsConfig,
    MqttConfig, Problem, ReplicateConfig, Retention, RulesConfig, Secret, TlsConfig, WebConfig,
};
use crate::scheduler::{Location, Zone};

/// The largest packet MQTT 3.1.1 can carry (its remaining-length limit).
const MQTT_MAX_PACKET: u64 = 268_435_455;

/// Parses and validates config text that was read from `source` (used for messages and to resolve
/// relative paths).
pub fn from_yaml(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let mut unknown = Vec::new();
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|e| ConfigError::Invalid(vec![syntax_problem(&e, source)]))?
    };
    let mut check = Checker {
        text,
        source,
        problems: Vec::new(),
    };
    for path in unknown {
        check.unknown_key(&path);
    }
    let base_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let database_path = resolve(
        &base_dir,
        raw.database.path.as_deref().unwrap_or("data/history.db"),
    );
    let broker = check.broker(&raw, &base_dir, &database_path);
    let mqtt = check.mqtt(&raw.mqtt, &broker);
    if broker.embedded == Embedded::Always
        && let Some(message) = super::login_required(broker.listen, mqtt.credentials.as_ref())
    {
        check.problem("broker.listen", message);
    }
    let database = DatabaseConfig {
        path: database_path,
        retention: check.retention(&raw),
        rule_runs_keep: check.duration(
            "database.rule_runs_keep",
            raw.database.rule_runs_keep.as_deref(),
            Duration::from_secs(14 * 86_400),
        ),
        commit_interval: check.commit_interval(&raw),
    };
    let rules = check.rules(&raw, &base_dir);
    let location = check.location(&raw);
    let gpio = super::gpio::validate(&raw.gpio, &raw.homeassistant, &mut |key, message| {
        check.problem(key, message)
    });
    let metrics = check.metrics(&raw);
    let web = check.web(&raw);
    let outbound = super::outbound::validate(&raw.notify, &raw.http, &base_dir, &mut |key, message| {
        check.problem(key, message)
    });
    let replicate = raw.history.replicate.as_ref().and_then(|r| check.replicate(r));
    if !check.problems.is_empty() {
        return Err(ConfigError::Invalid(check.problems));
    }
    Ok(Config {
        source: source.to_path_buf(),
        mqtt,
        broker,
        database,
        rules,
        location,
        gpio,
        metrics,
        web,
        outbound,
        replicate,
    })
}

fn syntax_problem(error: &serde_yaml::Error, source: &Path) -> Problem {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(loc) = &location {
        // serde_yaml appends the position in words; we print it as FILE:LINE:COL instead.
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    Problem {
        file: source.to_path_buf(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        key: String::new(),
        message,
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

struct Checker<'a> {
    text: &'a str,
    source: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let segments: Vec<&str> = key.split('.').collect();
        let position = locate(self.text, &segments);
        self.problems.push(Problem {
            file: self.source.to_path_buf(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// A key no setting has, e.g. `mqtt.prot`: reported at its line under its parent's name.
    fn unknown_key(&mut self, path: &str) {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let segments: Vec<&str> = path.split('.').collect();
        let position = locate(self.text, &segments);
        let parent_name = if parent.is_empty() {
            "the top level"
        } else {
            parent
        };
        self.problems.push(Problem {
            file: self.source.to_path_buf(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            key: parent.to_string(),
            message: format!(
                "unknown field `{key}`: {parent_name} has no such setting (check its spelling and indentation)"
            ),
        });
    }

    /// A path from the file, relative to the config file's directory unless absolute.
    fn relative(&self, path: &str) -> PathBuf {
        resolve(self.source.parent().unwrap_or(Path::new("")), path)
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.problem(key, e);
                default
            }
        }
    }

    /// A size of the rules' limits: 64 KiB to 1 GiB, written like 65536, 512KiB or 16MiB.
    fn size(&mut self, key: &str, value: Option<&serde_yaml::Value>, default: usize) -> usize {
        let parsed = match value {
            None => return default,
            Some(serde_yaml::Value::Number(n)) => n.as_u64().ok_or_else(|| format!("`{n}` is not a size")),
            Some(serde_yaml::Value::String(s)) => parse_size(s),
            Some(_) => Err("write a size like 65536, 512KiB or 16MiB".into()),
        };
        match parsed {
            Ok(size) if ((64 << 10)..=(1 << 30)).contains(&size) => usize::try_from(size).unwrap_or(default),
            Ok(size) => {
                self.problem(key, format!("{size} bytes is outside 64KiB..1GiB"));
                default
            }
            Err(e) => {
                self.problem(key, e);
                default
            }
        }
    }

    fn commit_interval(&mut self, raw: &RawConfig) -> Duration {
        let key = "database.commit_interval";
        let default = super::DEFAULT_COMMIT_INTERVAL;
        let interval = self.duration(key, raw.database.commit_interval.as_deref(), default);
        if interval > super::MAX_COMMIT_INTERVAL {
            self.problem(
                key,
                format!(
                    "at most {}s: a power cut loses up to this much of the QoS 0 messages",
                    super::MAX_COMMIT_INTERVAL.as_secs()
                ),
            );
            return default;
        }
        interval
    }

    fn broker(&mut self, raw: &RawConfig, base_dir: &Path, database: &Path) -> BrokerConfig {
        let listen = raw.broker.listen.as_deref().unwrap_or("127.0.0.1:1883");
        let listen = listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            self.problem(
                "broker.listen",
                format!("`{listen}` is not an address and port (write it like 127.0.0.1:1883)"),
            );
            SocketAddr::from(([127, 0, 0, 1], 1883))
        });
        let embedded = match &raw.broker.embedded {
            None => Embedded::Auto,
            Some(serde_yaml::Value::Bool(true)) => Embedded::Always,
            Some(serde_yaml::Value::Bool(false)) => Embedded::Never,
            Some(serde_yaml::Value::String(word)) if word == "auto" => Embedded::Auto,
            Some(other) => {
                let written = serde_yaml::to_string(other).unwrap_or_default();
                self.problem(
                    "broker.embedded",
                    format!("`{}` is not one of auto, true or false", written.trim_end()),
                );
                Embedded::Auto
            }
        };
        // The embedded broker does not speak TLS: a TLS broker is always someone else's. `true` with
        // TLS is reported by the TLS check.
        let embedded = match embedded {
            Embedded::Auto if raw.mqtt.tls.is_some() => Embedded::Never,
            mode => mode,
        };
        #[cfg(not(feature = "embedded-broker"))]
        let embedded = match embedded {
            Embedded::Always => {
                self.problem(
                    "broker.embedded",
                    "this build has no embedded broker (it was built without the `embedded-broker` \
                     feature): set broker.embedded: false and point mqtt.host and mqtt.port at your broker",
                );
                Embedded::Never
            }
            _ => Embedded::Never,
        };
        let state_dir = match raw.broker.state_dir.as_deref() {
            Some(dir) => resolve(base_dir, dir),
            None => database
                .parent()
                .map(|dir| dir.join("broker"))
                .unwrap_or_else(|| PathBuf::from("broker")),
        };
        BrokerConfig {
            embedded,
            listen,
            state_dir,
        }
    }

    fn metrics(&mut self, raw: &RawConfig) -> MetricsConfig {
        let listen = raw.metrics.listen.as_deref().and_then(|listen| {
            let parsed = listen.parse::<SocketAddr>().ok();
            if parsed.is_none() {
                self.problem(
                    "metrics.listen",
                    format!("`{listen}` is not an address and port (write it like 127.0.0.1:9184)"),
                );
            }
            parsed
        });
        MetricsConfig { listen }
    }

    fn web(&mut self, raw: &RawConfig) -> Option<WebConfig> {
        let web = &raw.web;
        let password = self.password("web", [&web.password, &web.password_file, &web.password_env]);
        let listen = web.listen.as_deref()?;
        let Ok(listen) = listen.parse::<SocketAddr>() else {
            self.problem(
                "web.listen",
                format!("`{listen}` is not an address and port (write it like 127.0.0.1:8080)"),
            );
            return None;
        };
        let password = password?.filter(|p| !p.is_empty());
        if password.is_none() && !listen.ip().is_loopback() {
            self.problem(
                "web.password",
                format!(
                    "web.listen is {listen}, which other machines can reach: set web.password (or \
                     web.password_file or web.password_env) that the page then asks for, or listen on \
                     127.0.0.1:{}",
                    listen.port()
                ),
            );
            return None;
        }
        Some(WebConfig {
            listen,
            password: password.map(Secret::new),
            metrics_login: web.metrics_login.unwrap_or(true),
        })
    }

    fn mqtt(&mut self, raw: &RawMqtt, broker: &BrokerConfig) -> MqttConfig {
        let (host, port) = if broker.embedded == Embedded::Always {
            // A broker listening on every interface is reached through loopback.
            let ip = match broker.listen.ip() {
                ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip => ip,
            };
            (ip.to_string(), broker.listen.port())
        } else {
            (
                raw.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
                raw.port.unwrap_or(1883),
            )
        };
        let client_id = raw.client_id.clone().unwrap_or_else(|| "homewright".into());
        if client_id.is_empty() || client_id.contains(['+', '#', '/']) {
            self.problem(
                "mqtt.client_id",
                "must be a non-empty name without `/`, `+` or `#`",
            );
        }
        let keep_alive = self.duration(
            "mqtt.keep_alive",
            raw.keep_alive.as_deref(),
            Duration::from_secs(30),
        );
        if keep_alive < Duration::from_secs(1) || keep_alive.as_secs() > u64::from(u16::MAX) {
            self.problem("mqtt.keep_alive", "must be between 1s and 18h");
        }
        let subscribe = raw.subscribe.clone().unwrap_or_else(|| vec!["#".into()]);
        if subscribe.is_empty() {
            self.problem("mqtt.subscribe", "needs at least one topic filter, e.g. [\"#\"]");
        }
        for filter in &subscribe {
            if !crate::mqtt::topic::valid_filter(filter) {
                self.problem(
                    "mqtt.subscribe",
                    format!("`{filter}` is not a valid MQTT topic filter"),
                );
            }
        }
        let qos = raw.qos.unwrap_or(1);
        if qos > 2 {
            self.problem("mqtt.qos", format!("{qos} is not an MQTT QoS (0, 1 or 2)"));
        }
        let base_topic = raw.base_topic.clone().unwrap_or_else(|| "homewright".into());
        if !crate::mqtt::topic::valid_topic(&base_topic) || base_topic.ends_with('/') {
            self.problem(
                "mqtt.base_topic",
                format!("`{base_topic}` is not a topic name (no wildcards, no trailing `/`)"),
            );
        }
        let max_packet_size = self.packet_size(raw);
        let credentials = self.credentials(raw);
        let tls = self.tls(raw, broker);
        MqttConfig {
            host,
            port,
            client_id,
            credentials,
            keep_alive,
            subscribe,
            qos,
            base_topic,
            max_packet_size,
            tls,
        }
    }

    fn tls(&mut self, raw: &RawMqtt, broker: &BrokerConfig) -> Option<TlsConfig> {
        let tls = raw.tls.as_ref()?;
        if broker.embedded == Embedded::Always {
            self.problem(
                "mqtt.tls",
                "the embedded broker does not speak TLS; set broker.embedded: false to use a TLS broker",
            );
            return None;
        }
        self.tls_files("mqtt.tls", tls, "the broker's certificate")
    }

    /// The PEM files of the `tls:` at `section` (`mqtt.tls`, `history.replicate.tls`), read now so
    /// that a missing file is a config problem; `signed` says whose certificate the CA signed.
    fn tls_files(&mut self, section: &str, tls: &RawTls, signed: &str) -> Option<TlsConfig> {
        // Every problem at once: the CA and the client pair are checked independently.
        let ca = match &tls.ca {
            Some(path) => self
                .pem_file(&format!("{section}.ca"), path, "CERTIFICATE")
                .map(|pem| (self.relative(path), pem)),
            None => {
                self.problem(
                    &format!("{section}.ca"),
                    format!("missing: the PEM file of the CA that signed {signed}"),
                );
                None
            }
        };
        let client = match (&tls.cert, &tls.key) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => {
                let chain = self.pem_file(&format!("{section}.cert"), cert, "CERTIFICATE");
                let key = self.pem_file(&format!("{section}.key"), key, "PRIVATE KEY");
                chain.zip(key).map(|(chain, key)| Some(ClientCert { chain, key }))
            }
            (Some(_), None) => {
                self.problem(
                    &format!("{section}.key"),
                    "missing: a client certificate needs its key",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    &format!("{section}.cert"),
                    "missing: a client key needs its certificate",
                );
                None
            }
        };
        let ((ca_path, ca), client) = ca.zip(client)?;
        Some(TlsConfig { ca_path, ca, client })
    }

    /// Reads a PEM file and checks that it holds a block whose label ends with `label` (`CERTIFICATE`,
    /// or `PRIVATE KEY`, which also matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
    fn pem_file(&mut self, key: &str, path: &str, label: &str) -> Option<Vec<u8>> {
        let path = self.relative(path);
        let path = path.display();
        let bytes = match std::fs::read(path.to_string()) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.problem(key, format!("cannot read {path}: {e}"));
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let found = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
            .any(|rest| rest.trim_end_matches('-').ends_with(label));
        if !found {
            self.problem(
                key,
                format!("{path} holds no PEM `{label}` block (expected a file starting with -----BEGIN ...{label}-----)"),
            );
            return None;
        }
        Some(bytes)
    }

    fn packet_size(&mut self, raw: &RawMqtt) -> usize {
        const DEFAULT: u64 = 1 << 20;
        let parsed = match &raw.max_packet_size {
            None => Ok(DEFAULT),
            Some(serde_yaml::Value::Number(n)) => n.as_u64().ok_or_else(|| format!("`{n}` is not a size")),
            Some(serde_yaml::Value::String(s)) => parse_size(s),
            Some(_) => Err("write a size like 65536, 512KiB or 1MiB".into()),
        };
        match parsed {
            Ok(size) if (1024..=MQTT_MAX_PACKET).contains(&size) => size as usize,
            Ok(size) => {
                self.problem(
                    "mqtt.max_packet_size",
                    format!("{size} bytes is outside 1KiB..256MiB"),
                );
                DEFAULT as usize
            }
            Err(e) => {
                self.problem("mqtt.max_packet_size", e);
                DEFAULT as usize
            }
        }
    }

    fn credentials(&mut self, raw: &RawMqtt) -> Option<Credentials> {
        let kept_in = if raw.password.is_some() {
            Some(self.source.to_path_buf())
        } else {
            raw.password_file.as_deref().map(|file| self.relative(file))
        };
        let password = self.password("mqtt", [&raw.password, &raw.password_file, &raw.password_env])?;
        match (&raw.username, password) {
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: Secret::new(password.unwrap_or_default()),
                kept_in,
            }),
            (None, Some(_)) => {
                self.problem("mqtt.username", "a password is set but no username");
                None
            }
            (None, None) => None,
        }
    }

    fn replicate(&mut self, raw: &RawReplicate) -> Option<ReplicateConfig> {
        let password = self.password(
            "history.replicate",
            [&raw.password, &raw.password_file, &raw.password_env],
        );
        let site = match raw.site.as_deref() {
            None => {
                self.problem(
                    "history.replicate.site",
                    "missing: name this house (e.g. `site: home`); its rows carry the name in the shared database",
                );
                None
            }
            Some(site)
                if site.is_empty()
                    || site.len() > 64
                    || !site
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                self.problem(
                    "history.replicate.site",
                    format!("`{site}` is not a site name: use 1 to 64 letters, digits, `-` or `_`"),
                );
                None
            }
            Some(site) => Some(site.to_string()),
        };
        let url = match raw.url.as_deref() {
            None => {
                self.problem(
                    "history.replicate.url",
                    "missing: the PostgreSQL database, e.g. `postgres://homewright@nas:5432/history`",
                );
                None
            }
            Some(url) => match crate::store::postgres::describe_url(url) {
                Ok(target) => Some((Secret::new(url.to_string()), target)),
                Err(e) => {
                    self.problem("history.replicate.url", e);
                    None
                }
            },
        };
        let tls = match &raw.tls {
            Some(tls) => Some(self.tls_files(
                "history.replicate.tls",
                tls,
                "the PostgreSQL server's certificate",
            )?),
            None => None,
        };
        let (url, target) = url?;
        Some(ReplicateConfig {
            url,
            target,
            site: site?,
            password: password?.map(Secret::new),
            tls,
        })
    }

    /// The password of `section` from one of `password`, `password_file`, `password_env`: `None` when
    /// a problem was reported, `Some(None)` when none is given.
    fn password(&mut self, section: &str, sources: [&Option<String>; 3]) -> Option<Option<String>> {
        let [password, password_file, password_env] = sources;
        let given = sources.iter().filter(|s| s.is_some()).count();
        if given > 1 {
            self.problem(
                &format!("{section}.password"),
                "give only one of password, password_file and password_env",
            );
            return None;
        }
        Some(if let Some(p) = password {
            Some(p.clone())
        } else if let Some(file) = password_file {
            match std::fs::read_to_string(self.relative(file)) {
                // A trailing newline is an editor's, not part of the password.
                Ok(p) => Some(p.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    self.problem(
                        &format!("{section}.password_file"),
                        format!("cannot read {file}: {e}"),
                    );
                    return None;
                }
            }
        } else if let Some(var) = password_env {
            match std::env::var(var) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.problem(
                        &format!("{section}.password_env"),
                        format!("the environment variable {var} is not set"),
                    );
                    return None;
                }
            }
        } else {
            None
        })
    }

    fn retention(&mut self, raw: &RawConfig) -> Vec<Retention> {
        let entries = raw.database.retention.as_deref().unwrap_or_default();
        let mut retention = Vec::with_capacity(entries.len());
        for entry in entries {
            let topics = match &entry.topics {
                Some(filter) if crate::mqtt::topic::valid_filter(filter) => Some(filter.clone()),
                Some(filter) => {
                    self.problem(
                        "database.retention.topics",
                        format!("`{filter}` is not a valid MQTT topic filter"),
                    );
                    None
                }
                None => {
                    self.problem(
                        "database.retention",
                        "each entry needs `topics` (a filter) and `keep` (a duration)",
                    );
                    None
                }
            };
            let keep = match entry.keep.as_deref().map(parse_duration) {
                Some(Ok(keep)) if !keep.is_zero() => Some(keep),
                Some(Ok(_)) => {
                    self.problem("database.retention.keep", "must be longer than 0s");
                    None
                }
                Some(Err(e)) => {
                    self.problem("database.retention.keep", e);
                    None
                }
                None => {
                    self.problem("database.retention.keep", "missing: how long to keep, e.g. 30d");
                    None
                }
            };
            if let (Some(topics), Some(keep)) = (topics, keep) {
                retention.push(Retention { topics, keep });
            }
        }
        retention
    }

    fn location(&mut self, raw: &RawConfig) -> Location {
        let timezone = match &raw.location.timezone {
            None => Zone::system(),
            Some(name) => Zone::named(name).unwrap_or_else(|message| {
                self.problem("location.timezone", message);
                Zone::utc()
            }),
        };
        let coordinates = match (raw.location.latitude, raw.location.longitude) {
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    self.problem("location.latitude", format!("{lat} is outside -90..90"));
                }
                if !(-180.0..=180.0).contains(&lon) {
                    self.problem("location.longitude", format!("{lon} is outside -180..180"));
                }
                Some((lat, lon))
            }
            (None, None) => None,
            (Some(_), None) => {
                self.problem("location.longitude", "is needed with location.latitude");
                None
            }
            (None, Some(_)) => {
                self.problem("location.latitude", "is needed with location.longitude");
                None
            }
        };
        Location {
            timezone,
            coordinates,
        }
    }

    fn rules(&mut self, raw: &RawConfig, base_dir: &Path) -> RulesConfig {
        let max_operations = raw.rules.max_operations.unwrap_or(1_000_000);
        if max_operations == 0 {
            self.problem("rules.max_operations", "must be at least 1");
        }
        let timeout = self.duration(
            "rules.timeout",
            raw.rules.timeout.as_deref(),
            Duration::from_secs(1),
        );
        if timeout.is_zero() {
            self.problem("rules.timeout", "must be longer than 0s");
        }
        let defaults = crate::rules::pace::LoopGuard::default();
        let pause = self.duration(
            "rules.loop_guard_pause",
            raw.rules.loop_guard_pause.as_deref(),
            Duration::from_millis(defaults.pause.unsigned_abs()),
        );
        if pause.is_zero() {
            self.problem("rules.loop_guard_pause", "must be longer than 0s");
        }
        let limits = crate::rules::Limits::default();
        let max_run_memory = self.size(
            "rules.max_run_memory",
            raw.rules.max_run_memory.as_ref(),
            limits.max_run_memory,
        );
        let max_value_size = self.size(
            "rules.max_value_size",
            raw.rules.max_value_size.as_ref(),
            limits.max_value_size,
        );
        let max_store_size = self.size(
            "rules.max_store_size",
            raw.rules.max_store_size.as_ref(),
            limits.max_store_size,
        );
        if max_value_size > max_store_size {
            self.problem(
                "rules.max_value_size",
                "must not be larger than rules.max_store_size",
            );
        }
        RulesConfig {
            dir: resolve(base_dir, raw.rules.dir.as_deref().unwrap_or("rules")),
            max_operations,
            timeout,
            max_run_memory,
            max_value_size,
            max_store_size,
            loop_guard: crate::rules::pace::LoopGuard {
                rate: raw.rules.loop_guard_rate.unwrap_or(defaults.rate),
                pause: i64::try_from(pause.as_millis()).unwrap_or(i64::MAX),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        from_yaml(text, Path::new("/etc/hw/homewright.yaml")).map_err(|e| match e {
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = parse("").unwrap();
        #[cfg(feature = "embedded-broker")]
        assert_eq!(config.broker.embedded, Embedded::Auto);
        assert_eq!(config.broker.state_dir, Path::new("/etc/hw/data/broker"));
        assert_eq!((config.mqtt.host.as_str(), config.mqtt.port), ("127.0.0.1", 1883));
        assert_eq!(config.mqtt.max_packet_size, 1 << 20);
        assert_eq!(config.database.path, Path::new("/etc/hw/data/history.db"));
        assert_eq!(config.rules.dir, Path::new("/etc/hw/rules"));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let errors = parse("mqtt:\n  host: x\n  prot: 1883\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("/etc/hw/homewright.yaml:3:3: mqtt: unknown field `prot`"),
            "{errors:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_key_and_line() {
        let text = "broker:\n  embedded: false\nmqtt:\n  keep_alive: soon\n  qos: 3\n  subscribe: [\"a/#/b\"]\nrules:\n  timeout: 0s\n";
        let errors = parse(text).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "/etc/hw/homewright.yaml:4:3: mqtt.keep_alive: `soon` is not a duration (write it like 500ms, 30s, 5m, 2h or 30d)",
                "/etc/hw/homewright.yaml:6:3: mqtt.subscribe: `a/#/b` is not a valid MQTT topic filter",
                "/etc/hw/homewright.yaml:5:3: mqtt.qos: 3 is not an MQTT QoS (0, 1 or 2)",
                "/etc/hw/homewright.yaml:8:3: rules.timeout: must be longer than 0s",
            ]
        );
    }

    #[test]
    fn a_password_never_appears_in_debug_output() {
        let config =
            parse("broker: { embedded: false }\nmqtt:\n  username: alice\n  password: hunter2\n").unwrap();
        let credentials = config.mqtt.credentials.clone().unwrap();
        assert_eq!(credentials.password.expose(), "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_missing_password_env_names_the_variable_not_a_value() {
        let errors = parse("mqtt:\n  username: a\n  password_env: HOMEWRIGHT_TEST_UNSET_VAR\n").unwrap_err();
        assert_eq!(
            errors,
            vec![
                "/etc/hw/homewright.yaml:3:3: mqtt.password_env: the environment variable HOMEWRIGHT_TEST_UNSET_VAR is not set"
            ]
        );
    }

    #[test]
    fn history_replicate_is_validated_by_key() {
        let config = parse(
            "history:\n  replicate:\n    url: postgres://hw@nas/history\n    site: cabin\n    password: pw\n",
        )
        .unwrap();
        let replicate = config.replicate.unwrap();
        assert_eq!(replicate.site, "cabin");
        assert_eq!(replicate.target, "hw@nas:5432/history");
        assert_eq!(replicate.password.unwrap().expose(), "pw");
        let errors = parse("history:\n  replicate:\n    url: mysql://nas/h\n    site: 'a b'\n").unwrap_err();
        assert!(
            errors[0].contains(":4:5: history.replicate.site: `a b` is not a site name"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains(":3:5: history.replicate.url: not a PostgreSQL URL"),
            "{errors:?}"
        );
        let errors = parse("history:\n  replicate:\n    url: postgres://nas/h\n").unwrap_err();
        assert!(
            errors[0].contains("history.replicate.site: missing"),
            "{errors:?}"
        );
        // TLS files are read with the config; a missing one is named by its key.
        let errors = parse(
            "history:\n  replicate:\n    url: postgres://nas/h\n    site: home\n    tls:\n      ca: /nonexistent/ca.pem\n      cert: c.pem\n",
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains(":6:7: history.replicate.tls.ca: cannot read /nonexistent/ca.pem")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("history.replicate.tls.key: missing")),
            "{errors:?}"
        );
    }

    #[test]
    fn location_is_validated() {
        let config =
            parse("location:\n  latitude: 52.37\n  longitude: 4.89\n  timezone: Europe/Amsterdam\n").unwrap();
        assert_eq!(config.location.timezone.name(), "Europe/Amsterdam");
        assert_eq!(config.location.coordinates, Some((52.37, 4.89)));
        let errors =
            parse("location:\n  latitude: 95\n  longitude: 4.89\n  timezone: Mars/Olympus\n").unwrap_err();
        assert_eq!(
            errors,
            vec![
                "/etc/hw/homewright.yaml:4:3: location.timezone: `Mars/Olympus` is not an IANA time zone (e.g. Europe/Amsterdam)",
                "/etc/hw/homewright.yaml:2:3: location.latitude: 95 is outside -90..90",
            ]
        );
    }

    #[test]
    fn commit_interval_has_a_default_and_a_ceiling() {
        let config = parse("database:\n  path: h.db\n").unwrap();
        assert_eq!(
            config.database.commit_interval,
            crate::config::DEFAULT_COMMIT_INTERVAL
        );
        let config = parse("database:\n  commit_interval: 500ms\n").unwrap();
        assert_eq!(config.database.commit_interval, Duration::from_millis(500));
        let errors = parse("database:\n  commit_interval: 2m\n").unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("database.commit_interval") && e.contains("at most 60s")),
            "{errors:?}"
        );
    }

    #[test]
    #[cfg(feature = "embedded-broker")]
    fn embedded_broker_on_all_interfaces_is_reached_on_loopback() {
        let config = parse(
            "broker:\n  embedded: true\n  listen: 0.0.0.0:18830\nmqtt:\n  host: elsewhere\n  username: a\n  password: b\n",
        )
        .unwrap();
        assert_eq!(
            (config.mqtt.host.as_str(), config.mqtt.port),
            ("127.0.0.1", 18830)
        );
    }

    #[test]
    #[cfg(feature = "embedded-broker")]
    fn an_embedded_broker_on_the_network_needs_a_login() {
        let errors = parse("broker:\n  embedded: true\n  listen: 0.0.0.0:1883\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "/etc/hw/homewright.yaml:3:3: broker.listen: the embedded broker would listen on 0.0.0.0:1883"
            ) && errors[0].contains("set mqtt.username and a password"),
            "{errors:?}"
        );
        assert!(parse("broker:\n  embedded: true\n  listen: 127.0.0.1:1883\n").is_ok());
        assert!(parse("broker:\n  embedded: true\n  listen: \"[::1]:1883\"\n").is_ok());
    }

    #[test]
    fn the_web_page_beyond_loopback_needs_a_password_and_never_shows_it() {
        assert!(parse("").unwrap().web.is_none(), "off unless configured");
        let open = parse("web:\n  listen: 127.0.0.1:8080\n").unwrap().web.unwrap();
        assert!(open.password.is_none() && open.metrics_login);
        let errors = parse("web:\n  listen: 0.0.0.0:8080\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("web.password: web.listen is 0.0.0.0:8080, which other machines can reach"),
            "{errors:?}"
        );
        let empty = parse("web:\n  listen: 192.168.1.2:8080\n  password: \"\"\n").unwrap_err();
        assert!(
            empty[0].contains("web.password"),
            "an empty password is none: {empty:?}"
        );
        let locked = parse("web:\n  listen: 0.0.0.0:8080\n  password: hunter2\n  metrics_login: false\n")
            .unwrap()
            .web
            .unwrap();
        assert!(!locked.metrics_login);
        assert!(!format!("{locked:?}").contains("hunter2"));
        let bad = parse("web:\n  listen: everywhere\n").unwrap_err();
        assert!(
            bad[0].contains("2:3: web.listen: `everywhere` is not an address and port"),
            "{bad:?}"
        );
    }

    #[test]
    fn broker_embedded_is_auto_true_or_false() {
        let mode = |text: &str| parse(text).map(|c| c.broker.embedded);
        #[cfg(feature = "embedded-broker")]
        {
            assert_eq!(mode("broker:\n  embedded: auto\n"), Ok(Embedded::Auto));
            assert_eq!(mode("broker:\n  embedded: true\n"), Ok(Embedded::Always));
            // A TLS broker is never the embedded one.
            assert_eq!(
                mode("broker:\n  embedded: auto\nmqtt:\n  tls: { ca: /nonexistent }\n").map_err(|e| e.len()),
                Err(1),
                "only the CA file is a problem"
            );
        }
        assert_eq!(mode("broker:\n  embedded: false\n"), Ok(Embedded::Never));
        assert_eq!(
            mode("broker:\n  embedded: sometimes\n"),
            Err(vec![
                "/etc/hw/homewright.yaml:2:3: broker.embedded: `sometimes` is not one of auto, true or false"
                    .to_string()
            ])
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const KEYS: [(&str, &str); 14] = [
            ("mqtt", "host"),
            ("mqtt", "port"),
            ("mqtt", "client_id"),
            ("mqtt", "keep_alive"),
            ("mqtt", "qos"),
            ("mqtt", "base_topic"),
            ("mqtt", "max_packet_size"),
            ("mqtt", "subscribe"),
            ("mqtt", "bogus"),
            ("broker", "embedded"),
            ("broker", "listen"),
            ("database", "path"),
            ("rules", "timeout"),
            ("rules", "max_operations"),
        ];

        fn scalar() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9#+/ .:]{0,10}".prop_map(|s| format!("{s:?}")),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                prop::collection::vec("[a-z#+/]{0,4}", 0..3).prop_map(|v| format!("{v:?}")),
                Just("~".to_string()),
            ]
        }

        /// A config file with random values for real (and one unknown) keys.
        fn config_text() -> impl Strategy<Value = String> {
            prop::collection::btree_map(0..KEYS.len(), scalar(), 0..8).prop_map(|values| {
                let mut text = String::new();
                let mut section = "";
                for (index, value) in values {
                    let (parent, key) = KEYS[index];
                    if parent != section {
                        text.push_str(&format!("{parent}:\n"));
                        section = parent;
                    }
                    text.push_str(&format!("  {key}: {value}\n"));
                }
                text
            })
        }

        proptest! {
            #[test]
            fn any_config_is_accepted_or_every_problem_is_located(text in config_text()) {
                match from_yaml(&text, Path::new("/etc/hw/homewright.yaml")) {
                    Ok(_) => {}
                    Err(ConfigError::Invalid(problems)) => {
                        prop_assert!(!problems.is_empty());
                        for problem in problems {
                            prop_assert!(!problem.key.is_empty() || problem.line.is_some(), "{}", problem);
                            prop_assert!(!problem.message.is_empty());
                        }
                    }
                    Err(other) => prop_assert!(false, "unexpected error {}", other),
                }
            }

            #[test]
            fn arbitrary_text_never_panics(text in "(.|\n){0,80}") {
                let _ = from_yaml(&text, Path::new("c.yaml"));
            }
        }
    }
}
