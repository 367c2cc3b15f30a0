//! Traces and replay: `why` explains a rule's runs; `replay` over a recorded history prints the same
//! actions the live run performed.

use std::time::Duration;

use rumqttc::QoS;

use crate::support::{Client, Engine, Setup, count, eventually, query, text};

const MESSAGES: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_recorded_history_prints_the_actions_the_live_run_performed() {
    let setup = Setup::embedded()
        .rule(
            "alerts",
            r#"on_message("load/+", |msg| {
                   let v = parse_int(msg.payload);
                   if v % 100 == 0 { publish(`alerts/${msg.parts[1]}`, `${v}`); }
               });"#,
        )
        .rule(
            "later",
            r#"on_message("load/a", |msg| {
                   let v = parse_int(msg.payload);
                   if v % 5000 == 0 { after("50ms", || publish("later", `${v}`)); }
               });"#,
        );
    let engine = Engine::start(setup).await;
    let db = engine.setup.db_path();
    let sender = Client::connect(engine.setup.port, "load").await;
    for i in 0..MESSAGES {
        let topic = if i % 2 == 0 { "load/a" } else { "load/b" };
        sender
            .publish(topic, i.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    let expected_actions = (MESSAGES / 100 + MESSAGES / 5000) as i64;
    eventually(
        "the live run stored and acted on everything",
        Duration::from_secs(300),
        || async {
            let stored = count(&db, "SELECT count(*) FROM messages WHERE topic LIKE 'load/%'").await;
            let actions = count(&db, "SELECT count(*) FROM actions").await;
            (stored == MESSAGES as i64 && actions == expected_actions).then_some(())
        },
    )
    .await;
    let setup = engine.stop().await;

    let live = query(&db, "SELECT rule, target, CAST(value AS TEXT) FROM actions").await;
    let mut live: Vec<(String, String, String)> = live
        .rows
        .iter()
        .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
        .collect();
    let range = query(&db, "SELECT min(ts), max(ts) + 60000 FROM messages").await;
    let (since, until) = (text(&range.rows[0][0]), text(&range.rows[0][1]));
    let since = chrono::DateTime::from_timestamp_millis(since.parse().unwrap())
        .unwrap()
        .to_rfc3339();
    let until = chrono::DateTime::from_timestamp_millis(until.parse().unwrap())
        .unwrap()
        .to_rfc3339();

    let started = std::time::Instant::now();
    let output = crate::support::homewright_command()
        .current_dir(setup.dir.path())
        .args([
            "--log-level",
            "warn",
            "replay",
            "--since",
            &since,
            "--until",
            &until,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    eprintln!("replay of {MESSAGES} messages took {:?}", started.elapsed());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut replayed: Vec<(String, String, String)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| v[k].as_str().unwrap().to_string();
            (field("rule"), field("target"), field("value"))
        })
        .collect();
    assert_eq!(replayed.len(), expected_actions as usize);
    // Timers fire between messages at slightly different (virtual vs wall) times: compare as sets.
    live.sort();
    replayed.sort();
    assert_eq!(live, replayed);
    assert_eq!(
        count(&db, "SELECT count(*) FROM actions").await,
        expected_actions,
        "replay touched nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_lists_a_failed_run_with_its_position_and_a_message_that_matched_but_did_nothing() {
    let rule = "on_message(\"thermostat/+\", |msg| {\n    let t = msg.json.temperature;\n    if t > 30 { publish(\"alarm\", \"hot\"); }\n});\n";
    let engine = Engine::start(Setup::embedded().rule("thermo", rule)).await;
    let client = Client::connect(engine.setup.port, "why").await;
    client
        .publish(
            "thermostat/hall",
            r#"{"temperature": 35}"#,
            QoS::AtLeastOnce,
            false,
        )
        .await;
    client
        .publish(
            "thermostat/hall",
            r#"{"temperature": 19}"#,
            QoS::AtLeastOnce,
            false,
        )
        .await;
    client
        .publish("thermostat/attic", "offline", QoS::AtLeastOnce, false)
        .await;
    let db = engine.setup.db_path();
    // Runs and messages commit in batches of their own: `why` pairs each run with its message once
    // both are stored.
    eventually("three runs traced", Duration::from_secs(20), || async {
        (count(&db, "SELECT count(*) FROM rule_runs WHERE rule = 'thermo'").await == 3
            && count(
                &db,
                "SELECT count(*) FROM messages WHERE topic LIKE 'thermostat/%'",
            )
            .await
                == 3)
            .then_some(())
    })
    .await;
    let output = crate::support::homewright_command()
        .current_dir(engine.setup.dir.path())
        .args(["why", "thermo"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    assert!(out.starts_with("thermo since "), "{out}");
    assert!(out.contains(": 3 runs, 1 failed, 1 did nothing\n"), "{out}");
    assert!(
        out.contains("rules/thermo.rhai:2:22: Unknown property 'temperature'"),
        "the failed run with its position: {out}"
    );
    assert!(out.contains("1 action(s)"), "{out}");
    let idle = out.split("made it do nothing:").nth(1).unwrap();
    assert!(
        idle.contains("thermostat/hall") && idle.contains(r#"{"temperature": 19}"#),
        "{out}"
    );
    engine.stop().await;
}

#[tokio::test]
async fn old_rule_runs_are_purged_in_batches_and_recent_ones_kept() {
    use homewright::event::RuleRun;
    use homewright::store::RecordBatch;
    use homewright::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let store = Store::open(&db).await.unwrap();
    let run = |ts| RuleRun {
        ts,
        rule: "r".into(),
        trigger: "on_message",
        topic: None,
        duration_us: 1,
        error: None,
        actions: 0,
        late: false,
    };
    let batch = RecordBatch {
        runs: (0..25).map(|i| run(if i < 20 { 1_000 } else { 9_000 })).collect(),
        ..Default::default()
    };
    store.write_records(&batch).await.unwrap();
    assert_eq!(store.purge_rule_runs(5_000, i64::MAX, 8).await.unwrap(), 8);
    assert_eq!(store.purge_rule_runs(5_000, i64::MAX, 8).await.unwrap(), 8);
    assert_eq!(store.purge_rule_runs(5_000, i64::MAX, 8).await.unwrap(), 4);
    assert_eq!(store.purge_rule_runs(5_000, i64::MAX, 8).await.unwrap(), 0);
    store.close().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM rule_runs WHERE ts = 9000").await,
        5
    );
}
