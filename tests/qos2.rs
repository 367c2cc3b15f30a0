//! QoS 2 ingest across stops at the one fragile moment: after the engine answered a message with
//! PUBREC (it is stored) and before the broker's PUBREL reached it. The broker sends that PUBREL again
//! to the next run, which must complete it and go on receiving.

use std::time::Duration;

use crate::support::mosquitto::Mosquitto;
use crate::support::relay::Relay;
use crate::support::{Process, Setup, count, eventually};

const WAIT: Duration = Duration::from_secs(15);
const STORED: &str = "SELECT count(*) FROM messages WHERE topic = 'qos2/n'";
const DISTINCT: &str = "SELECT count(DISTINCT payload) FROM messages WHERE topic = 'qos2/n'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_ingest_goes_on_after_sigterm_between_pubrec_and_pubrel() {
    stop_between_pubrec_and_pubrel("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_ingest_goes_on_after_kill_9_between_pubrec_and_pubrel() {
    stop_between_pubrec_and_pubrel("KILL").await;
}

/// The engine reaches Mosquitto (which keeps sessions, `persistence true`) through a relay that holds
/// back the broker's PUBRELs while the first messages arrive; the engine is stopped by `signal` with
/// those releases outstanding, more messages are published while it is away, and the next run must
/// store them all.
async fn stop_between_pubrec_and_pubrel(signal: &str) {
    let Some(broker) = Mosquitto::start_persistent().await else {
        return;
    };
    let relay = Relay::start(broker.port).await;
    let mut setup = Setup::external(relay.port);
    setup.qos = 2;
    setup.probe_port = Some(broker.port);
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;

    relay.swallow_pubrel(true);
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    if !broker.publish_lines("qos2/n", 2, &first) {
        return;
    }
    let db = setup.db_path();
    eventually("10 stored, their PUBRELs held back", WAIT, || async {
        (count(&db, STORED).await == 10 && relay.swallowed() >= 10).then_some(())
    })
    .await;
    engine.signal(signal);
    engine.wait().await;

    relay.swallow_pubrel(false);
    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert!(broker.publish_lines("qos2/n", 2, &second));
    let engine = Process::spawn(&setup, Some(&log));
    let stored = eventually("all 20 stored by the next run", WAIT, || async {
        let n = count(&db, DISTINCT).await;
        (n == 20).then_some(n)
    })
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
    let text = std::fs::read_to_string(&log).expect("read the log");
    assert_eq!(stored, 20);
    assert_eq!(count(&db, STORED).await, 20, "a message was stored twice");
    assert!(!text.contains("nsolicited"), "{text}");
}
