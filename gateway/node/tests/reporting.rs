//! Monthly reporting status at a district node: registered departments that reported, filed a
//! zero report, reported late, or have not reported by the due date (the 10th, rolled to the
//! next working day), and a department reporting without being registered.

use credit_gateway::config::{Config, Department, ReportingConfig};
use gateway_core::reporting::{Period, ReportingStatus};
use serde_json::json;
use time::macros::date;

fn report(name: &str, uscc: &str, submitted_on: &str, licenses: u32, penalties: u32) -> serde_json::Value {
    let mut r = json!({
        "record_type": "monthly_report", "region_code": "370306",
        "department": name, "department_uscc": uscc, "period": "2026-09",
        "license_count": licenses, "penalty_count": penalties, "is_zero_report": licenses + penalties == 0,
        "submitted_on": submitted_on, "source_unit": name, "source_unit_uscc": uscc, "disclosure_scope": "gov_shared",
    });
    if licenses + penalties == 0 {
        r["zero_report_declaration"] = "本单位2026年9月无行政许可、行政处罚信息。".into();
    }
    r
}

#[tokio::test]
async fn who_reported_who_filed_a_zero_report_who_is_late_and_who_is_overdue() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let departments = [
        ("淄博市周村区市场监督管理局", "11370306MB28501648"),
        ("淄博市周村区退役军人事务局", "11370306MB1P047351"),
        ("淄博市周村区生态环境分局", "11370306004217500P"),
        ("淄博市周村区应急管理局", "11370306MB28554715"),
    ];
    let config = Config {
        reporting: ReportingConfig {
            departments: departments.iter().map(|(n, u)| Department { name: (*n).into(), uscc: (*u).into() }).collect(),
            ..ReportingConfig::default()
        },
        ..testkit::config(dir.path())
    };
    let node = testkit::start(config).await;
    let gw = &node.app;
    let records = vec![
        report(departments[0].0, departments[0].1, "2026-10-09", 12, 3),
        report(departments[1].0, departments[1].1, "2026-10-10", 0, 0),
        report(departments[2].0, departments[2].1, "2026-10-12", 5, 7),
        // Not registered here, but reported: listed so that nothing is missed.
        report("淄博市周村区行政审批服务局", "11370306MB28554702", "2026-10-08", 342, 0),
    ];
    let answer = gw
        .ingest
        .push(serde_json::to_vec(&records).expect("json").into(), time::OffsetDateTime::now_utc())
        .await
        .expect("push");
    assert_eq!(answer.accepted, 4, "{:?}", answer.outcomes);

    let period = Period::parse("2026-09").expect("period");
    // 2026-10-10 is a 调休 Saturday: a working day, so reports are due that day.
    let on_due_day =
        credit_gateway::reporting::view(&gw.ingest, &gw.reporting, period, date!(2026 - 10 - 10)).await.expect("view");
    assert_eq!(on_due_day.due_date.as_deref(), Some("2026-10-10"));
    let status = |v: &credit_gateway::reporting::ReportingView, uscc: &str| {
        v.departments.iter().find(|d| d.department_uscc == uscc).map(|d| d.status).expect("listed")
    };
    assert_eq!(status(&on_due_day, departments[3].1), ReportingStatus::Pending);
    let after =
        credit_gateway::reporting::view(&gw.ingest, &gw.reporting, period, date!(2026 - 10 - 13)).await.expect("view");
    assert_eq!(status(&after, departments[0].1), ReportingStatus::Reported);
    assert_eq!(status(&after, departments[1].1), ReportingStatus::ZeroReport);
    assert_eq!(status(&after, departments[2].1), ReportingStatus::Late);
    assert_eq!(status(&after, departments[3].1), ReportingStatus::Overdue);
    let unregistered = after.departments.iter().find(|d| !d.registered).expect("unregistered reporter");
    assert_eq!(unregistered.status, ReportingStatus::Reported);
    assert_eq!(unregistered.license_count, Some(342));
    assert_eq!(after.counts.get("overdue"), Some(&1));

    // The same through the API.
    let api = &node.api;
    let client = reqwest::Client::new();
    let view: serde_json::Value = client
        .get(format!("{api}/api/v1/reporting?period=2026-09"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["due_date"], "2026-10-10");
    assert_eq!(view["departments"].as_array().expect("list").len(), 5);
    let bad = client.get(format!("{api}/api/v1/reporting?period=2026-9")).send().await.expect("get");
    assert_eq!(bad.status(), 400);
}
