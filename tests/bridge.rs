//! docs/pi.md's Mosquitto bridge, taken from the Markdown itself: two houses' brokers bridged to a
//! central one (three Mosquittos on loopback), and an engine on the central broker storing what each
//! house publishes under that house's prefix.

use std::time::Duration;

use rumqttc::QoS;

use crate::sql_docs::fenced_blocks;
use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Engine, Setup, count, eventually};

/// The bridge of docs/pi.md for `house`, pointed at the central broker on `port`: the block as
/// written, with only the address and the house's name changed.
fn bridge_config(port: u16, house: &str) -> String {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pi.md")).expect("docs/pi.md");
    let blocks = fenced_blocks(&docs, "mosquitto");
    let [block] = blocks.as_slice() else {
        panic!(
            "docs/pi.md should hold one ```mosquitto block, found {}",
            blocks.len()
        );
    };
    assert!(block.contains("address central.example.net:1883\n"), "{block}");
    assert!(block.contains(" house1/\n"), "{block}");
    block
        .replace("central.example.net:1883", &format!("127.0.0.1:{port}"))
        .replace("house1", house)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_bridge_brings_each_houses_messages_under_its_prefix() {
    let Some(central) = Mosquitto::start().await else {
        return;
    };
    let mut houses = Vec::new();
    for house in ["house1", "house2"] {
        let bridge = bridge_config(central.port, house);
        let Some(broker) = Mosquitto::start_with(&bridge).await else {
            return;
        };
        houses.push((house, broker));
    }
    let engine = Engine::start(Setup::external(central.port)).await;
    let db = engine.setup.db_path();

    for (house, broker) in &houses {
        // The bridge connects on its own schedule: publish until the first message comes through.
        let client = Client::connect(broker.port, &format!("{house}-sensors")).await;
        let sql = format!("SELECT count(*) FROM messages WHERE topic = '{house}/sensor/temp'");
        eventually(
            &format!("{house}'s message on the central engine"),
            Duration::from_secs(60),
            || {
                let client = &client;
                let (sql, db) = (&sql, &db);
                async move {
                    client
                        .publish("sensor/temp", house.to_string(), QoS::AtLeastOnce, false)
                        .await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    (count(db, sql).await > 0).then_some(())
                }
            },
        )
        .await;
    }
    // Each house's messages, and only those, carry its name.
    for (house, _) in &houses {
        let wrong = count(
            &db,
            &format!(
                "SELECT count(*) FROM messages WHERE topic = '{house}/sensor/temp' AND payload <> '{house}'"
            ),
        )
        .await;
        assert_eq!(wrong, 0, "{house}");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE topic = 'sensor/temp'").await,
        0,
        "nothing arrives without its house's prefix"
    );
    engine.stop().await;
}
