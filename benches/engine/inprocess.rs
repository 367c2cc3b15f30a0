//! In-process loops with no broker, for `valgrind --tool=callgrind`, whose instruction counts repeat
//! exactly where timings on a shared machine do not: the history writer (`-- store`) and the rule
//! dispatch (`-- dispatch`).

#[allow(unused_imports)]
use super::*;

/// Writes messages and a rule run for each, as ingest and the recorder do, in batches of 4,000 to a
/// fresh history: no broker, no rules. `valgrind --tool=callgrind` counts the instructions of the
/// writer (all threads) the same way every run, which a shared machine's timings cannot.
pub(crate) async fn store() {
    use homewright::event::{Message, RuleRun};
    use homewright::store::RecordBatch;
    use homewright::store::Store;
    let count: usize = std::env::var("HOMEWRIGHT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("history.db")).await.unwrap();
    let rule: Arc<str> = Arc::from("s1_sensor");
    let started = Instant::now();
    let batch = 4_000;
    for first in (0..count).step_by(batch) {
        let messages: Vec<Message> = (first..(first + batch).min(count))
            .map(|i| Message {
                ts: 1_700_000_000_000 + i as i64 / 50,
                topic: format!("bench/sensor/room{}", i % 100).into(),
                payload: Bytes::from(format!("{{\"temperature\":{}.5,\"n\":{i}}}", 15 + i % 20)),
                qos: 0,
                retain: false,
                dup: false,
            })
            .collect();
        let refs: Vec<&Message> = messages.iter().collect();
        store.insert_messages(&refs).await.unwrap();
        let audit = RecordBatch {
            runs: messages
                .iter()
                .map(|m| RuleRun {
                    ts: m.ts,
                    rule: Arc::clone(&rule),
                    trigger: "on_message",
                    topic: Some(m.topic.clone()),
                    duration_us: 3,
                    error: None,
                    actions: 0,
                    late: false,
                })
                .collect(),
            ..Default::default()
        };
        store.write_records(&audit).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "store: {count} messages and as many rule runs in {:.3} s: {:.2} us/msg",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64
    );
    store.close().await;
}

/// Runs messages through a `RuleSet` with the 50 bench rules, as the rule thread does, with no broker
/// and no database: the cost of dispatch and of the rules themselves per message.
pub(crate) fn dispatch() {
    use homewright::event::{Event as HwEvent, Message};
    use homewright::rules::{Limits, RuleSet};
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path());
    let limits = Limits {
        max_operations: 1_000_000,
        timeout: Duration::from_secs(1),
        max_string_size: 4 << 20,
        ..Limits::default()
    };
    let mut rules = RuleSet::new(
        limits,
        None,
        Default::default(),
        homewright::scheduler::Clock::Wall,
        Default::default(),
    );
    let problems = rules.load_dir(dir.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let count: usize = std::env::var("HOMEWRIGHT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let messages: Vec<HwEvent> = (0..count)
        .map(|i| {
            let topic = if i % 100 == 99 {
                format!("bench/trigger/{}", i % 10)
            } else if i % 2 == 0 {
                format!("bench/sensor/room{}", i % 100)
            } else {
                // Half the traffic matches no rule at all: the common case in a house.
                format!("zigbee/device{}/linkquality", i % 100)
            };
            HwEvent::Message(Message {
                ts: i as i64,
                topic: topic.into(),
                payload: Bytes::from(format!("{{\"temperature\":{}.5,\"n\":{i}}}", 15 + i % 20)),
                qos: 1,
                retain: false,
                dup: false,
            })
        })
        .collect();
    let started = Instant::now();
    let mut outputs = 0;
    for event in &messages {
        outputs += rules.handle(event).len();
    }
    let elapsed = started.elapsed();
    println!(
        "dispatch: {count} messages through {RULES} rules in {:.3} s: {:.2} us/msg, {:.0} msg/s ({outputs} outputs)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64,
        count as f64 / elapsed.as_secs_f64()
    );
}
