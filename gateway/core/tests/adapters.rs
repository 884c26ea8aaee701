//! The adapter conformance suite: every manifest in `adapters/` compiles, its samples match
//! the platform schema, canonical → platform → canonical round-trips every mapped field (and the
//! other way), translated rows pass the record rules, and fields left out are reported. Then the
//! load-time refusals: unsigned, altered, unapproved, and mappings that cannot work.

mod support;

use std::path::{Path, PathBuf};

use gateway_core::adapter::{self, Adapter, AdapterError, conformance};
use gateway_core::crypto::{Alg, SigningKey};
use gateway_core::interchange::registry::{AdapterEntry, Registry, RegistryBody, RootKey};
use gateway_core::jws::{self, b64u};
use gateway_core::record::{RecordValidator, ValidationPolicy};
use serde_json::Value;
use time::{Date, Duration, Month, OffsetDateTime};

fn adapters_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../adapters")
}

fn manifests() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(adapters_dir())
        .expect("adapters/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("manifest.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn compile(dir: &Path, text: &[u8]) -> Result<Adapter, AdapterError> {
    Adapter::compile(text, |rel| std::fs::read(dir.join(rel)).map_err(|e| e.to_string()))
}

fn samples(dir: &Path, dataset: &str, side: &str) -> Result<Vec<Value>, String> {
    let path = dir.join("samples").join(format!("{dataset}.{side}.json"));
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Array(rows)) => Ok(rows),
        _ => Err(format!("{} must hold a JSON array", path.display())),
    }
}

fn today() -> Date {
    Date::from_calendar_date(2026, Month::November, 23).expect("date")
}

#[test]
fn every_platform_adapter_passes_the_conformance_suite() {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("validator");
    let dirs = manifests();
    let ids: Vec<String> = dirs.iter().map(|d| d.file_name().expect("name").to_string_lossy().into_owned()).collect();
    for platform in [
        "xinyong-zhongguo",
        "xinyong-shandong",
        "xinyong-henan",
        "xinyong-liaoning",
        "xinyong-zibo",
        "xinyong-dongying",
        "xinyong-zhengzhou",
        "xinyong-puyang",
        "xinyong-yingkou",
        "dongying-district",
        "zhoucun-district",
        "zhongyuan-district",
    ] {
        assert!(ids.iter().any(|i| i == platform), "no adapter for {platform}");
    }
    for dir in dirs {
        let text = std::fs::read(dir.join("manifest.toml")).expect("manifest");
        let adapter = compile(&dir, &text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(dir.file_name().expect("name").to_string_lossy(), adapter.id(), "folder name is the platform id");
        let reports = conformance::check(&adapter, |ds, side| samples(&dir, ds, side), &validator, today())
            .unwrap_or_else(|e| panic!("{e}"));
        for r in reports {
            // Reported, not failed: what each side has that the other does not carry.
            println!(
                "{} / {}: unmapped canonical fields {:?}; unmapped platform columns {:?}",
                adapter.id(),
                r.dataset,
                r.coverage.unmapped_fields,
                r.coverage.unmapped_columns
            );
        }
    }
}

#[test]
fn the_suite_catches_a_mapping_that_loses_a_column() {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("validator");
    // 信用濮阳 only ingests, so a column read but never written back is allowed to compile …
    let dir = adapters_dir().join("xinyong-puyang");
    let text = std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest");
    let one_way = text.replace(
        "{ column = \"CF_SY\", field = \"violation_facts\" }",
        "{ column = \"CF_SY\", field = \"violation_facts\", only = \"ingest\" }",
    );
    assert_ne!(one_way, text);
    let adapter = compile(&dir, one_way.as_bytes()).expect("compiles");
    // … but the round trip notices the column it loses.
    let err =
        conformance::check(&adapter, |ds, side| samples(&dir, ds, side), &validator, today()).expect_err("caught");
    assert!(err.contains("CF_SY was lost"), "{err}");
}

#[test]
fn the_suite_catches_a_code_table_that_no_longer_matches_the_samples() {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("validator");
    let (dir, text) = zibo();
    // The platform code of 法人及非法人组织 edited: the samples' rows no longer translate.
    let text = String::from_utf8(text)
        .expect("utf-8")
        .replace("legal_entity = \"法人及非法人组织\"", "legal_entity = \"法人\"");
    let adapter = compile(&dir, text.as_bytes()).expect("compiles");
    let err =
        conformance::check(&adapter, |ds, side| samples(&dir, ds, side), &validator, today()).expect_err("caught");
    assert!(err.contains("_XDR_LB [adapter.code_unknown]"), "{err}");
}

// ---- load-time refusals ----

const PLATFORM: &str = "xinyong-zibo";

fn root() -> SigningKey {
    SigningKey::from_secret(Alg::EdDsa, &[7; 32]).expect("key")
}

fn registry(approved: &[(&str, String)]) -> Registry {
    let root = root();
    let roots =
        vec![RootKey { kid: "root#test".into(), alg: "EdDSA".into(), public_key: b64u(&root.public_key().bytes) }];
    let now = OffsetDateTime::now_utc();
    let body = RegistryBody {
        federation: "cn-credit-test".into(),
        version: 3,
        issued_at: gateway_core::interchange::format_time(now),
        expires_at: gateway_core::interchange::format_time(now + Duration::days(1)),
        roots: roots.clone(),
        members: vec![],
        agreements: vec![],
        adapters: approved
            .iter()
            .map(|(p, h)| AdapterEntry { platform: (*p).into(), manifest_sha256: h.clone() })
            .collect(),
        measures: vec![],
    };
    let jws = jws::sign(
        gateway_core::interchange::registry::REGISTRY_TYP,
        "root#test",
        &serde_json::to_value(&body).expect("json"),
        &root,
    );
    Registry::verify_signed(&jws, &roots).expect("registry verifies")
}

fn zibo() -> (PathBuf, Vec<u8>) {
    let dir = adapters_dir().join(PLATFORM);
    let text = std::fs::read(dir.join("manifest.toml")).expect("manifest");
    (dir, text)
}

#[test]
fn a_signed_and_approved_manifest_loads() {
    let (dir, text) = zibo();
    let adapter = compile(&dir, &text).expect("compiles");
    let sig = adapter::sign_manifest(&text, PLATFORM, "2026-11-23T00:00:00.000Z", "root#test", &root());
    let reg = registry(&[(PLATFORM, adapter.sha256.to_hex())]);
    adapter::verify_signature(&adapter, &sig, &reg).expect("verifies");
}

#[test]
fn a_manifest_changed_by_one_byte_is_refused_as_tampered() {
    let (dir, text) = zibo();
    let sig = adapter::sign_manifest(&text, PLATFORM, "2026-11-23T00:00:00.000Z", "root#test", &root());
    let original = compile(&dir, &text).expect("compiles");
    let reg = registry(&[(PLATFORM, original.sha256.to_hex())]);
    // 淄博's zone stays valid TOML: one digit of the page size changes.
    let mut tampered = text.clone();
    let at = tampered.windows(14).position(|w| w == b"page_size = 50").expect("page size");
    tampered[at + 12] = b'9';
    let adapter = compile(&dir, &tampered).expect("still a valid manifest");
    let err = adapter::verify_signature(&adapter, &sig, &reg).expect_err("refused");
    assert!(matches!(err, AdapterError::Tampered { .. }), "{err}");
    assert!(err.to_string().contains("altered after signing"), "{err}");
}

#[test]
fn an_unapproved_or_foreign_signed_manifest_is_refused() {
    let (dir, text) = zibo();
    let adapter = compile(&dir, &text).expect("compiles");
    let sig = adapter::sign_manifest(&text, PLATFORM, "2026-11-23T00:00:00.000Z", "root#test", &root());
    let err = adapter::verify_signature(&adapter, &sig, &registry(&[])).expect_err("refused");
    assert!(matches!(err, AdapterError::NotApproved { .. }), "{err}");
    assert!(err.to_string().contains("not approved by registry version 3"), "{err}");

    let stranger = SigningKey::from_secret(Alg::EdDsa, &[9; 32]).expect("key");
    let forged = adapter::sign_manifest(&text, PLATFORM, "2026-11-23T00:00:00.000Z", "root#test", &stranger);
    let reg = registry(&[(PLATFORM, adapter.sha256.to_hex())]);
    assert_eq!(adapter::verify_signature(&adapter, &forged, &reg), Err(AdapterError::BadSignature));
    let other = adapter::sign_manifest(&text, PLATFORM, "2026-11-23T00:00:00.000Z", "root#other", &root());
    assert!(matches!(adapter::verify_signature(&adapter, &other, &reg), Err(AdapterError::UntrustedSigner { .. })));
}

fn refused(dir: &Path, text: &str) -> String {
    compile(dir, text.as_bytes()).expect_err("refused").to_string()
}

#[test]
fn mappings_that_cannot_work_are_load_time_errors() {
    let (dir, text) = zibo();
    let text = String::from_utf8(text).expect("utf-8");
    // A required canonical field with no column (淄博 ingests, so it must be representable).
    let msg = refused(&dir, &text.replace("  { column = \"CF_WSH\", field = \"decision_doc_no\" },\n", ""));
    assert!(msg.contains("required canonical field decision_doc_no"), "{msg}");
    // A platform column required by its schema that nothing fills (信用中国 only takes deliveries,
    // so only the delivery-side check can catch it).
    let national = adapters_dir().join("xinyong-zhongguo");
    let national_text = std::fs::read_to_string(national.join("manifest.toml")).expect("manifest");
    let msg =
        refused(&national, &national_text.replace("  { column = \"XK_XKJG\", field = \"issuing_authority\" },\n", ""));
    assert!(msg.contains("column XK_XKJG is required by the platform schema"), "{msg}");
    // An unknown canonical field, an unknown column, a missing code table, a code the
    // canonical enum does not allow.
    let msg = refused(&dir, &text.replace("field = \"remarks\"", "field = \"remark\""));
    assert!(msg.contains("\"remark\" is not a field of"), "{msg}");
    let msg = refused(&dir, &text.replacen("column = \"BZ\"", "column = \"BZX\"", 1));
    assert!(msg.contains("column \"BZX\" is not in the platform schema"), "{msg}");
    let msg = refused(&dir, &text.replace("[code_tables.party_category]", "[code_tables.party_kind]"));
    assert!(msg.contains("code table \"party_category\" is not defined"), "{msg}");
    let msg = refused(&dir, &text.replace("natural_person = ", "person = "));
    assert!(msg.contains("maps \"person\""), "{msg}");
    // A platform schema that is not the pinned one.
    let at = text.find("sha256 = \"").expect("pinned hash") + 10;
    let msg = refused(&dir, &format!("{}{}{}", &text[..at], "0".repeat(64), &text[at + 64..]));
    assert!(msg.contains("the manifest pins 0000"), "{msg}");
    // A manifest that does not match its own schema names the place.
    let msg = refused(&dir, &text.replace("mode = \"service\"", "mode = \"fax\""));
    assert!(msg.contains("/transport/mode"), "{msg}");
}

#[test]
fn rows_with_unknown_codes_or_dates_name_the_column() {
    let (dir, text) = zibo();
    let adapter = compile(&dir, &text).expect("compiles");
    let ds = adapter.dataset("CF").expect("CF");
    let mut row = samples(&dir, "CF", "platform").expect("samples").remove(0);
    row["CF_XDR_LB"] = "企业".into();
    row["CF_JDRQ"] = "2024年13月1日".into();
    let errors = ds.to_canonical(row.as_object().expect("row")).expect_err("refused");
    let found: Vec<(&str, &str)> = errors.iter().map(|e| (e.pointer.as_str(), e.rule.as_str())).collect();
    assert!(found.contains(&("/CF_XDR_LB", "adapter.code_unknown")), "{found:?}");
    assert!(found.contains(&("/CF_JDRQ", "adapter.date_format")), "{found:?}");
    assert!(errors.iter().all(|e| !e.message_zh.is_empty() && !e.message_en.is_empty()));
}
