//! The engine killed with SIGKILL (no chance to flush or acknowledge) while QoS 1 messages pour in:
//! whatever it had not committed it had not acknowledged either, so a persistent broker redelivers it
//! and nothing is lost. The only allowed damage is a duplicate for a message committed but not yet
//! acknowledged at the moment of the kill.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Process, Setup, count, eventually};

const MESSAGES: usize = 50_000;
const STORED: &str = "SELECT count(DISTINCT payload) FROM messages WHERE topic = 'crash/seq'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twice_while_50000_qos1_messages_arrive_loses_none() {
    let Some(broker) = Mosquitto::start_persistent().await else {
        return;
    };
    let setup = Setup::external(broker.port);
    let db = setup.db_path();
    let log = setup.dir.path().join("engine.log");
    let mut engine = Process::start_logged(&setup, &log).await;

    let sender = Client::connect(broker.port, "crash-load").await;
    let publishing = tokio::spawn(async move {
        for i in 0..MESSAGES {
            sender
                .publish("crash/seq", i.to_string(), QoS::AtLeastOnce, false)
                .await;
        }
        eventually(
            "every publish acknowledged by the broker",
            Duration::from_secs(120),
            || async { (sender.acked.load(Ordering::SeqCst) >= MESSAGES).then_some(()) },
        )
        .await;
    });

    // Two kills, each in the middle of the stream, each followed by a restart that does not wait for
    // anything: the broker's backlog for our session comes first.
    let mut killed_at = Vec::new();
    for threshold in [MESSAGES / 5, MESSAGES / 2] {
        let stored = eventually("enough messages stored", Duration::from_secs(120), || async {
            let n = count(&db, STORED).await;
            (n as usize >= threshold).then_some(n)
        })
        .await;
        engine.signal("KILL");
        assert_eq!(engine.wait().await, None, "killed by a signal, not exited");
        killed_at.push(stored);
        engine = Process::spawn(&setup, Some(&log));
    }
    publishing.await.expect("the publisher finished");

    let distinct = eventually(
        "every message stored after the second restart",
        Duration::from_secs(180),
        || async {
            let n = count(&db, STORED).await;
            (n as usize == MESSAGES).then_some(n)
        },
    )
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let rows = count(&db, "SELECT count(*) FROM messages WHERE topic = 'crash/seq'").await;
    let redelivered = count(
        &db,
        "SELECT count(*) FROM messages WHERE topic = 'crash/seq' AND dup = 1",
    )
    .await;
    eprintln!(
        "crash test: sent {MESSAGES}, killed at {killed_at:?} stored; stored {distinct} distinct in {rows} rows: \
         {} duplicates; {redelivered} rows marked dup",
        rows - distinct
    );
    assert_eq!(distinct as usize, MESSAGES);
    // Every duplicate is a redelivery, so the broker marked it: users can tell them apart.
    let unmarked_duplicates = count(
        &db,
        "SELECT count(*) FROM (SELECT payload FROM messages WHERE topic = 'crash/seq' AND dup = 0 \
         GROUP BY payload HAVING count(*) > 1)",
    )
    .await;
    assert_eq!(unmarked_duplicates, 0, "a duplicate without the dup mark");
}
