//! Joint reward-and-punishment cases (联合奖惩, #24) over HTTP: a department reads the cases
//! opened for it to answer; operators and auditors read every department's.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use gateway_store::cases::Case;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ErrorBody, ServiceError};
use crate::auth::{Principal, Role};
use crate::ingest::Ingest;

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

const STATES: [&str; 6] = ["opened", "accepted", "not_applicable", "executed", "lifting", "lifted"];

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
    params: Result<Query<CasesParams>, QueryRejection>,
) -> Result<Json<CasePage>, ServiceError> {
    let Query(p) = params.map_err(super::error::bad_query)?;
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
    let department = match principal.role {
        // A department answers as its unit: the cases opened for it, never another's.
        Role::Department => Some(
            principal.unit_uscc.clone().ok_or_else(|| ServiceError::not_found("本单位的案件", "cases of your unit"))?,
        ),
        _ => p.department.as_deref().map(gateway_core::ident::normalize_code),
    };
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
