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

/// Pings `ping/NAME` until the rule answers `expected` on `pong/NAME`.
async fn until_rule_answers(client: &Client, name: &str, expected: &str) {
    let started = Instant::now();
    loop {
        client
            .publish(&format!("ping/{name}"), "?", QoS::AtLeastOnce, false)
            .await;
        if let Some(answer) = client
            .try_next_on(&format!("pong/{name}"), Duration::from_millis(200))
            .await
            && &answer.payload[..] == expected.as_bytes()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "rule {name} never answered {expected}"
        );
    }
}

/// The first line of the log holding every one of `parts`.
async fn logged(log: &std::path::Path, what: &str, parts: &[&str]) -> String {
    eventually(what, Duration::from_secs(10), || async {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_module_reloads_every_rule_that_imports_it() {
    let module = |version: &str| format!("fn answer() {{ \"{version}\" }}\n");
    let importer = |name: &str| {
        format!(
            "import \"words\" as words;\non_message(\"ping/{name}\", |msg| publish(\"pong/{name}\", words::answer()));\n"
        )
    };
    let setup = Setup::embedded()
        .rule("a", &importer("a"))
        .rule("b", &importer("b"))
        .rule("other", "on_message(\"ping/other\", |msg| publish(\"pong/other\", \"ok\"));\n")
        .rule(
            "late",
            "import \"later\" as later;\non_message(\"ping/late\", |msg| publish(\"pong/late\", later::answer()));\n",
        );
    let lib = setup.dir.path().join("rules/lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(lib.join("words.rhai"), module("v1")).unwrap();
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_with_log(&setup, Some(&log)).await;
    let client = Client::connect(setup.port, "module-reloader").await;
    client.subscribe("pong/#").await;
    until_rule_answers(&client, "a", "v1").await;
    until_rule_answers(&client, "b", "v1").await;
    let missing = logged(&log, "the missing module at start", &["late.rhai:1:8"]).await;
    assert!(missing.contains("lib/later.rhai: no such file"), "{missing}");

    std::fs::write(lib.join("words.rhai"), module("v2")).unwrap();
    until_rule_answers(&client, "a", "v2").await;
    until_rule_answers(&client, "b", "v2").await;
    let told = logged(&log, "the module's reload", &["words.rhai changed"]).await;
    assert!(
        told.contains("a.rhai") && told.contains("b.rhai") && !told.contains("other.rhai"),
        "{told}"
    );

    // A broken module: the importers keep their last good versions, the error is at the module's line.
    std::fs::write(lib.join("words.rhai"), "fn answer() {\n    \"v3\" +\n}\n").unwrap();
    let broken = logged(&log, "the module's syntax error", &["words.rhai:3:1"]).await;
    assert!(
        broken.contains("imported by") && broken.contains("a.rhai:1:8"),
        "{broken}"
    );
    assert!(broken.contains("the last good version keeps running"), "{broken}");
    until_rule_answers(&client, "a", "v2").await;

    // A module may not register triggers.
    std::fs::write(
        lib.join("words.rhai"),
        "fn answer() { \"v3\" }\non_message(\"x\", |msg| 1);\n",
    )
    .unwrap();
    let refused = logged(&log, "the trigger in a module refused", &["words.rhai:2:1"]).await;
    assert!(
        refused.contains("on_message cannot be called in a module"),
        "{refused}"
    );
    until_rule_answers(&client, "b", "v2").await;

    std::fs::write(lib.join("words.rhai"), module("v3")).unwrap();
    until_rule_answers(&client, "a", "v3").await;
    until_rule_answers(&client, "b", "v3").await;

    // The module a rule lacked at start appears: the rule loads.
    std::fs::write(lib.join("later.rhai"), module("at last")).unwrap();
    until_rule_answers(&client, "late", "at last").await;
    until_rule_answers(&client, "other", "ok").await;
    let other_reloaded = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .any(|l| l.contains("other.rhai reloaded"));
    assert!(!other_reloaded, "a rule that imports nothing is left alone");

    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}
