//! The signed interchange in the core, for both signature suites: a demo federation,
//! envelopes relayed over two hops with origin proofs, receipts, and every attack the
//! signed-interchange issue lists that the core can see (TLS attacks live in the node).

mod support;

use gateway_core::crypto::{Alg, SigningKey};
use gateway_core::interchange::envelope::{self, Addressing, Envelope, EnvelopeError, Outgoing, Receiving};
use gateway_core::interchange::evidence::{self, Bundle, EvidenceError, Hop, HopFailure};
use gateway_core::interchange::receipt::{self, ReceiptBody, ReceiptError, ReceiptOutcome, Sent};
use gateway_core::interchange::registry::{
    Freshness, KeyError, Level, Member, MemberKey, Registry, RegistryBody, RegistryError, RootKey,
};
use gateway_core::interchange::{format_time, parse_time};
use gateway_core::jws::{self, b64u};
use serde_json::{Value, json};
use support::assert_matches_schema;
use time::{Duration, OffsetDateTime};

const NOW: &str = "2026-11-22T08:30:00.000Z";

fn now() -> OffsetDateTime {
    parse_time(NOW).expect("time")
}

/// Deterministic secrets: tests need no randomness.
fn key(alg: Alg, n: u8) -> SigningKey {
    SigningKey::from_secret(alg, &[n; 32]).expect("key")
}

struct Federation {
    alg: Alg,
    root: SigningKey,
    registry: Registry,
}

/// (member, name, level, parent, secret seed)
const MEMBERS: &[(&str, &str, Level, Option<&str>, u8)] = &[
    ("cn-370306", "淄博市周村区公共信用信息平台", Level::District, Some("cn-370300"), 11),
    ("cn-370302", "淄博市淄川区公共信用信息平台", Level::District, Some("cn-370300"), 12),
    ("cn-370300", "信用淄博", Level::Municipal, Some("cn-370000"), 13),
    ("cn-370500", "信用东营", Level::Municipal, Some("cn-370000"), 14),
    ("cn-370000", "信用山东", Level::Provincial, Some("cn-000000"), 15),
    ("cn-000000", "信用中国", Level::National, None, 16),
];

fn member_key(alg: Alg, id: &str) -> SigningKey {
    let seed = MEMBERS.iter().find(|m| m.0 == id).expect("member").4;
    key(alg, seed)
}

fn registry_body(alg: Alg, version: u64, root: &SigningKey) -> RegistryBody {
    let members = MEMBERS
        .iter()
        .map(|&(id, name, level, parent, seed)| Member {
            member_id: id.into(),
            name: name.into(),
            level,
            region_code: id[3..9].into(),
            parent: parent.map(Into::into),
            partners: match id {
                "cn-370300" => vec!["cn-370500".into()],
                "cn-370500" => vec!["cn-370300".into()],
                _ => vec![],
            },
            endpoint: format!("https://{id}.example.invalid:8443"),
            tls_cert_sha256: "0".repeat(64),
            keys: vec![
                MemberKey {
                    kid: format!("{id}#2026a"),
                    alg: alg.as_str().into(),
                    public_key: b64u(&key(alg, seed).public_key().bytes),
                    valid_from: "2026-01-01T00:00:00.000Z".into(),
                    valid_to: "2026-12-31T23:59:59.999Z".into(),
                    sm2_id: None,
                },
                // An expired key, to show the validity window is enforced.
                MemberKey {
                    kid: format!("{id}#2025a"),
                    alg: alg.as_str().into(),
                    public_key: b64u(&key(alg, seed + 100).public_key().bytes),
                    valid_from: "2025-01-01T00:00:00.000Z".into(),
                    valid_to: "2025-12-31T23:59:59.999Z".into(),
                    sm2_id: None,
                },
            ],
            roles: vec!["submit".into()],
        })
        .collect();
    RegistryBody {
        federation: "cn-credit".into(),
        version,
        issued_at: "2026-11-01T00:00:00.000Z".into(),
        expires_at: "2026-12-01T00:00:00.000Z".into(),
        roots: vec![root_key(root)],
        members,
        agreements: vec![],
        adapters: vec![],
        measures: vec![],
    }
}

fn root_key(root: &SigningKey) -> RootKey {
    RootKey { kid: "root#2026".into(), alg: root.alg().as_str().into(), public_key: b64u(&root.public_key().bytes) }
}

fn signed(body: &RegistryBody, root: &SigningKey) -> jws::Jws {
    jws::sign(
        gateway_core::interchange::registry::REGISTRY_TYP,
        "root#2026",
        &serde_json::to_value(body).expect("json"),
        root,
    )
}

fn federation(alg: Alg) -> Federation {
    let root = key(alg, 1);
    let jws = signed(&registry_body(alg, 17, &root), &root);
    let (registry, freshness) =
        Registry::verify(&jws, &[root_key(&root)], None, now(), Duration::days(7)).expect("registry verifies");
    assert_eq!(freshness, Freshness::Current);
    Federation { alg, root, registry }
}

fn item(origin: &str, n: u32) -> Value {
    json!({"origin": origin, "record_id": format!("0193a6f0-0000-7000-8000-{n:012}"), "version": 1,
           "record_type": "admin_penalty", "content": {"record_type": "admin_penalty", "decision_doc_no": format!("周市监罚〔2026〕{n}号")}})
}

fn send(fed: &Federation, from: &str, to: &str, items: Vec<Outgoing>, created_at: OffsetDateTime) -> Envelope {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("0193a6f0-0000-7000-8000-{n:012}");
    let addressing = Addressing { envelope_id: &id, sender: from, receiver: to, seq: 1, created_at };
    envelope::seal(&addressing, items, &member_key(fed.alg, from), &format!("{from}#2026a"))
}

fn receiving<'a>(fed: &'a Federation, me: &'a str) -> Receiving<'a> {
    Receiving { registry: &fed.registry, me, now: now(), clock_window: Duration::minutes(5) }
}

fn fresh(origin: &str, n: u32) -> Vec<Outgoing> {
    (0..n).map(|i| Outgoing { item: item(origin, i), origin_proof: None }).collect()
}

/// Runs `check` once per signature suite.
fn for_each_suite(check: impl Fn(&Federation)) {
    for alg in [Alg::EdDsa, Alg::Sm2Sm3] {
        check(&federation(alg));
    }
}

#[test]
fn relayed_over_two_hops_every_item_keeps_its_origin_proof() {
    for_each_suite(|fed| {
        let first = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 1000), now());
        let at_city = envelope::open(&first, &receiving(fed, "cn-370300")).expect("city opens");
        assert_eq!(at_city.items.len(), 1000);

        // The city regroups half of them with its own records and sends them up.
        let mut up: Vec<Outgoing> = at_city
            .items
            .iter()
            .enumerate()
            .step_by(2)
            .map(|(i, o)| Outgoing { item: o.item.clone(), origin_proof: Some(at_city.origin_proof(i)) })
            .collect();
        up.extend(fresh("cn-370300", 3));
        let second = send(fed, "cn-370300", "cn-370000", up, now());
        let at_province = envelope::open(&second, &receiving(fed, "cn-370000")).expect("province opens");
        assert_eq!(at_province.items.len(), 503);
        let relayed = &at_province.items[7];
        assert_eq!(relayed.origin, "cn-370306");
        // The origin proof is the district's own envelope, signed by the district.
        let origin_proof = relayed.origin_proof.as_ref().expect("a relayed item keeps its origin proof");
        let (origin_header, _) = envelope::verify_header(&origin_proof.envelope, &fed.registry).expect("origin");
        assert_eq!(origin_header.sender, "cn-370306");
        assert!(envelope::verify_proof(&origin_proof.proof, &relayed.item_hash, &origin_header));
    });
}

#[test]
fn sealing_from_text_gives_the_same_envelope_as_sealing_values() {
    // Ed25519 signatures are deterministic, so both ways must produce identical documents.
    let fed = federation(Alg::EdDsa);
    let first = send(&fed, "cn-370306", "cn-370300", fresh("cn-370306", 5), now());
    let at_city = envelope::open(&first, &receiving(&fed, "cn-370300")).expect("city opens");
    let mut up: Vec<Outgoing> = (0..5)
        .map(|i| Outgoing { item: at_city.items[i].item.clone(), origin_proof: Some(at_city.origin_proof(i)) })
        .collect();
    up.extend(fresh("cn-370300", 2));
    let texts: Vec<String> = up.iter().map(|o| gateway_core::canonical::canonical_string(&o.item)).collect();
    let hashes: Vec<_> = texts.iter().map(|t| gateway_core::canonical::Sha256Digest::of(t.as_bytes())).collect();
    let proofs: Vec<Option<String>> =
        up.iter().map(|o| o.origin_proof.as_ref().map(|p| serde_json::to_string(p).expect("json"))).collect();
    let to = Addressing {
        envelope_id: "0193a6f0-0000-7000-8000-00000000beef",
        sender: "cn-370300",
        receiver: "cn-370000",
        seq: 9,
        created_at: now(),
    };
    let key = member_key(Alg::EdDsa, "cn-370300");
    let (jws, body) = envelope::seal_text(&to, &texts, &proofs, &hashes, &key, "cn-370300#2026a");
    let from_values = envelope::seal_hashed(&to, up, &hashes, &key, "cn-370300#2026a");
    let from_text: Envelope = serde_json::from_slice(&body).expect("the body is an envelope");
    assert_eq!(from_text, from_values);
    assert_eq!(jws, from_values.envelope);
    envelope::open(&from_text, &receiving(&fed, "cn-370000")).expect("the province opens it");
}

#[test]
fn a_forged_copy_of_a_verified_origin_envelope_is_refused() {
    for_each_suite(|fed| {
        let first = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 4), now());
        let at_city = envelope::open(&first, &receiving(fed, "cn-370300")).expect("city opens");
        let mut up: Vec<Outgoing> = (0..4)
            .map(|i| Outgoing { item: at_city.items[i].item.clone(), origin_proof: Some(at_city.origin_proof(i)) })
            .collect();
        // The second item carries the same origin envelope with another signature: the first
        // item's successful check must not vouch for it.
        let forged = up[1].origin_proof.as_mut().expect("proof");
        let mut sig = forged.envelope.signature.clone().into_bytes();
        sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
        forged.envelope.signature = String::from_utf8(sig).expect("ascii");
        let second = send(fed, "cn-370300", "cn-370000", up, now());
        let err = envelope::open(&second, &receiving(fed, "cn-370000")).expect_err("forged origin signature");
        assert!(matches!(err, envelope::EnvelopeError::Item { index: 1, .. }), "{err:?}");
    });
}

#[test]
fn receipts_verify_and_forged_ones_do_not() {
    for_each_suite(|fed| {
        let env = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 3), now());
        let opened = envelope::open(&env, &receiving(fed, "cn-370300")).expect("opens");
        let body = ReceiptBody {
            envelope_id: opened.header.envelope_id.clone(),
            envelope_digest: opened.digest.to_hex(),
            sender: "cn-370306".into(),
            receiver: "cn-370300".into(),
            received_at: format_time(now()),
            outcomes: opened
                .items
                .iter()
                .enumerate()
                .map(|(i, o)| ReceiptOutcome {
                    index: i as u64,
                    item_hash: o.item_hash.to_hex(),
                    status: "accepted".into(),
                    errors: vec![],
                })
                .collect(),
        };
        let hashes: Vec<_> = opened.items.iter().map(|o| o.item_hash).collect();
        let sent = Sent {
            envelope_id: &opened.header.envelope_id,
            digest: opened.digest,
            sender: "cn-370306",
            receiver: "cn-370300",
            item_hashes: &hashes,
        };
        let good = receipt::sign_receipt(&body, &member_key(fed.alg, "cn-370300"), "cn-370300#2026a");
        assert_eq!(receipt::verify_receipt(&good, &sent, &fed.registry).expect("verifies"), body);

        // Signed by someone other than the receiver.
        let forged = receipt::sign_receipt(&body, &member_key(fed.alg, "cn-370500"), "cn-370500#2026a");
        assert!(matches!(
            receipt::verify_receipt(&forged, &sent, &fed.registry),
            Err(ReceiptError::Key(KeyError::WrongMember { .. }))
        ));
        // An honest receipt for a different envelope.
        let mut other = body.clone();
        other.outcomes[1].item_hash = "0".repeat(64);
        let other = receipt::sign_receipt(&other, &member_key(fed.alg, "cn-370300"), "cn-370300#2026a");
        assert!(matches!(receipt::verify_receipt(&other, &sent, &fed.registry), Err(ReceiptError::Mismatch(_))));
    });
}

#[test]
fn tampered_items_and_headers_are_refused() {
    for_each_suite(|fed| {
        let env = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 10), now());
        let mut tampered = env.clone();
        tampered.items[4].item["content"]["decision_doc_no"] = json!("周市监罚〔2026〕5号 ");
        assert!(matches!(
            envelope::open(&tampered, &receiving(fed, "cn-370300")),
            Err(EnvelopeError::Item { .. } | EnvelopeError::MerkleMismatch)
        ));
        let mut dropped = env.clone();
        dropped.items.pop();
        assert!(matches!(
            envelope::open(&dropped, &receiving(fed, "cn-370300")),
            Err(EnvelopeError::CountMismatch { .. })
        ));
        // One byte flipped in the signed header.
        let mut header = env.clone();
        let mut bytes = jws::from_b64u(&header.envelope.payload).expect("b64");
        let at = bytes.iter().position(|&b| b == b'3').expect("a digit");
        bytes[at] = b'4';
        header.envelope.payload = b64u(&bytes);
        assert_eq!(envelope::open(&header, &receiving(fed, "cn-370300")).unwrap_err(), EnvelopeError::BadSignature);
    });
}

#[test]
fn keys_must_be_registered_in_their_window_and_the_senders_own() {
    for_each_suite(|fed| {
        let items = || fresh("cn-370306", 2);
        let to = Addressing {
            envelope_id: "0193a6f0-0000-7000-8000-00000000e001",
            sender: "cn-370306",
            receiver: "cn-370300",
            seq: 1,
            created_at: now(),
        };
        let open = |env: &Envelope| envelope::open(env, &receiving(fed, "cn-370300"));

        let unregistered = envelope::seal(&to, items(), &key(fed.alg, 99), "cn-370306#rogue");
        let err = open(&unregistered).unwrap_err();
        assert!(matches!(err, EnvelopeError::Key(KeyError::Unknown { .. })), "{err:?}");

        let expired = envelope::seal(&to, items(), &key(fed.alg, 111), "cn-370306#2025a");
        assert!(matches!(open(&expired), Err(EnvelopeError::Key(KeyError::OutsideWindow { .. }))));

        let borrowed = envelope::seal(&to, items(), &member_key(fed.alg, "cn-370500"), "cn-370500#2026a");
        assert!(matches!(open(&borrowed), Err(EnvelopeError::Key(KeyError::WrongMember { .. }))));

        // The registered kid with someone else's private key.
        let impostor = envelope::seal(&to, items(), &key(fed.alg, 98), "cn-370306#2026a");
        assert_eq!(open(&impostor).unwrap_err(), EnvelopeError::BadSignature);
    });
}

#[test]
fn addressing_time_and_subtree_are_enforced() {
    for_each_suite(|fed| {
        let env = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 2), now());
        assert!(matches!(envelope::open(&env, &receiving(fed, "cn-370500")), Err(EnvelopeError::WrongReceiver { .. })));
        let stale = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 2), now() - Duration::hours(1));
        assert!(matches!(
            envelope::open(&stale, &receiving(fed, "cn-370300")),
            Err(EnvelopeError::OutsideClockWindow { .. })
        ));
        // 周村区 passes off a record that originated at 淄川区 as if it were its own to forward.
        let foreign = send(fed, "cn-370306", "cn-370300", fresh("cn-370302", 1), now());
        let err = envelope::open(&foreign, &receiving(fed, "cn-370300")).unwrap_err();
        assert!(matches!(err, EnvelopeError::Item { index: 0, .. }), "{err}");
        // ... and with 淄川区's genuine origin proof, still not its subtree to forward.
        let zichuan = send(fed, "cn-370302", "cn-370300", fresh("cn-370302", 1), now());
        let opened = envelope::open(&zichuan, &receiving(fed, "cn-370300")).expect("opens");
        let relay = vec![Outgoing { item: opened.items[0].item.clone(), origin_proof: Some(opened.origin_proof(0)) }];
        let smuggled = send(fed, "cn-370306", "cn-370300", relay, now());
        assert!(envelope::open(&smuggled, &receiving(fed, "cn-370300")).is_err());
    });
}

#[test]
fn registries_signed_otherwise_rolled_back_or_expired_are_refused() {
    for_each_suite(|fed| {
        let trusted = [root_key(&fed.root)];
        let body = registry_body(fed.alg, 18, &fed.root);
        let impostor = key(fed.alg, 2);
        let by_member = jws::sign(
            gateway_core::interchange::registry::REGISTRY_TYP,
            "root#2026",
            &serde_json::to_value(&body).expect("json"),
            &impostor,
        );
        assert_eq!(
            Registry::verify(&by_member, &trusted, Some(17), now(), Duration::days(7)).unwrap_err(),
            RegistryError::BadSignature
        );
        let by_other = jws::sign(
            gateway_core::interchange::registry::REGISTRY_TYP,
            "root#evil",
            &serde_json::to_value(&body).expect("json"),
            &impostor,
        );
        assert!(matches!(
            Registry::verify(&by_other, &trusted, Some(17), now(), Duration::days(7)),
            Err(RegistryError::UntrustedSigner { .. })
        ));
        let old = signed(&registry_body(fed.alg, 16, &fed.root), &fed.root);
        assert_eq!(
            Registry::verify(&old, &trusted, Some(17), now(), Duration::days(7)).unwrap_err(),
            RegistryError::Rollback { offered: 16, held: 17 }
        );
        let newer = signed(&body, &fed.root);
        let in_grace = parse_time("2026-12-03T00:00:00.000Z").expect("time");
        let (_, freshness) = Registry::verify(&newer, &trusted, Some(17), in_grace, Duration::days(7)).expect("grace");
        assert_eq!(freshness, Freshness::InGrace { expired_for: Duration::days(2) });
        let too_late = parse_time("2026-12-09T00:00:00.000Z").expect("time");
        assert!(matches!(
            Registry::verify(&newer, &trusted, Some(17), too_late, Duration::days(7)),
            Err(RegistryError::Expired { .. })
        ));
    });
}

/// What the code puts on the wire matches the published schemas.
#[test]
fn wire_documents_match_the_interchange_schemas() {
    for_each_suite(|fed| {
        assert_matches_schema(
            "registry",
            &fed.registry.jws.decode(gateway_core::interchange::registry::REGISTRY_TYP).expect("form").body,
        );
        let first = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 3), now());
        let opened = envelope::open(&first, &receiving(fed, "cn-370300")).expect("opens");
        let relay = opened
            .items
            .iter()
            .enumerate()
            .map(|(i, o)| Outgoing { item: o.item.clone(), origin_proof: Some(opened.origin_proof(i)) })
            .collect();
        let second = send(fed, "cn-370300", "cn-370000", relay, now());
        for env in [&first, &second] {
            assert_matches_schema("envelope", &serde_json::to_value(env).expect("json"));
            assert_matches_schema("jws", &serde_json::to_value(&env.envelope).expect("json"));
            let body = env.envelope.decode(envelope::ENVELOPE_TYP).expect("form").body;
            assert_matches_schema("envelope_header", &body);
        }
        let receipt = ReceiptBody {
            envelope_id: opened.header.envelope_id.clone(),
            envelope_digest: opened.digest.to_hex(),
            sender: "cn-370306".into(),
            receiver: "cn-370300".into(),
            received_at: format_time(now()),
            outcomes: vec![ReceiptOutcome {
                index: 0,
                item_hash: "a".repeat(64),
                status: "accepted".into(),
                errors: vec![],
            }],
        };
        assert_matches_schema("receipt", &serde_json::to_value(&receipt).expect("json"));
    });
}

/// The receiver's signed receipt for an opened envelope, every item with `status`.
fn receipt_for(fed: &Federation, opened: &envelope::Opened, status: &str) -> jws::Jws {
    let h = &opened.header;
    let body = ReceiptBody {
        envelope_id: h.envelope_id.clone(),
        envelope_digest: opened.digest.to_hex(),
        sender: h.sender.clone(),
        receiver: h.receiver.clone(),
        received_at: format_time(now()),
        outcomes: opened
            .items
            .iter()
            .enumerate()
            .map(|(i, o)| ReceiptOutcome {
                index: i as u64,
                item_hash: o.item_hash.to_hex(),
                status: status.into(),
                errors: vec![],
            })
            .collect(),
    };
    receipt::sign_receipt(&body, &member_key(fed.alg, &h.receiver), &format!("{}#2026a", h.receiver))
}

/// An item relayed 周村区 → 信用淄博 → 信用山东: its two hops as evidence, and the item.
fn two_hop_evidence(fed: &Federation) -> (Value, Vec<Hop>) {
    let first = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 5), now());
    let at_city = envelope::open(&first, &receiving(fed, "cn-370300")).expect("city opens");
    let up = vec![
        Outgoing { item: item("cn-370300", 900), origin_proof: None },
        Outgoing { item: at_city.items[3].item.clone(), origin_proof: Some(at_city.origin_proof(3)) },
    ];
    let second = send(fed, "cn-370300", "cn-370000", up, now());
    let at_province = envelope::open(&second, &receiving(fed, "cn-370000")).expect("province opens");
    let hops = vec![
        Hop {
            envelope: first.envelope.clone(),
            proof: at_city.items[3].proof.clone(),
            receipt: receipt_for(fed, &at_city, "accepted"),
        },
        Hop {
            envelope: second.envelope.clone(),
            proof: at_province.items[1].proof.clone(),
            receipt: receipt_for(fed, &at_province, "accepted"),
        },
    ];
    (at_city.items[3].item.clone(), hops)
}

fn verify_bundle(fed: &Federation, bundle: &Bundle) -> Result<evidence::Verified, EvidenceError> {
    evidence::verify(&serde_json::to_vec(bundle).expect("json"), &[root_key(&fed.root)])
}

#[test]
fn evidence_over_two_hops_verifies_and_names_what_fails() {
    for_each_suite(|fed| {
        let (item, hops) = two_hop_evidence(fed);
        let bundle = Bundle::assemble(item.clone(), hops, &fed.registry).expect("assemble");
        assert_matches_schema("evidence", &serde_json::to_value(&bundle).expect("json"));
        let verified = verify_bundle(fed, &bundle).expect("verifies");
        let path: Vec<_> = verified.hops.iter().map(|h| (h.sender.as_str(), h.receiver.as_str())).collect();
        assert_eq!(path, [("cn-370306", "cn-370300"), ("cn-370300", "cn-370000")]);
        assert_eq!(verified.origin, "cn-370306");

        let hop_failure = |b: &Bundle| match verify_bundle(fed, b) {
            Err(EvidenceError::Hop { index, failure }) => (index, failure),
            other => panic!("expected a hop failure, got {other:?}"),
        };
        // One changed character of the content: the proof no longer reaches the signed root.
        let mut tampered = bundle.clone();
        tampered.item["content"]["decision_doc_no"] = json!("周市监罚〔2026〕4号 ");
        assert_eq!(hop_failure(&tampered), (0, HopFailure::Proof));
        // Hops out of order.
        let mut swapped = bundle.clone();
        swapped.hops.reverse();
        assert!(matches!(hop_failure(&swapped), (0, HopFailure::NotFromOrigin { .. })));
        // A middle hop missing: the chain breaks.
        let mut gap = bundle.clone();
        gap.hops.insert(1, gap.hops[0].clone());
        assert!(matches!(hop_failure(&gap), (1, HopFailure::Broken { .. })));
        // A receipt from another hop.
        let mut wrong_receipt = bundle.clone();
        wrong_receipt.hops[1].receipt = bundle.hops[0].receipt.clone();
        assert!(matches!(hop_failure(&wrong_receipt), (1, HopFailure::Receipt(_))));
        // One flipped bit of the second envelope's signature.
        let mut forged = bundle.clone();
        let mut sig = jws::from_b64u(&forged.hops[1].envelope.signature).expect("b64");
        sig[5] ^= 1;
        forged.hops[1].envelope.signature = b64u(&sig);
        assert_eq!(hop_failure(&forged), (1, HopFailure::Envelope(EnvelopeError::BadSignature)));
        // A key missing from `keys`.
        let mut fewer = bundle.clone();
        fewer.keys.retain(|k| k.kid != "cn-370000#2026a");
        assert!(matches!(hop_failure(&fewer), (1, HopFailure::KeyNotInBundle { .. })));
        // A key that differs from the registry's.
        let mut changed = bundle.clone();
        changed.keys[0].valid_to = "2027-12-31T23:59:59.999Z".into();
        assert!(matches!(verify_bundle(fed, &changed), Err(EvidenceError::Key { index: 0, .. })));
        // A registry signed by a member instead of the root.
        let mut rogue = bundle.clone();
        let body = registry_body(fed.alg, 18, &fed.root);
        rogue.registry = jws::sign(
            gateway_core::interchange::registry::REGISTRY_TYP,
            "root#2026",
            &serde_json::to_value(&body).expect("json"),
            &member_key(fed.alg, "cn-370306"),
        );
        assert_eq!(verify_bundle(fed, &rogue), Err(EvidenceError::Registry(RegistryError::BadSignature)));
        // The receiver said "rejected": no evidence of acceptance.
        let (item2, mut hops2) = two_hop_evidence(fed);
        hops2.truncate(1);
        let decoded = hops2[0].receipt.decode(receipt::RECEIPT_TYP).expect("receipt");
        let mut body: ReceiptBody = serde_json::from_value(decoded.body).expect("body");
        for o in &mut body.outcomes {
            o.status = "rejected".into();
        }
        hops2[0].receipt = receipt::sign_receipt(&body, &member_key(fed.alg, "cn-370300"), "cn-370300#2026a");
        let refused = Bundle::assemble(item2, hops2, &fed.registry).expect("assemble");
        assert!(matches!(hop_failure(&refused), (0, HopFailure::NotAccepted { .. })));
    });
}

/// Found by the envelope fuzz target: the Merkle root held (it is recomputed from the items),
/// but an item's proof path, which `open` returned and `origin_proof` handed on, led elsewhere.
#[test]
fn an_item_whose_proof_path_leads_elsewhere_is_refused() {
    for_each_suite(|fed| {
        let mut env = send(fed, "cn-370306", "cn-370300", fresh("cn-370306", 4), now());
        envelope::open(&env, &receiving(fed, "cn-370300")).expect("the envelope as sealed opens");
        let first = env.items[2].proof.path[0].clone();
        env.items[2].proof.path[0] = first.chars().rev().collect();
        let err = envelope::open(&env, &receiving(fed, "cn-370300")).unwrap_err();
        assert!(matches!(err, EnvelopeError::Item { index: 2, .. }), "{err}");
    });
}
