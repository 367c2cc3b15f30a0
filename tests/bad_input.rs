//! Input a home owner does not choose: oversize messages, thousands of topics, a storm of retained
//! messages at connect, deeply nested JSON, topics in any script. Each is stored or refused on purpose,
//! and the engine goes on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Engine, Process, Setup, count, eventually};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_above_max_packet_size_is_acknowledged_and_dropped_without_a_reconnect() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::external(broker.port);
    let db = setup.db_path();
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    let client = Client::connect(broker.port, "oversize").await;
    // mqtt.max_packet_size is 1 MiB by default; Mosquitto accepts up to 256 MiB.
    client
        .publish("big/too", vec![b'x'; 2 << 20], QoS::AtLeastOnce, false)
        .await;
    client
        .publish("big/after", "small", QoS::AtLeastOnce, false)
        .await;
    eventually("the message after it stored", WAIT, || async {
        (count(&db, "SELECT count(*) FROM messages WHERE topic = 'big/after'").await == 1).then_some(())
    })
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE topic = 'big/too'").await,
        0
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let dropped = text
        .lines()
        .find(|l| l.contains("dropped a message larger than mqtt.max_packet_size"))
        .unwrap_or_else(|| panic!("no drop logged:\n{text}"));
    eprintln!("oversize: {dropped}");
    assert!(
        dropped.contains("topic=big/too") && dropped.contains("size=2097159"),
        "{dropped}"
    );
    assert!(
        !text.contains("connection lost"),
        "the engine reconnected:\n{text}"
    );

    // It was acknowledged: a restart gets nothing again.
    let engine = Process::start_logged(&setup, &log).await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("dropped a message").count(),
        1,
        "redelivered:\n{text}"
    );
}

const TOPICS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_topics_are_stored_and_seen_by_rules() {
    let setup = Setup::embedded().rule(
        "count",
        r#"let seen = 0;
           on_message("many/#", |msg| {
               seen += 1;
               if seen == 10000 { publish("many-done", `${seen}`); }
           });"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "many").await;
    client.subscribe("many-done").await;
    for i in 0..TOPICS {
        client
            .publish(
                &format!("many/{}/{i}", i % 100),
                i.to_string(),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    assert_eq!(&client.next_on("many-done", WAIT).await.payload[..], b"10000");
    let db = engine.setup.db_path();
    eventually("every topic in `latest`", WAIT, || async {
        (count(&db, "SELECT count(*) FROM latest WHERE topic LIKE 'many/%'").await as usize == TOPICS)
            .then_some(())
    })
    .await;
    engine.stop().await;
}

const RETAINED: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_retained_messages_at_connect_is_stored_and_seen_by_rules() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let sender = Client::connect(broker.port, "retainer").await;
    for i in 0..RETAINED {
        sender
            .publish(&format!("retained/{i}"), i.to_string(), QoS::AtLeastOnce, true)
            .await;
    }
    eventually("the broker holds them", WAIT, || async {
        (sender.acked.load(Ordering::SeqCst) >= RETAINED).then_some(())
    })
    .await;

    let setup = Setup::external(broker.port).rule(
        "retained",
        r#"let seen = 0;
           on_message("retained/#", |msg| {
               if msg.retain { seen += 1; }
               if seen == 5000 { publish("retained-done", `${seen}`); seen = 0; }
           });"#,
    );
    let db = setup.db_path();
    let engine = Process::start(&setup).await;
    eventually("all retained messages stored and seen", WAIT, || async {
        let stored = count(
            &db,
            "SELECT count(DISTINCT topic) FROM messages WHERE topic LIKE 'retained/%' AND retain = 1",
        )
        .await;
        let done = count(&db, "SELECT count(*) FROM actions WHERE target = 'retained-done'").await;
        (stored as usize == RETAINED && done == 1).then_some(())
    })
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_64_levels_deep_reaches_rules_and_deeper_json_is_no_json() {
    let setup = Setup::embedded().rule(
        "deep",
        r#"on_message("deep/+", |msg| publish(`shape/${msg.parts[1]}`, type_of(msg.json)));"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "deep").await;
    client.subscribe("shape/#").await;
    let array = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    let object = format!("{}1{}", "{\"a\":".repeat(64), "}".repeat(64));
    // Past serde_json's nesting limit (128): not JSON to rules, still stored byte for byte.
    let abyss = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (name, payload) in [("array", &array), ("object", &object), ("abyss", &abyss)] {
        client
            .publish(&format!("deep/{name}"), payload.clone(), QoS::AtLeastOnce, false)
            .await;
        let shape = client.next_on(&format!("shape/{name}"), WAIT).await;
        eprintln!(
            "deep JSON {name}: rules see {}",
            String::from_utf8_lossy(&shape.payload)
        );
        let expected: &[u8] = match name {
            "array" => b"array",
            "object" => b"map",
            _ => b"()",
        };
        assert_eq!(&shape.payload[..], expected);
    }
    let db = engine.setup.db_path();
    eventually("all three stored whole", WAIT, || async {
        (count(
            &db,
            "SELECT sum(length(payload)) FROM messages WHERE topic LIKE 'deep/%'",
        )
        .await as usize
            == array.len() + object.len() + abyss.len())
        .then_some(())
    })
    .await;
    engine.stop().await;
}

/// Regression: rumqttc's topic matcher panicked on a topic whose first character is not ASCII. Run
/// through Mosquitto (the embedded broker's own test is in embedded_broker.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_starting_with_a_non_ascii_letter_reaches_its_rule() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::external(broker.port).rule(
        "oil",
        r#"on_message("Ölstand/+", |msg| publish("oil/seen", msg.parts[1]));"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(broker.port, "oil").await;
    client.subscribe("oil/seen").await;
    client
        .publish("Ölstand/tank", "71", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&client.next_on("oil/seen", WAIT).await.payload[..], b"tank");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_publish_above_max_packet_size_is_refused_and_the_connection_stays_up() {
    let setup = Setup::embedded().rule(
        "big",
        r#"on_message("make/big", |msg| {
               let big = "x";
               big.pad(2 * 1024 * 1024, "x");
               publish("big/out", big);
               publish("small/out", "ok");
           });"#,
    );
    let db = setup.db_path();
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    let client = Client::connect(setup.port, "big-maker").await;
    client.subscribe("small/out").await;
    client.publish("make/big", "", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.next_on("small/out", WAIT).await.payload[..], b"ok");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let refused = text
        .lines()
        .find(|l| l.contains("larger than mqtt.max_packet_size"))
        .unwrap_or_else(|| panic!("not refused:\n{text}"));
    eprintln!("oversize publish: {refused}");
    assert!(
        refused.contains("`big/out`") && refused.contains("rule=big"),
        "{refused}"
    );
    assert!(!text.contains("connection lost"), "{text}");
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, 0);
}
