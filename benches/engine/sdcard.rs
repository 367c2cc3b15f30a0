//! SD card wear: what the engine writes per stored message and its fsyncs per second at a house's rates,
//! and a rule's answer time through Mosquitto's default in-flight window; both through a Mosquitto
//! with its default settings.

#[allow(unused_imports)]
use super::*;

/// Topics of the house load: zigbee2mqtt-style sensors.
const HOUSE_TOPICS: usize = 40;

/// A zigbee2mqtt-style state message of about 110 bytes for sensor `i`, `n`-th message.
fn house_payload(i: usize, n: usize) -> String {
    format!(
        "{{\"battery\":{},\"humidity\":{}.{},\"linkquality\":{},\"temperature\":{}.{},\"voltage\":{}}}",
        60 + i % 40,
        40 + n % 30,
        n % 10,
        100 + (n * 7) % 150,
        18 + n % 6,
        (n * 3) % 10,
        2900 + (n * 13) % 200
    )
}

fn house_topic(i: usize) -> String {
    format!("zigbee2mqtt/sensor_{i:02}")
}

/// The Mosquitto drop-in the package installs (`/etc/mosquitto/conf.d/homewright.conf`).
const DROP_IN: &str = include_str!("../../packaging/mosquitto/homewright.conf");

/// Whether the runs use Mosquitto with the package's drop-in (`HOMEWRIGHT_BENCH_MOSQUITTO=drop-in`)
/// rather than Mosquitto's defaults.
fn with_drop_in() -> bool {
    std::env::var("HOMEWRIGHT_BENCH_MOSQUITTO").is_ok_and(|v| v == "drop-in")
}

/// Mosquitto exactly as a package installs it: only a listener on a free port (its defaults:
/// `max_inflight_messages 20`, `max_queued_messages 1000`, Nagle on, no persistence), and `settings`;
/// with [`with_drop_in`], also the settings of homewright's drop-in.
async fn default_mosquitto(settings: &str) -> Mosquitto {
    Mosquitto::start_custom(|port, dir| {
        let drop_in = if with_drop_in() {
            format!("persistence_location {}/\n{DROP_IN}", dir.display())
        } else {
            String::new()
        };
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{settings}{drop_in}")
    })
    .await
    .expect("mosquitto must be installed (apt-get install mosquitto)")
}

/// How the runs' Mosquitto is set up, for the report's first line.
fn mosquitto_settings() -> &'static str {
    if with_drop_in() {
        "with homewright's drop-in (persistence, max_inflight_messages 1000, max_queued_messages 100000)"
    } else {
        "default settings"
    }
}

/// The engine of the SD card figures: the house's one rule, reading every message's JSON and almost
/// never publishing, and `bench/probe` so that [`Engine::wait_ingesting`] can tell it stores.
fn house_config(dir: &Path, port: u16, qos: QoS, client_id: &str, db: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("house.rhai"),
        "on_message(\"zigbee2mqtt/+\", |msg| {\n    let t = msg.json?.temperature;\n    \
         if t != () && t > 60.0 { publish(\"house/alert/\" + msg.parts[1], \"hot\"); }\n});\n",
    )
    .unwrap();
    let config = dir.join("homewright.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: {client_id}\n  \
             subscribe: [\"zigbee2mqtt/#\", \"bench/probe\"]\n  qos: {}\n  base_topic: {client_id}\n\
             broker:\n  embedded: false\ndatabase:\n  path: {}\n{}rules:\n  dir: {}\n",
            qos as u8,
            db.display(),
            // HOMEWRIGHT_BENCH_COMMIT_INTERVAL: another database.commit_interval than the default.
            std::env::var("HOMEWRIGHT_BENCH_COMMIT_INTERVAL")
                .map(|v| format!("  commit_interval: {v}\n"))
                .unwrap_or_default(),
            rules.display(),
        ),
    )
    .unwrap();
    config
}

/// Messages already in the history when an SD card point starts: about two days of a house at its
/// 20 msg/s' pace spread over 40 topics is 3.5 million; 400,000 are enough that every topic's newest
/// index entries lie in a leaf of their own, as in any history older than an hour or so. A fresh, empty
/// history would flatter every design: its whole (topic, time) index fits in a few pages.
const HOUSE_HISTORY: u64 = 400_000;

/// Writes `rows` past messages of the house's 40 topics into a new history at `db` (the engine's own
/// schema), without syncs, then syncs the file once: the engine starts on a history of some age.
async fn prefill_house(db: &Path, rows: u64) {
    let store = homewright::store::Store::open(db).await.unwrap();
    store.close().await;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db))
        .await
        .unwrap();
    let start = homewright::event::now_millis() - rows as i64 * 50;
    for statement in [
        "PRAGMA synchronous = OFF".to_string(),
        format!(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {HOUSE_TOPICS} - 1) \
             INSERT INTO topics (id, topic) SELECT i + 1, printf('zigbee2mqtt/sensor_%02d', i) FROM seq"
        ),
        format!(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows} - 1) \
             INSERT INTO message_rows (ts, topic_id, payload, qos, retain) \
             SELECT {start} + i * 50, 1 + (i * 17) % {HOUSE_TOPICS}, \
             printf('{{\"battery\":%d,\"humidity\":%d.%d,\"linkquality\":%d,\"temperature\":%d.%d,\"voltage\":%d}}', \
             60 + i % 40, 40 + i % 30, i % 10, 100 + (i * 7) % 150, 18 + i % 6, (i * 3) % 10, 2900 + (i * 13) % 200), 0, 0 \
             FROM seq"
        ),
        "PRAGMA wal_checkpoint(TRUNCATE)".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    std::fs::File::open(db).unwrap().sync_all().unwrap();
}

/// Bytes the process caused to be written to storage so far (`write_bytes` of /proc/PID/io).
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

struct Wear {
    bytes_per_message: f64,
    raw_per_message: f64,
    fsyncs_per_second: f64,
    stored: i64,
    sent: usize,
}

/// One point of the SD card figures: the house load at `rate` msg/s for `seconds`, the engine under
/// strace counting its fsyncs. Bytes and fsyncs are counted from the first message of the load to its
/// last, so start-up (migrations, the probe) is not in them.
async fn wear_point(port: u16, work: &Path, qos: QoS, rate: u32, seconds: u64) -> Option<Wear> {
    let dir = work.join(format!("wear-q{}-{rate}", qos as u8));
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-w-{}", free_port());
    let db = dir.join("history.db");
    let config = house_config(&dir, port, qos, &id, &db);
    let trace = dir.join("strace.txt");
    let wrapper = dir.join("traced.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec strace -f -qq --seccomp-bpf -e trace=fsync,fdatasync -o {} {} \"$@\"\n",
            trace.display(),
            binary()
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&wrapper).status();
    if Command::new("strace").arg("-V").output().is_err() {
        println!("  strace is not installed: no fsync counts (apt-get install strace)");
        return None;
    }
    prefill_house(&db, HOUSE_HISTORY).await;
    let engine = start_with(&wrapper, &config, port, &id, &db).await;
    // Let the start settle (the probe's commit, the planner statistics).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (client, mut eventloop) = client(port, &format!("bench-house-{}", free_port()), true);
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let total = rate as usize * seconds as usize;
    let mut raw = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tick.tick().await;
    let bytes_before = write_bytes(engine.pid);
    let fsyncs_before = count_lines(&trace);
    let started = Instant::now();
    for n in 0..total {
        // Sensors in a shuffled order, as a house's clocks are not in step.
        let sensor = (n * 17 + n / HOUSE_TOPICS) % HOUSE_TOPICS;
        let topic = house_topic(sensor);
        let payload = house_payload(sensor, n);
        raw += topic.len() + payload.len();
        client.publish(topic, qos, false, payload).await.unwrap();
        tick.tick().await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = write_bytes(engine.pid) - bytes_before;
    let fsyncs = count_lines(&trace) - fsyncs_before;
    // Everything sent is stored before the stop (a batch may wait for its interval): the stop would
    // flush what the engine holds, but not what the broker still holds for it.
    let pool = reader(&db).await;
    let count_stored = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) - ? FROM messages WHERE topic LIKE 'zigbee2mqtt/%'")
                .bind(HOUSE_HISTORY as i64)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                .max(0) as u64
        }
    };
    wait_progress(total as u64, Duration::from_secs(70), count_stored).await;
    let _ = client.disconnect().await;
    poll.abort();
    engine.stop().await;
    let stored = count_stored().await as i64;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Some(Wear {
        bytes_per_message: bytes as f64 / total as f64,
        raw_per_message: raw as f64 / total as f64,
        fsyncs_per_second: fsyncs as f64 / elapsed,
        stored,
        sent: total,
    })
}

/// `sdcard` mode: what the engine writes at a house's rates, beside the targets.
pub(crate) async fn sdcard() {
    let work = tempfile::tempdir().unwrap();
    let broker = default_mosquitto("").await;
    // HOMEWRIGHT_BENCH_SECONDS: seconds per point (default 40; 2 msg/s points run 1.5x as long).
    let seconds: u64 = std::env::var("HOMEWRIGHT_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    println!(
        "homewright SD card figures: 40 zigbee2mqtt topics, ~110-byte JSON, one rule reading every \
         message, on a history of {HOUSE_HISTORY} messages; {}, {}; {seconds} s per point",
        mosquitto_version(),
        mosquitto_settings()
    );
    let mut report = Report { lines: Vec::new() };
    println!();
    println!("{:<44} {:<34} {:<26} verdict", "figure", "measured", "target");
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for rate in [2u32, 20, 200] {
            let secs = if rate == 2 { seconds * 3 / 2 } else { seconds };
            let Some(w) = wear_point(broker.port, work.path(), qos, rate, secs).await else {
                return;
            };
            let level = qos as u8;
            let kb = w.bytes_per_message / 1000.0;
            let at_house = rate == 20;
            report.line(
                &format!("written per message, {rate} msg/s QoS {level}"),
                format!(
                    "{kb:.2} KB ({:.1}x the {:.0} raw bytes)",
                    w.bytes_per_message / w.raw_per_message,
                    w.raw_per_message
                ),
                if at_house { "<= 1 KB (aim 0.45 KB, 4x)" } else { "" },
                at_house.then_some(kb <= 1.0),
            );
            report.line(
                &format!("  fsyncs per second, {rate} msg/s QoS {level}"),
                format!("{:.2}", w.fsyncs_per_second),
                if at_house { "<= 2" } else { "" },
                at_house.then_some(w.fsyncs_per_second <= 2.0),
            );
            report.line(
                &format!("  stored / sent, {rate} msg/s QoS {level}"),
                format!("{} / {}", w.stored, w.sent),
                "all",
                Some(w.stored as usize >= w.sent),
            );
            let per_day = w.bytes_per_message * f64::from(rate) * 86_400.0 / 1e9;
            report.line(
                &format!("  written per day at {rate} msg/s QoS {level}"),
                format!("{per_day:.2} GB"),
                "",
                None,
            );
        }
    }
    println!();
    println!("summary");
    for line in &report.lines {
        println!("{line}");
    }
    drop(broker);
}

/// `latency` mode: a rule's answer to every message at 1,000 msg/s QoS 1 through a Mosquitto with its
/// default in-flight window of 20, beside a bare rumqttc echo in the same run.
pub(crate) async fn latency_default_broker(plan: Plan) {
    let work = tempfile::tempdir().unwrap();
    // Nagle off (as docs/durability.md recommends): with it on, even the bare echo's p90 is 7-22 ms
    // here, from delayed ACKs, and the figure would say nothing about the engine. The window stays 20.
    let broker = default_mosquitto("set_tcp_nodelay true\n").await;
    println!(
        "{}, {} and set_tcp_nodelay true",
        mosquitto_version(),
        mosquitto_settings()
    );
    let port = broker.port;
    let window = if with_drop_in() {
        "window 1000"
    } else {
        "window 20"
    };
    let mut report = Report { lines: Vec::new() };
    let rate = 1_000;
    let runs = 300..300 + plan.runs.min(3);
    let (bare, engine) = latency_runs(
        port,
        work.path(),
        rate,
        plan.latency_seconds,
        runs,
        QoS::AtLeastOnce,
    )
    .await;
    let mut p90s: Vec<f64> = engine.iter().map(|e| e.p90).collect();
    let mut p99s: Vec<f64> = engine.iter().map(|e| e.p99).collect();
    let lost: u64 = engine.iter().map(|e| e.lost).sum();
    let mut bare90: Vec<f64> = bare.iter().map(|b| b.p90).collect();
    let mut bare99: Vec<f64> = bare.iter().map(|b| b.p99).collect();
    println!(
        "  (1000 msg/s QoS 1, {window}: engine p90 ms {}, p99 ms {}; bare echo p90 ms {}, p99 ms {})",
        all(&p90s, 2),
        all(&p99s, 2),
        all(&bare90, 2),
        all(&bare99, 2)
    );
    let (p90, p99) = (median(&mut p90s), median(&mut p99s));
    let (b90, b99) = (median(&mut bare90), median(&mut bare99));
    report.line(
        &format!("latency p90, 1,000 msg/s QoS 1, {window}"),
        format!("{p90:.2} ms (bare echo {b90:.2}, {:.1}x)", p90 / b90),
        "",
        None,
    );
    report.line(
        &format!("latency p99, 1,000 msg/s QoS 1, {window}"),
        format!("{p99:.2} ms (bare echo {b99:.2}, {:.1}x)", p99 / b99),
        "<= 2 ms",
        Some(p99 <= 2.0),
    );
    report.line("messages lost", format!("{lost}"), "0", Some(lost == 0));
}
