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
//! prefix (the comment on `HORIZON` gives the argument).
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

/// Push groups one process commits at once on PostgreSQL. In paired runs on a 2-core machine
/// two moved HTTP / multi-row INSERT from 0.37–0.40 to 0.43–0.66 within each round
/// (docs/benchmarks.md). Four, in a trial, deadlocked on the quality counters (now written in
/// key order).
pub(crate) const PARALLEL_GROUPS: usize = 2;

/// In-flight marks are advisory lock keys (bigint form) laid out as `MARK_TAG | ns << 40 | seq`:
/// the tag (bit 62) sets them apart from the store's other advisory locks (7301, 7302) and
/// from negative keys other tools may take; `ns`, 21 bits of the sequence's oid, sets apart
/// the stores of one database (tests give each a schema); `seq`, the next `seq` at marking,
/// capped at 2^40 - 1. A cap or a shared `ns` only lowers a horizon, which is safe.
pub const MARK_TAG: i64 = 1 << 62;

/// Advisory lock 7301, taken by every writer of `records` (replicas sharing the database
/// take the same one), exclusively by all but push groups. Statements rather than functions
/// of a `PgConnection`: they run inside `dispatch!` bodies, which compile for both backends.
pub const ENTER_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(7301)";

/// Lock 7301 shared, for a push group, then ([`MARK_IN_FLIGHT`]) its in-flight mark.
pub const ENTER_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(7301)";

/// Marks the transaction in flight at the next `seq` (bind [`MARK_TAG`] as `$1`). The next
/// `seq` is read before the lock is granted, so every `seq` this transaction takes afterwards
/// is at or above it. `pg_sequence_last_value` reads the sequence under its buffer lock: a
/// plain `SELECT` from the sequence can catch `nextval` between its two writes of the value
/// (the logged-ahead one, then the real one) and read a value up to 32 too high. It is NULL
/// before the first `nextval`. The argument needs the identity's default `CACHE 1` (migration
/// 0001): with a cache, a session would hand out `seq`s the sequence no longer shows.
pub const MARK_IN_FLIGHT: &str = "SELECT pg_advisory_xact_lock_shared($1 + ((s::oid::bigint % 2097152) << 40) \
     + LEAST(COALESCE(pg_sequence_last_value(s) + 1, 1), 1099511627775)) \
     FROM (SELECT 'records_seq_seq'::regclass AS s) q";

/// The horizon: the next `seq` (read first), lowered to the lowest in-flight mark of this
/// store (read after it, by the subquery that depends on it). Binds [`MARK_TAG`] as `$1`.
///
/// Why every `seq` below the horizon h is committed by the time this statement ends: take a
/// writer T holding some `seq` s < h. T marked itself before taking s. If its mark was granted
/// before the locks were read and T had not ended, the mark (at most s) is in the list and
/// h <= s, a contradiction. If its mark was granted after, T took s after the sequence was
/// read, so s >= the next `seq` read >= h, a contradiction again. So T had ended, committed or
/// rolled back, and a statement that starts afterwards sees its rows.
/// An exclusive writer needs no mark: while it holds the lock no other writer runs, so no
/// row above its `seq`s can commit before it does.
const HORIZON: &str = "SELECT LEAST(n, (SELECT MIN(k & 1099511627775) FROM \
     (SELECT (l.classid::bigint << 32) | l.objid::bigint AS k FROM pg_locks l \
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) marks \
     WHERE k >> 40 = ($1 >> 40) + ns AND n IS NOT NULL)) \
     FROM (SELECT COALESCE(pg_sequence_last_value(s) + 1, 1) AS n, s::oid::bigint % 2097152 AS ns \
     FROM (SELECT 'records_seq_seq'::regclass AS s) q) t";

/// The lowest `seq` a reader of `records` may not pass yet: every row below it has committed.
pub(crate) async fn settled_below(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar::<_, i64>(HORIZON).bind(MARK_TAG).fetch_one(pool).await?)
}

/// Whether a push group failed by clashing with another committed beside it: a unique key
/// it relied on being free (23505), or counter rows both wanted (deadlock, 40P01). Committed
/// again exclusively, it decides afresh.
pub(crate) fn clashed(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else { return false };
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "23505" || c == "40P01")
}
