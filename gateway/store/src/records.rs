//! Records: what a validated record is on its way in and once stored, the push path's group
//! commit (`ingest`: the natural-key lookup decides accepted, duplicate or next version; quality
//! counters and lifecycle effects in the same transaction), and reading records back. The
//! multi-row insert macros here are shared with the envelope path (`envelopes.rs`).

use std::collections::HashMap;

use gateway_core::canonical::Sha256Digest;
use gateway_core::date::format_date;
use gateway_core::record::{RecordType, ValidRecord};
use sqlx::{QueryBuilder, Row};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::{
    Backend, INSERT_CHUNK, LOOKUP_CHUNK, OriginRef, QualityCounts, Store, StoreError, Waiting, all_inserted, horizon,
};

/// Inserts `NewRow`s into `records` inside the transaction `$tx`, in multi-row statements
/// written with `$verb` (`(verb, tail)`, from `Backend::insert_new` or `Backend::skip_held`).
macro_rules! insert_rows {
    // Every row must go in: a row a constraint refuses fails the transaction.
    ($tx:ident, $verb:expr, $rows:expr) => {
        for chunk in $rows.chunks(INSERT_CHUNK) {
            let inserted = insert_rows!(@statement chunk, $verb).build().execute(&mut *$tx).await?.rows_affected();
            all_inserted(inserted, chunk.len(), || "new records".to_owned())?;
        }
    };
    // Rows whose unique keys are already held are skipped; evaluates to the number inserted.
    ($tx:ident, $skip:expr, $rows:expr, skip_held) => {{
        let mut inserted = 0u64;
        for chunk in $rows.chunks(INSERT_CHUNK) {
            inserted += insert_rows!(@statement chunk, $skip).build().execute(&mut *$tx).await?.rows_affected();
        }
        inserted
    }};
    (@statement $chunk:ident, $verb:expr) => {
        insert_rows!(@statement_into "records", $chunk, $verb)
    };
    // The same statement into another table of the same columns (the store's write ceilings).
    (@statement_into $table:expr, $chunk:ident, $verb:expr) => {{
            let (verb, tail) = $verb;
            let mut qb = QueryBuilder::new(format!("{verb} {} ({}) ", $table, $crate::records::INSERT_COLUMNS));
            qb.push_values($chunk, |mut b, row| {
                let r = &row.incoming.record;
                b.push_bind(row.record_id.to_string())
                    .push_bind(row.version)
                    .push_bind(row.origin)
                    .push_bind(r.record_type.as_str())
                    .push_bind(r.natural_key.to_hex())
                    .push_bind($crate::records::short(&r.natural_key))
                    .push_bind($crate::records::short(&r.content_hash))
                    .push_bind(r.content_hash.to_hex())
                    .push_bind(r.subject_uscc.as_deref())
                    .push_bind(r.clock_start.map(gateway_core::date::format_date))
                    .push_bind(row.incoming.deadline.map(gateway_core::date::format_date))
                    .push_bind(row.received_at)
                    .push_bind(r.canonical_content.as_str())
                    .push_bind(row.arrival.map(|a| a.envelope_digest))
                    .push_bind(row.arrival.map(|a| a.leaf_index))
                    .push_bind(r.disclosure.as_str())
                    .push_bind(r.target.as_ref().map(|t| t.origin.as_str()))
                    .push_bind(r.target.as_ref().map(|t| t.record_id.as_str()))
                    .push_bind(r.target.as_ref().map(|t| t.version))
                    .push_bind(row.incoming.intake.as_deref())
                    .push_bind(Some(r.quality.department_uscc.as_str()).filter(|d| !d.is_empty()));
            });
            qb.push(tail);
            qb
    }};
}

/// The columns a stored record version is written with, in the order [`insert_rows!`] binds
/// them (and the write ceilings of `ceiling.rs` copy them).
pub(crate) const INSERT_COLUMNS: &str = "record_id, version, origin, record_type, natural_key, nk, ch, content_hash, \
     subject_uscc, clock_start, deadline, received_at, content, envelope_digest, leaf_index, disclosure, \
     target_origin, target_record_id, target_version, intake, department_uscc";

/// Applies the lifecycle events among `$rows` (`NewRow`s just inserted, in order) to
/// `record_states` inside the transaction `$tx`, so an event and its effect commit together.
/// An event decided before the one that set the state (by `decided_on`, then event id) is kept
/// but changes nothing: every node converges on the latest decision whatever the arrival order.
macro_rules! apply_events {
    ($tx:ident, $rows:expr) => {
        for row in $rows {
            let Some(target) = &row.incoming.record.target else { continue };
            let t = &target.transition;
            let event = row.record_id.to_string();
            let mut qb = QueryBuilder::new(
                "INSERT INTO record_states (record_id, state, sanctions_suspended, corrected_by, last_event, \
                 last_event_type, decided_on, updated_at) ",
            );
            qb.push_values([()], |mut b, ()| {
                b.push_bind(target.record_id.as_str())
                    .push_bind(t.state.unwrap_or(gateway_core::lifecycle::RecordState::Active).as_str())
                    .push_bind(i64::from(t.sanctions_suspended))
                    .push_bind(t.replaces_content.then(|| event.clone()))
                    .push_bind(event.as_str())
                    .push_bind(row.incoming.record.record_type.as_str())
                    .push_bind(target.decided_on.as_str())
                    .push_bind(row.received_at);
            });
            // A plain correction changes the content, not the state.
            let keep_state = if t.state.is_none() { "record_states.state" } else { "excluded.state" };
            let keep_suspension =
                if t.state.is_none() { "record_states.sanctions_suspended" } else { "excluded.sanctions_suspended" };
            qb.push(format!(
                " ON CONFLICT (record_id) DO UPDATE SET state = {keep_state}, sanctions_suspended = {keep_suspension}, \
                 corrected_by = COALESCE(excluded.corrected_by, record_states.corrected_by), \
                 last_event = excluded.last_event, last_event_type = excluded.last_event_type, \
                 decided_on = excluded.decided_on, updated_at = excluded.updated_at \
                 WHERE excluded.decided_on > record_states.decided_on OR (excluded.decided_on = record_states.decided_on \
                 AND excluded.last_event > record_states.last_event)"
            ));
            qb.build().execute(&mut *$tx).await?;
        }
    };
}

/// Writes the origin proofs of the relayed rows among `$rows` (`NewRow`s just inserted) inside
/// the transaction `$tx`: each origin envelope once (it may be held already), then each row's
/// proof in it.
macro_rules! insert_origin_proofs {
    ($tx:ident, $skip:expr, $rows:expr) => {
        let (verb, tail) = $skip;
        let proofs: Vec<(&NewRow<'_>, &OriginRef)> =
            $rows.iter().filter_map(|r| Some((r, r.arrival?.origin?))).collect();
        let mut seen = std::collections::HashSet::new();
        let envelopes: Vec<&OriginRef> =
            proofs.iter().map(|(_, o)| *o).filter(|o| seen.insert(o.envelope_digest.as_str())).collect();
        for chunk in envelopes.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new(format!("{verb} origin_envelopes (digest, envelope) "));
            qb.push_values(chunk, |mut b, o| {
                b.push_bind(o.envelope_digest.as_str()).push_bind(&*o.envelope);
            });
            qb.push(tail);
            qb.build().execute(&mut *$tx).await?;
        }
        for chunk in proofs.chunks(INSERT_CHUNK) {
            let mut qb =
                QueryBuilder::new(format!("{verb} origin_proofs (record_id, version, origin_envelope, proof) "));
            qb.push_values(chunk, |mut b, (row, o)| {
                b.push_bind(row.record_id.to_string())
                    .push_bind(row.version)
                    .push_bind(o.envelope_digest.as_str())
                    .push_bind(o.proof.as_str());
            });
            qb.push(tail);
            qb.build().execute(&mut *$tx).await?;
        }
    };
}

/// A validated record on its way into the store.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub record: ValidRecord,
    /// The publicity deadline, when the type has one and the calendar knows it.
    pub deadline: Option<Date>,
    /// The platform adapter it came in through (`adapter:<platform>`), if any.
    pub intake: Option<String>,
}

/// What the store did with one incoming record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new record: a fresh record id, version 1.
    Accepted { record_id: Uuid, version: i64 },
    /// The same content was already stored under this id and version.
    Duplicate { record_id: Uuid, version: i64 },
    /// Same natural key, other content: stored as the next version of the record.
    NewVersion { record_id: Uuid, version: i64 },
    /// Not stored: the decision is held as the record of a department the sender may not act
    /// for (see [`Store::ingest_scoped`]).
    OtherDepartment { record_id: Uuid },
}

/// One stored version of a record.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: i64,
    pub record_id: Uuid,
    pub version: i64,
    pub origin: String,
    pub record_type: String,
    pub content_hash: String,
    pub deadline: Option<String>,
    pub received_at: String,
    /// Canonical JSON of the content.
    pub content: String,
}

/// Filters of `GET /api/v1/records`.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub subject_uscc: Option<String>,
    pub record_type: Option<RecordType>,
    /// Decision (or listing) date from, inclusive.
    pub from: Option<Date>,
    /// Decision (or listing) date to, inclusive.
    pub to: Option<Date>,
    /// Continue after this `seq` (the previous page's `next_after`).
    pub after: i64,
    pub limit: i64,
    /// Only records of these departments (数据来源单位); `None` = every department.
    pub departments: Option<Vec<String>>,
}

/// The columns [`stored_record`] reads, in its order.
macro_rules! record_columns {
    () => {
        "seq, record_id, version, origin, record_type, content_hash, deadline, received_at, content"
    };
}
pub(crate) const SELECT_COLUMNS: &str = concat!("SELECT ", record_columns!(), " FROM records");
/// A relayed record's origin proof as JSON (`{"envelope": …, "proof": …}`, interchange-v1 §5),
/// rebuilt from `origin_proofs` and `origin_envelopes`, or as kept in the row before migration
/// 0012; NULL for a record that came straight from its origin or was pushed here. `$records`
/// names the `records` table in the query (`"records"`, or its alias).
macro_rules! origin_proof_sql {
    ($records:literal) => {
        concat!(
            "COALESCE(",
            $records,
            ".origin_proof, (SELECT '{\"envelope\":' || o.envelope || ',\"proof\":' || p.proof || '}' \
             FROM origin_proofs p JOIN origin_envelopes o ON o.digest = p.origin_envelope \
             WHERE p.record_id = ",
            $records,
            ".record_id AND p.version = ",
            $records,
            ".version))"
        )
    };
}
pub(crate) use origin_proof_sql;
/// [`SELECT_COLUMNS`] and where the record arrived from another node: what forwarding it needs.
pub(crate) const FORWARD_COLUMNS: &str = concat!(
    "SELECT ",
    record_columns!(),
    ", envelope_digest, leaf_index, ",
    origin_proof_sql!("records"),
    " FROM records"
);

struct Known {
    record_id: Uuid,
    /// The department of the first version: the record's owner.
    owner: (i64, String),
    max_version: i64,
    /// content hash → version
    versions: HashMap<Sha256Digest, i64>,
}

impl StoredRecord {
    /// SHA-256(JCS(item)) of interchange-v1 §2: what signatures cover. Derived from the stored
    /// row on demand rather than kept, so the write path does not pay for it.
    pub fn item_hash(&self) -> Sha256Digest {
        let item = gateway_core::canonical::item_canonical(
            &self.origin,
            &self.record_id.to_string(),
            self.version,
            &self.record_type,
            &self.content,
        );
        Sha256Digest::of(item.as_bytes())
    }
}

impl Store {
    /// Stores a batch and says, per record and in order, what happened. Returns only after
    /// the transaction holding the batch has committed. Within the batch (and the group it is
    /// committed with), a later record with the natural key of an earlier one is judged against
    /// it (duplicate or next version), exactly as if it had come in a later batch.
    pub async fn ingest(
        &self,
        origin: &str,
        incoming: Vec<Incoming>,
        received_at: OffsetDateTime,
    ) -> Result<Vec<Stored>, StoreError> {
        self.ingest_counted(origin, incoming, QualityCounts::default(), received_at).await
    }

    /// [`Store::ingest`], adding `quality` (what the batch's rejected records say about their
    /// departments' data) to the quality counters in the same transaction, with what the stored
    /// records add (see `stored_quality`).
    pub async fn ingest_counted(
        &self,
        origin: &str,
        incoming: Vec<Incoming>,
        quality: QualityCounts,
        received_at: OffsetDateTime,
    ) -> Result<Vec<Stored>, StoreError> {
        self.ingest_scoped(origin, None, incoming, quality, received_at).await
    }

    /// [`Store::ingest_counted`] for a sender who may act only for the departments of `scope`
    /// (`None`: any): a record that would be a new version (or duplicate) of a record whose
    /// first version is another department's is not stored but answered
    /// [`Stored::OtherDepartment`], judged in the transaction that stores the rest.
    pub async fn ingest_scoped(
        &self,
        origin: &str,
        scope: Option<Vec<String>>,
        incoming: Vec<Incoming>,
        quality: QualityCounts,
        received_at: OffsetDateTime,
    ) -> Result<Vec<Stored>, StoreError> {
        if incoming.is_empty() && quality.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let received_at = gateway_core::date::format_timestamp(received_at);
        let batch = Waiting { origin: origin.to_owned(), scope, incoming, quality, received_at, reply };
        self.join_group(&self.waiting, batch, answer, true, GroupWriter::commit_and_answer).await
    }

    /// Joins the group commit of the jobs in `waiting` (pushed batches, or received envelopes):
    /// adds `job`, waits for the store's write turn and, unless the holder of an earlier turn
    /// took the group with it, commits the whole group with `commit`. That runs in a task of its
    /// own holding the turn until every job is answered: a caller that hangs up drops its
    /// request, which must neither cancel the others' commit nor hand its turn on before this
    /// group is in. Then waits for `answer`, the reply to `job`. With `side_by_side`
    /// (push groups), groups on PostgreSQL commit [`horizon::PARALLEL_GROUPS`] at a time.
    pub(crate) async fn join_group<J, T, F>(
        &self,
        waiting: &std::sync::Mutex<Vec<J>>,
        job: J,
        answer: tokio::sync::oneshot::Receiver<Result<T, crate::SharedFailure>>,
        side_by_side: bool,
        commit: impl FnOnce(GroupWriter, Vec<J>) -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // The list stays consistent even if a holder panicked: pushes and takes are atomic.
        let lock = || waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lock().push(job);
        let turn = self.write_turn(side_by_side).await;
        let group = std::mem::take(&mut *lock());
        if group.is_empty() {
            // Our job went in the group of the holder of the turn before us.
            drop(turn);
        } else {
            let committing = commit(self.group_writer(), group);
            tokio::spawn(async move {
                committing.await;
                drop(turn);
            });
        }
        match answer.await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::GroupCommit("the committing task failed before answering".into())),
        }
    }

    /// A turn to commit a group: the store's write lock or, for a push group on PostgreSQL,
    /// one of [`horizon::PARALLEL_GROUPS`] turns. Held (dropped) as a whole.
    async fn write_turn(&self, side_by_side: bool) -> Box<dyn Send> {
        if side_by_side
            && matches!(self.backend, Backend::Postgres(_))
            // The semaphore is never closed.
            && let Ok(permit) = std::sync::Arc::clone(&self.push_turns).acquire_owned().await
        {
            return Box::new(permit);
        }
        Box::new(std::sync::Arc::clone(&self.write_lock).lock_owned().await)
    }

    /// The lowest `seq` a reader paging through `records` may not reach yet: every row below
    /// it has committed (`horizon`). `None` on SQLite, whose one writer commits in `seq` order.
    pub(crate) async fn settled_below(&self) -> Result<Option<i64>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(pool) => horizon::settled_below(pool).await.map(Some),
        }
    }

    /// What a group commit (of pushed batches or of received envelopes) needs, owned.
    pub(crate) fn group_writer(&self) -> GroupWriter {
        GroupWriter {
            backend: self.backend.clone(),
            commits: self.commits.clone(),
            statistics: self.statistics.clone(),
        }
    }
}

/// What a group commit needs, owned, so that it can run as a task of its own: it then holds
/// the write lock until it has answered every member of its group, and a caller that hangs up
/// (dropping its request) neither cancels the others' commit nor lets the next group start
/// before this one is in. The envelope path (`envelopes.rs`) commits its groups the same way.
pub(crate) struct GroupWriter {
    pub(crate) backend: Backend,
    commits: tokio::sync::watch::Sender<u64>,
    statistics: Option<std::sync::Arc<crate::statistics::Statistics>>,
}

impl GroupWriter {
    /// Commits every batch of `group` in one transaction and answers each.
    async fn commit_and_answer(self, group: Vec<Waiting>) {
        let all: Vec<Pending<'_>> = group
            .iter()
            .flat_map(|w| {
                w.incoming.iter().map(move |i| Pending {
                    origin: w.origin.as_str(),
                    received_at: w.received_at.as_str(),
                    scope: w.scope.as_deref(),
                    incoming: i,
                })
            })
            .collect();
        let mut quality = QualityCounts::default();
        for w in &group {
            quality.merge(&w.quality);
        }
        let result = self.commit_group(&all, &quality).await;
        if result.is_ok() {
            self.stored(all.len());
        }
        drop(all);
        let mut outcomes = result.as_ref().map(|o| o.iter().copied()).map_err(crate::SharedFailure::from);
        for w in group {
            let answer = match &mut outcomes {
                Ok(o) => Ok(o.by_ref().take(w.incoming.len()).collect()),
                Err(e) => Err(e.clone()),
            };
            let _ = w.reply.send(answer);
        }
    }

    /// After a commit that stored `records`: wakes the relay's senders, counts toward the
    /// planner's statistics.
    pub(crate) fn stored(&self, records: usize) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
        if let Some(statistics) = &self.statistics {
            statistics.stored(records as u64);
        }
    }

    /// One transaction for a group of records (origin, received_at, record), in order. On
    /// PostgreSQL it runs beside other push groups; if it clashes with one, it rolls back and
    /// runs again alone (`horizon`).
    async fn commit_group(&self, incoming: &[Pending<'_>], quality: &QualityCounts) -> Result<Vec<Stored>, StoreError> {
        if !matches!(self.backend, Backend::Postgres(_)) {
            return self.commit_group_once(incoming, quality, false).await;
        }
        match self.commit_group_once(incoming, quality, true).await {
            Err(e) if horizon::clashed(&e) => {
                tracing::debug!(error = %e, "a push group clashed with one beside it; committing it again alone");
                self.commit_group_once(incoming, quality, false).await
            }
            outcome => outcome,
        }
    }

    async fn commit_group_once(
        &self,
        incoming: &[Pending<'_>],
        quality: &QualityCounts,
        side_by_side: bool,
    ) -> Result<Vec<Stored>, StoreError> {
        dispatch!(self, pool => {
            let started = std::time::Instant::now();
            let mut tx = pool.begin().await?;
            if matches!(self.backend, Backend::Postgres(_)) {
                // Replicas sharing one database take the same locks.
                if side_by_side {
                    sqlx::query(horizon::ENTER_SHARED).execute(&mut *tx).await?;
                    sqlx::query(horizon::MARK_IN_FLIGHT).bind(horizon::MARK_TAG).execute(&mut *tx).await?;
                } else {
                    sqlx::query(horizon::ENTER_EXCLUSIVE).execute(&mut *tx).await?;
                }
            }
            let locked = started.elapsed();
            let mut keys: Vec<i64> = incoming.iter().map(|p| short(&p.incoming.record.natural_key)).collect();
            keys.sort_unstable();
            keys.dedup();
            let mut known: HashMap<Sha256Digest, Known> = HashMap::new();
            for chunk in keys.chunks(LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new(
                    "SELECT natural_key, record_id, version, content_hash, COALESCE(department_uscc, '') FROM records WHERE nk IN (",
                );
                let mut list = qb.separated(", ");
                for key in chunk {
                    list.push_bind(*key);
                }
                qb.push(")");
                for row in qb.build().fetch_all(&mut *tx).await? {
                    let key = parse_digest(&row.try_get::<String, _>(0)?)?;
                    let record_id = parse_uuid(&row.try_get::<String, _>(1)?)?;
                    let version: i64 = row.try_get(2)?;
                    let department: String = row.try_get(4)?;
                    let entry = known.entry(key).or_insert_with(|| Known {
                        record_id,
                        owner: (i64::MAX, String::new()),
                        max_version: 0,
                        versions: HashMap::new(),
                    });
                    entry.max_version = entry.max_version.max(version);
                    if version < entry.owner.0 {
                        entry.owner = (version, department);
                    }
                    entry.versions.insert(parse_digest(&row.try_get::<String, _>(3)?)?, version);
                }
            }
            let looked_up = started.elapsed();
            let (outcomes, rows) = decide(incoming, &mut known);
            insert_rows!(tx, self.backend.insert_new(), rows);
            let inserted = started.elapsed();
            apply_events!(tx, &rows);
            let mut quality = quality.clone();
            stored_quality(&rows, &mut quality);
            crate::quality::add_quality!(tx, &quality);
            let counted = started.elapsed();
            tx.commit().await?;
            // Where a group's time goes, for tuning the write path (RUST_LOG=gateway_store=debug).
            tracing::debug!(
                records = incoming.len(),
                lock_us = locked.as_micros() as u64,
                lookup_us = (looked_up - locked).as_micros() as u64,
                insert_us = (inserted - looked_up).as_micros() as u64,
                counters_us = (counted - inserted).as_micros() as u64,
                commit_us = (started.elapsed() - counted).as_micros() as u64,
                "group committed"
            );
            Ok(outcomes)
        })
    }
}

impl Store {
    /// All stored versions of a record, oldest first.
    pub async fn versions(&self, record_id: Uuid) -> Result<Vec<StoredRecord>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(SELECT_COLUMNS);
            qb.push(" WHERE record_id = ").push_bind(record_id.to_string()).push(" ORDER BY version");
            qb.build().fetch_all(pool).await?.iter().map(stored_record).collect()
        })
    }

    /// One page of records matching `q`, in arrival order.
    pub async fn query(&self, q: &RecordQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let below = self.settled_below().await?;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(SELECT_COLUMNS);
            qb.push(" WHERE seq > ").push_bind(q.after);
            if let Some(below) = below {
                qb.push(" AND seq < ").push_bind(below);
            }
            if let Some(uscc) = &q.subject_uscc {
                qb.push(" AND subject_uscc = ").push_bind(uscc.clone());
            }
            if let Some(t) = q.record_type {
                qb.push(" AND record_type = ").push_bind(t.as_str());
            }
            if let Some(from) = q.from {
                qb.push(" AND clock_start >= ").push_bind(format_date(from));
            }
            if let Some(to) = q.to {
                qb.push(" AND clock_start <= ").push_bind(format_date(to));
            }
            if let Some(departments) = &q.departments {
                qb.push(" AND department_uscc IN ('' ");
                for d in departments {
                    qb.push(", ").push_bind(d.clone());
                }
                qb.push(")");
            }
            qb.push(" ORDER BY seq LIMIT ").push_bind(q.limit);
            qb.build().fetch_all(pool).await?.iter().map(stored_record).collect()
        })
    }

    /// Number of stored record versions.
    pub async fn count(&self) -> Result<i64, StoreError> {
        dispatch!(self, pool => Ok(sqlx::query("SELECT COUNT(*) FROM records").fetch_one(pool).await?.try_get::<i64, _>(0)?))
    }
}

pub(crate) struct NewRow<'a> {
    pub(crate) origin: &'a str,
    pub(crate) received_at: &'a str,
    pub(crate) incoming: &'a Incoming,
    pub(crate) record_id: Uuid,
    pub(crate) version: i64,
    /// Set when the record came in an envelope from another node.
    pub(crate) arrival: Option<Arrival<'a>>,
}

/// The envelope a record arrived in, and its place there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival<'a> {
    pub(crate) envelope_digest: &'a str,
    pub(crate) leaf_index: i64,
    /// For a relayed record, its origin proof (written to `origin_proofs` by
    /// `insert_origin_proofs!`).
    pub(crate) origin: Option<&'a OriginRef>,
}

/// A record waiting in a group commit: who sent it, when, for which departments.
struct Pending<'a> {
    origin: &'a str,
    received_at: &'a str,
    scope: Option<&'a [String]>,
    incoming: &'a Incoming,
}

/// Decides each record's fate against what is stored (`known`) and what came earlier in the
/// batch, and lists the rows to insert. Pure, so the rule lives in one place.
fn decide<'a>(incoming: &[Pending<'a>], known: &mut HashMap<Sha256Digest, Known>) -> (Vec<Stored>, Vec<NewRow<'a>>) {
    let mut outcomes = Vec::with_capacity(incoming.len());
    let mut rows = Vec::with_capacity(incoming.len());
    for p in incoming {
        let (origin, received_at, inc) = (p.origin, p.received_at, p.incoming);
        let (key, hash) = (inc.record.natural_key, inc.record.content_hash);
        let outcome = match known.get_mut(&key) {
            Some(k) if p.scope.is_some_and(|units| !units.contains(&k.owner.1)) => {
                Stored::OtherDepartment { record_id: k.record_id }
            }
            Some(k) => match k.versions.get(&hash) {
                Some(&version) => Stored::Duplicate { record_id: k.record_id, version },
                None => {
                    k.max_version += 1;
                    k.versions.insert(hash, k.max_version);
                    Stored::NewVersion { record_id: k.record_id, version: k.max_version }
                }
            },
            None => {
                let record_id = Uuid::now_v7();
                let owner = (1, inc.record.quality.department_uscc.clone());
                known.insert(key, Known { record_id, owner, max_version: 1, versions: HashMap::from([(hash, 1)]) });
                Stored::Accepted { record_id, version: 1 }
            }
        };
        if let Stored::Accepted { record_id, version } | Stored::NewVersion { record_id, version } = outcome {
            rows.push(NewRow { origin, received_at, incoming: inc, record_id, version, arrival: None });
        }
        outcomes.push(outcome);
    }
    (outcomes, rows)
}

/// What the records a group stores add to the quality counters: each one that is new or a new
/// version (a duplicate was counted when it first came) is a submission accepted, with its
/// fields, and a late report if it arrived after its deadline. The node's own
/// `publicity_expired` events and the gateways' `joint_case_report` records are bookkeeping,
/// not a department's submission.
fn stored_quality(rows: &[NewRow<'_>], counts: &mut QualityCounts) {
    for row in rows {
        let r = &row.incoming.record;
        if matches!(r.record_type, RecordType::PublicityExpired | RecordType::JointCaseReport) {
            continue;
        }
        let Some(day) = gateway_core::date::china_date_of(row.received_at) else { continue };
        let day_text = format_date(day);
        let q = &r.quality;
        let m = counts.month(&q.department_uscc, &q.department_name, &day_text[..7]);
        m.submitted += 1;
        m.accepted += 1;
        m.fields_filled += i64::from(q.filled);
        m.fields_expected += i64::from(q.expected);
        if row.incoming.deadline.is_some_and(|d| d < day) {
            m.reported_late += 1;
        }
        counts.days.entry(day_text).or_default().0 += 1;
    }
}

/// The first 8 bytes of a digest as an integer: the compact index key.
pub(crate) fn short(d: &Sha256Digest) -> i64 {
    let mut b = [0; 8];
    b.copy_from_slice(&d.0[..8]);
    i64::from_be_bytes(b)
}

pub(crate) fn parse_digest(s: &str) -> Result<Sha256Digest, StoreError> {
    Sha256Digest::from_hex(s).ok_or_else(|| StoreError::Corrupt(format!("{s:?} is not a SHA-256 hex digest")))
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("record_id {s:?} is not a UUID")))
}

pub(crate) fn stored_record<R: Row>(row: &R) -> Result<StoredRecord, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredRecord {
        seq: row.try_get(0)?,
        record_id: parse_uuid(&row.try_get::<String, _>(1)?)?,
        version: row.try_get(2)?,
        origin: row.try_get(3)?,
        record_type: row.try_get(4)?,
        content_hash: row.try_get(5)?,
        deadline: row.try_get(6)?,
        received_at: row.try_get(7)?,
        content: row.try_get(8)?,
    })
}
