//! Replication and `query` over TLS with a password, against a PostgreSQL server the test starts
//! itself (it accepts only TLS and checks passwords): the history arrives over a verified connection;
//! a wrong password or a certificate from another CA is named in the log by its setting while the
//! engine goes on storing locally.

use std::path::Path;
use std::time::Duration;

use rumqttc::QoS;

use crate::support::pg_server::{Ca, PgServer};
use crate::support::{Client, Process, Setup, count, eventually, run_homewright};

const PASSWORD: &str = "right-horse-battery";

/// An engine replicating to `server` as the role `homewright`, with `password` in a file and the CA
/// file `ca`.
fn replicating(server: &PgServer, password: &str, ca: &str) -> Setup {
    let mut setup = Setup::embedded();
    let dir = setup.dir.path();
    std::fs::write(dir.join("pg.pass"), password).expect("write the password file");
    std::fs::write(dir.join("pg-ca.pem"), ca).expect("write the CA file");
    setup.extra_config = format!(
        "history:\n  replicate:\n    url: postgres://homewright@127.0.0.1:{}/homewright\n    \
         password_file: pg.pass\n    site: home\n    tls:\n      ca: pg-ca.pem\n",
        server.port
    );
    setup
}

async fn publish_readings(setup: &Setup, n: usize) {
    let client = Client::connect(setup.port, "sensors").await;
    for i in 0..n {
        client
            .publish(
                &format!("sensor/t{}", i % 3),
                i.to_string(),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    let sql = "SELECT count(*) FROM messages WHERE topic LIKE 'sensor/%'";
    eventually("the readings stored locally", Duration::from_secs(20), || async {
        (count(&setup.db_path(), sql).await == n as i64).then_some(())
    })
    .await;
}

/// The first line of `log` that says replication failed and contains `expected`.
async fn failure_logged(log: &Path, expected: &str) -> String {
    eventually(
        &format!("a replication failure naming {expected} in the log"),
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("cannot replicate to PostgreSQL") && l.contains(expected))
                .map(str::to_string)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_and_query_over_verified_tls_with_a_password() {
    let Some(server) = PgServer::start("replication over TLS").await else {
        return;
    };
    server.role_with_database("homewright", PASSWORD).await;
    let setup = replicating(&server, PASSWORD, &server.ca.pem);
    let log = setup.dir.path().join("engine.log");
    let engine = Process::start_logged(&setup, &log).await;
    publish_readings(&setup, 30).await;
    let history = server.pool_on("homewright").await;
    eventually("the readings on the server", Duration::from_secs(30), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE site = 'home' AND topic LIKE 'sensor/%'")
                .fetch_one(&history)
                .await
                .unwrap_or(0);
        (n == 30).then_some(())
    })
    .await;
    // The engine's own connection is encrypted (the server turns plain ones away, too).
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'homewright' AND a.usename = 'homewright' AND s.ssl",
    )
    .fetch_one(&server.admin)
    .await
    .expect("read pg_stat_ssl");
    assert!(encrypted >= 1, "the engine's connection uses TLS");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));

    // The commands reach it with the URL's own TLS parameters ...
    let dir = setup.dir.path();
    let url = server.url("homewright", PASSWORD, "homewright");
    let read = run_homewright(
        dir,
        &[
            "query",
            "--db",
            &format!("{url}?{}", server.verify_full()),
            "--format",
            "csv",
            "SELECT count(*) AS n FROM messages WHERE topic LIKE 'sensor/%'",
        ],
    );
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(String::from_utf8_lossy(&read.stdout), "n\n30\n");
    // ... and without TLS the server refuses them.
    let plain = run_homewright(
        dir,
        &["query", "--db", &format!("{url}?sslmode=disable"), "SELECT 1"],
    );
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        stderr.contains("no encryption") || stderr.contains("pg_hba.conf"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_unknown_ca_is_named_and_the_engine_keeps_storing() {
    let Some(server) = PgServer::start("a wrong password and an unknown CA").await else {
        return;
    };
    server.role_with_database("homewright", PASSWORD).await;
    let other_ca = Ca::new("not the server's CA");
    for (password, ca, setting) in [
        (
            "wrong-password",
            server.ca.pem.as_str(),
            "history.replicate.password",
        ),
        (PASSWORD, other_ca.pem.as_str(), "history.replicate.tls"),
    ] {
        let setup = replicating(&server, password, ca);
        let log = setup.dir.path().join("engine.log");
        let engine = Process::start_logged(&setup, &log).await;
        publish_readings(&setup, 10).await;
        let said = failure_logged(&log, setting).await;
        assert!(said.contains("keeps storing locally"), "{said}");
        assert!(!said.contains(PASSWORD), "the password is never logged: {said}");
        engine.signal("TERM");
        assert_eq!(engine.wait().await, Some(0));
    }
    // Nothing arrived on the server.
    let history = server.pool_on("homewright").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&history)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
}
