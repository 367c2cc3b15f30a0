//! Publishes a broker refuses: a rule is told at its line, and a refused publish that is already in
//! the outbox (queued by an earlier version, or refused for a reason no check foresaw) is set aside
//! after a few tries instead of blocking every publish behind it for good.

use std::time::Duration;

use homewright::store::SqlValue;
use rumqttc::QoS;
use sqlx::Connection;

use crate::support::mosquitto::Mosquitto;
use crate::support::{Client, Engine, Setup, count, eventually, query};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_a_broker_refuses_fail_at_the_rules_line_and_later_publishes_go_out() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let setup = Setup::external(broker.port).rule(
        "bad",
        r#"on_message("go/nul", |m| publish("p2/a\x00b", "nul", #{ qos: 1 }));
on_message("go/long", |m| { let t = "x"; t.pad(65536, 'x'); publish(t, "long", #{ qos: 1 }) });
on_message("go/sys", |m| publish("$SYS/x", "sys", #{ qos: 1 }));
on_message("go/wild", |m| publish("a/+/b", "wild"));
on_message("go/bell", |m| publish("a/\x07", "bell"));
on_message("go/ok", |m| publish("ok/after", "fine", #{ qos: 1 }));
"#,
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(broker.port, "refused").await;
    client.subscribe("ok/#").await;
    for go in ["nul", "long", "sys", "wild", "bell", "ok"] {
        client
            .publish(&format!("go/{go}"), "", QoS::AtLeastOnce, false)
            .await;
    }
    let out = client.next_on("ok/after", WAIT).await;
    assert_eq!(&out.payload[..], b"fine");

    let db = engine.setup.db_path();
    let errors: Vec<String> = eventually("five failed runs recorded", WAIT, || async {
        let runs = query(
            &db,
            "SELECT error FROM rule_runs WHERE rule = 'bad' AND error IS NOT NULL ORDER BY id",
        )
        .await;
        let errors: Vec<String> = runs
            .rows
            .iter()
            .filter_map(|r| match &r[0] {
                SqlValue::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        (errors.len() == 5).then_some(errors)
    })
    .await;
    let expected = [
        ("rules/bad.rhai:1:", "U+0000) at byte 4"),
        ("rules/bad.rhai:2:", "65536 bytes long; MQTT allows at most 65535"),
        ("rules/bad.rhai:3:", "starts with `$`"),
        ("rules/bad.rhai:4:", "wildcard `+` at byte 2"),
        ("rules/bad.rhai:5:", "U+0007) at byte 2"),
    ];
    for (error, (position, reason)) in errors.iter().zip(expected) {
        assert!(
            error.contains(position) && error.contains(reason),
            "{error:?} should name {position} and {reason}"
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM actions WHERE target LIKE 'p2/%' OR target LIKE '$%'"
        )
        .await,
        0,
        "a refused publish was recorded as done"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_the_broker_refuses_is_set_aside_and_the_rows_behind_it_are_delivered() {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    // A first run makes the database; then the outbox gets a row Mosquitto closes the connection
    // over (a NUL in the topic), ahead of two ordinary ones, as an earlier version could leave it.
    let setup = Engine::start(Setup::external(broker.port)).await.stop().await;
    let db = setup.db_path();
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open the database");
        for topic in ["p2/a\0b", "after/1", "after/2"] {
            sqlx::query("INSERT INTO outbox (ts, topic, payload, qos, retain) VALUES (0, ?, X'78', 1, 0)")
                .bind(topic)
                .execute(&mut conn)
                .await
                .expect("queue a publish");
        }
    }
    let client = Client::connect(broker.port, "behind").await;
    client.subscribe("after/#").await;
    let refused_before = homewright::metrics::METRICS.outbox_refused.get();

    let engine = Engine::start(setup).await;
    client.next_on("after/1", WAIT).await;
    client.next_on("after/2", WAIT).await;
    eventually("the outbox empty", WAIT, || async {
        (count(&db, "SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    let refused = query(&db, "SELECT topic FROM outbox_refused").await;
    assert_eq!(refused.rows.len(), 1);
    assert!(matches!(&refused.rows[0][0], SqlValue::Text(t) if t == "p2/a\0b"));
    assert!(homewright::metrics::METRICS.outbox_refused.get() > refused_before);
    engine.stop().await;
}
