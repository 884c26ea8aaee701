//! The file and service transports of GB/T 39443-2020 against real folders, ZIP packages and a
//! real HTTP interface: packages in JSON, CSV (信用辽宁's legacy 2015 fields) and XLSX are
//! collected once with a result file each, half-written and tampered packages are never
//! stored, a package this gateway writes for a platform is one that platform's adapter reads,
//! and pages pulled from a platform's interface resume from a durable cursor.

use std::path::Path;
use std::sync::Arc;

use credit_gateway::adapters::{AdapterBinding, Loaded, deliver, files, load_all, service};
use credit_gateway::ingest::Ingest;
use gateway_core::canonical::Sha256Digest;
use gateway_core::crypto::Alg;
use serde_json::{Value, json};

fn adapter_dir(id: &str) -> std::path::PathBuf {
    testkit::repo_dir().join("adapters").join(id)
}

fn samples(id: &str, dataset: &str, side: &str) -> Vec<Value> {
    let path = adapter_dir(id).join("samples").join(format!("{dataset}.{side}.json"));
    serde_json::from_slice(&std::fs::read(path).expect("samples")).expect("json")
}

/// A node's gateway with `binding` loaded and verified against a fresh dev registry (the PKI
/// lives in the returned directory).
async fn node(root: &Path, member: &str, binding: AdapterBinding) -> (tempfile::TempDir, Arc<Ingest>, Arc<Loaded>) {
    let (pki_dir, pki_keep) = testkit::demo_pki(Alg::EdDsa);
    let (_, node) = testkit::start_federation_node(&pki_keep, member, &root.join(member)).await;
    let id = binding.manifest.parent().and_then(|p| p.file_name()).expect("id").to_string_lossy().into_owned();
    let binding =
        AdapterBinding { signature: Some(credit_gateway::pki::adapter_signature_file(&pki_keep, &id)), ..binding };
    let registry = node.identity.registry.read().expect("registry").clone();
    let loaded = load_all(&[binding], &registry, member).expect("adapter loads");
    (pki_dir, Arc::clone(&node.ingest), Arc::clone(&loaded[0]))
}

fn binding(id: &str) -> AdapterBinding {
    AdapterBinding {
        manifest: adapter_dir(id).join("manifest.toml"),
        signature: None,
        url: None,
        inbox: None,
        outbox: None,
        database_url: None,
        poll_interval_ms: 50,
        units: Vec::new(),
    }
}

/// Writes a package the way a platform would: data file and manifest.json in a ZIP.
fn package(path: &Path, dataset: &str, data_name: &str, data: &[u8], records: usize, tamper: bool) {
    let sha = if tamper { "0".repeat(64) } else { Sha256Digest::of(data).to_hex() };
    let manifest = json!({"dataset": dataset, "record_count": records,
                          "files": [{"name": data_name, "sha256": sha, "records": records}]});
    deliver::write_zip(path, &[(data_name, data), ("manifest.json", &serde_json::to_vec(&manifest).expect("json"))])
        .expect("zip");
}

fn result(dir: &Path, package: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{package}.result.json"))).expect("result file"))
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_packages_are_collected_once_and_half_written_or_tampered_ones_never_stored() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (inbox, outbox) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&inbox).expect("inbox");
    let b = AdapterBinding { inbox: Some(inbox.clone()), outbox: Some(outbox.clone()), ..binding("xinyong-henan") };
    let (_pki, gateway, loaded) = node(tmp.path(), "cn-410000", b).await;

    let mut rows = samples("xinyong-henan", "CF", "platform");
    let good = rows.len();
    let mut bad = rows[0].clone();
    bad["CF_WSH"] = "豫市监罚〔2026〕1号".into();
    bad["CF_JDRQ"] = "2026-13-01".into();
    rows.push(bad);
    let data = serde_json::to_vec(&rows).expect("json");
    package(&inbox.join("henan_CF_001.zip"), "CF", "data.json", &data, rows.len(), false);
    // The tampered package holds other records: had it been stored, the count would show them.
    let other: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["CF_WSH"] = format!("{}-改", r["CF_WSH"].as_str().expect("doc no")).into();
            r
        })
        .collect();
    let other = serde_json::to_vec(&other).expect("json");
    package(&inbox.join("henan_CF_002.zip"), "CF", "data.json", &other, rows.len(), true);
    // Still being written: a temporary name, and a ZIP cut short a moment ago.
    std::fs::write(inbox.join(".henan_CF_003.zip.part"), &data).expect("part");
    let whole = std::fs::read(inbox.join("henan_CF_001.zip")).expect("zip");
    std::fs::write(inbox.join("henan_CF_004.zip"), &whole[..whole.len() / 2]).expect("half");

    assert_eq!(files::collect(&gateway, &loaded).await.expect("collect"), 2);
    let r1 = result(&outbox, "henan_CF_001.zip");
    assert_eq!(r1["status"], "collected");
    assert_eq!(r1["accepted"], good);
    assert_eq!(r1["rejected"], 1);
    let refused = &r1["outcomes"][good];
    assert_eq!(refused["errors"][0]["pointer"], "/CF_JDRQ", "{refused}");
    let r2 = result(&outbox, "henan_CF_002.zip");
    assert_eq!(r2["status"], "refused");
    assert!(r2["reason"].as_str().expect("reason").contains("SHA-256"), "{r2}");
    assert!(inbox.join("done/henan_CF_001.zip").exists() && inbox.join("done/henan_CF_002.zip").exists());
    assert!(inbox.join(".henan_CF_003.zip.part").exists() && inbox.join("henan_CF_004.zip").exists());
    assert_eq!(gateway.store.count().await.expect("count"), good as i64, "the tampered package stored nothing");

    // Nothing new: nothing collected again.
    assert_eq!(files::collect(&gateway, &loaded).await.expect("collect"), 0);

    // What this gateway delivers to 信用河南 is a package 信用河南's adapter reads back.
    let stored = testkit::all_records(&gateway.store, 100).await;
    let out = deliver::deliver(&loaded, &stored, time::OffsetDateTime::now_utc()).await.expect("deliver");
    assert_eq!(out.delivered.len(), good);
    let written: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "zip"))
        .collect();
    assert_eq!(written.len(), 1);
    let name = written[0].file_name().expect("name").to_owned();
    std::fs::rename(&written[0], inbox.join(&name)).expect("move");
    assert_eq!(files::collect(&gateway, &loaded).await.expect("collect"), 1);
    let again = result(&outbox, name.to_str().expect("utf-8"));
    assert_eq!(again["duplicate"], good, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_package_of_legacy_2015_rows_is_stored_as_canonical_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    let inbox = tmp.path().join("in");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let b = AdapterBinding { inbox: Some(inbox.clone()), ..binding("xinyong-liaoning") };
    let (_pki, gateway, loaded) = node(tmp.path(), "cn-210000", b).await;
    let rows = samples("xinyong-liaoning", "XK_2015", "platform");
    let columns = loaded.adapter.dataset("XK_2015").expect("dataset").columns();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&columns).expect("header");
    for r in &rows {
        w.write_record(columns.iter().map(|c| r[*c].as_str().unwrap_or_default())).expect("row");
    }
    let data = w.into_inner().expect("csv");
    package(&inbox.join("liaoning_XK_2015_001.zip"), "XK_2015", "data.csv", &data, rows.len(), false);
    assert_eq!(files::collect(&gateway, &loaded).await.expect("collect"), 1);
    let r = result(&inbox.join("results"), "liaoning_XK_2015_001.zip");
    assert_eq!(r["accepted"], rows.len(), "{r}");
    let stored = testkit::all_records(&gateway.store, 10).await;
    let content: Value = serde_json::from_str(&stored[0].content).expect("json");
    let expected = &samples("xinyong-liaoning", "XK_2015", "canonical")[0];
    for field in ["decision_date", "valid_from", "valid_to", "issuing_authority_uscc", "status", "party_category"] {
        assert_eq!(content[field], expected[field], "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xlsx_package_written_for_a_platform_reads_back_through_its_adapter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (inbox, outbox) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&inbox).expect("inbox");
    let b = AdapterBinding { inbox: Some(inbox.clone()), outbox: Some(outbox.clone()), ..binding("xinyong-dongying") };
    let (_pki, gateway, loaded) = node(tmp.path(), "cn-370500", b).await;
    let rows = samples("xinyong-dongying", "XK", "platform");
    let data = serde_json::to_vec(&rows).expect("json");
    // Seed the store through the adapter itself (JSON rows), then deliver and read back as XLSX.
    let ds = Arc::clone(loaded.adapter.dataset("XK").expect("XK"));
    let first = gateway
        .push_rows(
            loaded.id(),
            ds,
            serde_json::from_slice(&data).expect("rows"),
            time::OffsetDateTime::now_utc(),
            &loaded.scope(),
            None,
        )
        .await
        .expect("push");
    assert_eq!(first.accepted, rows.len());
    let stored = testkit::all_records(&gateway.store, 100).await;
    deliver::deliver(&loaded, &stored, time::OffsetDateTime::now_utc()).await.expect("deliver");
    let written = std::fs::read_dir(&outbox).expect("outbox").filter_map(|e| e.ok()).next().expect("a package").path();
    std::fs::rename(&written, inbox.join(written.file_name().expect("name"))).expect("move");
    assert_eq!(files::collect(&gateway, &loaded).await.expect("collect"), 1);
    let name = written.file_name().expect("name").to_string_lossy().into_owned();
    let r = result(&outbox, &name);
    assert_eq!(r["duplicate"], rows.len(), "every row read back unchanged: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_pulled_from_a_platform_interface_resume_from_a_durable_cursor() {
    use axum::extract::{Path as UrlPath, Query};
    let tmp = tempfile::tempdir().expect("tmp");
    // 信用山东's interface: rows in pages of two, the cursor is the next offset.
    let app = axum::Router::new().route(
        "/api/sgs/{dataset}/list",
        axum::routing::get(
            |UrlPath(dataset): UrlPath<String>, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let mut rows = samples("xinyong-shandong", &dataset, "platform");
                // One row a department got wrong: refused, and said why.
                let mut bad = rows[0].clone();
                bad[if dataset == "CF" { "CF_WSH" } else { "XK_WSH" }] = "鲁错〔2026〕1号".into();
                bad[if dataset == "CF" { "CF_XDR_LB" } else { "XK_XDR_LB" }] = "企业".into();
                rows.push(bad);
                let from: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let page: Vec<Value> = rows.iter().skip(from).take(2).cloned().collect();
                // The end of the data for now: no next cursor.
                let next = (!page.is_empty()).then(|| (from + page.len()).to_string());
                axum::Json(json!({"rows": page, "next_cursor": next}))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let b = AdapterBinding { url: Some(url), ..binding("xinyong-shandong") };
    let (_pki, gateway, loaded) = node(tmp.path(), "cn-370000", b).await;
    let state = tmp.path().join("state");
    let total =
        samples("xinyong-shandong", "XK", "platform").len() + samples("xinyong-shandong", "CF", "platform").len();
    let mut pulled = 0;
    loop {
        let n = service::pull_once(&gateway, &loaded, &state).await.expect("pull");
        if n == 0 {
            break;
        }
        pulled += n;
    }
    assert_eq!(pulled, total + 2, "every row of both datasets, the two bad ones included");
    assert_eq!(gateway.store.count().await.expect("count"), total as i64);
    let rejected = std::fs::read_to_string(state.join("xinyong-shandong/CF.rejected.jsonl")).expect("rejections kept");
    assert!(rejected.contains("schema.enum") && rejected.contains("/CF_XDR_LB"), "{rejected}");
    // Pulling again starts at the saved cursor (read from disk each time): nothing twice.
    assert_eq!(service::pull_once(&gateway, &loaded, &state).await.expect("pull"), 0);
    assert_eq!(std::fs::read_to_string(state.join("xinyong-shandong/XK.cursor")).expect("cursor"), "5");
}

/// `serve` starts the ingest transports of its adapters: a package dropped into 信用河南's inbox
/// is collected by the running node process, with its result file.
#[test]
fn a_serving_node_collects_packages_from_its_inbox() {
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let inbox = tmp.path().join("in");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let rows = samples("xinyong-henan", "XK", "platform");
    package(
        &inbox.join("henan_XK_001.zip"),
        "XK",
        "data.json",
        &serde_json::to_vec(&rows).expect("json"),
        rows.len(),
        false,
    );
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nenabled = false\n\n[[adapters]]\nmanifest = {:?}\nsignature = {:?}\ninbox = {:?}\noutbox = {:?}\n\
             poll_interval_ms = 50\n",
            adapter_dir("xinyong-henan").join("manifest.toml").display().to_string(),
            credit_gateway::pki::adapter_signature_file(&pki, "xinyong-henan").display().to_string(),
            inbox.display().to_string(),
            tmp.path().join("out").display().to_string()
        ),
    )
    .expect("config");
    let fed = format!("127.0.0.1:{}", testkit::free_port());
    let (pki_arg, config_arg) = (pki.display().to_string(), config.display().to_string());
    let _node = testkit::Node::start_with(
        &tmp.path().join("data"),
        &["--member", "cn-410000", "--pki", &pki_arg, "--federation-listen", &fed, "--config", &config_arg],
    );
    let result = tmp.path().join("out/henan_XK_001.zip.result.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !result.exists() {
        assert!(std::time::Instant::now() < deadline, "the node never collected its inbox");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r: Value = serde_json::from_slice(&std::fs::read(&result).expect("result")).expect("json");
    assert_eq!(r["accepted"], rows.len(), "{r}");
    assert!(inbox.join("done/henan_XK_001.zip").exists());
}
