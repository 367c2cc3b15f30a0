//! Hot reload: editing a rule file while the engine runs changes its behaviour; breaking it keeps the
//! last good version running and says why; removing it removes its triggers.

use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support::{Client, Process, Setup, eventually};

/// Pings until the rule answers `expected`; returns how long the change took to show.
async fn until_answer(client: &Client, expected: &str) -> Duration {
    let started = Instant::now();
    loop {
        client.publish("ping", "?", QoS::AtLeastOnce, false).await;
        if let Some(answer) = client.try_next_on("pong", Duration::from_millis(200)).await
            && &answer.payload[..] == expected.as_bytes()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the rule never answered {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_rule_while_running_changes_it_and_breaking_it_keeps_the_last_good_version() {
    let rule = |version: &str| format!("on_message(\"ping\", |msg| publish(\"pong\", \"{version}\"));\n");
    let setup = Setup::embedded().rule("answer", &rule("v1"));
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_with_log(&setup, Some(&log)).await;
    let client = Client::connect(setup.port, "reloader").await;
    client.subscribe("pong").await;
    until_answer(&client, "v1").await;

    let path = setup.dir.path().join("rules/answer.rhai");
    std::fs::write(&path, rule("v2")).unwrap();
    let took = until_answer(&client, "v2").await;
    eprintln!("the edited rule answered after {took:?}");

    std::fs::write(
        &path,
        "on_message(\"ping\", |msg| {\n    publish(\"pong\" \"v3\");\n});\n",
    )
    .unwrap();
    let logged = eventually(
        "the compile error in the log",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("answer.rhai:2:"))
                .map(str::to_string)
        },
    )
    .await;
    assert!(logged.contains("the last good version keeps running"), "{logged}");
    until_answer(&client, "v2").await;
    // Reading the file for the reload must not look like another change (regression: a reload loop
    // that logged the same error ten times a second).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let errors = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("answer.rhai:2:"))
        .count();
    assert_eq!(errors, 1, "the broken file is reported once");

    // Back to the text that kept running: the owner who saw the error is told it is over.
    std::fs::write(&path, rule("v2")).unwrap();
    eventually("the restore logged", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find(|l| {
                l.contains("answer.rhai reloaded") && l.contains("back to the version that kept running")
            })
            .map(|_| ())
    })
    .await;
    until_answer(&client, "v2").await;

    std::fs::remove_file(&path).unwrap();
    eventually("the removal logged", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("was removed")
            .then_some(())
    })
    .await;
    client.publish("ping", "?", QoS::AtLeastOnce, false).await;
    assert!(
        client
            .try_next_on("pong", Duration::from_millis(500))
            .await
            .is_none(),
        "a removed rule does nothing"
    );
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}
