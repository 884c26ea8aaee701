//! Evidence bundles (interchange-v1 §8): everything needed to show, offline, that an item left
//! its origin signed and was received and acknowledged at every hop. The bundle is plain JSON;
//! everything in it is signed: the registry by a federation root, envelopes by their senders,
//! receipts by their receivers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::envelope::{self, EnvelopeError, EnvelopeHeader, Proof};
use super::receipt::{self, ReceiptError};
use super::registry::{MemberKey, Registry, RegistryError, RootKey};
use crate::canonical::{Sha256Digest, canonical_hash, parse_strict};
use crate::jws::Jws;

pub const EVIDENCE_TYP: &str = "credit-gateway/evidence+v1";

/// An evidence bundle (a wire type; schema `schemas/interchange/evidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub typ: String,
    pub item: Value,
    /// Origin envelope first, then each later hop in order.
    pub hops: Vec<Hop>,
    pub registry: Jws,
    pub keys: Vec<BundleKey>,
}

/// One transfer of the item: the envelope, the item's place in it, the receiver's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    pub envelope: Jws,
    pub proof: Proof,
    pub receipt: Jws,
}

/// A signing key as §8 lists it (the registry's entry without `sm2_id`, see ADR 0001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleKey {
    pub kid: String,
    pub alg: String,
    pub public_key: String,
    pub valid_from: String,
    pub valid_to: String,
}

impl From<&MemberKey> for BundleKey {
    fn from(k: &MemberKey) -> Self {
        BundleKey {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            public_key: k.public_key.clone(),
            valid_from: k.valid_from.clone(),
            valid_to: k.valid_to.clone(),
        }
    }
}

impl Bundle {
    /// Puts a bundle together, listing the registry's entry for every key that signed one of
    /// the hops' envelopes or receipts. Fails if a signer is not in `registry`.
    pub fn assemble(item: Value, hops: Vec<Hop>, registry: &Registry) -> Result<Bundle, String> {
        let mut keys: Vec<BundleKey> = Vec::new();
        for hop in &hops {
            for jws in [&hop.envelope, &hop.receipt] {
                let kid = jws.unverified_kid().ok_or("a hop's JWS has no readable protected header")?;
                let key = registry
                    .key(&kid)
                    .ok_or_else(|| format!("key {kid} is not in registry {}", registry.body.version))?;
                if !keys.iter().any(|k| k.kid == kid) {
                    keys.push(key.into());
                }
            }
        }
        Ok(Bundle { typ: EVIDENCE_TYP.into(), item, hops, registry: registry.jws.clone(), keys })
    }
}

/// What a verified hop showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHop {
    pub sender: String,
    pub receiver: String,
    pub envelope_id: String,
    pub created_at: String,
    pub received_at: String,
    /// The receiver's outcome for the item: `accepted`, `duplicate` or `new_version`.
    pub status: String,
}

/// A bundle whose every signature and link holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub item_hash: Sha256Digest,
    pub origin: String,
    pub record_id: String,
    pub version: u64,
    pub registry_version: u64,
    pub hops: Vec<VerifiedHop>,
}

/// The first thing that failed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("the bundle is not strict JSON: {0}")]
    Json(String),
    #[error("the bundle does not match the evidence schema: {0}")]
    Form(String),
    #[error("/registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("/keys/{index} ({kid}): {reason}")]
    Key { index: usize, kid: String, reason: String },
    #[error("/hops/{index}: {failure}")]
    Hop { index: usize, failure: HopFailure },
}

/// Why one hop failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopFailure {
    #[error("envelope: {0}")]
    Envelope(EnvelopeError),
    #[error("{what} is signed with {kid}, which is not among the bundle's keys")]
    KeyNotInBundle { what: &'static str, kid: String },
    #[error("the proof does not place the item under the envelope's Merkle root")]
    Proof,
    #[error("the origin envelope is sent by {sender}, not by the item's origin {origin}")]
    NotFromOrigin { sender: String, origin: String },
    #[error("sent by {sender}, but the previous hop was received by {previous}: the hops do not chain")]
    Broken { sender: String, previous: String },
    #[error("receipt: {0}")]
    Receipt(ReceiptError),
    #[error("the receipt does not answer this envelope: {0}")]
    ReceiptMismatch(String),
    #[error("the receiver's outcome for the item is {status:?}, not accepted, duplicate or new_version")]
    NotAccepted { status: String },
}

/// Verifies a bundle offline against the federation roots the verifier trusts. Registry expiry
/// is not held against it: evidence is judged by the key windows at the times it was signed.
pub fn verify(bytes: &[u8], trusted: &[RootKey]) -> Result<Verified, EvidenceError> {
    let value = parse_strict(bytes).map_err(|e| EvidenceError::Json(e.to_string()))?;
    let bundle: Bundle = serde_json::from_value(value).map_err(|e| EvidenceError::Form(e.to_string()))?;
    if bundle.typ != EVIDENCE_TYP {
        return Err(EvidenceError::Form(format!("typ is {:?}, expected {EVIDENCE_TYP:?}", bundle.typ)));
    }
    if bundle.hops.is_empty() {
        return Err(EvidenceError::Form("hops is empty: the origin envelope is required".into()));
    }
    envelope::check_item_shape(&bundle.item).map_err(|e| EvidenceError::Form(format!("/item: {e}")))?;
    let item = &bundle.item;
    let item_hash = canonical_hash(item);
    let origin = item["origin"].as_str().unwrap_or_default().to_owned();

    let registry = Registry::verify_signed(&bundle.registry, trusted)?;
    for (index, k) in bundle.keys.iter().enumerate() {
        let bad = |reason: String| EvidenceError::Key { index, kid: k.kid.clone(), reason };
        let listed = registry.key(&k.kid).ok_or_else(|| bad(format!("not in registry {}", registry.body.version)))?;
        if BundleKey::from(listed) != *k {
            return Err(bad("differs from the registry's entry for this key".into()));
        }
    }
    let in_bundle = |kid: &str| bundle.keys.iter().any(|k| k.kid == kid);

    let mut hops = Vec::with_capacity(bundle.hops.len());
    let mut previous_receiver: Option<String> = None;
    for (index, hop) in bundle.hops.iter().enumerate() {
        let fail = |failure: HopFailure| EvidenceError::Hop { index, failure };
        let kid = hop.envelope.unverified_kid().unwrap_or_default();
        let (header, digest) =
            envelope::verify_header(&hop.envelope, &registry).map_err(|e| fail(HopFailure::Envelope(e)))?;
        if !in_bundle(&kid) {
            return Err(fail(HopFailure::KeyNotInBundle { what: "the envelope", kid }));
        }
        if !envelope::verify_proof(&hop.proof, &item_hash, &header) {
            return Err(fail(HopFailure::Proof));
        }
        match &previous_receiver {
            None if header.sender != origin => {
                return Err(fail(HopFailure::NotFromOrigin { sender: header.sender, origin }));
            }
            Some(previous) if *previous != header.sender => {
                return Err(fail(HopFailure::Broken { sender: header.sender, previous: previous.clone() }));
            }
            _ => {}
        }
        let (status, received_at) =
            check_receipt(hop, &header, &digest, &item_hash, &registry, &in_bundle).map_err(fail)?;
        previous_receiver = Some(header.receiver.clone());
        hops.push(VerifiedHop {
            sender: header.sender,
            receiver: header.receiver,
            envelope_id: header.envelope_id,
            created_at: header.created_at,
            received_at,
            status,
        });
    }
    Ok(Verified {
        item_hash,
        origin,
        record_id: item["record_id"].as_str().unwrap_or_default().to_owned(),
        version: item["version"].as_u64().unwrap_or_default(),
        registry_version: registry.body.version,
        hops,
    })
}

/// The receipt of one hop: signed by the hop's receiver with a key in the bundle, answering
/// this envelope, with an accepting outcome for the item at its proof's index. Returns the
/// outcome's status and the receipt's `received_at`.
fn check_receipt(
    hop: &Hop,
    header: &EnvelopeHeader,
    digest: &Sha256Digest,
    item_hash: &Sha256Digest,
    registry: &Registry,
    in_bundle: &dyn Fn(&str) -> bool,
) -> Result<(String, String), HopFailure> {
    let (body, kid) =
        receipt::verify_receipt_signature(&hop.receipt, &header.receiver, registry).map_err(HopFailure::Receipt)?;
    if !in_bundle(&kid) {
        return Err(HopFailure::KeyNotInBundle { what: "the receipt", kid });
    }
    let mismatch = |m: String| Err(HopFailure::ReceiptMismatch(m));
    if body.envelope_digest != digest.to_hex() || body.envelope_id != header.envelope_id {
        return mismatch("envelope id or digest differs".into());
    }
    if body.sender != header.sender || body.receiver != header.receiver {
        return mismatch("sender or receiver differs".into());
    }
    if body.outcomes.len() as u64 != header.count {
        return mismatch(format!("{} outcomes for {} items", body.outcomes.len(), header.count));
    }
    let outcome = usize::try_from(hop.proof.index).ok().and_then(|i| body.outcomes.get(i));
    match outcome {
        Some(o) if o.index == hop.proof.index && o.item_hash == item_hash.to_hex() => {
            if matches!(o.status.as_str(), "accepted" | "duplicate" | "new_version") {
                Ok((o.status.clone(), body.received_at.clone()))
            } else {
                Err(HopFailure::NotAccepted { status: o.status.clone() })
            }
        }
        _ => mismatch(format!("outcome {} does not name the item", hop.proof.index)),
    }
}
