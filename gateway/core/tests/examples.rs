//! Data-driven sweeps over external and shipped fixtures: every schema's valid and invalid
//! examples (`schemas/<type>/{valid,invalid}/`) and the RFC 8785 vectors of `../shared`.

mod support;

use std::path::{Path, PathBuf};

use gateway_core::canonical::{canonical_bytes, parse_strict};
use gateway_core::record::{RecordType, RecordValidator, ValidationPolicy};
use serde_json::Value;
use support::json_files;
use time::macros::date;

/// Examples are dated up to 2026-11-20; "today" is fixed so they stay valid for ever.
const TODAY: time::Date = date!(2026 - 11 - 22);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_schema_example_is_judged_as_labelled() {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("schemas compile");
    let mut checked = 0;
    for t in RecordType::ALL {
        let dir = repo_root().join("schemas").join(t.as_str());
        let valid = json_files(&dir.join("valid"));
        assert!(valid.len() >= 3, "{t}: too few valid examples");
        for file in valid {
            let text = std::fs::read(&file).expect("read");
            let record = validator.check_json(&text, TODAY).unwrap_or_else(|e| panic!("{}: {e:#?}", file.display()));
            assert_eq!(record.record_type, t, "{}", file.display());
            checked += 1;
        }
        let invalid = json_files(&dir.join("invalid"));
        assert!(invalid.len() >= 5, "{t}: too few invalid examples");
        for file in invalid {
            let wrapper: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("wrapper is JSON");
            let text = match (&wrapper["record"], &wrapper["record_text"]) {
                (Value::Object(_), _) => wrapper["record"].to_string(),
                (_, Value::String(s)) => s.clone(),
                _ => panic!("{}: needs record or record_text", file.display()),
            };
            let errors = match validator.check_json(text.as_bytes(), TODAY) {
                Ok(_) => panic!("{}: accepted, but it is an invalid example", file.display()),
                Err(errors) => errors,
            };
            let expect = wrapper["expect"].as_array().expect("expect list");
            assert!(!expect.is_empty(), "{}: expect is empty", file.display());
            for e in expect {
                let (pointer, rule) = (e["pointer"].as_str().expect("pointer"), e["rule"].as_str().expect("rule"));
                assert!(
                    errors.iter().any(|got| got.pointer == pointer && got.rule == rule),
                    "{}: expected {rule} at {pointer:?}, got {errors:#?}",
                    file.display()
                );
            }
            for got in &errors {
                assert!(!got.message_zh.is_empty() && !got.message_en.is_empty(), "{}: {got:?}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} examples");
}

#[test]
fn rfc8785_vectors_pass() {
    let dir = repo_root().join("../shared/testdata/jcs");
    let inputs = json_files(&dir.join("input"));
    assert!(inputs.len() >= 6, "JCS vectors missing from {}", dir.display());
    for input in inputs {
        let name = input.file_name().expect("name");
        let expected = std::fs::read(dir.join("output").join(name)).expect("expected output");
        let value = parse_strict(&std::fs::read(&input).expect("input")).expect("vector parses");
        let expected = expected.strip_suffix(b"\n").unwrap_or(&expected);
        assert_eq!(
            String::from_utf8_lossy(&canonical_bytes(&value)),
            String::from_utf8_lossy(expected),
            "{}",
            input.display()
        );
    }
}

#[test]
fn allow_listed_pilot_codes_pass_only_when_listed() {
    let file = repo_root().join("schemas/admin_penalty/invalid/authority_uscc_bad_check_char.json");
    let wrapper: Value = serde_json::from_slice(&std::fs::read(file).expect("read")).expect("json");
    let record = wrapper["record"].clone();
    let bad = record["penalizing_authority_uscc"].as_str().expect("uscc").to_owned();
    let strict = RecordValidator::new(&ValidationPolicy::default()).expect("build");
    assert!(strict.check(record.clone(), TODAY).is_err());
    let lenient = RecordValidator::new(&ValidationPolicy { uscc_allow_list: vec![bad.to_lowercase()] }).expect("build");
    assert!(lenient.check(record, TODAY).is_ok());
}

#[test]
fn identity_numbers_are_masked_inside_a_correction_replacement() {
    let file = repo_root().join("schemas/correction/valid/penalty_violation_facts.json");
    let mut event: Value = serde_json::from_slice(&std::fs::read(file).expect("read")).expect("json");
    let id = event["replacement"]["legal_rep_id_no"].as_str().expect("a nested identity number").to_owned();
    gateway_core::record::mask_identity_numbers(&mut event);
    let masked = event["replacement"]["legal_rep_id_no"].as_str().expect("masked");
    assert_ne!(masked, id);
    assert!(masked.contains('*'), "{masked}");
}

#[test]
fn normalised_spellings_hash_alike() {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("build");
    let dir = repo_root().join("schemas/admin_penalty/valid");
    let file = json_files(&dir).into_iter().next().expect("an example");
    let record: Value = serde_json::from_slice(&std::fs::read(file).expect("read")).expect("json");
    let a = validator.check(record.clone(), TODAY).expect("valid");
    let mut shouted = record;
    let uscc = shouted["source_unit_uscc"].as_str().expect("uscc").to_lowercase();
    shouted["source_unit_uscc"] = Value::String(format!(" {uscc} "));
    let b = validator.check(shouted.clone(), TODAY).expect("still valid");
    assert_eq!(a.content_hash, b.content_hash);
    assert_eq!(a.natural_key, b.natural_key);

    // A known canonical form is reused as is, but never for a record normalisation changes.
    let normal = a.canonical_content.clone();
    let reused = validator.check_canonical(serde_json::from_str(&normal).expect("json"), TODAY, Some(normal.clone()));
    assert_eq!(reused.expect("valid").content_hash, a.content_hash);
    let shouted_text = gateway_core::canonical::canonical_string(&shouted);
    let c = validator.check_canonical(shouted, TODAY, Some(shouted_text.clone())).expect("valid");
    assert_ne!(c.canonical_content, shouted_text);
    assert_eq!(c.content_hash, a.content_hash);
}
