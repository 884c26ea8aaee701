//! `credit-gateway demo`: the demo federation on loopback (周村区 → 信用淄博 → 信用山东 →
//! 信用中国, plus 信用东营), each node with SQLite, mutual TLS from the dev PKI and its relay
//! running. Pushes a sample of records into 周村区, raises a correction there, a repair at
//! 信用中国 and an objection at 信用淄博, shows each reaching every node, prints where to look,
//! and runs until stopped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::auth::{IssueRequest, Role, grants};
use crate::config::{AlertsConfig, Config, FederationConfig, RelayConfig};
use crate::pki::DEMO_FEDERATION;

/// Options of `credit-gateway demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// The dev PKI (`certs init` runs first if it is missing).
    #[arg(long, default_value = "certs/dev")]
    pub pki: PathBuf,
    /// Where the nodes keep their data; emptied at start (only if the demo made it).
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// API port of the first node; the others follow (8081 周村区 … 8085 信用东营).
    #[arg(long, default_value_t = 8081)]
    pub api_port: u16,
    /// Records pushed into 周村区.
    #[arg(long, default_value_t = 600)]
    pub records: usize,
}

/// Marks a directory the demo created, so it is never asked to empty anything else.
const MARKER: &str = ".credit-gateway-demo";

struct RunningNode {
    member: &'static str,
    name: &'static str,
    api: String,
    running: crate::server::Running,
}

impl RunningNode {
    fn store(&self) -> &gateway_store::Store {
        &self.running.app.ingest.store
    }
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(opts: &DemoOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    prepare_dirs(opts)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // One operator for every node's dashboard, with a password for this run only.
    let password = hex::encode(&crate::pki::random_secret(&ring::rand::SystemRandom::new())?[..9]);
    let operator = crate::config::Operator {
        name: "admin".into(),
        password_hash: crate::dashboard::auth::hash_password(&password, crate::dashboard::auth::ITERATIONS)?,
        role: None,
    };
    let alerts = AlertsConfig {
        webhook_url: Some(alert_inbox(&opts.data_dir).await?),
        check_interval_secs: 15,
        ..AlertsConfig::default()
    };
    let mut nodes = Vec::new();
    for (i, demo) in DEMO_FEDERATION.iter().filter(|n| n.in_demo).enumerate() {
        let data_dir = opts.data_dir.join(demo.member_id);
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], opts.api_port + i as u16));
        let fed_listen = crate::pki::demo_listen(demo.member_id).context("demo member without a port")?;
        let config = Config {
            listen,
            data_dir: data_dir.clone(),
            member_id: demo.member_id.into(),
            federation: Some(FederationConfig::from_pki(&opts.pki, demo.member_id, fed_listen)),
            relay: RelayConfig {
                publication_dir: Some(data_dir.join("publication")),
                linger_ms: 50,
                routes: not_running(),
                ..RelayConfig::default()
            },
            dashboard: crate::config::DashboardConfig { operators: vec![operator.clone()] },
            adapters: demo_adapters(opts, demo.member_id),
            alerts: alerts.clone(),
            // As in production: every call needs a credential (made below, printed at the end).
            auth: crate::config::AuthConfig { required: true, ..Default::default() },
            measures: demo_measures(opts, i == 0),
            ..Config::default()
        };
        // The same start as `serve`: relay, SLA tracker, alerts, expiry job, sampler.
        let running = crate::server::start(config, until_stopped(stopped.clone()))
            .await
            .with_context(|| format!("{} ({})", demo.name, demo.member_id))?;
        nodes.push(RunningNode { member: demo.member_id, name: demo.name, api: format!("http://{listen}"), running });
    }
    println!("演示联盟已启动 · demo federation running (data in {})", opts.data_dir.display());

    let keys = demo_credentials(&nodes).await?;
    let scenario = scenario(opts, &nodes, &keys).await;
    match &scenario {
        Ok(targets) => print_guide(&nodes, targets, &password, &keys),
        Err(e) => eprintln!("demo scenario failed: {e:#}"),
    }
    if scenario.is_ok() {
        println!("\n按 Ctrl-C 停止 · press Ctrl-C to stop");
        shutdown.await;
    }
    let _ = stop.send(true);
    for node in nodes {
        if let Err(e) = node.running.stopped().await {
            eprintln!("{} stopped with an error: {e:#}", node.name);
        }
    }
    scenario.map(|_| ())
}

/// Rules that send nothing to the registry's members the demo does not run (河南, 辽宁 …):
/// list entries go down to every platform by an `all` measure, and a member that is not there
/// would only be retried for ever.
fn not_running() -> Vec<crate::config::RouteRule> {
    DEMO_FEDERATION
        .iter()
        .filter(|n| !n.in_demo)
        .map(|n| crate::config::RouteRule {
            destination: n.member_id.into(),
            record_types: Vec::new(),
            disclosure: Vec::new(),
            action: crate::config::RouteAction::Skip,
        })
        .collect()
}

/// The demo's API keys, per node (in the order of the nodes): the platform's credit office
/// (信用办), a department that reports for every unit of its platform; an operator; and at
/// 信用淄博 a desk officer for evaluation lookups.
struct DemoKeys {
    office: Vec<String>,
    operator: Vec<String>,
    desk: String,
}

async fn demo_credentials(nodes: &[RunningNode]) -> anyhow::Result<DemoKeys> {
    let now = time::OffsetDateTime::now_utc();
    let mut keys = DemoKeys { office: Vec::new(), operator: Vec::new(), desk: String::new() };
    for n in nodes {
        let region = n.member.trim_start_matches("cn-");
        let issue = async |role: Role, name: String, grants: Vec<String>| -> anyhow::Result<String> {
            let req = IssueRequest {
                principal: name,
                role: Some(role),
                unit_uscc: (role != Role::Operator).then(|| crate::bench::uscc_in("11", region, 0)),
                grants,
                expires_in_days: Some(7),
                ..IssueRequest::default()
            };
            let issued = crate::auth::credentials::issue(n.store(), req, now).await?;
            issued.api_key.context("an API key")
        };
        keys.office.push(issue(Role::Department, format!("{}信用办", n.name), vec![grants::ALL_UNITS.into()]).await?);
        keys.operator.push(issue(Role::Operator, format!("{}值班员", n.name), Vec::new()).await?);
        if n.member == "cn-370300" {
            keys.desk = issue(Role::DeskOfficer, "信用淄博窗口 张三".into(), Vec::new()).await?;
        }
    }
    Ok(keys)
}

/// Where the demo's nodes send their alerts: a receiver on loopback that appends each one as it
/// came (signed; the keys are in each node's `alerts.key`) to `<data-dir>/alerts.jsonl`. A real
/// deployment points `[alerts] webhook_url` at its own monitoring.
async fn alert_inbox(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("alerts.jsonl");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the demo's alert inbox")?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    let inbox = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: axum::body::Bytes| {
            let path = path.clone();
            async move {
                use tokio::io::AsyncWriteExt;
                let line = [body.as_ref(), b"\n"].concat();
                let appended = match tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await {
                    Ok(mut file) => file.write_all(&line).await,
                    Err(e) => Err(e),
                };
                match appended {
                    Ok(()) => axum::http::StatusCode::NO_CONTENT,
                    Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, inbox).await;
    });
    Ok(url)
}

/// 周村区 takes departments' monthly workbooks through its intake adapter, when the dev PKI
/// has signed it (a PKI made before adapters existed has not: `certs init --force` renews it).
/// The demo catalogue of joint reward-and-punishment measures, signed by `certs init`, when
/// both are there (an older PKI has no signature: say so once, at the first node).
fn demo_measures(opts: &DemoOptions, first: bool) -> crate::config::MeasuresConfig {
    const DEMO: &str = "cn-credit-measures-demo";
    let catalogue = std::path::Path::new("measures").join("demo.toml");
    let signature = crate::pki::catalogue_signature_file(&opts.pki, DEMO);
    if !catalogue.exists() || !signature.exists() {
        if first && catalogue.exists() {
            eprintln!(
                "note: {} has no signed measures catalogue; run `credit-gateway certs init --force` for 联合奖惩",
                opts.pki.display()
            );
        }
        return crate::config::MeasuresConfig::default();
    }
    crate::config::MeasuresConfig {
        catalogue: Some(catalogue),
        signature: Some(signature),
        ..crate::config::MeasuresConfig::default()
    }
}

fn demo_adapters(opts: &DemoOptions, member: &str) -> Vec<crate::adapters::AdapterBinding> {
    const INTAKE: &str = "zhoucun-district";
    let manifest = std::path::Path::new("adapters").join(INTAKE).join("manifest.toml");
    let signature = crate::pki::adapter_signature_file(&opts.pki, INTAKE);
    if member != "cn-370306" || !manifest.exists() {
        return Vec::new();
    }
    if !signature.exists() {
        eprintln!(
            "note: {} has no signed {INTAKE} manifest; run `credit-gateway certs init --force` for Excel imports",
            opts.pki.display()
        );
        return Vec::new();
    }
    vec![crate::adapters::AdapterBinding {
        manifest,
        signature: Some(signature),
        url: None,
        inbox: None,
        outbox: None,
        database_url: None,
        poll_interval_ms: 5_000,
        units: Vec::new(),
    }]
}

/// Empties the demo's data directory (only one the demo made) and makes the PKI if missing.
fn prepare_dirs(opts: &DemoOptions) -> anyhow::Result<()> {
    let dir = &opts.data_dir;
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARKER).exists() || std::fs::read_dir(dir)?.next().is_none(),
            "{} exists and was not made by the demo; pass another --data-dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "data of `credit-gateway demo`; emptied when the demo starts\n")?;
    if !crate::pki::registry_file(&opts.pki).exists() {
        crate::pki::init(&crate::pki::InitOptions::dev(&opts.pki))?;
        println!("dev PKI written to {}", opts.pki.display());
    }
    Ok(())
}

/// The record ids the scenario's events are about.
struct Targets {
    corrected: String,
    repaired: String,
    disputed: String,
}

async fn scenario(opts: &DemoOptions, nodes: &[RunningNode], keys: &DemoKeys) -> anyhow::Result<Targets> {
    let client = reqwest::Client::new();
    let [district_key, city_key, _, national_key, dongying_key] = &keys.office[..] else {
        anyhow::bail!("the demo federation has five nodes")
    };
    let [district, city, _, national, dongying] = nodes else { anyhow::bail!("the demo federation has five nodes") };
    let mut records = crate::bench::synthetic_records(opts.records, 2026);
    records.push(example(include_str!("../../../schemas/monthly_report/valid/regular_market_supervision.json"))?);
    let mut outcomes = Vec::new();
    for batch in records.chunks(500) {
        let answer = post(&client, &district.api, district_key, batch).await?;
        outcomes.extend(answer["outcomes"].as_array().cloned().unwrap_or_default());
    }
    let accepted = outcomes.iter().filter(|o| o["status"] == "accepted").count();
    println!("周村区 accepted {accepted} of {} records; relaying to 信用中国 …", records.len());
    let penalty_ids: Vec<String> = records
        .iter()
        .zip(&outcomes)
        .filter(|(r, _)| r["record_type"] == "admin_penalty")
        .filter_map(|(_, o)| o["record_id"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(penalty_ids.len() >= 3, "the sample needs three penalties");
    let total = accepted as i64;
    wait_for("every record at every node", async || {
        for n in nodes.iter().filter(|n| n.member != "cn-370500") {
            if n.store().count().await.unwrap_or(0) < total {
                return false;
            }
        }
        true
    })
    .await?;

    let targets = Targets {
        corrected: penalty_ids[0].clone(),
        repaired: penalty_ids[1].clone(),
        disputed: penalty_ids[2].clone(),
    };
    // 更正 at 周村区: the replacement content becomes current everywhere.
    let original = records.iter().zip(&outcomes).find(|(_, o)| o["record_id"] == targets.corrected.as_str());
    let mut replacement = original.map(|(r, _)| r.clone()).context("corrected record")?;
    replacement["violation_facts"] =
        json!(format!("{}（经复核更正）", replacement["violation_facts"].as_str().unwrap_or_default()));
    let mut correction =
        aim(include_str!("../../../schemas/correction/valid/penalty_violation_facts.json"), &targets.corrected)?;
    correction["replacement"] = replacement;
    post(&client, &district.api, district_key, &[correction]).await?;
    // 信用修复 at 信用中国 (the national acceptance window): publicity stops everywhere.
    let repair =
        aim(include_str!("../../../schemas/repair/valid/national_window_tax_penalty.json"), &targets.repaired)?;
    post(&client, &national.api, national_key, &[repair]).await?;
    // 异议 at 信用淄博: disputed everywhere, sanctions suspended while it is verified.
    let mut objection =
        aim(include_str!("../../../schemas/objection_opened/valid/provincial_list_suspended.json"), &targets.disputed)?;
    objection["sanctions_suspended"] = json!(true);
    post(&client, &city.api, city_key, &[objection]).await?;
    println!("raised: 更正 correction at 周村区, 信用修复 repair at 信用中国, 异议 objection at 信用淄博 …");

    let chain = &nodes[..4];
    wait_for("the events at every node", async || {
        for n in chain {
            let store = n.store();
            let state = async |id: &str| {
                let id = uuid::Uuid::parse_str(id).ok()?;
                store.trail(id).await.ok().flatten().map(|t| t.state)
            };
            let corrected = state(&targets.corrected).await.is_some_and(|s| s.corrected_by.is_some());
            let repaired = state(&targets.repaired).await.is_some_and(|s| s.state == "repaired");
            let disputed = state(&targets.disputed).await.is_some_and(|s| s.state == "disputed");
            if !(corrected && repaired && disputed) {
                return false;
            }
        }
        true
    })
    .await?;
    println!("\n{:<10} {:>8}  {:<10} {:<10} {:<10} node", "member", "records", "corrected", "repaired", "disputed");
    for n in chain {
        let store = n.store();
        let count = store.count().await?;
        let mut states = Vec::new();
        for id in [&targets.corrected, &targets.repaired, &targets.disputed] {
            let trail = store.trail(uuid::Uuid::parse_str(id)?).await?.context("trail")?;
            states.push(match trail.state.corrected_by {
                Some(_) if id == &targets.corrected => "corrected".to_owned(),
                _ => trail.state.state,
            });
        }
        println!("{:<10} {:>8}  {:<10} {:<10} {:<10} {}", n.member, count, states[0], states[1], states[2], n.name);
    }
    recognition(&client, city, dongying, dongying_key, &keys.desk).await?;
    if city.running.app.measures.is_some() && national.running.app.measures.is_some() {
        let national_operator = keys.operator.get(3).context("信用中国's operator key")?;
        joint_loop(&client, city, national, national_key, national_operator).await?;
    }
    Ok(targets)
}

/// 联合奖惩, one loop end to end across the federation: a black-list entry listed at 信用中国
/// goes down by its measures' reach and opens cases at three departments of 信用淄博; the
/// finance bureau checks the subject before a procurement decision (信用核查), accepts and feeds
/// back naming the check; the market bureau answers not applicable; then a 信用修复 of the entry
/// at 信用中国 asks every department to lift its measure, and the finance bureau acknowledges.
/// Prints each case as it ends, then the loop as 信用中国 sees it from the reports that came up.
async fn joint_loop(
    client: &reqwest::Client,
    city: &RunningNode,
    national: &RunningNode,
    national_office: &str,
    national_operator: &str,
) -> anyhow::Result<()> {
    use crate::auth::{IssueRequest, Role};
    let now = time::OffsetDateTime::now_utc();
    let mut department = Vec::new();
    for (k, name, category) in [
        (1, "淄博市财政局", "finance"),
        (2, "淄博市市场监督管理局", "market_regulation"),
        (3, "淄博市住房和城乡建设局", "housing_construction"),
    ] {
        let req = IssueRequest {
            principal: name.into(),
            role: Some(Role::Department),
            unit_uscc: Some(crate::bench::uscc_in("11", "370300", k)),
            category: Some(category.into()),
            expires_in_days: Some(7),
            ..IssueRequest::default()
        };
        let issued = crate::auth::credentials::issue(city.store(), req, now).await?;
        department.push(issued.api_key.context("an API key")?);
    }
    let entry = active_black_list_entry(gateway_core::date::today_in_china(now))?;
    let answer = post(client, &national.api, national_office, &[entry]).await?;
    let entry_id = answer["outcomes"][0]["record_id"].as_str().context("entry id")?.to_owned();
    println!(
        "
联合奖惩 · joint punishment: 黑名单 entry {entry_id} listed at 信用中国, going down to 信用淄博 …"
    );

    let call = async |key: &str, path: &str, body: Option<Value>| -> anyhow::Result<Value> {
        let url = format!("{}{path}", city.api);
        let req = match body {
            Some(b) => client.post(url).json(&b),
            None => client.get(url),
        };
        let resp = req.bearer_auth(key).send().await?;
        let status = resp.status();
        let answer: Value = resp.json().await?;
        anyhow::ensure!(status.is_success(), "{path} answered {status}: {answer}");
        Ok(answer)
    };
    let mut cases = Vec::new();
    wait_for("the cases to open (发起)", async || {
        cases.clear();
        for key in &department {
            if let Ok(page) = call(key, "/api/v1/cases", None).await {
                cases.extend(page["cases"].as_array().cloned().unwrap_or_default());
            }
        }
        cases.len() == 3
    })
    .await?;
    let case_id = |measure: &str| {
        cases.iter().find(|c| c["measure_id"] == measure).and_then(|c| c["case_id"].as_str()).map(str::to_owned)
    };
    let procurement = case_id("restrict-government-procurement").context("procurement case")?;
    let inspection = case_id("strict-market-inspection").context("inspection case")?;
    let check = call(
        &department[0],
        "/api/v1/checks",
        Some(json!({"uscc": "91370306MA3P6H1L2M", "matter_code": "370300-ZFCG-0001", "area_code": "370300"})),
    )
    .await?;
    let check_id = check["check_id"].as_str().unwrap_or_default().to_owned();
    println!(
        "  信用核查 check {check_id}: {} measure(s) for 淄博市财政局",
        check["measures"].as_array().map_or(0, Vec::len)
    );
    call(&department[0], &format!("/api/v1/cases/{procurement}/response"), Some(json!({"answer": "accepted"}))).await?;
    let today = gateway_core::date::format_date(gateway_core::date::today_in_china(now));
    let feedback = json!({"executed_on": today, "action_taken": "拒绝其参加本次政府采购", "document_no": "淄财采〔2026〕12号", "check_id": check_id});
    call(&department[0], &format!("/api/v1/cases/{procurement}/feedback"), Some(feedback)).await?;
    let not_applicable = json!({"answer": "not_applicable", "reason": "该主体不在本局监管范围内"});
    call(&department[1], &format!("/api/v1/cases/{inspection}/response"), Some(not_applicable)).await?;
    println!(
        "  响应/反馈: finance accepted and fed back; market regulation: not applicable; housing: not yet answered"
    );

    // 信用修复 of the entry at 信用中国: every measure that may be in force is to be lifted, at
    // every platform the entry reached.
    let mut repair = example(include_str!("../../../schemas/repair/valid/national_window_tax_penalty.json"))?;
    repair["target_origin"] = json!(national.member);
    repair["target_record_id"] = json!(entry_id);
    repair["target_version"] = json!(1);
    repair["decided_on"] = json!(today);
    post(client, &national.api, national_office, &[repair]).await?;
    wait_for("the lifting (解除) to be asked", async || {
        call(&department[0], "/api/v1/cases?state=lifting", None)
            .await
            .is_ok_and(|p| p["cases"].as_array().is_some_and(|c| !c.is_empty()))
    })
    .await?;
    call(&department[0], &format!("/api/v1/cases/{procurement}/lifted"), Some(json!({}))).await?;
    println!("  信用修复 → 解除: lifting asked of every department with a measure in force; finance acknowledged\n");
    println!("  {:<34} {:<22} {:<16} lift", "measure", "department", "state");
    for key in &department {
        for c in call(key, "/api/v1/cases", None).await?["cases"].as_array().cloned().unwrap_or_default() {
            println!(
                "  {:<34} {:<22} {:<16} {}",
                c["measure_id"].as_str().unwrap_or(""),
                c["department_uscc"].as_str().unwrap_or(""),
                c["state"].as_str().unwrap_or(""),
                c["lift_reason"].as_str().unwrap_or("—"),
            );
        }
    }

    // The departments' answers come back up as signed case reports: 信用中国 counts the loop.
    let url = format!("{}/api/v1/cases/loop?scope=federation", national.api);
    let mut rows = Vec::new();
    wait_for("信用淄博's reports at 信用中国", async || {
        let Ok(resp) = client.get(&url).bearer_auth(national_operator).send().await else { return false };
        rows = resp.json::<Value>().await.ok().and_then(|v| v.as_array().cloned()).unwrap_or_default();
        let zibo = rows.iter().filter(|r| r["node"] == city.member);
        let (mut opened, mut lifted) = (0, 0);
        for r in zibo {
            opened += r["opened"].as_i64().unwrap_or(0);
            lifted += r["lifted"].as_i64().unwrap_or(0);
        }
        opened == 3 && lifted == 1
    })
    .await?;
    println!("\n  信用中国 sees the loop (GET /api/v1/cases/loop?scope=federation):");
    println!(
        "  {:<10} {:<20} {:>6} {:>9} {:>8} {:>7} {:>6}",
        "node", "department", "opened", "responded", "fed_back", "lifting", "lifted"
    );
    for r in &rows {
        let n = |k: &str| r[k].as_i64().unwrap_or(0);
        println!(
            "  {:<10} {:<20} {:>6} {:>9} {:>8} {:>7} {:>6}",
            r["node"].as_str().unwrap_or(""),
            r["department_uscc"].as_str().unwrap_or(""),
            n("opened"),
            n("responded"),
            n("fed_back"),
            n("lifting"),
            n("lifted"),
        );
    }
    Ok(())
}

/// 信用东营 loads credit evaluations; 信用淄博's desk looks three companies up there under
/// their signed agreement (信用评价结果互认) and prints the verdicts.
async fn recognition(
    client: &reqwest::Client,
    city: &RunningNode,
    dongying: &RunningNode,
    dongying_key: &str,
    desk_key: &str,
) -> anyhow::Result<()> {
    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    post(client, &dongying.api, dongying_key, &crate::bench::synthetic_evaluations(0..20, today)).await?;
    let subjects: Vec<String> = (0..5).map(|k| crate::bench::uscc_in("91", "370500", k)).collect();
    let resp = client
        .post(format!("{}/api/v1/evaluations/lookup", city.api))
        .bearer_auth(desk_key)
        .json(&json!({"from": dongying.member, "subjects": subjects}))
        .send()
        .await?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "信用淄博's evaluation lookup at 信用东营 answered {status}: {answer}");
    println!(
        "
信用淄博 asks 信用东营 for five companies' evaluations (信用评价结果互认):"
    );
    for subject in answer["subjects"].as_array().into_iter().flatten() {
        let verdicts: Vec<String> = subject["evaluations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let grade = e["disclosed"]["grade"].as_str().unwrap_or("?");
                let band = e["disclosed"]["band"].as_str().unwrap_or("—");
                match e["reason"].as_str() {
                    None => format!("{} {grade}→{band} recognised", e["scheme_id"].as_str().unwrap_or("")),
                    Some(r) => format!("{} {grade} not recognised ({r})", e["scheme_id"].as_str().unwrap_or("")),
                }
            })
            .collect();
        println!("  {}  {}", subject["subject_uscc"].as_str().unwrap_or(""), verdicts.join("; "));
    }
    Ok(())
}

fn print_guide(nodes: &[RunningNode], t: &Targets, password: &str, keys: &DemoKeys) {
    println!("\n在哪里看 · where to look:");
    for n in nodes {
        println!("  {} API {}  {}", n.member, n.api, n.name);
    }
    println!("\nAPI 密钥（本次运行，7 天有效）· API keys of this run (send as Authorization: Bearer <key>):");
    for (i, n) in nodes.iter().enumerate() {
        println!("  {} {} 信用办 department (all units): {}", n.member, n.name, keys.office[i]);
        println!("  {} {} operator:                      {}", n.member, n.name, keys.operator[i]);
    }
    println!("  cn-370300 信用淄博 desk officer:                  {}", keys.desk);
    println!(
        "  e.g. curl -H 'Authorization: Bearer {}' {}/api/v1/outbox\n  CLI: export CREDIT_GATEWAY_API_KEY=<key> before `outbox`, `import`, `evaluation`\n",
        keys.operator.first().map_or("", String::as_str),
        nodes.first().map_or("", |n| n.api.as_str())
    );
    println!(
        "  dashboard on every node: <API>/dashboard — operator admin, password {password} (this run only)\n    \
         e.g. {}/dashboard (信用淄博: SLA, quality, dead letters)",
        nodes.get(1).map_or("", |n| n.api.as_str())
    );
    if let Some(n) = nodes.first() {
        let api = &n.api;
        println!(
            "  on every node: {api}/api/v1/docs (API docs), /metrics, /api/v1/outbox (queues), /api/v1/dead-letters"
        );
    }
    let district = &nodes[0].api;
    let national = &nodes[3].api;
    println!("  trail of the repaired record at 周村区:  {district}/api/v1/records/{}/trail", t.repaired);
    println!("  trail of the corrected record at 信用中国: {national}/api/v1/records/{}/trail", t.corrected);
    println!("  trail of the disputed record at 信用中国:  {national}/api/v1/records/{}/trail", t.disputed);
    println!("  publication files: <data-dir>/<member>/publication/*.jsonl");
    println!("  alerts of every node (signed webhooks, checked every 15 s): <data-dir>/alerts.jsonl");
    if let (Some(city), Some(dongying)) = (nodes.get(1), nodes.get(4)) {
        println!(
            "  evaluations of a 东营 company, asked at 信用淄博 (with the desk officer's key in CREDIT_GATEWAY_API_KEY):\n    \
             credit-gateway evaluation lookup {} --from 信用东营 --url {}\n    \
             audit log: {}/api/v1/evaluations/audit (asker) and {}/api/v1/evaluations/audit (answerer)",
            crate::bench::uscc_in("91", "370500", 1),
            city.api,
            city.api,
            dongying.api
        );
    }
    // The department the sample records come from, so its report and its records are one row
    // of the quality page.
    let (unit, unit_uscc) = crate::bench::SAMPLE_UNITS[0];
    println!(
        "  monthly Excel report into 周村区: credit-gateway template xlsx --out 月报.xlsx, fill it, then\n    \
         credit-gateway import 月报.xlsx --unit {unit} --unit-uscc {unit_uscc} --url {district}"
    );
}

/// The demo's 政府采购 black-list entry of 周村区, in force and listed on `today`: the shipped
/// example of a removed entry put back. The demo catalogue starts procurement (finance),
/// bidding (housing) and inspection (market) for it; tests use it too.
pub fn active_black_list_entry(today: time::Date) -> anyhow::Result<Value> {
    let mut entry = example(include_str!("../../../schemas/credit_list_entry/valid/black_procurement_removed.json"))?;
    let obj = entry.as_object_mut().context("object")?;
    obj.remove("removed_on");
    obj.remove("removal_reason");
    obj.insert("status".into(), json!("active"));
    obj.insert("listed_on".into(), json!(gateway_core::date::format_date(today)));
    obj.insert("valid_until".into(), json!("2099-12-31"));
    Ok(entry)
}

fn example(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).context("shipped example")
}

/// A shipped event example aimed at a 周村区 record.
fn aim(text: &str, target: &str) -> anyhow::Result<Value> {
    let mut v = example(text)?;
    v["target_origin"] = json!("cn-370306");
    v["target_record_id"] = json!(target);
    v["target_version"] = json!(1);
    Ok(v)
}

async fn post(client: &reqwest::Client, api: &str, key: &str, records: &[Value]) -> anyhow::Result<Value> {
    let resp = client.post(format!("{api}/api/v1/records")).bearer_auth(key).json(records).send().await?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "{api} answered {status}: {answer}");
    anyhow::ensure!(answer["rejected"] == 0, "{api} rejected records: {answer}");
    Ok(answer)
}

/// Polls `check` every 100 ms for up to two minutes.
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !check().await {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
