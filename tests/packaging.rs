//! What the .deb ships, checked without cargo-deb (scripts/check-deb builds the package itself): the
//! Pi config is valid and points where the unit lets the service write, and the unit verifies.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../packaging/homewright.service");
const PI_CONFIG: &str = include_str!("../packaging/homewright.yaml");

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
