//! Envelopes (interchange-v1 §5): one signature over a canonical header whose Merkle root
//! covers every item; each item carries its inclusion proof and, when relayed, the origin
//! node's own envelope and proof, so the origin signature stays verifiable at every hop.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::registry::{KeyError, Registry};
use super::{format_time, parse_time};
use crate::canonical::{Sha256Digest, canonical_hash};
use crate::crypto::SigningKey;
use crate::jws::{self, Jws, JwsError};
use crate::merkle;

pub const ENVELOPE_TYP: &str = "credit-gateway/envelope+v1";

/// The signed envelope header (a wire type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeHeader {
    pub envelope_id: String,
    pub sender: String,
    pub receiver: String,
    pub seq: u64,
    pub created_at: String,
    pub count: u64,
    pub merkle_root: String,
    pub hash_alg: String,
}

/// An inclusion proof: RFC 9162 audit path, leaf upwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub index: u64,
    pub size: u64,
    pub path: Vec<String>,
}

/// The origin node's envelope and the item's place in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginProof {
    pub envelope: Jws,
    pub proof: Proof,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireItem {
    pub item: Value,
    pub proof: Proof,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_proof: Option<OriginProof>,
}

/// An envelope as it travels (the HTTP body of `POST /federation/v1/envelopes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub envelope: Jws,
    pub items: Vec<WireItem>,
}

/// What the sender puts in an envelope.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `{"origin","record_id","version","record_type","content"}`.
    pub item: Value,
    /// Present when this node is not the item's origin.
    pub origin_proof: Option<OriginProof>,
}

/// Header fields chosen by the sender.
#[derive(Debug, Clone)]
pub struct Addressing<'a> {
    pub envelope_id: &'a str,
    pub sender: &'a str,
    pub receiver: &'a str,
    pub seq: u64,
    pub created_at: OffsetDateTime,
}

/// Builds and signs an envelope. `kid` names `key` in the registry.
pub fn seal(to: &Addressing<'_>, items: Vec<Outgoing>, key: &SigningKey, kid: &str) -> Envelope {
    let hashes: Vec<Sha256Digest> = items.iter().map(|o| canonical_hash(&o.item)).collect();
    seal_hashed(to, items, &hashes, key, kid)
}

/// [`seal`] with the item hashes already computed (the sender keeps them to check the receipt).
pub fn seal_hashed(
    to: &Addressing<'_>,
    items: Vec<Outgoing>,
    item_hashes: &[Sha256Digest],
    key: &SigningKey,
    kid: &str,
) -> Envelope {
    let (envelope, proofs) = sign_header(to, item_hashes, key, kid);
    let size = items.len() as u64;
    let items = items
        .into_iter()
        .zip(proofs)
        .enumerate()
        .map(|(i, (o, path))| WireItem {
            item: o.item,
            proof: Proof { index: i as u64, size, path: path.iter().map(Sha256Digest::to_hex).collect() },
            origin_proof: o.origin_proof,
        })
        .collect();
    Envelope { envelope, items }
}

/// The signed envelope header over `item_hashes`, and every item's audit path.
fn sign_header(
    to: &Addressing<'_>,
    item_hashes: &[Sha256Digest],
    key: &SigningKey,
    kid: &str,
) -> (Jws, Vec<Vec<Sha256Digest>>) {
    let leaves: Vec<Sha256Digest> = item_hashes.iter().map(|h| merkle::leaf_hash(&h.0)).collect();
    let (root, proofs) = merkle::root_and_proofs(&leaves);
    let header = json!({
        "envelope_id": to.envelope_id, "sender": to.sender, "receiver": to.receiver, "seq": to.seq,
        "created_at": format_time(to.created_at), "count": item_hashes.len() as u64,
        "merkle_root": root.to_hex(), "hash_alg": "sha-256",
    });
    (jws::sign(ENVELOPE_TYP, kid, &header, key), proofs)
}

/// [`seal_hashed`] straight to the wire form (the HTTP body), for items already held as JSON
/// text: `items[i]` is the RFC 8785 text of item `i` (whose SHA-256 is `item_hashes[i]`) and
/// `origin_proofs[i]` the JSON of its [`OriginProof`], if any. No item is parsed or rebuilt,
/// which is most of a relay's cost otherwise. Returns the signed envelope JWS and the body.
pub fn seal_text<P: AsRef<str>>(
    to: &Addressing<'_>,
    items: &[String],
    origin_proofs: &[Option<P>],
    item_hashes: &[Sha256Digest],
    key: &SigningKey,
    kid: &str,
) -> (Jws, Vec<u8>) {
    let (jws, proofs) = sign_header(to, item_hashes, key, kid);
    let size = items.len() as u64;
    // Sized once: a relayed envelope is megabytes, and growing it by doubling copied it again.
    let items_len: usize = items.iter().map(String::len).sum();
    let origin_len: usize = origin_proofs.iter().flatten().map(|p| p.as_ref().len() + 16).sum();
    let paths_len: usize = proofs.iter().map(|p| p.len() * 67 + 64).sum();
    let mut body = Vec::with_capacity(items_len + origin_len + paths_len + items.len() * 16 + 1024);
    body.extend_from_slice(b"{\"envelope\":");
    body.extend_from_slice(serde_json::to_string(&jws).unwrap_or_default().as_bytes());
    body.extend_from_slice(b",\"items\":[");
    for (i, (item, path)) in items.iter().zip(&proofs).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"item\":");
        body.extend_from_slice(item.as_bytes());
        body.extend_from_slice(b",\"proof\":");
        write_proof(&mut body, i as u64, size, path);
        if let Some(Some(p)) = origin_proofs.get(i) {
            body.extend_from_slice(b",\"origin_proof\":");
            body.extend_from_slice(p.as_ref().as_bytes());
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    (jws, body)
}

/// Appends the JSON of [`Proof`] `{index, size, path}` with `path`'s digests as hex, exactly as
/// serde writes it, without building the struct's strings (a relay writes one per record).
pub fn write_proof(out: &mut Vec<u8>, index: u64, size: u64, path: &[Sha256Digest]) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{{\"index\":{index},\"size\":{size},\"path\":[");
    let mut hex = [0u8; 64];
    for (j, h) in path.iter().enumerate() {
        if j > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(h.write_hex(&mut hex));
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
}

/// Why an envelope was refused. Each names what failed; none is retryable by resending the
/// same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope JWS: {0}")]
    Form(#[from] JwsError),
    #[error("envelope header does not match the schema: {0}")]
    Header(String),
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("envelope signature does not verify")]
    BadSignature,
    #[error("envelope is addressed to {receiver}, not to this node ({me})")]
    WrongReceiver { receiver: String, me: String },
    #[error("sender {sender} is not a registered member")]
    UnknownSender { sender: String },
    #[error("envelope created at {created_at} is outside the accepted clock window")]
    OutsideClockWindow { created_at: String },
    #[error("count {count} does not match the {items} items")]
    CountMismatch { count: u64, items: usize },
    #[error("item {index}: {reason}")]
    Item { index: usize, reason: String },
    #[error("items do not hash to the signed Merkle root")]
    MerkleMismatch,
}

/// One item that passed every interchange check (its record content is still to be validated).
#[derive(Debug, Clone)]
pub struct OpenedItem {
    pub item: Value,
    pub item_hash: Sha256Digest,
    pub origin: String,
    /// Its proof in this envelope.
    pub proof: Proof,
    /// For a relayed item, the origin's envelope and proof (already verified); `None` when
    /// this envelope's sender is the origin. See [`Opened::origin_proof`].
    pub origin_proof: Option<OriginProof>,
}

/// An envelope whose signature, addressing, Merkle tree and origin proofs hold.
#[derive(Debug, Clone)]
pub struct Opened {
    pub envelope: Jws,
    pub header: EnvelopeHeader,
    pub digest: Sha256Digest,
    pub items: Vec<OpenedItem>,
}

impl Opened {
    /// What proves item `i` came from its origin: the relayed origin proof, or this envelope
    /// and the item's proof in it when the sender is the origin.
    pub fn origin_proof(&self, i: usize) -> OriginProof {
        let item = &self.items[i];
        item.origin_proof
            .clone()
            .unwrap_or_else(|| OriginProof { envelope: self.envelope.clone(), proof: item.proof.clone() })
    }
}

/// What the receiver knows when it opens an envelope.
#[derive(Debug, Clone, Copy)]
pub struct Receiving<'a> {
    pub registry: &'a Registry,
    pub me: &'a str,
    pub now: OffsetDateTime,
    /// How far `created_at` may be from `now`, either way.
    pub clock_window: Duration,
}

/// Verifies an envelope for its receiver, each item's proof path included: every
/// [`OpenedItem::proof`] places its item under the signed root, so [`Opened::origin_proof`]
/// can be handed on. Replay (a seen `envelope_id`) is for the caller to check against its
/// store, with `Opened::header`.
pub fn open(env: &Envelope, at: &Receiving<'_>) -> Result<Opened, EnvelopeError> {
    let hashes: Vec<Sha256Digest> = env.items.iter().map(|w| canonical_hash(&w.item)).collect();
    let opened = open_owned(env.clone(), at, &hashes)?;
    // open_owned checks the root from all the items; a path the sender wrote could still lead
    // elsewhere (found by the envelope fuzz target).
    for (index, item) in opened.items.iter().enumerate() {
        if !verify_proof(&item.proof, &item.item_hash, &opened.header) {
            return Err(EnvelopeError::Item {
                index,
                reason: "its proof path does not lead to the signed Merkle root".into(),
            });
        }
    }
    Ok(opened)
}

/// [`open`] taking the envelope by value (its items move into the result, no copies) with the
/// item hashes (`SHA-256(JCS(item))`, in order) already computed, e.g. in parallel by the
/// caller. A wrong hash only makes the envelope fail. The Merkle root is recomputed from all the
/// items; each item's proof path is *not* checked (only its index and size), so a caller that
/// keeps or forwards [`OpenedItem::proof`] must rebuild it from the item hashes (the node does:
/// `merkle::audit_path`) or use [`open`].
///
/// Of each item it reads the five members' shape and `origin`, never the content beyond its
/// being an object: a caller that has already validated the content may pass `{}` in its place.
pub fn open_owned(env: Envelope, at: &Receiving<'_>, item_hashes: &[Sha256Digest]) -> Result<Opened, EnvelopeError> {
    if item_hashes.len() != env.items.len() {
        return Err(EnvelopeError::CountMismatch { count: item_hashes.len() as u64, items: env.items.len() });
    }
    let header = check_header(&env.envelope, at, env.items.len())?;
    let mut leaves = Vec::with_capacity(env.items.len());
    let mut items = Vec::with_capacity(env.items.len());
    let digest = env.envelope.digest();
    // Relayed items that came in one origin envelope share its signature: it is verified once
    // per distinct origin envelope, and each item's Merkle proof against it. The key includes
    // the signature (the digest covers only header and payload), so a forged copy is verified
    // on its own and fails.
    let mut origin_headers: std::collections::HashMap<(Sha256Digest, String), EnvelopeHeader> =
        std::collections::HashMap::new();
    // Items of one origin envelope mostly come one after another: an item whose origin envelope
    // equals the previous item's takes its verified header without hashing the envelope again
    // (a comparison of its text, where the key above costs a SHA-256 of it per item).
    let mut previous: Option<(Jws, EnvelopeHeader)> = None;
    for (index, w) in env.items.into_iter().enumerate() {
        let bad = |reason: String| EnvelopeError::Item { index, reason };
        let item_hash = item_hashes[index];
        let origin =
            w.item.get("origin").and_then(Value::as_str).ok_or_else(|| bad("item has no origin".into()))?.to_owned();
        check_item_shape(&w.item).map_err(bad)?;
        if w.proof.index != index as u64 || w.proof.size != header.count {
            return Err(bad("proof index or size does not match its place in the envelope".into()));
        }
        match (&w.origin_proof, origin == header.sender) {
            (None, true) => {}
            (Some(_), true) => return Err(bad("origin_proof given although the sender is the origin".into())),
            (None, false) => return Err(bad(format!("relayed item from {origin} lacks its origin_proof"))),
            (Some(p), false) => {
                let header = match &previous {
                    Some((jws, header)) if *jws == p.envelope => header,
                    _ => {
                        let header = match origin_headers.entry((p.envelope.digest(), p.envelope.signature.clone())) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(verify_header(&p.envelope, at.registry).map_err(|e| bad(e.to_string()))?.0)
                            }
                        };
                        &previous.insert((p.envelope.clone(), header.clone())).1
                    }
                };
                check_origin_proof(p, header, &origin, &item_hash).map_err(|e| bad(e.to_string()))?
            }
        }
        if !at.registry.may_forward(&header.sender, &origin, &header.receiver) {
            return Err(bad(format!(
                "{} may not forward records of {origin} to {}: outside its subtree",
                header.sender, header.receiver
            )));
        }
        leaves.push(merkle::leaf_hash(&item_hash.0));
        items.push(OpenedItem { item: w.item, item_hash, origin, proof: w.proof, origin_proof: w.origin_proof });
    }
    if merkle::root(&leaves).to_hex() != header.merkle_root {
        return Err(EnvelopeError::MerkleMismatch);
    }
    Ok(Opened { envelope: env.envelope, digest, header, items })
}

/// What [`open_owned`] checks of an envelope before its items, for a receiver that wants to
/// refuse a bad envelope before working on `items` items: the signature, the receiver, the
/// clock window and the item count.
pub fn check_header(envelope: &Jws, at: &Receiving<'_>, items: usize) -> Result<EnvelopeHeader, EnvelopeError> {
    let (header, _) = verify_header(envelope, at.registry)?;
    if header.receiver != at.me {
        return Err(EnvelopeError::WrongReceiver { receiver: header.receiver, me: at.me.to_owned() });
    }
    let created = parse_time(&header.created_at).ok_or_else(|| EnvelopeError::Header("created_at".into()))?;
    if (created - at.now).abs() > at.clock_window {
        return Err(EnvelopeError::OutsideClockWindow { created_at: header.created_at });
    }
    if header.count != items as u64 {
        return Err(EnvelopeError::CountMismatch { count: header.count, items });
    }
    Ok(header)
}

/// Verifies an envelope JWS's signature against the sender's key valid at its `created_at`.
pub fn verify_header(envelope: &Jws, registry: &Registry) -> Result<(EnvelopeHeader, Sha256Digest), EnvelopeError> {
    let decoded = envelope.decode(ENVELOPE_TYP)?;
    let header: EnvelopeHeader =
        serde_json::from_value(decoded.body.clone()).map_err(|e| EnvelopeError::Header(e.to_string()))?;
    if !super::is_uuid(&header.envelope_id) || header.hash_alg != "sha-256" {
        return Err(EnvelopeError::Header("envelope_id must be a UUID and hash_alg sha-256".into()));
    }
    if registry.member(&header.sender).is_none() {
        return Err(EnvelopeError::UnknownSender { sender: header.sender });
    }
    let created = parse_time(&header.created_at).ok_or_else(|| EnvelopeError::Header("created_at".into()))?;
    let key = registry.signing_key(&decoded.header.kid, &header.sender, created)?;
    decoded.verify(&key).map_err(|_| EnvelopeError::BadSignature)?;
    Ok((header, envelope.digest()))
}

/// Whether `proof` shows `item_hash` inside an envelope signed by `origin`.
pub fn verify_origin_proof(
    p: &OriginProof,
    origin: &str,
    item_hash: &Sha256Digest,
    registry: &Registry,
) -> Result<(), EnvelopeError> {
    let (header, _) = verify_header(&p.envelope, registry)?;
    check_origin_proof(p, &header, origin, item_hash)
}

/// [`verify_origin_proof`] once the origin envelope's signature has verified (`header`).
fn check_origin_proof(
    p: &OriginProof,
    header: &EnvelopeHeader,
    origin: &str,
    item_hash: &Sha256Digest,
) -> Result<(), EnvelopeError> {
    if header.sender != origin {
        return Err(EnvelopeError::Header(format!("origin envelope was sent by {}, not by {origin}", header.sender)));
    }
    if !verify_proof(&p.proof, item_hash, header) {
        return Err(EnvelopeError::MerkleMismatch);
    }
    Ok(())
}

/// Whether `proof` places `item_hash` under the header's Merkle root.
pub fn verify_proof(proof: &Proof, item_hash: &Sha256Digest, header: &EnvelopeHeader) -> bool {
    let path: Option<Vec<Sha256Digest>> = proof.path.iter().map(|h| Sha256Digest::from_hex(h)).collect();
    let root = Sha256Digest::from_hex(&header.merkle_root);
    match (path, root) {
        (Some(path), Some(root)) => {
            proof.size == header.count
                && merkle::verify_inclusion(&merkle::leaf_hash(&item_hash.0), proof.index, proof.size, &path, &root)
        }
        _ => false,
    }
}

/// The five members of an item (§2), with their basic types.
pub(crate) fn check_item_shape(item: &Value) -> Result<(), String> {
    let Value::Object(o) = item else { return Err("item is not an object".into()) };
    let ok = o.len() == 5
        && o.get("origin").and_then(Value::as_str).is_some_and(super::is_member_id)
        && o.get("record_id").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        && o.get("version").and_then(Value::as_u64).is_some_and(|v| v >= 1)
        && o.get("record_type").and_then(Value::as_str).is_some()
        && o.get("content").is_some_and(Value::is_object);
    if ok { Ok(()) } else { Err("item must be {origin, record_id, version ≥ 1, record_type, content}".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_proof_is_the_serde_form_of_the_proof() {
        let path = [Sha256Digest::of(b"a"), Sha256Digest::of(b"b")];
        for path in [&path[..], &[]] {
            let mut written = Vec::new();
            write_proof(&mut written, 3, 1000, path);
            let proof = Proof { index: 3, size: 1000, path: path.iter().map(Sha256Digest::to_hex).collect() };
            assert_eq!(String::from_utf8(written).expect("utf-8"), serde_json::to_string(&proof).expect("json"));
        }
    }
}
