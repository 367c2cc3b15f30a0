//! The SQLite history: the only module that knows sqlx. Opening (WAL, migrations), the one writer
//! connection that ingest, the recorder and housekeeping share (messages, the trace and the rules'
//! state, see [`trace`] and [`state`]), and the read-only [`HistoryReader`] that `query`, `last()` and
//! `sql()` use so that nothing a user or a rule writes as SQL can change the history.

pub mod deliveries;
mod housekeeping;
mod last_recorded;
mod messages;
pub mod outbox;
pub mod postgres;
pub mod query;
pub mod replica;
mod rows;
pub mod state;
pub mod trace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions, Sqlite};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use self::state::TimerOp;
use self::trace::ActionRecord;
use crate::event::RuleRun;
use crate::relays::model::RelayState;

pub use query::{Bounds, QueryResult, SqlValue};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How long a statement waits for SQLite's write lock (held briefly by a checkpoint or by the
/// `sqlite3` shell of a curious owner) before it fails and is retried by its caller.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the history could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    /// Said once, with its hint, where an error with a source would repeat it down the chain.
    #[error("there is no database {path} (run `homewright run` first, or pass --db PATH)")]
    Missing { path: PathBuf },
    #[error("cannot migrate the database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

impl StoreError {
    /// What an owner can do about a failed write, when SQLite's result code tells.
    pub fn hint(&self) -> Option<&'static str> {
        let StoreError::Sql(sqlx::Error::Database(e)) = self else {
            return None;
        };
        // Primary result codes (the low byte of an extended code): SQLITE_BUSY, SQLITE_IOERR,
        // SQLITE_FULL, SQLITE_READONLY.
        let code: i64 = e.code()?.parse().ok()?;
        match code & 0xff {
            5 => Some("another program holds the database's write lock, e.g. an open sqlite3 shell"),
            10 => Some("the disk reported an I/O error; check the disk and `dmesg`"),
            13 => Some("the disk is full; free space on the database's filesystem"),
            8 => Some("the database file or its directory is read-only; check its permissions"),
            _ => None,
        }
    }
}

/// The writing side of the history. Cheap to clone; all clones share one connection, since SQLite has
/// one writer at a time anyway and a second connection would only add lock waits.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    path: Arc<Path>,
    topic_ids: Arc<messages::TopicIds>,
    run_kinds: Arc<trace::RunKinds>,
    /// Whether commits sync the disk (`synchronous = FULL`); a scratch history's do not.
    durable: bool,
}

impl Store {
    /// Opens (creating it if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        // FULL: a message is acknowledged to the broker after its commit, so the commit must survive a
        // power cut (a Pi's usual crash), not only a process crash. One fsync per batch.
        Store::open_with(path, SqliteSynchronous::Full).await
    }

    /// Opens a throwaway history (scenario tests, replay) without fsyncs: nothing in it must survive.
    pub async fn open_scratch(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, SqliteSynchronous::Off).await
    }

    async fn open_with(path: &Path, synchronous: SqliteSynchronous) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        create_private(path);
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(BUSY_TIMEOUT)
            // Takes effect in a new file (before the first table): the retention purge can then give
            // freed pages back, so the file stops growing once retention is reached.
            .auto_vacuum(SqliteAutoVacuum::Incremental);
        // Migrations run on a connection of their own with SQLite's default temporary storage: with
        // temporary files in memory, the sort behind a CREATE INDEX over years of history would never
        // spill to disk and could exhaust a Pi's memory.
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        announce_migrations(&migrating, path).await;
        MIGRATOR
            .run(&migrating)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        migrating.close().await;
        let options = options
            // A multi-row INSERT in a transaction keeps a statement journal (the pages it changed, to
            // undo the statement alone if a row fails a NOT NULL), and SQLite spills one above 64 KiB
            // to a temporary file: at full message rate that was as many page writes as the WAL itself
            // (counted with strace). In memory it is a few hundred KiB per statement, freed at once.
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", "8000")
            .thread_name(|_| crate::os::thread_policy::WRITER_THREAD.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // Every connection, also one opened again after a failed commit: its worker thread is new.
            .after_connect(|_, _| {
                Box::pin(async {
                    crate::os::thread_policy::batch_threads_named(crate::os::thread_policy::WRITER_THREAD);
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let store = Store {
            pool,
            path: Arc::from(path),
            topic_ids: Arc::default(),
            run_kinds: Arc::default(),
            durable: matches!(synchronous, SqliteSynchronous::Full),
        };
        // Only the query planner's statistics: a failure (a busy lock, a full disk) must not stop the
        // engine; the hourly run tries again.
        if let Err(e) = store.optimize(true).await {
            tracing::warn!("cannot refresh the query planner's statistics: {e}");
        }
        Ok(store)
    }

    /// Lets SQLite refresh the statistics its query planner uses (cheap: it analyses only what changed
    /// a lot, a few hundred rows per index). They matter most for a time range over all topics, which
    /// the statistics turn from a scan of the whole (topic_id, ts) index into one seek per topic.
    /// `at_open` also covers tables never analysed, as SQLite recommends for a new connection.
    pub async fn optimize(&self, at_open: bool) -> Result<(), StoreError> {
        let pragma = if at_open {
            "PRAGMA optimize = 0x10002"
        } else {
            "PRAGMA optimize"
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA analysis_limit = 400; {pragma}"
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The database file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for pending writes and closes the connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What the recorder writes in one transaction: trace rows ([`trace`]) and state rows ([`state`]).
#[derive(Debug, Default)]
pub struct RecordBatch {
    pub actions: Vec<ActionRecord>,
    pub runs: Vec<RuleRun>,
    /// Latest value per key (JSON text); later writes of a key replace earlier ones.
    pub store: HashMap<String, String>,
    /// Timers set and done, in the order they happened (a timer may be set and done in one batch).
    pub timers: Vec<TimerOp>,
    /// Latest run per (rule, trigger) of catch-up triggers.
    pub trigger_runs: HashMap<(String, String), i64>,
    /// Latest state per relay.
    pub relays: HashMap<String, RelayState>,
    /// Latest state per (rule, trigger, topic) of `on_held` and `on_silent`; `None`: forget it.
    pub topic_watches: HashMap<(String, String, String), Option<(i64, bool)>>,
}

impl RecordBatch {
    /// Rows waiting to be written.
    pub fn len(&self) -> usize {
        self.actions.len()
            + self.runs.len()
            + self.store.len()
            + self.timers.len()
            + self.trigger_runs.len()
            + self.relays.len()
            + self.topic_watches.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the batch holds rule runs and nothing else: the trace of runs that changed nothing
    /// durable, which may wait longer and is written without a sync of its own (see
    /// [`Store::write_records`]).
    pub fn is_runs_only(&self) -> bool {
        self.runs.len() == self.len()
    }
}

/// Says so before the migration to topic ids (`20261125070000_topic_ids.sql`) rewrites a history written
/// by an earlier version: it copies every row in one transaction, which takes minutes for a large
/// history on a Pi, and an owner watching the log should not take that for a hang.
async fn announce_migrations(pool: &SqlitePool, path: &Path) {
    let kind = |name: &'static str| async move {
        sqlx::query_scalar::<_, String>("SELECT type FROM sqlite_schema WHERE name = ?")
            .bind(name)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten()
    };
    let size = std::fs::metadata(path).map_or(0, |m| m.len()) / 1_000_000;
    if kind("messages").await.as_deref() == Some("table") {
        tracing::info!(
            "upgrading the history in {} ({size} MB) to store each topic once; this copies every message \
             once and can take minutes for a large history",
            path.display(),
        );
    }
    if kind("rule_runs").await.as_deref() == Some("table") {
        tracing::info!(
            "upgrading the history in {} ({size} MB) to store rule runs by id; this copies every rule \
             run once and can take minutes for a large history",
            path.display(),
        );
    }
}

/// Returns `result`; when it is an error, the writer connection is closed instead of going back to the
/// pool, and the next write opens a fresh one.
///
/// Why: after SQLITE_FULL or an I/O error, SQLite may already have rolled the transaction back by
/// itself. sqlx's ROLLBACK then fails, which leaves sqlx's transaction depth at 1, so its next `begin`
/// issues a SAVEPOINT instead of BEGIN; a later failed attempt's `ROLLBACK TO` leaves a real transaction
/// open, and the next "commit" only releases a savepoint inside it. A batch reported as committed (and
/// so acknowledged to the broker) was then lost when the connection closed: found by
/// `tests/database_faults.rs` on a full disk. A fresh connection has no such state.
pub(super) fn discard_on_error<T>(
    conn: &mut PoolConnection<Sqlite>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if result.is_err() {
        conn.close_on_drop();
    }
    result
}

/// A read-only view of the history: writes, ATTACH and extension loading are refused by SQLite itself.
#[derive(Clone, Debug)]
pub struct HistoryReader {
    pool: SqlitePool,
}

impl HistoryReader {
    /// Opens the database at `path` read-only. Works while `run` is writing (WAL).
    pub async fn open(path: &Path) -> Result<HistoryReader, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        // No statement logging: sqlx would log every query over a second at WARN with its whole text,
        // and an owner's long query (or a rule's `sql()`) is not a problem to warn about.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .disable_statement_logging()
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .after_connect(|conn, _| Box::pin(async move { query::lock_down(conn).await }))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(HistoryReader { pool })
    }
}

/// Creates an empty database file readable by its owner and group only (0640; the umask may take more
/// away): the history holds everything the house said, and SQLite gives its -wal and -shm files the
/// mode of the database. An existing file keeps its mode. Any failure is left for SQLite to report
/// when it opens the file.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path);
}

/// A history at `path` migrated up to (not including) the migration named `description`, as an older
/// release left it: for tests of a migration over existing data.
#[cfg(test)]
pub(crate) async fn migrated_until(path: &Path, description: &str) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let old = SqlitePool::connect_with(options).await.unwrap();
    let mut before = sqlx::migrate!();
    let keep = before
        .migrations
        .iter()
        .take_while(|m| m.description != description)
        .count();
    assert!(
        keep < before.migrations.len(),
        "the migration `{description}` exists"
    );
    before.migrations = before.migrations[..keep].to_vec().into();
    before.run(&old).await.unwrap();
    old
}
