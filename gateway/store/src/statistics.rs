//! PostgreSQL's planner statistics kept up with the data, rather than left to autovacuum's
//! timing: on a fresh database with autovacuum late (or off), the planner took the growing
//! `records` table for an empty one and answered the natural-key lookup with full scans (#27).
//!
//! The node's tables are analysed after migrations that changed something (a new database, an
//! upgrade with new indexes), and again each time the records this process has stored double
//! (1,000, 2,000, 4,000, …): a bulk load is analysed while it grows, a steady trickle is left to
//! autovacuum, whose own threshold (a tenth of the table changed) suits it. ANALYZE samples a
//! fixed number of rows per table, so each run takes about the same time whatever the size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::postgres::PgPool;

/// Records stored before the first analysis of a bulk load.
const FIRST_AT: u64 = 1_000;

#[derive(Debug)]
pub(crate) struct Statistics {
    pool: PgPool,
    stored: AtomicU64,
    next_at: AtomicU64,
    running: Arc<AtomicBool>,
}

impl Statistics {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool, stored: AtomicU64::new(0), next_at: AtomicU64::new(FIRST_AT), running: Arc::default() }
    }

    /// Counts `n` records stored; when the count has doubled since the last analysis, starts
    /// one in the background (never two at once).
    pub(crate) fn stored(&self, n: u64) {
        let total = self.stored.fetch_add(n, Ordering::Relaxed) + n;
        if total < self.next_at.load(Ordering::Relaxed) || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.next_at.store(total.saturating_mul(2), Ordering::Relaxed);
        let (pool, running) = (self.pool.clone(), Arc::clone(&self.running));
        tokio::spawn(async move {
            // A store closed meanwhile (the node stopping) needs no statistics.
            if let Err(e) = analyze(&pool).await
                && !pool.is_closed()
            {
                tracing::warn!(error = %e, "ANALYZE after a bulk load failed; autovacuum will do it later");
            }
            running.store(false, Ordering::Release);
        });
    }
}

/// Analyses every table of the current schema (not the whole database, which may hold other
/// schemas: other nodes', or the tests').
pub(crate) async fn analyze(pool: &PgPool) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_all(pool)
            .await?;
    for table in &tables {
        let sql = format!("ANALYZE \"{}\"", table.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    tracing::debug!(tables = tables.len(), took = ?started.elapsed(), "planner statistics brought up to date");
    Ok(())
}

/// Migrations applied so far (0 before the first).
pub(crate) async fn migrations_applied(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(pool).await?;
    if table.is_none() {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(pool).await
}
