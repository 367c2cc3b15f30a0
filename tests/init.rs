//! `homewright init` as a new user runs it, and the example rule it writes, running in the engine.

use std::time::Duration;

use rumqttc::QoS;

use crate::support::{Client, Engine, Setup};

use crate::support::run_homewright as homewright;

#[test]
fn init_then_check_passes_in_the_new_directory() {
    let parent = tempfile::tempdir().expect("temp dir");
    let init = homewright(parent.path(), &["init", "home"]);
    let stdout = String::from_utf8_lossy(&init.stdout);
    assert_eq!(init.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("cd home && homewright check"), "{stdout}");
    assert!(stdout.contains("homewright run"), "{stdout}");
    assert!(stdout.contains("homewright query"), "{stdout}");

    let check = homewright(&parent.path().join("home"), &["check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 rules (too_warm)"), "{stdout}");

    let test = homewright(&parent.path().join("home"), &["--log-level", "warn", "test"]);
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert_eq!(test.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ok    rules/tests/too_warm.yaml"), "{stdout}");
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("homewright.yaml");
    std::fs::write(&config, "# mine\n").expect("write config");
    let init = homewright(dir.path(), &["init"]);
    assert_eq!(init.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(
        stderr.contains("homewright.yaml already exists; nothing was written"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read"), "# mine\n");
    assert!(!dir.path().join("rules").exists(), "no rules directory was made");
}

/// The example rule's scenario also runs here, on a real broker (`homewright test` plays it on virtual
/// time).
#[tokio::test]
async fn the_example_rule_warns_once_per_warm_spell() {
    let rule = include_str!("../rules/too_warm.rhai");
    let engine = Engine::start(Setup::embedded().rule("too_warm", rule)).await;
    let client = Client::connect(engine.setup.port, "too-warm-test").await;
    client.subscribe("home/+/alert").await;
    for reading in ["29.5", "30", "{\"temperature\": 25}", "{\"temperature\": 31}"] {
        client
            .publish("home/kitchen/temperature", reading, QoS::AtLeastOnce, false)
            .await;
    }
    let first = client
        .next_on("home/kitchen/alert", Duration::from_secs(10))
        .await;
    let first: serde_json::Value = serde_json::from_slice(&first.payload).expect("JSON alert");
    assert_eq!(first["room"], "kitchen");
    assert_eq!(first["temperature"], 29.5);
    // 30 was still the same warm spell; 25 ended it; 31 (as JSON) starts the next one.
    let second = client
        .next_on("home/kitchen/alert", Duration::from_secs(10))
        .await;
    let second: serde_json::Value = serde_json::from_slice(&second.payload).expect("JSON alert");
    assert_eq!(second["temperature"], 31);
    engine.stop().await;
}
