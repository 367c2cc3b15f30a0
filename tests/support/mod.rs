//! The test harness: a real broker over TCP on a free port of 127.0.0.1 (the embedded one, or a
//! Mosquitto process the test starts), a temp SQLite file, an ordinary MQTT client, and the engine
//! either in-process (`Engine`) or as the release-like binary (`Process`).

#![allow(dead_code)] // each test file uses its own part of the harness

pub mod browser;
pub mod http;
pub mod mosquitto;
pub mod pg_server;
pub mod postgres;
pub mod relay;
pub mod rule_files;
pub mod web;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use homewright::app::{self, StartError};
use homewright::config;
use homewright::store::{HistoryReader, QueryResult, SqlValue};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A directory holding a config, rules and (once run) the database.
pub struct Setup {
    pub dir: TempDir,
    pub port: u16,
    /// `broker.embedded`: "true", "false" or "auto".
    pub embedded: &'static str,
    /// Extra lines for the `rules:` section, indented by two spaces.
    pub rules_options: String,
    pub client_id: String,
    /// `mqtt.qos`, the subscription's QoS (1 unless a test says otherwise).
    pub qos: u8,
    /// The database file, relative to `dir`.
    pub db: String,
    /// Extra lines for the `mqtt:` section, indented by two spaces.
    pub mqtt_options: String,
    /// Where the readiness probe publishes, when not `port` (e.g. a plain listener next to TLS).
    pub probe_port: Option<u16>,
    /// The probe's username and password, for a broker that requires a login.
    pub probe_login: Option<(String, String)>,
    /// Environment of the binary (`Process`).
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` of the binary; default `info,mqtt5=warn`.
    pub log_level: Option<String>,
    /// More top-level config sections (e.g. `gpio:`, `metrics:`), appended as written.
    pub extra_config: String,
    /// `database.commit_interval`.
    pub commit_interval: String,
}

impl Setup {
    /// An engine with its embedded broker on a free port.
    pub fn embedded() -> Self {
        let port = free_port();
        Setup::new(port, "true")
    }

    /// An embedded broker on `port` (which a test may have taken on purpose).
    pub fn new_for_port_test(port: u16) -> Self {
        Setup::new(port, "true")
    }

    /// An engine that connects to a broker already listening on `port`.
    pub fn external(port: u16) -> Self {
        Setup::new(port, "false")
    }

    /// An engine with `broker.embedded: auto`, connecting to (or, when nothing listens, starting its
    /// broker on) `port`.
    pub fn auto(port: u16) -> Self {
        Setup::new(port, "auto")
    }

    fn new(port: u16, embedded: &'static str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
        Setup {
            dir,
            port,
            embedded,
            rules_options: String::new(),
            client_id: format!("hw-test-{port}"),
            qos: 1,
            db: "history.db".into(),
            mqtt_options: String::new(),
            probe_port: None,
            probe_login: None,
            env: Vec::new(),
            log_level: None,
            extra_config: String::new(),
            commit_interval: "100ms".into(),
        }
    }

    /// `database.commit_interval` (tests use 100ms unless they test the interval itself, so that
    /// what they publish is in the history soon).
    pub fn commit_interval(mut self, interval: &str) -> Self {
        self.commit_interval = interval.into();
        self
    }

    /// Adds `rules/NAME.rhai`.
    pub fn rule(self, name: &str, source: &str) -> Self {
        std::fs::write(self.dir.path().join("rules").join(format!("{name}.rhai")), source)
            .expect("write rule");
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("homewright.yaml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join(&self.db)
    }

    /// Writes the config file and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let text = format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: {id}\n  qos: {qos}\n{mqtt}broker:\n  embedded: {embedded}\n  listen: 127.0.0.1:{port}\ndatabase:\n  path: {db}\n  commit_interval: {interval}\nrules:\n  dir: rules\n{options}{extra}",
            port = self.port,
            id = self.client_id,
            qos = self.qos,
            embedded = self.embedded,
            options = self.rules_options,
            db = self.db,
            interval = self.commit_interval,
            mqtt = self.mqtt_options,
            extra = self.extra_config,
        );
        let path = self.config_path();
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Waits until the engine stores what it receives, probing as this setup says.
    pub async fn wait_until_ingesting(&self) {
        let login = self.probe_login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        probe_until_stored(self.probe_port.unwrap_or(self.port), login, &self.db_path()).await;
    }
}

/// The engine running in this test's process.
pub struct Engine {
    pub setup: Setup,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), StartError>>,
}

impl Engine {
    /// Starts the engine and waits until it stores what it receives.
    pub async fn start(setup: Setup) -> Engine {
        Engine::start_with(setup, None).await
    }

    /// Like `start`, with the relays driven by `backend`.
    pub async fn start_with(
        setup: Setup,
        backend: Option<Arc<dyn homewright::relays::RelayBackend>>,
    ) -> Engine {
        let config = config::load(&setup.write_config()).expect("valid config");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app::run_with(config, shutdown.clone(), backend));
        let engine = Engine {
            setup,
            shutdown,
            task,
        };
        engine.setup.wait_until_ingesting().await;
        engine
    }

    /// Stops the engine as SIGTERM would and waits for it to finish.
    pub async fn stop(self) -> Setup {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        result
            .expect("engine stops in time")
            .expect("engine task")
            .expect("engine ran");
        self.setup
    }

    pub async fn query(&self, sql: &str) -> QueryResult {
        query(&self.setup.db_path(), sql).await
    }
}

/// The `homewright` binary, running.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Starts `homewright run -c CONFIG` and waits until it stores what it receives.
    pub async fn start(setup: &Setup) -> Process {
        let process = Process::spawn(setup, None);
        setup.wait_until_ingesting().await;
        process
    }

    /// Like `start`, with the engine's log written to `log` (to check what it says).
    pub async fn start_with_log(setup: &Setup, log: Option<&Path>) -> Process {
        let process = Process::spawn(setup, log);
        setup.wait_until_ingesting().await;
        process
    }

    /// Starts `homewright run -c CONFIG` without waiting for a broker; its stderr (the log) is appended
    /// to `log` when given, else inherited.
    pub fn spawn(setup: &Setup, log: Option<&Path>) -> Process {
        let config = setup.write_config();
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the log file"),
            ),
            None => Stdio::inherit(),
        };
        let child = crate::support::homewright_command()
            .args(["run", "-c"])
            .arg(&config)
            .env(
                "RUST_LOG",
                setup.log_level.as_deref().unwrap_or("info,mqtt5=warn"),
            )
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start homewright");
        Process { child }
    }

    /// Starts it with its log appended to `log` and waits until it stores what it receives.
    pub async fn start_logged(setup: &Setup, log: &Path) -> Process {
        let process = Process::spawn(setup, Some(log));
        setup.wait_until_ingesting().await;
        process
    }

    /// Sends a signal (e.g. "TERM", "KILL").
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.expect("run kill").success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(mut self) -> Option<i32> {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("homewright did not exit within 30s");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes a probe until the engine has stored one: then it is subscribed and committing.
pub async fn wait_until_ingesting(port: u16, db: &Path) {
    probe_until_stored(port, None, db).await;
}

async fn probe_until_stored(port: u16, login: Option<(&str, &str)>, db: &Path) {
    // A payload of its own, so a probe stored by an earlier run of the engine does not count.
    let probe = format!("probe-{}", free_port());
    let client = Client::connect_with(port, &probe, login).await;
    let stored = format!("SELECT count(*) FROM messages WHERE topic = 'test/ready' AND payload = '{probe}'");
    for _ in 0..200 {
        client
            .publish("test/ready", probe.clone(), QoS::AtLeastOnce, false)
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if db.exists() && count(db, &stored).await > 0 {
            return;
        }
    }
    panic!("the engine did not start ingesting within 10s");
}

/// Runs a read-only query on the database at `db`.
pub async fn query(db: &Path, sql: &str) -> QueryResult {
    let reader = HistoryReader::open(db).await.expect("open history");
    reader.query(sql, &[], None).await.expect("query")
}

/// The single integer a `SELECT count(*) ...` returns.
pub async fn count(db: &Path, sql: &str) -> i64 {
    match HistoryReader::open(db).await {
        Ok(reader) => match reader.query(sql, &[], None).await {
            Ok(result) => match result.rows.first().and_then(|r| r.first()) {
                Some(SqlValue::Integer(n)) => *n,
                _ => 0,
            },
            Err(_) => 0,
        },
        Err(_) => 0,
    }
}

/// Polls `check` until it returns Some, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An ordinary MQTT client, as a sensor or a dashboard would be.
pub struct Client {
    pub client: AsyncClient,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<Publish>>,
    /// PUBACKs the broker sent us for our QoS 1 publishes.
    pub acked: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Client {
    pub async fn connect(port: u16, id: &str) -> Client {
        Client::connect_with(port, id, None).await
    }

    /// Connects with a username and password.
    pub async fn connect_with(port: u16, id: &str, login: Option<(&str, &str)>) -> Client {
        Client::connect_options(port, id, login, true).await
    }

    /// A client with a persistent session (clean session off), as devices that must not miss a
    /// command connect: the broker keeps its subscriptions and queues QoS 1 messages while it is away.
    pub async fn connect_persistent(port: u16, id: &str) -> Client {
        Client::connect_options(port, id, None, false).await
    }

    async fn connect_options(port: u16, id: &str, login: Option<(&str, &str)>, clean: bool) -> Client {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(clean);
        if let Some((username, password)) = login {
            options.set_credentials(username, password);
        }
        options
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_keep_alive(Duration::from_secs(30));
        options.set_inflight(1000);
        let (client, mut eventloop) = AsyncClient::new(options, 20_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&acked);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Client {
            client,
            received: tokio::sync::Mutex::new(rx),
            acked,
            task,
        }
    }

    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        // A SUBACK is not surfaced here; give the broker a moment to register the subscription.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) {
        self.client
            .publish_bytes(topic, qos, retain, payload.into())
            .await
            .expect("publish");
    }

    /// The next message received on `topic` within `timeout`, if one comes.
    pub async fn try_next_on(&self, topic: &str, timeout: Duration) -> Option<Publish> {
        let mut received = self.received.lock().await;
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, received.recv()).await {
                Ok(Some(p)) if p.topic == topic => return Some(p),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next message received on `topic`, skipping others.
    pub async fn next_on(&self, topic: &str, timeout: Duration) -> Publish {
        let mut received = self.received.lock().await;
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, received.recv()).await {
                Ok(Some(p)) if p.topic == topic => return p,
                Ok(Some(_)) => continue,
                _ => panic!("nothing arrived on {topic} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A command running the `homewright` binary under test. Where `HOMEWRIGHT_TEST_RUNNER` is set (as
/// `scripts/cross-check` sets it to `qemu-aarch64 -L /usr/aarch64-linux-gnu`), the binary runs under it:
/// a cross-built binary cannot be spawned directly without binfmt_misc.
pub fn homewright_command() -> Command {
    let binary = env!("CARGO_BIN_EXE_homewright");
    match std::env::var("HOMEWRIGHT_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut command = Command::new(words.next().unwrap_or("env"));
            command.args(words).arg(binary);
            command
        }
        _ => Command::new(binary),
    }
}

/// A cell as text, for comparing rows.
pub fn text(value: &SqlValue) -> String {
    match value {
        SqlValue::Text(t) => t.clone(),
        SqlValue::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// Runs `homewright ARGS` in `dir` to completion.
pub fn run_homewright(dir: &Path, args: &[&str]) -> std::process::Output {
    homewright_command()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run homewright")
}
