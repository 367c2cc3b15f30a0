//! A Mosquitto process on a free port, for the tests that are about interoperability with the broker
//! most homes run. Where no `mosquitto` binary exists the tests are skipped, unless
//! HOMEWRIGHT_REQUIRE_MOSQUITTO=1 (as `.ci/run` sets) makes its absence a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A running Mosquitto, killed when dropped.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

/// `name` in PATH or in the sbin directories (where Debian puts the broker).
fn find_in_path(name: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    candidates.map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The program `name` (`mosquitto`, `mosquitto_pub`), or None (test skipped) when it is not
/// installed and not required.
fn required_binary(name: &str) -> Option<PathBuf> {
    let found = find_in_path(name);
    if found.is_none() {
        if std::env::var("HOMEWRIGHT_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1") {
            panic!("{name} is required (HOMEWRIGHT_REQUIRE_MOSQUITTO=1) but not installed");
        }
        eprintln!("skipped: {name} is not installed");
    }
    found
}

impl Mosquitto {
    /// Starts Mosquitto, or returns None (test skipped) when it is not installed and not required.
    pub async fn start() -> Option<Mosquitto> {
        Mosquitto::start_with("").await
    }

    /// Mosquitto that keeps sessions, queued messages and retained messages on disk across its own
    /// restarts (`persistence true`), as a home that cares about its history runs it.
    pub async fn start_persistent() -> Option<Mosquitto> {
        Mosquitto::start_with("persistence true\npersistence_location {dir}/\nmax_inflight_messages 100\n")
            .await
    }

    /// Starts Mosquitto with `extra` config lines (`{dir}` is replaced by its own temp directory).
    pub async fn start_with(extra: &str) -> Option<Mosquitto> {
        // max_queued_messages 0: keep everything for an offline persistent session (the default, 1000,
        // would drop messages while the engine restarts, which is the broker's loss, not ours).
        Mosquitto::start_custom(|port, dir| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\n{}",
                extra.replace("{dir}", &dir.display().to_string())
            )
        })
        .await
    }

    /// Starts Mosquitto with the config `make(port, dir)` returns: `port` is a free port the config
    /// must listen on without TLS (it is how the test sees that the broker is up), `dir` the broker's
    /// own directory, into which `make` may write the files the config names (certificates, passwords).
    pub async fn start_custom(make: impl FnOnce(u16, &Path) -> String) -> Option<Mosquitto> {
        let binary = required_binary("mosquitto")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        // Started as root, Mosquitto drops to the `mosquitto` user, which must be able to write its
        // persistence file here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("open the broker's directory");
        }
        std::fs::write(dir.path().join("mosquitto.conf"), make(port, dir.path()))
            .expect("write mosquitto.conf");
        let mut mosquitto = Mosquitto {
            port,
            child: None,
            binary,
            dir,
        };
        mosquitto.restart().await;
        Some(mosquitto)
    }

    /// Publishes each line of `lines` as a message on `topic` at `qos` with Mosquitto's own client
    /// (`mosquitto_pub -l`: one connection, several messages in flight at once). False (test
    /// skipped) when `mosquitto_pub` is not installed and HOMEWRIGHT_REQUIRE_MOSQUITTO is not 1.
    pub fn publish_lines(&self, topic: &str, qos: u8, lines: &[String]) -> bool {
        use std::io::Write;

        let Some(client) = required_binary("mosquitto_pub") else {
            return false;
        };
        let mut child = Command::new(client)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic])
            .args(["-q", &qos.to_string(), "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start mosquitto_pub");
        let mut input = child.stdin.take().expect("mosquitto_pub's stdin");
        for line in lines {
            writeln!(input, "{line}").expect("write to mosquitto_pub");
        }
        drop(input);
        assert!(
            child.wait().expect("mosquitto_pub").success(),
            "mosquitto_pub failed"
        );
        true
    }

    /// Its directory (config, persistence file), for tests that add certificates or password files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops it as an init system would (SIGTERM: a persistent broker saves its state) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port with the same config and waits until it listens.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        // Owned from here on, so a failed start still kills and reaps it.
        self.child = Some(child);
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("mosquitto did not start listening on {}", self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
