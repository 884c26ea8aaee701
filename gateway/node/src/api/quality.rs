//! Data-quality ratios per department and month, as JSON and as CSV / XLSX exports.

use crate::api::error::Params;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use time::OffsetDateTime;

use super::{ErrorBody, ReportingParams, ServiceError, period_param};
use crate::app::App;
use crate::auth::{Principal, UnitScope};
use crate::quality::QualityView;

/// The quality view as `principal` may see it: a department sees its own rows, and the month's
/// reasons as its own rows count them.
async fn load(app: &App, principal: &Principal, p: ReportingParams) -> Result<QualityView, ServiceError> {
    let mut view = load_all(app, p).await?;
    if let UnitScope::Only(units) = principal.units() {
        view.departments.retain(|d| units.contains(&d.department_uscc));
        let mut reasons: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for r in view.departments.iter().flat_map(|d| &d.reasons) {
            *reasons.entry(r.rule.clone()).or_default() += r.count;
        }
        view.reasons = reasons.into_iter().map(|(rule, count)| crate::quality::ReasonCount { rule, count }).collect();
        view.reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
    }
    Ok(view)
}

async fn load_all(app: &App, p: ReportingParams) -> Result<QualityView, ServiceError> {
    // The current month by default: quality is watched while the month runs.
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let period = match p.period.as_deref() {
        None => gateway_core::reporting::Period::of(today),
        given => period_param(given, today)?,
    };
    crate::quality::view(&app.ingest.store, &app.reporting, period).await.map_err(|e| ServiceError::internal(&e))
}

/// Quality per department for a month (default: this month): 有效入库率, 完整率, 及时率, 迟报 and
/// rejection reasons ranked, against the target (`[reporting] quality_target`, default 95 %).
#[utoipa::path(
    get,
    path = "/api/v1/quality",
    tag = "imports",
    params(ReportingParams),
    responses((status = 200, body = QualityView), (status = 400, body = ErrorBody))
)]
pub async fn json(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<ReportingParams>,
) -> Result<Json<QualityView>, ServiceError> {
    load(&app, &principal, p).await.map(Json)
}

/// The quality table as CSV (UTF-8 with BOM).
#[utoipa::path(
    get,
    path = "/api/v1/quality.csv",
    tag = "imports",
    params(ReportingParams),
    responses((status = 200, content_type = "text/csv"), (status = 400, body = ErrorBody))
)]
pub async fn csv(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<ReportingParams>,
) -> Result<Response, ServiceError> {
    let view = load(&app, &principal, p).await?;
    let bytes = crate::quality::to_csv(&view).map_err(|e| ServiceError::internal(&e))?;
    Ok(attachment("text/csv; charset=utf-8", &format!("quality-{}.csv", view.period), bytes))
}

/// The quality table as an XLSX workbook (below-target ratios in red; reasons on a second sheet;
/// with a measures catalogue, the joint reward-and-punishment loop of the month on a third).
#[utoipa::path(
    get,
    path = "/api/v1/quality.xlsx",
    tag = "imports",
    params(ReportingParams),
    responses(
        (status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (status = 400, body = ErrorBody)
    )
)]
pub async fn xlsx(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<ReportingParams>,
) -> Result<Response, ServiceError> {
    let view = load(&app, &principal, p).await?;
    let joint = match &app.measures {
        None => None,
        Some(_) => {
            let mut rows = crate::joint::loop_rows(&app.ingest, OffsetDateTime::now_utc())
                .await
                .map_err(|e| ServiceError::internal(&e))?;
            rows.retain(|r| r.counts.month == view.period);
            if let UnitScope::Only(units) = principal.units() {
                rows.retain(|r| units.contains(&r.counts.department_uscc));
            }
            Some(rows)
        }
    };
    let bytes = crate::quality::to_xlsx(&view, joint.as_deref()).map_err(|e| ServiceError::internal(&e))?;
    Ok(attachment(super::imports::XLSX, &format!("quality-{}.xlsx", view.period), bytes))
}

pub(super) fn attachment(content_type: &str, name: &str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response()
}
