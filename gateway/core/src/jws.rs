//! JWS in flattened JSON serialisation (RFC 7515 §7.2.2) as interchange-v1 §4 profiles it:
//! the protected header is exactly `{"alg","kid","typ"}`, header and payload are RFC 8785
//! canonical JSON before base64url encoding, and a document is named by the SHA-256 of its
//! signing input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::{Sha256Digest, canonical_bytes, parse_strict};
use crate::crypto::{Alg, PublicKey, SignatureError, SigningKey};

/// A signed document on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jws {
    pub protected: String,
    pub payload: String,
    pub signature: String,
}

/// The protected header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    /// `<member id>#<label>`.
    pub kid: String,
    /// The document kind, e.g. `credit-gateway/envelope+v1`.
    pub typ: String,
}

/// A JWS whose form has been checked; its signature is not verified yet.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub header: Header,
    pub body: Value,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// What is wrong with a JWS. Each says which part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("{part} is not base64url without padding")]
    Base64 { part: &'static str },
    #[error("{part} is not strict JSON: {message}")]
    Json { part: &'static str, message: String },
    #[error("{part} is not in RFC 8785 canonical form")]
    NotCanonical { part: &'static str },
    #[error("protected header must hold exactly alg, kid and typ as strings")]
    Header,
    #[error("expected typ {expected:?}, found {found:?}")]
    WrongType { expected: String, found: String },
    #[error(transparent)]
    Alg(#[from] SignatureError),
}

/// Signs `body` as a document of kind `typ` with `key`, named `kid`.
pub fn sign(typ: &str, kid: &str, body: &Value, key: &SigningKey) -> Jws {
    sign_canonical(typ, kid, &crate::canonical::canonical_string(body), key)
}

/// [`sign`] for a body already in RFC 8785 form (the caller's writer must produce exactly
/// what `canonical_bytes` would, or verifiers refuse the document).
pub fn sign_canonical(typ: &str, kid: &str, canonical_body: &str, key: &SigningKey) -> Jws {
    let header = json!({"alg": key.alg().as_str(), "kid": kid, "typ": typ});
    let protected = B64.encode(canonical_bytes(&header));
    let payload = B64.encode(canonical_body);
    let signature = B64.encode(key.sign(format!("{protected}.{payload}").as_bytes()));
    Jws { protected, payload, signature }
}

impl Jws {
    /// `ASCII(protected) ‖ "." ‖ ASCII(payload)`.
    pub fn signing_input(&self) -> Vec<u8> {
        format!("{}.{}", self.protected, self.payload).into_bytes()
    }

    /// The `kid` of the protected header, read without checking anything else: to pick the key
    /// a document claims before verifying it, or to tell signatures apart.
    pub fn unverified_kid(&self) -> Option<String> {
        let header: Value = serde_json::from_slice(&B64.decode(&self.protected).ok()?).ok()?;
        header.get("kid")?.as_str().map(str::to_owned)
    }

    /// The document digest: SHA-256 of the signing input.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.signing_input())
    }

    /// Checks the form (encoding, strict canonical JSON, header shape, expected `typ`).
    pub fn decode(&self, expected_typ: &str) -> Result<Decoded, JwsError> {
        let header = self.decode_header(expected_typ)?;
        let body = canonical_part(&self.payload, "payload")?;
        let signature = B64.decode(&self.signature).map_err(|_| JwsError::Base64 { part: "signature" })?;
        Ok(Decoded { header, body, signing_input: self.signing_input(), signature })
    }

    /// [`decode`](Self::decode) into a typed body `T` whose own canonical writer is `canonical`:
    /// the payload must be exactly what `canonical` writes for the parsed body, which proves it
    /// canonical and free of duplicate or unknown members without building a JSON tree. The
    /// returned [`Decoded`]'s `body` is `Null`; the typed body comes beside it. A payload that
    /// `canonical` does not reproduce is refused here even if canonical: fall back to `decode`.
    pub fn decode_typed<T: serde::de::DeserializeOwned>(
        &self,
        expected_typ: &str,
        canonical: impl Fn(&T) -> String,
    ) -> Result<(Decoded, T), JwsError> {
        let header = self.decode_header(expected_typ)?;
        let payload = B64.decode(&self.payload).map_err(|_| JwsError::Base64 { part: "payload" })?;
        let body: T =
            serde_json::from_slice(&payload).map_err(|e| JwsError::Json { part: "payload", message: e.to_string() })?;
        if canonical(&body).as_bytes() != payload.as_slice() {
            return Err(JwsError::NotCanonical { part: "payload" });
        }
        let signature = B64.decode(&self.signature).map_err(|_| JwsError::Base64 { part: "signature" })?;
        Ok((Decoded { header, body: Value::Null, signing_input: self.signing_input(), signature }, body))
    }

    fn decode_header(&self, expected_typ: &str) -> Result<Header, JwsError> {
        let header_value = canonical_part(&self.protected, "protected header")?;
        let Value::Object(h) = &header_value else { return Err(JwsError::Header) };
        let field = |k: &str| h.get(k).and_then(Value::as_str);
        let (Some(alg), Some(kid), Some(typ), 3) = (field("alg"), field("kid"), field("typ"), h.len()) else {
            return Err(JwsError::Header);
        };
        if typ != expected_typ {
            return Err(JwsError::WrongType { expected: expected_typ.into(), found: typ.into() });
        }
        Ok(Header { alg: alg.parse()?, kid: kid.to_owned(), typ: typ.to_owned() })
    }
}

impl Decoded {
    /// Verifies the signature with `key`, which must be of the header's algorithm.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        if key.alg != self.header.alg {
            return Err(SignatureError::Invalid);
        }
        key.verify(&self.signing_input, &self.signature)
    }
}

fn canonical_part(encoded: &str, part: &'static str) -> Result<Value, JwsError> {
    let bytes = B64.decode(encoded).map_err(|_| JwsError::Base64 { part })?;
    let value = parse_strict(&bytes).map_err(|e| JwsError::Json { part, message: e.to_string() })?;
    if canonical_bytes(&value) != bytes {
        return Err(JwsError::NotCanonical { part });
    }
    Ok(value)
}

/// base64url without padding, as JWS and the registry use it.
pub fn b64u(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes base64url without padding.
pub fn from_b64u(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYP: &str = "credit-gateway/envelope+v1";

    fn keys() -> Vec<SigningKey> {
        [Alg::EdDsa, Alg::Sm2Sm3].iter().map(|&alg| SigningKey::from_secret(alg, &[7; 32]).expect("key")).collect()
    }

    /// The same checks for every suite: sign, verify, and every kind of tampering fails.
    #[test]
    fn both_suites_sign_verify_and_refuse_tampering() {
        let body = json!({"envelope_id": "x", "count": 2, "sender": "cn-370306"});
        for key in keys() {
            let pk = key.public_key();
            let jws = sign(TYP, "cn-370306#2026a", &body, &key);
            let decoded = jws.decode(TYP).expect("well formed");
            assert_eq!(decoded.body, body);
            assert_eq!(decoded.header.alg, key.alg());
            assert_eq!(decoded.verify(&pk), Ok(()), "{}", key.alg());

            // One flipped byte anywhere in the payload.
            let mut payload = B64.decode(&jws.payload).expect("b64");
            payload[5] ^= 1;
            let tampered = Jws { payload: B64.encode(&payload), ..jws.clone() };
            // Either the flip breaks the canonical JSON, or the signature no longer verifies.
            let refused = match tampered.decode(TYP) {
                Err(_) => true,
                Ok(d) => d.verify(&pk) == Err(SignatureError::Invalid),
            };
            assert!(refused, "{}: a tampered payload was accepted", key.alg());

            // A different body signed by the same key does not lend its signature.
            let other = sign(TYP, "cn-370306#2026a", &json!({"count": 3}), &key);
            let swapped = Jws { signature: other.signature.clone(), ..jws.clone() };
            assert_eq!(swapped.decode(TYP).expect("form").verify(&pk), Err(SignatureError::Invalid));

            // Another key of the same suite.
            let stranger = SigningKey::from_secret(key.alg(), &[9; 32]).expect("key").public_key();
            assert_eq!(decoded.verify(&stranger), Err(SignatureError::Invalid));

            // Wrong document kind.
            assert!(matches!(jws.decode("credit-gateway/receipt+v1"), Err(JwsError::WrongType { .. })));
        }
    }

    #[test]
    fn a_key_of_one_suite_never_verifies_the_other() {
        let [ed, sm] = <[SigningKey; 2]>::try_from(keys()).expect("two");
        let jws = sign(TYP, "k", &json!({}), &ed).decode(TYP).expect("form");
        assert_eq!(jws.verify(&sm.public_key()), Err(SignatureError::Invalid));
    }

    #[test]
    fn non_canonical_or_odd_headers_are_refused() {
        let key = &keys()[0];
        let good = sign(TYP, "k", &json!({"a": 1}), key);
        let spaced = Jws { payload: B64.encode(br#"{"a": 1}"#), ..good.clone() };
        assert_eq!(spaced.decode(TYP).unwrap_err(), JwsError::NotCanonical { part: "payload" });
        let dup = Jws { payload: B64.encode(br#"{"a":1,"a":1}"#), ..good.clone() };
        assert!(matches!(dup.decode(TYP), Err(JwsError::Json { .. })));
        let extra = Jws {
            protected: B64.encode(canonical_bytes(&json!({"alg":"EdDSA","kid":"k","typ":TYP,"x":1}))),
            ..good.clone()
        };
        assert_eq!(extra.decode(TYP).unwrap_err(), JwsError::Header);
        let padded = Jws { signature: format!("{}=", good.signature), ..good.clone() };
        assert_eq!(padded.decode(TYP).unwrap_err(), JwsError::Base64 { part: "signature" });
        let none = Jws { protected: B64.encode(canonical_bytes(&json!({"alg":"none","kid":"k","typ":TYP}))), ..good };
        assert!(matches!(none.decode(TYP), Err(JwsError::Alg(SignatureError::UnknownAlg(_)))));
    }
}
