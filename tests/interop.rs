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
