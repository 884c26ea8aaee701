//! Durable storage of a node: records, envelopes and receipts, relay cursors, SLA tracking and
//! quality counters, on SQLite (embedded default, one file in the data directory) or
//! PostgreSQL. Both run the same SQL text; the [`dispatch!`] macro instantiates each method
//! once per backend, and one test suite runs against both.
//!
//! **Invariant:** among this workspace's crates the store depends on `gateway_core` only: the
//! names it needs from the node above (the SQLite sync setting, the publication sink's name)
//! are defined here and the node uses them from here.
//!
//! **Invariant:** [`Store::ingest`] returns only after its transaction has committed, so an
//! outcome given to a client is never lost.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Mutex;

/// How SQLite commits (`[sqlite] synchronous` in the node's configuration).
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSync {
    /// Every commit is on disk before it is acknowledged, even across power loss (default).
    Full,
    /// Survives a process crash; may lose the last commits on power loss.
    Normal,
}

/// The destination name of the node's own publication sink: the relay's sender writes it,
/// and the store counts what it published towards the 及时率 figures.
pub const PUBLICATION: &str = "publication";

/// Rows per multi-row INSERT: 21 columns × 500 stays under SQLite's 32,766 bound parameters.
pub(crate) const INSERT_CHUNK: usize = 500;
/// Keys per `IN (…)` lookup.
const LOOKUP_CHUNK: usize = 900;
/// How often the background checkpointer folds SQLite's write-ahead log into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// WAL pages after which a committing connection checkpoints by itself: only a backstop for
/// when the background checkpointer falls behind (256 MiB of 8 KiB pages).
const WAL_BACKSTOP_PAGES: &str = "32768";
/// The size the WAL file is cut back to once checkpointed (64 MiB).
const WAL_SIZE_LIMIT_BYTES: &str = "67108864";
/// Rows a SQLite query may have ready before its thread waits for the reader: a relay sender
/// reads its queue in chunks of its batch (`relay.batch_max`, 1,000 by default).
const ROW_BUFFER: usize = 1_024;

/// Errors of the store. All are server-side: a client never causes one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// Rows that had to go in were turned away by a unique constraint (a bug, not bad input).
    #[error("rows refused by the database: {0}")]
    Refused(String),
    /// The shared transaction of a group commit failed; every batch in it is refused.
    #[error("group commit failed: {0}")]
    GroupCommit(String),
    /// A write only the holder of a lease may make, by a process that no longer holds it
    /// (another replica took over): nothing was written.
    #[error("fenced off: {0}")]
    Fenced(String),
    /// The database cannot be reached: a connection refused or lost, or no connection free
    /// within [`ACQUIRE_TIMEOUT`]. Worth another try once it is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the database could not be reached (rather than refusing what was asked): the
    /// API answers 503 with `Retry-After`, and readiness turns false.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Database(e) => unreachable(e),
            Self::Migrate(sqlx::migrate::MigrateError::Execute(e)) => unreachable(e),
            _ => false,
        }
    }
}

fn unreachable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
        // The server going away mid-session: admin shutdown, crash, idle-session timeout.
        || e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
}

/// A group commit's failure, handed to every batch that was in it.
#[derive(Debug, Clone)]
pub(crate) struct SharedFailure {
    message: String,
    unavailable: bool,
}

impl std::fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&StoreError> for SharedFailure {
    fn from(e: &StoreError) -> Self {
        Self { message: e.to_string(), unavailable: e.is_unavailable() }
    }
}

impl From<SharedFailure> for StoreError {
    fn from(f: SharedFailure) -> Self {
        if f.unavailable { Self::Unavailable(f.message) } else { Self::GroupCommit(f.message) }
    }
}

/// How long a PostgreSQL caller waits for a connection before the call fails as
/// [`StoreError::Unavailable`]: when the database is down, requests are answered 503 within
/// this, rather than after the pool's default 30 s.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Backend {
    /// How a multi-row `INSERT` here skips rows whose unique keys are already held:
    /// `(verb, tail)`. SQLite is given `INSERT OR IGNORE`, not `ON CONFLICT DO NOTHING`: under
    /// the latter a NOT NULL check could still abort the statement half-way, so SQLite first
    /// copied every page the statement changed into a statement journal (memory copies and
    /// allocations, a few per cent of a relaying node's CPU). No constraint aborts an
    /// `OR IGNORE` statement, so it needs none. Where every row must go in, check the count
    /// with `all_inserted`.
    pub(crate) fn skip_held(&self) -> (&'static str, &'static str) {
        match self {
            Backend::Sqlite(_) => ("INSERT OR IGNORE INTO", ""),
            Backend::Postgres(_) => ("INSERT INTO", " ON CONFLICT DO NOTHING"),
        }
    }

    /// How a multi-row `INSERT` here writes rows that must all go in (count them with
    /// `all_inserted`): `(verb, tail)`. SQLite is given `INSERT OR IGNORE` for the reason
    /// `skip_held` gives; PostgreSQL a plain `INSERT`, which a held key fails. Its
    /// `ON CONFLICT DO NOTHING` costs a speculative insertion per row: dropping it made the
    /// PostgreSQL push path faster in paired runs (docs/benchmarks.md). One `COPY` per group,
    /// measured again once the group commit ran in a task of its own, gained nothing.
    fn insert_new(&self) -> (&'static str, &'static str) {
        match self {
            Backend::Sqlite(_) => ("INSERT OR IGNORE INTO", ""),
            Backend::Postgres(_) => ("INSERT INTO", ""),
        }
    }
}

/// A record store. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Backend,
    /// Serialises the record writers of this process: the natural-key lookup and the insert
    /// must see each other's effects. On PostgreSQL push groups take `push_turns` instead, and
    /// every writer advisory lock 7301 (`horizon`).
    write_lock: std::sync::Arc<Mutex<()>>,
    /// On PostgreSQL, push groups take one of these instead of `write_lock`: that many commit
    /// side by side (`horizon` says how readers still see `seq` in order).
    push_turns: std::sync::Arc<tokio::sync::Semaphore>,
    /// Batches waiting for the write lock. Whoever takes the lock commits every waiting batch
    /// in one transaction (group commit), so concurrent pushes share one commit.
    waiting: std::sync::Mutex<Vec<Waiting>>,
    /// Received envelopes waiting for the write lock, committed together the same way.
    waiting_envelopes: std::sync::Mutex<Vec<envelopes::EnvelopeJob>>,
    /// Bumped after every commit that stored records: wakes the relay's senders.
    commits: tokio::sync::watch::Sender<u64>,
    /// The audit log's writer task (started on first use): it commits the evaluation pulls
    /// waiting for it together.
    audit: std::sync::OnceLock<evaluations::AuditWriter>,
    /// The hash-chained audit log's writer task (started on first use).
    chain: std::sync::OnceLock<audit::ChainWriter>,
    /// SQLite's background WAL checkpointer, stopped with the store.
    checkpointer: Option<tokio::task::AbortHandle>,
    /// PostgreSQL's planner statistics, refreshed as bulk loads grow the tables.
    statistics: Option<std::sync::Arc<statistics::Statistics>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(task) = &self.checkpointer {
            task.abort();
        }
    }
}

struct Waiting {
    origin: String,
    /// The departments the sender may act for (`None`: any): a record that would be a new
    /// version of another department's record is refused.
    scope: Option<Vec<String>>,
    incoming: Vec<Incoming>,
    quality: QualityCounts,
    received_at: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Stored>, SharedFailure>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Sqlite(_) => "Store(sqlite)",
            Backend::Postgres(_) => "Store(postgres)",
        })
    }
}

/// Folds the write-ahead log into the database every [`CHECKPOINT_INTERVAL`], on a connection
/// of its own. A checkpoint run by SQLite itself happens inside the commit that crosses the
/// threshold, so the receipt or answer waiting on that commit also waited for tens of MB to be
/// copied; a PASSIVE checkpoint here waits for no reader or writer and holds up no commit.
///
/// A second, short pass then runs under the store's write lock. SQLite starts the log again
/// from its beginning only when a writer *began* after every frame was copied. Under steady
/// commits a writer is always under way during the first pass: even when that pass copies
/// everything, the writer reads an older snapshot and appends. The log then grew to hundreds
/// of MB, every commit wrote to fresh file space (the kernel zeroing the rest of each new block
/// was about 3 % of all CPU in the relay benchmark) and the copies never stayed in cache. The
/// second pass copies only what arrived during the first, so writers wait for milliseconds,
/// and the next one restarts the log (`the_write_ahead_log_restarts_under_steady_writes`).
async fn checkpoint_in_background(pool: SqlitePool, write_lock: std::sync::Arc<Mutex<()>>) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        let mut result = passive_checkpoint(&pool).await;
        if result.is_ok() {
            let _turn = write_lock.lock().await;
            result = passive_checkpoint(&pool).await;
        }
        if let Err(e) = result {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "background WAL checkpoint failed; SQLite will checkpoint at its backstop");
        }
    }
}

async fn passive_checkpoint(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(pool).await.map(drop)
}

/// Runs `$body` with `$pool` bound to whichever backend pool the store has.
macro_rules! dispatch {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Fails unless a multi-row insert that had to take every row (`expected`) took them all: an
/// insert written with `Backend::skip_held` skips a row a unique key refuses instead of failing.
fn all_inserted(inserted: u64, expected: usize, what: impl FnOnce() -> String) -> Result<(), StoreError> {
    if inserted == expected as u64 {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "{} of {expected} {}: a unique key is held already",
            inserted.abs_diff(expected as u64),
            what()
        )))
    }
}

#[macro_use]
mod records;
pub mod access;
mod alerts;
pub mod audit;
pub mod cases;
mod ceiling;
mod envelopes;
pub mod evaluations;
pub mod horizon;
mod leases;
mod outbox;
pub mod quality;
pub mod sla;
mod statistics;
mod trail;
pub use ceiling::CeilingMethod;
pub use envelopes::{
    ArrivalOf, EnvelopeIn, EnvelopeStored, OriginRef, ReceiptFn, RelayedItem, RelayedOutcome, StoredEnvelope,
};
pub use leases::Lease;
pub use outbox::{
    DeadLetter, DeadLetterRow, Forwardable, ListFacts, Parked, QueueStats, QueuedRecord, SentEnvelope, Settlement,
};
pub use quality::{MonthCounts, QualityCounts, QualityMonth};
pub(crate) use records::{
    Arrival, FORWARD_COLUMNS, NewRow, SELECT_COLUMNS, origin_proof_sql, parse_digest, parse_uuid, short, stored_record,
};
pub use records::{Incoming, RecordQuery, Stored, StoredRecord};
pub use sla::{SlaCounts, SlaRow, SlaRows, SlaScope, SlaWindow};
pub use trail::{EventRef, Hop, Publication, StateView, Trail, VersionTrail};

impl Store {
    /// Opens (creating on first start) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite(path: &Path, sync: SqliteSync) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            // Pages of 8 KiB for new databases (SQLite's default is 4 KiB; an existing database
            // keeps its size until a VACUUM). A record row is about 1.4 KB, so 4 KiB pages held
            // two and left a third empty; relaying 100,000 records took 6–9 % less CPU over the
            // four nodes in paired runs (16 KiB gained nothing more). See docs/benchmarks.md.
            .page_size(8192)
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            // Rows a query may hand over before SQLite's thread waits for the reader (sqlx's
            // default is 50): the relay reads a thousand records at a time, and with 50 the
            // thread stopped and was woken again every fifty rows.
            .row_buffer_size(ROW_BUFFER)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536")
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            // Without a limit the WAL file keeps the size of its largest burst for ever (the
            // 30-minute soak left 190–400 MiB files); with it, a checkpoint that empties the
            // log also shrinks the file back to this.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let write_lock = std::sync::Arc::new(Mutex::new(()));
        let checkpointer =
            Some(tokio::spawn(checkpoint_in_background(pool.clone(), write_lock.clone())).abort_handle());
        Ok(Self {
            backend: Backend::Sqlite(pool),
            write_lock,
            push_turns: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            waiting: std::sync::Mutex::new(Vec::new()),
            waiting_envelopes: std::sync::Mutex::new(Vec::new()),
            commits: tokio::sync::watch::Sender::new(0),
            audit: std::sync::OnceLock::new(),
            chain: std::sync::OnceLock::new(),
            checkpointer,
            statistics: None,
        })
    }

    /// Connects to PostgreSQL and migrates. With `schema`, everything lives in that schema
    /// (created if missing): used by tests to stay apart from each other.
    pub async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?;
        if let Some(schema) = schema {
            let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", schema.replace('"', ""))))
                .execute(&admin)
                .await?;
            admin.close().await;
            options = options.options([("search_path", schema)]);
        }
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?;
        let before = statistics::migrations_applied(&pool).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        if statistics::migrations_applied(&pool).await? != before
            && let Err(e) = statistics::analyze(&pool).await
        {
            tracing::warn!(error = %e, "ANALYZE after migrations failed; autovacuum will do it later");
        }
        Ok(Self {
            backend: Backend::Postgres(pool.clone()),
            write_lock: std::sync::Arc::new(Mutex::new(())),
            push_turns: std::sync::Arc::new(tokio::sync::Semaphore::new(horizon::PARALLEL_GROUPS)),
            waiting: std::sync::Mutex::new(Vec::new()),
            waiting_envelopes: std::sync::Mutex::new(Vec::new()),
            commits: tokio::sync::watch::Sender::new(0),
            audit: std::sync::OnceLock::new(),
            chain: std::sync::OnceLock::new(),
            checkpointer: None,
            statistics: Some(std::sync::Arc::new(statistics::Statistics::new(pool.clone()))),
        })
    }

    /// A receiver that changes after every commit that stored records.
    pub fn watch_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    /// Folds the SQLite write-ahead log into the database now (no-op on PostgreSQL), so a bulk
    /// load's checkpoint does not land in whatever runs next (benchmarks use it between phases).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Backend::Sqlite(pool) = &self.backend {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        dispatch!(self, pool => pool.close().await)
    }
}

/// Backups of an embedded (SQLite) node: a consistent copy taken while the node serves, and
/// its restoring into a new data directory. A PostgreSQL node is backed up with the database's
/// own tools (`docs/operations.md`).
pub mod backup {
    use std::path::Path;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::{SqliteSync, Store, StoreError};

    /// Copies the database at `db` to `out` (which must not exist) as one consistent snapshot:
    /// SQLite's `VACUUM INTO` reads in one transaction, so writers go on and the copy holds
    /// every transaction committed before it began, and none after. Returns the copy's size.
    pub async fn copy(db: &Path, out: &Path) -> Result<u64, StoreError> {
        if out.exists() {
            return Err(StoreError::Refused(format!("{} exists already; choose a new file", out.display())));
        }
        if !db.exists() {
            return Err(StoreError::Refused(format!("no database at {}", db.display())));
        }
        let options = SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(false)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        let target = out.to_str().ok_or_else(|| StoreError::Refused(format!("{} is not UTF-8", out.display())))?;
        let copied = sqlx::query("VACUUM INTO $1").bind(target).execute(&pool).await;
        pool.close().await;
        copied?;
        Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
    }

    /// Restores the copy `from` as the database `db` of a new data directory: refuses to
    /// overwrite one, checks the copy's integrity first, and brings it to this version's
    /// migrations. Returns the number of records it holds.
    pub async fn restore(from: &Path, db: &Path) -> Result<i64, StoreError> {
        if db.exists() {
            return Err(StoreError::Refused(format!(
                "{} exists: restore into a new data directory, never over a node's database",
                db.display()
            )));
        }
        let options = SqliteConnectOptions::new().filename(from).read_only(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await?;
        let records: Result<i64, _> = sqlx::query_scalar("SELECT COUNT(*) FROM records").fetch_one(&pool).await;
        pool.close().await;
        if check != "ok" {
            return Err(StoreError::Refused(format!("{} fails SQLite's integrity check: {check}", from.display())));
        }
        if records.is_err() {
            return Err(StoreError::Refused(format!("{} is not a Credit Gateway database", from.display())));
        }
        if let Some(dir) = db.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Refused(format!("{}: {e}", dir.display())))?;
        }
        std::fs::copy(from, db).map_err(|e| StoreError::Refused(format!("copying to {}: {e}", db.display())))?;
        let store = Store::open_sqlite(db, SqliteSync::Full).await?;
        let count = store.count().await;
        store.close().await;
        count
    }
}

/// What `credit-gateway migrate --check` reports: the migrations this version carries that a
/// database has not applied (every store applies them when it opens).
pub mod migrations {
    use std::collections::HashSet;
    use std::path::Path;
    use std::str::FromStr;

    use sqlx::migrate::{Migrate, Migrator};
    use sqlx::postgres::PgConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use super::StoreError;

    static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

    /// One migration not yet applied: its version and description.
    pub type Pending = (i64, String);

    fn pending(migrator: &Migrator, applied: &HashSet<i64>) -> Vec<Pending> {
        migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    /// The pending migrations of the SQLite database at `db` (which must exist: a check
    /// creates nothing).
    pub async fn pending_sqlite(db: &Path) -> Result<Vec<Pending>, StoreError> {
        if !db.exists() {
            return Err(StoreError::Refused(format!("no database at {}", db.display())));
        }
        let mut conn = SqliteConnectOptions::new().filename(db).read_only(true).connect().await?;
        let applied = applied(&mut conn).await?;
        conn.close().await?;
        Ok(pending(&SQLITE, &applied))
    }

    /// The pending migrations of the PostgreSQL database at `url`.
    pub async fn pending_postgres(url: &str) -> Result<Vec<Pending>, StoreError> {
        let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
        let applied = applied(&mut conn).await?;
        conn.close().await?;
        Ok(pending(&POSTGRES, &applied))
    }

    /// The versions applied, none when the database has no migrations table yet.
    async fn applied<C: Migrate>(conn: &mut C) -> Result<HashSet<i64>, StoreError> {
        match conn.list_applied_migrations("_sqlx_migrations").await {
            Ok(list) => Ok(list.into_iter().map(|m| m.version).collect()),
            Err(_) => Ok(HashSet::new()),
        }
    }
}
