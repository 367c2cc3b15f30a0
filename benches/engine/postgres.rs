//! `cargo bench --bench engine -- postgres`: the history in PostgreSQL at a house's and a family's
//! scale, on the server at 127.0.0.1:5432 (`HOMEWRIGHT_BENCH_PG` overrides its admin URL), each part in
//! a database of its own, dropped at the end:
//! - catch-up: a day of a 20 msg/s house (1,728,000 messages and a rule run for each) stored locally,
//!   then copied by the replication stage as a restarted engine would; its rows per second;
//! - queries: a month of 10 sites (20 topics each, a reading a minute: 8.6 million rows) made on the
//!   server with generate_series, and the latency of docs/sql.md's latest-values and hourly-average
//!   queries over it (median of several runs on an open connection).
//!
//! `HOMEWRIGHT_BENCH_PG_MESSAGES` and `HOMEWRIGHT_BENCH_PG_TOPICS` make either part smaller (0
//! messages: the queries only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use homewright::config::{ReplicateConfig, Secret};
use homewright::event::{Message, RuleRun};
use homewright::replicate::Replicator;
use homewright::store::postgres::PgHistory;
use homewright::store::replica::Table;
use homewright::store::{HistoryReader, RecordBatch, SqlValue, Store};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use tokio_util::sync::CancellationToken;

use super::{Report, median};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A database of its own on the server, dropped by `drop_database`.
async fn create_database(admin: &PgPool, name: &str) -> String {
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let admin_url = admin_url();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

async fn drop_database(admin: &PgPool, name: &str) {
    let _ = admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await;
}

fn admin_url() -> String {
    std::env::var("HOMEWRIGHT_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn replicate_config(url: &str, site: &str) -> ReplicateConfig {
    ReplicateConfig {
        url: Secret::new(url.to_string()),
        target: url.to_string(),
        site: site.to_string(),
        password: None,
        tls: None,
    }
}

pub(crate) async fn postgres() {
    let admin = match PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url())
        .await
    {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("postgres bench: no PostgreSQL at {}: {e}", admin_url());
            return;
        }
    };
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await
        .unwrap();
    println!(
        "homewright PostgreSQL benchmark: PostgreSQL {version}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = Report { lines: Vec::new() };
    catch_up(&admin, &mut report).await;
    queries(&admin, &mut report).await;
    admin.close().await;
}

/// A day of a 20 msg/s house, replicated from scratch.
async fn catch_up(admin: &PgPool, report: &mut Report) {
    let messages = env_number("HOMEWRIGHT_BENCH_PG_MESSAGES", 86_400 * 20) as usize;
    if messages == 0 {
        return;
    }
    let name = format!("hw_bench_catchup_{}", std::process::id());
    let url = create_database(admin, &name).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("history.db")).await.unwrap();
    let rule: Arc<str> = Arc::from("climate");
    let day_start = homewright::event::now_millis() - 86_400_000;
    let started = Instant::now();
    let batch = 4_000;
    for first in (0..messages).step_by(batch) {
        let chunk: Vec<Message> = (first..(first + batch).min(messages))
            .map(|i| Message {
                // 20 a second, on 40 zigbee2mqtt-like topics.
                ts: day_start + i as i64 * 50,
                topic: format!("zigbee2mqtt/sensor_{}", i % 40).into(),
                payload: Bytes::from(format!(
                    "{{\"temperature\":{}.{},\"humidity\":{},\"battery\":97,\"linkquality\":120}}",
                    15 + i % 10,
                    i % 10,
                    40 + i % 30
                )),
                qos: 1,
                retain: false,
                dup: false,
            })
            .collect();
        store
            .insert_messages(&chunk.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let runs = RecordBatch {
            runs: chunk
                .iter()
                .map(|m| RuleRun {
                    ts: m.ts,
                    rule: Arc::clone(&rule),
                    trigger: "on_message",
                    topic: Some(m.topic.clone()),
                    duration_us: 40,
                    error: None,
                    actions: 0,
                    late: false,
                })
                .collect(),
            ..Default::default()
        };
        store.write_records(&runs).await.unwrap();
    }
    println!(
        "catch-up: {messages} messages and {messages} rule runs stored locally in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let reader = HistoryReader::open(store.path()).await.unwrap();
    let mut top = Vec::new();
    for sql in [
        "SELECT max(id) FROM message_rows",
        "SELECT max(id) FROM rule_run_rows",
    ] {
        let result = reader.query(sql, &[], None).await.unwrap();
        match result.rows.first().map(Vec::as_slice) {
            Some([SqlValue::Integer(id)]) => top.push(*id),
            other => panic!("{sql}: {other:?}"),
        }
    }
    let (message_top, runs_top) = (top[0], top[1]);

    let config = replicate_config(&url, "house");
    let replicator = Replicator::new(store.clone(), &config).await.unwrap();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(replicator.run(shutdown.clone()));
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let messages_done = store.replication_mark(Table::Messages).await.unwrap() >= message_top;
        let runs_done = store.replication_mark(Table::RuleRuns).await.unwrap() >= runs_top;
        if messages_done && runs_done {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = task.await;
    let rows = (messages * 2) as f64;
    report.line(
        "replicated rows/s (messages + rule runs)",
        format!("{:.0} rows/s", rows / elapsed),
        "",
        None,
    );
    report.line(
        &format!("catch-up of a 20 msg/s day ({messages} msgs)"),
        format!(
            "{elapsed:.1} s ({:.0}x real time)",
            86_400.0 * messages as f64 / (86_400.0 * 20.0) / elapsed
        ),
        "",
        None,
    );
    store.close().await;
    drop_database(admin, &name).await;
}

/// A month of 10 sites made on the server, and the docs' queries over it.
async fn queries(admin: &PgPool, report: &mut Report) {
    let topics = env_number("HOMEWRIGHT_BENCH_PG_TOPICS", 20);
    const SITES: u64 = 10;
    const MINUTES: u64 = 30 * 24 * 60;
    let name = format!("hw_bench_sites_{}", std::process::id());
    let url = create_database(admin, &name).await;
    // The engine's own schema.
    PgHistory::connect(&replicate_config(&url, "site1"))
        .await
        .unwrap()
        .close()
        .await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let started = Instant::now();
    // Month partitions as the engine names them (UTC calendar months), for the month before now and the next.
    pool.execute(
        "SET TimeZone = 'UTC'; DO $$ DECLARE m timestamptz; BEGIN \
         FOR m IN SELECT generate_series(date_trunc('month', now() - interval '31 days'), \
                  date_trunc('month', now() + interval '1 month'), interval '1 month') LOOP \
           EXECUTE format('CREATE TABLE IF NOT EXISTS message_rows_p%s PARTITION OF message_rows \
             FOR VALUES FROM (%s) TO (%s)', to_char(m, 'YYYYMM'), (extract(epoch FROM m) * 1000)::bigint, \
             (extract(epoch FROM m + interval '1 month') * 1000)::bigint); \
         END LOOP; END $$",
    )
    .await
    .unwrap();
    let start = homewright::event::now_millis() - MINUTES as i64 * 60_000;
    for site in 1..=SITES {
        pool.execute(AssertSqlSafe(format!(
            "INSERT INTO message_rows (site, id, ts, topic, payload, qos, retain) \
             SELECT 'site{site}', m * {topics} + t + 1, {start} + m::bigint * 60000, 'sensor/t' || t, \
                    round((15 + 8 * sin(m / 300.0 + t + {site}))::numeric, 2)::text, 0, 0 \
             FROM generate_series(0, {last_minute}) m, generate_series(0, {last_topic}) t",
            last_minute = MINUTES - 1,
            last_topic = topics - 1,
        )))
        .await
        .unwrap();
    }
    pool.execute(
        "INSERT INTO topics (site, topic, latest_id, latest_ts) \
         SELECT DISTINCT ON (site, topic) site, topic, id, ts FROM message_rows ORDER BY site, topic, id DESC",
    )
    .await
    .unwrap();
    // On its own: VACUUM cannot run inside the implicit transaction of several statements.
    pool.execute("VACUUM ANALYZE").await.unwrap();
    let rows = SITES * topics * MINUTES;
    println!(
        "queries: {rows} rows ({SITES} sites x {topics} topics x a reading a minute for 30 days) made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let latest = "SELECT topic, payload, to_timestamp(ts / 1000.0) AS received FROM latest \
                  WHERE site = 'site3' ORDER BY topic";
    let hourly_month = "SELECT date_trunc('hour', to_timestamp(ts / 1000.0)) AS hour, \
                        round(avg(payload::float8)::numeric, 2) AS average, count(*) AS readings \
                        FROM messages WHERE site = 'site3' AND topic = 'sensor/t7' \
                        AND ts >= (extract(epoch FROM now() - interval '30 days') * 1000)::bigint \
                        AND payload ~ '^-?[0-9]+(\\.[0-9]+)?$' GROUP BY hour ORDER BY hour";
    let hourly_all_sites = "SELECT date_trunc('hour', to_timestamp(ts / 1000.0)) AS hour, site, \
                            round(avg(payload::float8)::numeric, 2) AS average \
                            FROM messages WHERE topic = 'sensor/t7' \
                            AND ts >= (extract(epoch FROM now() - interval '30 days') * 1000)::bigint \
                            AND payload ~ '^-?[0-9]+(\\.[0-9]+)?$' GROUP BY hour, site ORDER BY hour, site";
    for (what, sql, expected) in [
        ("latest value per topic (one site)", latest, topics),
        ("hourly average, a month, one site", hourly_month, 30 * 24),
        (
            "hourly average, a month, all 10 sites",
            hourly_all_sites,
            30 * 24 * SITES,
        ),
    ] {
        let mut times = Vec::new();
        let mut got = 0;
        for _ in 0..9 {
            let started = Instant::now();
            got = sqlx::query(sql).fetch_all(&pool).await.unwrap().len() as u64;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        // A month back from now may start inside an hour: a row more or less per site.
        assert!(
            got.abs_diff(expected) <= SITES,
            "{what}: {got} rows, expected {expected}"
        );
        report.line(
            what,
            format!("{:.1} ms median ({got} rows)", median(&mut times)),
            "",
            None,
        );
    }
    pool.close().await;
    drop_database(admin, &name).await;
}
