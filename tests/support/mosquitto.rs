//! A Mosquitto process on a free port, for the tests that are about interoperability with the broker
//! most homes run. Where no `mosquitto` binary exists the tests are skipped, unless
//! HOMEWRIGHT_REQUIRE_MOSQUITTO=1 (as `.ci/run` sets) makes its absence a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A running Mosquitto, killed when dropped.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    candidates.map(|dir| dir.join("mosquitto")).find(|p| p.is_file())
}

impl Mosquitto {
    /// Starts Mosquitto, or returns None (test skipped) when it is not installed and not required.
    pub async fn start() -> Option<Mosquitto> {
        let Some(binary) = binary() else {
            if std::env::var("HOMEWRIGHT_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1") {
                panic!("mosquitto is required (HOMEWRIGHT_REQUIRE_MOSQUITTO=1) but not installed");
            }
            eprintln!("skipped: mosquitto is not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        // max_queued_messages 0: keep everything for an offline persistent session (the default, 1000,
        // would drop messages while the engine restarts, which is the broker's loss, not ours).
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\n"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        // Owned from here on, so a failed start still kills and reaps it.
        let mosquitto = Mosquitto {
            port,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(mosquitto);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("mosquitto did not start listening on {port}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
