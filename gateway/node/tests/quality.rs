//! Data quality per department and month: submissions good and bad through the real router,
//! the ratios against the target, the rejection reasons ranked, and the CSV and XLSX exports
//! (the workbook is read back with calamine, as a spreadsheet program would).

use std::io::Cursor;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use calamine::{Reader, Xlsx};
use credit_gateway::app::App;
use credit_gateway::bench::synthetic_records;
use serde_json::Value;
use tower::ServiceExt;

async fn call(gw: &App, req: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let resp = credit_gateway::api::router(gw.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let kind = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, kind, to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec())
}

#[tokio::test]
async fn ratios_reasons_and_exports_per_department() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let gw = testkit::gateway(dir.path()).await;
    let mut records: Vec<Value> = synthetic_records(40, 5)
        .into_iter()
        .filter(|r| r["record_type"] == "admin_penalty" || r["record_type"] == "admin_license")
        .collect();
    let market = "11370306MB28554702";
    let of_market: Vec<usize> = (0..records.len()).filter(|&i| records[i]["source_unit_uscc"] == market).collect();
    assert!(of_market.len() >= 4, "the synthetic set has records of each unit");
    // Two of the market regulator's records lack a required field; one a recommended one.
    for &i in &of_market[..2] {
        records[i].as_object_mut().expect("object").remove("decision_doc_no");
    }
    for field in ["publicity_end_date", "license_no", "license_cert_name"] {
        records[of_market[2]].as_object_mut().expect("object").remove(field);
    }
    let body = serde_json::to_vec(&records).expect("json");
    let push = || {
        Request::post("/api/v1/records")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .expect("request")
    };
    let (status, _, _) = call(&gw, push()).await;
    assert_eq!(status, StatusCode::OK);
    // A client retrying the whole batch: the stored records come back as duplicates and are not
    // counted again; the two rejected ones are submitted (and refused) a second time.
    let (status, _, _) = call(&gw, push()).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = call(&gw, Request::get("/api/v1/quality").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    let view: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(view["target"], 0.95);
    let departments = view["departments"].as_array().expect("departments");
    let market_row = departments.iter().find(|d| d["department_uscc"] == market).expect("market row");
    let n = of_market.len() as i64;
    assert_eq!(market_row["submitted"], n + 2);
    assert_eq!(market_row["accepted"], n - 2);
    assert_eq!(market_row["meets_target"], false);
    let valid_rate = market_row["valid_rate"].as_f64().expect("rate");
    assert!((valid_rate - (n - 2) as f64 / (n + 2) as f64).abs() < 1e-9);
    assert!(market_row["completeness"].as_f64().expect("completeness") < 1.0);
    assert_eq!(market_row["reasons"][0]["rule"], "schema.required");
    assert_eq!(market_row["reasons"][0]["count"], 4);
    assert_eq!(view["reasons"][0]["rule"], "schema.required", "ranked over all departments");
    // The worst department comes first.
    assert_eq!(departments[0]["department_uscc"], market);
    let others_ok = departments.iter().filter(|d| d["department_uscc"] != market).all(|d| d["valid_rate"] == 1.0);
    assert!(others_ok, "{departments:?}");

    let (status, kind, csv) = call(&gw, Request::get("/api/v1/quality.csv").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/csv"));
    let text = String::from_utf8(csv).expect("utf-8");
    assert!(text.starts_with('\u{feff}'), "a BOM for Excel");
    assert!(text.contains("有效入库率 Valid rate") && text.contains(market));

    let (status, kind, xlsx) = call(&gw, Request::get("/api/v1/quality.xlsx").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.contains("spreadsheetml"));
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(xlsx)).expect("a valid XLSX");
    assert_eq!(book.sheet_names(), ["数据质量", "退回原因"]);
    let sheet = book.worksheet_range("数据质量").expect("sheet");
    let rows: Vec<Vec<String>> = sheet.rows().map(|r| r.iter().map(|c| c.to_string()).collect()).collect();
    assert_eq!(rows[1][0], "数据来源单位 Department");
    let market_line = rows.iter().find(|r| r.get(1).is_some_and(|c| c == market)).expect("market line");
    assert_eq!(market_line[2], (n + 2).to_string());
    let reasons = book.worksheet_range("退回原因").expect("sheet");
    assert_eq!(reasons.get((1, 0)).map(ToString::to_string).as_deref(), Some("schema.required"));

    let (status, _, body) =
        call(&gw, Request::get("/api/v1/quality?period=2026-13").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("/period"));
    // The SLA view of a destination this node never sends to is refused, not tracked.
    let (status, _, body) =
        call(&gw, Request::get("/api/v1/sla?destination=cn-999999").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("/destination"));
}
