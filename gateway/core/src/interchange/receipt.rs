//! Receipts (interchange-v1 §6): the receiver's signed statement of what it did with each
//! item, given only after the items are committed. The sender verifies and keeps it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse_time;
use super::registry::{KeyError, Registry};
use crate::canonical::Sha256Digest;
use crate::crypto::SigningKey;
use crate::jws::{self, Jws, JwsError};
use crate::record::FieldError;

pub const RECEIPT_TYP: &str = "credit-gateway/receipt+v1";

/// The receipt body (a wire type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub envelope_id: String,
    pub envelope_digest: String,
    pub sender: String,
    pub receiver: String,
    pub received_at: String,
    pub outcomes: Vec<ReceiptOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptOutcome {
    pub index: u64,
    pub item_hash: String,
    /// `accepted`, `duplicate`, `new_version` or `rejected`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Signs a receipt as the receiver.
pub fn sign_receipt(body: &ReceiptBody, key: &SigningKey, kid: &str) -> Jws {
    let value = serde_json::to_value(body).unwrap_or(Value::Null);
    jws::sign(RECEIPT_TYP, kid, &value, key)
}

/// Why a sender refuses a receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt JWS: {0}")]
    Form(#[from] JwsError),
    #[error("receipt body does not match the schema: {0}")]
    Body(String),
    #[error("receipt signing key: {0}")]
    Key(#[from] KeyError),
    #[error("receipt signature does not verify")]
    BadSignature,
    #[error("receipt does not answer this envelope: {0}")]
    Mismatch(String),
}

/// What the sender remembers of the envelope it sent.
#[derive(Debug, Clone)]
pub struct Sent<'a> {
    pub envelope_id: &'a str,
    pub digest: Sha256Digest,
    pub sender: &'a str,
    pub receiver: &'a str,
    pub item_hashes: &'a [Sha256Digest],
}

/// Verifies a receipt against what was sent: the receiver's signature, the digest, and one
/// outcome per item with the right item hash.
pub fn verify_receipt(jws: &Jws, sent: &Sent<'_>, registry: &Registry) -> Result<ReceiptBody, ReceiptError> {
    let (body, _) = verify_receipt_signature(jws, sent.receiver, registry)?;
    let mismatch = |m: String| Err(ReceiptError::Mismatch(m));
    if body.envelope_id != sent.envelope_id || body.envelope_digest != sent.digest.to_hex() {
        return mismatch("envelope id or digest differs".into());
    }
    if body.sender != sent.sender || body.receiver != sent.receiver {
        return mismatch("sender or receiver differs".into());
    }
    if body.outcomes.len() != sent.item_hashes.len() {
        return mismatch(format!("{} outcomes for {} items", body.outcomes.len(), sent.item_hashes.len()));
    }
    for (i, (o, h)) in body.outcomes.iter().zip(sent.item_hashes).enumerate() {
        if o.index != i as u64 || o.item_hash != h.to_hex() {
            return mismatch(format!("outcome {i} names another item"));
        }
        if !matches!(o.status.as_str(), "accepted" | "duplicate" | "new_version" | "rejected") {
            return mismatch(format!("outcome {i} has unknown status {:?}", o.status));
        }
    }
    Ok(body)
}

/// Verifies a receipt's signature by `receiver`'s key valid at its `received_at`. Returns the
/// body and the key id that signed it; what it answers is for the caller to compare.
pub fn verify_receipt_signature(
    jws: &Jws,
    receiver: &str,
    registry: &Registry,
) -> Result<(ReceiptBody, String), ReceiptError> {
    let decoded = jws.decode(RECEIPT_TYP)?;
    let body: ReceiptBody =
        serde_json::from_value(decoded.body.clone()).map_err(|e| ReceiptError::Body(e.to_string()))?;
    let at = parse_time(&body.received_at).ok_or_else(|| ReceiptError::Body("received_at".into()))?;
    let key = registry.signing_key(&decoded.header.kid, receiver, at)?;
    decoded.verify(&key).map_err(|_| ReceiptError::BadSignature)?;
    Ok((body, decoded.header.kid))
}
