//! `publicity_expired` raised by the origin node when a penalty's publicity period has ended
//! (its own `publicity_end_date`, or the longest period of the rules in force on its decision
//! date): once, through the push path, leaving the record `expired`.

mod common;

use std::path::Path;

use credit_gateway::bench::synthetic_records;
use serde_json::Value;
use time::macros::date;

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/admin_penalty/valid").join(name);
    serde_json::from_slice(&std::fs::read(path).expect("example")).expect("json")
}

#[tokio::test]
async fn ended_publicity_periods_raise_one_expiry_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = common::gateway(dir.path()).await;
    // Ended: its own end date 2025-09-18. Running: decided in 2026 under the 2026 rules (a
    // general penalty is published for a year).
    let ended = example("legal_entity_food_fine_confiscation.json");
    let mut records = vec![ended];
    records.extend(synthetic_records(20, 3).into_iter().filter(|r| r["record_type"] == "admin_penalty"));
    let body = serde_json::to_vec(&records).expect("json");
    let answer = gw.push(body.into(), time::OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!(answer.rejected, 0);
    let ended_id = answer.outcomes[0].record_id.expect("id");

    let today = date!(2026 - 11 - 22);
    assert_eq!(gw.raise_publicity_expiries(today).await.expect("raise"), 1);
    let trail = gw.store.trail(ended_id).await.expect("trail").expect("held");
    assert_eq!(trail.state.state, "expired");
    assert_eq!(trail.events.len(), 1);
    assert_eq!(trail.events[0].event_type, "publicity_expired");
    for outcome in &answer.outcomes[1..] {
        let t = gw.store.trail(outcome.record_id.expect("id")).await.expect("trail").expect("held");
        assert_eq!(t.state.state, "active", "still within its period");
    }
    // Once only.
    assert_eq!(gw.raise_publicity_expiries(today).await.expect("raise again"), 0);
    // The event names the rules and the day publicity ended.
    let query = credit_gateway::store::RecordQuery {
        record_type: Some(gateway_core::record::RecordType::PublicityExpired),
        limit: 10,
        ..Default::default()
    };
    let events = gw.store.query(&query).await.expect("query");
    let content: Value = serde_json::from_str(&events[0].content).expect("json");
    assert_eq!(content["expired_on"], "2025-09-18");
    assert_eq!(content["regime"], "2023-05-01");
}
