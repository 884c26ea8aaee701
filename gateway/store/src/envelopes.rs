//! Envelopes received from other nodes: replay detection, the items they carry (kept under
//! their origin's record id and version), their proofs, and our receipt, in one transaction.

use std::collections::HashMap;

use gateway_core::canonical::Sha256Digest;
use gateway_core::interchange::receipt::{self, ReceiptBody, ReceiptOutcome};
use gateway_core::jws::Jws;
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

// `Backend`, `INSERT_CHUNK` and `all_inserted` are used by the `dispatch!`/`insert_rows!` expansions.
use super::{
    Arrival, Backend, INSERT_CHUNK, Incoming, NewRow, Store, StoreError, all_inserted, parse_digest, parse_uuid, short,
};
use crate::records::GroupWriter;

/// An item that arrived in an envelope and passed validation.
#[derive(Debug, Clone)]
pub struct RelayedItem {
    pub origin: String,
    pub record_id: Uuid,
    pub version: i64,
    pub incoming: Incoming,
    /// Its place in this envelope (the proof is rebuilt from the envelope's item hashes).
    pub leaf_index: i64,
    /// Its origin envelope and proof there, when this envelope is a relay.
    pub origin_proof: Option<OriginRef>,
}

/// A relayed item's `origin_proof` (interchange-v1 §5) as received, in its two parts: the
/// origin envelope, which every item it carried shares, and the item's proof in its tree.
#[derive(Debug, Clone)]
pub struct OriginRef {
    /// SHA-256 (hex) of the origin envelope's signing input (its document digest).
    pub envelope_digest: String,
    /// JSON of the origin envelope JWS.
    pub envelope: std::sync::Arc<str>,
    /// JSON of the item's proof in the origin envelope's Merkle tree.
    pub proof: String,
}

impl RelayedItem {
    /// The `records` row of this item, arrived in the envelope `envelope_digest`.
    fn row<'a>(&'a self, received_at: &'a str, envelope_digest: &'a str) -> NewRow<'a> {
        NewRow {
            origin: &self.origin,
            received_at,
            incoming: &self.incoming,
            record_id: self.record_id,
            version: self.version,
            arrival: Some(Arrival { envelope_digest, leaf_index: self.leaf_index, origin: self.origin_proof.as_ref() }),
        }
    }
}

/// What the store did with one relayed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayedOutcome {
    Accepted,
    NewVersion,
    Duplicate,
    /// The same record id and version is stored with other content: the origin changed a
    /// version in place, which the interchange forbids.
    Conflict,
}

/// A received envelope, ready to store.
#[derive(Debug, Clone)]
pub struct EnvelopeIn {
    pub digest: Sha256Digest,
    pub envelope_id: String,
    pub sender: String,
    pub receiver: String,
    pub seq: i64,
    pub created_at: String,
    pub received_at: String,
    /// JSON of the envelope JWS.
    pub envelope: String,
    /// The item hashes in envelope order, concatenated hex.
    pub item_hashes: String,
    /// Items in envelope order; `None` for items rejected by validation.
    pub items: Vec<Option<RelayedItem>>,
}

/// An envelope as stored.
#[derive(Debug, Clone)]
pub struct StoredEnvelope {
    pub digest: String,
    pub envelope_id: String,
    /// `in` (received, `receipt` is ours) or `out` (sent, `receipt` is the peer's).
    pub direction: String,
    pub sender: String,
    pub receiver: String,
    /// JSON of the envelope JWS.
    pub envelope: String,
    /// Its item hashes in envelope order, from which any item's proof is rebuilt.
    pub item_hashes: Vec<Sha256Digest>,
    pub receipt: Option<String>,
}

/// Where a record version arrived from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivalOf {
    pub envelope_digest: String,
    pub leaf_index: i64,
    /// JSON of the origin's envelope and proof, when the envelope was a relay.
    pub origin_proof: Option<String>,
}

/// Builds the signed receipt (JSON) from the per-item outcomes, inside the transaction.
pub type ReceiptFn = Box<dyn FnOnce(&[Option<RelayedOutcome>]) -> String + Send>;

/// An envelope waiting for the writer.
pub(super) struct EnvelopeJob {
    env: EnvelopeIn,
    receipt: ReceiptFn,
    reply: tokio::sync::oneshot::Sender<Result<EnvelopeStored, crate::SharedFailure>>,
}

/// The answer to storing an envelope.
#[derive(Debug)]
pub enum EnvelopeStored {
    /// Stored now; the receipt built from the outcomes was stored with it.
    New { receipt: String },
    /// The same envelope (same digest) was stored before: its receipt, unchanged.
    Repeat { receipt: String },
    /// This sender already used this envelope id for a different envelope.
    Replay,
}

impl Store {
    /// Stores a received envelope and its items atomically. `receipt` turns the per-item
    /// outcomes (`None` = rejected by validation) into the signed receipt, which is stored in
    /// the same transaction, so an envelope is never acknowledged twice differently.
    /// Envelopes that arrive while another is being written are committed together.
    pub async fn store_envelope(&self, env: EnvelopeIn, receipt: ReceiptFn) -> Result<EnvelopeStored, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = EnvelopeJob { env, receipt, reply };
        self.join_group(&self.waiting_envelopes, job, answer, false, GroupWriter::commit_and_answer_envelopes).await
    }
}

impl GroupWriter {
    /// Commits every envelope of `jobs` in one transaction and answers each.
    async fn commit_and_answer_envelopes(self, jobs: Vec<EnvelopeJob>) {
        let mut replies = Vec::with_capacity(jobs.len());
        let items: usize = jobs.iter().map(|j| j.env.items.len()).sum();
        match self.commit_envelopes(jobs, &mut replies).await {
            Ok(results) => {
                self.stored(items);
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                let failure = crate::SharedFailure::from(&e);
                for reply in replies {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// One transaction for several envelopes, in arrival order.
    async fn commit_envelopes(
        &self,
        jobs: Vec<EnvelopeJob>,
        replies: &mut Vec<tokio::sync::oneshot::Sender<Result<EnvelopeStored, crate::SharedFailure>>>,
    ) -> Result<Vec<EnvelopeStored>, StoreError> {
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self.backend, Backend::Postgres(_)) {
                // Alone: no push group (of any replica) commits meanwhile, so no row above
                // this group's `seq`s can commit before it, and the undo below may delete by
                // `seq` (`horizon`).
                sqlx::query(crate::horizon::ENTER_EXCLUSIVE).execute(&mut *tx).await?;
            }
            let skip = self.backend.skip_held();
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                replies.push(job.reply);
                let env = &job.env;
                let digest = env.digest.to_hex();
                let mut qb = QueryBuilder::new(format!("SELECT {ENVELOPE_COLUMNS} FROM envelopes WHERE sender = "));
                qb.push_bind(env.sender.as_str()).push(" AND envelope_id = ").push_bind(env.envelope_id.as_str());
                if let Some(row) = qb.build().fetch_optional(&mut *tx).await? {
                    let held = stored_envelope(&row)?;
                    results.push(match (held.digest == digest, held.receipt) {
                        (true, Some(receipt)) => EnvelopeStored::Repeat { receipt },
                        _ => EnvelopeStored::Replay,
                    });
                    continue;
                }
                // Most envelopes carry only records new here: insert them all, skipping any
                // whose record id + version or natural key + content is held. If every row went
                // in, that is the answer, with no lookups. Otherwise undo and judge each item.
                // The undo deletes the rows after the last `seq` held before (no other writer
                // can add records meanwhile: this transaction holds the store's write lock and,
                // on PostgreSQL, advisory lock 7301). A savepoint would have made SQLite copy
                // every page the insert changed, on the common path, to serve the rare one.
                let fresh: Vec<NewRow<'_>> =
                    env.items.iter().flatten().map(|i| i.row(&env.received_at, &digest)).collect();
                let before: i64 =
                    sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM records").fetch_one(&mut *tx).await?.try_get(0)?;
                let all_new = insert_rows!(tx, skip, fresh, skip_held) == fresh.len() as u64;
                if all_new {
                    insert_origin_proofs!(tx, skip, &fresh);
                    apply_events!(tx, &fresh);
                } else {
                    sqlx::query("DELETE FROM records WHERE seq > $1").bind(before).execute(&mut *tx).await?;
                }
                drop(fresh);
                let outcomes = if all_new {
                    let new =
                        |i: &RelayedItem| if i.version == 1 { RelayedOutcome::Accepted } else { RelayedOutcome::NewVersion };
                    env.items.iter().map(|i| i.as_ref().map(new)).collect()
                } else {
                    // What is already stored under these record ids, and under these natural keys.
                    let mut ids: Vec<String> = env.items.iter().flatten().map(|i| i.record_id.to_string()).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let mut by_version: HashMap<(Uuid, i64), Sha256Digest> = HashMap::new();
                    for chunk in ids.chunks(super::LOOKUP_CHUNK) {
                        let mut qb = QueryBuilder::new("SELECT record_id, version, content_hash FROM records WHERE record_id IN (");
                        let mut list = qb.separated(", ");
                        for id in chunk {
                            list.push_bind(id.as_str());
                        }
                        qb.push(")");
                        for row in qb.build().fetch_all(&mut *tx).await? {
                            let id = parse_uuid(&row.try_get::<String, _>(0)?)?;
                            by_version.insert((id, row.try_get(1)?), parse_digest(&row.try_get::<String, _>(2)?)?);
                        }
                    }
                    // Sorted, so the index is walked in order.
                    let mut keys: Vec<i64> = env.items.iter().flatten().map(|i| short(&i.incoming.record.natural_key)).collect();
                    keys.sort_unstable();
                    keys.dedup();
                    let mut same_content: std::collections::HashSet<(i64, i64)> = std::collections::HashSet::new();
                    for chunk in keys.chunks(super::LOOKUP_CHUNK) {
                        let mut qb = QueryBuilder::new("SELECT nk, ch FROM records WHERE nk IN (");
                        let mut list = qb.separated(", ");
                        for nk in chunk {
                            list.push_bind(*nk);
                        }
                        qb.push(")");
                        for row in qb.build().fetch_all(&mut *tx).await? {
                            same_content.insert((row.try_get(0)?, row.try_get(1)?));
                        }
                    }
                    let mut outcomes = Vec::with_capacity(env.items.len());
                    let mut rows = Vec::new();
                    for item in &env.items {
                        let Some(item) = item else {
                            outcomes.push(None);
                            continue;
                        };
                        let r = &item.incoming.record;
                        let key = (item.record_id, item.version);
                        let outcome = match by_version.get(&key) {
                            Some(hash) if *hash == r.content_hash => RelayedOutcome::Duplicate,
                            Some(_) => RelayedOutcome::Conflict,
                            // The same decision already held under another id (e.g. reported twice).
                            None if same_content.contains(&(short(&r.natural_key), short(&r.content_hash))) => RelayedOutcome::Duplicate,
                            None => {
                                by_version.insert(key, r.content_hash);
                                same_content.insert((short(&r.natural_key), short(&r.content_hash)));
                                rows.push(item.row(&env.received_at, &digest));
                                if item.version == 1 { RelayedOutcome::Accepted } else { RelayedOutcome::NewVersion }
                            }
                        };
                        outcomes.push(Some(outcome));
                    }
                    insert_rows!(tx, self.backend.insert_new(), rows);
                    insert_origin_proofs!(tx, skip, &rows);
                    apply_events!(tx, &rows);
                    outcomes
                };
                let receipt = (job.receipt)(&outcomes);
                let compact = CompactReceipt::of(&receipt, &env.received_at, &outcomes);
                debug_assert!(
                    compact.as_ref().is_none_or(|c| {
                        let to = addressing(&env.envelope_id, &digest, &env.sender, &env.receiver);
                        c.expand(&to, &parse_hashes(&env.item_hashes).unwrap_or_default()).ok() == Some(receipt.clone())
                    }),
                    "a compact receipt must rebuild the signed one exactly"
                );
                let stored = match &compact {
                    Some(c) => StoredReceipt::Compact(serde_json::to_string(c).unwrap_or_default()),
                    None => StoredReceipt::Full(&receipt),
                };
                envelope_row(env, "in", stored).build().execute(&mut *tx).await?;
                results.push(EnvelopeStored::New { receipt });
            }
            tx.commit().await?;
            Ok(results)
        })
    }
}

impl Store {
    /// Records an envelope this node sent, the verified receipt that answered it, and which
    /// record versions it carried (`carried[i]` at leaf `i`), in one transaction.
    pub async fn store_sent(&self, env: &EnvelopeIn, receipt: &str, carried: &[(Uuid, i64)]) -> Result<(), StoreError> {
        let at = env.received_at.clone();
        self.settle(
            &env.receiver,
            super::Settlement {
                sent: Some(super::SentEnvelope { envelope: env, receipt, carried }),
                at,
                ..Default::default()
            },
        )
        .await
    }

    /// A stored envelope (either direction) by digest, with its receipt.
    pub async fn envelope(&self, digest: &str) -> Result<Option<StoredEnvelope>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {ENVELOPE_COLUMNS} FROM envelopes WHERE digest = "));
            qb.push_bind(digest);
            match qb.build().fetch_optional(pool).await? {
                Some(row) => Ok(Some(stored_envelope(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Where each of these record versions arrived from another node. Versions pushed here by
    /// departments, or not held, are absent.
    pub async fn arrivals(&self, keys: &[(Uuid, i64)]) -> Result<HashMap<(Uuid, i64), ArrivalOf>, StoreError> {
        let wanted: std::collections::HashSet<&(Uuid, i64)> = keys.iter().collect();
        let mut found = HashMap::new();
        dispatch!(self, pool => {
            for chunk in keys.chunks(super::LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new(
                    concat!(
                        "SELECT record_id, version, envelope_digest, leaf_index, ",
                        super::origin_proof_sql!("records"),
                        " FROM records WHERE envelope_digest IS NOT NULL AND record_id IN ("
                    ),
                );
                let mut list = qb.separated(", ");
                for (id, _) in chunk {
                    list.push_bind(id.to_string());
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    let key = (parse_uuid(&row.try_get::<String, _>(0)?)?, row.try_get::<i64, _>(1)?);
                    if wanted.contains(&key) {
                        let arrival = ArrivalOf {
                            envelope_digest: row.try_get(2)?,
                            leaf_index: row.try_get(3)?,
                            origin_proof: row.try_get(4)?,
                        };
                        found.insert(key, arrival);
                    }
                }
            }
            Ok(found)
        })
    }

    /// The envelopes this node sent carrying a record version, oldest first:
    /// `(digest, leaf index of the version, receiver)`.
    pub async fn sent_with(&self, record_id: Uuid, version: i64) -> Result<Vec<(String, i64, String)>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT s.envelope_digest, s.leaf_index, e.receiver FROM sent_items s \
                 JOIN envelopes e ON e.digest = s.envelope_digest WHERE s.record_id = ",
            );
            qb.push_bind(record_id.to_string()).push(" AND s.version = ").push_bind(version);
            qb.push(" ORDER BY e.created_at");
            qb.build().fetch_all(pool).await?.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).collect()
        })
    }

    /// The stored receipt for an envelope, by digest.
    pub async fn receipt_of(&self, digest: &Sha256Digest) -> Result<Option<String>, StoreError> {
        Ok(self.envelope(&digest.to_hex()).await?.and_then(|e| e.receipt))
    }
}

/// What `envelope_row` writes for the receipt.
pub(super) enum StoredReceipt<'a> {
    Full(&'a str),
    Compact(String),
}

/// Our receipt for a received envelope in which every item was taken: the JWS's protected
/// header and signature, its time, and one letter per item outcome. The payload is rebuilt
/// from these and the envelope's addressing and item hashes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactReceipt {
    protected: String,
    signature: String,
    received_at: String,
    /// `a` accepted, `n` new version, `d` duplicate, per item in envelope order.
    outcomes: String,
}

impl CompactReceipt {
    /// The compact form of `receipt` (JWS JSON), if it has one: not when an item was rejected
    /// (its errors are kept in full) or the text is not a JWS.
    fn of(receipt: &str, received_at: &str, outcomes: &[Option<RelayedOutcome>]) -> Option<Self> {
        let letters = outcomes
            .iter()
            .map(|o| match o {
                Some(RelayedOutcome::Accepted) => Some('a'),
                Some(RelayedOutcome::NewVersion) => Some('n'),
                Some(RelayedOutcome::Duplicate) => Some('d'),
                Some(RelayedOutcome::Conflict) | None => None,
            })
            .collect::<Option<String>>()?;
        let jws: Jws = serde_json::from_str(receipt).ok()?;
        Some(CompactReceipt {
            protected: jws.protected,
            signature: jws.signature,
            received_at: received_at.to_owned(),
            outcomes: letters,
        })
    }

    /// The receipt JWS (JSON) this was made from, for the envelope with this addressing.
    fn expand(&self, to: &ReceiptBody, item_hashes: &[Sha256Digest]) -> Result<String, StoreError> {
        let corrupt = |m: &str| StoreError::Corrupt(format!("compact receipt of envelope {}: {m}", to.envelope_digest));
        if self.outcomes.len() != item_hashes.len() {
            return Err(corrupt("outcome count differs from the item count"));
        }
        let outcomes = self
            .outcomes
            .chars()
            .zip(item_hashes)
            .enumerate()
            .map(|(index, (letter, hash))| {
                let status = match letter {
                    'a' => "accepted",
                    'n' => "new_version",
                    'd' => "duplicate",
                    _ => return Err(corrupt("unknown outcome letter")),
                };
                Ok(ReceiptOutcome {
                    index: index as u64,
                    item_hash: hash.to_hex(),
                    status: status.into(),
                    errors: vec![],
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = ReceiptBody { received_at: self.received_at.clone(), outcomes, ..to.clone() };
        let jws = receipt::assemble(&body, &self.protected, &self.signature);
        serde_json::to_string(&jws).map_err(|e| corrupt(&e.to_string()))
    }
}

/// The columns `stored_envelope` reads, in its order.
const ENVELOPE_COLUMNS: &str =
    "digest, direction, sender, receiver, envelope, item_hashes, receipt, receipt_compact, envelope_id";

/// Reads an `envelopes` row selected with [`ENVELOPE_COLUMNS`], expanding a compact receipt.
fn stored_envelope<R: Row>(row: &R) -> Result<StoredEnvelope, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    let digest: String = row.try_get(0)?;
    let item_hashes = parse_hashes(&row.try_get::<String, _>(5)?)
        .ok_or_else(|| StoreError::Corrupt(format!("item_hashes of envelope {digest} is not whole digests")))?;
    let mut envelope = StoredEnvelope {
        digest,
        direction: row.try_get(1)?,
        sender: row.try_get(2)?,
        receiver: row.try_get(3)?,
        envelope: row.try_get(4)?,
        item_hashes,
        receipt: row.try_get(6)?,
        envelope_id: row.try_get(8)?,
    };
    if let (None, Some(compact)) = (&envelope.receipt, row.try_get::<Option<String>, _>(7)?) {
        let compact: CompactReceipt = serde_json::from_str(&compact)
            .map_err(|e| StoreError::Corrupt(format!("compact receipt of envelope {}: {e}", envelope.digest)))?;
        envelope.receipt = Some(compact.expand(
            &addressing(&envelope.envelope_id, &envelope.digest, &envelope.sender, &envelope.receiver),
            &envelope.item_hashes,
        )?);
    }
    Ok(envelope)
}

/// A receipt body with only the addressing of an envelope filled in.
fn addressing(envelope_id: &str, digest: &str, sender: &str, receiver: &str) -> ReceiptBody {
    ReceiptBody {
        envelope_id: envelope_id.to_owned(),
        envelope_digest: digest.to_owned(),
        sender: sender.to_owned(),
        receiver: receiver.to_owned(),
        received_at: String::new(),
        outcomes: Vec::new(),
    }
}

/// Item hashes stored as concatenated hex, in envelope order.
fn parse_hashes(hex: &str) -> Option<Vec<Sha256Digest>> {
    if !hex.len().is_multiple_of(64) {
        return None;
    }
    (0..hex.len() / 64).map(|i| Sha256Digest::from_hex(hex.get(i * 64..(i + 1) * 64)?)).collect()
}

/// The `INSERT` of one `envelopes` row, for either backend.
pub(super) fn envelope_row<'a, DB>(
    env: &'a EnvelopeIn,
    direction: &'a str,
    receipt: StoredReceipt<'a>,
) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'q> <DB as sqlx::Database>::Arguments: Default,
    for<'q> &'a str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (full, compact) = match receipt {
        StoredReceipt::Full(r) => (Some(r.to_owned()), None),
        StoredReceipt::Compact(c) => (None, Some(c)),
    };
    let mut qb = QueryBuilder::new(
        "INSERT INTO envelopes (digest, envelope_id, direction, sender, receiver, seq, created_at, envelope, \
         item_hashes, receipt, receipt_compact) ",
    );
    qb.push_values([()], |mut b, ()| {
        b.push_bind(env.digest.to_hex())
            .push_bind(env.envelope_id.as_str())
            .push_bind(direction)
            .push_bind(env.sender.as_str())
            .push_bind(env.receiver.as_str())
            .push_bind(env.seq)
            .push_bind(env.created_at.as_str())
            .push_bind(env.envelope.as_str())
            .push_bind(env.item_hashes.as_str())
            .push_bind(full.clone())
            .push_bind(compact.clone());
    });
    qb
}
