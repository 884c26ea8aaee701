//! Canonical JSON (RFC 8785) and the strict parser that refuses duplicate member names.
//!
//! serde_json silently keeps the last of `{"a":1,"a":2}`; RFC 8785 and I-JSON require such a
//! document to be rejected, and a signed or hashed record must never depend on which copy a
//! parser kept. Everything the gateway hashes goes through [`parse_strict`] first.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Why a JSON text was refused by [`parse_strict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// The same member name appears twice in one object; `pointer` names the object.
    #[error("duplicate member name {key:?} in the object at {pointer:?}")]
    DuplicateKey { pointer: String, key: String },
    /// The text is not JSON at all.
    #[error("malformed JSON: {0}")]
    Syntax(String),
}

/// Parses JSON text, rejecting duplicate member names anywhere in the document.
pub fn parse_strict(text: &[u8]) -> Result<Value, StrictJsonError> {
    let path = RefCell::new(Vec::<String>::new());
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(text);
    let seed = StrictSeed { path: &path, duplicate: &duplicate };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(value) => Ok(value),
        Err(err) => Err(duplicate.into_inner().unwrap_or_else(|| StrictJsonError::Syntax(err.to_string()))),
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    path: &'a RefCell<Vec<String>>,
    duplicate: &'a RefCell<Option<StrictJsonError>>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl StrictSeed<'_> {
    fn child<T, E>(self, segment: String, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.path.borrow_mut().push(segment);
        let out = f();
        if out.is_ok() {
            self.path.borrow_mut().pop();
        }
        out
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let next = self.child(out.len().to_string(), || seq.next_element_seed(self))?;
            match next {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let pointer: String = self.path.borrow().iter().map(|s| format!("/{}", pointer_segment(s))).collect();
                *self.duplicate.borrow_mut() = Some(StrictJsonError::DuplicateKey { pointer, key: key.clone() });
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = self.child(key.clone(), || map.next_value_seed(self))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// RFC 8785 canonical form of a JSON value.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    // Serialising a `serde_json::Value` cannot fail: its keys are strings and its numbers finite.
    serde_json_canonicalizer::to_vec(value).unwrap_or_default()
}

/// A SHA-256 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// SHA-256 over JCS(value): the content hash of a record, the item hash of an item.
pub fn canonical_hash(value: &Value) -> Sha256Digest {
    Sha256Digest::of(&canonical_bytes(value))
}

/// JCS of an interchange item (`{"content", "origin", "record_id", "record_type", "version"}`,
/// interchange-v1 §2) built from already-canonical content, without re-serialising it.
pub fn item_canonical(
    origin: &str,
    record_id: &str,
    version: i64,
    record_type: &str,
    canonical_content: &str,
) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    format!(
        "{{\"content\":{canonical_content},\"origin\":{},\"record_id\":{},\"record_type\":{},\"version\":{version}}}",
        s(origin),
        s(record_id),
        s(record_type)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_canonical_equals_jcs_of_the_item() {
        let content = serde_json::json!({"b": "处罚\u{1}", "a": [1.5, 2e30], "c": {"z": null, "y": true}});
        let canonical = String::from_utf8(canonical_bytes(&content)).unwrap();
        let item = serde_json::json!({"origin": "cn-370306", "record_id": "0193-x", "version": 2,
            "record_type": "admin_penalty", "content": content});
        assert_eq!(
            item_canonical("cn-370306", "0193-x", 2, "admin_penalty", &canonical).into_bytes(),
            canonical_bytes(&item)
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_location() {
        let err = parse_strict(br#"{"a":{"b":[1,{"c":1,"c":2}]}}"#).unwrap_err();
        assert_eq!(err, StrictJsonError::DuplicateKey { pointer: "/a/b/1".into(), key: "c".into() });
        assert!(parse_strict(br#"{"a":1,"a":1}"#).is_err());
    }

    #[test]
    fn same_key_in_sibling_objects_is_fine() {
        let v = parse_strict(br#"[{"a":1},{"a":2}]"#).unwrap();
        assert_eq!(v[1]["a"], 2);
    }

    #[test]
    fn syntax_errors_are_reported_as_such() {
        assert!(matches!(parse_strict(b"{\"a\":"), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(parse_strict(b"{} x"), Err(StrictJsonError::Syntax(_))));
    }
}
