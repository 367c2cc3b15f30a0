//! Footprint: memory at idle, start time on a large history, and queries on that history.

#[allow(unused_imports)]
use super::*;

/// RSS of `homewright run` with the example config (embedded broker on a free port), 6 s after it
/// stored its first message (the runtimes' spare threads, kept 10 s, are then still there, as after any
/// burst of work). With `breakdown`, also where the median run's memory is (`-- idle`).
pub(crate) async fn idle_rss(report: &mut Report, runs: usize, breakdown: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("homewright.yaml")).unwrap();
    let mut samples = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = example
            .replace("port: 1883", &format!("port: {port}"))
            .replace("listen: 127.0.0.1:1883", &format!("listen: 127.0.0.1:{port}"))
            .replace(
                "path: data/history.db",
                &format!("path: {}", dir.path().join("history.db").display()),
            )
            .replace("dir: rules", &format!("dir: {}", root.join("rules").display()));
        let config = dir.path().join("homewright.yaml");
        std::fs::write(&config, text).unwrap();
        let db = dir.path().join("history.db");
        let engine = start_embedded(&config, port, &db).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let rss = engine.status("VmRSS:") as f64 / 1024.0;
        samples.push((rss, Mappings::read(engine.pid), engine.status("Threads:")));
        engine.stop().await;
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let values: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let (rss, mappings, threads) = &samples[samples.len() / 2];
    report.line(
        "idle RSS, example config (embedded broker)",
        format!("{rss:.1} MB ({})", all(&values, 1)),
        "<= 12 MB",
        Some(*rss <= 12.0),
    );
    if breakdown {
        for (what, kb) in &mappings.parts {
            report.line(
                &format!("  {what}"),
                format!("{:.2} MB", *kb as f64 / 1024.0),
                "",
                None,
            );
        }
        report.line("  threads", format!("{threads}"), "", None);
    }
}

/// A process's resident memory by kind of mapping, from /proc/PID/smaps.
pub(crate) struct Mappings {
    /// (what, kB), largest first.
    parts: Vec<(String, u64)>,
}

impl Mappings {
    fn read(pid: u32) -> Mappings {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut parts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        let mut kind = "";
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields
                .first()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                let perms = fields.get(1).copied().unwrap_or("");
                let path = fields.get(5).copied().unwrap_or("");
                kind = if !path.is_empty() && Path::new(path) == exe {
                    if perms.contains('x') {
                        "binary: code"
                    } else if perms.contains('w') {
                        "binary: data (written at start)"
                    } else {
                        "binary: read-only data"
                    }
                } else if path == "[heap]" {
                    "heap (main arena)"
                } else if path.is_empty() {
                    "anonymous (thread arenas, stacks)"
                } else if path.starts_with('[') {
                    "main thread's stack, vdso"
                } else {
                    "shared libraries"
                };
            } else if fields.first() == Some(&"Rss:") {
                let kb: u64 = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                *parts.entry(kind).or_default() += kb;
            }
        }
        let mut parts: Vec<(String, u64)> = parts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        parts.sort_by_key(|part| std::cmp::Reverse(part.1));
        Mappings { parts }
    }
}

/// `program run -c config`, its log beside the config.
pub(crate) fn spawn(program: &Path, config: &Path) -> Child {
    Command::new(program)
        .args(["run", "-c"])
        .arg(config)
        // HOMEWRIGHT_BENCH_LOG (e.g. `debug`) to see what an engine did in a run that went wrong.
        .env(
            "RUST_LOG",
            std::env::var("HOMEWRIGHT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(config.with_extension("log")).unwrap())
        .spawn()
        .unwrap()
}

pub(crate) async fn start_embedded(config: &Path, port: u16, db: &Path) -> Engine {
    let launched = Instant::now();
    let child = spawn(Path::new(&binary()), config);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let engine = Engine {
        pid: child.id(),
        child,
        client_id: "homewright".into(),
        port,
        db: db.to_path_buf(),
        launched,
        online_after: Duration::ZERO,
    };
    // The example subscribes to `#`, so the probe is stored like any message.
    engine.wait_ingesting().await;
    engine
}

/// Builds (once, cached under target/bench-data) a history of `rows` messages on 100 topics, one every
/// 100 ms, with a single INSERT ... SELECT over a recursive CTE.
pub(crate) async fn big_history(rows: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    // "v2": the schema with topic ids (a cached history of the first schema would be migrated at start).
    let path = dir.join(format!("history-v2-{rows}.db"));
    if path.exists() {
        return path;
    }
    let building = dir.join(format!("history-v2-{rows}.building.db"));
    let _ = std::fs::remove_file(&building);
    let started = Instant::now();
    println!(
        "  (building a {rows}-row history in {}; cached for later runs)",
        path.display()
    );
    let store = homewright::store::Store::open(&building).await.unwrap();
    store.close().await;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&building))
        .await
        .unwrap();
    let end = homewright::event::now_millis();
    let start = end - rows as i64 * 100;
    for statement in [
        "PRAGMA journal_mode = OFF".to_string(),
        "PRAGMA synchronous = OFF".to_string(),
        "PRAGMA cache_size = -400000".to_string(),
        "DROP INDEX message_rows_topic_ts".to_string(),
        "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < 99) \
         INSERT INTO topics (id, topic) SELECT i + 1, 'home/room' || i || '/temperature' FROM seq"
            .to_string(),
        format!(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows} - 1) \
             INSERT INTO message_rows (ts, topic_id, payload, qos, retain) \
             SELECT {start} + i * 100, 1 + i % 100, \
             printf('{{\"temperature\":%.2f,\"humidity\":%d}}', 18 + (i % 1000) / 100.0, 40 + i % 30), 1, 0 \
             FROM seq"
        ),
        "CREATE INDEX message_rows_topic_ts ON message_rows (topic_id, ts)".to_string(),
        "PRAGMA journal_mode = WAL".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    // Written with `synchronous = OFF`: without this the first engine start's first fsync would flush
    // the whole file and be timed as its start.
    std::fs::File::open(&building).unwrap().sync_all().unwrap();
    std::fs::rename(&building, &path).unwrap();
    println!("  (built in {:.0} s)", started.elapsed().as_secs_f64());
    path
}

pub(crate) async fn history(port: u16, work: &Path, report: &mut Report, plan: Plan) {
    let path = big_history(plan.history_rows).await;
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let rows = plan.history_rows;

    // Start: launch -> `online`, and launch -> first message stored, with 50 rules.
    let mut online = Vec::new();
    let mut ingesting = Vec::new();
    for run in 0..plan.runs.min(3) {
        let dir = work.join(format!("start-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let id = format!("hwbench-s-{run}-{}", free_port());
        let config = engine_config(&dir, port, QoS::AtLeastOnce, &id, &path);
        let engine = Engine::start(&config, port, &id, &path).await;
        online.push(engine.online_after.as_secs_f64() * 1000.0);
        // Engine::start returns once a probe is stored; a second probe is cheap, so time from launch.
        ingesting.push(engine.launched.elapsed().as_secs_f64() * 1000.0);
        engine.stop().await;
    }
    let o = median(&mut online);
    report.line(
        &format!("start to online, 50 rules, {:.2} GB history", size as f64 / 1e9),
        format!("{o:.0} ms ({})", all(&online, 0)),
        "<= 150 ms",
        Some(o <= 150.0),
    );
    report.line(
        "  start to first message stored",
        format!(
            "{:.0} ms (upper bound: probes every 10 ms)",
            median(&mut ingesting)
        ),
        "",
        None,
    );

    // Queries, through the engine's own read-only reader.
    let history_reader = homewright::store::HistoryReader::open(&path).await.unwrap();
    let mut times = Vec::new();
    for i in 0..200 {
        let topic = format!("home/room{}/temperature", i % 100);
        let started = Instant::now();
        let latest = history_reader.latest(&topic).await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(latest.is_some());
    }
    let latest_ms = median(&mut times);
    report.line(
        &format!("latest value of a topic, {rows} rows"),
        format!("{latest_ms:.3} ms (p99 {:.3})", percentile(&times, 0.99)),
        "<= 10 ms",
        Some(latest_ms <= 10.0),
    );
    let pool = reader(&path).await;
    let end: i64 = sqlx::query_scalar("SELECT max(ts) FROM latest")
        .fetch_one(&pool)
        .await
        .unwrap();
    let hourly = "SELECT ts / 3600000 * 3600000 AS hour, avg(CAST(json_extract(payload, '$.temperature') AS REAL)) \
                  FROM messages WHERE topic = ? AND ts >= ? AND ts < ? GROUP BY hour";
    let plan_rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {hourly}")))
            .bind("home/room7/temperature")
            .bind(end - 86_400_000)
            .bind(end)
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut times = Vec::new();
    let mut hours = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let result: Vec<(i64, Option<f64>)> = sqlx::query_as(sqlx::AssertSqlSafe(hourly))
            .bind("home/room7/temperature")
            .bind(end - 86_400_000)
            .bind(end)
            .fetch_all(&pool)
            .await
            .unwrap();
        hours = result.len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let detail: Vec<&str> = plan_rows.iter().map(|r| r.3.as_str()).collect();
    let indexed = detail
        .iter()
        .any(|d| d.contains("USING INDEX message_rows_topic_ts"));
    report.line(
        "hourly average of a topic over a day",
        format!("{:.1} ms, {hours} hours, index: {indexed}", median(&mut times)),
        "uses an index",
        Some(indexed),
    );
    println!("  query plan: {}", detail.join(" | "));
    report.lines.push(format!("  query plan: {}", detail.join(" | ")));

    // Without a ts index: a time range over every topic, one seek per topic (planner statistics).
    let recent = "SELECT count(*) FROM messages WHERE ts >= ?";
    let plan_rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {recent}")))
            .bind(end - 3_600_000)
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut times = Vec::new();
    let mut count = 0;
    for _ in 0..20 {
        let started = Instant::now();
        count = sqlx::query_scalar(sqlx::AssertSqlSafe(recent))
            .bind(end - 3_600_000)
            .fetch_one(&pool)
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let detail: Vec<&str> = plan_rows.iter().map(|r| r.3.as_str()).collect();
    let line = format!(
        "  last hour over all topics: {:.1} ms, {count} rows; plan: {}",
        median(&mut times),
        detail.join(" | ")
    );
    println!("{line}");
    report.lines.push(line);
}
