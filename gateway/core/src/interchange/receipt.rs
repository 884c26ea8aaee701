//! Receipts (interchange-v1 §6): the receiver's signed statement of what it did with each
//! item, given only after the items are committed. The sender verifies and keeps it.

use serde::{Deserialize, Serialize};

use super::parse_time;
use super::registry::{KeyError, Registry};
use crate::canonical::{Sha256Digest, push_json_string};
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
    jws::sign_canonical(RECEIPT_TYP, kid, &canonical_receipt(body), key)
}

/// The receipt JWS whose body is `body` and whose protected header and signature are given:
/// rebuilds a stored receipt exactly, since the body's canonical form is deterministic.
pub fn assemble(body: &ReceiptBody, protected: &str, signature: &str) -> Jws {
    Jws {
        protected: protected.to_owned(),
        payload: crate::jws::b64u(canonical_receipt(body).as_bytes()),
        signature: signature.to_owned(),
    }
}

/// JCS of a receipt body, written directly: receipts carry one outcome per item and are signed
/// inside the receiver's write transaction, where building a JSON tree first cost measurably.
/// Keys in RFC 8785 order; a test checks it against the general writer.
fn canonical_receipt(body: &ReceiptBody) -> String {
    let mut out = String::with_capacity(128 + body.outcomes.len() * 110);
    let field = |out: &mut String, key: &str, value: &str| {
        push_json_string(key, out);
        out.push(':');
        push_json_string(value, out);
    };
    out.push('{');
    field(&mut out, "envelope_digest", &body.envelope_digest);
    out.push(',');
    field(&mut out, "envelope_id", &body.envelope_id);
    out.push_str(",\"outcomes\":[");
    for (i, o) in body.outcomes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        if !o.errors.is_empty() {
            out.push_str("\"errors\":[");
            for (j, e) in o.errors.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push('{');
                field(&mut out, "message_en", &e.message_en);
                out.push(',');
                field(&mut out, "message_zh", &e.message_zh);
                out.push(',');
                field(&mut out, "pointer", &e.pointer);
                out.push(',');
                field(&mut out, "rule", &e.rule);
                out.push('}');
            }
            out.push_str("],");
        }
        out.push_str("\"index\":");
        out.push_str(&o.index.to_string());
        out.push(',');
        field(&mut out, "item_hash", &o.item_hash);
        out.push(',');
        field(&mut out, "status", &o.status);
        out.push('}');
    }
    out.push_str("],");
    field(&mut out, "received_at", &body.received_at);
    out.push(',');
    field(&mut out, "receiver", &body.receiver);
    out.push(',');
    field(&mut out, "sender", &body.sender);
    out.push('}');
    out
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
        if o.index != i as u64 || !h.is_hex_of(&o.item_hash) {
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
    // Typed decoding: a receipt has one outcome per item, and a JSON tree of a thousand of them
    // cost the sender more than the rest of the check.
    // A payload our writer does not reproduce byte for byte (another implementation may write
    // an empty `errors` list, say) takes the general path, which judges it on its own terms.
    let (decoded, body) = match jws.decode_typed(RECEIPT_TYP, canonical_receipt) {
        Ok(typed) => typed,
        Err(JwsError::NotCanonical { .. } | JwsError::Json { .. }) => {
            let mut decoded = jws.decode(RECEIPT_TYP)?;
            let body = serde_json::from_value(std::mem::take(&mut decoded.body))
                .map_err(|e| ReceiptError::Body(e.to_string()))?;
            (decoded, body)
        }
        Err(e) => return Err(e.into()),
    };
    let at = parse_time(&body.received_at).ok_or_else(|| ReceiptError::Body("received_at".into()))?;
    let key = registry.signing_key(&decoded.header.kid, receiver, at)?;
    decoded.verify(&key).map_err(|_| ReceiptError::BadSignature)?;
    Ok((body, decoded.header.kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receipt_writer_agrees_with_the_general_one() {
        let outcome = |index: u64, status: &str, errors: Vec<FieldError>| ReceiptOutcome {
            index,
            item_hash: format!("{index:064x}"),
            status: status.into(),
            errors,
        };
        let body = ReceiptBody {
            envelope_id: "0193a6f0-0000-7000-8000-000000000001".into(),
            envelope_digest: "ab".repeat(32),
            sender: "cn-370306".into(),
            receiver: "cn-370300".into(),
            received_at: "2026-11-22T08:30:00.480Z".into(),
            outcomes: vec![
                outcome(0, "accepted", vec![]),
                outcome(
                    1,
                    "rejected",
                    vec![
                        FieldError::new(
                            "/content/party_uscc",
                            "uscc.check_char",
                            "统一社会信用代码校验位错误",
                            "USCC \"check\"\n char",
                        ),
                        FieldError::new("/content/a\u{1}b", "r", "\u{e000}", "\\"),
                    ],
                ),
                outcome(2, "duplicate", vec![]),
            ],
        };
        let general = crate::canonical::canonical_string(&serde_json::to_value(&body).expect("json"));
        assert_eq!(canonical_receipt(&body), general);
        let empty = ReceiptBody { outcomes: vec![], ..body };
        let general = crate::canonical::canonical_string(&serde_json::to_value(&empty).expect("json"));
        assert_eq!(canonical_receipt(&empty), general);
    }

    #[test]
    fn a_receipt_is_rebuilt_exactly_from_its_body_and_signature() {
        use crate::crypto::{Alg, SigningKey};
        let key = SigningKey::from_secret(Alg::EdDsa, &[4; 32]).expect("key");
        let body = ReceiptBody {
            envelope_id: "e".into(),
            envelope_digest: "cd".repeat(32),
            sender: "cn-370306".into(),
            receiver: "cn-370300".into(),
            received_at: "2026-11-22T08:30:00.480Z".into(),
            outcomes: vec![ReceiptOutcome {
                index: 0,
                item_hash: "1".repeat(64),
                status: "accepted".into(),
                errors: vec![],
            }],
        };
        let signed = sign_receipt(&body, &key, "cn-370300#k");
        assert_eq!(assemble(&body, &signed.protected, &signed.signature), signed);
    }

    #[test]
    fn receipts_our_writer_does_not_reproduce_still_verify_if_canonical() {
        use crate::crypto::{Alg, SigningKey};
        let key = SigningKey::from_secret(Alg::EdDsa, &[3; 32]).expect("key");
        // Canonical JSON, but with an explicit empty `errors`, which our writer omits.
        let body = serde_json::json!({"envelope_digest": "ab".repeat(32), "envelope_id": "e", "outcomes": [
            {"errors": [], "index": 0, "item_hash": "0".repeat(64), "status": "accepted"}],
            "received_at": "2026-11-22T08:30:00.480Z", "receiver": "cn-370300", "sender": "cn-370306"});
        let jws = jws::sign(RECEIPT_TYP, "cn-370300#k", &body, &key);
        assert!(matches!(jws.decode_typed(RECEIPT_TYP, canonical_receipt), Err(JwsError::NotCanonical { .. })));
        let mut decoded = jws.decode(RECEIPT_TYP).expect("canonical");
        let parsed: ReceiptBody = serde_json::from_value(std::mem::take(&mut decoded.body)).expect("body");
        assert_eq!(parsed.outcomes[0].status, "accepted");
    }
}
