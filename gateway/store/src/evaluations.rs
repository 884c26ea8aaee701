//! Credit evaluations for partner pulls (migration 0010): the evaluation results held for some
//! subjects, the cache of partners' answers, and the audit log of pulls on both sides.

use sqlx::{QueryBuilder, Row};

use super::{Backend, LOOKUP_CHUNK, Store, StoreError};

/// An `evaluation_result` record version held here, with its current state.
#[derive(Debug, Clone)]
pub struct HeldEvaluation {
    pub seq: i64,
    pub record_id: String,
    pub version: i64,
    pub content_hash: String,
    /// Canonical JSON of the content.
    pub content: String,
    /// `active` when no lifecycle event changed it.
    pub state: String,
}

/// One pull in the audit log.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Pull {
    pub pull_id: String,
    /// `in`: a partner asked this node; `out`: this node's desk asked a partner.
    pub direction: String,
    pub at: String,
    pub asker: String,
    pub answerer: String,
    /// Who at the asking node's desk asked (as the desk client said).
    pub officer: Option<String>,
    pub subjects: Vec<String>,
    /// `answered`, `refused`, `failed`, or for desk lookups served without a pull `cache` /
    /// `stale`.
    pub outcome: String,
    pub reason: Option<String>,
    pub answer_id: Option<String>,
    /// The signed answer as sent or received (omitted from listings).
    #[serde(skip)]
    pub answer: Option<String>,
}

/// A cached part of a partner's answer: one subject.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    pub subject_uscc: String,
    pub answer_id: String,
    pub fetched_at: String,
    pub entry: String,
}

impl Store {
    /// Every version of the `evaluation_result` records about `subjects`, with their states.
    pub async fn evaluations_of(&self, subjects: &[String]) -> Result<Vec<HeldEvaluation>, StoreError> {
        let mut out = Vec::new();
        dispatch!(self, pool => {
            for chunk in subjects.chunks(LOOKUP_CHUNK) {
                // `|| ''` keeps the type test off the (record_type, seq) index: SQLite, without
                // statistics, would rather scan every evaluation in seq order than look up a
                // long IN list by subject (1.4 s instead of milliseconds for 1,000 subjects).
                let mut qb = QueryBuilder::new(
                    "SELECT r.seq, r.record_id, r.version, r.content_hash, r.content, COALESCE(s.state, 'active') \
                     FROM records r LEFT JOIN record_states s ON s.record_id = r.record_id \
                     WHERE r.record_type || '' = 'evaluation_result' AND r.subject_uscc IN (",
                );
                let mut list = qb.separated(", ");
                for s in chunk {
                    list.push_bind(s.as_str());
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    out.push(HeldEvaluation {
                        seq: row.try_get(0)?,
                        record_id: row.try_get(1)?,
                        version: row.try_get(2)?,
                        content_hash: row.try_get(3)?,
                        content: row.try_get(4)?,
                        state: row.try_get(5)?,
                    });
                }
            }
        });
        Ok(out)
    }

    /// Writes `pull` to the audit log and returns once it is committed. One writer task
    /// commits whatever pulls are waiting in one transaction, so auditing every pull costs a
    /// commit per group, not per pull.
    pub async fn record_pull(&self, pull: Pull) -> Result<(), StoreError> {
        let writer = self.audit.get_or_init(|| AuditWriter::start(self.backend.clone()));
        let (reply, committed) = tokio::sync::oneshot::channel();
        writer.jobs.send((pull, reply)).await.map_err(|_| StoreError::GroupCommit("audit writer stopped".into()))?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::from(e)),
            Err(_) => Err(StoreError::GroupCommit("audit writer stopped".into())),
        }
    }

    /// The audit log, newest first: pulls at or after `since` (RFC 3339), of one direction
    /// if given, at most `limit`.
    pub async fn pulls(&self, direction: Option<&str>, since: &str, limit: i64) -> Result<Vec<Pull>, StoreError> {
        let mut out = Vec::new();
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT pull_id, direction, at, asker, answerer, officer, subjects, outcome, reason, answer_id \
                 FROM evaluation_pulls WHERE at >= ",
            );
            qb.push_bind(since);
            if let Some(d) = direction {
                qb.push(" AND direction = ").push_bind(d);
            }
            qb.push(" ORDER BY at DESC, pull_id DESC LIMIT ").push_bind(limit);
            for row in qb.build().fetch_all(pool).await? {
                let subjects: String = row.try_get(6)?;
                out.push(Pull {
                    pull_id: row.try_get(0)?,
                    direction: row.try_get(1)?,
                    at: row.try_get(2)?,
                    asker: row.try_get(3)?,
                    answerer: row.try_get(4)?,
                    officer: row.try_get(5)?,
                    subjects: serde_json::from_str(&subjects).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    outcome: row.try_get(7)?,
                    reason: row.try_get(8)?,
                    answer_id: row.try_get(9)?,
                    answer: None,
                });
            }
        });
        Ok(out)
    }

    /// The signed answer `answer_id` as this node sent or received it.
    pub async fn pulled_answer(&self, answer_id: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, pool => {
            let row = sqlx::query(
                "SELECT answer FROM evaluation_pulls WHERE answer_id = $1 AND answer IS NOT NULL ORDER BY at LIMIT 1",
            )
            .bind(answer_id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
    }

    /// Keeps the subjects' parts of a partner's answer (replacing older ones).
    pub async fn cache_answers(&self, partner: &str, rows: &[CachedAnswer]) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(super::INSERT_CHUNK) {
                let mut qb =
                    QueryBuilder::new("INSERT INTO evaluation_cache (partner, subject_uscc, answer_id, fetched_at, entry) ");
                qb.push_values(chunk, |mut b, c| {
                    b.push_bind(partner)
                        .push_bind(c.subject_uscc.as_str())
                        .push_bind(c.answer_id.as_str())
                        .push_bind(c.fetched_at.as_str())
                        .push_bind(c.entry.as_str());
                });
                qb.push(
                    " ON CONFLICT (partner, subject_uscc) DO UPDATE SET answer_id = excluded.answer_id, \
                     fetched_at = excluded.fetched_at, entry = excluded.entry",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The cached answers of `partner` about `subjects`.
    pub async fn cached_answers(&self, partner: &str, subjects: &[String]) -> Result<Vec<CachedAnswer>, StoreError> {
        let mut out = Vec::new();
        dispatch!(self, pool => {
            for chunk in subjects.chunks(LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new(
                    "SELECT subject_uscc, answer_id, fetched_at, entry FROM evaluation_cache WHERE partner = ",
                );
                qb.push_bind(partner).push(" AND subject_uscc IN (");
                let mut list = qb.separated(", ");
                for s in chunk {
                    list.push_bind(s.as_str());
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    out.push(CachedAnswer {
                        subject_uscc: row.try_get(0)?,
                        answer_id: row.try_get(1)?,
                        fetched_at: row.try_get(2)?,
                        entry: row.try_get(3)?,
                    });
                }
            }
        });
        Ok(out)
    }
}

type AuditJob = (Pull, tokio::sync::oneshot::Sender<Result<(), crate::SharedFailure>>);
/// Pulls waiting for the audit writer at most, and committed in one transaction at most.
const AUDIT_QUEUE: usize = 1_024;
const AUDIT_BATCH: usize = 256;

/// The audit log's writer: a task that takes every pull waiting (up to 256), commits them in
/// one transaction, then answers each. It ends when the store is dropped.
#[derive(Debug)]
pub(crate) struct AuditWriter {
    jobs: tokio::sync::mpsc::Sender<AuditJob>,
}

/// What the writer task holds of the store: its pool.
struct AuditTarget {
    backend: Backend,
}

impl AuditWriter {
    fn start(backend: Backend) -> Self {
        // Bounded: if the database stalls, pulls wait here rather than piling up in memory.
        let (jobs, mut waiting) = tokio::sync::mpsc::channel::<AuditJob>(AUDIT_QUEUE);
        let target = AuditTarget { backend };
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while waiting.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
                let (rows, replies): (Vec<Pull>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
                let result = target.insert(&rows).await.map_err(|e| crate::SharedFailure::from(&e));
                if let Err(e) = &result {
                    tracing::error!(error = %e, pulls = rows.len(), "audit log write failed; the pulls are refused");
                }
                for r in replies {
                    let _ = r.send(result.clone());
                }
            }
        });
        AuditWriter { jobs }
    }
}

impl AuditTarget {
    async fn insert(&self, rows: &[Pull]) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(super::INSERT_CHUNK / 2) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO evaluation_pulls (pull_id, direction, at, asker, answerer, officer, subjects, \
                     subject_count, outcome, reason, answer_id, answer) ",
                );
                qb.push_values(chunk, |mut b, p| {
                    b.push_bind(p.pull_id.as_str())
                        .push_bind(p.direction.as_str())
                        .push_bind(p.at.as_str())
                        .push_bind(p.asker.as_str())
                        .push_bind(p.answerer.as_str())
                        .push_bind(p.officer.as_deref())
                        .push_bind(serde_json::to_string(&p.subjects).unwrap_or_default())
                        .push_bind(i64::try_from(p.subjects.len()).unwrap_or(i64::MAX))
                        .push_bind(p.outcome.as_str())
                        .push_bind(p.reason.as_deref())
                        .push_bind(p.answer_id.as_deref())
                        .push_bind(p.answer.as_deref());
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
