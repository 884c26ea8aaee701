//! Access control of the department API and the dashboard, in one place: routes are added
//! only through [`Guarded`], which records the one permission each needs (or that it is
//! public); one layer ([`guard`]) then authenticates the caller, checks the route's
//! permission, limits the rate, hands the handler its [`Principal`], and writes the call to
//! the audit log with its outcome. Handlers check only what depends on the data (which units'
//! records a caller may send or see).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::MethodFilter;
use gateway_core::ident::mask_id_numbers_in_text;
use gateway_store::Store;
use gateway_store::audit::AuditEvent;
use time::OffsetDateTime;

use super::{ErrorKind, ServiceError};
use crate::auth::{Authenticator, Denied, InFlight, Permission, Principal, RateLimiter, Role};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone (health, readiness, the OpenAPI document and its page, the dashboard's login).
    Public,
    Needs(Permission),
}

/// One route and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub method: Method,
    pub path: &'static str,
    pub rule: Rule,
}

/// A router whose every route declares its rule: the only way routes are added to the API and
/// the dashboard (a test checks no module calls `Router::route` directly).
pub struct Guarded<S> {
    router: Router<S>,
    table: Vec<Declared>,
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("table", &self.table).finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Guarded<S> {
    fn default() -> Self {
        Self { router: Router::new(), table: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Guarded<S> {
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H, rule: Rule) -> Self {
        self.on(Method::GET, path, handler, rule)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H, rule: Rule) -> Self {
        self.on(Method::POST, path, handler, rule)
    }

    fn on<H: Handler<T, S>, T: 'static>(mut self, method: Method, path: &'static str, handler: H, rule: Rule) -> Self {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        assert!(
            !self.table.iter().any(|d| d.method == method && d.path == path),
            "route {method} {path} declared twice"
        );
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.table.push(Declared { method, path, rule });
        self
    }

    pub fn merge(mut self, other: Guarded<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every route and its rule, in the order declared.
    pub fn table(&self) -> &[Declared] {
        &self.table
    }

    pub fn into_parts(self) -> (Router<S>, Vec<Declared>) {
        (self.router, self.table)
    }
}

/// A line for the audit log about what a call did (counts, partner, subjects), put in the
/// response's extensions by the handler.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// The address a request came from, for every route (the dashboard's login limits by it).
#[derive(Debug, Clone)]
pub struct Source(pub String);

/// The SHA-256 of the client certificate of an HTTPS connection to the API, put in its
/// requests by the TLS listener.
#[derive(Debug, Clone)]
pub struct ClientCert(pub String);

/// The access layer's state.
#[derive(Debug)]
pub struct Gate {
    pub auth: Authenticator,
    pub store: Arc<Store>,
    /// Calls per principal.
    pub calls: RateLimiter,
    /// Failed logins and wrong keys per source address.
    pub failures: RateLimiter,
    /// Requests in progress per client.
    pub in_flight: InFlight,
    rules: HashMap<(Method, &'static str), Rule>,
}

impl Gate {
    pub fn new(auth: Authenticator, store: Arc<Store>, config: &crate::config::AuthConfig, table: &[Declared]) -> Self {
        Self {
            auth,
            store,
            calls: RateLimiter::new(config.rate_per_second, config.burst),
            failures: RateLimiter::new(f64::from(config.failures_per_minute) / 60.0, config.failure_burst),
            in_flight: InFlight::new(config.max_in_flight),
            rules: table.iter().map(|d| ((d.method.clone(), d.path), d.rule)).collect(),
        }
    }

    /// Counts a failed attempt (a wrong key or password, a call without a credential) of `source`.
    pub fn failed_attempt(&self, source: &str) {
        let _ = self.failures.take(source, Instant::now());
    }

    /// Whether `source` may try a credential now.
    pub fn may_attempt(&self, source: &str) -> Result<(), std::time::Duration> {
        self.failures.check(source, Instant::now())
    }
}

/// The address a request came from (`unknown` when served without connection info).
pub fn source_of(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some(token.trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

fn too_many(wait: std::time::Duration, zh: &str, en: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ServiceError::new(
        ErrorKind::TooManyRequests,
        "auth.rate_limited",
        format!("{zh}，请 {secs} 秒后再试"),
        format!("{en}; retry in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// What a request presents to authenticate with, taken out of it (the request itself is not
/// held across the store lookup).
struct Presented {
    key: Option<String>,
    cert: Option<String>,
    cookie: Option<String>,
}

impl Presented {
    fn of(req: &Request) -> Self {
        let headers = req.headers();
        Self {
            key: bearer(headers).map(str::to_owned),
            cert: req.extensions().get::<ClientCert>().map(|c| c.0.clone()),
            cookie: crate::dashboard::cookie_value(headers).map(str::to_owned),
        }
    }
}

/// Who the request's credential names: an API key, a registered client certificate, or (where
/// `cookie_allowed`) a dashboard login; `Ok(None)` when it carries none. A valid credential
/// always passes (so behind a proxy one client's wrong keys never lock out the others' right
/// ones); a wrong one counts against its source address, which, once out of attempts, gets
/// 429 instead of 401.
async fn authenticate(
    gate: &Gate,
    app: &crate::app::App,
    presented: Presented,
    cookie_allowed: bool,
    source: &str,
    now: OffsetDateTime,
) -> Result<Option<Principal>, Response> {
    let found = match (presented.key, presented.cert) {
        (Some(key), _) => gate.auth.api_key(&key, now).await,
        (None, Some(cert)) => gate.auth.certificate(&cert, now).await,
        (None, None) => {
            let login = presented
                .cookie
                .filter(|_| cookie_allowed)
                .and_then(|c| app.dashboard.access.operator_role(&c, now.unix_timestamp()))
                .map(|(name, role)| Principal::dashboard_login(&name, role));
            return Ok(login);
        }
    };
    match found {
        Ok(p) => Ok(Some(p)),
        Err(Denied::Unchecked { unavailable }) => Err(if unavailable {
            ServiceError::new(
                ErrorKind::Unavailable,
                "store_unavailable",
                "存储暂不可用，凭据无法核验，请稍后重试",
                "the store is not available, so the credential cannot be checked; retry shortly",
            )
            .into_response()
        } else {
            ServiceError::internal(&"the credential lookup failed").into_response()
        }),
        Err(denied) => {
            if let Err(wait) = gate.may_attempt(source) {
                return Err(too_many(wait, "失败的认证尝试过多", "too many failed attempts from this address"));
            }
            gate.failed_attempt(source);
            tracing::warn!(%source, code = denied.code(), "credential refused");
            let (zh, en) = denied.messages();
            Err(ServiceError::new(ErrorKind::Unauthorized, denied.code(), zh, en).into_response())
        }
    }
}

fn unauthorized(path: &str, method: &Method) -> Response {
    if path.starts_with("/dashboard") && method == Method::GET {
        return Redirect::to("/dashboard/login").into_response();
    }
    let mut resp = ServiceError::new(
        ErrorKind::Unauthorized,
        "auth.required",
        "需要身份认证：请携带 API 密钥（Authorization: Bearer cgk_…）或已登记的客户端证书",
        "authentication required: send an API key (Authorization: Bearer cgk_…) or a registered client certificate",
    )
    .into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"credit-gateway\""));
    resp
}

fn forbidden(principal: &Principal, p: Permission) -> Response {
    let roles: Vec<&str> = p.roles().iter().map(|r| r.as_str()).collect();
    ServiceError::new(
        ErrorKind::Forbidden,
        "auth.forbidden",
        format!(
            "{}（{}）没有 {} 权限；具有该权限的角色：{}",
            principal.name,
            principal.role,
            p.as_str(),
            roles.join("、")
        ),
        format!(
            "{} ({}) lacks the {} permission; roles that hold it: {}",
            principal.name,
            principal.role,
            p.as_str(),
            roles.join(", ")
        ),
    )
    .into_response()
}

/// The access layer: see the module's documentation.
pub async fn guard(State(app): State<crate::app::App>, mut req: Request, next: Next) -> Response {
    let gate = Arc::clone(&app.gate);
    let method = req.method().clone();
    let source = source_of(&req);
    req.extensions_mut().insert(Source(source.clone()));
    let Some(matched) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        // No route: the fallback answers 404 and holds no data.
        return next.run(req).await;
    };
    // HEAD is answered by the GET handler, so it needs what GET needs.
    let ruled = if method == Method::HEAD { Method::GET } else { method.clone() };
    let rule = gate.rules.get(&(ruled, matched.as_str())).copied();
    let permission = match rule {
        Some(Rule::Public) => return next.run(req).await,
        Some(Rule::Needs(p)) => p,
        // Another method of a declared path: the method router answers 405.
        None if gate.rules.keys().any(|(_, path)| *path == matched) => return next.run(req).await,
        None => {
            tracing::error!(%method, path = %matched, "route without a declared permission refused");
            return ServiceError::new(
                ErrorKind::Forbidden,
                "auth.undeclared_route",
                "该路径未声明访问权限，已拒绝",
                "this route declares no permission and is refused",
            )
            .into_response();
        }
    };
    let now = OffsetDateTime::now_utc();
    let request_id = uuid::Uuid::now_v7().to_string();
    let target = mask_id_numbers_in_text(&req.uri().to_string());
    let action = format!("{method} {matched}");
    let audit = |principal: Option<&Principal>, status: u16, detail: String| AuditEvent {
        at: gateway_core::interchange::format_time(now),
        principal: principal.map_or_else(|| "anonymous".to_owned(), |p| p.name.clone()),
        role: principal.map_or_else(|| "none".to_owned(), |p| p.role.as_str().to_owned()),
        action: action.clone(),
        target: target.clone(),
        status: i64::from(status),
        outcome: match status {
            200..=399 => "ok",
            401 | 403 | 429 => "denied",
            400..=499 => "rejected",
            _ => "failed",
        }
        .into(),
        request_id: request_id.clone(),
        source: source.clone(),
        detail: mask_id_numbers_in_text(&detail),
    };

    // The dashboard's cookie stands for a login on the dashboard's routes, where forms carry
    // its token, and on reads (the pages' export links); never on the API's other writes.
    let cookie_allowed = matched.starts_with("/dashboard") || method == Method::GET || method == Method::HEAD;
    let authenticated = authenticate(&gate, &app, Presented::of(&req), cookie_allowed, &source, now).await;
    let principal = match authenticated {
        Ok(Some(p)) => p,
        Ok(None) if !gate.auth.required => Principal::development(),
        Ok(None) if matched.starts_with("/dashboard") && (method == Method::GET || method == Method::HEAD) => {
            // A browser sent to the login page: nothing read, nothing done, nothing to count.
            return finish(&gate, unauthorized(&matched, &method), audit(None, 303, String::new()), &request_id, false)
                .await;
        }
        Ok(None) => {
            // Calls without a credential count as failed attempts: a source cannot fill the
            // audit log with them at line speed.
            if let Err(wait) = gate.may_attempt(&source) {
                let resp = too_many(wait, "未认证的请求过多", "too many unauthenticated calls from this address");
                return finish(&gate, resp, audit(None, 429, String::new()), &request_id, false).await;
            }
            gate.failed_attempt(&source);
            let resp = unauthorized(&matched, &method);
            return finish(&gate, resp, audit(None, 401, String::new()), &request_id, true).await;
        }
        Err(resp) => {
            // 429s are not written (they are what keeps a flood out of the log), nor 503s (the
            // store they would be written to is away); 401s are.
            let status = resp.status().as_u16();
            let audited = !matches!(status, 429 | 503);
            return finish(&gate, resp, audit(None, status, String::new()), &request_id, audited).await;
        }
    };
    if !principal.may(permission) {
        let resp = forbidden(&principal, permission);
        return finish(
            &gate,
            resp,
            audit(Some(&principal), 403, format!("needs {}", permission.as_str())),
            &request_id,
            true,
        )
        .await;
    }
    // Per principal; with authentication off there is none to hold to a rate.
    let bucket = principal.credential_id.clone().unwrap_or_else(|| format!("{}:{}", principal.role, principal.name));
    if principal.role != Role::Development
        && let Err(wait) = gate.calls.take(&bucket, Instant::now())
    {
        let resp = too_many(wait, "调用过于频繁", "too many calls");
        tracing::warn!(principal = %principal.name, %source, "rate limited");
        return finish(&gate, resp, audit(Some(&principal), 429, String::new()), &request_id, false).await;
    }
    // Without authentication every caller is the same development principal: hold each
    // address to the bound instead.
    let client = if principal.role == Role::Development { format!("source:{source}") } else { bucket };
    let Some(_slot) = gate.in_flight.enter(&client) else {
        let resp = ServiceError::new(
            ErrorKind::Unavailable,
            "too_many_in_flight",
            "该客户端同时进行的请求过多，请等已发出的请求完成后再试",
            "this client has too many requests in progress; retry once some have finished",
        )
        .into_response();
        tracing::warn!(principal = %principal.name, %source, "too many requests in progress");
        return finish(&gate, resp, audit(Some(&principal), 503, String::new()), &request_id, false).await;
    };
    req.extensions_mut().insert(principal.clone());
    let resp = next.run(req).await;
    let detail = resp.extensions().get::<AuditDetail>().map(|d| d.0.clone()).unwrap_or_default();
    let event = audit(Some(&principal), resp.status().as_u16(), detail);
    finish(&gate, resp, event, &request_id, permission.audited()).await
}

/// Writes the audit entry (when the route is audited) and tags the response with its id.
async fn finish(gate: &Gate, mut resp: Response, event: AuditEvent, request_id: &str, audited: bool) -> Response {
    if audited && let Err(e) = gate.store.audit(event).await {
        // The call has had its effect: the client is answered, the failure is loud.
        tracing::error!(error = %e, %request_id, "AUDIT LOG WRITE FAILED");
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
