//! 联合奖惩 across the federation (#24, ADR 0008): four real nodes over mutual TLS (周村区 →
//! 信用淄博 → 信用山东 → 信用中国), each with the demo measures catalogue, its department
//! credentials and its relay running. A black-list entry pushed at 信用中国 goes down by its
//! measures' reach and opens cases at 信用淄博 and 周村区; departments answer through the API
//! and the cases workbook; their signed reports come back up, and 信用中国 sees the loop
//! closed. A repair at 信用中国 lifts the measures at every department that had a case, and the
//! acknowledgements come back too.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use credit_gateway::auth::{IssueRequest, Role};
use credit_gateway::config::MeasuresConfig;
use credit_gateway::interchange::Node;
use credit_gateway::relay::Relay;
use gateway_core::crypto::Alg;
use gateway_core::record::RecordType;
use serde_json::{Value, json};
use time::OffsetDateTime;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";
const PROVINCE: &str = "cn-370000";
const NATIONAL: &str = "cn-000000";
const CHAIN: [&str; 4] = [DISTRICT, CITY, PROVINCE, NATIONAL];

/// The implementing departments of each node, by category (信用山东 has none of its own).
fn departments(member: &str) -> &'static [&'static str] {
    match member {
        DISTRICT => &["housing_construction", "market_regulation"],
        CITY => &["finance", "housing_construction"],
        NATIONAL => &["finance"],
        _ => &[],
    }
}

/// One running member: its node, the API key of each of its departments (by category) and of
/// its operator.
struct Member {
    id: &'static str,
    running: testkit::Running,
    node: Node,
    keys: HashMap<&'static str, String>,
    operator: String,
    client: reqwest::Client,
}

impl Member {
    /// One pass of the case opener (opening, lifting, reporting, reading reports).
    async fn pass(&self) {
        let app = &self.running.app;
        let catalogue = app.measures.as_ref().expect("catalogue");
        credit_gateway::joint::opener::run_once(&app.ingest, catalogue, OffsetDateTime::now_utc()).await.expect("pass");
    }

    async fn cases(&self) -> Vec<gateway_store::cases::Case> {
        self.running.app.ingest.store.cases(None, None, "", 100).await.expect("cases")
    }

    /// The one case of the department of `category`.
    async fn case_of(&self, category: &str) -> Value {
        let (status, page) = self.get(&self.keys[category], "/api/v1/cases").await;
        assert_eq!(status, 200, "{page}");
        let cases = page["cases"].as_array().cloned().unwrap_or_default();
        assert_eq!(cases.len(), 1, "{}: {category}: {cases:?}", self.id);
        cases[0].clone()
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let resp = self.client.get(format!("{}{path}", self.running.api)).bearer_auth(key).send().await.expect("get");
        (resp.status().as_u16(), resp.json().await.unwrap_or_default())
    }

    /// Answers the department's case (`what`: response, feedback, lifted); must be taken.
    async fn answer(&self, category: &str, what: &str, body: Value) -> Value {
        let case = self.case_of(category).await;
        let id = case["case_id"].as_str().expect("case id");
        let resp = self
            .client
            .post(format!("{}/api/v1/cases/{id}/{what}", self.running.api))
            .bearer_auth(&self.keys[category])
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        let answered: Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 200, "{}: {category} {what}: {answered}", self.id);
        answered
    }

    /// The federation's loop as this node's operator reads it, summed per node.
    async fn federation_loop(&self) -> HashMap<String, HashMap<&'static str, i64>> {
        let (status, rows) = self.get(&self.operator, "/api/v1/cases/loop?scope=federation").await;
        assert_eq!(status, 200, "{rows}");
        let mut per_node: HashMap<String, HashMap<&'static str, i64>> = HashMap::new();
        for row in rows.as_array().expect("rows") {
            let node = per_node.entry(row["node"].as_str().expect("node").to_owned()).or_default();
            for k in ["opened", "responded", "not_applicable", "fed_back", "lifting", "lifted"] {
                *node.entry(k).or_default() += row[k].as_i64().expect("count");
            }
        }
        per_node
    }
}

/// The four members, serving mTLS, with their relays (dropping one stops it).
async fn federation(root: &Path, pki: &Path) -> (Vec<Member>, Vec<Relay>) {
    let catalogue = testkit::repo_dir().join("measures/demo.toml");
    let signature = credit_gateway::pki::catalogue_signature_file(pki, "cn-credit-measures-demo");
    let (running, _, relays) = testkit::federation(root, pki, &CHAIN, |_, c| {
        c.measures = MeasuresConfig {
            catalogue: Some(catalogue.clone()),
            signature: Some(signature.clone()),
            opening_interval_secs: 0,
            frontdb: None,
        };
        c.auth.required = true;
    })
    .await;
    let mut members = Vec::new();
    for (id, r) in CHAIN.into_iter().zip(running) {
        let node = r.node();
        let region = &id[3..];
        let now = OffsetDateTime::now_utc();
        let store = &r.app.ingest.store;
        let mut keys = HashMap::new();
        for (k, category) in departments(id).iter().enumerate() {
            let req = IssueRequest {
                principal: format!("{id} {category}"),
                role: Some(Role::Department),
                unit_uscc: Some(credit_gateway::bench::uscc_in("11", region, k as u64 + 1)),
                category: Some((*category).to_owned()),
                ..IssueRequest::default()
            };
            let issued = credit_gateway::auth::credentials::issue(store, req, now).await.expect("issue");
            keys.insert(*category, issued.api_key.expect("key"));
        }
        let operator = testkit::issue_key(&r.app, "operator", &format!("{id} 值班员"), None).await;
        members.push(Member { id, running: r, node, keys, operator, client: reqwest::Client::new() });
    }
    (members, relays)
}

async fn pass_all(members: &[Member]) {
    for m in members {
        m.pass().await;
    }
}

fn today() -> String {
    gateway_core::date::format_date(gateway_core::date::today_in_china(OffsetDateTime::now_utc()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_black_list_entry_from_national_closes_its_loop_across_the_federation() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (members, _relays) = federation(dir.path(), &pki).await;
    let [district, city, province, national] = [&members[0], &members[1], &members[2], &members[3]];

    // 发起: the entry pushed at 信用中国 (subject in 周村区, 政府采购) starts three measures:
    // procurement (reach all, finance), bidding and market inspection (reach region: 山东 →
    // 淄博 → 周村区).
    let entry = testkit::active_black_list_entry();
    let body = bytes::Bytes::from(serde_json::to_vec(&[entry]).expect("json"));
    let answer = national.node.ingest.push(body, OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!(answer.accepted, 1, "{answer:?}");
    let entry_id = answer.outcomes[0].record_id.expect("record id");
    testkit::eventually("cases opened down the tree", Duration::from_secs(60), async || {
        pass_all(&members).await;
        let mut counts = Vec::new();
        for m in &members {
            counts.push(m.cases().await.len());
        }
        counts == [2, 2, 0, 1]
    })
    .await;
    let measures = |cases: Vec<gateway_store::cases::Case>| {
        let mut v: Vec<String> = cases.into_iter().map(|c| c.case.measure_id).collect();
        v.sort();
        v
    };
    assert_eq!(measures(district.cases().await), ["restrict-public-bidding", "strict-market-inspection"]);
    assert_eq!(measures(city.cases().await), ["restrict-government-procurement", "restrict-public-bidding"]);
    for m in [district, city] {
        for c in m.cases().await {
            assert_eq!(
                (c.case.entry_origin.as_str(), c.case.entry_record_id.clone()),
                (NATIONAL, entry_id.to_string())
            );
        }
    }
    // The entry went down unchanged (its origin proof is 信用中国's), and only 信用中国
    // publishes it: the platforms below pass it by in their publication queues.
    for m in [district, city, province] {
        let store = &m.node.ingest.store;
        let held = store.last_seq().await.expect("seq");
        testkit::eventually("the publication queue past the entry", Duration::from_secs(30), async || {
            store.outbox_position("publication").await.expect("cursor") >= held
        })
        .await;
        let trail = store.trail(entry_id).await.expect("trail").expect("held");
        assert_eq!(trail.versions[0].published_at, None, "{}", m.id);
    }
    testkit::eventually("信用中国 publishes its entry", Duration::from_secs(30), async || {
        let trail = national.node.ingest.store.trail(entry_id).await.expect("trail").expect("held");
        trail.versions[0].published_at.is_some()
    })
    .await;

    // 响应 and 反馈: through the API, and through the cases workbook.
    let day = today();
    district.answer("housing_construction", "response", json!({"answer": "accepted"})).await;
    district
        .answer(
            "housing_construction",
            "feedback",
            json!({"executed_on": day, "action_taken": "限制其参与区属政府投资工程招标投标", "document_no": "周住建限〔2026〕12号"}),
        )
        .await;
    let market = district.case_of("market_regulation").await;
    let book = testkit::cases_workbook(
        &["案件编号", "答复", "实施日期", "执行内容"],
        &[&[market["case_id"].as_str().expect("id"), "已实施", day.as_str(), "列为重点监管对象，提高抽查比例"]],
    );
    let resp = district
        .client
        .post(format!("{}/api/v1/cases.xlsx", district.running.api))
        .bearer_auth(&district.keys["market_regulation"])
        .body(book)
        .send()
        .await
        .expect("upload");
    let outcome: Value = resp.json().await.expect("json");
    assert_eq!((outcome["stored"].as_u64(), outcome["rejected"].as_u64()), (Some(1), Some(0)), "{outcome}");
    city.answer("finance", "response", json!({"answer": "not_applicable", "reason": "该主体未参与本市政府采购活动"}))
        .await;
    city.answer(
        "housing_construction",
        "feedback",
        json!({"executed_on": day, "action_taken": "暂停其投标资格", "document_no": "淄建招〔2026〕3号"}),
    )
    .await;
    national.answer("finance", "response", json!({"answer": "accepted"})).await;
    national
        .answer(
            "finance",
            "feedback",
            json!({"executed_on": day, "action_taken": "限制参加政府采购活动", "document_no": "财库限〔2026〕1号"}),
        )
        .await;

    // The reports come up signed, hop by hop; 信用中国 sees the loop closed.
    let closed = |node: &str, opened: i64, not_applicable: i64, fed_back: i64| {
        let node = node.to_owned();
        move |view: &HashMap<String, HashMap<&'static str, i64>>| {
            view.get(&node).is_some_and(|c| {
                (c["opened"], c["responded"], c["not_applicable"], c["fed_back"])
                    == (opened, opened, not_applicable, fed_back)
            })
        }
    };
    let (district_closed, city_closed, national_closed) =
        (closed(DISTRICT, 2, 0, 2), closed(CITY, 2, 1, 1), closed(NATIONAL, 1, 0, 1));
    testkit::eventually("the loop closed at 信用中国", Duration::from_secs(60), async || {
        pass_all(&members).await;
        let view = national.federation_loop().await;
        district_closed(&view) && city_closed(&view) && national_closed(&view)
    })
    .await;
    let (_, rows) = national.get(&national.operator, "/api/v1/cases/loop?scope=federation").await;
    for row in rows.as_array().expect("rows") {
        // 淄博's finance bureau has no case the measure applies to: no feedback rate.
        let applies = row["opened"] != row["not_applicable"];
        let feedback_rate = if applies { Some(1.0) } else { None };
        assert_eq!((row["response_rate"].as_f64(), row["feedback_rate"].as_f64()), (Some(1.0), feedback_rate), "{row}");
    }
    // 信用山东, on the way, sees its subtree's loop.
    let view = province.federation_loop().await;
    assert!(district_closed(&view) && city_closed(&view), "{view:?}");
    // What came up: reports from 淄博 and 周村区, received over mTLS with their origins'
    // proofs, naming the entry but never the subject.
    let q =
        gateway_store::RecordQuery { record_type: Some(RecordType::JointCaseReport), limit: 100, ..Default::default() };
    let reports = national.node.ingest.store.query(&q).await.expect("reports");
    assert!(!reports.is_empty());
    for r in &reports {
        assert!([DISTRICT, CITY].contains(&r.origin.as_str()), "{}", r.origin);
        let content: Value = serde_json::from_str(&r.content).expect("json");
        assert_eq!(content["entry_record_id"], entry_id.to_string());
        assert!(content.get("subject_name").is_none() && !r.content.contains("91370306MA3P6H1L2M"), "{content}");
        let trail = national.node.ingest.store.trail(r.record_id).await.expect("trail").expect("held");
        assert_eq!(trail.versions[0].arrived_from.as_deref(), Some(PROVINCE));
    }

    // 解除: a repair at 信用中国 reaches every node that holds the entry and lifts its cases
    // (the 淄博 finance case did not apply, so it has nothing to lift).
    let repair_path = testkit::repo_dir().join("schemas/repair/valid/national_window_tax_penalty.json");
    let mut repair: Value = serde_json::from_slice(&std::fs::read(repair_path).expect("example")).expect("json");
    repair["target_origin"] = json!(NATIONAL);
    repair["target_record_id"] = json!(entry_id.to_string());
    repair["decided_on"] = json!(day);
    let body = bytes::Bytes::from(serde_json::to_vec(&[repair]).expect("json"));
    let answer = national.node.ingest.push(body, OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!(answer.accepted, 1, "{answer:?}");
    testkit::eventually("lifting asked at every department with a case", Duration::from_secs(60), async || {
        pass_all(&members).await;
        let mut lifting = Vec::new();
        for m in &members {
            lifting.push(m.cases().await.iter().filter(|c| c.state == "lifting").count());
        }
        lifting == [2, 1, 0, 1]
    })
    .await;
    for (m, category) in [
        (district, "housing_construction"),
        (district, "market_regulation"),
        (city, "housing_construction"),
        (national, "finance"),
    ] {
        let lifted = m.answer(category, "lifted", json!({})).await;
        assert_eq!(lifted["state"], "lifted", "{lifted}");
    }
    testkit::eventually("the acknowledgements at 信用中国", Duration::from_secs(60), async || {
        pass_all(&members).await;
        let view = national.federation_loop().await;
        let lifted = |node: &str, n: i64| view.get(node).is_some_and(|c| (c["lifted"], c["lifting"]) == (n, 0));
        lifted(DISTRICT, 2) && lifted(CITY, 1) && lifted(NATIONAL, 1)
    })
    .await;

    // An objection raised at 周村区 about 信用中国's entry goes up to 信用中国, which holds the
    // entry, though the entry never went up from 周村区.
    let path = testkit::repo_dir().join("schemas/objection_opened/valid/provincial_list_suspended.json");
    let mut objection: Value = serde_json::from_slice(&std::fs::read(path).expect("example")).expect("json");
    objection["target_origin"] = json!(NATIONAL);
    objection["target_record_id"] = json!(entry_id.to_string());
    objection["target_version"] = json!(1);
    objection["decided_on"] = json!(day);
    let body = bytes::Bytes::from(serde_json::to_vec(&[objection]).expect("json"));
    let answer = district.node.ingest.push(body, OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!(answer.accepted, 1, "{answer:?}");
    testkit::eventually("the objection at 信用中国", Duration::from_secs(30), async || {
        let trail = national.node.ingest.store.trail(entry_id).await.expect("trail").expect("held");
        trail.events.iter().any(|e| e.event_type == "objection_opened" && e.origin == DISTRICT)
    })
    .await;
    for m in &members {
        assert!(m.node.ingest.store.dead_letters(None, 10).await.expect("dead letters").is_empty(), "{}", m.id);
    }
}
