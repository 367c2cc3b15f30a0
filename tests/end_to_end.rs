//! The spine, end to end through the embedded broker: message in -> stored -> rule -> publish out ->
//! recorded.

use std::time::Duration;

use homewright::store::SqlValue;
use rumqttc::QoS;

use crate::support::{Client, Engine, Setup, count, eventually, free_port, text};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_message_reaches_a_rule_whose_publish_reaches_a_subscriber_and_both_are_stored() {
    let setup = Setup::embedded().rule(
        "alert",
        r#"on_message("sensors/+/temp", |msg| {
               if msg.value > 25.0 { publish(`alerts/${msg.parts[1]}`, `hot: ${msg.value}`, #{ qos: 1 }); }
           });"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "sensor").await;
    client.subscribe("alerts/#").await;

    client
        .publish("sensors/kitchen/temp", "30.5", QoS::AtLeastOnce, false)
        .await;
    let alert = client.next_on("alerts/kitchen", WAIT).await;
    assert_eq!(&alert.payload[..], b"hot: 30.5");

    let db = engine.setup.db_path();
    eventually("the action row", WAIT, || async {
        (count(&db, "SELECT count(*) FROM actions").await > 0).then_some(())
    })
    .await;
    // The message and the action are committed by different stages, each within its own interval:
    // either may be visible first.
    eventually("the message row", WAIT, || async {
        (count(
            &db,
            "SELECT count(*) FROM messages WHERE topic = 'sensors/kitchen/temp'",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
    let message = engine
        .query("SELECT topic, payload, qos, retain FROM messages WHERE topic = 'sensors/kitchen/temp'")
        .await;
    assert_eq!(message.rows.len(), 1);
    assert_eq!(
        message.rows[0].iter().map(text).collect::<Vec<_>>(),
        ["sensors/kitchen/temp", "30.5", "1", "0"]
    );
    let action = engine
        .query("SELECT rule, kind, target, value FROM actions")
        .await;
    assert_eq!(
        action.rows[0].iter().map(text).collect::<Vec<_>>(),
        ["alert", "publish", "alerts/kitchen", "hot: 30.5"]
    );
    // The rule's own publish came back through the subscription to `#` and is history too.
    eventually("the rule's publish stored as a message", WAIT, || async {
        (count(
            &db,
            "SELECT count(*) FROM messages WHERE topic = 'alerts/kitchen'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    let runs = engine
        .query("SELECT rule, trigger, topic, error, actions FROM rule_runs WHERE rule = 'alert'")
        .await;
    assert_eq!(
        runs.rows[0].iter().map(text).collect::<Vec<_>>(),
        ["alert", "on_message", "sensors/kitchen/temp", "Null", "1"]
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_kib_payload_is_stored_and_reaches_rules() {
    let setup = Setup::embedded().rule(
        "size",
        r#"on_message("big/in", |msg| publish("big/size", `${msg.payload.len()}`));"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "big-sender").await;
    client.subscribe("big/size").await;
    let payload: Vec<u8> = (0..500 * 1024).map(|i| b'a' + (i % 26) as u8).collect();

    client
        .publish("big/in", payload.clone(), QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&client.next_on("big/size", WAIT).await.payload[..], b"512000");
    let db = engine.setup.db_path();
    let stored = eventually("the big message stored", WAIT, || async {
        let n = count(&db, "SELECT length(payload) FROM messages WHERE topic = 'big/in'").await;
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(stored, 512_000);
    let reader = homewright::store::HistoryReader::open(&db).await.unwrap();
    let result = reader
        .query(
            "SELECT CAST(payload AS BLOB) FROM messages WHERE topic = 'big/in'",
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(result.rows[0][0], SqlValue::Blob(payload));
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_payload_bytes_are_stored_byte_for_byte() {
    let setup = Setup::embedded().rule(
        "seen",
        r#"on_message("raw/#", |msg| publish("raw-seen", msg.payload));"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "raw-sender").await;
    client.subscribe("raw-seen").await;

    client
        .publish("raw/bytes", vec![0xff, 0x00, 0xfe, 0x41], QoS::AtLeastOnce, false)
        .await;
    // Rules see the text with invalid bytes replaced.
    assert_eq!(
        &client.next_on("raw-seen", WAIT).await.payload[..],
        "\u{fffd}\0\u{fffd}A".as_bytes()
    );
    let db = engine.setup.db_path();
    eventually("the raw message stored", WAIT, || async {
        (count(
            &db,
            "SELECT count(*) FROM messages WHERE topic IN ('raw/bytes', 'raw-seen')",
        )
        .await
            == 2)
            .then_some(())
    })
    .await;
    let stored = engine
        .query("SELECT hex(payload), typeof(payload) FROM messages WHERE topic = 'raw/bytes'")
        .await;
    assert_eq!(
        stored.rows[0].iter().map(text).collect::<Vec<_>>(),
        ["FF00FE41", "blob"]
    );
    let text_row = engine
        .query("SELECT typeof(payload) FROM messages WHERE topic = 'raw-seen'")
        .await;
    assert_eq!(
        text(&text_row.rows[0][0]),
        "text",
        "UTF-8 payloads are stored as TEXT"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_set_values_survive_a_restart_and_last_sees_the_newest_message() {
    let counter = r#"
        on_message("door/open", |msg| {
            let n = (store_get("opened") ?? 0) + 1;
            store_set("opened", n);
            let temp = last("sensors/hall/temp");
            publish("door/count", `${n} at ${if temp == () { "?" } else { temp.payload }}`);
        });"#;
    let setup = Setup::embedded().rule("door", counter);
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "door").await;
    client.subscribe("door/count").await;
    client.publish("door/open", "1", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.next_on("door/count", WAIT).await.payload[..], b"1 at ?");
    client
        .publish("sensors/hall/temp", "19.5", QoS::AtLeastOnce, false)
        .await;
    client.publish("door/open", "1", QoS::AtLeastOnce, false).await;
    assert_eq!(
        &client.next_on("door/count", WAIT).await.payload[..],
        b"2 at 19.5"
    );
    drop(client);

    // A new port too: the restart does not depend on the old broker's port being free again.
    let mut setup = engine.stop().await;
    setup.port = free_port();
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "door2").await;
    client.subscribe("door/count").await;
    client.publish("door/open", "1", QoS::AtLeastOnce, false).await;
    // The count comes from the database; `last` falls back to the stored history after a restart.
    assert_eq!(
        &client.next_on("door/count", WAIT).await.payload[..],
        b"3 at 19.5"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_in_a_rule_reads_the_history_and_cannot_write_it() {
    let rule = r#"
        on_message("ask/count", |msg| {
            let rows = sql("SELECT count(*) AS n FROM messages WHERE topic = ?", ["test/ready"]);
            publish("answer/count", `${rows[0].n > 0}`);
        });
        on_message("ask/delete", |msg| {
            sql("DELETE FROM messages");
        });"#;
    let engine = Engine::start(Setup::embedded().rule("history", rule)).await;
    let client = Client::connect(engine.setup.port, "asker").await;
    client.subscribe("answer/count").await;
    client.publish("ask/count", "", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.next_on("answer/count", WAIT).await.payload[..], b"true");

    client.publish("ask/delete", "", QoS::AtLeastOnce, false).await;
    let db = engine.setup.db_path();
    let error = eventually("the failed run", WAIT, || async {
        let runs = crate::support::query(&db, "SELECT error FROM rule_runs WHERE topic = 'ask/delete'").await;
        runs.rows.first().map(|r| text(&r[0]))
    })
    .await;
    assert!(
        error.contains("history.rhai:7:13: sql: the history is read-only"),
        "{error}"
    );
    assert!(count(&db, "SELECT count(*) FROM messages WHERE topic = 'test/ready'").await > 0);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_online_while_running_and_offline_after_a_clean_stop() {
    let engine = Engine::start(Setup::embedded()).await;
    let client = Client::connect(engine.setup.port, "watcher").await;
    client.subscribe("homewright/status").await;
    let online = client.next_on("homewright/status", WAIT).await;
    assert_eq!((&online.payload[..], online.retain), (&b"online"[..], true));
    engine.stop().await;
    let offline = client.next_on("homewright/status", WAIT).await;
    assert_eq!(&offline.payload[..], b"offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_for_the_embedded_broker_is_an_error_naming_the_port_and_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let setup = Setup::new_for_port_test(port);
    let config = homewright::config::load(&setup.write_config()).unwrap();
    let error = homewright::app::run(config, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{port} is already in use")),
        "{error}"
    );
    assert!(
        error.contains("broker.embedded: false") && error.contains("broker.listen"),
        "{error}"
    );
    assert!(
        !setup.db_path().exists(),
        "nothing is created when the broker cannot start"
    );
}

/// In the running service, every thread a message passes through is a SCHED_BATCH thread
/// (src/os/thread_policy.rs): the tokio worker, the rule thread and the history writer do not preempt the broker
/// that feeds them, nor each other. The embedded broker's threads stay ordinary ones.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_threads_are_batch_threads_and_the_embedded_brokers_are_not() {
    use crate::support::Process;
    use homewright::os::thread_policy::{RUNTIME_THREAD, WRITER_THREAD, is_batch};
    if std::env::var("HOMEWRIGHT_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty()) {
        return; // under an emulator, the process's threads are the emulator's
    }
    let setup = Setup::embedded();
    let engine = Process::start(&setup).await;
    let threads_of = |pid: u32| -> Vec<(String, bool)> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the engine's threads");
        tasks
            .flatten()
            .filter_map(|task| {
                let tid: i32 = task.file_name().to_str()?.parse().ok()?;
                let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
                Some((name.trim_end().to_string(), is_batch(tid)))
            })
            .collect()
    };
    let threads = threads_of(engine.child.id());
    let policy_of = |name: &str| -> Vec<bool> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, batch)| *batch)
            .collect()
    };
    let batch = [RUNTIME_THREAD, "rules", WRITER_THREAD].map(|name| (name, true));
    let ordinary = homewright::broker::THREADS.map(|name| (name, false));
    for (name, expected) in batch.into_iter().chain(ordinary) {
        let policies = policy_of(name);
        assert!(
            !policies.is_empty() && policies.iter().all(|&batch| batch == expected),
            "every {name} thread must be {}: {threads:?}",
            if expected {
                "a batch thread"
            } else {
                "an ordinary thread"
            }
        );
    }
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}
