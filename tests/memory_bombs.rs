//! Rules that try to take the Pi's memory through `sql()`: each run fails with a reason, the engine's
//! peak resident memory (VmHWM, read from /proc) stays under 64 MB, and the other rules go on.

use std::time::Duration;

use homewright::store::SqlValue;
use rumqttc::QoS;

use crate::support::{Client, Process, Setup, eventually, query};

const WAIT: Duration = Duration::from_secs(30);

/// The peak resident set of process `pid`, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_results_are_bounded_and_the_engine_stays_under_64_mb() {
    let setup = Setup::embedded().rule(
        "bombs",
        r#"on_message("bomb/blob", |m| { let r = sql("SELECT randomblob(1000000000) AS b"); });
on_message("bomb/length", |m| { let r = sql("SELECT length(randomblob(1000000000)) AS n"); });
on_message("bomb/rows", |m| { let r = sql("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) SELECT x, hex(randomblob(50)) AS h FROM c"); });
on_message("bomb/bytes", |m| { let r = sql("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000) SELECT hex(randomblob(2000)) AS h FROM c"); });
on_message("ok/ping", |m| publish("ok/pong", `${sql("SELECT count(*) AS n FROM messages")[0].n}`));
"#,
    );
    let engine = Process::start(&setup).await;
    let pid = engine.child.id();
    let client = Client::connect(setup.port, "bombs").await;
    client.subscribe("ok/#").await;
    for bomb in ["blob", "length", "rows", "bytes"] {
        client
            .publish(&format!("bomb/{bomb}"), "", QoS::AtLeastOnce, false)
            .await;
    }
    client.publish("ok/ping", "", QoS::AtLeastOnce, false).await;
    client.next_on("ok/pong", WAIT).await;

    let db = setup.db_path();
    let errors: Vec<String> = eventually("four failed runs recorded", WAIT, || async {
        let runs = query(
            &db,
            "SELECT error FROM rule_runs WHERE rule = 'bombs' AND error IS NOT NULL ORDER BY id",
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
        (errors.len() == 4).then_some(errors)
    })
    .await;
    for (error, (line, reason)) in errors.iter().zip([
        ("rules/bombs.rhai:1:", "too big"),
        ("rules/bombs.rhai:2:", "too big"),
        ("rules/bombs.rhai:3:", "more than 10000 rows"),
        ("rules/bombs.rhai:4:", "larger than 4194304 bytes"),
    ]) {
        assert!(
            error.contains(line) && error.contains(reason),
            "{error:?} should name {line} and {reason}"
        );
    }
    let peak = peak_rss_kb(pid);
    eprintln!("peak RSS under the sql() bombs: {peak} kB");
    assert!(peak < 64 * 1024, "peak RSS {peak} kB");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}
