//! Store-and-forward through the demo hierarchy 周村区 → 信用淄博 → 信用山东 → 信用中国, four
//! real nodes over mutual TLS with their relays running: records reach national exactly once
//! with a complete trail; a repair raised at national reaches the origin district and every
//! node between; an objection suspends and its resolution withdraws the record everywhere; a
//! record the parent refuses is dead-lettered with the reason and can be resent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use credit_gateway::bench::synthetic_records;
use credit_gateway::config::RelayConfig;
use credit_gateway::interchange::Node;
use credit_gateway::relay::Relay;
use gateway_core::crypto::Alg;
use serde_json::{Value, json};
use time::OffsetDateTime;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";
const PROVINCE: &str = "cn-370000";
const NATIONAL: &str = "cn-000000";
const CHAIN: [&str; 4] = [DISTRICT, CITY, PROVINCE, NATIONAL];

/// The four nodes of the chain, serving mTLS with their relays running, in chain order: their
/// federation handles, relays (dropping one stops it) and application states.
async fn chain(root: &Path, pki: &Path) -> (Vec<Node>, Vec<Relay>, Vec<testkit::Running>) {
    let (running, nodes, relays) = testkit::federation(root, pki, &CHAIN, |_, _| {}).await;
    (nodes, relays, running)
}

/// A lifecycle event from a shipped valid example, aimed at `target` (record id, origin).
fn event(example: &str, target_id: &str, target_origin: &str) -> Value {
    let path = testkit::repo_dir().join("schemas").join(example);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).expect("example")).expect("json");
    v["target_record_id"] = json!(target_id);
    v["target_origin"] = json!(target_origin);
    v["target_version"] = json!(1);
    v
}

async fn push(node: &Node, records: &[Value]) -> Value {
    let body = serde_json::to_vec(records).expect("json");
    let result = node.ingest.push(body.into(), OffsetDateTime::now_utc()).await.expect("push");
    serde_json::to_value(result).expect("json")
}

async fn state_everywhere(nodes: &[Node], record_id: uuid::Uuid, state: &str) -> bool {
    for n in nodes {
        match n.ingest.store.trail(record_id).await.expect("trail") {
            Some(t) if t.state.state == state => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_reach_national_and_lifecycle_events_reach_every_holder() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (nodes, _relays, apps) = chain(dir.path(), &pki).await;
    let [district, city, province, national] = [&nodes[0], &nodes[1], &nodes[2], &nodes[3]];

    let answer = push(district, &synthetic_records(300, 41)).await;
    assert_eq!(answer["accepted"], 300, "{answer}");
    testkit::eventually("300 records at national", Duration::from_secs(60), async || {
        national.ingest.store.count().await.expect("count") == 300
    })
    .await;
    // Exactly once: the same 300 record versions at every level.
    let ids = |records: Vec<gateway_store::StoredRecord>| {
        let mut v: Vec<_> = records.into_iter().map(|r| (r.record_id, r.version)).collect();
        v.sort();
        v
    };
    let at_district = ids(testkit::all_records(&district.ingest.store, 1000).await);
    for n in [city, province, national] {
        assert_eq!(ids(testkit::all_records(&n.ingest.store, 1000).await), at_district, "{}", n.member_id());
    }

    // The trail at the city: arrived from the district, forwarded to the province with its
    // signed acknowledgement, published by the city's sink.
    let (record_id, _) = at_district[7];
    testkit::eventually("the city's publication and the province's receipts", Duration::from_secs(30), async || {
        city.ingest
            .store
            .trail(record_id)
            .await
            .expect("trail")
            .is_some_and(|t| t.versions[0].published_at.is_some() && !t.versions[0].forwarded.is_empty())
    })
    .await;
    let trail = city.ingest.store.trail(record_id).await.expect("trail").expect("held");
    let v = &trail.versions[0];
    assert_eq!(v.arrived_from.as_deref(), Some(DISTRICT));
    assert_eq!(v.forwarded.len(), 1, "{trail:?}");
    assert_eq!((v.forwarded[0].destination.as_str(), v.forwarded[0].status.as_str()), (PROVINCE, "accepted"));
    assert!(!v.forwarded[0].acknowledged_at.is_empty());

    // An event about a record the node does not hold is refused, naming the field.
    let stray = event("repair/valid/national_window_tax_penalty.json", &uuid::Uuid::now_v7().to_string(), DISTRICT);
    let answer = push(national, &[stray]).await;
    assert_eq!(answer["outcomes"][0]["errors"][0]["rule"], "event.target_unknown", "{answer}");
    assert_eq!(answer["outcomes"][0]["errors"][0]["pointer"], "/target_record_id");

    // A repair raised at national reaches the origin district and everything between.
    let repair = event("repair/valid/national_window_tax_penalty.json", &record_id.to_string(), DISTRICT);
    assert_eq!(push(national, &[repair]).await["accepted"], 1);
    testkit::eventually("the repair at every node", Duration::from_secs(30), async || {
        state_everywhere(&nodes, record_id, "repaired").await
    })
    .await;
    let trail = district.ingest.store.trail(record_id).await.expect("trail").expect("held");
    assert_eq!(trail.events.len(), 1);
    assert_eq!((trail.events[0].event_type.as_str(), trail.events[0].origin.as_str()), ("repair", NATIONAL));
    // Repairs are due at every holder within 3 working days: at the city, the hop down to the
    // district lists this repair (acknowledged) and nothing else — no 双公示 record goes down.
    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    let q = credit_gateway::sla::SlaQuery {
        since: Some(time::macros::date!(2020 - 01 - 01)),
        ..credit_gateway::sla::SlaQuery::new(DISTRICT, today)
    };
    testkit::eventually("the district's receipt for the repair at the city", Duration::from_secs(30), async || {
        let view = credit_gateway::sla::view(&apps[1].app.sla, &q).await.expect("view");
        view.records.len() == 1 && view.records[0].record_type == "repair" && view.records[0].published_at.is_some()
    })
    .await;

    // An objection opened at the district suspends sanctions everywhere; upheld at the city
    // with a withdrawal, the record is withdrawn everywhere.
    let (disputed, _) = at_district[8];
    let mut opened = event("objection_opened/valid/provincial_list_suspended.json", &disputed.to_string(), DISTRICT);
    opened["sanctions_suspended"] = json!(true);
    opened["decided_on"] = json!("2026-11-02");
    assert_eq!(push(district, &[opened.clone()]).await["accepted"], 1);
    testkit::eventually("the objection at every node", Duration::from_secs(30), async || {
        state_everywhere(&nodes, disputed, "disputed").await
    })
    .await;
    for n in &nodes {
        let t = n.ingest.store.trail(disputed).await.expect("trail").expect("held");
        assert!(t.state.sanctions_suspended, "{}: {:?}", n.member_id(), t.state);
    }
    let mut resolved =
        event("objection_resolved/valid/city_penalty_upheld_withdrawn.json", &disputed.to_string(), DISTRICT);
    resolved["objection_id"] = opened["objection_id"].clone();
    resolved["decided_on"] = json!("2026-11-16");
    assert_eq!(push(city, &[resolved]).await["accepted"], 1);
    testkit::eventually("the withdrawal at every node", Duration::from_secs(30), async || {
        state_everywhere(&nodes, disputed, "withdrawn").await
    })
    .await;
    for n in &nodes {
        let t = n.ingest.store.trail(disputed).await.expect("trail").expect("held");
        assert!(!t.state.sanctions_suspended, "{}: resolution lifts the suspension", n.member_id());
        assert!(n.ingest.store.dead_letters(None, 10).await.expect("dead letters").is_empty());
    }
    // Events were delivered once each: 300 records + 3 events at every node.
    for n in &nodes {
        assert_eq!(n.ingest.store.count().await.expect("count"), 303, "{}", n.member_id());
    }
}

/// Pull mode (前置机 style): the district cannot be called; it collects the events addressed
/// to it from the city and returns signed receipts, while its records still go up by push.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_behind_a_firewall_collects_its_events() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let city_relay =
        RelayConfig { pull_children: vec![DISTRICT.into()], ..testkit::quick_relay(&dir.path().join("city")) };
    let district_relay = RelayConfig {
        pull_from_parent: true,
        pull_interval_ms: 20,
        ..testkit::quick_relay(&dir.path().join("district"))
    };
    let city_app = testkit::federation_node(&pki, CITY, &dir.path().join("city"), &[], |c| {
        c.relay = RelayConfig { enabled: false, ..city_relay.clone() };
    })
    .await;
    let city_port = city_app.federation_port.expect("port");
    let district_app = testkit::federation_node(&pki, DISTRICT, &dir.path().join("district"), &[], |c| {
        c.relay = RelayConfig { enabled: false, ..district_relay.clone() };
    })
    .await;
    let (mut city, mut district) = (city_app.node(), district_app.node());
    // Nothing listens where the city would push to the district.
    city.identity.peers =
        Arc::new([(DISTRICT.to_owned(), format!("https://localhost:{}", testkit::free_port()))].into());
    district.identity.peers = Arc::new([(CITY.to_owned(), format!("https://localhost:{city_port}"))].into());
    let _relays = [
        Relay::start(city.clone(), &city_app.app.relay, city_relay),
        Relay::start(district.clone(), &district_app.app.relay, district_relay),
    ];

    assert_eq!(push(&district, &synthetic_records(20, 77)).await["accepted"], 20);
    testkit::eventually("the records at the city", Duration::from_secs(30), async || {
        city.ingest.store.count().await.expect("count") == 20
    })
    .await;
    let record_id = testkit::all_records(&district.ingest.store, 100).await[3].record_id;
    let repair = event("repair/valid/penalty_full_repair_2026.json", &record_id.to_string(), DISTRICT);
    assert_eq!(push(&city, &[repair]).await["accepted"], 1);
    testkit::eventually("the repair collected by the district", Duration::from_secs(30), async || {
        state_everywhere(&[city.clone(), district.clone()], record_id, "repaired").await
    })
    .await;
    // The city holds the district's signed receipt for the collected envelope (it settles
    // just after the district has stored the event).
    let events = city.ingest.store.trail(record_id).await.expect("trail").expect("held").events;
    let event_id: uuid::Uuid = events[0].record_id.parse().expect("uuid");
    testkit::eventually("the district's receipt at the city", Duration::from_secs(30), async || {
        let trail = city.ingest.store.trail(event_id).await.expect("trail").expect("held");
        trail.versions[0].forwarded.iter().any(|h| h.destination == DISTRICT && h.status == "accepted")
    })
    .await;
    assert_eq!(city_app.app.relay.status.snapshot()[DISTRICT].consecutive_failures, 0);
}
