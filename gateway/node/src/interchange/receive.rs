//! Receiving an envelope: the sender must be the TLS peer; strict parsing, item hashes, the
//! signature and Merkle root, every item validated as on the push path; then the items are
//! stored with the signed receipt in one transaction, and the receipt is answered after commit.

use std::collections::HashMap;
use std::sync::Arc;

use gateway_core::canonical::{Sha256Digest, canonical_hash, canonical_string, item_canonical, parse_strict_str};
use gateway_core::interchange::envelope::{self, Envelope, EnvelopeError, OriginProof, Proof, Receiving, WireItem};
use gateway_core::interchange::receipt::{self, ReceiptBody, ReceiptOutcome};
use gateway_core::interchange::{format_time, is_uuid};
use gateway_core::jws::Jws;
use gateway_core::record::FieldError;
use gateway_store::{EnvelopeIn, EnvelopeStored, Incoming, OriginRef, RelayedItem, RelayedOutcome};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ErrorKind, ServiceError};
use crate::ingest::Ingest;
use gateway_core::date::today_in_china;

use super::{CLOCK_WINDOW, Node};

/// An envelope as received: items kept as raw JSON until they are parsed strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope<'a> {
    envelope: Jws,
    #[serde(borrow)]
    items: Vec<WireItemRaw<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireItemRaw<'a> {
    #[serde(borrow)]
    item: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    proof: ProofRaw<'a>,
    /// Kept as received (split into the origin envelope and the proof, see `OriginRef`), and
    /// parsed only to be verified.
    #[serde(default, borrow)]
    origin_proof: Option<&'a serde_json::value::RawValue>,
}

/// An `origin_proof` as received, split into its two members without parsing them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginProofRaw<'a> {
    #[serde(borrow)]
    envelope: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    proof: &'a serde_json::value::RawValue,
}

/// An origin envelope as parsed, with its digest (hex) and its text: what the items it carried
/// share.
type OriginShared = (Jws, String, Arc<str>);

/// A proof as received: its path borrowed from the body (hex needs no unescaping).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofRaw<'a> {
    index: u64,
    size: u64,
    #[serde(borrow)]
    path: Vec<&'a str>,
}

impl Node {
    /// Handles `POST /federation/v1/envelopes` from the authenticated member `peer`. Answers
    /// with the signed receipt as JSON text, exactly as stored.
    pub async fn receive(&self, peer: &str, body: bytes::Bytes, now: OffsetDateTime) -> Result<String, ServiceError> {
        // Parsing, hashing, the signature and every record's validation are CPU work: one
        // blocking task, items in parallel, as on the push path, so request I/O keeps flowing.
        let registry = self.identity.registry_now()?;
        // The receipt is signed with the key this same registry says is current.
        let signer = self.identity.keys.signer(&registry, &self.identity.member_id, now);
        let gw = Arc::clone(&self.ingest);
        let peer = peer.to_owned();
        let today = today_in_china(now);
        let checked = tokio::task::spawn_blocking(move || {
            let at = Receiving { registry: &registry, me: &gw.member_id, now, clock_window: CLOCK_WINDOW };
            open_and_check(&gw, &peer, &body, &at, today)
        })
        .await
        .map_err(|e| ServiceError::internal(&e))??;
        let CheckedEnvelope { envelope: envelope_jws, header, digest, item_hashes, items: mut checked } = checked;
        // Relayed events come from a member authenticated by mTLS, for whatever unit.
        self.ingest.require_targets(&mut checked, &crate::auth::UnitScope::Any).await?;

        let mut errors = Vec::with_capacity(checked.len());
        let mut relayed = Vec::with_capacity(checked.len());
        for c in checked {
            match c {
                Ok(item) => {
                    errors.push(Vec::new());
                    relayed.push(Some(item));
                }
                Err(e) => {
                    errors.push(e);
                    relayed.push(None);
                }
            }
        }
        let h = &header;
        let stored_env = EnvelopeIn {
            digest,
            envelope_id: h.envelope_id.clone(),
            sender: h.sender.clone(),
            receiver: h.receiver.clone(),
            seq: i64::try_from(h.seq).unwrap_or(i64::MAX),
            created_at: h.created_at.clone(),
            received_at: format_time(now),
            envelope: serde_json::to_string(&envelope_jws).unwrap_or_default(),
            item_hashes: item_hashes.iter().map(Sha256Digest::to_hex).collect(),
            items: relayed,
        };
        let (envelope_id, digest, sender, receiver) =
            (h.envelope_id.clone(), digest.to_hex(), h.sender.clone(), h.receiver.clone());
        let make_receipt = move |outcomes: &[Option<RelayedOutcome>]| {
            let body = ReceiptBody {
                envelope_id,
                envelope_digest: digest,
                sender,
                receiver,
                received_at: format_time(now),
                outcomes: outcomes
                    .iter()
                    .zip(&item_hashes)
                    .zip(errors)
                    .enumerate()
                    .map(|(i, ((o, hash), errors))| ReceiptOutcome {
                        index: i as u64,
                        item_hash: hash.to_hex(),
                        status: status(*o).into(),
                        errors: match o {
                            Some(RelayedOutcome::Conflict) => vec![FieldError::new(
                                "/version",
                                "item.version_conflict",
                                "同一记录编号和版本号已存有不同内容",
                                "this record id and version are already stored with other content",
                            )],
                            _ => errors,
                        },
                    })
                    .collect(),
            };
            serde_json::to_string(&receipt::sign_receipt(&body, &signer.key, &signer.kid)).unwrap_or_default()
        };
        let stored = self
            .ingest
            .store
            .store_envelope(stored_env, Box::new(make_receipt))
            .await
            .map_err(|e| ServiceError::internal(&e))?;
        let receipt = match stored {
            EnvelopeStored::New { receipt } => {
                tracing::info!(sender = %h.sender, envelope_id = %h.envelope_id, items = h.count, "envelope stored");
                receipt
            }
            EnvelopeStored::Repeat { receipt } => receipt,
            EnvelopeStored::Replay => {
                tracing::warn!(sender = %h.sender, envelope_id = %h.envelope_id, "envelope id replayed with other content");
                return Err(ServiceError::new(
                    ErrorKind::Conflict,
                    "replay",
                    format!("信封编号 {} 已被该发送方用于另一信封（重放）", h.envelope_id),
                    format!(
                        "envelope id {} was already used by this sender for another envelope (replay)",
                        h.envelope_id
                    ),
                ));
            }
        };
        Ok(receipt)
    }
}

fn status(o: Option<RelayedOutcome>) -> &'static str {
    match o {
        Some(RelayedOutcome::Accepted) => "accepted",
        Some(RelayedOutcome::NewVersion) => "new_version",
        Some(RelayedOutcome::Duplicate) => "duplicate",
        Some(RelayedOutcome::Conflict) | None => "rejected",
    }
}

/// Everything a receiving node does with an envelope body before it stores anything: parsing,
/// the sender against the TLS peer `peer`, opening it, validating every item. Returns how many
/// items the envelope carries and how many of them were rejected. For the parser fuzz target
/// (`fuzz/`), which holds that any body is either checked or refused with a 4xx.
#[doc(hidden)]
pub fn check_received_body(
    gw: &Ingest,
    peer: &str,
    body: &[u8],
    at: &Receiving<'_>,
    today: time::Date,
) -> Result<(usize, usize), ServiceError> {
    let checked = open_and_check(gw, peer, body, at, today)?;
    Ok((checked.items.len(), checked.items.iter().filter(|i| i.is_err()).count()))
}

/// A received envelope whose signature, addressing and Merkle root hold, with each item
/// validated (`Err` = rejected with these field errors).
struct CheckedEnvelope {
    envelope: Jws,
    header: envelope::EnvelopeHeader,
    digest: Sha256Digest,
    item_hashes: Vec<Sha256Digest>,
    items: Vec<Result<RelayedItem, Vec<FieldError>>>,
}

/// Parses an envelope body, checks it is the TLS peer's, opens it (signature, addressing,
/// clock, Merkle root, origin proofs, subtree) and validates every item like a pushed record.
fn open_and_check(
    gw: &Ingest,
    peer: &str,
    body: &[u8],
    at: &Receiving<'_>,
    today: time::Date,
) -> Result<CheckedEnvelope, ServiceError> {
    let wire: WireEnvelope<'_> = serde_json::from_slice(body).map_err(|e| {
        ServiceError::bad_request(
            "bad_envelope",
            format!("信封结构错误：{e}"),
            format!("the envelope does not match the schema: {e}"),
        )
    })?;
    // The claimed sender must be the TLS-authenticated peer: checked first, before any other
    // work, so one member can never submit in another's name.
    let claimed = wire.envelope.decode(envelope::ENVELOPE_TYP).map_err(|e| envelope_error(&EnvelopeError::Form(e)))?;
    let claimed = claimed.body.get("sender").and_then(Value::as_str).unwrap_or_default().to_owned();
    if claimed != peer {
        tracing::warn!(peer, sender = %claimed, "envelope sender is not the authenticated TLS peer");
        return Err(ServiceError::new(
            ErrorKind::Forbidden,
            "sender_not_peer",
            format!("信封发送方 {claimed} 与 TLS 认证的成员 {peer} 不一致"),
            format!("the envelope sender {claimed} is not the authenticated TLS peer {peer}"),
        ));
    }
    // The envelope's own signature, receiver, clock and count first: a refused envelope costs
    // no work on its items. (`open_owned` below checks them again with the items.)
    envelope::check_header(&wire.envelope, at, wire.items.len()).map_err(|e| envelope_error(&e))?;
    // Items are parsed strictly (no duplicate member names), hashed and validated on all
    // cores, each in one go: what validation makes of an item is kept, and its parsed content
    // is dropped at once (a thousand parsed items held until the envelope was opened made the
    // allocator take fresh memory for every envelope). Nothing is stored before the envelope
    // opens below; an envelope that does not open has only cost this work.
    let parsed: Result<Vec<(Value, Sha256Digest, Option<CheckedItem>)>, _> = wire
        .items
        .par_iter()
        .enumerate()
        .map(|(i, w)| {
            let mut item = parse_strict_str(w.item.get()).map_err(|e| (i, e))?;
            Ok(match item_fields(&item) {
                Some((origin, record_id, version, record_type)) => {
                    let content = canonical_string(&item["content"]);
                    let canonical = item_canonical(origin, record_id, version, record_type, &content);
                    let hash = Sha256Digest::of(canonical.as_bytes());
                    let checked = check_item(gw, &mut item, hash, content, today);
                    (item, hash, Some(checked))
                }
                // Not item-shaped: hashed as is; opening the envelope names the fault.
                None => {
                    let hash = canonical_hash(&item);
                    (item, hash, None)
                }
            })
        })
        .collect();
    let parsed = parsed.map_err(|(i, e)| {
        ServiceError::bad_request(
            "bad_envelope",
            format!("第 {i} 个条目不是合法 JSON：{e}"),
            format!("item {i} is not strict JSON: {e}"),
        )
        .with_pointer(format!("/items/{i}/item"))
    })?;
    let mut items = Vec::with_capacity(parsed.len());
    let mut hashes = Vec::with_capacity(parsed.len());
    let mut checked = Vec::with_capacity(parsed.len());
    let mut origin_refs = Vec::with_capacity(parsed.len());
    let mut origin_envelopes: HashMap<&str, OriginShared> = HashMap::new();
    // The origin envelope of the previous item: consecutive items mostly share one, and
    // comparing its text is cheaper than hashing it to look it up.
    let mut previous_origin: Option<(&str, OriginShared)> = None;
    for ((item, hash, checked_item), w) in parsed.into_iter().zip(wire.items) {
        if !w.proof.path.iter().all(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
            let i = items.len();
            return Err(ServiceError::bad_request(
                "bad_envelope",
                format!("第 {i} 个条目的证明路径不是 64 位小写十六进制哈希"),
                format!("item {i}'s proof path is not 64-character lower-case hex hashes"),
            )
            .with_pointer(format!("/items/{i}/proof/path")));
        }
        // The path itself is not kept: the root is recomputed from all the items here, and
        // any item's proof is rebuilt later from the stored item hashes.
        let proof = Proof { index: w.proof.index, size: w.proof.size, path: Vec::new() };
        let i = items.len();
        let bad_origin_proof = |e: serde_json::Error| {
            ServiceError::bad_request(
                "bad_envelope",
                format!("第 {i} 个条目的来源证明结构错误：{e}"),
                format!("item {i}'s origin_proof does not match the schema: {e}"),
            )
            .with_pointer(format!("/items/{i}/origin_proof"))
        };
        // Split without parsing, then parsed once per distinct origin envelope (every item it
        // carried repeats it) and once per item for the proof. Kept as received, in those two
        // parts: the envelope's JSON and digest shared by its items, and this item's proof.
        let (origin_proof, origin_ref) = match w.origin_proof {
            None => (None, None),
            Some(raw) => {
                let parts: OriginProofRaw<'_> = serde_json::from_str(raw.get()).map_err(bad_origin_proof)?;
                let key = parts.envelope.get();
                let (jws, digest, text) = match &previous_origin {
                    Some((previous, shared)) if *previous == key => shared,
                    _ => {
                        let shared = match origin_envelopes.entry(key) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                let jws: Jws = serde_json::from_str(key).map_err(bad_origin_proof)?;
                                let digest = jws.digest().to_hex();
                                e.insert((jws, digest, Arc::from(key)))
                            }
                        };
                        &previous_origin.insert((key, shared.clone())).1
                    }
                };
                let proof: Proof = serde_json::from_str(parts.proof.get()).map_err(bad_origin_proof)?;
                let origin_ref = OriginRef {
                    envelope_digest: digest.clone(),
                    envelope: Arc::clone(text),
                    proof: parts.proof.get().to_owned(),
                };
                (Some(OriginProof { envelope: jws.clone(), proof }), Some(origin_ref))
            }
        };
        items.push(WireItem { item, proof, origin_proof });
        hashes.push(hash);
        checked.push(checked_item);
        origin_refs.push(origin_ref);
    }
    let env = Envelope { envelope: wire.envelope, items };
    let opened = envelope::open_owned(env, at, &hashes).map_err(|e| envelope_error(&e))?;
    let envelope::Opened { envelope, header, digest, items } = opened;
    let item_hashes = items.iter().map(|o| o.item_hash).collect();
    let sender = header.sender.as_str();
    let items = items
        .into_iter()
        .zip(checked)
        .zip(origin_refs)
        .map(|((o, checked), origin_ref)| {
            // `None` for an item `item_fields` does not take: one not item-shaped, which opening
            // refuses, or one whose version is beyond `i64`, rejected here.
            let (record_id, version, incoming) = checked.unwrap_or_else(|| Err(not_an_item()))?;
            Ok(RelayedItem {
                leaf_index: i64::try_from(o.proof.index).unwrap_or(i64::MAX),
                // For a relay, the origin's own envelope and proof travel on with the record, as
                // received (`open_owned` has verified them).
                origin_proof: origin_ref.filter(|_| o.origin != sender),
                origin: o.origin,
                record_id,
                version,
                incoming,
            })
        })
        .collect();
    Ok(CheckedEnvelope { envelope, header, digest, item_hashes, items })
}

/// What validating an item's content made of it: its record id and version, and the record
/// ready to store; or why it is rejected.
type CheckedItem = Result<(Uuid, i64, Incoming), Vec<FieldError>>;

fn not_an_item() -> Vec<FieldError> {
    vec![FieldError::new(
        "",
        "item.shape",
        "条目必须是 {origin, record_id, version, record_type, content}",
        "an item must be {origin, record_id, version, record_type, content}",
    )]
}

/// Validates one item's content like a pushed record, and checks that the origin stored it
/// normalised (its hash must not change here, or signatures would break). `canonical_content`
/// is the content's canonical form the item hash `item_hash` was computed from. The item keeps
/// an empty object in place of its content: `open_owned` reads no more of it (its doc says so).
fn check_item(
    gw: &Ingest,
    item: &mut Value,
    item_hash: Sha256Digest,
    canonical_content: String,
    today: time::Date,
) -> CheckedItem {
    let err = |pointer: &str, rule: &str, zh: &str, en: &str| vec![FieldError::new(pointer, rule, zh, en)];
    let content = std::mem::replace(&mut item["content"], Value::Object(serde_json::Map::new()));
    let record_id = item["record_id"].as_str().filter(|s| is_uuid(s)).and_then(|s| Uuid::parse_str(s).ok());
    let Some(record_id) = record_id else {
        return Err(err("/record_id", "item.record_id", "记录编号必须是 UUID", "record_id must be a UUID"));
    };
    let version = item["version"].as_i64().unwrap_or(0);
    if content.get("record_type") != item.get("record_type") {
        return Err(err(
            "/record_type",
            "item.record_type",
            "条目类型与内容类型不一致",
            "record_type differs from the content's",
        ));
    }
    let hashed = canonical_content.clone();
    let valid = gw.validator.check_canonical(content, today, Some(canonical_content)).map_err(|errors| {
        errors.into_iter().map(|e| FieldError { pointer: format!("/content{}", e.pointer), ..e }).collect::<Vec<_>>()
    })?;
    // The origin must have sent normalised content: the item rebuilt from the normalised
    // content hashes to the very item hash that was signed. When validation kept the content
    // the item was hashed from, that holds by construction and is not computed again.
    let unchanged = hashed == valid.canonical_content;
    let rebuilt = || {
        let item = item_canonical(
            item["origin"].as_str().unwrap_or_default(),
            &record_id.to_string(),
            version,
            valid.record_type.as_str(),
            &valid.canonical_content,
        );
        Sha256Digest::of(item.as_bytes())
    };
    if !unchanged && rebuilt() != item_hash {
        return Err(err(
            "/content",
            "item.not_normalised",
            "内容未按规范化形式提交（标识符须先规范化）",
            "the content is not in normalised form (identifiers must be normalised at the origin)",
        ));
    }
    Ok((record_id, version, gw.incoming(valid)))
}

/// An item's `(origin, record_id, version, record_type)` when it has exactly the five members
/// of interchange-v1 §2 with their types, so that `item_canonical` reproduces its JCS form.
fn item_fields(item: &Value) -> Option<(&str, &str, i64, &str)> {
    let o = item.as_object()?;
    if o.len() != 5 || !o.get("content")?.is_object() {
        return None;
    }
    let version = o.get("version")?;
    // `1.0` is an f64 in serde_json; only a plain integer spells the same in JCS.
    let version = if version.is_i64() { version.as_i64() } else { None }?;
    Some((o.get("origin")?.as_str()?, o.get("record_id")?.as_str()?, version, o.get("record_type")?.as_str()?))
}

/// Maps an envelope refusal to the API error a peer sees.
fn envelope_error(e: &EnvelopeError) -> ServiceError {
    tracing::warn!(error = %e, "envelope refused");
    let (status, code) = match e {
        EnvelopeError::Key(_) | EnvelopeError::BadSignature | EnvelopeError::UnknownSender { .. } => {
            (ErrorKind::Forbidden, "bad_signature")
        }
        EnvelopeError::WrongReceiver { .. } => (ErrorKind::BadRequest, "wrong_receiver"),
        EnvelopeError::OutsideClockWindow { .. } => (ErrorKind::BadRequest, "clock_window"),
        EnvelopeError::Item { .. } => (ErrorKind::Forbidden, "item_refused"),
        EnvelopeError::Form(_)
        | EnvelopeError::Header(_)
        | EnvelopeError::CountMismatch { .. }
        | EnvelopeError::MerkleMismatch => (ErrorKind::BadRequest, "bad_envelope"),
    };
    ServiceError::new(status, code, format!("信封被拒绝：{e}"), format!("envelope refused: {e}"))
}
