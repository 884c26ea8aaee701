//! The measures catalogue at start-up (#24): a node of the demo federation loads the catalogue
//! `certs init` signed and approved; a copy changed by one byte, an unsigned one, or one the
//! registry does not approve stops the start with the reason.

use gateway_core::crypto::Alg;

fn catalogue_config(
    pki: &std::path::Path,
    dir: &std::path::Path,
    catalogue: std::path::PathBuf,
    signature: std::path::PathBuf,
) -> credit_gateway::config::Config {
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut fed = credit_gateway::config::FederationConfig::from_pki(pki, "cn-370300", listen);
    fed.peers.clear();
    credit_gateway::config::Config {
        member_id: "cn-370300".into(),
        federation: Some(fed),
        measures: credit_gateway::config::MeasuresConfig {
            catalogue: Some(catalogue),
            signature: Some(signature),
            opening_interval_secs: 0,
            frontdb: None,
        },
        ..testkit::config(dir)
    }
}

async fn start_error(config: credit_gateway::config::Config) -> String {
    match credit_gateway::server::start(config, std::future::pending()).await {
        Ok(_) => panic!("the node started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_catalogue_loads_and_a_tampered_one_stops_the_start() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let shipped = testkit::repo_dir().join("measures/demo.toml");
    let signature = credit_gateway::pki::catalogue_signature_file(&pki, "cn-credit-measures-demo");

    let node = testkit::start(catalogue_config(&pki, &dir.path().join("ok"), shipped.clone(), signature.clone())).await;
    let loaded = node.app.measures.as_ref().expect("the catalogue is loaded");
    assert_eq!(loaded.heading.id, "cn-credit-measures-demo");
    assert_eq!(loaded.measures.len(), 5);

    // One deadline made longer after signing.
    let text = std::fs::read_to_string(&shipped).expect("read").replacen("response_days = 5", "response_days = 6", 1);
    let tampered = dir.path().join("tampered.toml");
    std::fs::write(&tampered, text).expect("write");
    let err = start_error(catalogue_config(&pki, &dir.path().join("t"), tampered.clone(), signature.clone())).await;
    assert!(err.contains("refused") && err.contains("altered after signing"), "{err}");

    let err = start_error(catalogue_config(&pki, &dir.path().join("u"), tampered, dir.path().join("none.sig"))).await;
    assert!(err.contains("unsigned"), "{err}");

    // Signed by the root, but not approved by the registry in force.
    let unapproved = dir.path().join("unapproved.toml");
    let text =
        std::fs::read_to_string(&shipped).expect("read").replace("cn-credit-measures-demo", "cn-credit-measures-other");
    std::fs::write(&unapproved, text).expect("write");
    let root_key = pki.join("root-signing.key.json");
    let sig = credit_gateway::joint::cli::sign(&unapproved, &root_key, None).expect("sign");
    let err = start_error(catalogue_config(&pki, &dir.path().join("n"), unapproved, sig)).await;
    assert!(err.contains("not approved by registry"), "{err}");

    // The conformance check is the same at start-up.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&shipped).expect("read").replacen("kind = \"punish\"", "kind = \"reward\"", 1),
    )
    .expect("write");
    let err = start_error(catalogue_config(&pki, &dir.path().join("b"), broken, signature)).await;
    assert!(err.contains("conformance"), "{err}");
}

/// A node of 信用淄博 with the demo catalogue, authentication on, and the keys of its 信用办
/// (reports for every unit), four implementing departments and an operator.
struct Zibo {
    _dir: tempfile::TempDir,
    node: testkit::Running,
    client: reqwest::Client,
    office: String,
    finance: String,
    market: String,
    housing: String,
    operator: String,
}

/// The department unit `k` of 淄博.
fn unit(k: u64) -> String {
    credit_gateway::bench::uscc_in("11", "370300", k)
}

impl Zibo {
    async fn start() -> Self {
        use credit_gateway::auth::{IssueRequest, Role, grants};
        let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
        let shipped = testkit::repo_dir().join("measures/demo.toml");
        let signature = credit_gateway::pki::catalogue_signature_file(&pki, "cn-credit-measures-demo");
        let mut config = catalogue_config(&pki, dir.path(), shipped, signature);
        config.auth.required = true;
        let node = testkit::start(config).await;
        let now = time::OffsetDateTime::now_utc();
        let store = &node.app.ingest.store;
        let issue =
            async |role: Role, name: &str, unit: Option<String>, category: Option<&str>, grants: Vec<String>| {
                let req = IssueRequest {
                    principal: name.into(),
                    role: Some(role),
                    unit_uscc: unit,
                    category: category.map(str::to_owned),
                    grants,
                    ..IssueRequest::default()
                };
                credit_gateway::auth::credentials::issue(store, req, now).await.expect("issue").api_key.expect("key")
            };
        let office =
            issue(Role::Department, "信用淄博信用办", Some(unit(0)), None, vec![grants::ALL_UNITS.into()]).await;
        let finance = issue(Role::Department, "淄博市财政局", Some(unit(1)), Some("finance"), Vec::new()).await;
        let market =
            issue(Role::Department, "淄博市市场监督管理局", Some(unit(2)), Some("market_regulation"), Vec::new()).await;
        let housing =
            issue(Role::Department, "淄博市住房和城乡建设局", Some(unit(3)), Some("housing_construction"), Vec::new())
                .await;
        let _tax =
            issue(Role::Department, "国家税务总局淄博市税务局", Some(unit(4)), Some("taxation"), Vec::new()).await;
        let operator = issue(Role::Operator, "值班员", None, None, Vec::new()).await;
        Self { _dir: dir, node, client: reqwest::Client::new(), office, finance, market, housing, operator }
    }

    /// Pushes records as the 信用办; every one must be accepted.
    async fn push(&self, records: &[serde_json::Value]) -> serde_json::Value {
        let resp = self
            .client
            .post(format!("{}/api/v1/records", self.node.api))
            .bearer_auth(&self.office)
            .json(records)
            .send()
            .await
            .expect("push");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["rejected"], 0, "{body}");
        body
    }

    /// One pass of the opener at `now`; returns the cases opened.
    async fn open(&self, now: time::OffsetDateTime) -> u64 {
        let app = &self.node.app;
        let catalogue = app.measures.as_ref().expect("catalogue");
        credit_gateway::joint::opener::run_once(&app.ingest, catalogue, now).await.expect("open")
    }

    async fn get(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        let resp = self.client.get(format!("{}{path}", self.node.api)).bearer_auth(key).send().await.expect("get");
        (resp.status().as_u16(), resp.json().await.unwrap_or_default())
    }

    async fn post(&self, key: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.node.api))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("post");
        (resp.status().as_u16(), resp.json().await.unwrap_or_default())
    }

    async fn cases(&self, key: &str, query: &str) -> Vec<serde_json::Value> {
        let (status, page) = self.get(key, &format!("/api/v1/cases{query}")).await;
        assert_eq!(status, 200, "{page}");
        page["cases"].as_array().cloned().unwrap_or_default()
    }
}

/// 发起: a black-list entry pushed at 信用淄博 opens one case per measure it starts and per
/// implementing department (the department principals of the measure's category); each
/// department reads only its own; the entry sent again, or a new version of it, opens nothing
/// more; a removed entry opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_list_entry_opens_cases_at_the_implementing_departments() {
    let z = Zibo::start().await;
    let app = &z.node.app;
    let now = time::OffsetDateTime::now_utc();
    let mut entry = testkit::active_black_list_entry();
    z.push(std::slice::from_ref(&entry)).await;
    assert_eq!(z.open(now).await, 3);

    let own = z.cases(&z.finance, "").await;
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["measure_id"], "restrict-government-procurement");
    assert_eq!(
        (own[0]["department_uscc"].as_str(), own[0]["state"].as_str()),
        (Some(unit(1).as_str()), Some("opened"))
    );
    assert_eq!(own[0]["subject_key"], "91370306MA3P6H1L2M");
    // Due on the working-day calendar: 5 working days to respond, then 20 to feed back (none
    // where that runs into a year whose calendar is not loaded: never guessed).
    let today = gateway_core::date::today_in_china(now);
    let calendar = &app.ingest.calendar;
    let respond_by = calendar.add_working_days(today, 5).ok();
    let feed_back_by = respond_by.and_then(|d| calendar.add_working_days(d, 20).ok());
    let as_json =
        |d: Option<time::Date>| d.map(gateway_core::date::format_date).map_or(serde_json::Value::Null, Into::into);
    assert_eq!((&own[0]["response_due"], &own[0]["feedback_due"]), (&as_json(respond_by), &as_json(feed_back_by)));
    let theirs = z.cases(&z.market, "").await;
    assert_eq!(
        theirs.iter().map(|c| c["measure_id"].as_str().expect("id")).collect::<Vec<_>>(),
        ["strict-market-inspection"]
    );
    assert_eq!(z.cases(&z.operator, "").await.len(), 3);

    // Sent again, and as a new version: no second case. A removed entry opens nothing.
    z.push(std::slice::from_ref(&entry)).await;
    entry["listing_reason"] = "在政府采购活动中提供虚假材料谋取中标（更正后的表述）。".into();
    z.push(std::slice::from_ref(&entry)).await;
    let mut removed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            testkit::repo_dir().join("schemas/credit_list_entry/valid/black_procurement_removed.json"),
        )
        .expect("example"),
    )
    .expect("json");
    removed["party_uscc"] = credit_gateway::bench::uscc_in("91", "370306", 99).into();
    z.push(&[removed]).await;
    assert_eq!(z.open(now).await, 0);
    assert_eq!(z.cases(&z.operator, "").await.len(), 3);

    // A second finance unit registered after the entries were read is caught up once: the
    // standing entry (its latest version) opens its case; the removed one opens nothing.
    let req = credit_gateway::auth::IssueRequest {
        principal: "淄博市公共资源交易中心".into(),
        role: Some(credit_gateway::auth::Role::Department),
        unit_uscc: Some(unit(5)),
        category: Some("finance".into()),
        ..Default::default()
    };
    credit_gateway::auth::credentials::issue(&app.ingest.store, req, now).await.expect("issue");
    assert_eq!(z.open(now).await, 1);
    assert_eq!(z.open(now).await, 0);
    let all = z.cases(&z.operator, "").await;
    assert_eq!(all.len(), 4);
    assert!(
        all.iter()
            .any(|c| c["department_uscc"] == unit(5).as_str() && c["measure_id"] == "restrict-government-procurement")
    );
}

/// 核查 → 响应 → 反馈 → 解除 at one node, through the API and the cases workbook: each
/// department answers only its own cases, each answer in the state that takes it, with the
/// evidence its measure asks for; the loop is counted; a repair of the entry asks every
/// department that had a case to lift the measure, and their acknowledgements are tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_answer_their_cases_and_a_repair_lifts_the_measures() {
    let z = Zibo::start().await;
    let now = time::OffsetDateTime::now_utc();
    let stored = z.push(&[testkit::active_black_list_entry()]).await;
    let entry_id = stored["outcomes"][0]["record_id"].as_str().expect("record id").to_owned();
    assert_eq!(z.open(now).await, 3);
    let case_of = async |key: &str| z.cases(key, "").await[0]["case_id"].as_str().expect("case id").to_owned();
    let (procurement, inspection, bidding) =
        (case_of(&z.finance).await, case_of(&z.market).await, case_of(&z.housing).await);

    // 信用核查 before a procurement decision: the finance bureau's measure is in force.
    let (status, check) = z
        .post(
            &z.finance,
            "/api/v1/checks",
            serde_json::json!({"uscc": "91370306MA3P6H1L2M", "matter_code": "370300-ZFCG-0001", "area_code": "370300"}),
        )
        .await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["measures"].as_array().map(Vec::len), Some(1), "{check}");
    assert_eq!(check["measures"][0]["measure_id"], "restrict-government-procurement");
    assert_eq!(check["measures"][0]["title"], "依法限制参加政府采购活动");
    let check_id = check["check_id"].as_str().expect("check id").to_owned();
    let (status, err) = z
        .post(&z.finance, "/api/v1/checks", serde_json::json!({"uscc": "91370306MA3P6H1L2X", "matter_code": "x"}))
        .await;
    assert_eq!((status, err["error"]["pointer"].as_str()), (400, Some("/uscc")), "{err}");
    // A person is checked by identity number, matched by hash and shown masked.
    let (status, person) = z
        .post(
            &z.finance,
            "/api/v1/checks",
            serde_json::json!({"id_no": "11010519491231002X", "matter_code": "370300-ZFCG-0001"}),
        )
        .await;
    assert_eq!((status, person["subject"].as_str()), (200, Some("110105********002X")), "{person}");
    let (status, err) = z
        .post(
            &z.finance,
            "/api/v1/checks",
            serde_json::json!({"id_no": "1101051949123100é", "matter_code": "370300-ZFCG-0001"}),
        )
        .await;
    assert_eq!((status, err["error"]["pointer"].as_str()), (400, Some("/id_no")), "{err}");

    // 响应: another unit's case is not found; an answer twice is a conflict.
    let path = |id: &str, what: &str| format!("/api/v1/cases/{id}/{what}");
    let (status, _) =
        z.post(&z.market, &path(&procurement, "response"), serde_json::json!({"answer": "accepted"})).await;
    assert_eq!(status, 404);
    let (status, case) =
        z.post(&z.finance, &path(&procurement, "response"), serde_json::json!({"answer": "accepted"})).await;
    assert_eq!((status, case["state"].as_str()), (200, Some("accepted")), "{case}");
    let (status, err) =
        z.post(&z.finance, &path(&procurement, "response"), serde_json::json!({"answer": "accepted"})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("cases.state")), "{err}");
    let (status, err) =
        z.post(&z.market, &path(&inspection, "response"), serde_json::json!({"answer": "not_applicable"})).await;
    assert_eq!((status, err["error"]["pointer"].as_str()), (400, Some("/reason")), "{err}");
    let (status, _) =
        z.post(&z.operator, &path(&inspection, "response"), serde_json::json!({"answer": "accepted"})).await;
    assert_eq!(status, 403, "operators oversee; departments answer");

    // 反馈: procurement needs evidence (document number or attachment hash); it names the check.
    let today = gateway_core::date::format_date(gateway_core::date::today_in_china(now));
    let mut feedback =
        serde_json::json!({"executed_on": today, "action_taken": "拒绝其参加本次政府采购", "check_id": check_id});
    let (status, err) = z.post(&z.finance, &path(&procurement, "feedback"), feedback.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str(), err["error"]["pointer"].as_str()),
        (400, Some("cases.evidence"), Some("/document_no")),
        "{err}"
    );
    feedback["document_no"] = "淄财采〔2026〕12号".into();
    let (status, case) = z.post(&z.finance, &path(&procurement, "feedback"), feedback).await;
    assert_eq!(
        (status, case["state"].as_str(), case["check_id"].as_str()),
        (200, Some("executed"), Some(check_id.as_str())),
        "{case}"
    );

    // The housing bureau answers through its workbook: one good row, one with a date in the
    // future and one naming a case that is not its own: the good row is kept.
    let resp =
        z.client.get(format!("{}/api/v1/cases.xlsx", z.node.api)).bearer_auth(&z.housing).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    let downloaded = resp.bytes().await.expect("bytes");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("cases.xlsx"), &downloaded).expect("write");
    let rows = credit_gateway::adapters::xlsx::read_sheet(&tmp.path().join("cases.xlsx"), "案件答复").expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0]["案件编号"].as_str(), rows[0]["当前状态"].as_str()), (bidding.as_str(), "待响应"));
    let upload = testkit::cases_workbook(
        &["案件编号", "答复", "实施日期", "执行内容", "文书号"],
        &[
            &[bidding.as_str(), "已实施", today.as_str(), "暂停其投标资格", "淄建招〔2026〕3号"],
            &[bidding.as_str(), "已实施", "2099-01-01", "暂停其投标资格", "淄建招〔2026〕4号"],
            &[procurement.as_str(), "予以实施", "", "", ""],
        ],
    );
    let resp = z
        .client
        .post(format!("{}/api/v1/cases.xlsx", z.node.api))
        .bearer_auth(&z.housing)
        .body(upload)
        .send()
        .await
        .expect("upload");
    let outcome: serde_json::Value = resp.json().await.expect("json");
    assert_eq!((outcome["stored"].as_u64(), outcome["rejected"].as_u64()), (Some(1), Some(2)), "{outcome}");
    assert_eq!(outcome["rows"][0]["row"], 2);
    // The second row finds the case executed already (409); the third is not its case (404).
    assert_eq!(outcome["rows"][1]["error"]["code"], "cases.future_date", "{outcome}");
    assert_eq!(outcome["rows"][1]["error"]["pointer"], "/实施日期", "{outcome}");
    assert_eq!(outcome["rows"][2]["error"]["code"], "not_found", "{outcome}");
    // A sheet claiming a million rows is refused while it is read, not expanded into a grid.
    let mut huge = rust_xlsxwriter::Workbook::new();
    let ws = huge.add_worksheet();
    ws.set_name("案件答复").expect("name");
    ws.write_string(0, 0, "案件编号").expect("cell");
    ws.write_string(0, 1, "答复").expect("cell");
    ws.write_string(1_048_575, 16_383, "已解除").expect("cell");
    let resp = z
        .client
        .post(format!("{}/api/v1/cases.xlsx", z.node.api))
        .bearer_auth(&z.housing)
        .body(huge.save_to_buffer().expect("xlsx"))
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 400);
    let err: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(err["error"]["code"], "cases.workbook", "{err}");

    // The loop as the operator sees it.
    let (status, counts) = z.get(&z.operator, "/api/v1/cases/loop").await;
    assert_eq!(status, 200);
    let of = |u: u64| {
        counts
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["department_uscc"] == unit(u).as_str())
            .cloned()
            .expect("row")
    };
    assert_eq!(
        (of(1)["responded"].as_i64(), of(1)["fed_back"].as_i64(), of(1)["feedback_rate"].as_f64()),
        (Some(1), Some(1), Some(1.0))
    );
    assert_eq!((of(2)["responded"].as_i64(), of(2)["response_rate"].as_f64()), (Some(0), Some(0.0)));
    assert_eq!(of(3)["fed_back"].as_i64(), Some(1));
    // The month's loop is in the quality export too.
    let resp = z
        .client
        .get(format!("{}/api/v1/quality.xlsx", z.node.api))
        .bearer_auth(&z.operator)
        .send()
        .await
        .expect("quality");
    let xlsx = resp.bytes().await.expect("bytes");
    std::fs::write(tmp.path().join("quality.xlsx"), &xlsx).expect("write");
    let sheet =
        credit_gateway::adapters::xlsx::read_sheet(&tmp.path().join("quality.xlsx"), "联合奖惩").expect("sheet");
    let finance_row = sheet.iter().find(|r| r["实施部门Department"] == unit(1)).expect("finance row");
    assert_eq!(
        (finance_row["反馈Fedback"].as_str(), finance_row["反馈率Feedbackrate"].as_str()),
        ("1.0", "1.0"),
        "{sheet:?}"
    );
    let metrics = z
        .client
        .get(format!("{}/metrics", z.node.api))
        .bearer_auth(&z.operator)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!("credit_gateway_joint_cases{{department=\"{}\",stage=\"fed_back\"}} 1", unit(1))),
        "{metrics}"
    );

    // 信用修复 of the entry: every case whose measure may be in force is to be lifted.
    let mut repair: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testkit::repo_dir().join("schemas/repair/valid/provincial_list_early_exit.json"))
            .expect("example"),
    )
    .expect("json");
    repair["target_record_id"] = entry_id.into();
    repair["target_origin"] = "cn-370300".into();
    repair["target_version"] = 1.into();
    repair["decided_on"] = today.clone().into();
    z.push(&[repair]).await;
    z.open(now).await;
    let lifting = z.cases(&z.operator, "?state=lifting").await;
    assert_eq!(lifting.len(), 3, "{lifting:?}");
    assert!(lifting.iter().all(|c| c["lift_reason"] == "repaired"), "{lifting:?}");
    let (_, check) = z
        .post(
            &z.finance,
            "/api/v1/checks",
            serde_json::json!({"uscc": "91370306MA3P6H1L2M", "matter_code": "370300-ZFCG-0002"}),
        )
        .await;
    assert_eq!(check["measures"], serde_json::json!([]), "no measure in force after the repair");
    let (status, case) = z.post(&z.finance, &path(&procurement, "lifted"), serde_json::json!({})).await;
    assert_eq!((status, case["state"].as_str()), (200, Some("lifted")), "{case}");
    assert!(case["lifted_at"].is_string());
    let (_, counts) = z.get(&z.finance, "/api/v1/cases/loop").await;
    assert_eq!(counts.as_array().map(Vec::len), Some(1), "a department counts its own");
    assert_eq!((counts[0]["lifted"].as_i64(), counts[0]["lifting"].as_i64()), (Some(1), Some(0)));
    let (_, counts) = z.get(&z.operator, "/api/v1/cases/loop").await;
    assert_eq!(counts.as_array().expect("rows").iter().map(|r| r["lifting"].as_i64().unwrap_or(0)).sum::<i64>(), 2);
}

/// The cases' 前置库 on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_answer_through_a_sqlite_frontdb() {
    let tmp = tempfile::tempdir().expect("tmp");
    frontdb_exchange(&format!("sqlite://{}?mode=rwc", tmp.path().join("cases.sqlite").display())).await;
}

/// And on MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_answer_through_a_mariadb_frontdb() {
    testkit::with_mysql_database(async |url| frontdb_exchange(url).await).await;
}

/// Through the 前置库: the configured departments' cases are written there; their answer rows
/// are applied as their API answers would be, each row's result written back; a row of a
/// department not configured is refused; a row applied again after a crash is `stored`.
async fn frontdb_exchange(url: &str) {
    use credit_gateway::joint::frontdb::{FrontDb, Round};
    use sqlx::{Connection as _, Row as _};
    let z = Zibo::start().await;
    let app = &z.node.app;
    let catalogue = app.measures.as_ref().expect("catalogue");
    z.push(&[testkit::active_black_list_entry()]).await;
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(z.open(now).await, 3);
    let config = credit_gateway::config::CasesFrontDb { url: url.into(), units: vec![unit(1), unit(2)] };
    let db = FrontDb::connect(&config).await.expect("connect");
    assert_eq!(db.round(&app.ingest, catalogue, now).await.expect("round"), Round { written: 2, collected: 0 });
    assert_eq!(db.round(&app.ingest, catalogue, now).await.expect("round"), Round::default(), "nothing changed");

    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let cases = async |conn: &mut sqlx::AnyConnection| -> Vec<(String, String, String)> {
        let sql = "SELECT CASE_ID, DEPARTMENT_USCC, STATE FROM GW_JOINT_CASES ORDER BY DEPARTMENT_USCC";
        let rows = sqlx::query(sql).fetch_all(conn).await.expect("cases");
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    };
    let written = cases(&mut conn).await;
    assert_eq!(
        written.iter().map(|c| (c.1.clone(), c.2.as_str())).collect::<Vec<_>>(),
        [(unit(1), "opened"), (unit(2), "opened")]
    );
    let (finance_case, market_case) = (written[0].0.clone(), written[1].0.clone());
    let housing_case = z.cases(&z.housing, "").await[0]["case_id"].as_str().expect("id").to_owned();
    for (case, unit, answer, reason) in [
        (&finance_case, unit(1), "予以实施", None),
        (&market_case, unit(2), "不适用", None),
        (&housing_case, unit(3), "予以实施", None),
        (&market_case, unit(2), "不适用", Some("该主体不在本局监管范围内")),
    ] {
        let reason = reason.map_or("NULL".to_owned(), |r| format!("'{r}'"));
        let sql = format!(
            "INSERT INTO GW_JOINT_ANSWERS (CASE_ID, DEPARTMENT_USCC, ANSWER, REASON) VALUES ('{case}', '{unit}', '{answer}', {reason})"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("answer row");
    }
    let round = db.round(&app.ingest, catalogue, now).await.expect("round");
    assert_eq!(round.collected, 4);
    let results = async |conn: &mut sqlx::AnyConnection| -> Vec<(String, String)> {
        let sql = "SELECT RESULT, CAST(MESSAGE AS CHAR) FROM GW_JOINT_ANSWERS ORDER BY ID";
        let rows = sqlx::query(sql).fetch_all(conn).await.expect("results");
        rows.iter().map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1).unwrap_or_default())).collect()
    };
    let got = results(&mut conn).await;
    assert_eq!(got[0], ("stored".into(), String::new()));
    assert!(got[1].0 == "rejected" && got[1].1.contains("/REASON"), "{got:?}");
    assert!(got[2].0 == "rejected" && got[2].1.starts_with("auth.unit_not_allowed"), "{got:?}");
    assert_eq!(got[3], ("stored".into(), String::new()));
    // The answers are the cases' state at the node, and the 前置库 shows it after the next round.
    assert_eq!(z.cases(&z.finance, "").await[0]["state"], "accepted");
    assert_eq!(z.cases(&z.housing, "").await[0]["state"], "opened", "the housing bureau is not configured");
    db.round(&app.ingest, catalogue, now).await.expect("round");
    let states: Vec<String> = cases(&mut conn).await.into_iter().map(|c| c.2).collect();
    assert_eq!(states, ["accepted", "not_applicable"]);

    // Feedback, then a second feedback that says something else: refused, naming the state.
    let today = gateway_core::date::format_date(gateway_core::date::today_in_china(now));
    for action in ["拒绝其参加本次政府采购", "另一种说法"] {
        let sql = format!(
            "INSERT INTO GW_JOINT_ANSWERS (CASE_ID, DEPARTMENT_USCC, ANSWER, EXECUTED_ON, ACTION_TAKEN, DOCUMENT_NO) \
             VALUES ('{finance_case}', '{}', '已实施', '{today}', '{action}', '淄财采〔2026〕12号')",
            unit(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("feedback row");
    }
    db.round(&app.ingest, catalogue, now).await.expect("round");
    let got = results(&mut conn).await;
    assert_eq!(got[4], ("stored".into(), String::new()));
    assert!(got[5].0 == "rejected" && got[5].1.starts_with("cases.state"), "{got:?}");

    // Applied, but its result not written (a crash between the two databases): applied again,
    // the case holds that very answer, so it is stored and nothing changes.
    sqlx::query("UPDATE GW_JOINT_ANSWERS SET COLLECTED_AT = NULL, RESULT = NULL WHERE ID IN (1, 5)")
        .execute(&mut conn)
        .await
        .expect("un-collect");
    assert_eq!(db.round(&app.ingest, catalogue, now).await.expect("round").collected, 2);
    let got = results(&mut conn).await;
    assert_eq!((&got[0], &got[4]), (&("stored".into(), String::new()), &("stored".into(), String::new())));
    let finance = &z.cases(&z.finance, "").await[0];
    assert_eq!(
        (finance["state"].as_str(), finance["action_taken"].as_str()),
        (Some("executed"), Some("拒绝其参加本次政府采购"))
    );
}

/// A case report is made by the gateway from its case, never taken from a caller: a department
/// (or its office) pushing one is refused, naming the field, and the batch's good record kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_report_cannot_be_pushed() {
    let z = Zibo::start().await;
    let report = include_str!("../schemas/joint_case_report/valid/executed_with_evidence.json");
    let report: serde_json::Value = serde_json::from_str(report).expect("example");
    let resp = z
        .client
        .post(format!("{}/api/v1/records", z.node.api))
        .bearer_auth(&z.office)
        .json(&[report, testkit::active_black_list_entry()])
        .send()
        .await
        .expect("push");
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!((body["rejected"].as_u64(), body["accepted"].as_u64()), (Some(1), Some(1)), "{body}");
    let error = &body["outcomes"][0]["errors"][0];
    assert_eq!(
        (error["pointer"].as_str(), error["rule"].as_str()),
        (Some("/record_type"), Some("record_type.node_made"))
    );
}

/// A query parameter sent empty (`?month=`, as forms and generated clients send an unset field)
/// counts as not given; a value that is wrong is still a 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_query_parameters_count_as_not_given() {
    let z = Zibo::start().await;
    for path in [
        "/api/v1/cases?state=&department=",
        "/api/v1/cases/overdue?month=&format=",
        "/api/v1/cases/loop?scope=",
        "/api/v1/quality?period=",
        "/api/v1/records?type=&since=",
        "/api/v1/sla?destination=&since=",
    ] {
        let (status, body) = z.get(&z.operator, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = z.get(&z.operator, "/api/v1/cases/overdue?month=2026-13").await;
    assert_eq!((status, body["error"]["pointer"].as_str()), (400, Some("/month")), "{body}");
    let (status, body) = z.get(&z.operator, "/api/v1/records?limit=many").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_query")), "{body}");
}
