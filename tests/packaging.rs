//! What the .deb ships, checked without cargo-deb (scripts/check-deb builds the package itself): the
//! Pi config is valid and points where the unit lets the service write, the unit verifies, and the
//! Mosquitto drop-in holds the settings the docs recommend and a real Mosquitto applies them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::support::mosquitto::Mosquitto;

const UNIT: &str = include_str!("../packaging/homewright.service");
const PI_CONFIG: &str = include_str!("../packaging/homewright.yaml");
const MOSQUITTO_DROP_IN: &str = include_str!("../packaging/mosquitto/homewright.conf");
const CARGO_TOML: &str = include_str!("../Cargo.toml");

/// The value of `option` in a Mosquitto config (`option value` lines, `#` comments), if set.
fn mosquitto_setting<'a>(config: &'a str, option: &str) -> Option<&'a str> {
    config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(option)?.strip_prefix(' ').map(str::trim))
}

#[test]
fn the_mosquitto_drop_in_keeps_sessions_and_widens_the_window_and_the_queue() {
    assert_eq!(mosquitto_setting(MOSQUITTO_DROP_IN, "persistence"), Some("true"));
    let number = |option| -> u64 {
        mosquitto_setting(MOSQUITTO_DROP_IN, option)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{option} is not set to a number in the drop-in"))
    };
    assert!(number("max_inflight_messages") >= 1_000);
    assert!(number("max_queued_messages") >= 100_000);
    // A listener in a drop-in would end Mosquitto 2's local-only default (or move the owner's port):
    // the drop-in must change nothing about who can connect.
    for opens_the_broker in ["listener", "port", "allow_anonymous", "bind_address"] {
        assert_eq!(
            mosquitto_setting(MOSQUITTO_DROP_IN, opens_the_broker),
            None,
            "{opens_the_broker} in the drop-in"
        );
    }
    assert!(
        CARGO_TOML.contains(
            r#"["packaging/mosquitto/homewright.conf", "etc/mosquitto/conf.d/homewright.conf", "644"]"#
        ),
        "the .deb installs the drop-in into /etc/mosquitto/conf.d"
    );
}

/// Mosquitto started as Debian configures it (its settings, then `include_dir` of the directory the
/// drop-in goes to) accepts the drop-in and applies it: a subscriber that acknowledges nothing gets
/// every one of 200 QoS 1 messages at once, where Mosquitto's default window stops at 20.
#[tokio::test]
async fn mosquitto_accepts_the_drop_in_and_sends_more_than_its_default_window() {
    let Some(broker) = Mosquitto::start_custom(|port, dir| {
        let conf_d = dir.join("conf.d");
        std::fs::create_dir_all(&conf_d).unwrap();
        std::fs::write(conf_d.join("homewright.conf"), MOSQUITTO_DROP_IN).unwrap();
        format!(
            "persistence_location {}/\nlistener {port} 127.0.0.1\nallow_anonymous true\ninclude_dir {}\n",
            dir.display(),
            conf_d.display()
        )
    })
    .await
    else {
        return;
    };
    let mut options = MqttOptions::new("never-acks", "127.0.0.1", broker.port);
    options.set_manual_acks(true);
    let (subscriber, mut events) = AsyncClient::new(options, 100);
    subscriber.subscribe("drop-in/#", QoS::AtLeastOnce).await.unwrap();
    let (received_tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let subscribed = tokio::sync::Notify::new();
    let subscribed = std::sync::Arc::new(subscribed);
    let on_suback = subscribed.clone();
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => on_suback.notify_one(),
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    let _ = received_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), subscribed.notified())
        .await
        .expect("the broker confirms the subscription");
    let publisher = crate::support::Client::connect(broker.port, "drop-in-publisher").await;
    for i in 0..200 {
        publisher
            .publish(&format!("drop-in/{i}"), "x", QoS::AtLeastOnce, false)
            .await;
    }
    let mut count = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while count < 200 {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, received.recv()).await {
            Ok(Some(())) => count += 1,
            _ => break,
        }
    }
    task.abort();
    assert_eq!(
        count, 200,
        "messages delivered to a subscriber that acknowledged none (Mosquitto's default window: 20)"
    );
}

#[test]
fn the_packaged_config_is_valid_and_uses_the_pi_paths() {
    let config = homewright::config::from_yaml(PI_CONFIG, Path::new("/etc/homewright/homewright.yaml"))
        .unwrap_or_else(|e| panic!("packaging/homewright.yaml: {e}"));
    assert_eq!(config.database.path, Path::new("/var/lib/homewright/history.db"));
    assert_eq!(config.rules.dir, Path::new("/etc/homewright/rules"));
    assert_eq!(
        config.broker.embedded,
        homewright::config::Embedded::Never,
        "the package expects Mosquitto on the Pi"
    );
    let web = config.web.expect("the package serves the house's page");
    assert_eq!(web.listen.to_string(), "127.0.0.1:8080");
    assert!(web.password.is_none(), "loopback needs no password");
}

#[test]
fn the_unit_runs_the_packaged_config_as_a_notify_service_that_may_write_only_its_state() {
    let settings: Vec<&str> = UNIT
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "Type=notify",
        "ExecStart=/usr/bin/homewright run --config /etc/homewright/homewright.yaml",
        "User=homewright",
        "SupplementaryGroups=gpio",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/homewright",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(settings.contains(&wanted), "{wanted} missing from the unit");
    }
    assert!(
        settings.iter().any(|s| s.starts_with("WatchdogSec=")),
        "no WatchdogSec"
    );
    // Each would hide or deny /dev/gpiomem, and the relays with it (ProtectClock= implies a
    // DeviceAllow=, which closes the device policy).
    for hides_devices in [
        "PrivateDevices=",
        "ProtectClock=",
        "DeviceAllow=",
        "DevicePolicy=",
    ] {
        assert!(
            !settings.iter().any(|s| s.starts_with(hides_devices)),
            "{hides_devices} in the unit"
        );
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed (apt-get install systemd); unit not verified");
        return;
    };
    assert!(probe.status.success());
    // verify checks that ExecStart's binary exists; nothing is installed here, so use the built one.
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("homewright.service");
    let text = UNIT.replace("/usr/bin/homewright", env!("CARGO_BIN_EXE_homewright"));
    std::fs::write(&unit, text).expect("write unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Unknown keys are only warnings (exit 0); they are mistakes all the same.
    assert!(stderr.trim().is_empty(), "{stderr}");
}
