//! Signed envelopes between two real nodes over mutual TLS, for both signature suites: 1,000
//! records from 周村区 to 信用淄博 come back with a signed receipt the district verifies and
//! stores; resending is idempotent; replays, forged senders, unregistered keys, keys outside
//! their window, misrouted envelopes and records of a foreign subtree are refused and change
//! nothing stored.

use credit_gateway::bench::synthetic_records;
use credit_gateway::pki;
use gateway_core::crypto::Alg;
use gateway_core::interchange::envelope::{self, Addressing, Outgoing};
use gateway_store::StoredRecord;
use serde_json::{Value, json};
use time::OffsetDateTime;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";

async fn own_records(node: &credit_gateway::interchange::Node, n: usize, seed: u64) -> Vec<StoredRecord> {
    let body = serde_json::to_vec(&synthetic_records(n, seed)).expect("json");
    let answer = node.ingest.push(body.into(), OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!(answer.accepted, n);
    testkit::all_records(&node.ingest.store, 5_000).await
}

async fn run(alg: Alg) {
    let (dir, pki_dir) = testkit::demo_pki(alg);
    let (city_port, city) = testkit::start_federation_node(&pki_dir, CITY, &dir.path().join("city")).await;
    let (_, district) = testkit::start_federation_node(&pki_dir, DISTRICT, &dir.path().join("district")).await;
    let url = format!("https://localhost:{city_port}");
    let client = testkit::federation_client(&pki_dir, DISTRICT);

    let records = own_records(&district, 1000, 40).await;
    let receipt = district.send(CITY, &url, &records, OffsetDateTime::now_utc()).await.expect("sent, receipt verified");
    assert_eq!(receipt.outcomes.len(), 1000);
    assert!(receipt.outcomes.iter().all(|o| o.status == "accepted"), "{:?}", &receipt.outcomes[..2]);
    assert_eq!(city.ingest.store.count().await.expect("count"), 1000);
    let digest = gateway_core::canonical::Sha256Digest::from_hex(&receipt.envelope_digest).expect("digest");
    assert!(district.ingest.store.receipt_of(&digest).await.expect("query").is_some(), "sender stored the receipt");
    // The city keeps the origin's identity of each record.
    let first = &records[0];
    let at_city = city.ingest.store.versions(first.record_id).await.expect("read");
    assert_eq!((at_city[0].origin.as_str(), at_city[0].content_hash.as_str()), (DISTRICT, first.content_hash.as_str()));

    // The same records in a new envelope: duplicates, nothing stored twice.
    let again = district.send(CITY, &url, &records[..10], OffsetDateTime::now_utc()).await.expect("sent");
    assert!(again.outcomes.iter().all(|o| o.status == "duplicate"));
    assert_eq!(city.ingest.store.count().await.expect("count"), 1000);

    let post = |env: &Value| client.post(format!("{url}/federation/v1/envelopes")).json(env).send();
    let items = |records: &[StoredRecord]| -> Vec<Outgoing> {
        records
            .iter()
            .map(|r| Outgoing {
                item: json!({"origin": r.origin, "record_id": r.record_id.to_string(), "version": r.version,
                             "record_type": r.record_type, "content": serde_json::from_str::<Value>(&r.content).expect("json")}),
                origin_proof: None,
            })
            .collect()
    };
    let key = pki::SigningKeyFile::load(&pki::NodeFiles::new(&pki_dir, DISTRICT).signing_key()).expect("key");
    let seal = |id: &str, sender: &str, recs: &[StoredRecord], key: &(gateway_core::crypto::SigningKey, String)| {
        let to = Addressing { envelope_id: id, sender, receiver: CITY, seq: 7, created_at: OffsetDateTime::now_utc() };
        serde_json::to_value(envelope::seal(&to, items(recs), &key.0, &key.1)).expect("json")
    };

    // Resending the very same envelope (a lost answer) returns the same receipt.
    let env = seal("0193a6f0-0000-7000-8000-0000000000a1", DISTRICT, &records[10..12], &key);
    let a: Value = post(&env).await.expect("post").json().await.expect("receipt");
    let b: Value = post(&env).await.expect("post").json().await.expect("receipt");
    assert_eq!(a, b);
    // The same envelope id with other content: a replay.
    let replay = seal("0193a6f0-0000-7000-8000-0000000000a1", DISTRICT, &records[12..13], &key);
    let resp = post(&replay).await.expect("post");
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.expect("body")["error"]["code"], "replay");

    // 信用东营 signs an envelope, but the TLS peer is 周村区.
    let dongying = pki::SigningKeyFile::load(&pki::NodeFiles::new(&pki_dir, "cn-370500").signing_key()).expect("key");
    let forged = seal("0193a6f0-0000-7000-8000-0000000000a2", "cn-370500", &records[13..14], &dongying);
    let resp = post(&forged).await.expect("post");
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.expect("body")["error"]["code"], "sender_not_peer");

    // One byte of one item changed after sealing: refused, nothing stored.
    let mut tampered = seal("0193a6f0-0000-7000-8000-0000000000a3", DISTRICT, &records[14..16], &key);
    tampered["items"][1]["item"]["content"]["party_name"] = json!("淄博周村第X号商贸有限公司");
    let resp = post(&tampered).await.expect("post");
    assert_eq!(resp.status(), 400);
    // (Every record above was already held, so the count never moved.)
    assert_eq!(city.ingest.store.count().await.expect("count"), 1000);

    // Signed by a key the registry does not hold for this kid, or by an unregistered kid.
    for kid in [key.1.clone(), format!("{DISTRICT}#rogue")] {
        let rogue = gateway_core::crypto::SigningKey::from_secret(alg, &[77; 32]).expect("key");
        let forged = seal("0193a6f0-0000-7000-8000-0000000000b1", DISTRICT, &records[20..22], &(rogue, kid));
        let resp = post(&forged).await.expect("post");
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.json::<Value>().await.expect("body")["error"]["code"], "bad_signature");
    }
    // Signed by the district's own key, at a time outside the key's validity window.
    let outside = OffsetDateTime::now_utc() - time::Duration::days(2);
    let to = Addressing {
        envelope_id: "0193a6f0-0000-7000-8000-0000000000b2",
        sender: DISTRICT,
        receiver: CITY,
        seq: 9,
        created_at: outside,
    };
    let stale = serde_json::to_value(envelope::seal(&to, items(&records[20..22]), &key.0, &key.1)).expect("json");
    let resp = post(&stale).await.expect("post");
    assert_eq!(resp.status(), 403);
    let body = resp.json::<Value>().await.expect("body");
    assert!(body["error"]["message_en"].as_str().is_some_and(|m| m.contains("not valid at")), "{body}");
    // Addressed to the province, posted to the city.
    let to = Addressing { receiver: "cn-370000", created_at: OffsetDateTime::now_utc(), ..to };
    let misrouted = serde_json::to_value(envelope::seal(&to, items(&records[20..22]), &key.0, &key.1)).expect("json");
    let resp = post(&misrouted).await.expect("post");
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.expect("body")["error"]["code"], "wrong_receiver");
    // The district passes on a record of 信用东营's subtree (validly signed there): not its own
    // subtree, not its child or parent link, so refused.
    let foreign = Addressing {
        envelope_id: "0193a6f0-0000-7000-8000-0000000000b3",
        sender: "cn-370500",
        receiver: DISTRICT,
        seq: 1,
        created_at: OffsetDateTime::now_utc(),
    };
    let mut foreign_item = items(&records[23..24]);
    foreign_item[0].item["origin"] = json!("cn-370500");
    foreign_item[0].item["record_id"] = json!("0193a6f0-0000-7000-8000-0000000000c1");
    let at_dongying = envelope::seal(&foreign, foreign_item, &dongying.0, &dongying.1);
    let origin_proof =
        envelope::OriginProof { envelope: at_dongying.envelope.clone(), proof: at_dongying.items[0].proof.clone() };
    let relayed = vec![Outgoing { item: at_dongying.items[0].item.clone(), origin_proof: Some(origin_proof) }];
    let to = Addressing {
        envelope_id: "0193a6f0-0000-7000-8000-0000000000b4",
        sender: DISTRICT,
        receiver: CITY,
        seq: 10,
        created_at: OffsetDateTime::now_utc(),
    };
    let smuggled = serde_json::to_value(envelope::seal(&to, relayed, &key.0, &key.1)).expect("json");
    let resp = post(&smuggled).await.expect("post");
    assert_eq!(resp.status(), 403);
    let body = resp.json::<Value>().await.expect("body");
    assert_eq!(body["error"]["code"], "item_refused");
    assert!(body["error"]["message_en"].as_str().is_some_and(|m| m.contains("subtree")), "{body}");
    // None of these changed what the city holds.
    assert_eq!(city.ingest.store.count().await.expect("count"), 1000);

    // An origin that did not normalise an identifier (a padded USCC): that item is rejected,
    // its neighbour accepted. (The receiver cannot normalise it: the signed hash would break.)
    let fresh = own_records(&district, 2, 41).await;
    let fresh: Vec<StoredRecord> = fresh.into_iter().filter(|r| !records.iter().any(|o| o.seq == r.seq)).collect();
    let mut unnormalised = items(&fresh);
    let uscc = unnormalised[0].item["content"]["party_uscc"].as_str().expect("party_uscc").to_owned();
    unnormalised[0].item["content"]["party_uscc"] = json!(format!(" {uscc}"));
    let to = Addressing {
        envelope_id: "0193a6f0-0000-7000-8000-0000000000a4",
        sender: DISTRICT,
        receiver: CITY,
        seq: 8,
        created_at: OffsetDateTime::now_utc(),
    };
    let env = serde_json::to_value(envelope::seal(&to, unnormalised, &key.0, &key.1)).expect("json");
    let receipt: Value = post(&env).await.expect("post").json().await.expect("receipt");
    let body =
        gateway_core::jws::Jws::decode(&serde_json::from_value(receipt).expect("jws"), "credit-gateway/receipt+v1")
            .expect("receipt")
            .body;
    assert_eq!(body["outcomes"][0]["status"], "rejected");
    assert_eq!(body["outcomes"][0]["errors"][0]["rule"], "item.not_normalised");
    assert_eq!(body["outcomes"][1]["status"], "accepted");
    assert_eq!(city.ingest.store.count().await.expect("count"), 1001);

    // Held and new records in one envelope: the first try to insert them all is undone, then
    // each is judged; the new ones are stored once, after what was there, in envelope order.
    let all = own_records(&district, 5, 42).await;
    let new = &all[all.len() - 5..];
    let mixed: Vec<StoredRecord> = records[995..].iter().chain(new).cloned().collect();
    let answer = district.send(CITY, &url, &mixed, OffsetDateTime::now_utc()).await.expect("sent");
    let statuses: Vec<&str> = answer.outcomes.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(statuses, [["duplicate"; 5], ["accepted"; 5]].concat());
    let at_city = testkit::all_records(&city.ingest.store, 5_000).await;
    assert_eq!(at_city.len(), 1006);
    let last: Vec<_> = at_city[1001..].iter().map(|r| r.record_id).collect();
    assert_eq!(last, new.iter().map(|r| r.record_id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_district_to_city() {
    run(Alg::EdDsa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_district_to_city() {
    run(Alg::Sm2Sm3).await;
}
