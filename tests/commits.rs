//! When received messages are committed: by `database.commit_interval`, not one transaction per
//! message at a house's rate (an SD card wears by the pages each commit rewrites), yet QoS 1 messages
//! are committed early enough that a broker with Mosquitto's default in-flight window never waits for
//! the interval, and a kill -9 at QoS 0 costs at most the interval.

use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Process, Setup, count, eventually};

/// Messages published 100 ms apart at QoS 0 become visible together, about one interval after the
/// first: the engine waited for the interval instead of committing each on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_messages_are_committed_together_once_the_interval_is_over() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let mut setup = Setup::external(broker.port).commit_interval("3s");
    setup.qos = 0;
    let db = setup.db_path();
    let engine = Process::start(&setup).await;
    // The probe's batch may still be open: let it close first.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let sensor = Client::connect(broker.port, "commits-sensor").await;
    let started = Instant::now();
    let mut seen_while_publishing = Vec::new();
    for i in 0..10 {
        sensor
            .publish("commits/temp", format!("{i}"), QoS::AtMostOnce, false)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen_while_publishing
            .push(count(&db, "SELECT count(*) FROM messages WHERE topic = 'commits/temp'").await);
    }
    assert!(
        seen_while_publishing.iter().all(|&n| n == 0),
        "messages were committed one by one: {seen_while_publishing:?}"
    );
    let all = eventually("the batch committed", Duration::from_secs(10), || async {
        let n = count(&db, "SELECT count(*) FROM messages WHERE topic = 'commits/temp'").await;
        (n == 10).then_some(started.elapsed())
    })
    .await;
    assert!(
        all >= Duration::from_millis(2_500) && all < Duration::from_secs(5),
        "committed {all:?} after the first message, not about one interval (3s)"
    );
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}

/// Through a Mosquitto with its default in-flight window (20 unacknowledged messages), QoS 1 messages
/// are committed, and so acknowledged, as the window fills: 200 messages at 100 msg/s are all stored
/// long before one 30-second interval, because the broker never waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_commits_keep_mosquittos_default_window_open() {
    let Some(broker) =
        Mosquitto::start_custom(|port, _| format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).await
    else {
        return;
    };
    let setup = Setup::external(broker.port).commit_interval("30s");
    let db = setup.db_path();
    let engine = Process::start(&setup).await;

    let sensor = Client::connect(broker.port, "commits-qos1").await;
    let started = Instant::now();
    for i in 0..200 {
        sensor
            .publish("commits/qos1", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = eventually("all 200 stored", Duration::from_secs(25), || async {
        let n = count(&db, "SELECT count(*) FROM messages WHERE topic = 'commits/qos1'").await;
        (n == 200).then_some(started.elapsed())
    })
    .await;
    eprintln!("200 QoS 1 messages at 100 msg/s, window 20, interval 30s: all stored after {took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}

/// kill -9 while QoS 0 messages arrive at 50 msg/s with a 2 s interval: what is stored is every
/// message up to some point, and every message sent more than the interval (and a margin for delivery
/// and the commit itself) before the kill is among it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_qos0_loses_at_most_the_commit_interval() {
    const INTERVAL: Duration = Duration::from_secs(2);
    const MARGIN: Duration = Duration::from_millis(700);
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let mut setup = Setup::external(broker.port).commit_interval("2s");
    setup.qos = 0;
    let db = setup.db_path();
    let engine = Process::start(&setup).await;

    let sensor = Client::connect(broker.port, "commits-kill").await;
    let started = Instant::now();
    let mut sent_at = Vec::new();
    // 5.3 s of messages: the kill falls inside an open batch, not at a commit.
    for i in 0..265u32 {
        sent_at.push(started.elapsed());
        sensor
            .publish("commits/kill", i.to_string(), QoS::AtMostOnce, false)
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = started.elapsed();
    engine.signal("KILL");
    assert_eq!(engine.wait().await, None, "killed by a signal, not exited");

    let stored = count(&db, "SELECT count(*) FROM messages WHERE topic = 'commits/kill'").await as usize;
    let prefix = count(
        &db,
        &format!(
            "SELECT count(*) FROM messages WHERE topic = 'commits/kill' AND CAST(payload AS INTEGER) < {stored}"
        ),
    )
    .await as usize;
    assert_eq!(prefix, stored, "what is stored is every message up to some point");
    let must = sent_at
        .iter()
        .filter(|&&t| t + INTERVAL + MARGIN < killed_at)
        .count();
    let lost = sent_at.len() - stored;
    eprintln!(
        "kill -9 at QoS 0, interval 2s, 50 msg/s: sent {}, stored {stored}, lost {lost} (the last {:.2}s)",
        sent_at.len(),
        killed_at
            .saturating_sub(sent_at.get(stored).copied().unwrap_or(killed_at))
            .as_secs_f64()
    );
    assert!(
        stored >= must,
        "stored {stored}, but the {must} sent more than the interval before the kill must be"
    );
}
