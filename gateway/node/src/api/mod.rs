//! The department-facing HTTP API (axum): push, read and query records, health, and the
//! OpenAPI document generated from these handlers.

pub mod access;
mod audit;
mod cases;
mod docs;
pub mod drain;
pub mod error;
mod evaluations;
pub mod imports;
pub mod metrics;
mod quality;
mod relay;

use crate::api::error::Params;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json, Router};
use gateway_core::date::parse_date;
use gateway_core::ident::normalize_code;
use gateway_core::record::{Disclosure, RecordType, mask_identity_numbers};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

pub use error::{ErrorBody, ErrorKind, ServiceError};
use gateway_store::{RecordQuery, StoredRecord};

use crate::app::App;
use crate::auth::{Permission, Principal, UnitScope};
use crate::config::ReportingConfig;
use crate::ingest::{BatchResult, Ingest};
use crate::sla::Sla;
use access::{AuditDetail, Guarded, Rule};

/// Default and largest page of `GET /api/v1/records`.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// How long a push body may take to arrive (it holds its share of the memory budget meanwhile).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a push waits for room among the bodies in flight before it is answered 503.
const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most records `GET /api/v1/sla` lists.
const SLA_MAX_LIMIT: i64 = 5_000;

/// Every route of the API and the dashboard, each with the permission it needs.
pub fn routes() -> Guarded<App> {
    use Permission as P;
    let needs = Rule::Needs;
    Guarded::default()
        .post("/api/v1/records", push_records, needs(P::RecordsPush))
        .get("/api/v1/records", query_records, needs(P::RecordsRead))
        .get("/api/v1/records/{id}", get_record, needs(P::RecordsRead))
        .get("/api/v1/records/{id}/trail", relay::trail, needs(P::RecordsRead))
        .get("/api/v1/outbox", relay::outbox, needs(P::RelayRead))
        .get("/api/v1/dead-letters", relay::dead_letters, needs(P::RelayRead))
        .post("/api/v1/dead-letters/resend", relay::resend, needs(P::RelayResend))
        .post("/api/v1/imports", imports::upload, needs(P::ImportsUpload))
        .get("/api/v1/imports/{id}", imports::status, needs(P::ImportsRead))
        .get("/api/v1/imports/{id}/feedback.xlsx", imports::feedback, needs(P::ImportsRead))
        .get("/api/v1/templates/monthly-report.xlsx", imports::template, needs(P::ImportsRead))
        .get("/api/v1/reporting", reporting_status, needs(P::ReportingRead))
        .get("/api/v1/sla", sla_status, needs(P::SlaRead))
        .get("/api/v1/quality", quality::json, needs(P::QualityRead))
        .get("/api/v1/quality.csv", quality::csv, needs(P::QualityRead))
        .get("/api/v1/quality.xlsx", quality::xlsx, needs(P::QualityRead))
        .post("/api/v1/evaluations/lookup", evaluations::lookup, needs(P::EvaluationsLookup))
        .get("/api/v1/evaluations/audit", evaluations::audit, needs(P::EvaluationsAudit))
        .get("/api/v1/evaluations/answers/{answer_id}/evidence", evaluations::evidence, needs(P::EvaluationsEvidence))
        .get("/api/v1/evaluations/{uscc}", evaluations::single, needs(P::EvaluationsLookup))
        .get("/api/v1/cases", cases::list, needs(P::CasesRead))
        .get("/api/v1/cases/overdue", cases::overdue, needs(P::CasesRead))
        .get("/api/v1/cases/loop", cases::loop_counts, needs(P::CasesRead))
        .get("/api/v1/cases.xlsx", cases::workbook, needs(P::CasesAnswer))
        .post("/api/v1/cases.xlsx", cases::upload_workbook, needs(P::CasesAnswer))
        .post("/api/v1/cases/{id}/response", cases::respond, needs(P::CasesAnswer))
        .post("/api/v1/cases/{id}/feedback", cases::feed_back, needs(P::CasesAnswer))
        .post("/api/v1/cases/{id}/lifted", cases::acknowledge_lifting, needs(P::CasesAnswer))
        .post("/api/v1/checks", cases::check, needs(P::ChecksQuery))
        .get("/api/v1/audit", audit::entries, needs(P::AuditRead))
        .get("/api/v1/audit/verify", audit::verify, needs(P::AuditRead))
        .get("/api/v1/credentials", audit::credentials, needs(P::CredentialsManage))
        .post("/api/v1/credentials", audit::issue, needs(P::CredentialsManage))
        .post("/api/v1/credentials/{id}/revoke", audit::revoke, needs(P::CredentialsManage))
        .get("/api/v1/openapi.json", openapi_json, Rule::Public)
        .get("/api/v1/docs", || async { Html(docs::PAGE) }, Rule::Public)
        .get("/healthz", healthz, Rule::Public)
        .get("/readyz", readyz, Rule::Public)
        .get("/metrics", metrics::metrics, needs(P::Metrics))
        .merge(crate::dashboard::routes())
}

/// The whole HTTP application; `serve` binds it, tests call it directly. Every route passes
/// the access layer ([`access::guard`]).
pub fn router(app: App) -> Router {
    let (routes, _) = routes().into_parts();
    routes
        .fallback(|| async { ServiceError::not_found("该路径", "path") })
        .method_not_allowed_fallback(|| async {
            ServiceError::new(
                ErrorKind::MethodNotAllowed,
                "method_not_allowed",
                "该路径不支持此 HTTP 方法",
                "method not allowed on this path",
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), access::guard))
        .layer(CatchPanicLayer::custom(|_| ServiceError::internal(&"handler panicked").into_response()))
        .layer(axum::extract::DefaultBodyLimit::max(drain::SMALL_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(app.ingest.limits.discard_bytes, drain::drain_unread_bodies))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Push a batch of records (JSON array). Answers 200 with one outcome per record, in order,
/// after the accepted ones are committed; good records are kept when others are rejected.
#[utoipa::path(
    post,
    path = "/api/v1/records",
    tag = "records",
    request_body(content = Vec<serde_json::Value>, content_type = "application/json",
        description = "JSON array of records; each is one of the record schemas (components: admin_license, admin_penalty, credit_list_entry, evaluation_result, monthly_report, and the lifecycle events correction, withdrawal, repair, objection_opened, objection_resolved, publicity_expired)"),
    responses(
        (status = 200, description = "Per-record outcomes", body = BatchResult),
        (status = 400, description = "Malformed JSON or not an array", body = ErrorBody),
        (status = 413, description = "Body or batch too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 60 s (body_timeout)", body = ErrorBody),
        (status = 503, description = "Busy with many large pushes (busy); see Retry-After", body = ErrorBody),
    )
)]
async fn push_records(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ServiceError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ServiceError::unsupported_media_type());
    }
    let limit = ingest.limits.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ServiceError::payload_too_large(limit));
    }
    // Memory for the body is reserved before it is read (the declared size, or the limit),
    // and held until the answer: many large pushes at once wait, then are told to come back.
    let kib = u32::try_from(declared.unwrap_or(limit).div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let _reserved =
        tokio::time::timeout(BODY_BUDGET_WAIT, Arc::clone(&ingest.bodies_in_flight).acquire_many_owned(kib))
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorKind::Unavailable,
                    "busy",
                    "网关正在处理大量报送，请稍后重试",
                    "the gateway is busy with many large pushes; retry shortly",
                )
            })?;
    let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ServiceError::new(
                ErrorKind::RequestTimeout,
                "body_timeout",
                format!("请求体未在 {} 秒内传完", BODY_READ_TIMEOUT.as_secs()),
                format!("the request body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs()),
            )
        })?
        .map_err(|_| ServiceError::payload_too_large(limit))?;
    let result = ingest.push_as(bytes, OffsetDateTime::now_utc(), &principal.units()).await?;
    let detail = format!(
        "received {} accepted {} new_version {} duplicate {} rejected {}",
        result.received, result.accepted, result.new_version, result.duplicate, result.rejected
    );
    Ok((Extension(AuditDetail(detail)), Json(result)).into_response())
}

/// `GET /api/v1/reporting` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportingParams {
    /// 所属期 `YYYY-MM`; default: last month (Beijing time).
    pub period: Option<String>,
}

/// Monthly reporting for a period: every registered department reported, filed a zero report,
/// reported late, is overdue or still has time; with the due date on the official calendar.
#[utoipa::path(
    get,
    path = "/api/v1/reporting",
    tag = "imports",
    params(ReportingParams),
    responses((status = 200, body = crate::reporting::ReportingView), (status = 400, body = ErrorBody))
)]
async fn reporting_status(
    State(ingest): State<Arc<Ingest>>,
    State(reporting): State<Arc<ReportingConfig>>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<ReportingParams>,
) -> Result<Json<crate::reporting::ReportingView>, ServiceError> {
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let period = period_param(p.period.as_deref(), today)?;
    let mut view =
        crate::reporting::view(&ingest, &reporting, period, today).await.map_err(|e| ServiceError::internal(&e))?;
    // A department sees its own line; the counts are then of that line.
    if let UnitScope::Only(units) = principal.units() {
        view.departments.retain(|d| units.contains(&d.department_uscc));
        view.counts.clear();
        for d in &view.departments {
            *view.counts.entry(d.status.as_str().to_owned()).or_default() += 1;
        }
    }
    Ok(Json(view))
}

/// A `period` parameter (`YYYY-MM`); absent means last month as of `today`.
pub(crate) fn period_param(
    s: Option<&str>,
    today: time::Date,
) -> Result<gateway_core::reporting::Period, ServiceError> {
    use gateway_core::reporting::Period;
    match s.map(str::trim) {
        None => Ok(Period::before(today)),
        Some(s) => Period::parse(s).ok_or_else(|| {
            ServiceError::bad_request(
                "period.format",
                format!("所属期 {s:?} 应写作 YYYY-MM"),
                format!("period {s:?} must be YYYY-MM"),
            )
            .with_pointer("/period")
        }),
    }
}

/// `GET /api/v1/sla` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlaParams {
    /// `publication` (the sink, default), `adapter:<platform>`, or the parent's member id (the hop up).
    pub destination: Option<String>,
    /// Only this state: `on_time`, `at_risk`, `breached`.
    pub state: Option<String>,
    /// Only records of this department (数据来源单位统一社会信用代码).
    pub department: Option<String>,
    /// Only records of this type (e.g. `admin_penalty`).
    pub record_type: Option<String>,
    /// Deadlines from this day (`YYYY-MM-DD`; default 31 days ago).
    pub since: Option<String>,
    /// Most records listed (default 500, at most 5,000).
    pub limit: Option<i64>,
}

/// Publication SLAs: the records due by the at-risk horizon (2 working days ahead) and whether
/// `destination` published them on time, has not yet (at risk), or missed the deadline.
#[utoipa::path(
    get,
    path = "/api/v1/sla",
    tag = "relay",
    params(SlaParams),
    responses((status = 200, body = crate::sla::SlaView), (status = 400, body = ErrorBody))
)]
async fn sla_status(
    State(sla): State<Arc<Sla>>,
    Params(p): Params<SlaParams>,
) -> Result<Json<crate::sla::SlaView>, ServiceError> {
    use gateway_core::sla::SlaState;
    let only = match p.state.as_deref() {
        None => None,
        Some(s) => Some(SlaState::parse(s).ok_or_else(|| {
            ServiceError::bad_request(
                "sla.state",
                format!("状态 {s:?} 无效，可选 on_time、at_risk、breached"),
                format!("state {s:?} is not one of on_time, at_risk, breached"),
            )
            .with_pointer("/state")
        })?),
    };
    let since = match p.since.as_deref() {
        None => None,
        Some(s) => Some(parse_date(s).ok_or_else(|| {
            ServiceError::bad_request(
                "sla.since",
                format!("日期 {s:?} 应写作 YYYY-MM-DD"),
                format!("{s:?} is not a YYYY-MM-DD date"),
            )
            .with_pointer("/since")
        })?),
    };
    let limit = p.limit.unwrap_or(500).clamp(1, SLA_MAX_LIMIT);
    let destination = p.destination.unwrap_or_else(|| crate::relay::PUBLICATION.to_owned());
    if !sla.watched(&destination) {
        let known = sla.destinations().join(", ");
        return Err(ServiceError::bad_request(
            "sla.destination",
            format!("本节点不向 {destination:?} 投递；可选：publication、{known}"),
            format!("this node does not deliver to {destination:?}; watched: publication, {known}"),
        )
        .with_pointer("/destination"));
    }
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let q = crate::sla::SlaQuery {
        since,
        only,
        department: p.department.as_deref(),
        record_type: p.record_type.as_deref(),
        limit,
        ..crate::sla::SlaQuery::new(&destination, today)
    };
    crate::sla::view(&sla, &q).await.map(Json).map_err(|e| ServiceError::internal(&e))
}

/// A record version as the API shows it. Identity numbers are masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordView {
    pub seq: i64,
    pub record_id: Uuid,
    pub version: i64,
    pub origin: String,
    pub record_type: String,
    pub content_hash: String,
    /// SHA-256 of the RFC 8785 form of the interchange item (origin, record id, version, type, content).
    pub item_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publicity_deadline: Option<String>,
    pub received_at: String,
    /// The record content; 证件号码 fields are masked (e.g. `110105********002X`).
    pub content: serde_json::Value,
}

impl TryFrom<StoredRecord> for RecordView {
    type Error = ServiceError;
    fn try_from(r: StoredRecord) -> Result<Self, ServiceError> {
        let mut content: serde_json::Value =
            serde_json::from_str(&r.content).map_err(|e| ServiceError::internal(&e))?;
        mask_identity_numbers(&mut content);
        let item_hash = r.item_hash().to_hex();
        Ok(Self {
            seq: r.seq,
            record_id: r.record_id,
            version: r.version,
            origin: r.origin,
            record_type: r.record_type,
            item_hash,
            content_hash: r.content_hash,
            publicity_deadline: r.deadline,
            received_at: r.received_at,
            content,
        })
    }
}

/// Every version of one record.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordVersions {
    pub record_id: Uuid,
    /// Oldest first; the last is current.
    pub versions: Vec<RecordView>,
}

/// Read one record with all its versions.
#[utoipa::path(
    get,
    path = "/api/v1/records/{id}",
    tag = "records",
    params(("id" = uuid::Uuid, Path, description = "Record id (UUID)")),
    responses(
        (status = 200, body = RecordVersions),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn get_record(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<RecordVersions>, ServiceError> {
    let record_id = parse_record_id(&id)?;
    let versions = visible_versions(&ingest, &principal, record_id).await?;
    Ok(Json(RecordVersions { record_id, versions }))
}

/// Every version of a record, if `principal` may see it: a record of another unit, or an
/// `authorized_query` one without the grant, is "not found" as if it did not exist.
pub(crate) async fn visible_versions(
    ingest: &Ingest,
    principal: &Principal,
    record_id: Uuid,
) -> Result<Vec<RecordView>, ServiceError> {
    let versions = ingest.store.versions(record_id).await.map_err(|e| ServiceError::internal(&e))?;
    let views: Vec<RecordView> = versions.into_iter().map(RecordView::try_from).collect::<Result<_, _>>()?;
    // Every version: an earlier one may have been `authorized_query`.
    if views.is_empty() || !views.iter().all(|v| may_see(principal, &v.content)) {
        return Err(ServiceError::not_found("该记录", "record"));
    }
    Ok(views)
}

/// Whether `principal` may see a record's content (as parsed for its view; masking leaves the
/// department and the disclosure scope alone): by its department and its disclosure scope.
fn may_see(principal: &Principal, content: &serde_json::Value) -> bool {
    let department =
        gateway_core::quality::department_of(content).map(|(uscc, _)| gateway_core::ident::normalize_code(uscc));
    let disclosure = content
        .get("disclosure_scope")
        .and_then(serde_json::Value::as_str)
        .and_then(Disclosure::parse)
        .unwrap_or(Disclosure::Public);
    principal.may_see(department.as_deref(), disclosure)
}

/// Filters for listing records.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Subject's 统一社会信用代码.
    uscc: Option<String>,
    /// Record type, e.g. `admin_penalty`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    record_type: Option<String>,
    /// Decision (or listing) date from, inclusive, `YYYY-MM-DD`.
    from: Option<String>,
    /// Decision (or listing) date to, inclusive, `YYYY-MM-DD`.
    to: Option<String>,
    /// Continue after this position (`next_after` of the previous page).
    after: Option<i64>,
    /// Page size, 1–1000 (default 100).
    limit: Option<i64>,
}

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    pub items: Vec<RecordView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// List records by subject, type and decision date, in arrival order, paged.
#[utoipa::path(
    get,
    path = "/api/v1/records",
    tag = "records",
    params(ListParams),
    responses((status = 200, body = RecordPage), (status = 400, body = ErrorBody))
)]
async fn query_records(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Params(p): Params<ListParams>,
) -> Result<Json<RecordPage>, ServiceError> {
    let date = |name: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(s) => parse_date(s).map(Some).ok_or_else(|| {
            ServiceError::bad_request(
                "bad_query",
                format!("{name} 必须是 YYYY-MM-DD 日期"),
                format!("{name} must be a YYYY-MM-DD date"),
            )
            .with_pointer(format!("/{name}"))
        }),
    };
    let record_type = match &p.record_type {
        None => None,
        Some(t) => Some(t.parse::<RecordType>().map_err(|()| {
            ServiceError::bad_request("bad_query", format!("未知的记录类型 {t}"), format!("unknown record type {t}"))
                .with_pointer("/type")
        })?),
    };
    let limit = page_limit(p.limit)?;
    let q = RecordQuery {
        subject_uscc: p.uscc.as_deref().map(normalize_code),
        record_type,
        from: date("from", &p.from)?,
        to: date("to", &p.to)?,
        after: p.after.unwrap_or(0),
        limit: limit + 1,
        departments: match principal.units() {
            UnitScope::Any => None,
            UnitScope::Only(units) => Some(units),
        },
    };
    let mut rows = ingest.store.query(&q).await.map_err(|e| ServiceError::internal(&e))?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_after = if more { rows.last().map(|r| r.seq) } else { None };
    // What the caller may not see is left out; a page may then be shorter than `limit`.
    let views: Vec<RecordView> = rows.into_iter().map(RecordView::try_from).collect::<Result<_, _>>()?;
    let items = views.into_iter().filter(|v| may_see(&principal, &v.content)).collect();
    Ok(Json(RecordPage { items, next_after }))
}

/// A record id from the path.
fn parse_record_id(id: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(id).map_err(|_| {
        ServiceError::bad_request("bad_record_id", "记录编号必须是 UUID", "the record id must be a UUID")
            .with_pointer("/id")
    })
}

/// A page size from the query: 1–1000, default 100.
fn page_limit(limit: Option<i64>) -> Result<i64, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::bad_request(
            "bad_query",
            "limit 必须在 1 到 1000 之间",
            "limit must be between 1 and 1000",
        )
        .with_pointer("/limit"));
    }
    Ok(limit)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(ingest): State<Arc<Ingest>>) -> Response {
    match ingest.store.ping().await {
        Ok(()) => Json(Health { status: "ready" }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            ServiceError::new(ErrorKind::Unavailable, "not_ready", "存储不可用", "the store is not available")
                .into_response()
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Credit Gateway API (信用信息交换网关)", description = "Department-facing API of a Credit Gateway node."),
    paths(push_records, get_record, query_records, healthz, readyz, relay::trail, relay::outbox, relay::dead_letters, relay::resend, imports::upload, imports::status, imports::feedback, imports::template, reporting_status, sla_status, quality::json, quality::csv, quality::xlsx, evaluations::single, evaluations::lookup, evaluations::audit, evaluations::evidence, audit::entries, audit::verify, audit::credentials, audit::issue, audit::revoke, cases::list, cases::overdue, cases::loop_counts, cases::workbook, cases::upload_workbook, cases::respond, cases::feed_back, cases::acknowledge_lifting, cases::check),
    tags(
        (name = "records", description = "双公示等信用记录及其更正、修复、异议 · Credit records and lifecycle events about them"),
        (name = "relay", description = "投递轨迹、队列与死信 · Delivery trail, queues and dead letters"),
        (name = "imports", description = "部门月报、报送情况与数据质量 · Departments' monthly Excel reports, reporting status and data quality"),
        (name = "evaluations", description = "信用评价结果互认 · Partner cities' credit evaluations: desk lookups, the pulls' audit log, answer evidence"),
        (name = "access", description = "审计日志与凭据 · The audit log (auditors) and credentials (admins)"),
        (name = "joint", description = "联合奖惩 · Joint reward and punishment: the cases a list entry opens at implementing departments"),
        (name = "operations", description = "运行状态 · Health")
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document: the handlers' annotations plus the record JSON Schemas of
/// `schemas/`, so neither can drift from the code.
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let schemas = &mut doc["components"]["schemas"];
    for t in RecordType::ALL {
        if let Ok(mut schema) = serde_json::from_str::<serde_json::Value>(t.schema_text()) {
            if let Some(obj) = schema.as_object_mut() {
                obj.remove("$schema");
                obj.remove("$id");
            }
            schemas[t.as_str()] = schema;
        }
    }
    let refs: Vec<_> =
        RecordType::ALL.iter().map(|t| serde_json::json!({"$ref": format!("#/components/schemas/{t}")})).collect();
    // Each item is checked on its own and a bad one is rejected in the answer, never the batch:
    // the body is any array (the record schemas above say what each item must be).
    doc["paths"]["/api/v1/records"]["post"]["requestBody"]["content"]["application/json"]["schema"] = serde_json::json!({
        "type": "array",
        "items": {"description": "a record or lifecycle event; see the record schemas (oneOf)", "anyOf": [{"oneOf": refs}, {}]},
    });
    declare_security(&mut doc);
    name_operations(&mut doc);
    constrain_parameters(&mut doc);
    doc
}

/// What the handlers check about query parameters, stated in the document too, so that clients
/// generated from it (and schemathesis) send what the node accepts.
fn constrain_parameters(doc: &mut serde_json::Value) {
    use serde_json::json;
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else { continue };
        for op in operations.values_mut() {
            // OpenAPI requires a description on every response; utoipa leaves it out when the
            // annotation gives none.
            if let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) {
                for (code, response) in responses.iter_mut() {
                    if response.get("description").is_none() {
                        let reason = code
                            .parse::<u16>()
                            .ok()
                            .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("");
                        response["description"] = json!(reason);
                    }
                }
            }
            let Some(parameters) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else { continue };
            for p in parameters {
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                let extra = match (path.as_str(), name.as_str()) {
                    ("/api/v1/sla", "limit") => json!({"minimum": 1, "maximum": SLA_MAX_LIMIT}),
                    (_, "limit") => json!({"minimum": 1, "maximum": MAX_PAGE}),
                    (_, "period" | "month") => json!({"pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"}),
                    (_, "from" | "to") | ("/api/v1/sla", "since") => json!({"format": "date"}),
                    ("/api/v1/evaluations/audit", "since") => json!({"format": "date-time"}),
                    ("/api/v1/sla", "state") => json!({"enum": ["on_time", "at_risk", "breached"]}),
                    ("/api/v1/cases", "state") => json!({"enum": cases::STATES}),
                    (_, "scope") => json!({"enum": ["local", "federation"]}),
                    (_, "format") => json!({"enum": ["json", "xlsx"]}),
                    (_, "direction") => json!({"enum": ["in", "out"]}),
                    _ => continue,
                };
                if let (Some(schema), Some(extra)) = (p["schema"].as_object_mut(), extra.as_object()) {
                    schema.extend(extra.clone());
                }
            }
        }
    }
    // The 督办清单 comes as JSON or, with `format=xlsx`, as a workbook.
    doc["paths"]["/api/v1/cases/overdue"]["get"]["responses"]["200"]["content"][imports::XLSX] =
        json!({"schema": {"type": "string", "format": "binary"}});
    // The workbook uploads read the bytes whatever their declared type.
    for path in ["/api/v1/imports", "/api/v1/cases.xlsx"] {
        let binary = json!({"schema": {"type": "string", "format": "binary"}});
        doc["paths"][path]["post"]["requestBody"]["content"] = json!({
            imports::XLSX: binary.clone(),
            "application/octet-stream": binary,
        });
    }
}

/// Every operation's summary in Chinese and English, for the docs page and generated clients.
/// The handler's doc comment, whose first paragraph utoipa makes the summary, becomes the
/// whole description. A test checks that each operation has one.
const SUMMARIES: &[(&str, &str, &str)] = &[
    ("post", "/api/v1/records", "报送记录（批量） · Push a batch of records"),
    ("get", "/api/v1/records", "查询记录 · List records"),
    ("get", "/api/v1/records/{id}", "读取一条记录及其各版本 · Read one record and its versions"),
    ("get", "/api/v1/records/{id}/trail", "投递轨迹 · A record's delivery trail"),
    ("get", "/api/v1/outbox", "各去向队列 · Queues per destination"),
    ("get", "/api/v1/dead-letters", "死信 · Dead letters"),
    ("post", "/api/v1/dead-letters/resend", "重发死信 · Resend dead letters"),
    ("post", "/api/v1/imports", "上传月报工作簿 · Upload a monthly report workbook"),
    ("get", "/api/v1/imports/{id}", "导入进度与结果 · An import's progress and summary"),
    ("get", "/api/v1/imports/{id}/feedback.xlsx", "问题数据反馈工作簿 · The workbook back with feedback"),
    ("get", "/api/v1/templates/monthly-report.xlsx", "月报空白模板 · Blank monthly report template"),
    ("get", "/api/v1/reporting", "月报报送情况 · Monthly reporting status"),
    ("get", "/api/v1/sla", "公示时限 · Publication SLAs"),
    ("get", "/api/v1/quality", "数据质量 · Data quality per department"),
    ("get", "/api/v1/quality.csv", "数据质量（CSV） · Data quality as CSV"),
    ("get", "/api/v1/quality.xlsx", "数据质量（XLSX） · Data quality as XLSX"),
    ("get", "/api/v1/evaluations/{uscc}", "查询一家企业在协议城市的信用评价 · One company's evaluations at a partner"),
    ("post", "/api/v1/evaluations/lookup", "批量查询协议城市的信用评价 · Many companies' evaluations at a partner"),
    ("get", "/api/v1/evaluations/audit", "评价互认查询记录 · The evaluation pulls' audit log"),
    ("get", "/api/v1/evaluations/answers/{answer_id}/evidence", "评价答复的证据 · Evidence of an evaluation answer"),
    ("get", "/api/v1/audit", "审计日志 · The audit log"),
    ("get", "/api/v1/audit/verify", "校验审计日志哈希链 · Verify the audit log's hash chain"),
    ("get", "/api/v1/credentials", "凭据列表 · List credentials"),
    ("post", "/api/v1/credentials", "签发凭据 · Issue a credential"),
    ("post", "/api/v1/credentials/{id}/revoke", "吊销凭据 · Revoke a credential"),
    ("get", "/api/v1/cases", "联合奖惩案件 · Joint reward-and-punishment cases"),
    ("post", "/api/v1/cases/{id}/response", "响应 · Respond to a case"),
    ("post", "/api/v1/cases/{id}/feedback", "反馈 · Feed back on a case"),
    ("post", "/api/v1/cases/{id}/lifted", "确认解除 · Acknowledge a lifting"),
    ("get", "/api/v1/cases/overdue", "督办清单（逾期案件） · Overdue cases"),
    ("get", "/api/v1/cases/loop", "发起—响应—反馈闭环统计 · The loop per department and month"),
    ("get", "/api/v1/cases.xlsx", "案件答复表 · The cases workbook"),
    ("post", "/api/v1/cases.xlsx", "上传案件答复表 · Upload a filled-in cases workbook"),
    ("post", "/api/v1/checks", "信用核查（应查必查） · Credit check at the point of decision"),
    ("get", "/healthz", "存活检查 · Liveness"),
    ("get", "/readyz", "就绪检查 · Readiness"),
];

fn name_operations(doc: &mut serde_json::Value) {
    for (method, path, summary) in SUMMARIES {
        if let Some(op) = doc["paths"].get_mut(*path).and_then(|item| item.get_mut(*method)) {
            let first = op["summary"].as_str().unwrap_or_default();
            let description = match op["description"].as_str() {
                Some(rest) if !rest.is_empty() => format!("{first}\n\n{rest}"),
                _ => first.to_owned(),
            };
            op["description"] = serde_json::json!(description);
            op["summary"] = serde_json::json!(summary);
        }
    }
}

/// The security schemes, and on every operation the permission it needs (from the same table
/// the access layer enforces): `security`, `x-permission`, `x-roles`.
fn declare_security(doc: &mut serde_json::Value) {
    doc["components"]["securitySchemes"] = serde_json::json!({
        "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "cgk_…",
            "description": "API key issued by `credential issue` (also accepted as `X-API-Key`)"},
        "clientCertificate": {"type": "mutualTLS",
            "description": "A client certificate under the operator's client CA, registered with `credential issue --certificate`"},
        "dashboardSession": {"type": "apiKey", "in": "cookie", "name": crate::dashboard::auth::COOKIE,
            "description": "A dashboard login (operators, auditors, admins)"}
    });
    for d in routes().table() {
        let method = d.method.as_str().to_ascii_lowercase();
        let Some(op) = doc["paths"].get_mut(d.path).and_then(|item| item.get_mut(&method)) else { continue };
        match d.rule {
            Rule::Public => op["security"] = serde_json::json!([]),
            Rule::Needs(p) => {
                let roles: Vec<&str> = p.roles().iter().map(|r| r.as_str()).collect();
                // The dashboard's login stands for a credential on reads and its own forms only.
                op["security"] = if d.method == axum::http::Method::GET || d.path.starts_with("/dashboard") {
                    serde_json::json!([{"apiKey": []}, {"clientCertificate": []}, {"dashboardSession": []}])
                } else {
                    serde_json::json!([{"apiKey": []}, {"clientCertificate": []}])
                };
                op["x-permission"] = serde_json::json!(p.as_str());
                op["x-roles"] = serde_json::json!(roles);
                let error =
                    serde_json::json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
                let responses = &mut op["responses"];
                let mut add = |code: &str, description: String| {
                    if responses.get(code).is_none() {
                        responses[code] = serde_json::json!({"description": description, "content": error.clone()});
                    }
                };
                add("401", "未认证：缺少凭据，或凭据未知、已吊销、已过期 · No credential, or an unknown, revoked or expired one".into());
                add(
                    "403",
                    format!(
                        "无权限：调用方缺少 `{}`（角色：{}） · The caller lacks `{}`",
                        p.as_str(),
                        roles.join(", "),
                        p.as_str()
                    ),
                );
                add(
                    "429",
                    "调用过于频繁，请按 Retry-After 稍后重试 · Too many calls or failed attempts; see Retry-After"
                        .into(),
                );
                add(
                    "503",
                    "繁忙：该客户端同时进行的请求过多（too_many_in_flight）或网关忙（busy），请按 Retry-After 重试 · \
                     Busy: too many requests of this client in progress, or the gateway is busy; see Retry-After"
                        .into(),
                );
            }
        }
    }
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi_document())
}
