//! A database of its own on the PostgreSQL server at 127.0.0.1:5432 for each test (created at start,
//! dropped at the end), and a loopback TCP proxy in front of the server that a test can take down and
//! bring back to cut the engine off as a network outage would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const SERVER: &str = "127.0.0.1:5432";
const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database on the local server, dropped with this value.
pub struct PgDb {
    pub name: String,
    pub pool: PgPool,
}

impl PgDb {
    /// Creates `hw_test_<unique>`; `None` (with the reason printed) when no server answers, unless
    /// `HOMEWRIGHT_REQUIRE_POSTGRES=1` makes that a failure.
    pub async fn create(test: &str) -> Option<PgDb> {
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect(ADMIN_URL)
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                if std::env::var("HOMEWRIGHT_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!(
                        "{test}: PostgreSQL is required (HOMEWRIGHT_REQUIRE_POSTGRES=1) but {ADMIN_URL} fails: {e}"
                    );
                }
                eprintln!(
                    "skipping {test}: no PostgreSQL answers at {ADMIN_URL} ({e}); install and start one \
                     (as .ci/run does) to run it"
                );
                return None;
            }
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "hw_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&PgDb::url_on(&name, 5432))
            .await
            .expect("connect to the test database");
        Some(PgDb { name, pool })
    }

    fn url_on(name: &str, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{name}")
    }

    /// The database's URL on the server's own port.
    pub fn url(&self) -> String {
        PgDb::url_on(&self.name, 5432)
    }

    /// The database's URL through a proxy on `port`.
    pub fn url_via(&self, port: u16) -> String {
        PgDb::url_on(&self.name, port)
    }

    /// The single integer `sql` returns (0 when the table does not exist yet).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0)
    }

    /// Rows of `sql` as text, for comparing with the local history (none while the tables do not
    /// exist yet).
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.to_string()))
            .fetch_all(&self.pool)
            .await
        {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => panic!("query the test database: {e}"),
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context that could be blocked on: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(ADMIN_URL).await {
                    let _ = admin
                        .execute(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A TCP proxy on a loopback port to the PostgreSQL server, which a test can stop (closing every
/// connection through it, as a failed network does) and start again on the same port.
pub struct Proxy {
    pub port: u16,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    pub async fn start(port: u16) -> Proxy {
        let mut proxy = Proxy { port, tasks: None };
        proxy.up().await;
        proxy
    }

    /// Accepts and forwards again.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy port");
        let mut tasks = JoinSet::new();
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let held = Arc::clone(&connections);
        tasks.spawn(async move {
            // Holding the connections' set here: aborting this task drops it, and with it every
            // connection.
            let connections = held;
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                connections.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(SERVER).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        drop(connections);
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every connection through it.
    pub async fn down(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }
}
