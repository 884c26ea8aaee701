//! Platform adapters on real nodes: a department's monthly workbook enters 周村区 through its
//! intake adapter, comes back annotated row by row, and its public penalties leave 信用中国's
//! adapter as national v2 rows that match that platform's schema; and a node refuses to start
//! with a manifest that is altered, unapproved or unsigned, saying which.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use credit_gateway::adapters::AdapterBinding;
use credit_gateway::config::RelayConfig;
use credit_gateway::interchange::Node;
use credit_gateway::relay::Relay;
use gateway_core::crypto::Alg;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde_json::Value;

const CHAIN: [&str; 4] = ["cn-370306", "cn-370300", "cn-370000", "cn-000000"];

fn adapter_dir(id: &str) -> PathBuf {
    testkit::repo_dir().join("adapters").join(id)
}

fn binding(pki: &Path, id: &str) -> AdapterBinding {
    AdapterBinding {
        manifest: adapter_dir(id).join("manifest.toml"),
        signature: Some(credit_gateway::pki::adapter_signature_file(pki, id)),
        url: None,
        inbox: None,
        outbox: None,
        database_url: None,
        poll_interval_ms: 100,
        units: Vec::new(),
    }
}

fn samples(id: &str, dataset: &str) -> Vec<Value> {
    let path = adapter_dir(id).join("samples").join(format!("{dataset}.platform.json"));
    serde_json::from_slice(&std::fs::read(path).expect("samples")).expect("json")
}

/// What the stand-in for 信用中国's platform received: (dataset, rows).
type Received = Arc<Mutex<Vec<(String, Vec<Value>)>>>;

/// 信用中国's platform interface, as far as the adapter sees it: an HTTP endpoint taking rows.
async fn national_platform() -> (String, Received) {
    let received: Received = Arc::default();
    let store = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/shuanggongshi/v2/{dataset}",
        axum::routing::post(move |UrlPath(dataset): UrlPath<String>, axum::Json(rows): axum::Json<Vec<Value>>| {
            let store = Arc::clone(&store);
            async move {
                store.lock().expect("lock").push((dataset, rows));
                axum::Json(serde_json::json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// A monthly report as a department fills it: licences (one with a wrong USCC check
/// character, one with its date as an Excel date cell), penalties, and a 表彰奖励 sheet this
/// gateway does not exchange.
fn workbook(path: &Path) -> (usize, usize) {
    let adapter =
        credit_gateway::adapters::compile(&adapter_dir("zhoucun-district").join("manifest.toml")).expect("manifest");
    let mut book = Workbook::new();
    let date_format = Format::new().set_num_format("yyyy-mm-dd");
    let mut counts = Vec::new();
    for (dataset, sheet) in [("XK", "行政许可"), ("CF", "行政处罚")] {
        let ds = adapter.dataset(dataset).expect("dataset");
        let columns = ds.columns();
        let ws = book.add_worksheet();
        ws.set_name(sheet).expect("name");
        for (c, name) in columns.iter().enumerate() {
            // Departments mark required columns and wrap long headers.
            let header = if c == 0 { format!("*{name}") } else { (*name).to_owned() };
            ws.write_string(0, c as u16, header.replace("统一社会信用代码", "统一社会\n信用代码")).expect("header");
        }
        let mut rows = samples("zhoucun-district", dataset);
        if dataset == "XK" {
            let mut bad = rows[0].clone();
            bad["统一社会信用代码"] = "91370306MA3C4QLX1Y".into();
            bad["行政许可决定文书号"] = "周审批许〔2026〕第9999号".into();
            rows.push(bad);
            // A row that names no department: still the importing unit's submission.
            let mut unnamed = rows[0].clone();
            unnamed["数据来源单位统一社会信用代码"] = Value::Null;
            unnamed["行政许可决定文书号"] = "周审批许〔2026〕第9998号".into();
            rows.push(unnamed);
        }
        for (r, row) in rows.iter().enumerate() {
            for (c, name) in columns.iter().enumerate() {
                let (r, c) = (r as u32 + 1, c as u16);
                match &row[*name] {
                    Value::String(s) if dataset == "XK" && r == 1 && *name == "许可决定日期" => {
                        let d = ExcelDateTime::parse_from_str(s).expect("date");
                        ws.write_datetime_with_format(r, c, &d, &date_format).expect("date cell");
                    }
                    Value::String(s) => {
                        ws.write_string(r, c, s).expect("cell");
                    }
                    Value::Number(n) => {
                        ws.write_number(r, c, n.as_f64().expect("f64")).expect("cell");
                    }
                    _ => {}
                }
            }
        }
        counts.push(rows.len());
    }
    let ws = book.add_worksheet();
    ws.set_name("表彰奖励").expect("name");
    ws.write_string(0, 0, "表彰对象").expect("cell");
    ws.write_string(1, 0, "淄博周村某公司").expect("cell");
    book.save(path).expect("save");
    (counts[0], counts[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_excel_report_entering_zhoucun_leaves_xinyong_zhongguo_in_v2_columns() {
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let root = tmp.path();
    let (platform_url, received) = national_platform().await;

    // Each node with its adapters; the relays start once every port is known.
    let relay = RelayConfig { linger_ms: 5, backoff_base_ms: 20, backoff_max_ms: 200, ..RelayConfig::default() };
    let mut running = Vec::new();
    let mut urls = Vec::new();
    for member in CHAIN {
        let mut bindings = Vec::new();
        if member == "cn-370306" {
            bindings.push(binding(&pki, "zhoucun-district"));
        }
        if member == "cn-000000" {
            bindings.push(AdapterBinding { url: Some(platform_url.clone()), ..binding(&pki, "xinyong-zhongguo") });
        }
        let configure = |c: &mut credit_gateway::config::Config| {
            c.adapters = bindings;
            c.relay = RelayConfig { enabled: false, ..relay.clone() };
        };
        let node = testkit::federation_node(&pki, member, &root.join(member), &[], configure).await;
        urls.push((member.to_owned(), format!("https://localhost:{}", node.federation_port.expect("port"))));
        running.push(node);
    }
    let peers: Arc<std::collections::BTreeMap<String, String>> = Arc::new(urls.into_iter().collect());
    let mut relays = Vec::new();
    for r in &running {
        let mut node: Node = r.node();
        node.identity.peers = Arc::clone(&peers);
        relays.push(Relay::start(node, &r.app.relay, relay.clone()));
    }
    let api = running[0].api.clone();

    let file = root.join("周村区市场监管局-2026-10.xlsx");
    let (licences, penalties) = workbook(&file);
    let client = reqwest::Client::new();
    let url = reqwest::Url::parse_with_params(
        &format!("{api}/api/v1/imports"),
        &[("unit", "淄博市周村区市场监督管理局"), ("unit_uscc", "11370306MB28501648"), ("period", "2026-10")],
    )
    .expect("url");
    let resp = client.post(url).body(std::fs::read(&file).expect("read")).send().await.expect("upload");
    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.expect("json");
    let id = started["import_id"].as_str().expect("id").to_owned();
    let mut status = Value::Null;
    testkit::eventually("the import to finish", Duration::from_secs(60), async || {
        status =
            client.get(format!("{api}/api/v1/imports/{id}")).send().await.expect("status").json().await.expect("json");
        status["state"] != "running"
    })
    .await;
    assert_eq!(status["state"], "done", "{status}");
    let summary = &status["summary"];
    assert_eq!(summary["rows"], licences + penalties + 1, "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");
    assert_eq!(summary["not_exchanged"], 1, "{summary}");
    assert_eq!(summary["accepted"], licences + penalties - 2, "{summary}");
    // The row that names no department counts against the importing department's data
    // quality, not against "（未注明）".
    let today = gateway_core::date::format_date(gateway_core::date::today_in_china(time::OffsetDateTime::now_utc()));
    let month = running[0].app.ingest.store.quality_month(&today[..7]).await.expect("quality");
    assert!(!month.departments.contains_key(""), "{:?}", month.departments.keys().collect::<Vec<_>>());
    let unit = &month.departments["11370306MB28501648"];
    assert_eq!(unit.submitted - unit.accepted, 1, "{unit:?}");
    assert_eq!(summary["zero_report"], false);
    assert_eq!(summary["monthly_report"]["status"], "accepted", "{summary}");

    // The department's own workbook comes back, every row explained.
    let feedback = client.get(format!("{api}/api/v1/imports/{id}/feedback.xlsx")).send().await.expect("get");
    assert_eq!(feedback.status(), 200);
    let annotated = root.join("feedback.xlsx");
    std::fs::write(&annotated, feedback.bytes().await.expect("bytes")).expect("write");
    let xk = credit_gateway::adapters::xlsx::read_sheet(&annotated, "行政许可").expect("sheet");
    assert_eq!(xk.len(), licences);
    let note = |row: &std::collections::BTreeMap<String, String>| row.get("问题数据反馈").cloned().unwrap_or_default();
    for row in &xk[..licences - 2] {
        assert_eq!(note(row), "已入库", "{row:?}");
    }
    let bad = note(&xk[licences - 2]);
    assert!(bad.starts_with("未入库") && bad.contains("uscc.check_char") && bad.contains("统一社会信用代码"), "{bad}");
    let cf = credit_gateway::adapters::xlsx::read_sheet(&annotated, "行政处罚").expect("sheet");
    assert_eq!(cf.len(), penalties);
    assert!(cf.iter().all(|row| note(row) == "已入库"), "{cf:?}");
    let other = credit_gateway::adapters::xlsx::read_sheet(&annotated, "表彰奖励").expect("sheet");
    assert!(note(&other[0]).starts_with("未交换"), "{other:?}");
    // The 汇总 sheet: the unit first, then one line per sheet with its counts.
    let summary_sheet = credit_gateway::adapters::xlsx::read_sheet(&annotated, "汇总").expect("summary sheet");
    let cells: Vec<String> = summary_sheet.iter().flat_map(|r| r.values().cloned()).collect();
    for expected in ["11370306MB28501648", "2026-10", "行政许可", "行政处罚", "表彰奖励", "合计"] {
        assert!(cells.iter().any(|c| c == expected), "{expected} missing from 汇总: {cells:?}");
    }

    // The public penalties reach 信用中国 and leave through its adapter in the v2 columns.
    let public_penalties: Vec<Value> =
        samples("zhoucun-district", "CF").into_iter().filter(|r| r["公开属性"] == "向全社会公开").collect();
    assert!(!public_penalties.is_empty());
    testkit::eventually("the national platform to receive the penalties", Duration::from_secs(60), async || {
        let got = received.lock().expect("lock");
        got.iter().filter(|(d, _)| d == "CF").map(|(_, rows)| rows.len()).sum::<usize>() >= public_penalties.len()
    })
    .await;
    let schema_path = testkit::repo_dir().join("schemas/platforms/national-v2/admin_penalty.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(schema_path).expect("schema")).expect("json");
    let validator = jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles");
    let got = received.lock().expect("lock").clone();
    let rows: Vec<&Value> = got.iter().filter(|(d, _)| d == "CF").flat_map(|(_, rows)| rows).collect();
    for row in &rows {
        let errors: Vec<String> = validator.iter_errors(row).map(|e| format!("{} {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{row}: {errors:?}");
    }
    for penalty in &public_penalties {
        let row = rows.iter().find(|r| r["CF_WSH"] == penalty["行政处罚决定书文号"]).expect("delivered");
        assert_eq!(row["CF_XDR_MC"], penalty["行政相对人名称"]);
        assert_eq!(row["CF_XDR_LB"], penalty["行政相对人类别"]);
        assert_eq!(row["CF_JDRQ"], penalty["处罚决定日期"]);
    }
    // Only public records go to a public platform; the monthly report is bookkeeping.
    assert_eq!(rows.len(), public_penalties.len());
    drop(relays);
}

/// Runs `serve` expecting it to refuse to start; returns what it said.
fn refused_start(data: &Path, pki: &Path, config: &Path) -> String {
    let port = testkit::free_port();
    let mut child = Command::new(testkit::gateway_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--member", "cn-370306", "--federation-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--pki")
        .arg(pki)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the node started although its adapter is bad");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read");
    err
}

fn config_with(dir: &Path, manifest: &Path, signature: &Path) -> PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[[adapters]]\nmanifest = {:?}\nsignature = {:?}\n",
            manifest.display().to_string(),
            signature.display().to_string()
        ),
    )
    .expect("config");
    path
}

#[test]
fn a_node_refuses_an_altered_unapproved_or_unsigned_manifest_at_start_up() {
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let root = tmp.path();
    // A copy of 周村区's adapter beside a copy of the schemas it names.
    let copy = root.join("repo");
    let adapter = copy.join("adapters/zhoucun-district");
    std::fs::create_dir_all(&adapter).expect("mkdir");
    let schemas = copy.join("schemas/platforms/department-xlsx");
    std::fs::create_dir_all(&schemas).expect("mkdir");
    for f in ["admin_license.json", "admin_penalty.json"] {
        std::fs::copy(testkit::repo_dir().join("schemas/platforms/department-xlsx").join(f), schemas.join(f))
            .expect("copy");
    }
    let original = std::fs::read(adapter_dir("zhoucun-district").join("manifest.toml")).expect("manifest");
    let manifest = adapter.join("manifest.toml");
    let signature = credit_gateway::pki::adapter_signature_file(&pki, "zhoucun-district");

    // One byte changed: 周村区's region code, 370306 → 370307.
    let mut altered = original.clone();
    let at = altered.windows(22).position(|w| w == b"region_code = \"370306\"").expect("region constant");
    altered[at + 20] = b'7';
    std::fs::write(&manifest, &altered).expect("write");
    let err = refused_start(&root.join("d1"), &pki, &config_with(root, &manifest, &signature));
    assert!(err.contains("zhoucun-district") && err.contains("altered after signing"), "{err}");

    // Signed by the root, but the registry in force does not list it.
    let mut edited = original.clone();
    edited.extend_from_slice(b"\n# reviewed again\n");
    std::fs::write(&manifest, &edited).expect("write");
    let resigned = root.join("resigned.sig");
    credit_gateway::adapters::cli::sign(&manifest, &pki.join("root-signing.key.json"), Some(&resigned)).expect("sign");
    let err = refused_start(&root.join("d2"), &pki, &config_with(root, &manifest, &resigned));
    assert!(err.contains("not approved by registry version 1"), "{err}");

    // No signature at all.
    std::fs::write(&manifest, &original).expect("write");
    let err = refused_start(&root.join("d3"), &pki, &config_with(root, &manifest, &root.join("missing.sig")));
    assert!(err.contains("manifest is unsigned"), "{err}");
}

/// A workbook with none of the report sheets is not a zero report: the import fails and says
/// which sheets it expected; a file that is no workbook is refused at the door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbook_without_report_sheets_is_refused_not_taken_as_a_zero_report() {
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let node = testkit::federation_node(&pki, "cn-370306", &tmp.path().join("node"), &[], |c| {
        c.adapters = vec![binding(&pki, "zhoucun-district")];
    })
    .await;
    let api = node.api.clone();

    let mut book = Workbook::new();
    let ws = book.add_worksheet();
    ws.write_string(0, 0, "行政相对人名称").expect("cell");
    ws.write_string(1, 0, "淄博周村某公司").expect("cell");
    let bytes = book.save_to_buffer().expect("workbook");
    let client = reqwest::Client::new();
    let url =
        format!("{api}/api/v1/imports?unit=淄博市周村区市场监督管理局&unit_uscc=11370306MB28501648&period=2026-10");
    let started: Value = client.post(&url).body(bytes).send().await.expect("upload").json().await.expect("json");
    let id = started["import_id"].as_str().expect("id").to_owned();
    let mut status = Value::Null;
    testkit::eventually("the import to end", Duration::from_secs(30), async || {
        status =
            client.get(format!("{api}/api/v1/imports/{id}")).send().await.expect("get").json().await.expect("json");
        status["state"] != "running"
    })
    .await;
    assert_eq!(status["state"], "failed", "{status}");
    assert!(status["error"].as_str().expect("error").contains("行政许可、行政处罚"), "{status}");
    let feedback = client.get(format!("{api}/api/v1/imports/{id}/feedback.xlsx")).send().await.expect("get");
    assert_eq!(feedback.status(), 404);
    assert_eq!(node.app.ingest.store.count().await.expect("count"), 0, "no monthly report was stored");

    let refused = client.post(&url).body("not a workbook").send().await.expect("upload");
    assert_eq!(refused.status(), 415);
}
