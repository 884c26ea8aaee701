//! Monthly Excel reports through the API: upload a workbook, follow its progress, download
//! the department's workbook back with a 问题数据反馈 column, or a blank template.

use crate::api::error::Params;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use gateway_core::ident::{check_uscc, normalize_code};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{ErrorBody, ErrorKind, ServiceError};
use crate::adapters::Loaded;
use crate::adapters::imports::ImportStatus;
use crate::adapters::xlsx::ImportRequest;
use crate::app::App;
use crate::auth::Principal;

pub(crate) const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Who is reporting, for which month, through which adapter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// 报送单位 (the department's full name).
    pub unit: String,
    /// 报送单位统一社会信用代码.
    pub unit_uscc: String,
    /// 所属期 `YYYY-MM`; default: last month (Beijing time).
    pub period: Option<String>,
    /// The intake adapter (platform id); default: this node's only adapter with report sheets.
    pub adapter: Option<String>,
}

/// Upload a department's monthly report workbook (.xlsx). Answers 202 at once with the import's
/// id; follow it at `/api/v1/imports/{id}` and download the annotated workbook when done.
#[utoipa::path(
    post,
    path = "/api/v1/imports",
    tag = "imports",
    params(ImportParams),
    request_body(content = Vec<u8>, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    responses(
        (status = 202, description = "Import started", body = ImportStatus),
        (status = 400, description = "Bad unit, USCC or period", body = ErrorBody),
        (status = 404, description = "No intake adapter for monthly reports here", body = ErrorBody),
        (status = 413, description = "Workbook too large", body = ErrorBody),
        (status = 415, description = "Not an .xlsx workbook", body = ErrorBody),
    )
)]
pub(super) async fn upload(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<ImportParams>,
    body: Body,
) -> Result<Response, ServiceError> {
    let req = request(p.unit, &p.unit_uscc, p.period, &principal)?;
    let adapter = intake_adapter(&app, p.adapter.as_deref())?;
    let id = app.imports.create(&req.unit_uscc).map_err(|e| ServiceError::internal(&e))?;
    let path = app.imports.upload_path(id);
    let limit = app.ingest.limits.max_import_bytes;
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| ServiceError::internal(&e))?;
    let mut stream = body.into_data_stream();
    let mut written = 0usize;
    let mut head = Vec::with_capacity(4);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ServiceError::bad_request("upload_failed", format!("上传中断：{e}"), e.to_string()))?;
        written += chunk.len();
        head.extend(chunk.iter().take(4usize.saturating_sub(head.len())));
        if written > limit {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ServiceError::payload_too_large(limit));
        }
        file.write_all(&chunk).await.map_err(|e| ServiceError::internal(&e))?;
    }
    file.sync_all().await.map_err(|e| ServiceError::internal(&e))?;
    drop(file);
    // An .xlsx workbook is a ZIP file; anything else is refused before it is queued.
    if head.get(..4) != Some(b"PK\x03\x04".as_slice()) {
        let _ = tokio::fs::remove_dir_all(path.parent().unwrap_or(&path)).await;
        return Err(ServiceError::new(
            ErrorKind::UnsupportedMediaType,
            "not_xlsx",
            "上传的文件不是 Excel 工作簿（.xlsx）",
            "the upload is not an Excel workbook (.xlsx)",
        ));
    }
    app.imports.start(id, Arc::clone(&app.ingest), adapter, req);
    let status = app.imports.status(id).ok_or_else(|| ServiceError::internal(&"import vanished"))?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, format!("/api/v1/imports/{id}"))], Json(status)).into_response())
}

/// An import's progress and, when done, its summary.
#[utoipa::path(
    get,
    path = "/api/v1/imports/{id}",
    tag = "imports",
    params(("id" = uuid::Uuid, Path, description = "Import id (UUID)")),
    responses((status = 200, body = ImportStatus), (status = 400, description = "Not a UUID", body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub(super) async fn status(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ImportStatus>, ServiceError> {
    let id = visible_import(&app, &principal, &id)?;
    app.imports.status(id).map(Json).ok_or_else(|| ServiceError::not_found("该导入", "import"))
}

/// An import id from the path, if the caller may see that import (one of its units'); an
/// import of another unit is "not found", as if it did not exist.
fn visible_import(app: &App, principal: &Principal, id: &str) -> Result<Uuid, ServiceError> {
    let id = import_id(id)?;
    match app.imports.unit_of(id) {
        Some(unit) if principal.units().allows(&unit) => Ok(id),
        None if principal.units() == crate::auth::UnitScope::Any => Ok(id),
        _ => Err(ServiceError::not_found("该导入", "import")),
    }
}

/// The department's workbook back: every sheet with a 问题数据反馈 column, and a 汇总 sheet.
#[utoipa::path(
    get,
    path = "/api/v1/imports/{id}/feedback.xlsx",
    tag = "imports",
    params(("id" = uuid::Uuid, Path, description = "Import id (UUID)")),
    responses(
        (status = 200, description = "Annotated workbook", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, body = ErrorBody)
    )
)]
pub(super) async fn feedback(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let id = visible_import(&app, &principal, &id)?;
    let done = app.imports.status(id).is_some_and(|s| s.state == crate::adapters::imports::ImportState::Done);
    if !done {
        return Err(ServiceError::not_found(
            "该导入的反馈工作簿（导入可能尚未完成）",
            "feedback workbook (the import may still run)",
        ));
    }
    let bytes = tokio::fs::read(app.imports.feedback_path(id)).await.map_err(|_| {
        ServiceError::not_found(
            "该导入的反馈工作簿（导入可能尚未完成）",
            "feedback workbook (the import may still run)",
        )
    })?;
    Ok(xlsx_response(bytes, &format!("feedback-{id}.xlsx")))
}

/// A blank monthly report workbook for this node's intake adapter, with a 填报说明 sheet.
#[utoipa::path(
    get,
    path = "/api/v1/templates/monthly-report.xlsx",
    tag = "imports",
    responses((status = 200, description = "Template workbook"), (status = 404, body = ErrorBody))
)]
pub(super) async fn template(State(app): State<App>) -> Result<Response, ServiceError> {
    let adapter = intake_adapter(&app, None)?;
    let bytes =
        crate::adapters::xlsx::template(&adapter.adapter).map_err(|e| ServiceError::internal(&format!("{e:#}")))?;
    Ok(xlsx_response(bytes, "monthly-report-template.xlsx"))
}

fn xlsx_response(bytes: Vec<u8>, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, XLSX.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response()
}

fn import_id(s: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(s).map_err(|_| {
        ServiceError::bad_request(
            "bad_import_id",
            format!("{s:?} 不是有效的导入编号"),
            format!("{s:?} is not an import id"),
        )
        .with_pointer("/id")
    })
}

/// Checks the reporting unit, its USCC and the period.
/// The uploader must be allowed to report for the unit (`auth.unit_not_allowed`).
pub fn request(
    unit: String,
    unit_uscc: &str,
    period: Option<String>,
    principal: &Principal,
) -> Result<ImportRequest, ServiceError> {
    let unit = unit.trim().to_owned();
    if unit.is_empty() {
        return Err(ServiceError::bad_request("unit.required", "请填写报送单位名称", "the reporting unit is required")
            .with_pointer("/unit"));
    }
    let uscc = normalize_code(unit_uscc);
    check_uscc(&uscc).map_err(|_| {
        ServiceError::bad_request(
            "uscc.invalid",
            format!("报送单位统一社会信用代码 {uscc} 格式或校验位错误"),
            format!("unit USCC {uscc} is malformed or has a wrong check character"),
        )
        .with_pointer("/unit_uscc")
    })?;
    let scope = principal.units();
    if !scope.allows(&uscc) {
        return Err(ServiceError::new(
            ErrorKind::Forbidden,
            crate::ingest::UNIT_NOT_ALLOWED,
            format!("{} 无权为单位 {uscc} 报送月报", principal.name),
            format!("{} may not report for unit {uscc}", principal.name),
        )
        .with_pointer("/unit_uscc"));
    }
    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    let period = super::period_param(period.as_deref(), today)?.to_string();
    Ok(ImportRequest { unit, unit_uscc: uscc, period, scope })
}

/// The adapter monthly reports go through: named, or the only one with report sheets.
fn intake_adapter(app: &App, name: Option<&str>) -> Result<Arc<Loaded>, ServiceError> {
    let candidates: Vec<&Arc<Loaded>> = app
        .adapters
        .iter()
        .filter(|l| l.adapter.manifest.platform.direction.ingests())
        .filter(|l| l.adapter.datasets.iter().any(|d| d.spec.sheet.is_some()))
        .filter(|l| name.is_none_or(|n| n == l.id()))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(Arc::clone(one)),
        [] => Err(ServiceError::not_found("接收月报的平台适配器", "intake adapter for monthly reports")),
        _ => Err(ServiceError::bad_request(
            "adapter.ambiguous",
            "本节点有多个接收月报的适配器，请用 adapter 参数指定",
            "this node has several intake adapters; name one with `adapter`",
        )
        .with_pointer("/adapter")),
    }
}
