//! The desk's side of evaluation recognition (信用评价结果互认): look a company up at a partner
//! city (through this node, which holds the mTLS identity, the agreements and the cache), review
//! the audit log of pulls, and export an answer's evidence.

use crate::api::error::Params;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gateway_store::evaluations::Pull;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::access::AuditDetail;
use super::{ErrorBody, ErrorKind, ServiceError};
use crate::auth::{Principal, Role};
use crate::evaluations::{DeskAnswer, Partners};
use crate::ingest::Ingest;

fn partners(evaluations: &Option<Arc<Partners>>) -> Result<&Arc<Partners>, ServiceError> {
    evaluations.as_ref().ok_or_else(|| {
        ServiceError::new(
            ErrorKind::Unavailable,
            "federation_not_configured",
            "本节点未配置联盟身份（[federation]），不能向合作城市查询评价结果",
            "this node has no federation identity ([federation]); it cannot pull partners' evaluations",
        )
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SingleParams {
    /// The partner: member id (`cn-370500`) or registry name (`信用东营`).
    from: String,
    /// Only without authentication (loopback development): who at the desk asks. Otherwise
    /// the audit logs of both nodes carry the authenticated principal.
    officer: Option<String>,
}

/// One company's credit evaluations at a partner city, each with its band under the agreement
/// and whether it is recognised here (信用评价结果互认).
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{uscc}",
    tag = "evaluations",
    params(("uscc" = String, Path, description = "USCC (统一社会信用代码)"), SingleParams),
    responses(
        (status = 200, body = DeskAnswer),
        (status = 400, body = ErrorBody),
        (status = 403, description = "no agreement in force with the partner", body = ErrorBody),
        (status = 502, description = "the partner is unreachable and nothing is cached", body = ErrorBody),
        (status = 503, description = "this node has no federation identity (federation_not_configured)", body = ErrorBody)
    )
)]
pub(super) async fn single(
    State(evaluations): State<Option<Arc<Partners>>>,
    Extension(principal): Extension<Principal>,
    Path(uscc): Path<String>,
    Params(p): Params<SingleParams>,
) -> Result<Response, ServiceError> {
    let partners = partners(&evaluations)?;
    let officer = officer(&principal, p.officer)?;
    let answer = crate::evaluations::lookup(partners, &p.from, &[uscc], officer, time::OffsetDateTime::now_utc())
        .await
        .map_err(crate::evaluations::path_subject_error)?;
    Ok(answered(answer))
}

/// The answer, and for the audit log the partner and how many subjects were looked up.
fn answered(answer: DeskAnswer) -> Response {
    let detail = format!("partner {} subjects {}", answer.partner, answer.subjects.len());
    (Extension(AuditDetail(detail)), Json(answer)).into_response()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LookupBody {
    /// The partner: member id (`cn-370500`) or registry name (`信用东营`).
    from: String,
    subjects: Vec<String>,
    #[serde(default)]
    officer: Option<String>,
}

/// Up to 1,000 companies' evaluations at a partner city at once.
#[utoipa::path(
    post,
    path = "/api/v1/evaluations/lookup",
    tag = "evaluations",
    request_body = LookupBody,
    responses(
        (status = 200, body = DeskAnswer),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 502, body = ErrorBody),
        (status = 503, description = "this node has no federation identity (federation_not_configured)", body = ErrorBody)
    )
)]
pub(super) async fn lookup(
    State(evaluations): State<Option<Arc<Partners>>>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let b: LookupBody = ServiceError::strict_body(&body)?;
    let partners = partners(&evaluations)?;
    let officer = officer(&principal, b.officer)?;
    let answer =
        crate::evaluations::lookup(partners, &b.from, &b.subjects, officer, time::OffsetDateTime::now_utc()).await?;
    Ok(answered(answer))
}

/// Who asks, for both nodes' audit logs: the authenticated principal. Only without
/// authentication (loopback development) does the desk's self-declared name stand in.
fn officer(principal: &Principal, declared: Option<String>) -> Result<Option<String>, ServiceError> {
    if principal.role != Role::Development {
        return Ok(Some(principal.name.clone()));
    }
    match declared {
        Some(name) if name.chars().count() > 64 || name.chars().any(char::is_control) => {
            Err(ServiceError::bad_request(
                "evaluation.officer",
                "经办人名称最长 64 个字符，且不能含控制字符",
                "the officer's name is at most 64 characters, without control characters",
            )
            .with_pointer("/officer"))
        }
        o => Ok(o.filter(|n| !n.trim().is_empty())),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// `in` (partners asked this node) or `out` (this node asked partners); default both.
    direction: Option<String>,
    /// RFC 3339 time; default: everything.
    since: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    limit: Option<i64>,
}

/// The audit log of evaluation pulls, newest first: who asked, for which companies, when, and
/// what was answered (the answer id; the signed answer is kept).
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/audit",
    tag = "evaluations",
    params(AuditParams),
    responses((status = 200, body = Vec<Pull>), (status = 400, body = ErrorBody))
)]
pub(super) async fn audit(
    State(ingest): State<Arc<Ingest>>,
    Params(p): Params<AuditParams>,
) -> Result<Json<Vec<Pull>>, ServiceError> {
    if let Some(d) = p.direction.as_deref()
        && !matches!(d, "in" | "out")
    {
        return Err(ServiceError::bad_request(
            "evaluation.direction",
            format!("方向 {d:?} 无效，可选 in、out"),
            format!("direction {d:?} is not one of in, out"),
        )
        .with_pointer("/direction"));
    }
    let since = match p.since {
        None => String::new(),
        Some(s) => {
            let t = gateway_core::interchange::parse_time(&s).ok_or_else(|| {
                ServiceError::bad_request(
                    "evaluation.since",
                    format!("时间 {s:?} 应写作 RFC 3339 UTC，如 2026-11-23T00:00:00Z"),
                    format!("{s:?} is not an RFC 3339 UTC time such as 2026-11-23T00:00:00Z"),
                )
                .with_pointer("/since")
            })?;
            gateway_core::interchange::format_time(t)
        }
    };
    let limit = super::page_limit(p.limit)?;
    let pulls =
        ingest.store.pulls(p.direction.as_deref(), &since, limit).await.map_err(|e| ServiceError::internal(&e))?;
    Ok(Json(pulls))
}

/// An answer this node sent or received, with the registry and agreements to verify it offline
/// (`credit-gateway evidence verify`; schema `schemas/interchange/evaluation_evidence`).
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/answers/{answer_id}/evidence",
    tag = "evaluations",
    params(("answer_id" = String, Path, description = "Answer id (UUID)")),
    responses(
        (status = 200, description = "the evidence bundle", body = Object),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the answer no longer verifies under the registry held", body = ErrorBody),
        (status = 503, description = "this node has no federation identity (federation_not_configured)", body = ErrorBody)
    )
)]
pub(super) async fn evidence(
    State(evaluations): State<Option<Arc<Partners>>>,
    Path(answer_id): Path<String>,
) -> Result<Json<gateway_core::interchange::evaluation::AnswerEvidence>, ServiceError> {
    let partners = partners(&evaluations)?;
    Ok(Json(crate::evaluations::answer_evidence(partners, &answer_id).await?))
}
