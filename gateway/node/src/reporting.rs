//! Monthly reporting status at a node: for a period, every registered department's report —
//! reported, zero report, late, overdue or pending — from the `monthly_report` records stored
//! here (imports of monthly workbooks store one; departments may also push one).

use std::collections::BTreeMap;

use gateway_core::date::{format_date, parse_date};
use gateway_core::ident::normalize_code;
use gateway_core::record::RecordType;
use gateway_core::reporting::{Period, ReportingRule, ReportingStatus, due_date, status};
use gateway_store::{RecordQuery, StoreError};
use serde::Serialize;
use time::Date;

use crate::config::ReportingConfig;
use crate::ingest::Ingest;

/// One department's report for the period.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DepartmentReport {
    pub department: String,
    pub department_uscc: String,
    /// Registered in `[reporting] departments`; an unregistered reporter is listed too.
    pub registered: bool,
    #[schema(value_type = String)]
    pub status: ReportingStatus,
    /// The first submission for the period (lateness counts from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub penalty_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
}

/// `GET /api/v1/reporting`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportingView {
    pub period: String,
    /// Absent when the due date falls in a year whose calendar is not loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    pub calendar_unknown: bool,
    /// How many departments are in each status.
    pub counts: BTreeMap<String, usize>,
    pub departments: Vec<DepartmentReport>,
}

/// The reporting status of `period` as of `today`.
pub async fn view(
    ingest: &Ingest,
    cfg: &ReportingConfig,
    period: Period,
    today: Date,
) -> Result<ReportingView, StoreError> {
    let rule = ReportingRule { due_day: cfg.due_day, roll_to_working_day: cfg.roll_to_working_day };
    let due = due_date(&ingest.calendar, period, rule).ok();
    let submitted = submissions(&ingest.store, &period.to_string()).await?;
    let mut departments: Vec<DepartmentReport> = cfg
        .departments
        .iter()
        .map(|d| report(&d.name, &normalize_code(&d.uscc), true, submitted.get(&normalize_code(&d.uscc)), due, today))
        .collect();
    for (uscc, s) in &submitted {
        if !departments.iter().any(|d| &d.department_uscc == uscc) {
            departments.push(report(&s.department, uscc, false, Some(s), due, today));
        }
    }
    let mut counts = BTreeMap::new();
    for d in &departments {
        *counts.entry(d.status.as_str().to_owned()).or_insert(0) += 1;
    }
    Ok(ReportingView {
        period: period.to_string(),
        due_date: due.map(format_date),
        calendar_unknown: due.is_none(),
        counts,
        departments,
    })
}

/// What a department submitted for a period: the first submission date, the latest counts.
#[derive(Debug, Clone)]
struct Submission {
    department: String,
    first_on: Date,
    zero: bool,
    license_count: i64,
    penalty_count: i64,
    record_id: String,
}

async fn submissions(store: &gateway_store::Store, period: &str) -> Result<BTreeMap<String, Submission>, StoreError> {
    let mut out: BTreeMap<String, Submission> = BTreeMap::new();
    let mut after = 0;
    loop {
        let query =
            RecordQuery { record_type: Some(RecordType::MonthlyReport), after, limit: 1000, ..Default::default() };
        let rows = store.query(&query).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in rows {
            let Ok(c) = serde_json::from_str::<serde_json::Value>(&r.content) else { continue };
            if c["period"].as_str() != Some(period) {
                continue;
            }
            let (Some(uscc), Some(on)) =
                (c["department_uscc"].as_str(), c["submitted_on"].as_str().and_then(parse_date))
            else {
                continue;
            };
            let latest = Submission {
                department: c["department"].as_str().unwrap_or_default().to_owned(),
                first_on: on,
                zero: c["is_zero_report"].as_bool().unwrap_or(false),
                license_count: c["license_count"].as_i64().unwrap_or(0),
                penalty_count: c["penalty_count"].as_i64().unwrap_or(0),
                record_id: r.record_id.to_string(),
            };
            // Rows come in seq order: later ones carry the latest counts; lateness counts from
            // the first submission.
            let first_on = out.get(uscc).map_or(on, |s| s.first_on.min(on));
            out.insert(normalize_code(uscc), Submission { first_on, ..latest });
        }
    }
    Ok(out)
}

fn report(
    name: &str,
    uscc: &str,
    registered: bool,
    s: Option<&Submission>,
    due: Option<Date>,
    today: Date,
) -> DepartmentReport {
    // With the due date unknown, nothing is overdue yet: a submission still counts as reported.
    let due_or_never = due.unwrap_or(Date::MAX);
    DepartmentReport {
        department: name.to_owned(),
        department_uscc: uscc.to_owned(),
        registered,
        status: status(due_or_never, s.map(|s| s.first_on), s.is_some_and(|s| s.zero), today),
        submitted_on: s.map(|s| format_date(s.first_on)),
        license_count: s.map(|s| s.license_count),
        penalty_count: s.map(|s| s.penalty_count),
        record_id: s.map(|s| s.record_id.clone()),
    }
}
