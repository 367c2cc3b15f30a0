//! Stopping never loses what was acknowledged: SIGTERM while QoS 1 messages pour in, then a restart
//! that receives what the broker still held for us.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Process, Setup, count, eventually};

const MESSAGES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_10000_qos1_messages_arrive_loses_nothing_the_engine_acknowledged() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::external(broker.port);
    let db = setup.db_path();
    let engine = Process::start(&setup).await;

    let watcher = Client::connect(broker.port, "status-watcher").await;
    watcher.subscribe("homewright/status").await;
    let sender = Client::connect(broker.port, "load").await;
    let publishing = tokio::spawn(async move {
        for i in 0..MESSAGES {
            sender
                .publish("load/seq", i.to_string(), QoS::AtLeastOnce, false)
                .await;
        }
        eventually(
            "every publish acknowledged by the broker",
            Duration::from_secs(60),
            || async { (sender.acked.load(Ordering::SeqCst) >= MESSAGES).then_some(()) },
        )
        .await;
    });

    // Stop it in the middle of the stream.
    eventually("some messages stored", Duration::from_secs(30), || async {
        (count(&db, "SELECT count(*) FROM messages WHERE topic = 'load/seq'").await >= 1_000).then_some(())
    })
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0), "a clean stop exits 0");
    let stored_at_stop = count(
        &db,
        "SELECT count(DISTINCT payload) FROM messages WHERE topic = 'load/seq'",
    )
    .await;
    let mut offline = false;
    for _ in 0..5 {
        let status = watcher
            .next_on("homewright/status", Duration::from_secs(10))
            .await;
        if &status.payload[..] == b"offline" {
            offline = true;
            break;
        }
    }
    assert!(offline, "offline is published on a clean stop");
    publishing.await.unwrap();

    // The broker kept everything not acknowledged in our persistent session; a restart drains it.
    let engine = Process::start(&setup).await;
    let distinct = eventually(
        "all messages stored after the restart",
        Duration::from_secs(60),
        || async {
            let n = count(
                &db,
                "SELECT count(DISTINCT payload) FROM messages WHERE topic = 'load/seq'",
            )
            .await;
            (n as usize == MESSAGES).then_some(n)
        },
    )
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let rows = count(&db, "SELECT count(*) FROM messages WHERE topic = 'load/seq'").await;
    eprintln!(
        "stored {stored_at_stop} before SIGTERM; after restart {distinct} distinct of {MESSAGES}, {} duplicates",
        rows - distinct
    );
    // A clean stop acknowledges everything it stored before it disconnects, so nothing comes twice.
    // (Regression: closing the socket with unread input reset the connection and lost the last acks.)
    assert_eq!(
        rows, distinct,
        "a clean stop must not leave stored messages unacknowledged"
    );
}
