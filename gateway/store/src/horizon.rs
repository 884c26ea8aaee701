//! On PostgreSQL, push groups commit side by side, and `records.seq` still reads as a log.
//!
//! Readers page through `records` by `seq`: the relay's senders, the joint-case opener, the
//! API's `after`. A reader that has passed `seq` s never looks below it again, so it must
//! never see s while a lower `seq` can still commit. When one transaction at a time wrote
//! records, commit order was `seq` order and that held by itself. Two groups committing at
//! once break it: the one with the higher `seq`s may commit first.
//!
//! So every group that writes records side by side with others marks itself in flight
//! before it takes a `seq`. The mark is a transaction-level advisory lock whose key holds the
//! next `seq` the sequence would give at that moment. It is released by the commit or the
//! rollback, and by the server when the session dies. Readers stop below the horizon: the
//! lowest in-flight mark, or the next `seq` when nothing is in flight. The horizon is read by
//! a statement of its own, before the statement that reads the rows. Every `seq` below it
//! belongs to a transaction that had ended by then, so the later snapshot sees the whole
//! prefix ([`HORIZON`] gives the argument).
//!
//! Side by side means under the shared form of advisory lock 7301 ([`ENTER_SHARED`]). Every other
//! writer of `records` (received envelopes, the SLA catch-up, settling) takes it exclusively,
//! as all writers did before. A push group's decisions (accepted, new version, duplicate)
//! rest on a lookup that cannot see a concurrent group's rows. Two unique keys catch a clash:
//! `(record_id, version)`, and for pushed rows `(natural_key, version)` (migration 0020).
//! The group that hits one rolls back and is committed again holding the lock exclusively.
//! SQLite has one writer at a time and needs none of this.

use sqlx::postgres::PgPool;

use crate::StoreError;

/// Push groups one process commits at once on PostgreSQL. Two gave the store 38 % and the
/// HTTP push path 26 % more records per second on a 2-core machine (docs/benchmarks.md).
pub(crate) const PARALLEL_GROUPS: usize = 2;

/// In-flight marks are advisory lock keys `MARK_BASE + next seq`: far above the store's other
/// advisory locks (7301, 7302), and below 2^63 for any `seq` under 2^56.
pub(crate) const MARK_BASE: i64 = 1 << 56;

/// Advisory lock 7301, taken by every writer of `records` (replicas sharing the database
/// take the same one), exclusively by all but push groups. Statements rather than functions
/// of a `PgConnection`: they run inside `dispatch!` bodies, which compile for both backends.
pub(crate) const ENTER_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(7301)";

/// Lock 7301 shared, for a push group, then ([`MARK_IN_FLIGHT`]) its in-flight mark.
pub(crate) const ENTER_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(7301)";

/// Marks the transaction in flight at the next `seq` (bind [`MARK_BASE`] as `$1`). The mark
/// is read from the sequence before the lock is granted, so every `seq` this transaction
/// takes afterwards is at or above it.
pub(crate) const MARK_IN_FLIGHT: &str = "SELECT pg_advisory_xact_lock_shared($1 + last_value + \
     CASE WHEN is_called THEN 1 ELSE 0 END) FROM records_seq_seq";

/// The horizon: the next `seq` (read first), lowered to the lowest in-flight mark of this
/// database (read after it, by the subquery that depends on it).
///
/// Why every `seq` below the horizon h is committed by the time this statement ends: take a
/// writer T holding some `seq` s < h. T marked itself before taking s. If its mark was granted
/// before the locks were read and T had not ended, the mark (at most s) is in the list and
/// h <= s, a contradiction. If its mark was granted after, T took s after the sequence was
/// read, so s >= the next `seq` read >= h, a contradiction again. So T had ended, committed or
/// rolled back, and a statement that starts afterwards sees its rows.
/// An exclusive writer needs no mark: while it holds the lock no other writer runs, so no
/// row above its `seq`s can commit before it does.
const HORIZON: &str = "SELECT LEAST(n, (SELECT MIN(((l.classid::bigint << 32) | l.objid::bigint) - $1) \
     FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
     AND l.classid::bigint >= ($1 >> 32) \
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND n IS NOT NULL)) \
     FROM (SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END AS n FROM records_seq_seq) s";

/// The lowest `seq` a reader of `records` may not pass yet: every row below it has committed.
/// (Marks of another schema in the same database, as tests use, can only lower it.)
pub(crate) async fn settled_below(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar::<_, i64>(HORIZON).bind(MARK_BASE).fetch_one(pool).await?)
}

/// Whether a push group failed by clashing with another committed beside it: a unique key
/// it relied on being free (23505), or counter rows both wanted (deadlock, 40P01). Committed
/// again exclusively, it decides afresh.
pub(crate) fn clashed(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else { return false };
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "23505" || c == "40P01")
}
