//! Ingest: how fast the engine stores what the broker delivers (against the bare subscriber), the disk
//! it uses per message, and how many fsyncs a burst costs.

#[allow(unused_imports)]
use super::*;

pub(crate) struct Disk {
    pub(crate) table_ratio: f64,
    pub(crate) file_ratio: f64,
    pub(crate) file_bytes_per_message: f64,
}

pub(crate) struct IngestRun {
    pub(crate) rate: f64,
    /// The engine process's CPU time (all threads, user and system) per stored message: on a machine
    /// where the broker, the load and the engine share two cores, this is what the ingest ratio
    /// mostly depends on.
    pub(crate) cpu_us_per_message: f64,
    pub(crate) peak_rss_kb: u64,
    pub(crate) disk: Option<Disk>,
}

/// Messages per second the engine stores (and runs through its rules), from the first publish to the
/// last commit.
pub(crate) async fn engine_ingest(port: u16, work: &Path, qos: QoS, count: usize, run: usize) -> IngestRun {
    let dir = work.join(format!("ingest-q{}-{run}", qos as u8));
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-i{}-{run}-{}", qos as u8, free_port());
    let db = dir.join("history.db");
    let config = engine_config(&dir, port, qos, &id, &db);
    let engine = Engine::start(&config, port, &id, &db).await;
    let pool = reader(&db).await;
    let base: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    let start = Instant::now();
    let cpu_before = cpu_time(engine.pid);
    blast(port, qos, count).await;
    let (stored, last) = wait_progress(count as u64, Duration::from_secs(3), || {
        let pool = pool.clone();
        async move {
            let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM messages")
                .fetch_one(&pool)
                .await
                .unwrap_or(None);
            (max.unwrap_or(0) - base).max(0) as u64
        }
    })
    .await;
    let rate = stored as f64 / (last - start).as_secs_f64();
    let cpu_us_per_message = (cpu_time(engine.pid) - cpu_before).as_secs_f64() * 1e6 / stored.max(1) as f64;
    let peak_rss_kb = engine.status("VmHWM:");
    pool.close().await;
    engine.stop().await;
    let disk = if qos == QoS::AtLeastOnce {
        Some(disk_use(&db, count).await)
    } else {
        None
    };
    let _ = std::fs::remove_file(&db);
    IngestRun {
        rate,
        cpu_us_per_message,
        peak_rss_kb,
        disk,
    }
}

pub(crate) async fn disk_use(db: &Path, count: usize) -> Disk {
    let pool = reader(db).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    let table: i64 = sqlx::query_scalar(
        "SELECT sum(pgsize) FROM dbstat WHERE name IN \
         ('message_rows', 'message_rows_topic_ts', 'topics', 'sqlite_autoindex_topics_1')",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(0);
    pool.close().await;
    let file = std::fs::metadata(db).map_or(0, |m| m.len())
        + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    let content = blast_bytes(count);
    Disk {
        table_ratio: table as f64 / rows as f64 / content,
        file_ratio: file as f64 / rows as f64 / content,
        file_bytes_per_message: file as f64 / rows as f64,
    }
}

/// fsyncs per committed batch: the engine under strace (only fsync/fdatasync are stopped on, through
/// seccomp, so it runs at nearly full speed) while bursts of messages arrive.
pub(crate) async fn fsyncs(port: u16, work: &Path, report: &mut Report, plan: Plan) {
    let dir = work.join("fsync");
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-f-{}", free_port());
    let db = dir.join("history.db");
    let config = engine_config(&dir, port, QoS::AtLeastOnce, &id, &db);
    let trace = dir.join("strace.txt");
    // A wrapper script, so Engine::start runs it like the binary.
    let wrapper = dir.join("traced.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec strace -f -qq --seccomp-bpf -y -e trace=fsync,fdatasync -o {} {} \"$@\"\n",
            trace.display(),
            binary()
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&wrapper).status();
    if Command::new("strace").arg("-V").output().is_err() {
        report.line(
            "fsyncs per batch",
            "strace not installed".into(),
            "1 per batch",
            None,
        );
        return;
    }
    let engine = start_with(&wrapper, &config, port, &id, &db).await;
    let before = count_lines(&trace);
    let bursts = if plan.quick { 20 } else { 50 };
    let per_burst = 500;
    for _ in 0..bursts {
        blast(port, QoS::AtLeastOnce, per_burst).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = count_lines(&trace) - before;
    let wal = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .skip(before)
        .filter(|l| l.contains("history.db-wal"))
        .count();
    engine.stop().await;
    let messages = bursts * per_burst;
    let per_burst_fsyncs = total as f64 / bursts as f64;
    report.line(
        "fsyncs while storing",
        format!(
            "{total} for {messages} msgs in {bursts} bursts ({:.0} msgs/fsync)",
            messages as f64 / total.max(1) as f64
        ),
        "1 per batch, not per msg",
        Some(total < messages / 20),
    );
    report.line(
        "  fsyncs per burst of 500 (WAL / all)",
        format!("{:.1} / {per_burst_fsyncs:.1}", wal as f64 / bursts as f64),
        "(messages + rule_runs)",
        None,
    );
}

pub(crate) fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}
