//! The audit log (migration 0013): who did what, when, with what outcome, for every
//! state-changing call and every read of non-public data. Append-only and hash-chained: each
//! entry's `hash` is SHA-256 over the previous entry's hash and the entry's canonical JSON
//! ([`chain_hash`]), and `seq` runs without gaps, so [`Store::verify_audit`] names an entry
//! that was deleted, altered or put out of order.
//!
//! One writer task per store appends whatever entries are waiting in one transaction (group
//! commit), reading the chain's head inside it, under SQLite's write lock (`BEGIN IMMEDIATE`)
//! or a PostgreSQL advisory lock: another process appending to the same database (the CLI, a
//! second node) extends the same chain.

use gateway_core::canonical::{Sha256Digest, canonical_string};
use sqlx::{QueryBuilder, Row};

use super::{Backend, Store, StoreError};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the caller asks to append: everything but the chain fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// RFC 3339, UTC.
    pub at: String,
    /// The authenticated principal (or `anonymous`, `dev`, a federation member).
    pub principal: String,
    pub role: String,
    /// What was called: `POST /api/v1/records`, `credential.issue`, `federation.evaluation_pull`.
    pub action: String,
    /// What it was about: the request path (identity numbers masked), a credential id.
    pub target: String,
    /// The HTTP status answered (0 for actions outside HTTP).
    pub status: i64,
    /// `ok`, `denied`, `rejected` (a client error) or `failed`.
    pub outcome: String,
    pub request_id: String,
    /// The caller's address, or `cli`.
    pub source: String,
    /// A short account of the effect (counts, partner, subjects); identity numbers masked.
    pub detail: String,
}

/// An entry as stored: the event, its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// `hash` of an entry: SHA-256 (hex) of `prev_hash`, a newline, and the RFC 8785 form of the
/// entry's fields with its `seq`.
pub fn chain_hash(seq: i64, event: &AuditEvent, prev_hash: &str) -> String {
    let fields = serde_json::json!({
        "seq": seq,
        "at": event.at,
        "principal": event.principal,
        "role": event.role,
        "action": event.action,
        "target": event.target,
        "status": event.status,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "source": event.source,
        "detail": event.detail,
    });
    let text = format!("{prev_hash}\n{}", canonical_string(&fields));
    Sha256Digest::of(text.as_bytes()).to_hex()
}

/// What [`Store::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditCheck {
    /// Entries read.
    pub entries: u64,
    /// The last entry's seq and hash: keep it elsewhere to detect a cut-off tail later.
    pub head: Option<(i64, String)>,
    /// Where the chain breaks, first first (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<AuditProblem>,
}

/// One break in the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditProblem {
    /// The entry that is missing, altered or out of place.
    pub seq: i64,
    pub problem: String,
}

/// Most problems a verification lists (the first is what matters).
pub const MAX_PROBLEMS: usize = 20;
/// Entries read per query while verifying or exporting.
const PAGE: i64 = 5_000;

type AuditJob = (AuditEvent, tokio::sync::oneshot::Sender<Result<i64, crate::SharedFailure>>);
const QUEUE: usize = 4_096;
const BATCH: usize = 512;

/// The writer task's handle: entries go in, each is answered with its seq once committed.
#[derive(Debug)]
pub(crate) struct ChainWriter {
    jobs: tokio::sync::mpsc::Sender<AuditJob>,
}

impl ChainWriter {
    /// `write_lock` is the store's: on SQLite the chain's transaction must not interleave with
    /// an ingest transaction of this process (whose read-then-write would find the database
    /// changed under it and fail rather than wait).
    fn start(backend: Backend, write_lock: std::sync::Arc<tokio::sync::Mutex<()>>) -> Self {
        let (jobs, mut waiting) = tokio::sync::mpsc::channel::<AuditJob>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while waiting.recv_many(&mut batch, BATCH).await > 0 {
                let (events, replies): (Vec<AuditEvent>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
                let mut appended = Err(StoreError::GroupCommit("not tried".into()));
                // One retry: a busy database or a lost connection should not cost the entries.
                for _ in 0..2 {
                    let _serialised = match backend {
                        Backend::Sqlite(_) => Some(write_lock.lock().await),
                        Backend::Postgres(_) => None,
                    };
                    appended = append(&backend, &events).await;
                    // A database that is away stays away for longer than a retry.
                    if appended.as_ref().is_ok() || appended.as_ref().is_err_and(StoreError::is_unavailable) {
                        break;
                    }
                }
                match appended {
                    Ok(first) => {
                        for (i, r) in replies.into_iter().enumerate() {
                            let _ = r.send(Ok(first + i as i64));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, entries = events.len(), "AUDIT LOG WRITE FAILED after a retry: these entries are not in the log");
                        for r in replies {
                            let _ = r.send(Err(crate::SharedFailure::from(&e)));
                        }
                    }
                }
            }
        });
        Self { jobs }
    }
}

/// Appends events after the chain's head inside the open transaction `tx`; the first new seq.
/// A macro, not a function: it is instantiated once per backend, as `dispatch!` does.
macro_rules! insert_after_head {
    ($tx:expr, $events:expr) => {{
        let events: &[AuditEvent] = $events;
        let head =
            sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *$tx).await?;
        let (mut seq, mut prev) = match head {
            Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
            None => (0, GENESIS.to_owned()),
        };
        let first = seq + 1;
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            seq += 1;
            let hash = chain_hash(seq, e, &prev);
            rows.push((seq, e, std::mem::replace(&mut prev, hash.clone()), hash));
        }
        // 13 columns: 2,000 rows stay under SQLite's bound-parameter limit.
        for chunk in rows.chunks(2_000) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO audit_log (seq, at, principal, role, action, target, status, outcome, request_id, \
                 source, detail, prev_hash, hash) ",
            );
            qb.push_values(chunk, |mut b, (seq, e, prev, hash)| {
                b.push_bind(*seq)
                    .push_bind(e.at.as_str())
                    .push_bind(e.principal.as_str())
                    .push_bind(e.role.as_str())
                    .push_bind(e.action.as_str())
                    .push_bind(e.target.as_str())
                    .push_bind(e.status)
                    .push_bind(e.outcome.as_str())
                    .push_bind(e.request_id.as_str())
                    .push_bind(e.source.as_str())
                    .push_bind(e.detail.as_str())
                    .push_bind(prev.as_str())
                    .push_bind(hash.as_str());
            });
            qb.build().execute(&mut *$tx).await?;
        }
        first
    }};
}

/// Appends `events` after the chain's head, in one transaction. Returns the first new seq.
async fn append(backend: &Backend, events: &[AuditEvent]) -> Result<i64, StoreError> {
    match backend {
        Backend::Sqlite(pool) => {
            // IMMEDIATE: the write lock is taken before the head is read, so another process
            // cannot append between the read and the insert.
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let first = insert_after_head!(tx, events);
            tx.commit().await?;
            Ok(first)
        }
        Backend::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            // READ COMMITTED whatever the database's default: the head is read after the lock is
            // held, and must see the last holder's commit (a snapshot taken before would not).
            sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *tx).await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7302)").execute(&mut *tx).await?;
            let first = insert_after_head!(tx, events);
            tx.commit().await?;
            Ok(first)
        }
    }
}

fn entry<R: Row>(row: &R) -> Result<AuditEntry, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AuditEntry {
        seq: row.try_get(0)?,
        event: AuditEvent {
            at: row.try_get(1)?,
            principal: row.try_get(2)?,
            role: row.try_get(3)?,
            action: row.try_get(4)?,
            target: row.try_get(5)?,
            status: row.try_get(6)?,
            outcome: row.try_get(7)?,
            request_id: row.try_get(8)?,
            source: row.try_get(9)?,
            detail: row.try_get(10)?,
        },
        prev_hash: row.try_get(11)?,
        hash: row.try_get(12)?,
    })
}

impl Store {
    /// Appends `event` to the audit log and returns its seq once committed. Concurrent
    /// appends share a transaction.
    pub async fn audit(&self, event: AuditEvent) -> Result<i64, StoreError> {
        let writer = self.chain.get_or_init(|| ChainWriter::start(self.backend.clone(), self.write_lock.clone()));
        let (reply, committed) = tokio::sync::oneshot::channel();
        writer.jobs.send((event, reply)).await.map_err(|_| StoreError::GroupCommit("audit writer stopped".into()))?;
        match committed.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(StoreError::from(e)),
            Err(_) => Err(StoreError::GroupCommit("audit writer stopped".into())),
        }
    }

    /// Entries after `after` (a seq), oldest first, at most `limit`.
    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query(
                "SELECT seq, at, principal, role, action, target, status, outcome, request_id, source, detail, \
                 prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(entry).collect()
        })
    }

    /// Walks the whole chain: every seq present and in order, every entry's hash its content's,
    /// every `prev_hash` the hash before it.
    pub async fn verify_audit(&self) -> Result<AuditCheck, StoreError> {
        let mut check = AuditCheck { entries: 0, head: None, problems: Vec::new() };
        let (mut last_seq, mut last_hash) = (0_i64, GENESIS.to_owned());
        // Rows with a seq below 1 are read too (they are out of place).
        let mut after = i64::MIN;
        loop {
            let page = self.audit_entries(after, PAGE).await?;
            let Some(end) = page.last().map(|e| e.seq) else { break };
            let full = page.len() as i64 == PAGE;
            for e in page {
                check.entries += 1;
                let mut problem = |seq: i64, problem: String| {
                    if check.problems.len() < MAX_PROBLEMS {
                        check.problems.push(AuditProblem { seq, problem });
                    }
                };
                if e.seq < 1 {
                    problem(e.seq, format!("entry {} is out of place: entries start at 1", e.seq));
                    continue;
                }
                if e.seq != last_seq + 1 {
                    let missing = if e.seq == last_seq + 2 {
                        format!("entry {} is missing (deleted)", last_seq + 1)
                    } else {
                        format!("entries {} to {} are missing (deleted)", last_seq + 1, e.seq - 1)
                    };
                    problem(last_seq + 1, missing);
                } else if e.prev_hash != last_hash {
                    problem(
                        e.seq,
                        format!(
                            "entry {} does not follow entry {}: its prev_hash is not that entry's hash (entry {} was altered or replaced)",
                            e.seq, last_seq, last_seq
                        ),
                    );
                }
                if chain_hash(e.seq, &e.event, &e.prev_hash) != e.hash {
                    problem(e.seq, format!("entry {} was altered: its hash does not match its content", e.seq));
                }
                last_seq = e.seq;
                last_hash = e.hash;
            }
            if last_seq > 0 {
                check.head = Some((last_seq, last_hash.clone()));
            }
            after = end;
            if !full {
                break;
            }
        }
        Ok(check)
    }
}
