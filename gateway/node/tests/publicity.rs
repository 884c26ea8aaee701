//! `publicity_expired` raised by the origin node when a penalty's publicity period has ended
//! (its own `publicity_end_date`, or the longest period of the rules in force on its decision
//! date): once, through the push path, leaving the record `expired`.

use std::path::Path;

use credit_gateway::bench::synthetic_records;
use credit_gateway::jobs::expiry;
use serde_json::Value;
use time::macros::datetime;

fn example(name: &str) -> Value {
    let path = testkit::repo_dir().join("schemas/admin_penalty/valid").join(name);
    serde_json::from_slice(&std::fs::read(path).expect("example")).expect("json")
}

#[tokio::test]
async fn ended_publicity_periods_raise_one_expiry_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = credit_gateway::server::open_ingest(&testkit::config(dir.path())).await.expect("push path");
    // Ended: its own end date 2025-09-18. Running: decided in 2026 under the 2026 rules (a
    // general penalty is published for a year).
    let ended = example("legal_entity_food_fine_confiscation.json");
    let mut records = vec![ended];
    records.extend(synthetic_records(20, 3).into_iter().filter(|r| r["record_type"] == "admin_penalty"));
    let body = serde_json::to_vec(&records).expect("json");
    let answer = gw.push(body.into(), time::OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!(answer.rejected, 0);
    let ended_id = answer.outcomes[0].record_id.expect("id");

    let now = datetime!(2026 - 11 - 22 04:00 UTC);
    assert_eq!(expiry::run_once(&gw, now).await.expect("raise"), 1);
    let trail = gw.store.trail(ended_id).await.expect("trail").expect("held");
    assert_eq!(trail.state.state, "expired");
    assert_eq!(trail.events.len(), 1);
    assert_eq!(trail.events[0].event_type, "publicity_expired");
    for outcome in &answer.outcomes[1..] {
        let t = gw.store.trail(outcome.record_id.expect("id")).await.expect("trail").expect("held");
        assert_eq!(t.state.state, "active", "still within its period");
    }
    // Once only.
    assert_eq!(expiry::run_once(&gw, now).await.expect("raise again"), 0);
    // The event names the rules and the day publicity ended.
    let query = gateway_store::RecordQuery {
        record_type: Some(gateway_core::record::RecordType::PublicityExpired),
        limit: 10,
        ..Default::default()
    };
    let events = gw.store.query(&query).await.expect("query");
    let content: Value = serde_json::from_str(&events[0].content).expect("json");
    assert_eq!(content["expired_on"], "2025-09-18");
    assert_eq!(content["regime"], "2023-05-01");
}

/// More expired penalties than a batch may hold (5,000) and than a candidate page (2,000):
/// one pass still marks every one expired, in batches the node accepts.
#[tokio::test]
async fn one_pass_expires_twenty_thousand_pending_penalties() {
    const PENDING: usize = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = credit_gateway::server::open_ingest(&testkit::config(dir.path())).await.expect("push path");
    // Penalties decided in March–May 2026 whose own publicity ended on 2026-08-31; licences in
    // between are no candidates.
    let mut records = synthetic_records(PENDING * 4 / 3 + 4, 7);
    let mut penalties = 0;
    for (i, r) in records.iter_mut().enumerate() {
        if r["record_type"] == "admin_penalty" && penalties < PENDING {
            penalties += 1;
            let decided = time::macros::date!(2026 - 03 - 02) + time::Duration::days((i % 90) as i64);
            r["decision_date"] = gateway_core::date::format_date(decided).into();
            r["publicity_end_date"] = "2026-08-31".into();
        } else {
            r["decision_date"] = "2026-06-01".into();
            r["record_type"] = "admin_license".into();
        }
    }
    records.retain(|r| r["record_type"] == "admin_penalty");
    assert_eq!(records.len(), PENDING);
    for batch in records.chunks(5_000) {
        let answer = gw.push(serde_json::to_vec(batch).expect("json").into(), now()).await.expect("push");
        assert_eq!(answer.accepted, batch.len(), "{:?}", answer.outcomes.iter().find(|o| !o.errors.is_empty()));
    }

    assert_eq!(expiry::run_once(&gw, now()).await.expect("one pass"), PENDING);
    let expired = expired_states(&dir.path().join("gateway.sqlite")).await;
    assert_eq!(expired, PENDING as i64, "every pending penalty is marked expired");
    assert_eq!(expiry::run_once(&gw, now()).await.expect("again"), 0, "nothing is raised twice");
}

fn now() -> time::OffsetDateTime {
    datetime!(2026 - 12 - 01 04:00 UTC)
}

/// Records whose state is `expired`, read from the database file itself.
async fn expired_states(db: &Path) -> i64 {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("open");
    let row = sqlx::query("SELECT COUNT(*) FROM record_states WHERE state = 'expired'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    row.try_get(0).expect("count")
}
