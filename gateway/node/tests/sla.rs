//! Publication SLAs at a node, with "today" moved by hand across 国庆 2026: a record published
//! before its deadline is on time, one published after it or not at all by then is breached,
//! one with two working days or fewer left is at risk, and one due later is not listed yet.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use credit_gateway::bench::synthetic_records;
use credit_gateway::store::Settlement;
use gateway_core::sla::{SlaPolicy, SlaState};
use serde_json::Value;
use time::macros::date;

fn penalty(base: &Value, decided: &str, n: u32) -> Value {
    let mut r = base.clone();
    r["decision_date"] = decided.into();
    r["penalty_effective_until"] = "2027-06-30".into();
    r["decision_doc_no"] = format!("周市监罚〔2026〕SLA{n}号").into();
    r.as_object_mut().expect("object").remove("publicity_end_date");
    r
}

#[tokio::test]
async fn states_follow_the_deadline_on_the_official_calendar() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = common::gateway(dir.path()).await;
    let base = synthetic_records(8, 77).into_iter().find(|r| r["record_type"] == "admin_penalty").expect("a penalty");
    // Deadlines: 09-21 → 10-08 (across 中秋 and 国庆); 09-28 → 10-13; 09-30 → 10-15 (10-10 is a
    // 调休 working Saturday); 10-12 → 10-21.
    let decided = ["2026-09-21", "2026-09-21", "2026-09-28", "2026-09-28", "2026-09-30", "2026-10-12"];
    let records: Vec<Value> = decided.iter().zip(1..).map(|(d, n)| penalty(&base, d, n)).collect();
    let answer = gw
        .push(serde_json::to_vec(&records).expect("json").into(), time::OffsetDateTime::now_utc())
        .await
        .expect("push");
    assert_eq!(answer.accepted, records.len(), "{:?}", answer.outcomes);
    let deadlines: Vec<_> = answer.outcomes.iter().map(|o| o.publicity_deadline.clone().expect("deadline")).collect();
    assert_eq!(deadlines, ["2026-10-08", "2026-10-08", "2026-10-13", "2026-10-13", "2026-10-15", "2026-10-21"]);
    let ids: Vec<String> = answer.outcomes.iter().map(|o| o.record_id.expect("id").to_string()).collect();

    // The publication sink published the first on time (10-08, Beijing), the second a day
    // late, and the third on 10-12; the rest not yet.
    let queued = gw.store.queued_after(0, 100).await.expect("queue");
    let seq_of = |id: &str| queued.iter().find(|q| q.record_id.to_string() == id).expect("queued").clone();
    for (id, at) in [
        (&ids[0], "2026-10-08T01:00:00.000Z"),
        (&ids[1], "2026-10-09T01:00:00.000Z"),
        (&ids[2], "2026-10-12T01:00:00.000Z"),
    ] {
        let q = seq_of(id);
        let s = Settlement {
            published: vec![(q.seq, q.record_id, q.version, "x.jsonl".into())],
            at: at.into(),
            ..Settlement::default()
        };
        gw.store.settle("publication", s).await.expect("settle");
    }

    let view = credit_gateway::sla::view(&gw, "publication", date!(2026 - 10 - 13), SlaPolicy::default(), None, 100)
        .await
        .expect("view");
    let states: BTreeMap<&str, SlaState> = view.records.iter().map(|r| (r.record_id.as_str(), r.state)).collect();
    assert_eq!(states.get(ids[0].as_str()), Some(&SlaState::OnTime));
    assert_eq!(states.get(ids[1].as_str()), Some(&SlaState::Breached), "published a day late");
    assert_eq!(states.get(ids[2].as_str()), Some(&SlaState::OnTime));
    assert_eq!(states.get(ids[3].as_str()), Some(&SlaState::AtRisk), "due today, not published");
    assert_eq!(states.get(ids[4].as_str()), Some(&SlaState::AtRisk), "two working days left");
    assert_eq!(states.get(ids[5].as_str()), None, "due later: not read at all");

    // Two days on, the unpublished ones have missed their deadline.
    let later = credit_gateway::sla::view(
        &gw,
        "publication",
        date!(2026 - 10 - 16),
        SlaPolicy::default(),
        Some(SlaState::Breached),
        100,
    )
    .await
    .expect("view");
    let breached: Vec<&str> = later.records.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(breached.len(), 3, "{breached:?}");
    for id in [&ids[1], &ids[3], &ids[4]] {
        assert!(breached.contains(&id.as_str()), "{id}");
    }
    // Another destination has published nothing: at that destination, all of them are late.
    let zibo =
        credit_gateway::sla::view(&gw, "adapter:xinyong-zibo", date!(2026 - 10 - 16), SlaPolicy::default(), None, 100)
            .await
            .expect("view");
    assert_eq!(zibo.counts.get("breached"), Some(&5));

    // The API answers with today's view and refuses an unknown state.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(credit_gateway::server::run(listener, Arc::clone(&gw), std::future::pending()));
    let client = reqwest::Client::new();
    let body: Value =
        client.get(format!("{api}/api/v1/sla?state=breached")).send().await.expect("get").json().await.expect("json");
    assert_eq!(body["destination"], "publication");
    let bad = client.get(format!("{api}/api/v1/sla?state=late")).send().await.expect("get");
    assert_eq!(bad.status(), 400);
}
