//! Replication of the history to a real PostgreSQL (`history.replicate`): what a live engine stores
//! arrives once, in the database of each test, through an outage of the server and a SIGKILL of the
//! engine; two houses share one database; `query` over it refuses writes; a bad URL is named in the log
//! while the engine goes on storing locally.

use std::time::Duration;

use bytes::Bytes;
use homewright::config::{ReplicateConfig, Secret};
use homewright::event::Message;
use homewright::store::Store;
use homewright::store::postgres::PgHistory;
use rumqttc::QoS;
use sqlx::{AssertSqlSafe, Executor};

use crate::support::postgres::{PgDb, Proxy};
use crate::support::{Client, Engine, Process, Setup, count, eventually, free_port, run_homewright};

const RULE: &str = r#"on_message("sensor/+", |msg| {
    if msg.payload == "5" { publish("alarm", "five"); }
});
"#;

fn replicating(setup: Setup, url: &str, site: &str) -> Setup {
    let mut setup = setup.rule("alarm", RULE);
    setup.extra_config = format!("history:\n  replicate:\n    url: {url}\n    site: {site}\n");
    setup
}

/// Every row of the three tables, as text, in id order: the local history ...
async fn local_rows(setup: &Setup) -> Vec<String> {
    let result = crate::support::query(
        &setup.db_path(),
        "SELECT 'm' || id || ':' || topic || ':' || \
           CASE WHEN typeof(payload) = 'blob' THEN 'x' || hex(payload) ELSE payload END FROM messages \
         UNION ALL SELECT 'a' || id || ':' || target || ':' || \
           coalesce(CASE WHEN typeof(value) = 'blob' THEN 'x' || hex(value) ELSE value END, '') FROM actions \
         UNION ALL SELECT 'r' || id || ':' || rule || ':' || coalesce(topic, '') FROM rule_runs ORDER BY 1",
    )
    .await;
    result.rows.iter().map(|r| crate::support::text(&r[0])).collect()
}

/// ... and the same on the server for `site`.
async fn remote_rows(db: &PgDb, site: &str) -> Vec<String> {
    db.strings(&format!(
        "SELECT s FROM (SELECT 'm' || id || ':' || topic || ':' || \
           coalesce(payload, 'x' || upper(encode(payload_bytes, 'hex'))) AS s FROM messages WHERE site = '{site}' \
         UNION ALL SELECT 'a' || id || ':' || target || ':' || \
           coalesce(value, 'x' || upper(encode(value_bytes, 'hex')), '') FROM actions WHERE site = '{site}' \
         UNION ALL SELECT 'r' || id || ':' || rule || ':' || coalesce(topic, '') FROM rule_runs WHERE site = '{site}') x \
         ORDER BY s COLLATE \"C\""
    ))
    .await
}

/// Waits until the server holds exactly the local history of `setup` for `site`.
async fn until_replicated(db: &PgDb, setup: &Setup, site: &str, timeout: Duration) -> Vec<String> {
    let mut last = (0, 0);
    let result = tokio::time::timeout(timeout, async {
        loop {
            let local = local_rows(setup).await;
            let remote = remote_rows(db, site).await;
            if !local.is_empty() && local == remote {
                return local;
            }
            last = (local.len(), remote.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match result {
        Ok(rows) => rows,
        Err(_) => panic!("the server never matched the local history: {last:?} local/remote rows"),
    }
}

/// Waits until `n` readings are in the local history.
async fn until_stored(setup: &Setup, n: i64) {
    let sql = "SELECT count(*) FROM messages WHERE topic LIKE 'sensor/%'";
    eventually("the readings stored locally", Duration::from_secs(20), || async {
        (count(&setup.db_path(), sql).await == n).then_some(())
    })
    .await;
}

async fn publish_readings(client: &Client, from: usize, to: usize) {
    for i in from..to {
        client
            .publish(
                &format!("sensor/t{}", i % 7),
                i.to_string(),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_engines_history_arrives_once_with_its_site_and_latest() {
    let Some(db) = PgDb::create("replication of a live engine").await else {
        return;
    };
    let setup = replicating(Setup::embedded(), &db.url(), "home");
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "sensors").await;
    publish_readings(&client, 0, 300).await;
    // A payload that is not UTF-8 arrives byte for byte.
    client
        .publish("sensor/raw", vec![0xff, 0x00, 0x41], QoS::AtLeastOnce, false)
        .await;
    until_stored(&engine.setup, 301).await;
    let rows = until_replicated(&db, &engine.setup, "home", Duration::from_secs(20)).await;
    assert!(rows.iter().any(|r| r.starts_with('a')), "an action replicated");
    assert!(rows.iter().any(|r| r.starts_with('r')), "a rule run replicated");
    assert_eq!(
        db.count("SELECT count(*) FROM messages WHERE site = 'home' AND payload_bytes = '\\xff0041'::bytea AND payload IS NULL")
            .await,
        1
    );
    // `latest` has one row per topic, the newest.
    assert_eq!(
        db.strings("SELECT payload FROM latest WHERE site = 'home' AND topic = 'sensor/t6'")
            .await,
        vec!["293".to_string()]
    );
    // Partitions by month: this month's and the next, created by the engine.
    assert!(
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'message_rows'::regclass")
            .await
            >= 2
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_server_loses_and_doubles_nothing() {
    let Some(db) = PgDb::create("replication through an outage").await else {
        return;
    };
    let mut proxy = Proxy::start(free_port()).await;
    let setup = replicating(Setup::embedded(), &db.url_via(proxy.port), "home");
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "sensors").await;
    publish_readings(&client, 0, 100).await;
    until_stored(&engine.setup, 100).await;
    until_replicated(&db, &engine.setup, "home", Duration::from_secs(20)).await;

    // Ten seconds without the server: the engine keeps storing.
    proxy.down().await;
    let before = db.count("SELECT count(*) FROM messages").await;
    publish_readings(&client, 100, 400).await;
    until_stored(&engine.setup, 400).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM messages").await,
        before,
        "nothing reached the server"
    );

    proxy.up().await;
    let rows = until_replicated(&db, &engine.setup, "home", Duration::from_secs(60)).await;
    assert!(rows.iter().filter(|r| r.starts_with('m')).count() >= 400);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_replication_loses_and_doubles_nothing() {
    let Some(db) = PgDb::create("replication through a SIGKILL").await else {
        return;
    };
    const ROWS: usize = 60_000;
    let setup = replicating(Setup::embedded(), &db.url(), "home");
    // A history to catch up with, written before replication starts.
    {
        let store = Store::open(&setup.db_path()).await.expect("open the history");
        let messages: Vec<Message> = (0..ROWS)
            .map(|i| Message {
                ts: 1_790_000_000_000 + i as i64 * 1_000,
                topic: format!("old/t{}", i % 13).into(),
                payload: Bytes::from(i.to_string()),
                qos: 1,
                retain: false,
                dup: false,
            })
            .collect();
        for chunk in messages.chunks(5_000) {
            store
                .insert_messages(&chunk.iter().collect::<Vec<_>>())
                .await
                .expect("insert");
        }
        store.close().await;
    }
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    let copied = eventually("replication under way", Duration::from_secs(60), || async {
        let n = db.count("SELECT count(*) FROM messages").await;
        (n > 0).then_some(n)
    })
    .await;
    engine.signal("KILL");
    assert_eq!(engine.wait().await, None, "killed by a signal");
    assert!(
        (copied as usize) < ROWS,
        "killed during the catch-up ({copied} of {ROWS} copied)"
    );

    let engine = Process::start_logged(&setup, &log).await;
    let rows = until_replicated(&db, &setup, "home", Duration::from_secs(120)).await;
    assert!(rows.len() > ROWS);
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_houses_share_one_database_by_site() {
    let Some(db) = PgDb::create("two sites in one database").await else {
        return;
    };
    let home = Engine::start(replicating(Setup::embedded(), &db.url(), "home")).await;
    let cabin = Engine::start(replicating(Setup::embedded(), &db.url(), "cabin")).await;
    let home_sensors = Client::connect(home.setup.port, "home-sensors").await;
    let cabin_sensors = Client::connect(cabin.setup.port, "cabin-sensors").await;
    publish_readings(&home_sensors, 0, 50).await;
    publish_readings(&cabin_sensors, 1000, 1020).await;
    until_stored(&home.setup, 50).await;
    until_stored(&cabin.setup, 20).await;
    until_replicated(&db, &home.setup, "home", Duration::from_secs(20)).await;
    until_replicated(&db, &cabin.setup, "cabin", Duration::from_secs(20)).await;
    // The same topic in both houses: one latest row each.
    assert_eq!(
        db.strings("SELECT site || '=' || payload FROM latest WHERE topic = 'sensor/t0' ORDER BY site")
            .await,
        vec!["cabin=1015".to_string(), "home=49".to_string()]
    );
    home.stop().await;
    cabin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_over_postgres_reads_and_refuses_a_write() {
    let Some(db) = PgDb::create("query --db postgres://").await else {
        return;
    };
    let config = ReplicateConfig {
        url: Secret::new(db.url()),
        target: db.name.clone(),
        site: "home".into(),
        password: None,
        tls: None,
    };
    PgHistory::connect(&config)
        .await
        .expect("create the schema")
        .close()
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = db.url();

    let read = run_homewright(
        dir.path(),
        &[
            "query",
            "--db",
            &url,
            "--format",
            "csv",
            "SELECT count(*) AS n FROM messages",
        ],
    );
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(String::from_utf8_lossy(&read.stdout), "n\n0\n");

    let write = run_homewright(
        dir.path(),
        &[
            "query",
            "--db",
            &url,
            "INSERT INTO actions (site, id, ts, rule, kind, target) VALUES ('x', 1, 1, 'r', 'k', 't')",
        ],
    );
    assert!(!write.status.success());
    let stderr = String::from_utf8_lossy(&write.stderr);
    assert!(stderr.contains("read-only"), "{stderr}");
    assert_eq!(db.count("SELECT count(*) FROM actions").await, 0);

    // Nor can a statement end the read-only transaction and write after it.
    let sneaky = run_homewright(
        dir.path(),
        &[
            "query",
            "--db",
            &url,
            "COMMIT; INSERT INTO actions (site, id, ts, rule, kind, target) VALUES ('x', 1, 1, 'r', 'k', 't')",
        ],
    );
    assert!(!sneaky.status.success());
    assert_eq!(db.count("SELECT count(*) FROM actions").await, 0);

    // Every PostgreSQL query of docs/sql.md runs on the schema the engine made.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sql.md")).expect("docs/sql.md");
    let queries = crate::sql_docs::fenced_blocks(&docs, "postgresql");
    assert!(
        queries.len() >= 3,
        "found only {} PostgreSQL queries",
        queries.len()
    );
    for sql in &queries {
        let run = run_homewright(dir.path(), &["query", "--db", &url, sql]);
        assert!(
            run.status.success(),
            "docs/sql.md PostgreSQL query failed:\n{sql}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_is_named_in_the_log_and_the_engine_keeps_storing() {
    let Some(db) = PgDb::create("a bad replication URL").await else {
        return;
    };
    // A role the server does not know (the local server trusts every known role, so a wrong password
    // cannot be shown here), and nothing listening at all.
    for (url, expected) in [
        (
            format!("postgres://no_such_role@127.0.0.1:5432/{}", db.name),
            "no_such_role",
        ),
        (
            format!("postgres://postgres@127.0.0.1:{}/{}", free_port(), db.name),
            "history.replicate.url",
        ),
    ] {
        let setup = replicating(Setup::embedded(), &url, "home");
        let log = setup.dir.path().join("engine.log");
        let engine = Process::start_logged(&setup, &log).await;
        let client = Client::connect(setup.port, "sensors").await;
        publish_readings(&client, 0, 20).await;
        until_stored(&setup, 20).await;
        let said = eventually("the failure logged", Duration::from_secs(10), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("cannot replicate to PostgreSQL") && l.contains(expected))
                .map(str::to_string)
        })
        .await;
        assert!(said.contains("history.replicate."), "{said}");
        assert!(said.contains("keeps storing locally"), "{said}");
        engine.signal("TERM");
        assert_eq!(engine.wait().await, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plot_and_replay_read_a_sites_replicated_history() {
    let Some(db) = PgDb::create("plot and replay over PostgreSQL").await else {
        return;
    };
    // A day-old hour of readings, one a minute, replicated by a live engine.
    const START: i64 = 1_796_400_000_000; // 2026-12-04T16:00:00Z
    let setup = replicating(Setup::embedded(), &db.url(), "home").rule(
        "fan",
        r#"on_message("sensor/temp", |msg| { if msg.payload.ends_with("5") { publish("fan", msg.payload); } });"#,
    );
    {
        let store = Store::open(&setup.db_path()).await.expect("open the history");
        let messages: Vec<Message> = (0..60)
            .map(|i| Message {
                ts: START + i * 60_000,
                topic: "sensor/temp".into(),
                payload: Bytes::from(i.to_string()),
                qos: 1,
                retain: false,
                dup: false,
            })
            .collect();
        store
            .insert_messages(&messages.iter().collect::<Vec<_>>())
            .await
            .expect("insert");
        store.close().await;
    }
    let engine = Engine::start(setup).await;
    until_replicated(&db, &engine.setup, "home", Duration::from_secs(30)).await;
    let setup = engine.stop().await;
    // Another house's readings on the same topic, in the same hour: never part of `home`'s answers.
    db.pool
        .execute(AssertSqlSafe(format!(
            "INSERT INTO message_rows (site, id, ts, topic, payload, qos, retain) \
             SELECT 'cabin', i, {START} + i * 30000, 'sensor/temp', '75', 1, 0 FROM generate_series(1, 20) i; \
             INSERT INTO topics VALUES ('cabin', 'sensor/temp', 20, {START} + 20 * 30000)"
        )))
        .await
        .expect("add the cabin's readings");
    // Only the server has the history now.
    std::fs::remove_file(setup.db_path()).expect("remove the local history");
    let dir = setup.dir.path();
    let url = db.url();
    let (since, until) = ("2026-12-04T15:30:00Z", "2026-12-04T17:30:00Z");

    let chart = dir.join("temp.svg");
    let plot = run_homewright(
        dir,
        &[
            "plot",
            "--db",
            &url,
            "--site",
            "home",
            "sensor/temp",
            "--since",
            since,
            "--until",
            until,
            "--out",
            chart.to_str().expect("a UTF-8 path"),
        ],
    );
    assert!(plot.status.success(), "{}", String::from_utf8_lossy(&plot.stderr));
    assert!(String::from_utf8_lossy(&plot.stdout).contains("(60 values)"));
    assert!(
        std::fs::read_to_string(&chart)
            .expect("the chart")
            .contains("<polyline")
    );

    let replay = run_homewright(
        dir,
        &[
            "replay", "--db", &url, "--site", "home", "--since", since, "--until", until, "--format", "csv",
        ],
    );
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let out = String::from_utf8_lossy(&replay.stdout);
    let fans: Vec<&str> = out.lines().filter(|l| l.contains(",fan,publish,fan,")).collect();
    // 5, 15, 25, 35, 45, 55: home's own readings, in order, never the cabin's 75s.
    let values: Vec<&str> = fans.iter().filter_map(|l| l.split(',').nth(4)).collect();
    assert_eq!(values, ["5", "15", "25", "35", "45", "55"], "{out}");
    assert!(String::from_utf8_lossy(&replay.stderr).contains("replayed 60 messages"));

    // With two sites, one must be named; an unknown one is listed against the known.
    let unnamed = run_homewright(dir, &["plot", "--db", &url, "sensor/temp", "--since", since]);
    assert!(!unnamed.status.success());
    let stderr = String::from_utf8_lossy(&unnamed.stderr);
    assert!(stderr.contains("--site (cabin, home)"), "{stderr}");
    let unknown = run_homewright(
        dir,
        &[
            "replay", "--db", &url, "--site", "flat", "--since", since, "--until", until,
        ],
    );
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no site `flat`") && stderr.contains("cabin, home"),
        "{stderr}"
    );
}
