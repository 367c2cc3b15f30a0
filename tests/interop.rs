//! Interoperability with Mosquitto, the broker most homes already run.

use std::time::Duration;

use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Engine, Setup, count, eventually};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_works_through_mosquitto() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::external(broker.port).rule(
        "echo",
        r#"on_message("in/+", |msg| publish(`out/${msg.parts[1]}`, #{ got: msg.json.n }, #{ qos: 1, retain: true }));"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(broker.port, "interop").await;
    client.subscribe("out/#").await;
    client
        .publish("in/a", r#"{"n": 7}"#, QoS::AtLeastOnce, false)
        .await;
    let out = client.next_on("out/a", WAIT).await;
    assert_eq!(&out.payload[..], br#"{"got":7}"#);
    let db = engine.setup.db_path();
    eventually("message and action stored", WAIT, || async {
        let messages = count(
            &db,
            "SELECT count(*) FROM messages WHERE topic IN ('in/a', 'out/a')",
        )
        .await;
        let actions = count(&db, "SELECT count(*) FROM actions WHERE target = 'out/a'").await;
        (messages == 2 && actions == 1).then_some(())
    })
    .await;
    engine.stop().await;
}

/// A QoS 2 subscription: the engine's PUBREC, written once a message is committed, and rumqttc's
/// PUBCOMP to Mosquitto's PUBREL complete each exchange. Mosquitto keeps at most 20 QoS 2 messages in
/// flight to a client by default, so all 100 arrive only if the exchanges complete; after a restart
/// nothing comes again (what Mosquitto redelivers to a returning session arrives before newer
/// messages, so the marker stored last means nothing else is coming). Published with Mosquitto's
/// own client, which keeps within Mosquitto's 20 QoS 2 messages in flight from a client (the test
/// client allows 1,000, and Mosquitto drops a client that goes past 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_exchanges_complete_with_mosquitto() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let mut setup = Setup::external(broker.port);
    setup.qos = 2;
    let engine = Engine::start(setup).await;
    let lines: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    if !broker.publish_lines("qos2/n", 2, &lines) {
        return;
    }
    let db = engine.setup.db_path();
    let stored = "SELECT count(*) FROM messages WHERE topic = 'qos2/n' AND qos = 2";
    eventually("100 QoS 2 messages stored", WAIT, || async {
        (count(&db, stored).await == 100).then_some(())
    })
    .await;
    let engine = Engine::start(engine.stop().await).await;
    assert!(broker.publish_lines("qos2/marker", 2, &["after".to_string()]));
    eventually("the marker stored", WAIT, || async {
        (count(&db, "SELECT count(*) FROM messages WHERE topic = 'qos2/marker'").await == 1).then_some(())
    })
    .await;
    assert_eq!(count(&db, stored).await, 100, "a message came twice");
    engine.stop().await;
}

/// A rule that publishes more QoS 2 messages at once than Mosquitto takes in flight from a client (20
/// by default): each is delivered once, and the connection holds (it used to be dropped and the
/// messages sent again). The engine stores what it publishes, as every message on its broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_qos_2_publishes_reaches_mosquitto_once_each() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::external(broker.port).rule(
        "burst",
        r#"on_message("burst/go", |msg| {
    for i in 0..50 { publish("burst/n", `${i}`, #{ qos: 2 }); }
    publish("burst/end", "end", #{ qos: 2 });
});"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(broker.port, "interop-burst").await;
    client.publish("burst/go", "go", QoS::AtLeastOnce, false).await;
    let db = engine.setup.db_path();
    eventually("the burst's last publish stored", WAIT, || async {
        (count(&db, "SELECT count(*) FROM messages WHERE topic = 'burst/end'").await >= 1).then_some(())
    })
    .await;
    let stored = "SELECT count(*) FROM messages WHERE topic = 'burst/n'";
    let distinct = "SELECT count(DISTINCT payload) FROM messages WHERE topic = 'burst/n'";
    assert_eq!(count(&db, distinct).await, 50);
    assert_eq!(count(&db, stored).await, 50, "a publish was delivered twice");
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE topic = 'burst/end'").await,
        1
    );
    engine.stop().await;
}
