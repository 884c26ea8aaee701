//! The audit log for auditors (read, verify the chain) and credentials for admins (issue,
//! list, revoke). The CLI does the same on the node's host (`credential …`, `audit …`).

use crate::api::error::Params;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gateway_store::access::Credential;
use gateway_store::audit::{AuditCheck, AuditEntry};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::AuditDetail;
use super::{ErrorBody, ServiceError};
use crate::auth::{IssueRequest, Principal, Role};
use crate::ingest::Ingest;

/// `GET /api/v1/audit` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EntriesParams {
    /// Entries after this seq (default 0: from the first).
    after: Option<i64>,
    /// At most this many, 1–1000 (default 100).
    limit: Option<i64>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<i64>,
}

/// The audit log, oldest first: who did what, when, with what outcome (identity numbers masked).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "access",
    params(EntriesParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody))
)]
pub(super) async fn entries(
    State(ingest): State<Arc<Ingest>>,
    Params(p): Params<EntriesParams>,
) -> Result<Json<AuditPage>, ServiceError> {
    let limit = super::page_limit(p.limit)?;
    let mut entries =
        ingest.store.audit_entries(p.after.unwrap_or(0), limit + 1).await.map_err(|e| ServiceError::internal(&e))?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_after = if more { entries.last().map(|e| e.seq) } else { None };
    Ok(Json(AuditPage { entries, next_after }))
}

/// What a check of the chain found.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VerifyView {
    /// `true` when every entry is present, unaltered and in order.
    intact: bool,
    entries: u64,
    /// The last entry's seq and hash.
    head_seq: Option<i64>,
    head_hash: Option<String>,
    /// Where the chain breaks, first first: `{seq, problem}`.
    problems: Vec<serde_json::Value>,
}

impl From<AuditCheck> for VerifyView {
    fn from(c: AuditCheck) -> Self {
        Self {
            intact: c.problems.is_empty(),
            entries: c.entries,
            head_seq: c.head.as_ref().map(|h| h.0),
            head_hash: c.head.map(|h| h.1),
            problems: c.problems.iter().map(|p| serde_json::json!({"seq": p.seq, "problem": p.problem})).collect(),
        }
    }
}

/// Walks the audit log's hash chain and names the first entry deleted, altered or out of place.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "access", responses((status = 200, body = VerifyView)))]
pub(super) async fn verify(State(ingest): State<Arc<Ingest>>) -> Result<Json<VerifyView>, ServiceError> {
    let check = ingest.store.verify_audit().await.map_err(|e| ServiceError::internal(&e))?;
    Ok(Json(check.into()))
}

/// A credential as admins see it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CredentialView {
    credential_id: String,
    kind: String,
    principal: String,
    role: String,
    unit_uscc: Option<String>,
    category: Option<String>,
    report_for: Vec<String>,
    grants: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

impl From<Credential> for CredentialView {
    fn from(c: Credential) -> Self {
        Self {
            credential_id: c.credential_id,
            kind: c.kind,
            principal: c.principal,
            role: c.role,
            unit_uscc: c.unit_uscc,
            category: c.category,
            report_for: c.report_for,
            grants: c.grants,
            created_at: c.created_at,
            expires_at: c.expires_at,
            revoked_at: c.revoked_at,
            last_used_at: c.last_used_at,
        }
    }
}

/// Every credential (secrets are never shown again).
#[utoipa::path(get, path = "/api/v1/credentials", tag = "access", responses((status = 200, body = Vec<CredentialView>)))]
pub(super) async fn credentials(State(ingest): State<Arc<Ingest>>) -> Result<Json<Vec<CredentialView>>, ServiceError> {
    let all = ingest.store.credentials().await.map_err(|e| ServiceError::internal(&e))?;
    Ok(Json(all.into_iter().map(CredentialView::from).collect()))
}

/// `POST /api/v1/credentials`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueBody {
    /// The name audit entries will carry.
    principal: String,
    /// `department`, `desk_officer`, `operator`, `auditor` or `admin`.
    role: String,
    /// The principal's unit (USCC); required for departments and desk officers.
    unit_uscc: Option<String>,
    category: Option<String>,
    #[serde(default)]
    report_for: Vec<String>,
    /// `authorized_query`, `all_units`.
    #[serde(default)]
    grants: Vec<String>,
    /// Days until the key expires (default: never).
    expires_in_days: Option<u32>,
    /// A client certificate (PEM) to register instead of making an API key.
    certificate_pem: Option<String>,
}

/// A new credential. `api_key` is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct IssuedView {
    credential: CredentialView,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

/// Issues an API key (or registers a client certificate) for a principal.
#[utoipa::path(
    post,
    path = "/api/v1/credentials",
    tag = "access",
    request_body = IssueBody,
    responses((status = 200, body = IssuedView), (status = 400, body = ErrorBody))
)]
pub(super) async fn issue(
    State(ingest): State<Arc<Ingest>>,
    Extension(admin): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let b: IssueBody = ServiceError::strict_body(&body)?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        ServiceError::bad_request(
            "credential.role",
            format!("未知角色 {:?}；可选 department、desk_officer、operator、auditor、admin", b.role),
            format!("unknown role {:?}; one of department, desk_officer, operator, auditor, admin", b.role),
        )
        .with_pointer("/role")
    })?;
    let req = IssueRequest {
        principal: b.principal,
        role: Some(role),
        unit_uscc: b.unit_uscc,
        category: b.category,
        report_for: b.report_for,
        grants: b.grants,
        expires_in_days: b.expires_in_days,
        certificate_pem: b.certificate_pem.map(String::into_bytes),
    };
    let issued =
        crate::auth::credentials::issue(&ingest.store, req, time::OffsetDateTime::now_utc()).await.map_err(|e| {
            ServiceError::bad_request("credential.invalid", format!("无法签发凭据：{e}"), format!("cannot issue: {e}"))
        })?;
    let detail = format!("{} by {}", crate::auth::credentials::describe(&issued.credential), admin.name);
    let view = IssuedView { credential: issued.credential.into(), api_key: issued.api_key };
    Ok((Extension(AuditDetail(detail)), Json(view)).into_response())
}

/// Revokes a credential: it is refused from the next call on.
#[utoipa::path(
    post,
    path = "/api/v1/credentials/{id}/revoke",
    tag = "access",
    params(("id" = String, Path, description = "Credential id")),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub(super) async fn revoke(
    State(ingest): State<Arc<Ingest>>,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let now = gateway_core::interchange::format_time(time::OffsetDateTime::now_utc());
    if !ingest.store.revoke_credential(&id, &now).await.map_err(|e| ServiceError::internal(&e))? {
        return Err(ServiceError::not_found("该凭据", "credential"));
    }
    Ok((axum::http::StatusCode::NO_CONTENT, Extension(AuditDetail(format!("revoked {id}")))).into_response())
}
