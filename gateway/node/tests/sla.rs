//! Publication SLAs at a node, with "today" moved by hand across 国庆 2026: a record published
//! before its deadline is on time, one published after it or not at all by then is breached,
//! one with two working days or fewer left is at risk, and one due later is not listed yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use credit_gateway::bench::synthetic_records;
use credit_gateway::ingest::{BatchResult, Ingest};
use credit_gateway::sla::SlaQuery;
use gateway_core::sla::SlaState;
use gateway_store::Settlement;
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

/// A synthetic 行政处罚 record (from `seed`) to build test penalties on.
fn base_penalty(seed: u64) -> Value {
    synthetic_records(8, seed).into_iter().find(|r| r["record_type"] == "admin_penalty").expect("a penalty")
}

/// Pushes a penalty decided on each of `decided` into `gw`, now.
async fn push_penalties(gw: &Arc<Ingest>, seed: u64, decided: &[&str]) -> BatchResult {
    let base = base_penalty(seed);
    let records: Vec<Value> = decided.iter().zip(1..).map(|(d, n)| penalty(&base, d, n)).collect();
    gw.push(serde_json::to_vec(&records).expect("json").into(), time::OffsetDateTime::now_utc()).await.expect("push")
}

#[tokio::test]
async fn states_follow_the_deadline_on_the_official_calendar() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let node = testkit::start(testkit::config(dir.path())).await;
    let gw = node.app.clone();
    // Deadlines: 09-21 → 10-08 (across 中秋 and 国庆); 09-28 → 10-13; 09-30 → 10-15 (10-10 is a
    // 调休 working Saturday); 10-12 → 10-21.
    let decided = ["2026-09-21", "2026-09-21", "2026-09-28", "2026-09-28", "2026-09-30", "2026-10-12"];
    let answer = push_penalties(&gw.ingest, 77, &decided).await;
    assert_eq!(answer.accepted, decided.len(), "{:?}", answer.outcomes);
    let deadlines: Vec<_> = answer.outcomes.iter().map(|o| o.publicity_deadline.clone().expect("deadline")).collect();
    assert_eq!(deadlines, ["2026-10-08", "2026-10-08", "2026-10-13", "2026-10-13", "2026-10-15", "2026-10-21"]);
    let ids: Vec<String> = answer.outcomes.iter().map(|o| o.record_id.expect("id").to_string()).collect();

    // The publication sink published the first on time (10-08, Beijing), the second a day
    // late, and the third on 10-12; the rest not yet.
    let queued = gw.ingest.store.queued_after(0, 100).await.expect("queue");
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
        gw.ingest.store.settle("publication", s).await.expect("settle");
    }

    let view = credit_gateway::sla::view(
        &gw.sla,
        &SlaQuery { since: None, only: None, limit: 100, ..SlaQuery::new("publication", date!(2026 - 10 - 13)) },
    )
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
        &gw.sla,
        &SlaQuery {
            since: None,
            only: Some(SlaState::Breached),
            limit: 100,
            ..SlaQuery::new("publication", date!(2026 - 10 - 16))
        },
    )
    .await
    .expect("view");
    let breached: Vec<&str> = later.records.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(breached.len(), 3, "{breached:?}");
    for id in [&ids[1], &ids[3], &ids[4]] {
        assert!(breached.contains(&id.as_str()), "{id}");
    }
    // Another destination has published nothing: at that destination, all of them are late.
    let zibo = credit_gateway::sla::view(
        &gw.sla,
        &SlaQuery {
            since: None,
            only: None,
            limit: 100,
            ..SlaQuery::new("adapter:xinyong-zibo", date!(2026 - 10 - 16))
        },
    )
    .await
    .expect("view");
    assert_eq!(zibo.counts.get("breached"), Some(&5));
    // A month on, deadlines more than 31 days back are history: not read unless asked for.
    let month_on = credit_gateway::sla::view(
        &gw.sla,
        &SlaQuery { since: None, only: None, limit: 100, ..SlaQuery::new("publication", date!(2026 - 11 - 20)) },
    )
    .await
    .expect("view");
    let recent: Vec<&str> = month_on.records.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(recent, [ids[5].as_str()], "only the one due 10-21 is within the window");
    let asked = credit_gateway::sla::view(
        &gw.sla,
        &SlaQuery {
            since: Some(date!(2026 - 10 - 01)),
            only: Some(SlaState::Breached),
            limit: 100,
            ..SlaQuery::new("publication", date!(2026 - 11 - 20))
        },
    )
    .await
    .expect("view");
    assert_eq!(asked.records.len(), 4, "the unpublished three and the late one");

    // The API answers with today's view and refuses an unknown state.
    let api = &node.api;
    let client = reqwest::Client::new();
    let body: Value =
        client.get(format!("{api}/api/v1/sla?state=breached")).send().await.expect("get").json().await.expect("json");
    assert_eq!(body["destination"], "publication");
    let bad = client.get(format!("{api}/api/v1/sla?state=late")).send().await.expect("get");
    assert_eq!(bad.status(), 400);
}

/// Views asked on a schedule (`/metrics`, alerts) follow the background tracker while it runs:
/// a record neither settled at the destination nor stored a grace period ago is not tracked for
/// them yet. A view asked through the API tracks everything.
#[tokio::test]
async fn scheduled_views_follow_the_background_tracker() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = testkit::gateway(dir.path()).await;
    // All due 10-13.
    let answer = push_penalties(&gw.ingest, 78, &["2026-09-28"; 4]).await;
    assert_eq!(answer.accepted, 4, "{:?}", answer.outcomes);
    let queued = gw.ingest.store.queued_after(0, 100).await.expect("queue");
    // The sink published the first on time, and its cursor passed it.
    let first = &queued[0];
    let s = Settlement {
        published: vec![(first.seq, first.record_id, first.version, "x.jsonl".into())],
        position: Some(first.seq),
        at: "2026-10-09T01:00:00.000Z".into(),
        ..Settlement::default()
    };
    gw.ingest.store.settle("publication", s).await.expect("settle");
    let query = |scheduled| SlaQuery {
        since: Some(date!(2026 - 10 - 01)),
        scheduled,
        ..SlaQuery::new("publication", date!(2026 - 10 - 12))
    };
    let counts = |view: credit_gateway::sla::SlaView| {
        ["on_time", "at_risk", "breached"].map(|s| view.counts.get(s).copied().unwrap_or_default())
    };
    // The tracker runs, and nothing was stored a grace period ago: only the settled one.
    gw.sla.background.set(0);
    let view = credit_gateway::sla::view(&gw.sla, &query(true)).await.expect("view");
    assert_eq!(counts(view), [1, 0, 0]);
    // A grace period on, the next two are old enough, unsettled as they are.
    gw.sla.background.set(queued[2].seq);
    let view = credit_gateway::sla::view(&gw.sla, &query(true)).await.expect("view");
    assert_eq!(counts(view), [1, 2, 0]);
    // The API's view tracks the fourth too.
    let view = credit_gateway::sla::view(&gw.sla, &query(false)).await.expect("view");
    assert_eq!(counts(view), [1, 3, 0]);
}

/// `/metrics` with the SLA and reporting gauges parses with the reference Prometheus text
/// parser (Python `prometheus_client`, installed by `tests/run`), and carries one series per
/// state for every publishing destination and reporting status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_the_prometheus_text_parser() {
    use std::io::Write;
    let (tmp, pki) = testkit::demo_pki(gateway_core::crypto::Alg::EdDsa);
    let binding = credit_gateway::adapters::AdapterBinding {
        manifest: testkit::repo_dir().join("adapters/xinyong-zhongguo/manifest.toml"),
        signature: Some(credit_gateway::pki::adapter_signature_file(&pki, "xinyong-zhongguo")),
        url: Some("http://127.0.0.1:9".into()),
        inbox: None,
        outbox: None,
        database_url: None,
        poll_interval_ms: 1_000,
        units: Vec::new(),
    };
    let configure = |c: &mut credit_gateway::config::Config| {
        c.reporting.departments = vec![credit_gateway::config::Department {
            name: "淄博市周村区市场监督管理局".into(),
            uscc: "11370306MB28501648".into(),
        }];
        c.adapters = vec![binding];
    };
    let node = testkit::federation_node(&pki, "cn-000000", &tmp.path().join("n"), &[], configure).await;
    let records = synthetic_records(20, 5);
    node.app
        .ingest
        .push(serde_json::to_vec(&records).expect("json").into(), time::OffsetDateTime::now_utc())
        .await
        .expect("push");
    let text = reqwest::get(format!("{}/metrics", node.api)).await.expect("get").text().await.expect("text");
    for series in [
        "credit_gateway_sla_records{destination=\"adapter:xinyong-zhongguo\",state=\"at_risk\"}",
        "credit_gateway_departments{status=\"overdue\"}",
        "credit_gateway_registry_version ",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let mut parser = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
             families = list(parse(sys.stdin.read()))\nprint(len(families), sum(len(f.samples) for f in families))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is required for the Prometheus format check");
    parser.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = parser.wait_with_output().expect("parser");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains("ModuleNotFoundError"), "the Python `prometheus_client` package is required: {said}");
    assert!(out.status.success(), "the Prometheus parser refused /metrics: {said}\n{text}");
    let families: usize = said.split_whitespace().next().and_then(|n| n.parse().ok()).expect("count");
    assert!(families >= 10, "{said}");
}

/// A credit repair must reach every holder within 3 working days of its decision (design §8):
/// decided on 2026-09-30, its deadline runs over 国庆 to the 调休 Saturday 10-10, and it is
/// tracked like a 双公示 record.
#[tokio::test]
async fn a_repair_is_due_three_working_days_after_its_decision() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = testkit::gateway(dir.path()).await;
    let mut penalty = penalty(&base_penalty(78), "2026-09-01", 99);
    penalty["disclosure_scope"] = "public".into();
    let now = time::OffsetDateTime::now_utc();
    let answer = gw.ingest.push(serde_json::to_vec(&[penalty]).expect("json").into(), now).await.expect("push");
    let target = answer.outcomes[0].record_id.expect("stored").to_string();
    let mut repair: Value =
        serde_json::from_str(include_str!("../../../schemas/repair/valid/penalty_full_repair_2026.json"))
            .expect("sample");
    repair["target_origin"] = gw.ingest.member_id.clone().into();
    repair["target_record_id"] = target.into();
    repair["target_version"] = 1.into();
    repair["decided_on"] = "2026-09-30".into();
    repair["disclosure_scope"] = "public".into();
    let answer = gw.ingest.push(serde_json::to_vec(&[repair]).expect("json").into(), now).await.expect("push");
    assert_eq!(answer.accepted, 1, "{:?}", answer.outcomes);
    assert_eq!(answer.outcomes[0].publicity_deadline.as_deref(), Some("2026-10-10"));
    let repair_id = answer.outcomes[0].record_id.expect("stored").to_string();
    let state_on = async |today| {
        let q = SlaQuery { since: Some(date!(2026 - 09 - 01)), ..SlaQuery::new("publication", today) };
        let view = credit_gateway::sla::view(&gw.sla, &q).await.expect("view");
        view.records.iter().find(|r| r.record_id == repair_id).map(|r| r.state)
    };
    assert_eq!(state_on(date!(2026 - 10 - 09)).await, Some(SlaState::AtRisk));
    assert_eq!(state_on(date!(2026 - 10 - 12)).await, Some(SlaState::Breached));
}

/// SLA tracking follows the relay's routes, the configured `[[relay.routes]]` included: at a
/// city that keeps its licences from the parent and publishes 政务共享 records too, the hop up
/// tracks no licence and the sink tracks the 政务共享 records as well as the public ones.
/// (Before the relay's one list of destinations, SLA tracking restated the default routes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_tracking_follows_the_configured_routes() {
    use credit_gateway::config::{RouteAction, RouteRule};
    let (tmp, pki) = testkit::demo_pki(gateway_core::crypto::Alg::EdDsa);
    let dir = tmp.path().join("city");
    let publication = dir.join("publication");
    let node = testkit::federation_node(&pki, "cn-370300", &dir, &[], |c| {
        c.relay.publication_dir = Some(publication);
        c.relay.routes = vec![
            RouteRule {
                destination: "parent".into(),
                record_types: vec!["admin_license".into()],
                disclosure: vec![],
                action: RouteAction::Skip,
            },
            RouteRule {
                destination: "publication".into(),
                record_types: vec![],
                disclosure: vec!["gov_shared".into()],
                action: RouteAction::Send,
            },
        ];
    })
    .await;
    let mut records = synthetic_records(40, 9);
    for r in records.iter_mut().step_by(2) {
        r["disclosure_scope"] = "gov_shared".into();
    }
    let licences = records.iter().filter(|r| r["record_type"] == "admin_license").count();
    let answer = node
        .app
        .ingest
        .push(serde_json::to_vec(&records).expect("json").into(), time::OffsetDateTime::now_utc())
        .await
        .expect("push");
    assert_eq!(answer.accepted, records.len(), "{:?}", answer.outcomes.iter().find(|o| !o.errors.is_empty()));

    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    let tracked = async |destination| {
        let q = SlaQuery { since: Some(date!(2020 - 01 - 01)), limit: 1, ..SlaQuery::new(destination, today) };
        let view = credit_gateway::sla::view(&node.app.sla, &q).await.expect("view");
        view.counts.values().sum::<i64>() as usize
    };
    assert_eq!(tracked("cn-370000").await, records.len() - licences, "the parent is sent no licence");
    assert_eq!(tracked("publication").await, records.len(), "the sink publishes 政务共享 records too");
}
