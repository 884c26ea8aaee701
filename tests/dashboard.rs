//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `tests/run`) driven over WebDriver. It logs in as an operator,
//! reads the SLA and quality tables of a running node, clicks resend on a dead letter, and saves
//! screenshots under `target/tmp/dashboard/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use credit_gateway::bench::synthetic_records;
use credit_gateway::config::{Config, DashboardConfig, Operator};
use gateway_store::{DeadLetter, Settlement};
use serde_json::{Value, json};
use time::OffsetDateTime;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const PASSWORD: &str = "浏览器测试 browser test password";

/// A WebDriver session on a chromedriver child process.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = testkit::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is required (Debian: apt-get install chromium chromium-driver; tests/run installs it)",
            );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        testkit::eventually("chromedriver to be ready", Duration::from_secs(30), async || {
            match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"]}}}});
        let answer: Value =
            http.post(format!("{base}/session")).json(&caps).send().await.expect("session").json().await.expect("json");
        let session =
            answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_owned();
        Browser { driver, base, session, http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req.send().await.expect("webdriver").json().await.expect("json");
        assert!(answer["value"].get("error").is_none(), "{path}: {answer}");
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let found =
            self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found.as_array().expect("array").iter().map(|e| e[ELEMENT].as_str().expect("element").to_owned()).collect()
    }

    /// Waits (polling, with a deadline) for something matching `css`: a click that submits a
    /// form returns before the next page has loaded.
    async fn wait_for(&self, css: &str) -> Vec<String> {
        let mut found = Vec::new();
        testkit::eventually(&format!("{css} on the page"), Duration::from_secs(20), async || {
            found = self.find_all(css).await;
            !found.is_empty()
        })
        .await;
        found
    }

    async fn find(&self, css: &str) -> String {
        let all = self.find_all(css).await;
        assert!(!all.is_empty(), "nothing matches {css} on {}", self.url().await);
        all[0].clone()
    }

    async fn text(&self, element: &str) -> String {
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn attribute(&self, element: &str, name: &str) -> String {
        let v = self.call(reqwest::Method::GET, &format!("/element/{element}/attribute/{name}"), None).await;
        v.as_str().unwrap_or("").to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or("").to_owned()
    }

    /// Saves a PNG of the page under the test's output directory.
    async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64")).expect("png");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&dir).expect("output dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }

    async fn close(mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Penalties decided `days_ago` calendar days before today (Beijing), public, of one unit.
fn penalties(days_ago: i64, n: usize, tag: &str) -> Vec<Value> {
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let decided = gateway_core::date::format_date(today - time::Duration::days(days_ago));
    let base = synthetic_records(8, 9).into_iter().find(|r| r["record_type"] == "admin_penalty").expect("penalty");
    (0..n)
        .map(|i| {
            let mut r = base.clone();
            r["decision_date"] = decided.clone().into();
            r["penalty_effective_until"] = "2030-12-31".into();
            r["decision_doc_no"] = format!("周市监罚〔2026〕{tag}{i}号").into();
            r["disclosure_scope"] = "public".into();
            r.as_object_mut().expect("object").remove("publicity_end_date");
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_sla_and_quality_and_resends_a_dead_letter() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let hash = credit_gateway::dashboard::auth::hash_password(PASSWORD, 1_000).expect("hash");
    let config = Config {
        dashboard: DashboardConfig {
            operators: vec![Operator { name: "ops".into(), password_hash: hash, role: None }],
        },
        ..testkit::config(dir.path())
    };
    let node = testkit::start(config).await;
    let gw = &node.app.ingest;
    // Twenty days ago: past the deadline, never published: breached at the publication sink.
    let mut records = penalties(20, 3, "超期");
    let unit = records[0]["source_unit_uscc"].as_str().expect("unit").to_owned();
    // And one the unit got wrong.
    let mut bad = records[0].clone();
    bad["decision_doc_no"] = "".into();
    records.push(bad);
    let answer =
        gw.push(serde_json::to_vec(&records).expect("json").into(), OffsetDateTime::now_utc()).await.expect("push");
    assert_eq!((answer.accepted, answer.rejected), (3, 1), "{:?}", answer.outcomes);
    let late: Vec<String> = answer.outcomes.iter().filter_map(|o| o.record_id).map(|id| id.to_string()).collect();
    // The parent refused one for good.
    let queued = gw.store.queued_after(0, 10).await.expect("queue");
    let dead = &queued[0];
    let reason =
        json!({"code": "rejected", "message_zh": "上级平台拒收：处罚类别不在代码表中", "message_en": "refused"});
    let s = Settlement {
        dead: vec![DeadLetter {
            seq: dead.seq,
            record_id: dead.record_id,
            version: dead.version,
            reason: reason.to_string(),
            attempts: 1,
        }],
        at: gateway_core::date::format_timestamp(OffsetDateTime::now_utc()),
        ..Settlement::default()
    };
    let letter_at = s.at.clone();
    gw.store.settle("cn-370300", s).await.expect("dead letter");

    // 联合奖惩 on the injected clock: a black-list entry whose cases were opened 30 days ago
    // is overdue with its response today; the alert is raised once.
    let overdue_case = open_overdue_case(&node).await;

    let site = node.api.clone();

    let browser = Browser::start().await;
    // Not logged in: every page leads to the login form.
    browser.go(&format!("{site}/dashboard/sla")).await;
    assert!(browser.url().await.ends_with("/dashboard/login"), "{}", browser.url().await);
    browser.type_into("#username", "ops").await;
    browser.type_into("#password", "wrong password").await;
    browser.click("#login").await;
    browser.wait_for("p.error").await;
    browser.type_into("#username", "ops").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#login").await;
    assert_eq!(browser.wait_for("#intake-chart").await.len(), 1, "the overview, with its accepted vs rejected chart");
    assert!(browser.url().await.ends_with("/dashboard"), "{}", browser.url().await);
    let cards = browser.text(&browser.find(".cards").await).await;
    assert!(cards.contains("Dead letters\n1"), "{cards}");
    browser.screenshot("overview").await;

    browser.go(&format!("{site}/dashboard/sla")).await;
    let rows = browser.find_all("#sla-table tr[data-state='breached']").await;
    assert_eq!(rows.len(), 3, "the three late penalties");
    let table = browser.text(&browser.find("#sla-table").await).await;
    for id in &late {
        assert!(table.contains(id.as_str()), "{id} listed:\n{table}");
    }
    assert!(table.contains("超期 breached"));
    browser.screenshot("sla").await;

    browser.go(&format!("{site}/dashboard/quality")).await;
    let row = browser.find(&format!("#quality-table tr[data-department='{unit}']")).await;
    assert_eq!(browser.attribute(&row, "data-meets-target").await, "false");
    let text = browser.text(&row).await;
    assert!(text.contains("75.0%"), "3 of 4 accepted: {text}");
    // Nothing of the unit's was published yet: its 及时率 has no figure, not a red 0.0%.
    let timely = browser.find(&format!("#quality-table tr[data-department='{unit}'] td:nth-child(6)")).await;
    assert_eq!(browser.text(&timely).await, "—");
    browser.screenshot("quality").await;

    browser.go(&format!("{site}/dashboard/dead-letters")).await;
    assert_eq!(browser.find_all("#dead-letters tr[data-state='dead']").await.len(), 1);
    // Times in Beijing time, as the page's footer says, like the dates on every page.
    let letters_text = browser.text(&browser.find("#dead-letters").await).await;
    let dead_at = time::OffsetDateTime::parse(&letter_at, &time::format_description::well_known::Rfc3339)
        .expect("time")
        .to_offset(gateway_core::date::CHINA);
    let shown = format!("{} {:02}:{:02}", dead_at.date(), dead_at.hour(), dead_at.minute());
    assert!(letters_text.contains(&shown), "dead at {letter_at} shown as {shown}:\n{letters_text}");
    assert!(browser.text(&browser.find("footer").await).await.contains("北京时间"));
    browser.click("#dead-letters button.resend").await;
    let flash = browser.text(&browser.wait_for("#flash").await[0]).await;
    assert!(flash.contains(&dead.record_id.to_string()), "{flash}");
    assert_eq!(browser.find_all("#dead-letters tr[data-state='resend']").await.len(), 1);
    let letters = gw.store.dead_letters(Some("cn-370300"), 10).await.expect("letters");
    assert_eq!(letters[0].state, "resend", "the click queued the resend in the store");
    let shot = browser.screenshot("dead-letters").await;
    assert!(std::fs::metadata(shot).expect("saved").len() > 1000);

    browser.go(&format!("{site}/dashboard/cases")).await;
    let overdue = browser.text(&browser.find("#cases-overdue").await).await;
    assert_eq!(overdue, "1", "one case overdue");
    let row = browser.find(&format!("#overdue-table tr[data-case='{overdue_case}']")).await;
    let text = browser.text(&row).await;
    // This node has no catalogue configured: the measure shows by its id.
    assert!(text.contains("响应 response") && text.contains("restrict-government-procurement"), "{text}");
    let late = browser.text(&browser.find("#loop-table tr[data-department] td.bad").await).await;
    assert_eq!(late, "1", "the department's late response in the loop table");
    let shot = browser.screenshot("cases").await;
    assert!(std::fs::metadata(shot).expect("saved").len() > 1000);

    // The API docs page renders the handlers' markdown: `code` as code, never the backticks.
    browser.go(&format!("{site}/api/v1/docs")).await;
    assert!(browser.wait_for("#ops .op p code").await.len() > 3, "inline code in the descriptions");
    for p in browser.find_all("#ops .op p").await {
        let text = browser.text(&p).await;
        assert!(!text.contains('`'), "a literal backtick: {text}");
    }
    let docs = browser.text(&browser.find("#ops").await).await;
    assert!(docs.contains("报送记录（批量） · Push a batch of records"), "summaries in Chinese and English");
    browser.screenshot("api-docs").await;
    browser.close().await;
}

/// Opens the cases of a black-list entry as if 30 days ago (the opener's injected clock), at
/// the one finance department registered, then checks alerts: on the day of opening nothing is
/// overdue; today the response is, and the alert names the case once. Returns the case id.
async fn open_overdue_case(node: &testkit::Running) -> String {
    let app = &node.app;
    let catalogue = gateway_core::measures::Catalogue::parse(
        &std::fs::read(testkit::repo_dir().join("measures/demo.toml")).expect("read"),
    )
    .expect("catalogue");
    let finance = credit_gateway::bench::uscc_in("11", "370300", 1);
    let req = credit_gateway::auth::IssueRequest {
        principal: "淄博市财政局（审批系统）".into(),
        role: Some(credit_gateway::auth::Role::Department),
        unit_uscc: Some(finance.clone()),
        category: Some("finance".into()),
        ..Default::default()
    };
    credit_gateway::auth::credentials::issue(&app.ingest.store, req, OffsetDateTime::now_utc()).await.expect("issue");
    // Listed today: on time at the SLA page, whatever the cases' clock.
    let entry = testkit::active_black_list_entry();
    let answer = app
        .ingest
        .push(serde_json::to_vec(&[entry]).expect("json").into(), OffsetDateTime::now_utc())
        .await
        .expect("push");
    assert_eq!(answer.accepted, 1, "{:?}", answer.outcomes);
    let then = OffsetDateTime::now_utc() - time::Duration::days(30);
    assert_eq!(credit_gateway::joint::opener::run_once(&app.ingest, &catalogue, then).await.expect("open"), 1);

    let (url, received) = testkit::webhook().await;
    let alerts = credit_gateway::config::AlertsConfig { webhook_url: Some(url), ..Default::default() };
    let dir = tempfile::tempdir().expect("tmp");
    let alerter =
        credit_gateway::alerts::Alerter::new(app.clone(), &alerts, dir.path()).expect("alerter").expect("configured");
    let kinds = |received: &testkit::Received| -> Vec<Value> {
        received.lock().expect("lock").drain(..).map(|(_, body)| serde_json::from_slice(&body).expect("json")).collect()
    };
    alerter.check(then).await.expect("check");
    assert!(kinds(&received).iter().all(|a| a["kind"] != "cases.overdue"), "not overdue on the day it opened");
    alerter.check(OffsetDateTime::now_utc()).await.expect("check");
    let raised: Vec<Value> = kinds(&received).into_iter().filter(|a| a["kind"] == "cases.overdue").collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let case_id = raised[0]["details"]["cases"][0]["case_id"].as_str().expect("case").to_owned();
    assert_eq!(raised[0]["details"]["cases"][0]["department_uscc"], finance.as_str());
    alerter.check(OffsetDateTime::now_utc()).await.expect("check");
    assert!(kinds(&received).iter().all(|a| a["kind"] != "cases.overdue"), "raised once");
    case_id
}
