//! Joint reward-and-punishment cases (联合奖惩, #24) over HTTP: a department reads the cases
//! opened for it, answers them (响应, 反馈, 解除 acknowledged) and checks a subject at the point
//! of decision (信用核查); operators and auditors read every department's cases, the overdue
//! ones (督办清单) and the loop's counts.

use crate::api::error::Params;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gateway_core::date::{format_date, today_in_china};
use gateway_store::cases::{Answer, Case};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::access::AuditDetail;
use super::{ErrorBody, ServiceError};
use crate::app::App;
use crate::auth::{Principal, Role};
use crate::ingest::Ingest;
use crate::joint::{answers, check, workbook};

/// `GET /api/v1/cases` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CasesParams {
    /// Only this state: `opened`, `accepted`, `not_applicable`, `executed`, `lifting`, `lifted`.
    state: Option<String>,
    /// Operators and auditors: only this implementing department (USCC). A department always
    /// reads its own.
    department: Option<String>,
    /// Continue after this case id (`next_after` of the previous page).
    after: Option<String>,
    /// Page size, 1–1000 (default 100).
    limit: Option<i64>,
}

/// A page of cases.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CasePage {
    #[schema(value_type = Vec<Object>)]
    cases: Vec<Case>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

pub(super) const STATES: [&str; 6] = ["opened", "accepted", "not_applicable", "executed", "lifting", "lifted"];

/// The joint reward-and-punishment cases of a department (its own, for a department): the
/// subject, the measure of the catalogue, the list entry that opened it, and when its response
/// and feedback are due (working days).
#[utoipa::path(
    get,
    path = "/api/v1/cases",
    tag = "joint",
    params(CasesParams),
    responses((status = 200, body = CasePage), (status = 400, body = ErrorBody))
)]
pub(super) async fn list(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<CasesParams>,
) -> Result<Json<CasePage>, ServiceError> {
    if let Some(s) = p.state.as_deref()
        && !STATES.contains(&s)
    {
        return Err(ServiceError::bad_request(
            "cases.state",
            format!("状态 {s:?} 无效，可选：{}", STATES.join("、")),
            format!("state {s:?} is not one of {}", STATES.join(", ")),
        )
        .with_pointer("/state"));
    }
    // A department answers as its unit: the cases opened for it, never another's.
    let department = department_of(&principal, p.department.as_deref())?;
    let limit = super::page_limit(p.limit)?;
    let mut cases = ingest
        .store
        .cases(department.as_deref(), p.state.as_deref(), p.after.as_deref().unwrap_or(""), limit + 1)
        .await
        .map_err(|e| ServiceError::internal(&e))?;
    let more = cases.len() as i64 > limit;
    cases.truncate(limit as usize);
    let next_after = if more { cases.last().map(|c| c.case.case_id.clone()) } else { None };
    Ok(Json(CasePage { cases, next_after }))
}

/// 响应: the implementing department accepts the measure, or says why it does not apply.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/response",
    tag = "joint",
    params(("id" = String, Path, description = "Case id")),
    request_body = answers::ResponseBody,
    responses(
        (status = 200, description = "The case as it is now", body = Object),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such case of your unit", body = ErrorBody),
        (status = 409, description = "The case is past this answer (answered already, lifted)", body = ErrorBody),
    )
)]
pub(super) async fn respond(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let b: answers::ResponseBody = ServiceError::strict_body(&body)?;
    let answer = answers::response(&b)?;
    let case = answers::give(&ingest, &principal, &id, &answer, OffsetDateTime::now_utc()).await?;
    Ok(answered(case, format!("case {id} {}", b.answer)))
}

/// 反馈: the department applied the measure (a feedback on an opened case accepts it too).
/// Measures whose catalogue entry asks for evidence need a document number or an attachment
/// hash.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/feedback",
    tag = "joint",
    params(("id" = String, Path, description = "Case id")),
    request_body = answers::FeedbackBody,
    responses(
        (status = 200, description = "The case as it is now", body = Object),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such case of your unit", body = ErrorBody),
        (status = 409, description = "The case does not take feedback (not applicable, lifted)", body = ErrorBody),
    )
)]
pub(super) async fn feed_back(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let b: answers::FeedbackBody = ServiceError::strict_body(&body)?;
    let now = OffsetDateTime::now_utc();
    let case = answers::own_case(&app.ingest, &principal, &id).await?;
    let answer = answers::feedback(&b, &case, app.measures.as_deref(), today_in_china(now))?;
    let case = answers::give(&app.ingest, &principal, &id, &answer, now).await?;
    Ok(answered(case, format!("case {id} executed")))
}

/// 解除: the department acknowledges that the measure is lifted (the list entry was repaired,
/// withdrawn, removed, or expired).
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/lifted",
    tag = "joint",
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case as it is now", body = Object),
        (status = 404, description = "No such case of your unit", body = ErrorBody),
        (status = 409, description = "No lifting is asked for this case", body = ErrorBody),
    )
)]
pub(super) async fn acknowledge_lifting(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let case = answers::give(&ingest, &principal, &id, &Answer::LiftAcknowledged, OffsetDateTime::now_utc()).await?;
    Ok(answered(case, format!("case {id} lifted")))
}

fn answered(case: Case, detail: String) -> Response {
    (Extension(AuditDetail(detail)), Json(case)).into_response()
}

/// `GET /api/v1/cases/overdue` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct OverdueParams {
    /// Operators and auditors: only this implementing department. A department reads its own.
    department: Option<String>,
    /// Only cases opened in this month (YYYY-MM).
    month: Option<String>,
    /// `json` (default) or `xlsx` (the 督办清单 workbook).
    format: Option<String>,
}

/// Most cases in one 督办清单.
const OVERDUE_LIMIT: i64 = 10_000;

/// The overdue cases (响应 or 反馈 past its working-day due date) of a department or a month,
/// oldest due first: as JSON, or as the 督办清单 workbook an office sends out.
#[utoipa::path(
    get,
    path = "/api/v1/cases/overdue",
    tag = "joint",
    params(OverdueParams),
    responses(
        (status = 200, description = "Overdue cases (JSON), or the 督办清单 workbook with format=xlsx", body = CasePage),
        (status = 400, body = ErrorBody),
    )
)]
pub(super) async fn overdue(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<OverdueParams>,
) -> Result<Response, ServiceError> {
    if let Some(m) = p.month.as_deref()
        && gateway_core::reporting::Period::parse(m).is_none()
    {
        return Err(ServiceError::bad_request(
            "cases.month",
            format!("月份 {m:?} 应为 YYYY-MM"),
            format!("month {m:?} is not YYYY-MM"),
        )
        .with_pointer("/month"));
    }
    let xlsx = match p.format.as_deref() {
        None | Some("json") => false,
        Some("xlsx") => true,
        Some(f) => {
            return Err(ServiceError::bad_request(
                "cases.format",
                format!("格式 {f:?} 无效，可选 json、xlsx"),
                format!("format {f:?} is not json or xlsx"),
            )
            .with_pointer("/format"));
        }
    };
    let department = department_of(&principal, p.department.as_deref())?;
    let today = format_date(today_in_china(OffsetDateTime::now_utc()));
    let cases = app
        .ingest
        .store
        .overdue_cases(&today, department.as_deref(), p.month.as_deref(), false, OVERDUE_LIMIT)
        .await
        .map_err(|e| ServiceError::internal(&e))?;
    if !xlsx {
        return Ok(Json(CasePage { cases, next_after: None }).into_response());
    }
    let bytes = crate::joint::workbook::follow_up_list(&cases, app.measures.as_deref(), &today)
        .map_err(|e| ServiceError::internal(&e))?;
    let name = format!("overdue-cases-{}.xlsx", p.month.as_deref().unwrap_or(&today));
    Ok(super::quality::attachment(super::imports::XLSX, &name, bytes))
}

/// `GET /api/v1/cases/loop` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LoopParams {
    /// `local` (default): this node's departments. `federation`: also the cases reported from
    /// the nodes below, each row naming its `node` (ADR 0008).
    scope: Option<String>,
}

/// The loop per department and month (发起 → 响应 → 反馈 → 解除), with the response and
/// feedback rates.
#[utoipa::path(
    get,
    path = "/api/v1/cases/loop",
    tag = "joint",
    params(LoopParams),
    responses(
        (status = 200, description = "Counts per department and month of opening", body = Vec<Object>),
        (status = 400, body = ErrorBody),
    )
)]
pub(super) async fn loop_counts(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<LoopParams>,
) -> Result<Json<Vec<crate::joint::LoopRow>>, ServiceError> {
    let department = department_of(&principal, None)?;
    let now = OffsetDateTime::now_utc();
    let rows = match p.scope.as_deref() {
        None | Some("" | "local") => crate::joint::loop_rows(&ingest, now).await,
        Some("federation") => crate::joint::federation_rows(&ingest, now).await,
        Some(s) => {
            return Err(ServiceError::bad_request(
                "cases.scope",
                format!("范围 {s:?} 无效，可选 local、federation"),
                format!("scope {s:?} is not local or federation"),
            )
            .with_pointer("/scope"));
        }
    }
    .map_err(|e| ServiceError::internal(&e))?;
    Ok(Json(rows.into_iter().filter(|r| department.as_ref().is_none_or(|d| *d == r.counts.department_uscc)).collect()))
}

/// 信用核查 at the point of decision: does the subject have measures your department must
/// apply? By USCC or identity number (never shown unmasked), with the matter decided. The
/// `check_id` can be named in the feedback of a case applied after it. Audited.
#[utoipa::path(
    post,
    path = "/api/v1/checks",
    tag = "joint",
    request_body = check::CheckBody,
    responses((status = 200, body = check::CheckAnswer), (status = 400, body = ErrorBody))
)]
pub(super) async fn check(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let b: check::CheckBody = ServiceError::strict_body(&body)?;
    let (answer, detail) =
        check::check(&app.ingest, app.measures.as_deref(), &principal, &b, OffsetDateTime::now_utc()).await?;
    Ok((Extension(AuditDetail(detail)), Json(answer)).into_response())
}

/// The department whose cases a principal reads: a department its own unit's; others the one
/// they name, or all.
fn department_of(principal: &Principal, named: Option<&str>) -> Result<Option<String>, ServiceError> {
    match principal.role {
        Role::Department => Ok(Some(
            principal.unit_uscc.clone().ok_or_else(|| ServiceError::not_found("本单位的案件", "cases of your unit"))?,
        )),
        _ => Ok(named.map(gateway_core::ident::normalize_code)),
    }
}

/// The cases workbook (案件答复表) of your unit: its cases waiting for an answer (opened,
/// accepted, lifting), with empty answer columns to fill in and upload.
#[utoipa::path(
    get,
    path = "/api/v1/cases.xlsx",
    tag = "joint",
    responses((status = 200, description = "The workbook", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))
)]
pub(super) async fn workbook(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ServiceError> {
    let department = answers::answering_unit(&principal)?;
    let mut cases = Vec::new();
    for state in ["opened", "accepted", "lifting"] {
        let held = app
            .ingest
            .store
            .cases(department.as_deref(), Some(state), "", workbook::MAX_ROWS as i64)
            .await
            .map_err(|e| ServiceError::internal(&e))?;
        cases.extend(held);
    }
    cases.truncate(workbook::MAX_ROWS);
    let bytes = workbook::cases_workbook(&cases, app.measures.as_deref()).map_err(|e| ServiceError::internal(&e))?;
    Ok(super::quality::attachment(super::imports::XLSX, "cases.xlsx", bytes))
}

/// What became of an uploaded cases workbook.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WorkbookOutcome {
    stored: usize,
    rejected: usize,
    rows: Vec<workbook::RowOutcome>,
}

/// Upload a filled-in cases workbook: each answered row is checked and stored like its JSON
/// answer; the good rows are kept when others are refused, each with its reason and column.
#[utoipa::path(
    post,
    path = "/api/v1/cases.xlsx",
    tag = "joint",
    request_body(content = Vec<u8>, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    responses(
        (status = 200, description = "One outcome per answered row", body = WorkbookOutcome),
        (status = 400, description = "Not a cases workbook", body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
pub(super) async fn upload_workbook(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Body,
) -> Result<Response, ServiceError> {
    answers::answering_unit(&principal)?;
    let limit = workbook::MAX_UPLOAD_BYTES.min(app.ingest.limits.max_import_bytes);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ServiceError::payload_too_large(limit))?;
    let rows = workbook::answer_rows(&bytes, workbook::MAX_ROWS).map_err(|m| {
        ServiceError::bad_request(
            "cases.workbook",
            format!("案件答复表无法读取：{m}"),
            format!("the cases workbook cannot be read: {m}"),
        )
    })?;
    let rows = workbook::apply(&app.ingest, app.measures.as_deref(), &principal, rows, OffsetDateTime::now_utc()).await;
    let stored = rows.iter().filter(|r| r.outcome == "stored").count();
    let outcome = WorkbookOutcome { stored, rejected: rows.len() - stored, rows };
    let detail = format!("cases workbook: {} stored, {} rejected", outcome.stored, outcome.rejected);
    Ok((Extension(AuditDetail(detail)), Json(outcome)).into_response())
}
