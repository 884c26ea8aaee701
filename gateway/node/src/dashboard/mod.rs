//! The operators' dashboard (design §8), server-rendered under `/dashboard`: an overview
//! (throughput, queues and lag per destination, registry and certificate expiry), SLA problems
//! with their trail, monthly reporting, quality ratios, and dead letters with a resend button.
//! Every page requires an operator login; the JSON behind each page is in `/api/v1`.

pub mod auth;
mod html;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use gateway_core::date::format_date;
use gateway_core::sla::SlaState;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::api::access::{Guarded, Rule, Source};
use crate::app::App;
use crate::auth::{Permission, Principal, Role};
use html::{Nav, beijing, esc, page, ratio_cell};

pub use auth::Access;

/// The dashboard's own state: who may log in, and the backlog samples its overview charts.
#[derive(Debug)]
pub struct Board {
    pub access: Access,
    pub history: History,
}

/// Samples of each destination's backlog, one a minute, for the last day.
#[derive(Debug, Default)]
pub struct History(std::sync::Mutex<VecDeque<(OffsetDateTime, BTreeMap<String, i64>)>>);

const HISTORY_SAMPLES: usize = 24 * 60;

impl History {
    /// Takes a sample if the last one is a minute old (or there is none).
    pub async fn sample(&self, store: &gateway_store::Store, now: OffsetDateTime) {
        let due =
            self.0.lock().map(|h| h.back().is_none_or(|(t, _)| now - *t >= time::Duration::MINUTE)).unwrap_or(false);
        if !due {
            return;
        }
        let Ok(stats) = store.queue_stats().await else { return };
        if let Ok(mut h) = self.0.lock() {
            h.push_back((now, stats.into_iter().map(|q| (q.destination, q.backlog)).collect()));
            while h.len() > HISTORY_SAMPLES {
                h.pop_front();
            }
        }
    }

    fn series(&self) -> Vec<(String, Vec<f64>)> {
        let Ok(h) = self.0.lock() else { return Vec::new() };
        let mut names: Vec<&String> = h.iter().flat_map(|(_, m)| m.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| (n.clone(), h.iter().map(|(_, m)| m.get(n).copied().unwrap_or(0) as f64).collect()))
            .collect()
    }
}

/// Samples the queues every minute until the process ends (the overview chart's data).
pub async fn sample_loop(board: Arc<Board>, ingest: Arc<crate::ingest::Ingest>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        board.history.sample(&ingest.store, OffsetDateTime::now_utc()).await;
    }
}

/// The dashboard's routes and what each needs (pages: an operator's or auditor's login).
pub fn routes() -> Guarded<App> {
    let view = Rule::Needs(Permission::Dashboard);
    Guarded::default()
        .get("/dashboard", overview, view)
        .get("/dashboard/login", login_page, Rule::Public)
        .post("/dashboard/login", login, Rule::Public)
        .post("/dashboard/logout", logout, Rule::Public)
        .get("/dashboard/sla", sla, view)
        .get("/dashboard/reporting", reporting, view)
        .get("/dashboard/quality", quality, view)
        .get("/dashboard/dead-letters", dead_letters, view)
        .post("/dashboard/dead-letters/resend", resend, Rule::Needs(Permission::RelayResend))
        .get("/dashboard/trail/{id}", trail, view)
        .get("/dashboard/evaluations", evaluation_pulls, view)
        .get("/dashboard/cases", cases, view)
}

/// A logged-in operator: the name and the cookie value (forms carry a token derived from it).
struct Session {
    name: String,
    token: String,
}

pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(auth::COOKIE)?.strip_prefix('='))
}

/// The operator logged in with the request's cookie, if any.
fn session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let cookie = cookie_value(headers)?;
    let name = app.dashboard.access.operator(cookie, now)?;
    Some(Session { name, token: app.dashboard.access.form_token(cookie) })
}

fn to_login() -> Response {
    Redirect::to("/dashboard/login").into_response()
}

/// A page with the headers every dashboard answer carries: nothing from elsewhere may load, no
/// framing, no caching of operator data.
fn respond(status: StatusCode, body: String) -> Response {
    let mut resp = (status, Html(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn operator_page(s: &Session, title: &str, nav: Nav, body: &str) -> Response {
    respond(StatusCode::OK, page(title, nav, Some((&s.name, &s.token)), body))
}

fn failure<E: std::fmt::Display + 'static>(e: E) -> Response {
    if crate::error::store_unavailable(&e) {
        // An outage of the database, not a fault of the page: the operator is told to wait.
        tracing::warn!(error = %e, "dashboard page: store unavailable");
        let mut resp = respond(
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                "存储暂不可用 Store unavailable",
                Nav::None,
                None,
                "<p class=\"error\">数据库暂时无法连接，请稍后刷新本页。The database cannot be reached at the moment; \
                 reload this page shortly.</p>",
            ),
        );
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    }
    tracing::error!(error = %e, "dashboard page failed");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            "出错了 Error",
            Nav::None,
            None,
            "<p class=\"error\">页面数据读取失败，详情见日志。The page could not be read; see the log.</p>",
        ),
    )
}

async fn login_page(State(app): State<App>) -> Response {
    respond(StatusCode::OK, login_form(&app, None))
}

fn login_form(app: &App, error: Option<&str>) -> String {
    let mut body = String::new();
    if !app.dashboard.access.has_operators() {
        body.push_str(
            "<p class=\"error\">尚未配置操作员：在配置文件中添加 <code>[[dashboard.operators]]</code>（密码散列由 \
             <code>credit-gateway operator hash-password</code> 生成）。No operators are configured.</p>",
        );
    }
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(e));
    }
    body.push_str(
        "<form method=\"post\" action=\"/dashboard/login\"><p><label>用户名 User <input name=\"username\" id=\"username\" \
         autocomplete=\"username\" required></label></p><p><label>密码 Password <input type=\"password\" name=\"password\" \
         id=\"password\" autocomplete=\"current-password\" required></label></p><p><button id=\"login\">登录 Log in</button></p></form>",
    );
    page("操作员登录 Operator login", Nav::None, None, &body)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

/// Logins a source address may have in flight: a flood of wrong logins from one address
/// holds one hashing slot, and a right login from elsewhere never queues behind it.
static LOGGING_IN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Frees a source's login slot when its check ends, however it ends.
struct InFlight(String);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut v) = LOGGING_IN.lock() {
            v.retain(|s| *s != self.0);
        }
    }
}

/// Writes a login (or a refused one) to the audit log. Refusals beyond the per-address limit
/// are answered 429 before this, so a flood cannot fill the log.
async fn audit_login(app: &App, user: &str, source: &str, status: u16) {
    let role = app.dashboard.access.role_of(user).filter(|_| status == 303);
    let event = gateway_store::audit::AuditEvent {
        at: gateway_core::interchange::format_time(OffsetDateTime::now_utc()),
        principal: user.to_owned(),
        role: role.map_or("none", Role::as_str).into(),
        action: "POST /dashboard/login".into(),
        target: "/dashboard/login".into(),
        status: i64::from(status),
        outcome: if status == 303 { "ok" } else { "denied" }.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        source: source.to_owned(),
        detail: String::new(),
    };
    if let Err(e) = app.ingest.store.audit(event).await {
        tracing::error!(error = %e, "AUDIT LOG WRITE FAILED for a dashboard login");
    }
}

async fn login(
    State(app): State<App>,
    Extension(Source(source)): Extension<Source>,
    Form(f): Form<LoginForm>,
) -> Response {
    // Failed logins are limited per source address before any hashing: no password can be
    // guessed at line speed.
    if let Err(wait) = app.gate.may_attempt(&source) {
        let secs = wait.as_secs().max(1);
        let mut resp = respond(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &app,
                Some(&format!("失败次数过多，请 {secs} 秒后再试 · too many failed logins; retry in {secs} s")),
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let _slot = {
        let Ok(mut busy) = LOGGING_IN.lock() else { return failure("login lock poisoned") };
        if busy.contains(&source) {
            return respond(
                StatusCode::TOO_MANY_REQUESTS,
                login_form(&app, Some("上一次登录仍在校验 · a login from this address is still being checked")),
            );
        }
        busy.push(source.clone());
        InFlight(source.clone())
    };
    // PBKDF2 is deliberately slow: it runs off the async workers, two at a time (the cores).
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(_permit) = HASHING.acquire().await else { return failure("login semaphore closed") };
    let board = Arc::clone(&app.dashboard);
    let user = f.username.trim().to_owned();
    let checked = tokio::task::spawn_blocking(move || board.access.login(&user, &f.password).map(str::to_owned)).await;
    let Ok(name) = checked else { return failure("login check panicked") };
    let Some(name) = name else {
        app.gate.failed_attempt(&source);
        // Only the first characters of what was typed, without control characters: a password
        // typed into the user field must not land whole in the log.
        let shown: String = f.username.trim().chars().filter(|c| !c.is_control()).take(32).collect();
        tracing::warn!(user = %shown, %source, "dashboard login refused");
        audit_login(&app, &shown, &source, 401).await;
        return respond(
            StatusCode::UNAUTHORIZED,
            login_form(&app, Some("用户名或密码不正确 · wrong user name or password")),
        );
    };
    tracing::info!(user = %name, "dashboard login");
    audit_login(&app, &name, &source, 303).await;
    let expires = OffsetDateTime::now_utc().unix_timestamp() + auth::SESSION_SECS;
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::COOKIE,
        app.dashboard.access.session(&name, expires),
        auth::SESSION_SECS
    );
    let mut resp = Redirect::to("/dashboard").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    token: String,
}

async fn logout(headers: HeaderMap, State(app): State<App>, Form(f): Form<TokenForm>) -> Response {
    if let Some(c) = cookie_value(&headers)
        && !app.dashboard.access.form_token_ok(c, &f.token)
    {
        return respond(
            StatusCode::FORBIDDEN,
            page("拒绝 Refused", Nav::None, None, "<p class=\"error\">表单已失效 · stale form</p>"),
        );
    }
    let mut resp = Redirect::to("/dashboard/login").into_response();
    let clear = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", auth::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn overview(headers: HeaderMap, State(app): State<App>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let now = OffsetDateTime::now_utc();
    let today = gateway_core::date::today_in_china(now);
    app.dashboard.history.sample(&app.ingest.store, now).await;
    let since = today - time::Duration::days(29);
    let since_text = format_date(since);
    let (stored, queues, days, dead) = match tokio::try_join!(
        app.ingest.store.count(),
        app.ingest.store.queue_stats(),
        app.ingest.store.quality_days(&since_text),
        app.ingest.store.dead_letter_count()
    ) {
        Ok(x) => x,
        Err(e) => return failure(e),
    };
    let (accepted_today, rejected_today) =
        days.iter().find(|(d, _, _)| *d == format_date(today)).map_or((0, 0), |(_, a, r)| (*a, *r));
    let mut body = String::from("<div class=\"cards\">");
    let mut card = |label: &str, value: String| {
        let _ = write!(body, "<div class=\"card\">{label}<b>{value}</b></div>");
    };
    card("已存记录 Records stored", stored.to_string());
    card("今日入库 Accepted today", accepted_today.to_string());
    card("今日退回 Rejected today", rejected_today.to_string());
    card("死信 Dead letters", dead.to_string());
    if let Some(fed) = app.identity() {
        if let Ok(r) = fed.registry.read() {
            let days = (r.expires_at - now).whole_days();
            card(&format!("注册表第 {} 版到期 Registry expires", r.body.version), format!("{days} 天 days"));
        }
        if let Some(t) = fed.certificate_expires() {
            card("证书到期 Certificate expires", format!("{} 天 days", (t - now).whole_days()));
        }
    }
    body.push_str("</div><h2>各去向队列 Queues per destination</h2><table id=\"queues\"><tr><th>去向 Destination</th>\
        <th>待发 Backlog</th><th>滞后 Lag</th><th>死信 Dead</th><th>本次启动后已投递 Delivered</th><th>最近成功 Last success</th><th>故障 Failing</th></tr>");
    let status = app.relay.status.snapshot();
    for q in &queues {
        let st = status.get(&q.destination);
        let lag = q.oldest_waiting.as_deref().map_or(0, |t| crate::api::metrics::lag_seconds(t, now));
        let failing = st.and_then(|s| s.failing_since.as_deref()).map_or_else(
            || "<td class=\"ok\">正常 ok</td>".to_owned(),
            |since| {
                let err = st.and_then(|s| s.last_error.as_deref()).unwrap_or("");
                format!("<td class=\"bad\">自 since {} · {}</td>", beijing(since), esc(err))
            },
        );
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td>{failing}</tr>",
            esc(&q.destination),
            q.backlog,
            if lag > 3600 { " class=\"warn\"" } else { "" },
            human_secs(lag),
            q.dead,
            st.map_or(0, |s| s.delivered),
            st.and_then(|s| s.last_success_at.as_deref()).map_or_else(|| "—".to_owned(), beijing),
        );
    }
    body.push_str("</table><h2>近 30 天入库与退回 Accepted vs rejected, 30 days</h2>");
    let by_day: BTreeMap<&str, (i64, i64)> = days.iter().map(|(d, a, r)| (d.as_str(), (*a, *r))).collect();
    let filled: Vec<(String, i64, i64)> = (0..30)
        .map(|i| {
            let d = format_date(since + time::Duration::days(i));
            let (a, r) = by_day.get(d.as_str()).copied().unwrap_or((0, 0));
            (d, a, r)
        })
        .collect();
    body.push_str(&html::bars_chart(&filled));
    body.push_str("<h2>待发队列变化 Backlog over time</h2>");
    body.push_str(&html::lines_chart(
        "backlog-chart",
        "每分钟采样 sampled each minute",
        &app.dashboard.history.series(),
    ));
    operator_page(&s, "概览 Overview", Nav::Overview, &body)
}

fn human_secs(s: i64) -> String {
    match s {
        0 => "—".to_owned(),
        s if s < 120 => format!("{s} 秒 s"),
        s if s < 7200 => format!("{} 分 min", s / 60),
        s if s < 172_800 => format!("{} 小时 h", s / 3600),
        s => format!("{} 天 d", s / 86_400),
    }
}

#[derive(Debug, Default, Deserialize)]
struct SlaFilter {
    destination: Option<String>,
    department: Option<String>,
    record_type: Option<String>,
}

fn state_label(s: SlaState) -> &'static str {
    match s {
        SlaState::OnTime => "<span class=\"ok\">按时 on time</span>",
        SlaState::Pending => "未到期 pending",
        SlaState::AtRisk => "<span class=\"warn\">临期 at risk</span>",
        SlaState::Breached => "<span class=\"bad\">超期 breached</span>",
        SlaState::CalendarUnknown => "日历未载入 calendar unknown",
    }
}

async fn sla(headers: HeaderMap, State(app): State<App>, Query(f): Query<SlaFilter>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let mut destinations = app.sla.destinations();
    if destinations.is_empty() {
        destinations.push(crate::relay::PUBLICATION.to_owned());
    }
    let destination = f
        .destination
        .filter(|d| destinations.contains(d) || app.sla.watched(d))
        .unwrap_or_else(|| destinations[0].clone());
    let department =
        f.department.as_deref().map(str::trim).filter(|d| !d.is_empty()).map(gateway_core::ident::normalize_code);
    let record_type = f.record_type.as_deref().filter(|t| !t.is_empty());
    let q = crate::sla::SlaQuery {
        problems: true,
        department: department.as_deref(),
        record_type,
        limit: 500,
        ..crate::sla::SlaQuery::new(&destination, today)
    };
    let view = match crate::sla::view(&app.sla, &q).await {
        Ok(v) => v,
        Err(e) => return failure(e),
    };
    let mut body =
        String::from("<form method=\"get\" action=\"/dashboard/sla\">去向 Destination <select name=\"destination\">");
    for d in &destinations {
        let sel = if *d == destination { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{}</option>", esc(d));
    }
    let _ = write!(
        body,
        "</select> 数据来源单位 Department <input name=\"department\" value=\"{}\" placeholder=\"统一社会信用代码 USCC\"> 类型 Type \
         <select name=\"record_type\"><option value=\"\">全部 all</option>",
        esc(department.as_deref().unwrap_or(""))
    );
    for (t, label) in [("admin_license", "行政许可"), ("admin_penalty", "行政处罚"), ("credit_list_entry", "红黑名单")]
    {
        let sel = if record_type == Some(t) { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{t}\"{sel}>{label} {t}</option>");
    }
    let _ = write!(
        body,
        "</select> <button>筛选 Filter</button></form><div class=\"cards\"><div class=\"card\">按时 On time<b>{}</b></div>\
         <div class=\"card\">临期 At risk<b class=\"warn\">{}</b></div><div class=\"card\">超期 Breached<b class=\"bad\">{}</b></div></div>\
         <p class=\"muted\">今日 today {} · 截止日自 deadlines from {} · 临期 = 不足 {} 个工作日 at risk = at most {} working days left</p>\
         <table id=\"sla-table\"><tr><th>记录 Record</th><th>类型 Type</th><th>数据来源单位 Department</th><th>来源节点 Origin</th>\
         <th>公示截止日 Deadline</th><th>送达 Delivered</th><th>状态 State</th><th>轨迹 Trail</th></tr>",
        view.counts.get("on_time").unwrap_or(&0),
        view.counts.get("at_risk").unwrap_or(&0),
        view.counts.get("breached").unwrap_or(&0),
        view.today,
        view.since,
        view.at_risk_working_days,
        view.at_risk_working_days,
    );
    for r in &view.records {
        let _ = write!(
            body,
            "<tr data-record=\"{id}\" data-state=\"{}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/dashboard/trail/{id}\">查看 view</a></td></tr>",
            r.state.as_str(),
            esc(&r.record_type),
            esc(r.department_uscc.as_deref().unwrap_or("—")),
            esc(&r.origin),
            esc(&r.deadline),
            r.published_at.as_deref().map_or_else(|| "—".to_owned(), beijing),
            state_label(r.state),
            id = esc(&r.record_id),
        );
    }
    body.push_str("</table>");
    if view.records.is_empty() {
        body.push_str("<p class=\"ok\">没有临期或超期的记录 · nothing at risk or breached</p>");
    }
    operator_page(&s, "公示时限 Publication SLA", Nav::Sla, &body)
}

#[derive(Debug, Default, Deserialize)]
struct PeriodFilter {
    period: Option<String>,
}

impl PeriodFilter {
    /// The period asked for; the page's default when none (or none readable) was.
    fn chosen(&self, default: gateway_core::reporting::Period) -> gateway_core::reporting::Period {
        self.period.as_deref().and_then(|p| gateway_core::reporting::Period::parse(p.trim())).unwrap_or(default)
    }
}

async fn reporting(headers: HeaderMap, State(app): State<App>, Query(f): Query<PeriodFilter>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let period = f.chosen(gateway_core::reporting::Period::before(today));
    let view = match crate::reporting::view(&app.ingest, &app.reporting, period, today).await {
        Ok(v) => v,
        Err(e) => return failure(e),
    };
    let mut body = period_form("/dashboard/reporting", &view.period);
    let _ = write!(
        body,
        "<p>报送截止 Due {}{}</p><table id=\"reporting-table\"><tr><th>部门 Department</th><th>统一社会信用代码 USCC</th>\
         <th>状态 Status</th><th>报送日期 Submitted</th><th>许可 Licenses</th><th>处罚 Penalties</th></tr>",
        esc(view.due_date.as_deref().unwrap_or("—")),
        if view.calendar_unknown { "（日历未载入 calendar not loaded）" } else { "" }
    );
    use gateway_core::reporting::ReportingStatus as R;
    for d in &view.departments {
        let status = match d.status {
            R::Reported => "<span class=\"ok\">已报送 reported</span>",
            R::ZeroReport => "<span class=\"ok\">零报送 zero report</span>",
            R::Late => "<span class=\"warn\">迟报 late</span>",
            R::Overdue => "<span class=\"bad\">逾期未报 overdue</span>",
            R::Pending => "待报 pending",
        };
        let n = |v: Option<i64>| v.map_or("—".to_owned(), |n| n.to_string());
        let _ = write!(
            body,
            "<tr data-department=\"{}\"><td>{}{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.department_uscc),
            esc(&d.department),
            if d.registered { "" } else { " <span class=\"muted\">(未登记 unregistered)</span>" },
            esc(&d.department_uscc),
            esc(d.submitted_on.as_deref().unwrap_or("—")),
            n(d.license_count),
            n(d.penalty_count),
        );
    }
    body.push_str("</table>");
    operator_page(&s, "月报 Monthly reporting", Nav::Reporting, &body)
}

/// The evaluation pulls' audit log (信用评价结果互认): partners asking this node and this
/// node's desk asking partners, newest first.
async fn evaluation_pulls(headers: HeaderMap, State(app): State<App>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let pulls = match app.ingest.store.pulls(None, "", 200).await {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    let mut body = String::from(
        "<p>最近 200 次查询；双方各自留存 · The last 200 pulls; each side keeps its own log.</p>\
         <table id=\"pulls-table\"><tr><th>时间 At</th><th>方向 Direction</th><th>查询方 Asker</th><th>答复方 Answerer</th>\
         <th>经办人 Officer</th><th>企业数 Subjects</th><th>结果 Outcome</th><th>答复编号 Answer</th></tr>",
    );
    for p in &pulls {
        let direction = if p.direction == "in" { "被查询 in" } else { "查询 out" };
        let outcome = match p.outcome.as_str() {
            "answered" => "<span class=\"ok\">answered</span>".to_owned(),
            "cache" => "cache".to_owned(),
            "stale" | "failed" => format!("<span class=\"warn\">{}</span>", esc(&p.outcome)),
            other => format!("<span class=\"bad\">{}</span>", esc(other)),
        };
        let reason =
            p.reason.as_deref().map(|r| format!("<br><span class=\"muted\">{}</span>", esc(r))).unwrap_or_default();
        let _ = write!(
            body,
            "<tr data-outcome=\"{}\"><td>{}</td><td>{direction}</td><td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td>\
             <td>{outcome}{reason}</td><td>{}</td></tr>",
            esc(&p.outcome),
            beijing(&p.at),
            esc(&p.asker),
            esc(&p.answerer),
            esc(p.officer.as_deref().unwrap_or("—")),
            esc(&p.subjects.join(" ")),
            p.subjects.len(),
            esc(p.answer_id.as_deref().unwrap_or("—")),
        );
    }
    body.push_str("</table>");
    operator_page(&s, "评价互认查询记录 Evaluation pulls", Nav::Evaluations, &body)
}

/// Most overdue cases listed on the page (the 督办清单 export has them all).
const OVERDUE_SHOWN: i64 = 200;

/// 联合奖惩: the loop per department and month (发起 → 响应 → 反馈 → 解除) and the overdue
/// cases, oldest due first.
async fn cases(headers: HeaderMap, State(app): State<App>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let now = OffsetDateTime::now_utc();
    let today = gateway_core::date::format_date(gateway_core::date::today_in_china(now));
    let (rows, overdue) = match tokio::try_join!(
        crate::joint::loop_rows(&app.ingest, now),
        app.ingest.store.overdue_cases(&today, None, None, false, OVERDUE_SHOWN)
    ) {
        Ok(v) => v,
        Err(e) => return failure(e),
    };
    let total = |f: fn(&gateway_store::cases::LoopCounts) -> i64| rows.iter().map(|r| f(&r.counts)).sum::<i64>();
    let mut body = String::new();
    if app.measures.is_none() {
        body.push_str(
            "<p class=\"muted\">本节点未配置联合奖惩措施清单（[measures] catalogue）。\
             This node has no measures catalogue configured.</p>",
        );
    }
    let overdue_total = total(|c| c.response_overdue + c.feedback_overdue);
    let _ = write!(
        body,
        "<div class=\"cards\"><div class=\"card\">发起 Opened<b id=\"cases-opened\">{}</b></div>\
         <div class=\"card\">已响应 Responded<b>{}</b></div><div class=\"card\">已反馈 Fed back<b>{}</b></div>\
         <div class=\"card\">逾期 Overdue<b id=\"cases-overdue\" class=\"{}\">{overdue_total}</b></div>\
         <div class=\"card\">待解除 Lifting<b>{}</b></div></div>",
        total(|c| c.opened),
        total(|c| c.responded),
        total(|c| c.fed_back),
        if overdue_total > 0 { "bad" } else { "ok" },
        total(|c| c.lifting),
    );
    body.push_str(
        "<h2>闭环 · The loop per department and month</h2><table id=\"loop-table\"><tr><th>实施部门 Department</th>\
         <th>月份 Month</th><th>发起 Opened</th><th>响应 Responded</th><th>响应率 Rate</th><th>不适用 N/A</th>\
         <th>反馈 Fed back</th><th>反馈率 Rate</th><th>响应逾期 Late response</th><th>反馈逾期 Late feedback</th>\
         <th>待解除 Lifting</th><th>已解除 Lifted</th></tr>",
    );
    let rate =
        |r: Option<f64>| r.map_or("<td class=\"muted\">—</td>".to_owned(), |r| format!("<td>{:.1}%</td>", r * 100.0));
    for r in &rows {
        let c = &r.counts;
        let late = |n: i64| if n > 0 { format!("<td class=\"bad\">{n}</td>") } else { "<td>0</td>".to_owned() };
        let _ = write!(
            body,
            "<tr data-department=\"{d}\"><td>{d}</td><td>{}</td><td>{}</td><td>{}</td>{}<td>{}</td><td>{}</td>{}{}{}<td>{}</td><td>{}</td></tr>",
            esc(&c.month),
            c.opened,
            c.responded,
            rate(r.response_rate),
            c.not_applicable,
            c.fed_back,
            rate(r.feedback_rate),
            late(c.response_overdue),
            late(c.feedback_overdue),
            c.lifting,
            c.lifted,
            d = esc(&c.department_uscc),
        );
    }
    body.push_str("</table>");
    let _ = write!(
        body,
        "<h2>督办 · Overdue cases (oldest due first; the 督办清单 workbook: <code>GET /api/v1/cases/overdue?format=xlsx</code>)</h2>\
         <table id=\"overdue-table\"><tr><th>实施部门 Department</th><th>逾期环节 Stage</th><th>期限 Due</th>\
         <th>措施 Measure</th><th>主体 Subject</th><th>名单 List</th><th>发起 Opened</th><th>案件 Case</th></tr>"
    );
    for c in &overdue {
        let (stage, due) = if c.state == "opened" {
            ("响应 response", c.case.response_due.as_deref())
        } else {
            ("反馈 feedback", c.case.feedback_due.as_deref())
        };
        let measure = app
            .measures
            .as_deref()
            .and_then(|m| m.measure(&c.case.measure_id))
            .map_or(c.case.measure_id.as_str(), |m| m.title.as_str());
        let _ = write!(
            body,
            "<tr data-case=\"{}\"><td>{}</td><td class=\"bad\">{stage}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            esc(&c.case.case_id),
            esc(&c.case.department_uscc),
            esc(due.unwrap_or("—")),
            esc(measure),
            esc(&c.case.subject_name),
            esc(&c.case.list_type),
            beijing(&c.case.opened_at),
            esc(&c.case.case_id),
        );
    }
    body.push_str("</table>");
    operator_page(&s, "联合奖惩 Joint reward and punishment", Nav::Cases, &body)
}

fn period_form(action: &str, period: &str) -> String {
    format!(
        "<form method=\"get\" action=\"{action}\">所属期 Period <input name=\"period\" value=\"{}\" pattern=\"\\d{{4}}-\\d{{2}}\"> \
         <button>查看 Show</button></form>",
        esc(period)
    )
}

async fn quality(headers: HeaderMap, State(app): State<App>, Query(f): Query<PeriodFilter>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let period = f.chosen(gateway_core::reporting::Period::of(today));
    let view = match crate::quality::view(&app.ingest.store, &app.reporting, period).await {
        Ok(v) => v,
        Err(e) => return failure(e),
    };
    let mut body = period_form("/dashboard/quality", &view.period);
    let _ = write!(
        body,
        "<p>目标 Target {:.0}% · 导出 Export: <a href=\"/api/v1/quality.xlsx?period={p}\">XLSX</a> · \
         <a href=\"/api/v1/quality.csv?period={p}\">CSV</a></p><table id=\"quality-table\"><tr><th>数据来源单位 Department</th>\
         <th>报送 Submitted</th><th>入库 Accepted</th><th>有效入库率 Valid</th><th>完整率 Complete</th><th>及时率 Timely</th>\
         <th>迟报 Late</th><th>主要退回原因 Top reasons</th></tr>",
        view.target * 100.0,
        p = esc(&view.period),
    );
    for d in &view.departments {
        let reasons: Vec<String> = d.reasons.iter().take(3).map(|r| format!("{} ×{}", esc(&r.rule), r.count)).collect();
        let name = if d.department_name.is_empty() { "（未注明 unspecified）" } else { &d.department_name };
        let _ = write!(
            body,
            "<tr data-department=\"{}\" data-meets-target=\"{}\"><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{}</td>\
             {}{}{}<td>{}</td><td>{}</td></tr>",
            esc(&d.department_uscc),
            d.meets_target,
            esc(name),
            esc(&d.department_uscc),
            d.submitted,
            d.accepted,
            ratio_cell(d.valid_rate, view.target),
            ratio_cell(d.completeness, view.target),
            ratio_cell(d.timeliness, view.target),
            d.late_reports,
            reasons.join("<br>"),
        );
    }
    body.push_str("</table><h2>退回原因排行 Rejection reasons</h2><table id=\"reasons-table\"><tr><th>规则 Rule</th><th>次数 Count</th></tr>");
    for r in &view.reasons {
        let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", esc(&r.rule), r.count);
    }
    body.push_str("</table>");
    operator_page(&s, "数据质量 Data quality", Nav::Quality, &body)
}

#[derive(Debug, Default, Deserialize)]
struct DeadFilter {
    destination: Option<String>,
    resent: Option<String>,
}

async fn dead_letters(headers: HeaderMap, State(app): State<App>, Query(f): Query<DeadFilter>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let destination = f.destination.as_deref().filter(|d| !d.is_empty());
    let rows = match app.ingest.store.dead_letters(destination, 500).await {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let mut body = String::new();
    if let Some(id) = &f.resent {
        let _ = write!(body, "<p class=\"flash\" id=\"flash\">已安排重发 Resend queued: {}</p>", esc(id));
    }
    body.push_str(
        "<table id=\"dead-letters\"><tr><th>去向 Destination</th><th>记录 Record</th><th>版本 Version</th><th>原因 Reason</th>\
         <th>尝试 Attempts</th><th>时间 Dead at</th><th>状态 State</th><th></th></tr>",
    );
    for d in &rows {
        let reason = d.reason.get("message_zh").or_else(|| d.reason.get("code")).and_then(|v| v.as_str()).unwrap_or("");
        let state = match d.state.as_str() {
            "dead" => "<span class=\"bad\">死信 dead</span>",
            "resend" => "<span class=\"warn\">待重发 resend queued</span>",
            _ => "<span class=\"ok\">已重发 resent</span>",
        };
        let button = if d.state == "dead" {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/dashboard/dead-letters/resend\">\
                 <input type=\"hidden\" name=\"destination\" value=\"{}\"><input type=\"hidden\" name=\"record_id\" value=\"{}\">\
                 <input type=\"hidden\" name=\"token\" value=\"{}\"><button class=\"resend\">重发 Resend</button></form>",
                esc(&d.destination),
                esc(&d.record_id),
                esc(&s.token)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-record=\"{id}\" data-state=\"{}\"><td>{}</td><td><a href=\"/dashboard/trail/{id}\">{id}</a></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{button}</td></tr>",
            esc(&d.state),
            esc(&d.destination),
            d.version,
            esc(reason),
            d.attempts,
            beijing(&d.dead_at),
            id = esc(&d.record_id),
        );
    }
    body.push_str("</table>");
    if rows.is_empty() {
        body.push_str("<p class=\"ok\">没有死信 · no dead letters</p>");
    }
    operator_page(&s, "死信 Dead letters", Nav::DeadLetters, &body)
}

#[derive(Debug, Deserialize)]
struct ResendForm {
    destination: String,
    record_id: String,
    token: String,
}

async fn resend(headers: HeaderMap, State(app): State<App>, Form(f): Form<ResendForm>) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let cookie = cookie_value(&headers).unwrap_or_default();
    if !app.dashboard.access.form_token_ok(cookie, &f.token) {
        return respond(
            StatusCode::FORBIDDEN,
            page(
                "拒绝 Refused",
                Nav::None,
                Some((&s.name, &s.token)),
                "<p class=\"error\">表单已失效，请刷新页面 · stale form, reload the page</p>",
            ),
        );
    }
    let Ok(id) = uuid::Uuid::parse_str(f.record_id.trim()) else {
        return respond(
            StatusCode::BAD_REQUEST,
            page(
                "无效请求 Bad request",
                Nav::None,
                Some((&s.name, &s.token)),
                "<p class=\"error\">记录编号无效 · bad record id</p>",
            ),
        );
    };
    match app.ingest.store.request_resend(&f.destination, Some(id)).await {
        Ok(n) => {
            tracing::info!(operator = %s.name, destination = %f.destination, record_id = %id, letters = n, "resend requested");
            Redirect::to(&format!("/dashboard/dead-letters?resent={id}")).into_response()
        }
        Err(e) => failure(e),
    }
}

async fn trail(
    headers: HeaderMap,
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let Some(s) = session(&app, &headers) else { return to_login() };
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return respond(
            StatusCode::BAD_REQUEST,
            page("无效请求 Bad request", Nav::None, Some((&s.name, &s.token)), ""),
        );
    };
    // The same rule as the API's trail: an `authorized_query` record needs the grant.
    if crate::api::visible_versions(&app.ingest, &principal, uuid).await.is_err() {
        return respond(StatusCode::NOT_FOUND, page("未找到 Not found", Nav::None, Some((&s.name, &s.token)), ""));
    }
    match app.ingest.store.trail(uuid).await {
        Ok(Some(t)) => {
            let json = serde_json::to_string_pretty(&t).unwrap_or_default();
            let body = format!(
                "<p class=\"muted\">JSON: <a href=\"/api/v1/records/{id}/trail\">/api/v1/records/{id}/trail</a></p><pre id=\"trail\">{}</pre>",
                esc(&json),
                id = esc(&id)
            );
            operator_page(&s, &format!("投递轨迹 Trail {id}"), Nav::None, &body)
        }
        Ok(None) => respond(StatusCode::NOT_FOUND, page("未找到 Not found", Nav::None, Some((&s.name, &s.token)), "")),
        Err(e) => failure(e),
    }
}
