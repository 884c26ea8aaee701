//! The measures catalogue (联合奖惩措施清单): every catalogue under `measures/` passes the
//! conformance check; a broken one is refused with every problem named; a signed and approved
//! catalogue verifies; one changed after signing, signed by someone else, or not approved in
//! the registry is refused.

use std::path::{Path, PathBuf};

use gateway_core::crypto::{Alg, SigningKey};
use gateway_core::interchange::registry::{MeasuresEntry, Registry, RegistryBody, RootKey};
use gateway_core::jws::{self, b64u};
use gateway_core::measures::{self, Catalogue, CatalogueError};
use time::{Duration, OffsetDateTime};

fn catalogues() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../measures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("measures/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn root(seed: u8) -> SigningKey {
    SigningKey::from_secret(Alg::EdDsa, &[seed; 32]).expect("key")
}

fn registry(approved: &[(&str, String)]) -> Registry {
    let root = root(7);
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
        adapters: vec![],
        measures: approved
            .iter()
            .map(|(c, h)| MeasuresEntry { catalogue: (*c).into(), catalogue_sha256: h.clone() })
            .collect(),
    };
    let jws = jws::sign(
        gateway_core::interchange::registry::REGISTRY_TYP,
        "root#test",
        &serde_json::to_value(&body).expect("json"),
        &root,
    );
    Registry::verify_signed(&jws, &roots).expect("registry verifies")
}

fn demo() -> (Vec<u8>, Catalogue) {
    let path = catalogues().into_iter().find(|p| p.ends_with("demo.toml")).expect("measures/demo.toml");
    let bytes = std::fs::read(path).expect("read");
    let catalogue = Catalogue::parse(&bytes).expect("the demo catalogue conforms");
    (bytes, catalogue)
}

#[test]
fn every_shipped_catalogue_conforms() {
    let files = catalogues();
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        if let Err(e) = Catalogue::parse(&bytes) {
            panic!("{}: {e}", f.display());
        }
    }
    let (_, demo) = demo();
    let started: Vec<&str> = demo.started_by("black", "税务").map(|m| m.id.as_str()).collect();
    assert!(started.contains(&"restrict-tax-credit-grade") && started.contains(&"restrict-government-procurement"));
    assert!(
        demo.started_by("black", "食品药品").all(|m| m.id != "restrict-tax-credit-grade"),
        "a domain-bound measure"
    );
    assert!(demo.started_by("red", "税务").all(|m| m.kind == measures::Kind::Reward));
}

#[test]
fn a_broken_catalogue_names_every_problem() {
    let text = r#"
[catalogue]
id = "Bad Id"
version = "1"
title = "t"
basis = ""

[[measures]]
id = "twice"
title = "激励却由黑名单触发"
kind = "reward"
list_types = ["black", "grey"]
basis_item = "x"
legal_basis = "y"
implementing_category = "finance"
response_days = 0
feedback_days = 90
feedback_evidence = false
reach = "all"

[[measures]]
id = "twice"
title = ""
kind = "punish"
list_types = []
basis_item = "x"
legal_basis = "y"
implementing_category = "finance"
response_days = 5
feedback_days = 5
feedback_evidence = false
reach = "region"
"#;
    let Err(CatalogueError::Conformance(problems)) = Catalogue::parse(text.as_bytes()) else {
        panic!("a broken catalogue was accepted")
    };
    let all = problems.join("\n");
    for expected in [
        "catalogue.id \"Bad Id\"",
        "catalogue.basis is empty",
        "a Reward measure cannot be started by a \"black\" list entry",
        "unknown list type \"grey\"",
        "response_days must be 1–60",
        "feedback_days must be 1–60",
        "id is used twice",
        "title is empty",
        "list_types is empty",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(matches!(Catalogue::parse(b"[catalogue]\nid = 1\n"), Err(CatalogueError::Form(_))));
}

#[test]
fn signed_approved_catalogues_verify_and_tampered_or_unapproved_ones_are_refused() {
    let (bytes, demo) = demo();
    let sig = measures::sign(&demo, "2026-12-07T00:00:00.000Z", "root#test", &root(7));
    let approved = registry(&[(demo.heading.id.as_str(), demo.sha256.to_hex())]);
    measures::verify_signature(&demo, &sig, &approved).expect("verifies");

    // One byte changed after signing (a response deadline made longer).
    let text = String::from_utf8(bytes).expect("utf-8").replacen("response_days = 5", "response_days = 50", 1);
    let tampered = Catalogue::parse(text.as_bytes()).expect("still conforms");
    assert!(matches!(measures::verify_signature(&tampered, &sig, &approved), Err(CatalogueError::Tampered { .. })));
    // Signed by a key that is not a root.
    let forged = measures::sign(&demo, "2026-12-07T00:00:00.000Z", "root#test", &root(8));
    assert_eq!(measures::verify_signature(&demo, &forged, &approved), Err(CatalogueError::BadSignature));
    let stranger = measures::sign(&demo, "2026-12-07T00:00:00.000Z", "root#other", &root(7));
    assert!(matches!(
        measures::verify_signature(&demo, &stranger, &approved),
        Err(CatalogueError::UntrustedSigner { .. })
    ));
    // Signed by the root, but the registry approves another version.
    let other = registry(&[(demo.heading.id.as_str(), "0".repeat(64))]);
    assert!(matches!(measures::verify_signature(&demo, &sig, &other), Err(CatalogueError::NotApproved { .. })));
}
