//! The outbox: each destination's queue is the records after its cursor (see migration 0005),
//! plus dead letters an operator asked to resend. Delivered items, dead letters and the new
//! cursor are written in one transaction, so a crash at any point resends (the receiver's
//! duplicate detection absorbs it) and never skips.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::{
    ArrivalOf, Backend, EnvelopeIn, INSERT_CHUNK, SELECT_COLUMNS, Store, StoreError, StoredRecord, parse_uuid,
};

/// What routing needs to know of a stored record, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    pub seq: i64,
    pub record_id: Uuid,
    pub version: i64,
    pub origin: String,
    pub record_type: String,
    pub disclosure: Option<String>,
    /// For a lifecycle event, the origin and id of the record it is about.
    pub target_origin: Option<String>,
    pub target_record_id: Option<String>,
    /// The member it arrived from; `None` for records pushed here by departments.
    /// The member that sent it, or the adapter it came in through (`adapter:<platform>`).
    pub arrived_from: Option<String>,
    /// For a list entry, what decides which children it goes down to (ADR 0008).
    pub listed: Option<ListFacts>,
}

/// What a list entry's routing down reads of its content: the list, the domain, and the
/// subject's region.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListFacts {
    pub list_type: String,
    pub domain: String,
    /// The administrative division of the subject: characters 3–8 of its USCC (where it was
    /// registered); for a natural person the first six digits of a 居民身份证号码 (where it was
    /// issued); else the entry's `region_code` (the platform that listed the subject).
    pub subject_region: String,
}

impl ListFacts {
    fn new(
        list_type: Option<String>,
        domain: Option<String>,
        subject_uscc: Option<String>,
        id_region: Option<String>,
        region: Option<String>,
    ) -> Self {
        let division = |code: Option<String>| code.filter(|d| d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit()));
        let from_uscc = division(subject_uscc.and_then(|u| u.get(2..8).map(str::to_owned)));
        Self {
            list_type: list_type.unwrap_or_default(),
            domain: domain.unwrap_or_default(),
            subject_region: from_uscc.or(division(id_region)).or(region).unwrap_or_default(),
        }
    }
}

/// A record a destination will not take, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub seq: i64,
    pub record_id: Uuid,
    pub version: i64,
    /// JSON: `{"code", "message_zh", "message_en", "errors"}`.
    pub reason: String,
    pub attempts: i64,
}

/// A dead letter as listed for operators.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterRow {
    pub destination: String,
    pub seq: i64,
    pub record_id: String,
    pub version: i64,
    pub reason: serde_json::Value,
    pub attempts: i64,
    pub dead_at: String,
    /// `dead`, `resend` (queued again by an operator) or `resent`.
    pub state: String,
    pub resent_at: Option<String>,
}

/// An envelope this node sent, as recorded once its receipt is verified.
#[derive(Debug, Clone, Copy)]
pub struct SentEnvelope<'a> {
    pub envelope: &'a EnvelopeIn,
    /// The receiver's verified receipt, as received (JSON).
    pub receipt: &'a str,
    /// The record versions it carried, in leaf order.
    pub carried: &'a [(Uuid, i64)],
}

/// Everything one delivery attempt settled, written in one transaction.
#[derive(Debug, Default)]
pub struct Settlement<'a> {
    pub sent: Option<SentEnvelope<'a>>,
    /// Publication sink receipts: `(seq, record_id, version, file)`.
    pub published: Vec<(i64, Uuid, i64, String)>,
    pub dead: Vec<DeadLetter>,
    /// Resent dead letters (by seq) that are now delivered.
    pub resent: Vec<i64>,
    /// The new cursor, when records after the old one were settled.
    pub position: Option<i64>,
    pub at: String,
    /// The lease of the replica settling (PostgreSQL replicas): checked in the settling
    /// transaction, so a former leader settles nothing once another has taken over.
    pub fence: Option<&'a crate::Lease>,
}

/// One destination's queue, for `/metrics` and the operator API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub destination: String,
    /// Every record up to this `seq` is settled for the destination.
    pub position: i64,
    /// Records stored after the cursor (an upper bound on what waits: routing may skip some).
    pub backlog: i64,
    pub dead: i64,
    /// When the first record after the cursor was stored (RFC 3339 UTC): the queue's lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_waiting: Option<String>,
}

impl Store {
    /// A destination's cursor (0 before its first delivery).
    pub async fn outbox_position(&self, destination: &str) -> Result<i64, StoreError> {
        dispatch!(self, pool => {
            let row = sqlx::query("SELECT position FROM outbox_cursors WHERE destination = $1")
                .bind(destination)
                .fetch_optional(pool)
                .await?;
            Ok(match row { Some(r) => r.try_get(0)?, None => 0 })
        })
    }

    /// Up to `limit` stored records after `after`, in `seq` order, with their routing facts.
    pub async fn queued_after(&self, after: i64, limit: i64) -> Result<Vec<QueuedRecord>, StoreError> {
        self.select_queued(after, None, limit).await
    }

    /// Up to `limit` lifecycle events and list entries with `after < seq <= upto`, in `seq`
    /// order: a child's queue, which holds nothing else, without reading every record
    /// (migration 0016's partial index holds exactly these rows).
    pub async fn queued_events(&self, after: i64, upto: i64, limit: i64) -> Result<Vec<QueuedRecord>, StoreError> {
        self.select_queued(after, Some(upto), limit).await
    }

    /// [`Store::queued_after`] with what sealing each record for the next hop needs, read by the
    /// same query: a parent's sender forwards nearly every record it reads, and reading them
    /// again by `seq` once routed was a second read of each.
    pub async fn queued_to_forward(&self, after: i64, limit: i64) -> Result<Vec<Forwardable>, StoreError> {
        let columns = self.queued_columns();
        let below = self.settled_below().await?;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(columns);
            qb.push(FORWARD_EXTRA).push(QUEUED_FROM).push(" WHERE r.seq > ").push_bind(after);
            if let Some(below) = below {
                qb.push(" AND r.seq < ").push_bind(below);
            }
            qb.push(" ORDER BY r.seq LIMIT ").push_bind(limit);
            qb.build().fetch_all(pool).await?.iter().map(forwardable).collect()
        })
    }

    async fn select_queued(
        &self,
        after: i64,
        events_upto: Option<i64>,
        limit: i64,
    ) -> Result<Vec<QueuedRecord>, StoreError> {
        let columns = self.queued_columns();
        let below = self.settled_below().await?;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(columns);
            qb.push(QUEUED_FROM).push(" WHERE r.seq > ").push_bind(after);
            if let Some(below) = below {
                qb.push(" AND r.seq < ").push_bind(below);
            }
            if let Some(upto) = events_upto {
                qb.push(" AND r.seq <= ").push_bind(upto);
                qb.push(" AND (r.target_record_id IS NOT NULL OR r.record_type = 'credit_list_entry')");
            }
            qb.push(" ORDER BY r.seq LIMIT ").push_bind(limit);
            qb.build().fetch_all(pool).await?.iter().map(queued_record).collect()
        })
    }

    /// A destination's dead letters that an operator asked to resend, oldest first.
    pub async fn resend_queue(&self, destination: &str, limit: i64) -> Result<Vec<QueuedRecord>, StoreError> {
        let columns = self.queued_columns();
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(columns);
            qb.push(QUEUED_FROM).push(" JOIN dead_letters d ON d.seq = r.seq WHERE d.destination = ");
            qb.push_bind(destination);
            qb.push(" AND d.state = 'resend' ORDER BY r.seq LIMIT ").push_bind(limit);
            qb.build().fetch_all(pool).await?.iter().map(queued_record).collect()
        })
    }

    /// Record ids with a dead letter at `destination` not yet delivered — for an event, also
    /// the record it is about: later versions of these records, and events about them, wait.
    pub async fn blocked_records(&self, destination: &str) -> Result<HashSet<String>, StoreError> {
        self.dead_record_ids(destination, "<> 'resent'").await
    }

    /// Record ids (and targets) with a dead letter at `destination` that no one asked to resend.
    pub async fn still_dead_records(&self, destination: &str) -> Result<HashSet<String>, StoreError> {
        self.dead_record_ids(destination, "= 'dead'").await
    }

    async fn dead_record_ids(&self, destination: &str, state: &'static str) -> Result<HashSet<String>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT d.record_id, r.target_record_id FROM dead_letters d JOIN records r ON r.seq = d.seq WHERE d.destination = ",
            );
            qb.push_bind(destination).push(format!(" AND d.state {state}"));
            let mut ids = HashSet::new();
            for row in qb.build().fetch_all(pool).await? {
                ids.insert(row.try_get::<String, _>(0)?);
                if let Some(target) = row.try_get::<Option<String>, _>(1)? {
                    ids.insert(target);
                }
            }
            Ok(ids)
        })
    }

    /// Which of these record ids have been sent to `destination` (so events about them follow).
    pub async fn sent_to(&self, destination: &str, record_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        dispatch!(self, pool => {
            for chunk in record_ids.chunks(super::LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new(
                    "SELECT DISTINCT s.record_id FROM sent_items s JOIN envelopes e ON e.digest = s.envelope_digest \
                     WHERE e.receiver = ",
                );
                qb.push_bind(destination).push(" AND s.record_id IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    found.insert(row.try_get::<String, _>(0)?);
                }
            }
        });
        Ok(found)
    }

    /// Which of these `(origin, record_id)` are held here, with the department answerable for
    /// each (empty when none is named): a lifecycle event is taken only about a record this
    /// node holds, from a caller who may act for that department.
    pub async fn held_records(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), String>, StoreError> {
        let mut found = HashMap::new();
        dispatch!(self, pool => {
            for chunk in keys.chunks(super::LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new(
                    "SELECT origin, record_id, MAX(COALESCE(department_uscc, '')) FROM records WHERE record_id IN (",
                );
                let mut list = qb.separated(", ");
                for (_, id) in chunk {
                    list.push_bind(id.as_str());
                }
                qb.push(") GROUP BY origin, record_id");
                for row in qb.build().fetch_all(pool).await? {
                    found.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?), row.try_get::<String, _>(2)?);
                }
            }
        });
        Ok(found)
    }

    /// The full stored records with these `seq`s, in the order given.
    pub async fn records_by_seq(&self, seqs: &[i64]) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(self.select_by_seq(seqs, false).await?.into_iter().map(|(r, _)| r).collect())
    }

    /// [`Store::records_by_seq`] with where each record arrived from another node (`None` for
    /// records pushed here), read by the same query: what sealing them for the next hop needs.
    pub async fn records_to_forward(&self, seqs: &[i64]) -> Result<Vec<(StoredRecord, Option<ArrivalOf>)>, StoreError> {
        self.select_by_seq(seqs, true).await
    }

    async fn select_by_seq(
        &self,
        seqs: &[i64],
        with_arrival: bool,
    ) -> Result<Vec<(StoredRecord, Option<ArrivalOf>)>, StoreError> {
        let mut found = std::collections::HashMap::with_capacity(seqs.len());
        dispatch!(self, pool => {
            for chunk in seqs.chunks(super::LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new(if with_arrival { super::FORWARD_COLUMNS } else { SELECT_COLUMNS });
                qb.push(" WHERE seq IN (");
                let mut list = qb.separated(", ");
                for seq in chunk {
                    list.push_bind(*seq);
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    let r = super::stored_record(&row)?;
                    let arrival = if with_arrival { arrival_at(&row, 9)? } else { None };
                    found.insert(r.seq, (r, arrival));
                }
            }
        });
        seqs.iter()
            .map(|s| {
                found.remove(s).ok_or_else(|| StoreError::Corrupt(format!("record seq {s} vanished from the store")))
            })
            .collect()
    }

    /// Writes what one delivery attempt to `destination` settled, atomically.
    pub async fn settle(&self, destination: &str, s: Settlement<'_>) -> Result<(), StoreError> {
        // Record writers read before they write; a commit slipping in between would void their
        // SQLite snapshot (SQLITE_BUSY_SNAPSHOT), so settling takes its turn with them.
        let _turn = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self.backend, Backend::Postgres(_)) {
                // Serialised with ingest and the SLA catch-up of replicas sharing the database.
                sqlx::query(crate::horizon::ENTER_EXCLUSIVE).execute(&mut *tx).await?;
                // Then the lease, held from here to the commit: not while waiting for the lock
                // above, which would keep the holder from renewing it meanwhile.
                if let Some(lease) = s.fence {
                    let held: Option<i32> = sqlx::query_scalar(crate::leases::FENCE)
                        .bind(&lease.name)
                        .bind(&lease.holder)
                        .bind(lease.epoch)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if held.is_none() {
                        return Err(crate::leases::fenced(lease));
                    }
                }
            }
            let (verb, tail) = self.backend.skip_held();
            if let Some(SentEnvelope { envelope: env, receipt, carried }) = s.sent {
                super::envelopes::envelope_row(env, "out", super::envelopes::StoredReceipt::Full(receipt))
                    .build()
                    .execute(&mut *tx)
                    .await?;
                let digest = env.digest.to_hex();
                // Items the receipt rejected were carried but not delivered: no acknowledgement
                // time, so the hop's SLA does not count them as delivered.
                let refused: HashSet<(Uuid, i64)> = s.dead.iter().map(|d| (d.record_id, d.version)).collect();
                let rows: Vec<(i64, &(Uuid, i64))> = (0..).zip(carried).collect();
                for chunk in rows.chunks(INSERT_CHUNK) {
                    let mut qb = QueryBuilder::new(format!(
                        "{verb} sent_items (envelope_digest, leaf_index, record_id, version, destination, acknowledged_at) "
                    ));
                    qb.push_values(chunk, |mut b, (leaf, (id, version))| {
                        b.push_bind(digest.as_str())
                            .push_bind(*leaf)
                            .push_bind(id.to_string())
                            .push_bind(*version)
                            .push_bind(destination)
                            .push_bind((!refused.contains(&(*id, *version))).then_some(s.at.as_str()));
                    });
                    qb.push(tail);
                    let inserted = qb.build().execute(&mut *tx).await?.rows_affected();
                    super::all_inserted(inserted, chunk.len(), || format!("items sent in envelope {digest}"))?;
                }
                let accepted: Vec<Uuid> =
                    carried.iter().filter(|c| !refused.contains(c)).map(|(id, _)| *id).collect();
                super::sla::mark_delivered!(tx, destination, accepted, s.at.as_str());
            }
            if destination == crate::PUBLICATION && !s.published.is_empty() {
                // Timeliness counts each record's first publication once, even if a settlement
                // is repeated after a crash.
                let mut seqs: Vec<i64> = s.published.iter().map(|p| p.0).collect();
                let mut held = std::collections::HashSet::new();
                for chunk in seqs.chunks(super::LOOKUP_CHUNK) {
                    let mut qb = QueryBuilder::new("SELECT seq FROM publications WHERE destination = ");
                    qb.push_bind(destination).push(" AND seq IN (");
                    let mut list = qb.separated(", ");
                    for seq in chunk {
                        list.push_bind(*seq);
                    }
                    qb.push(")");
                    for row in qb.build().fetch_all(&mut *tx).await? {
                        held.insert(row.try_get::<i64, _>(0)?);
                    }
                }
                seqs.retain(|s| !held.contains(s));
                let on = gateway_core::date::china_date_of(&s.at).map(gateway_core::date::format_date).unwrap_or_default();
                let counts = super::quality::count_publications!(tx, seqs, on.as_str());
                super::quality::add_quality!(tx, &counts);
            }
            for chunk in s.published.chunks(INSERT_CHUNK) {
                let mut qb = QueryBuilder::new(format!(
                    "{verb} publications (destination, seq, record_id, version, published_at, file) "
                ));
                qb.push_values(chunk, |mut b, (seq, id, version, file)| {
                    b.push_bind(destination)
                        .push_bind(*seq)
                        .push_bind(id.to_string())
                        .push_bind(*version)
                        .push_bind(s.at.as_str())
                        .push_bind(file.as_str());
                });
                qb.push(tail);
                qb.build().execute(&mut *tx).await?;
            }
            let published: Vec<Uuid> = s.published.iter().map(|p| p.1).collect();
            super::sla::mark_delivered!(tx, destination, published, s.at.as_str());
            for d in &s.dead {
                // A resent letter refused again becomes dead again, with the new reason.
                sqlx::query(
                    "INSERT INTO dead_letters (destination, seq, record_id, version, reason, attempts, dead_at, state) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'dead') ON CONFLICT (destination, seq) DO UPDATE SET \
                     reason = excluded.reason, attempts = dead_letters.attempts + excluded.attempts, \
                     dead_at = excluded.dead_at, state = 'dead'",
                )
                .bind(destination)
                .bind(d.seq)
                .bind(d.record_id.to_string())
                .bind(d.version)
                .bind(d.reason.as_str())
                .bind(d.attempts)
                .bind(s.at.as_str())
                .execute(&mut *tx)
                .await?;
            }
            for seq in &s.resent {
                sqlx::query("UPDATE dead_letters SET state = 'resent', resent_at = $1 WHERE destination = $2 AND seq = $3")
                    .bind(s.at.as_str())
                    .bind(destination)
                    .bind(*seq)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(position) = s.position {
                sqlx::query(
                    "INSERT INTO outbox_cursors (destination, position, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (destination) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                )
                .bind(destination)
                .bind(position)
                .bind(s.at.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Dead letters, newest first; all destinations when `destination` is `None`.
    pub async fn dead_letters(&self, destination: Option<&str>, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.select_dead_letters(destination.map(|d| ("destination", d.to_owned())), limit).await
    }

    /// The dead letters of one record, at every destination.
    pub async fn dead_letters_of(&self, record_id: Uuid) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.select_dead_letters(Some(("record_id", record_id.to_string())), 1_000).await
    }

    async fn select_dead_letters(
        &self,
        filter: Option<(&str, String)>,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT destination, seq, record_id, version, reason, attempts, dead_at, state, resent_at FROM dead_letters",
            );
            if let Some((column, value)) = &filter {
                qb.push(format!(" WHERE {column} = ")).push_bind(value.as_str());
            }
            qb.push(" ORDER BY dead_at DESC, seq DESC LIMIT ").push_bind(limit);
            qb.build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    let reason: String = row.try_get(4)?;
                    Ok(DeadLetterRow {
                        destination: row.try_get(0)?,
                        seq: row.try_get(1)?,
                        record_id: row.try_get(2)?,
                        version: row.try_get(3)?,
                        reason: serde_json::from_str(&reason).unwrap_or(serde_json::Value::String(reason)),
                        attempts: row.try_get(5)?,
                        dead_at: row.try_get(6)?,
                        state: row.try_get(7)?,
                        resent_at: row.try_get(8)?,
                    })
                })
                .collect()
        })
    }

    /// Queues dead letters at `destination` for delivery again: those of one record, or all.
    /// Returns how many were queued.
    pub async fn request_resend(&self, destination: &str, record_id: Option<Uuid>) -> Result<u64, StoreError> {
        // Every SQLite writer takes its turn (see `settle`).
        let _turn = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new("UPDATE dead_letters SET state = 'resend' WHERE state = 'dead' AND destination = ");
            qb.push_bind(destination);
            if let Some(id) = record_id {
                // The record's own letters and those of events about it, which wait behind it.
                qb.push(" AND (record_id = ").push_bind(id.to_string());
                qb.push(" OR seq IN (SELECT seq FROM records WHERE target_record_id = ").push_bind(id.to_string()).push("))");
            }
            Ok(qb.build().execute(pool).await?.rows_affected())
        })
    }

    /// The queue of every destination that has one.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query(
                "SELECT c.destination, c.position, \
                   (SELECT COUNT(*) FROM records r WHERE r.seq > c.position), \
                   (SELECT COUNT(*) FROM dead_letters d WHERE d.destination = c.destination AND d.state <> 'resent'), \
                   (SELECT r.received_at FROM records r WHERE r.seq > c.position ORDER BY r.seq LIMIT 1) \
                 FROM outbox_cursors c ORDER BY c.destination",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok(QueueStats {
                    destination: row.try_get(0)?,
                    position: row.try_get(1)?,
                    backlog: row.try_get(2)?,
                    dead: row.try_get(3)?,
                    oldest_waiting: row.try_get(4)?,
                }))
                .collect()
        })
    }

    /// Dead letters not yet resent, over all destinations.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        dispatch!(self, pool => {
            Ok(sqlx::query("SELECT COUNT(*) FROM dead_letters WHERE state <> 'resent'").fetch_one(pool).await?.try_get(0)?)
        })
    }

    /// The highest `seq` stored (0 when empty) below which nothing can still commit: a cursor
    /// may be set there without passing a record (`horizon`).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let below = self.settled_below().await?.unwrap_or(i64::MAX);
        dispatch!(self, pool => {
            let row =
                sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM records WHERE seq < $1").bind(below).fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }
}

impl Store {
    /// What a queue reads of each record (the select list; [`QUEUED_FROM`] follows): its
    /// routing facts, and for a list entry the fields of its content that routing down needs
    /// (read by the database, list entries only; of an identity number only the six digits of
    /// its division).
    fn queued_columns(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => {
                "SELECT r.seq, r.record_id, r.version, r.origin, r.record_type, r.disclosure, r.target_origin, \
                 r.target_record_id, COALESCE(e.sender, r.intake), r.record_type = 'credit_list_entry', \
                 CASE WHEN r.record_type = 'credit_list_entry' THEN json_extract(r.content, '$.list_type') END, \
                 CASE WHEN r.record_type = 'credit_list_entry' THEN json_extract(r.content, '$.domain') END, \
                 r.subject_uscc, \
                 CASE WHEN r.record_type = 'credit_list_entry' AND json_extract(r.content, '$.party_id_type') = '身份证' \
                 THEN substr(json_extract(r.content, '$.party_id_no'), 1, 6) END, \
                 CASE WHEN r.record_type = 'credit_list_entry' THEN json_extract(r.content, '$.region_code') END"
            }
            Backend::Postgres(_) => {
                "SELECT r.seq, r.record_id, r.version, r.origin, r.record_type, r.disclosure, r.target_origin, \
                 r.target_record_id, COALESCE(e.sender, r.intake), r.record_type = 'credit_list_entry', \
                 CASE WHEN r.record_type = 'credit_list_entry' THEN r.content::jsonb ->> 'list_type' END, \
                 CASE WHEN r.record_type = 'credit_list_entry' THEN r.content::jsonb ->> 'domain' END, \
                 r.subject_uscc, \
                 CASE WHEN r.record_type = 'credit_list_entry' AND r.content::jsonb ->> 'party_id_type' = '身份证' \
                 THEN substr(r.content::jsonb ->> 'party_id_no', 1, 6) END, \
                 CASE WHEN r.record_type = 'credit_list_entry' THEN r.content::jsonb ->> 'region_code' END"
            }
        }
    }
}

/// Where [`Store::queued_columns`] reads from.
const QUEUED_FROM: &str = " FROM records r LEFT JOIN envelopes e ON e.digest = r.envelope_digest";

/// What [`Store::queued_to_forward`] reads after the routing facts (from column 15 on): the rest
/// of a [`StoredRecord`] and its [`ArrivalOf`].
const FORWARD_EXTRA: &str = concat!(
    ", r.content_hash, r.deadline, r.received_at, r.content, r.envelope_digest, r.leaf_index, ",
    super::origin_proof_sql!("r")
);

/// A queued record with what sealing it for the next hop needs (see [`Store::queued_to_forward`]).
#[derive(Debug, Clone)]
pub struct Forwardable {
    pub queued: QueuedRecord,
    pub record: StoredRecord,
    /// Where it arrived from another node (`None` for records pushed here).
    pub arrival: Option<ArrivalOf>,
}

fn forwardable<R: Row>(row: &R) -> Result<Forwardable, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let queued = queued_record(row)?;
    let record = StoredRecord {
        seq: queued.seq,
        record_id: queued.record_id,
        version: queued.version,
        origin: queued.origin.clone(),
        record_type: queued.record_type.clone(),
        content_hash: row.try_get(15)?,
        deadline: row.try_get(16)?,
        received_at: row.try_get(17)?,
        content: row.try_get(18)?,
    };
    Ok(Forwardable { queued, record, arrival: arrival_at(row, 19)? })
}

/// The [`ArrivalOf`] read at column `first` on (envelope digest, leaf index, origin proof, as
/// `FORWARD_COLUMNS` and `FORWARD_EXTRA` end); `None` for a record pushed here.
fn arrival_at<R: Row>(row: &R, first: usize) -> Result<Option<ArrivalOf>, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let Some(envelope_digest) = row.try_get::<Option<String>, _>(first)? else { return Ok(None) };
    Ok(Some(ArrivalOf { envelope_digest, leaf_index: row.try_get(first + 1)?, origin_proof: row.try_get(first + 2)? }))
}

fn queued_record<R: Row>(row: &R) -> Result<QueuedRecord, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let listed = row.try_get::<bool, _>(9)?.then(|| -> Result<ListFacts, StoreError> {
        Ok(ListFacts::new(row.try_get(10)?, row.try_get(11)?, row.try_get(12)?, row.try_get(13)?, row.try_get(14)?))
    });
    Ok(QueuedRecord {
        seq: row.try_get(0)?,
        record_id: parse_uuid(&row.try_get::<String, _>(1)?)?,
        version: row.try_get(2)?,
        origin: row.try_get(3)?,
        record_type: row.try_get(4)?,
        disclosure: row.try_get(5)?,
        target_origin: row.try_get(6)?,
        target_record_id: row.try_get(7)?,
        arrived_from: row.try_get(8)?,
        listed: listed.transpose()?,
    })
}

/// An envelope parked for a child that collects it (pull mode).
#[derive(Debug, Clone)]
pub struct Parked {
    pub cursor: i64,
    /// The envelope's HTTP body, exactly as a push would send it.
    pub body: String,
}

impl Store {
    /// Parks an envelope for `receiver` to collect.
    pub async fn park(&self, receiver: &str, digest: &str, body: &str, at: &str) -> Result<(), StoreError> {
        // Every SQLite writer takes its turn (see `settle`).
        let _turn = self.write_lock.lock().await;
        dispatch!(self, pool => {
            sqlx::query("INSERT INTO pull_queue (receiver, digest, body, parked_at) VALUES ($1, $2, $3, $4)")
                .bind(receiver)
                .bind(digest)
                .bind(body)
                .bind(at)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Envelopes parked for `receiver` after `cursor`, oldest first.
    pub async fn parked_after(&self, receiver: &str, cursor: i64, limit: i64) -> Result<Vec<Parked>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query(
                "SELECT cursor, body FROM pull_queue WHERE receiver = $1 AND cursor > $2 AND receipt IS NULL \
                 ORDER BY cursor LIMIT $3",
            )
            .bind(receiver)
            .bind(cursor)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok(Parked { cursor: r.try_get(0)?, body: r.try_get(1)? })).collect()
        })
    }

    /// Records the receipt `receiver` returned for the parked envelope `digest`. Returns
    /// whether such an envelope was waiting.
    pub async fn parked_receipt_in(&self, receiver: &str, digest: &str, receipt: &str) -> Result<bool, StoreError> {
        // Every SQLite writer takes its turn (see `settle`).
        let _turn = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let done = sqlx::query("UPDATE pull_queue SET receipt = $1 WHERE receiver = $2 AND digest = $3")
                .bind(receipt)
                .bind(receiver)
                .bind(digest)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// The receipt returned for a parked envelope, once there is one.
    pub async fn parked_receipt(&self, digest: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, pool => {
            let row = sqlx::query("SELECT receipt FROM pull_queue WHERE digest = $1").bind(digest).fetch_optional(pool).await?;
            Ok(match row { Some(r) => r.try_get(0)?, None => None })
        })
    }

    /// Removes parked envelopes: one (settled or given up), or all of a receiver's (at start,
    /// since a restarted sender seals its queue anew).
    pub async fn unpark(&self, receiver: &str, digest: Option<&str>) -> Result<(), StoreError> {
        // Every SQLite writer takes its turn (see `settle`).
        let _turn = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new("DELETE FROM pull_queue WHERE receiver = ");
            qb.push_bind(receiver);
            if let Some(d) = digest {
                qb.push(" AND digest = ").push_bind(d);
            }
            qb.build().execute(pool).await?;
            Ok(())
        })
    }
}

impl Store {
    /// Penalties of `origin` decided on or before `decided_by` that may still be published: no
    /// `publicity_expired` event about them yet, and not withdrawn, repaired or expired: the
    /// latest version of each, in `seq` order after `after`, at most `limit` (a page).
    pub async fn publicity_candidates(
        &self,
        origin: &str,
        decided_by: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let below = self.settled_below().await?;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(SELECT_COLUMNS);
            qb.push(" WHERE record_type = 'admin_penalty' AND seq > ").push_bind(after);
            if let Some(below) = below {
                qb.push(" AND seq < ").push_bind(below);
            }
            qb.push(" AND origin = ").push_bind(origin);
            qb.push(" AND clock_start <= ").push_bind(decided_by);
            // The latest version decides: an older one's decision date may have been corrected.
            qb.push(
                " AND NOT EXISTS (SELECT 1 FROM records n WHERE n.record_id = records.record_id \
                   AND n.version > records.version) \
                 AND NOT EXISTS (SELECT 1 FROM records e WHERE e.target_record_id = records.record_id \
                   AND e.record_type = 'publicity_expired') \
                 AND NOT EXISTS (SELECT 1 FROM record_states s WHERE s.record_id = records.record_id \
                   AND s.state IN ('withdrawn', 'repaired', 'expired')) ORDER BY seq LIMIT ",
            );
            qb.push_bind(limit);
            qb.build().fetch_all(pool).await?.iter().map(super::stored_record).collect()
        })
    }
}
