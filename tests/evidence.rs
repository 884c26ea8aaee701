//! Evidence of a record relayed over two hops, 周村区 → 信用淄博 → 信用山东, between real
//! nodes over mutual TLS, for both signature suites: exported at the middle and the last node,
//! verified by our verifier, by the `evidence verify` command, and (Ed25519) by an independent
//! Python implementation using the `cryptography` package.

use std::path::Path;

use credit_gateway::bench::synthetic_records;
use credit_gateway::pki;
use gateway_core::crypto::Alg;
use gateway_core::interchange::evidence::{self, Bundle};
use testkit::{anchor, cli};
use time::OffsetDateTime;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";
const PROVINCE: &str = "cn-370000";

/// The Python verifier on `bundle`, against the PKI's anchor.
fn python_verify(bundle: &Path, pki_dir: &Path) -> (i32, String) {
    testkit::python_verify(bundle, &pki::anchor_file(pki_dir))
}

async fn run(alg: Alg) {
    let (dir, pki_dir) = testkit::demo_pki(alg);
    let (_, district) = testkit::start_federation_node(&pki_dir, DISTRICT, &dir.path().join("district")).await;
    let (city_port, city) = testkit::start_federation_node(&pki_dir, CITY, &dir.path().join("city")).await;
    let city_url = format!("https://localhost:{city_port}");
    let province_dir = dir.path().join("province");
    let (province_port, province) =
        testkit::start_federation_node_with_peers(&pki_dir, PROVINCE, &province_dir, &[(CITY, city_url.clone())]).await;
    let province_url = format!("https://localhost:{province_port}");

    // 周村区 → 信用淄博: 30 records; the city relays them, regrouped, to 信用山东.
    let body = serde_json::to_vec(&synthetic_records(30, 91)).expect("json");
    district.ingest.push(body.into(), OffsetDateTime::now_utc()).await.expect("push");
    let own = testkit::all_records(&district.ingest.store, 100).await;
    let receipt = district.send(CITY, &city_url, &own, OffsetDateTime::now_utc()).await.expect("district → city");
    assert!(receipt.outcomes.iter().all(|o| o.status == "accepted"));
    let mut held = testkit::all_records(&city.ingest.store, 100).await;
    held.reverse();
    let receipt =
        city.send(PROVINCE, &province_url, &held[..20], OffsetDateTime::now_utc()).await.expect("city → province");
    assert!(receipt.outcomes.iter().all(|o| o.status == "accepted"), "{:?}", receipt.outcomes[0]);
    let record = &held[7];

    // At the province: the first hop comes from the city over mutual TLS.
    let at_province = province.export_evidence(record.record_id, None).await.expect("export at the province");
    let verified =
        evidence::verify(&serde_json::to_vec(&at_province).expect("json"), &anchor(&pki_dir)).expect("verifies");
    let path: Vec<_> = verified.hops.iter().map(|h| (h.sender.as_str(), h.receiver.as_str())).collect();
    assert_eq!(path, [(DISTRICT, CITY), (CITY, PROVINCE)]);
    assert_eq!(verified.record_id, record.record_id.to_string());
    // At the city: its arrival hop and the hop it sent on — the same two hops.
    let at_city = city.export_evidence(record.record_id, None).await.expect("export at the city");
    assert_eq!(at_city.hops, at_province.hops);
    // A record the city never sent on has only its first hop.
    let first_only = city.export_evidence(held[25].record_id, None).await.expect("export");
    assert_eq!(first_only.hops.len(), 1);

    // Only a node the record was sent to may ask for its earlier hops.
    let dongying = testkit::federation_client(&pki_dir, "cn-370500");
    let asked = format!("{city_url}/federation/v1/evidence/{}/1", record.record_id);
    assert_eq!(dongying.get(&asked).send().await.expect("get").status(), 404);

    // The commands: export from the province's store (the city asked over mTLS), verify.
    let bundle_path = dir.path().join("bundle.json");
    let (code, out) = cli(&[
        "evidence",
        "export",
        &record.record_id.to_string(),
        "--member",
        PROVINCE,
        "--pki",
        pki_dir.to_str().expect("utf-8"),
        "--data-dir",
        province_dir.to_str().expect("utf-8"),
        "--peer",
        &format!("{CITY}={city_url}"),
        "--out",
        bundle_path.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}");
    let exported: Bundle = serde_json::from_slice(&std::fs::read(&bundle_path).expect("bundle")).expect("json");
    assert_eq!(exported.hops, at_province.hops);
    let anchor_arg = pki::anchor_file(&pki_dir);
    let verify = |path: &Path| {
        cli(&["evidence", "verify", path.to_str().expect("utf-8"), "--anchor", anchor_arg.to_str().expect("utf-8")])
    };
    let (code, out) = verify(&bundle_path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("hop 1: {CITY} -> {PROVINCE}")), "{out}");

    // One flipped character of the record: both verifiers fail and say where.
    let tampered_path = dir.path().join("tampered.json");
    let text = std::fs::read_to_string(&bundle_path).expect("bundle");
    let name = exported.item["content"]["party_name"].as_str().expect("party_name").to_owned();
    let first = name.chars().next().expect("a name");
    let forged_name = name.replacen(first, if first == '甲' { "乙" } else { "甲" }, 1);
    assert_ne!(forged_name, name);
    std::fs::write(&tampered_path, text.replacen(&name, &forged_name, 1)).expect("write");
    let (code, out) = verify(&tampered_path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/hops/0") && out.contains("Merkle root"), "{out}");

    // The independent implementation.
    let (code, out) = python_verify(&bundle_path, &pki_dir);
    match alg {
        Alg::EdDsa => {
            assert_eq!(code, 0, "{out}");
            assert!(out.contains(&format!("hop 1: {CITY} -> {PROVINCE} accepted")), "{out}");
            let (code, out) = python_verify(&tampered_path, &pki_dir);
            assert_eq!(code, 1, "{out}");
            assert!(out.contains("/hops/0/proof"), "{out}");
        }
        // `cryptography` has no SM2: the script must say so, not pass.
        Alg::Sm2Sm3 => assert_eq!(code, 2, "{out}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_evidence_over_two_hops() {
    run(Alg::EdDsa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_evidence_over_two_hops() {
    run(Alg::Sm2Sm3).await;
}
