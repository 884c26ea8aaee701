//! The push API through the real router (no socket): per-record outcomes, bad input, limits.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use credit_gateway::app::App;
use credit_gateway::bench::synthetic_records;
use credit_gateway::config::{Config, Limits};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(gw: &App, req: Request<Body>) -> (StatusCode, Value) {
    let resp = credit_gateway::api::router(gw.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

fn push(body: impl Into<Body>) -> Request<Body> {
    Request::post("/api/v1/records")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

/// Ten different ways to be wrong, each naming one field.
fn spoil(record: &mut Value, how: usize) -> &'static str {
    let o = record.as_object_mut().expect("object");
    match how % 10 {
        0 => {
            o.insert("party_uscc".into(), json!("914403001922038217"));
            "/party_uscc"
        }
        1 => {
            o.remove("party_name");
            "/party_name"
        }
        2 => {
            o.insert("decision_date".into(), json!("2099-01-01"));
            "/decision_date"
        }
        3 => {
            o.insert("disclosure_scope".into(), json!("everyone"));
            "/disclosure_scope"
        }
        4 => {
            o.insert("region_code".into(), json!("37030"));
            "/region_code"
        }
        5 => {
            o.remove("legal_rep_name");
            "/legal_rep_name"
        }
        6 => {
            o.insert("source_unit_uscc".into(), json!("11370306MB28554700"));
            "/source_unit_uscc"
        }
        7 => {
            o.insert("unexpected_field".into(), json!(1));
            "/unexpected_field"
        }
        8 => {
            o.insert("decision_date".into(), json!("2026-02-30"));
            "/decision_date"
        }
        _ => {
            o.insert("party_name".into(), json!(""));
            "/party_name"
        }
    }
}

#[tokio::test]
async fn a_batch_with_bad_records_keeps_the_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = testkit::gateway(dir.path()).await;
    let mut records = synthetic_records(1000, 10);
    let mut spoiled = Vec::new();
    for k in 0..10 {
        let index = 37 + k * 97;
        spoiled.push((index, spoil(&mut records[index], k)));
    }
    let body = serde_json::to_vec(&records).expect("json");
    let (status, answer) = call(&gw, push(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["received"].as_u64(), answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1000), Some(990), Some(10))
    );
    assert_eq!(gw.ingest.store.count().await.expect("count"), 990);
    let outcomes = answer["outcomes"].as_array().expect("outcomes");
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o["index"], i);
        match spoiled.iter().find(|(index, _)| *index == i) {
            Some((_, pointer)) => {
                assert_eq!(o["status"], "rejected");
                let errors = o["errors"].as_array().expect("errors");
                assert!(
                    errors.iter().any(|e| e["pointer"] == *pointer),
                    "record {i}: {errors:?} should name {pointer}"
                );
                for e in errors {
                    for key in ["rule", "message_zh", "message_en"] {
                        assert!(e[key].as_str().is_some_and(|s| !s.is_empty()), "record {i}: {e}");
                    }
                }
            }
            None => {
                assert_eq!(o["status"], "accepted", "record {i}: {o}");
                assert_eq!(o["content_hash"].as_str().map(str::len), Some(64));
                assert_eq!(o["deadline_status"], "on-calendar");
                assert!(o["publicity_deadline"].is_string());
            }
        }
    }

    // The same batch again: nothing new is stored; the good ones are duplicates of themselves.
    let (status, again) = call(&gw, push(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((again["duplicate"].as_u64(), again["rejected"].as_u64()), (Some(990), Some(10)));
    for (a, b) in outcomes.iter().zip(again["outcomes"].as_array().expect("outcomes")) {
        if a["status"] == "accepted" {
            assert_eq!((&b["status"], &b["record_id"]), (&json!("duplicate"), &a["record_id"]));
        }
    }
    assert_eq!(gw.ingest.store.count().await.expect("count"), 990);
}

#[tokio::test]
async fn a_clean_batch_pushed_twice_is_all_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = testkit::gateway(dir.path()).await;
    let body = serde_json::to_vec(&synthetic_records(1000, 11)).expect("json");
    let (_, first) = call(&gw, push(body.clone())).await;
    assert_eq!(first["accepted"], 1000);
    let (status, second) = call(&gw, push(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["duplicate"], 1000);
}

#[tokio::test]
async fn changed_content_comes_back_as_a_new_version_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = testkit::gateway(dir.path()).await;
    let mut records = synthetic_records(1, 12);
    let (_, first) = call(&gw, push(serde_json::to_vec(&records).expect("json"))).await;
    let id = first["outcomes"][0]["record_id"].as_str().expect("id").to_owned();
    records[0]["remarks"] = json!("更正");
    let (_, second) = call(&gw, push(serde_json::to_vec(&records).expect("json"))).await;
    assert_eq!(second["outcomes"][0]["status"], "new_version");
    assert_eq!(second["outcomes"][0]["version"], 2);
    let (status, read) = call(&gw, get(&format!("/api/v1/records/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    let versions = read["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["content"]["remarks"], "更正");
    // item_hash is SHA-256 over JCS of the interchange item (interchange-v1 §2).
    let v = &versions[1];
    let item = json!({"origin": v["origin"], "record_id": v["record_id"], "version": v["version"],
        "record_type": v["record_type"], "content": v["content"]});
    assert_eq!(v["item_hash"], gateway_core::canonical::canonical_hash(&item).to_hex());
}

#[tokio::test]
async fn identity_numbers_are_masked_in_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = testkit::gateway(dir.path()).await;
    let root = testkit::repo_dir().join("schemas/admin_penalty/valid");
    let person = std::fs::read_dir(&root)
        .expect("examples")
        .map(|e| {
            serde_json::from_slice::<Value>(&std::fs::read(e.expect("entry").path()).expect("read")).expect("json")
        })
        .find(|r| r["party_id_type"] == "身份证")
        .expect("a natural-person example with a 身份证 number");
    let id_no = person["party_id_no"].as_str().expect("id").to_owned();
    let (_, answer) = call(&gw, push(serde_json::to_vec(&[person]).expect("json"))).await;
    let id = answer["outcomes"][0]["record_id"].as_str().expect("accepted").to_owned();
    let (_, read) = call(&gw, get(&format!("/api/v1/records/{id}"))).await;
    let shown = read["versions"][0]["content"]["party_id_no"].as_str().expect("shown");
    assert_ne!(shown, id_no);
    assert!(shown.contains('*') && !read.to_string().contains(&id_no));
}

#[tokio::test]
async fn bad_requests_get_documented_4xx_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        limits: Limits { max_batch_records: 3, max_body_bytes: 4096, ..Limits::default() },
        ..testkit::config(dir.path())
    };
    let gw = testkit::start(config).await.app;
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (push("[{\"a\":"), StatusCode::BAD_REQUEST, "malformed_json"),
        (push("{\"record_type\":\"admin_license\"}"), StatusCode::BAD_REQUEST, "not_an_array"),
        (push("[1,2,3,4]"), StatusCode::PAYLOAD_TOO_LARGE, "too_many_records"),
        (push(vec![b' '; 5000]), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (
            Request::post("/api/v1/records")
                .header(header::CONTENT_TYPE, "text/csv")
                .body(Body::from("a,b"))
                .expect("req"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Request::post("/api/v1/records").body(Body::from("[]")).expect("req"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (get("/api/v1/records/not-a-uuid"), StatusCode::BAD_REQUEST, "bad_record_id"),
        (get("/api/v1/records/0193a6f0-0000-7000-8000-000000000000"), StatusCode::NOT_FOUND, "not_found"),
        (get("/api/v1/records?type=nonsense"), StatusCode::BAD_REQUEST, "bad_query"),
        (get("/api/v1/records?from=2026-13-01"), StatusCode::BAD_REQUEST, "bad_query"),
        (get("/api/v1/records?limit=0"), StatusCode::BAD_REQUEST, "bad_query"),
        (get("/api/v1/records?colour=red"), StatusCode::BAD_REQUEST, "bad_query"),
        (get("/nowhere"), StatusCode::NOT_FOUND, "not_found"),
        (
            Request::delete("/api/v1/records").body(Body::empty()).expect("req"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (got, body) = call(&gw, req).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{what}: {body}");
        assert!(body["error"]["message_zh"].is_string() && body["error"]["message_en"].is_string(), "{what}");
    }
    // Records that are not objects, or not records, are rejected one by one, not as a batch.
    let (status, answer) = call(&gw, push("[1, {\"record_type\":\"x\"}, {\"a\":1,\"a\":2}]")).await;
    assert_eq!(status, StatusCode::OK);
    let rules: Vec<_> =
        answer["outcomes"].as_array().expect("outcomes").iter().map(|o| o["errors"][0]["rule"].clone()).collect();
    assert_eq!(rules, vec![json!("record.not_object"), json!("record_type.unknown"), json!("json.duplicate_key")]);
}

#[tokio::test]
async fn mangled_bodies_never_cause_a_server_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = testkit::gateway(dir.path()).await;
    let valid = serde_json::to_vec(&synthetic_records(3, 13)).expect("json");
    // Deterministic byte-level mutations of a valid batch: flips, truncations, insertions.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut body = valid.clone();
        match round % 3 {
            0 => {
                let i = next() as usize % body.len();
                body[i] = (next() % 256) as u8;
            }
            1 => body.truncate(next() as usize % body.len()),
            _ => {
                let i = next() as usize % body.len();
                let junk = [b"\"", b"{", b"]", b"\\", b"\xff", b"0", b","][next() as usize % 7];
                body.splice(i..i, junk.iter().copied());
            }
        }
        let (status, answer) = call(&gw, push(body)).await;
        assert!(status.is_success() || status.is_client_error(), "round {round}: {status} {answer}");
    }
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = testkit::gateway(dir.path()).await;
    assert_eq!(call(&gw, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(call(&gw, get("/readyz")).await.1["status"], "ready");
    let (status, doc) = call(&gw, get("/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    for path in [
        "/api/v1/records",
        "/api/v1/records/{id}",
        "/api/v1/evaluations/{uscc}",
        "/api/v1/evaluations/lookup",
        "/api/v1/evaluations/audit",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert_eq!(doc["components"]["schemas"]["admin_penalty"]["properties"]["party_name"]["title"], "行政相对人名称");
    // Every operation is named in Chinese and English (the docs page shows the summary).
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let summary = op["summary"].as_str().unwrap_or("");
            let (zh, en) = summary.split_once(" · ").unwrap_or(("", ""));
            assert!(
                zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) && en.is_ascii() && !en.is_empty(),
                "{method} {path}: summary {summary:?} must be \"中文 · English\""
            );
        }
    }
    // A node without a federation identity has no partners to ask, and says so.
    let (status, body) = call(&gw, get("/api/v1/evaluations/91370306MA3DG9N45F?from=cn-370500")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("federation_not_configured"))
    );
    let resp = credit_gateway::api::router(gw.clone()).oneshot(get("/api/v1/docs")).await.expect("docs");
    let html = String::from_utf8(to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec()).expect("utf-8");
    assert!(html.contains("/api/v1/openapi.json") && !html.contains("https://"), "docs page must be self-contained");
}
