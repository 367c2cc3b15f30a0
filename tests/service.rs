//! The engine as systemd runs it: the real binary, a notify socket of our own standing in for
//! systemd's, and its stderr read back as the journal (or a tool) would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixDatagram;

use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::relay::Relay;
use crate::support::{Client, Process, Setup, count};

/// How long to wait for one notification before failing (a hang guard, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

/// A `homewright run` with NOTIFY_SOCKET set, its stderr going to a file.
struct Service {
    process: Process,
    socket: UnixDatagram,
    stderr: PathBuf,
}

impl Service {
    fn start(setup: &Setup, args: &[&str], env: &[(&str, String)]) -> Service {
        let config = setup.write_config();
        let socket_path = setup.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        let stderr = setup.dir.path().join("stderr.log");
        let child = crate::support::homewright_command()
            .args(args)
            .args(["run", "-c"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start homewright");
        Service {
            process: Process { child },
            socket,
            stderr,
        }
    }

    /// Reads notifications until one contains `wanted`; returns every line read on the way.
    async fn until(&self, wanted: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut buffer = vec![0u8; 4096];
        loop {
            let received = tokio::time::timeout(PATIENCE, self.socket.recv(&mut buffer)).await;
            let n = received
                .unwrap_or_else(|_| panic!("no {wanted} within {PATIENCE:?}; got {seen:?}"))
                .expect("recv");
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let done = text.lines().any(|line| line == wanted);
            seen.extend(text.lines().map(str::to_string));
            if done {
                return seen;
            }
        }
    }

    /// Waits until no notification came for `quiet`, failing if that does not happen within `limit`.
    async fn silent_for(&self, quiet: Duration, limit: Duration) {
        let mut buffer = vec![0u8; 4096];
        let until = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < until {
            match tokio::time::timeout(quiet, self.socket.recv(&mut buffer)).await {
                Err(_) => return,
                Ok(received) => {
                    let n = received.expect("recv");
                    seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                }
            }
        }
        panic!("notifications never paused for {quiet:?} within {limit:?}: {seen:?}");
    }

    /// Sends SIGTERM, waits for STOPPING=1 and the exit, and returns stderr.
    async fn stop(self) -> String {
        self.process.signal("TERM");
        self.until("STOPPING=1").await;
        assert_eq!(
            self.process.wait().await,
            Some(0),
            "homewright exits 0 on SIGTERM"
        );
        std::fs::read_to_string(&self.stderr).expect("read stderr")
    }
}

#[tokio::test]
async fn run_notifies_ready_then_watchdog_then_stopping() {
    let setup = Setup::embedded();
    // 200 ms: pings every 100 ms, so the test sees one quickly.
    let service = Service::start(&setup, &[], &[("WATCHDOG_USEC", "200000".into())]);
    let before_ready = service.until("READY=1").await;
    assert!(
        !before_ready.iter().any(|l| l == "WATCHDOG=1"),
        "{before_ready:?}"
    );
    service.until("WATCHDOG=1").await;
    service.until("WATCHDOG=1").await;
    service.stop().await;
}

/// A wedged engine is not vouched for: while received messages cannot be stored (another program
/// holds the database's write lock), the watchdog pings stop and the log names the stuck stage; once
/// the lock is gone the messages are stored and the pings resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_goes_silent_while_ingest_is_stuck_and_says_where() {
    use sqlx::Connection;

    let setup = Setup::embedded();
    // Pings every 500 ms; ingest counts as stuck after 3 s without progress (the shortest stall).
    let service = Service::start(&setup, &[], &[("WATCHDOG_USEC", "1000000".into())]);
    service.until("READY=1").await;
    setup.wait_until_ingesting().await;
    // Idle and healthy: pinging.
    service.until("WATCHDOG=1").await;
    service.until("WATCHDOG=1").await;

    let db = setup.db_path();
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open the database");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let client = Client::connect(setup.port, "wedge").await;
    client.publish("wedge/n", "1", QoS::AtLeastOnce, false).await;
    service
        .silent_for(Duration::from_secs(3), Duration::from_secs(20))
        .await;
    let log = std::fs::read_to_string(&service.stderr).expect("read stderr");
    assert!(log.contains("the ingest stage is stuck"), "{log}");

    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release the lock");
    drop(other);
    service.until("WATCHDOG=1").await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE topic = 'wedge/n'").await,
        1
    );
    service.stop().await;
}

/// A broker that accepts the ingest connection and drops it, over and over (as Mosquitto did over a
/// QoS 2 release rumqttc could not take): the watchdog goes silent and the log names the subscriber;
/// once connections hold again, the pings resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_goes_silent_while_the_broker_keeps_dropping_the_ingest_connection() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let relay = Relay::start(broker.port).await;
    let mut setup = Setup::external(relay.port);
    setup.probe_port = Some(broker.port);
    let service = Service::start(&setup, &[], &[("WATCHDOG_USEC", "1000000".into())]);
    service.until("READY=1").await;
    setup.wait_until_ingesting().await;
    service.until("WATCHDOG=1").await;

    relay.cut_after_connack(true);
    relay.close_all();
    service
        .silent_for(Duration::from_secs(3), Duration::from_secs(20))
        .await;
    let log = std::fs::read_to_string(&service.stderr).expect("read stderr");
    assert!(log.contains("the subscriber stage is stuck"), "{log}");

    relay.cut_after_connack(false);
    service.until("WATCHDOG=1").await;
    service.stop().await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let setup = Setup::embedded();
    let service = Service::start(&setup, &["--log-format", "json"], &[]);
    service.until("READY=1").await;
    let stderr = service.stop().await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let stopped = lines
        .iter()
        .find(|l| l["fields"]["message"] == "stopped")
        .unwrap_or_else(|| panic!("no `stopped` line in {stderr}"));
    assert_eq!(stopped["level"], "INFO");
    assert!(stopped["timestamp"].is_string(), "{stopped}");
    let opened = lines
        .iter()
        .find(|l| l["fields"]["message"] == "history opened")
        .unwrap_or_else(|| panic!("no `history opened` line in {stderr}"));
    assert!(opened["fields"]["database"].is_string(), "{opened}");
}

#[tokio::test]
async fn under_journald_lines_carry_a_priority_and_no_timestamp_or_colour() {
    let setup = Setup::embedded();
    // JOURNAL_STREAM names the file stderr goes to, as systemd does for its journal stream.
    let stderr_path = setup.dir.path().join("stderr.log");
    std::fs::write(&stderr_path, "").expect("create stderr file");
    let stream = journal_stream(&stderr_path);
    let service = Service::start(&setup, &[], &[("JOURNAL_STREAM", stream)]);
    service.until("READY=1").await;
    let stderr = service.stop().await;
    assert!(stderr.lines().count() > 3, "{stderr}");
    for line in stderr.lines() {
        let rest = line
            .strip_prefix("<6>")
            .or_else(|| line.strip_prefix("<4>"))
            .or_else(|| line.strip_prefix("<3>"))
            .unwrap_or_else(|| panic!("no syslog priority prefix: {line:?}"));
        assert!(!rest.contains('\u{1b}'), "colour escape in {line:?}");
        assert!(
            !rest.starts_with(|c: char| c.is_ascii_digit()),
            "timestamp in {line:?}"
        );
    }
    assert!(stderr.contains("<6>stopped"), "{stderr}");
}

#[tokio::test]
async fn a_journal_stream_of_another_file_means_plain_text_with_timestamps() {
    let setup = Setup::embedded();
    let other = setup.dir.path().join("not-stderr");
    std::fs::write(&other, "").expect("create file");
    let service = Service::start(&setup, &[], &[("JOURNAL_STREAM", journal_stream(&other))]);
    service.until("READY=1").await;
    let stderr = service.stop().await;
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("20"), "expected a timestamp first: {first:?}");
    assert!(!stderr.contains('\u{1b}'), "colour on a file: {stderr}");
}

/// `DEVICE:INODE` of a file, as systemd writes JOURNAL_STREAM.
fn journal_stream(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).expect("stat");
    format!("{}:{}", metadata.dev(), metadata.ino())
}
