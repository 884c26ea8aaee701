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

/// 发起: a black-list entry pushed at 信用淄博 opens one case per measure it starts and per
/// implementing department (the department principals of the measure's category); each
/// department reads only its own; the entry sent again, or a new version of it, opens nothing
/// more; a removed entry opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_list_entry_opens_cases_at_the_implementing_departments() {
    use credit_gateway::auth::{IssueRequest, Role, grants};
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let shipped = testkit::repo_dir().join("measures/demo.toml");
    let signature = credit_gateway::pki::catalogue_signature_file(&pki, "cn-credit-measures-demo");
    let mut config = catalogue_config(&pki, dir.path(), shipped, signature);
    config.auth.required = true;
    let node = testkit::start(config).await;
    let app = &node.app;
    let now = time::OffsetDateTime::now_utc();
    let issue = async |role: Role, name: &str, unit: Option<String>, category: Option<&str>, grants: Vec<String>| {
        let req = IssueRequest {
            principal: name.into(),
            role: Some(role),
            unit_uscc: unit,
            category: category.map(str::to_owned),
            grants,
            ..IssueRequest::default()
        };
        credit_gateway::auth::credentials::issue(&app.ingest.store, req, now)
            .await
            .expect("issue")
            .api_key
            .expect("key")
    };
    let unit = |k: u64| credit_gateway::bench::uscc_in("11", "370300", k);
    let office = issue(Role::Department, "信用淄博信用办", Some(unit(0)), None, vec![grants::ALL_UNITS.into()]).await;
    let finance = issue(Role::Department, "淄博市财政局", Some(unit(1)), Some("finance"), Vec::new()).await;
    let market =
        issue(Role::Department, "淄博市市场监督管理局", Some(unit(2)), Some("market_regulation"), Vec::new()).await;
    let _housing =
        issue(Role::Department, "淄博市住房和城乡建设局", Some(unit(3)), Some("housing_construction"), Vec::new())
            .await;
    let _tax = issue(Role::Department, "国家税务总局淄博市税务局", Some(unit(4)), Some("taxation"), Vec::new()).await;
    let operator = issue(Role::Operator, "值班员", None, None, Vec::new()).await;

    // An active 政府采购 black-list entry: procurement (finance), bidding (housing) and
    // inspection (market) apply; the tax measure is for 税务 entries only.
    let mut entry: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            testkit::repo_dir().join("schemas/credit_list_entry/valid/black_procurement_removed.json"),
        )
        .expect("example"),
    )
    .expect("json");
    let obj = entry.as_object_mut().expect("object");
    obj.remove("removed_on");
    obj.remove("removal_reason");
    obj.insert("status".into(), "active".into());
    obj.insert("valid_until".into(), "2099-12-31".into());
    let client = reqwest::Client::new();
    let push = async |records: &[serde_json::Value]| {
        let resp = client
            .post(format!("{}/api/v1/records", node.api))
            .bearer_auth(&office)
            .json(records)
            .send()
            .await
            .expect("push");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["rejected"], 0, "{body}");
    };
    push(std::slice::from_ref(&entry)).await;
    let catalogue = app.measures.as_ref().expect("catalogue");
    assert_eq!(credit_gateway::joint::opener::run_once(&app.ingest, catalogue, now).await.expect("open"), 3);

    let cases = async |key: &str| -> Vec<serde_json::Value> {
        let page: serde_json::Value = client
            .get(format!("{}/api/v1/cases", node.api))
            .bearer_auth(key)
            .send()
            .await
            .expect("cases")
            .json()
            .await
            .expect("json");
        page["cases"].as_array().cloned().unwrap_or_default()
    };
    let own = cases(&finance).await;
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
    let theirs = cases(&market).await;
    assert_eq!(
        theirs.iter().map(|c| c["measure_id"].as_str().expect("id")).collect::<Vec<_>>(),
        ["strict-market-inspection"]
    );
    assert_eq!(cases(&operator).await.len(), 3);

    // Sent again, and as a new version: no second case. A removed entry opens nothing.
    push(std::slice::from_ref(&entry)).await;
    entry["listing_reason"] = "在政府采购活动中提供虚假材料谋取中标（更正后的表述）。".into();
    push(std::slice::from_ref(&entry)).await;
    let mut removed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            testkit::repo_dir().join("schemas/credit_list_entry/valid/black_procurement_removed.json"),
        )
        .expect("example"),
    )
    .expect("json");
    removed["party_uscc"] = credit_gateway::bench::uscc_in("91", "370306", 99).into();
    push(&[removed]).await;
    assert_eq!(credit_gateway::joint::opener::run_once(&app.ingest, catalogue, now).await.expect("open"), 0);
    assert_eq!(cases(&operator).await.len(), 3);
}
