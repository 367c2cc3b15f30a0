//! Rules that try to take the Pi's memory: through `sql()`, big values, stored values, timers and
//! captured variables. Each run fails with a reason at its position, the engine's peak resident memory
//! (VmHWM, read from /proc) stays bounded, nothing a failed run stored is kept, and the other rules go
//! on.

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

/// The bombs that build values in the script: each is a trigger on `bomb/NAME`.
const SCRIPT_BOMBS: &str = r#"// A map of a hundred 3 MB keys, to store_set: Rhai's string limit does not count keys.
on_message("bomb/keys", |m| {
    let big = "k";
    big.pad(3000000, 'k');
    let map = #{};
    for i in 0..100 { map[`${i}` + big] = i; }
    store_set("keys", map);
});
// 4 MB strings stored in a loop.
on_message("bomb/store_loop", |m| {
    let big = "s";
    big.pad(4000000, 's');
    for i in 0..1000 { store_set(`loop/${i}`, big); }
});
// Values under the limit of one, until the store is full; the run fails and leaves nothing stored.
on_message("bomb/store_fill", |m| {
    let big = "f";
    big.pad(1000000, 'f');
    for i in 0..1000 { store_set(`fill/${i}`, big); }
});
// A run that stores, then fails.
on_message("bomb/fails", |m| {
    store_set("failed/a", 1);
    throw "stop";
});
// Timers capturing a 99,000-element array and a 4 MB string.
on_message("bomb/capture_array", |m| {
    let a = [];
    a.pad(99000, 1);
    for i in 0..53 { after("1h", || a.len()); }
});
on_message("bomb/capture_string", |m| {
    let s = "c";
    s.pad(4000000, 'c');
    for i in 0..53 { after("1h", || s.len()); }
});
// 5,000 timers a message.
on_message("bomb/timers", |m| {
    for i in 0..5000 { after("1h", || 1); }
});
// A captured map that grows on every message.
let kept = #{};
on_message("bomb/grow", |m| {
    let big = "g";
    big.pad(3000000, 'g');
    for i in 0..3 { kept[`${m.payload}/${i}` + big] = i; }
});
on_message("ok/ping", |m| publish("ok/pong", `${store_get("failed/a")}|${store_get("fill/0")}|${kept.len()}`));
"#;

/// The error of the last run triggered by `topic`, once there is one.
async fn run_error(db: &std::path::Path, topic: &str, runs: usize) -> Vec<String> {
    eventually(&format!("{runs} runs on {topic}"), WAIT, || async {
        let result = query(
            db,
            &format!("SELECT coalesce(error, '') FROM rule_runs WHERE topic = '{topic}' ORDER BY id"),
        )
        .await;
        let errors: Vec<String> = result.rows.iter().map(|r| crate::support::text(&r[0])).collect();
        (errors.len() >= runs).then_some(errors)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_memory_bombs_fail_and_the_engine_grows_less_than_32_mb() {
    let setup = Setup::embedded().rule("bombs", SCRIPT_BOMBS);
    let engine = Process::start(&setup).await;
    let pid = engine.child.id();
    let db = setup.db_path();
    let client = Client::connect(setup.port, "bombs").await;
    client.subscribe("ok/#").await;
    let start = peak_rss_kb(pid);
    eprintln!("peak RSS at start: {start} kB");

    let bombs: [(&str, usize, &str); 8] = [
        ("keys", 1, "of memory (rules.max_run_memory)"),
        ("store_loop", 1, "more than 1 MiB (rules.max_value_size)"),
        ("store_fill", 1, "(rules.max_"),
        ("fails", 1, "stop"),
        ("capture_array", 1, "captured variables take more than 1 MiB"),
        ("capture_string", 1, "captured variables take more than 1 MiB"),
        ("timers", 5, "too many actions in one run"),
        ("grow", 8, "keeps more than 16 MiB in its captured variables"),
    ];
    for (bomb, messages, reason) in bombs {
        for i in 0..messages {
            client
                .publish(&format!("bomb/{bomb}"), format!("{i}"), QoS::AtLeastOnce, false)
                .await;
        }
        let errors = run_error(&db, &format!("bomb/{bomb}"), messages).await;
        eprintln!(
            "peak RSS after bomb/{bomb}: {} kB; errors: {:?}",
            peak_rss_kb(pid),
            errors
                .iter()
                .map(|e| e.chars().take(160).collect::<String>())
                .collect::<Vec<_>>()
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains(reason) && e.contains("rules/bombs.rhai:")),
            "bomb/{bomb}: {errors:?} should say {reason:?} at its position"
        );
    }

    // The next message is still ruled, and nothing a failed run stored is there.
    client.publish("ok/ping", "", QoS::AtLeastOnce, false).await;
    let pong = client.next_on("ok/pong", WAIT).await;
    let pong = String::from_utf8_lossy(&pong.payload).to_string();
    let (failed, rest) = pong.split_once('|').expect("three fields");
    let (fill, kept) = rest.split_once('|').expect("three fields");
    assert_eq!((failed, fill), ("", ""), "store_get after failed runs: {pong}");
    let kept: usize = kept.parse().expect("a count");
    assert!(kept <= 6, "the growing map started afresh: {kept} keys");
    let stored = query(
        &db,
        "SELECT count(*) FROM store WHERE key IN ('keys', 'failed/a') OR key LIKE 'loop/%' OR key LIKE 'fill/%'",
    )
    .await;
    assert_eq!(
        stored.rows[0][0],
        SqlValue::Integer(0),
        "a failed run's store_set persisted"
    );
    let timers = query(
        &db,
        "SELECT count(*), coalesce(sum(length(captured)), 0) FROM timers",
    )
    .await;
    eprintln!("pending timers: {:?}", timers.rows[0]);
    assert_eq!(
        timers.rows[0][0],
        SqlValue::Integer(5 * 1000),
        "1,000 timers a run (each after() an action)"
    );

    // The debug engine with its embedded broker starts at about 40 MB, the release one at 12 MB: what
    // the bombs may add is one run's memory and one rule's captured variables (rules.max_run_memory,
    // 16 MiB each), which keeps the release engine under 64 MB.
    let peak = peak_rss_kb(pid);
    eprintln!(
        "peak RSS under the script bombs: {peak} kB, {} kB above the start",
        peak - start
    );
    assert!(
        peak - start < 32 * 1024,
        "peak RSS {peak} kB, from {start} kB at start"
    );
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}
