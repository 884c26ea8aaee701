//! Canonical JSON (RFC 8785) and the strict parser that refuses duplicate member names.
//!
//! serde_json silently keeps the last of `{"a":1,"a":2}`; RFC 8785 and I-JSON require such a
//! document to be rejected, and a signed or hashed record must never depend on which copy a
//! parser kept. Everything the gateway hashes goes through [`parse_strict`] first (or
//! [`parse_strict_str`], the same parser for text already known to be UTF-8).

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
    parse_strict_from(serde_json::Deserializer::from_slice(text))
}

/// [`parse_strict`] for text already known to be UTF-8 (a record cut from a parsed batch):
/// its strings are not checked for UTF-8 again, which was a fifth of the parse.
pub fn parse_strict_str(text: &str) -> Result<Value, StrictJsonError> {
    parse_strict_from(serde_json::Deserializer::from_str(text))
}

fn parse_strict_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let parsed = StrictSeed { duplicate: &duplicate }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(value) => Ok(value),
        Err(err) => Err(duplicate.into_inner().unwrap_or_else(|| StrictJsonError::Syntax(err.to_string()))),
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Builds `Value`s like serde_json does, but refuses a repeated member name. The location of a
/// duplicate is assembled only on the error's way out (each level prepends its segment), so
/// the common, valid case pays nothing for it.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a RefCell<Option<StrictJsonError>>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl StrictSeed<'_> {
    /// Called while an error leaves the child at `segment`.
    fn prepend(self, segment: &str) {
        if let Some(StrictJsonError::DuplicateKey { pointer, .. }) = &mut *self.duplicate.borrow_mut() {
            pointer.insert_str(0, &format!("/{}", pointer_segment(segment)));
        }
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
            match seq.next_element_seed(self) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    self.prepend(&out.len().to_string());
                    return Err(e);
                }
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One search of the map per member: the slot is found, then filled.
            let slot = match out.entry(key) {
                serde_json::map::Entry::Vacant(slot) => slot,
                serde_json::map::Entry::Occupied(taken) => {
                    let key = taken.key().clone();
                    *self.duplicate.borrow_mut() = Some(StrictJsonError::DuplicateKey { pointer: String::new(), key });
                    return Err(de::Error::custom("duplicate member name"));
                }
            };
            match map.next_value_seed(self) {
                Ok(value) => {
                    slot.insert(value);
                }
                Err(e) => {
                    self.prepend(slot.key());
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// RFC 8785 canonical form of a JSON value.
///
/// Our own writer: the general-purpose canonicaliser spent more time than schema validation on
/// a typical record (it re-sorts every object and allocates per key). Here objects come from
/// serde_json's sorted map, so keys are already in code-point order; JCS wants UTF-16 order,
/// which differs only when a key has characters from U+E000 up, and then we sort. Numbers that
/// are not exactly representable integers go to the reference implementation.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    canonical_string(value).into_bytes()
}

/// [`canonical_bytes`] as a `String`. Written as text from the start, so the UTF-8 is never
/// validated again (that pass showed up in the envelope profile).
pub fn canonical_string(value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    write_canonical(value, &mut out);
    out
}

/// Largest integer an IEEE double holds exactly (JCS numbers are doubles).
const MAX_EXACT_INTEGER: u64 = 1 << 53;

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // U+E000 and up is 0xEE or more as a UTF-8 lead byte: only such keys can sort
            // differently in UTF-16.
            if map.keys().any(|k| k.bytes().any(|b| b >= 0xEE)) {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                write_members(entries.into_iter(), out);
            } else {
                write_members(map.iter(), out);
            }
        }
    }
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

fn write_number(n: &Number, out: &mut String) {
    let exact = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) if u <= MAX_EXACT_INTEGER => Some(u.to_string()),
        (_, Some(i)) if i.unsigned_abs() <= MAX_EXACT_INTEGER => Some(i.to_string()),
        _ => None,
    };
    match exact {
        Some(text) => out.push_str(&text),
        // Floats and huge integers: ES6 number-to-string is subtle; use the reference.
        None => {
            let text = serde_json_canonicalizer::to_string(&Value::Number(n.clone())).unwrap_or_default();
            out.push_str(&text);
        }
    }
}

/// Appends `s` as an RFC 8785 JSON string, for writers of known document shapes.
pub fn push_json_string(s: &str, out: &mut String) {
    write_string(s, out);
}

/// A JSON string as RFC 8785 §3.2.2.2 writes it: only `"`, `\\` and control characters escaped,
/// with the short forms where JSON has them and lower-case `\u00xx` otherwise.
fn write_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    // Most text needs no escape: one pass without early exit (the compiler vectorises it)
    // finds that, and the text is copied whole.
    let plain = !s.bytes().fold(false, |found, b| found | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A SHA-256 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
    /// The lower-case hex of the digest written into `out`, without allocating.
    pub fn write_hex<'a>(&self, out: &'a mut [u8; 64]) -> &'a [u8] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        out
    }
    /// The lower-case hex of the digest. Written through [`Self::write_hex`]: `hex::encode` goes
    /// character by character through an iterator, and a relay hop formats about fifteen
    /// digests per record (item hashes, proof paths, keys), which made it 3 % of a node's CPU.
    pub fn to_hex(&self) -> String {
        self.hex_str(&mut [0; 64]).to_owned()
    }

    fn hex_str<'a>(&self, buf: &'a mut [u8; 64]) -> &'a str {
        std::str::from_utf8(self.write_hex(buf)).expect("hex digits are ASCII")
    }

    /// Whether `s` is this digest's 64 lower-case hex characters (no allocation).
    pub fn is_hex_of(&self, s: &str) -> bool {
        let mut buf = [0u8; 64];
        s.as_bytes() == self.write_hex(&mut buf)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_str(&mut [0; 64]))
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
    let mut out = String::with_capacity(canonical_content.len() + 128);
    out.push_str("{\"content\":");
    out.push_str(canonical_content);
    for (key, value) in [("origin", origin), ("record_id", record_id), ("record_type", record_type)] {
        out.push(',');
        write_string(key, &mut out);
        out.push(':');
        write_string(value, &mut out);
    }
    out.push_str(",\"version\":");
    out.push_str(&version.to_string());
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_writer_agrees_with_the_reference_implementation() {
        let cases = [
            r#"{"b":"处罚\u0001\u001f\u007f\u2028","a":[1.5,2e30,-0.0,1e21,123456789012345678,-9007199254740993],"c":{"z":null,"y":true}}"#,
            r#"{"\ue000":1,"\ud83d\ude00":2,"a":3,"é":4,"\"\\/\b\f\n\r\t":"\"\\/\b\f\n\r\t"}"#,
            r#"[9007199254740992,9007199254740993,-9007199254740992,18446744073709551615,0,-1,0.1,1e-7,333333333.3333333]"#,
            r#"{}"#,
            r#"[[],{},"",false]"#,
        ];
        for case in cases {
            let value: Value = serde_json::from_str(case).unwrap();
            assert_eq!(
                String::from_utf8(canonical_bytes(&value)).unwrap(),
                serde_json_canonicalizer::to_string(&value).unwrap(),
                "{case}"
            );
        }
    }

    #[test]
    fn digests_match_only_their_own_lower_case_hex() {
        let d = Sha256Digest::of(b"x");
        assert!(d.is_hex_of(&d.to_hex()));
        assert!(!d.is_hex_of(&d.to_hex().to_uppercase()));
        assert!(!d.is_hex_of(&Sha256Digest::of(b"y").to_hex()));
        assert!(!d.is_hex_of(&d.to_hex()[1..]));
        // FIPS 180-2's "abc" example, as text and through Display and from_hex.
        let abc = Sha256Digest::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(abc.to_hex(), hex);
        assert_eq!(abc.to_string(), hex);
        assert_eq!(Sha256Digest::from_hex(hex), Some(abc));
    }

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
