//! Alert webhooks (design §8): when a record turns at risk or breached at a destination, a
//! destination has failed for longer than a threshold, a department is overdue with its monthly
//! report, or this node's certificate or the registry nears expiry, a JSON alert is POSTed to
//! the configured URL, signed with HMAC-SHA256. Each condition fires once: what was delivered
//! is remembered in the store (`alerts_sent`), and what could not be delivered is tried again at
//! the next check, so nothing is lost to a receiver that was down.

use std::path::Path;

use anyhow::Context;
use gateway_core::sla::SlaState;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::app::App;
use crate::config::AlertsConfig;

/// The header carrying `sha256=<hex HMAC of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-credit-gateway-signature";
/// The header carrying the timestamp that was signed (RFC 3339), against replays.
pub const TIMESTAMP_HEADER: &str = "x-credit-gateway-timestamp";

/// Most records named in one SLA alert; the rest follow at the next checks.
const RECORDS_PER_ALERT: i64 = 500;
/// How deep (in alerts' worth of records) a check looks past records alerted already.
const MAX_PAGES: i64 = 20;

/// One alert as POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `sla.at_risk`, `sla.breached`, `destination.failing`, `department.overdue`,
    /// `cases.overdue`, `certificate.expiring`, `registry.expiring`.
    pub kind: &'static str,
    pub member_id: String,
    pub raised_at: String,
    pub summary_zh: String,
    pub summary_en: String,
    pub details: Value,
    /// What marks it delivered (one key per record for SLA alerts).
    #[serde(skip)]
    keys: Vec<String>,
}

/// Checks the conditions and delivers alerts.
#[derive(Debug, Clone)]
pub struct Alerter {
    app: App,
    config: AlertsConfig,
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

/// The signature of an alert body sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

/// Reads the signing key, making one (32 random bytes, hex, mode 0600) if the file is absent.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim();
            anyhow::ensure!(!key.is_empty(), "key file {} is empty", path.display());
            Ok(key.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = hex::encode(crate::pki::random_secret(&ring::rand::SystemRandom::new())?);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::pki::write_secret(path, &key)?;
            // alerts.key goes to the webhook receiver; dashboard.key never leaves the node.
            tracing::info!(file = %path.display(), "HMAC key created");
            Ok(key.into_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("reading key {}", path.display())),
    }
}

impl Alerter {
    /// An alerter when a webhook URL is configured.
    pub fn new(app: App, config: &AlertsConfig, data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let Some(url) = config.webhook_url.clone() else { return Ok(None) };
        let secret_file = config.secret_file.clone().unwrap_or_else(|| data_dir.join("alerts.key"));
        let secret = load_or_create_secret(&secret_file)?;
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        Ok(Some(Self { app, config: config.clone(), url, secret, client }))
    }

    /// Checks every `check_interval_secs` until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(self.config.check_interval_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let work = async {
            loop {
                tick.tick().await;
                if let Err(e) = self.check(OffsetDateTime::now_utc()).await {
                    tracing::warn!(error = %format!("{e:#}"), "alert check failed; retrying at the next check");
                }
            }
        };
        tokio::select! { () = work => {}, () = stop => {} }
    }

    /// One check at `now`: raises what is new and delivers it. Returns the alerts delivered.
    pub async fn check(&self, now: OffsetDateTime) -> anyhow::Result<Vec<Alert>> {
        let mut alerts = self.sla_alerts(now).await?;
        alerts.extend(self.destination_alerts(now));
        alerts.extend(self.department_alerts(now).await?);
        alerts.extend(self.case_alerts(now).await?);
        alerts.extend(self.expiry_alerts(now));
        let mut delivered = Vec::new();
        for alert in alerts {
            let sent = self.app.ingest.store.alerts_sent(&alert.keys).await?;
            let fresh: Vec<String> = alert.keys.iter().filter(|k| !sent.contains(*k)).cloned().collect();
            if fresh.is_empty() {
                continue;
            }
            // SLA alerts name only records not alerted yet (`sla_alerts`); a department alert
            // lists every overdue department, and marks those newly overdue.
            // One alert the receiver refuses must not hold back the others: it is tried again
            // at the next check.
            if let Err(e) = self.deliver(&alert, now).await {
                tracing::warn!(kind = alert.kind, error = %format!("{e:#}"), "alert not delivered; retrying at the next check");
                continue;
            }
            self.app
                .ingest
                .store
                .mark_alerts_sent(&fresh, alert.kind, &gateway_core::date::format_timestamp(now))
                .await?;
            delivered.push(alert);
        }
        Ok(delivered)
    }

    /// The webhook URL without its query (chat webhooks carry their token there).
    fn shown_url(&self) -> &str {
        self.url.split('?').next().unwrap_or_default()
    }

    async fn deliver(&self, alert: &Alert, now: OffsetDateTime) -> anyhow::Result<()> {
        let body = serde_json::to_vec(alert)?;
        let timestamp = gateway_core::date::format_timestamp(now);
        let resp = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, sign(&self.secret, &timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("posting alert {} to {}: {}", alert.kind, self.shown_url(), e.without_url())
            })?;
        anyhow::ensure!(
            resp.status().is_success(),
            "webhook {} answered {} to {}",
            self.shown_url(),
            resp.status(),
            alert.kind
        );
        tracing::info!(kind = alert.kind, "alert delivered");
        Ok(())
    }

    fn alert(
        &self,
        kind: &'static str,
        now: OffsetDateTime,
        zh: String,
        en: String,
        details: Value,
        keys: Vec<String>,
    ) -> Alert {
        Alert {
            kind,
            member_id: self.app.ingest.member_id.clone(),
            raised_at: gateway_core::date::format_timestamp(now),
            summary_zh: zh,
            summary_en: en,
            details,
            keys,
        }
    }

    /// Records newly at risk or breached at each watched destination.
    async fn sla_alerts(&self, now: OffsetDateTime) -> anyhow::Result<Vec<Alert>> {
        let today = gateway_core::date::today_in_china(now);
        let mut out = Vec::new();
        for destination in self.app.sla.destinations() {
            for (state, kind) in [(SlaState::AtRisk, "sla.at_risk"), (SlaState::Breached, "sla.breached")] {
                // Latest deadlines first (what has just turned), skipping records alerted
                // already; while a page holds only those, look deeper.
                let key = |id: &str| format!("{kind}:{destination}:{id}");
                let mut fresh = Vec::new();
                let mut view_today = String::new();
                let mut margin = 0;
                for page in 1..=MAX_PAGES {
                    let limit = RECORDS_PER_ALERT * page;
                    let q = crate::sla::SlaQuery {
                        only: Some(state),
                        newest_first: true,
                        limit,
                        scheduled: true,
                        ..crate::sla::SlaQuery::new(&destination, today)
                    };
                    let view = crate::sla::view(&self.app.sla, &q).await?;
                    (view_today, margin) = (view.today, view.at_risk_working_days);
                    let listed = view.records.len() as i64;
                    let keys: Vec<String> = view.records.iter().map(|r| key(&r.record_id)).collect();
                    let sent = self.app.ingest.store.alerts_sent(&keys).await?;
                    fresh = view
                        .records
                        .into_iter()
                        .filter(|r| !sent.contains(&key(&r.record_id)))
                        .take(RECORDS_PER_ALERT as usize)
                        .collect();
                    if !fresh.is_empty() || listed < limit {
                        break;
                    }
                }
                if fresh.is_empty() {
                    continue;
                }
                let keys = fresh.iter().map(|r| key(&r.record_id)).collect();
                let n = fresh.len();
                let (zh, en) = match state {
                    SlaState::AtRisk => (
                        format!("{destination}：{n} 条记录距期限不足 {margin} 个工作日"),
                        format!("{destination}: {n} records within {margin} working days of their deadline"),
                    ),
                    _ => (
                        format!("{destination}：{n} 条记录已超过期限（双公示 7 个工作日，信用修复 3 个工作日）"),
                        format!(
                            "{destination}: {n} records missed their deadline (7 working days for 双公示, 3 for repairs)"
                        ),
                    ),
                };
                let details = json!({ "destination": destination, "today": view_today, "records": fresh });
                out.push(self.alert(kind, now, zh, en, details, keys));
            }
        }
        Ok(out)
    }

    /// Destinations failing for longer than the threshold (once per failure spell).
    fn destination_alerts(&self, now: OffsetDateTime) -> Vec<Alert> {
        let threshold = time::Duration::seconds(self.config.destination_failing_secs as i64);
        let mut out = Vec::new();
        for (destination, status) in self.app.relay.status.snapshot() {
            let Some(since) = status.failing_since.as_deref() else { continue };
            let Ok(started) = OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339) else {
                continue;
            };
            if now - started < threshold {
                continue;
            }
            let minutes = (now - started).whole_minutes();
            out.push(self.alert(
                "destination.failing",
                now,
                format!("{destination} 已连续投递失败 {minutes} 分钟"),
                format!("{destination} has been failing for {minutes} minutes"),
                json!({ "destination": destination, "failing_since": since, "consecutive_failures": status.consecutive_failures,
                        "last_error": status.last_error }),
                vec![format!("destination.failing:{destination}:{since}")],
            ));
        }
        out
    }

    /// Registered departments overdue with last month's report.
    async fn department_alerts(&self, now: OffsetDateTime) -> anyhow::Result<Vec<Alert>> {
        if self.app.reporting.departments.is_empty() {
            return Ok(Vec::new());
        }
        let today = gateway_core::date::today_in_china(now);
        let period = gateway_core::reporting::Period::before(today);
        let view = crate::reporting::view(&self.app.ingest, &self.app.reporting, period, today).await?;
        let overdue: Vec<_> = view
            .departments
            .iter()
            .filter(|d| d.registered && d.status == gateway_core::reporting::ReportingStatus::Overdue)
            .collect();
        if overdue.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = overdue.iter().map(|d| d.department.as_str()).collect();
        let keys = overdue.iter().map(|d| format!("department.overdue:{period}:{}", d.department_uscc)).collect();
        Ok(vec![self.alert(
            "department.overdue",
            now,
            format!("{period} 月报逾期未报送：{}", names.join("、")),
            format!("{} departments are overdue with their {period} report", overdue.len()),
            json!({ "period": period.to_string(), "due_date": view.due_date, "departments": overdue }),
            keys,
        )])
    }

    /// Joint cases newly past their response or feedback due date (联合奖惩 响应/反馈 逾期),
    /// each case and stage alerted once.
    async fn case_alerts(&self, now: OffsetDateTime) -> anyhow::Result<Vec<Alert>> {
        const LOOK_AT: i64 = RECORDS_PER_ALERT * MAX_PAGES;
        let today = gateway_core::date::format_date(gateway_core::date::today_in_china(now));
        // What has just turned overdue first: cases alerted already stay behind them.
        let overdue = self.app.ingest.store.overdue_cases(&today, None, None, true, LOOK_AT).await?;
        let key = |c: &gateway_store::cases::Case| {
            let stage = if c.state == "opened" { "response" } else { "feedback" };
            format!("cases.overdue:{stage}:{}", c.case.case_id)
        };
        let keys: Vec<String> = overdue.iter().map(key).collect();
        let sent = self.app.ingest.store.alerts_sent(&keys).await?;
        let fresh: Vec<_> =
            overdue.into_iter().filter(|c| !sent.contains(&key(c))).take(RECORDS_PER_ALERT as usize).collect();
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let keys = fresh.iter().map(key).collect();
        let departments: std::collections::BTreeSet<&str> =
            fresh.iter().map(|c| c.case.department_uscc.as_str()).collect();
        let (n, d) = (fresh.len(), departments.len());
        let cases: Vec<Value> = fresh
            .iter()
            .map(|c| {
                json!({ "case_id": c.case.case_id, "department_uscc": c.case.department_uscc,
                        "measure_id": c.case.measure_id, "state": c.state,
                        "response_due": c.case.response_due, "feedback_due": c.case.feedback_due })
            })
            .collect();
        Ok(vec![self.alert(
            "cases.overdue",
            now,
            format!("联合奖惩：{d} 个部门的 {n} 件案件逾期未响应或未反馈"),
            format!(
                "joint reward and punishment: {n} cases of {d} departments are overdue with their response or feedback"
            ),
            json!({ "today": today, "cases": cases }),
            keys,
        )])
    }

    /// This node's certificate or the registry expiring within the warning window.
    fn expiry_alerts(&self, now: OffsetDateTime) -> Vec<Alert> {
        let Some(fed) = self.app.identity() else { return Vec::new() };
        let window = time::Duration::days(i64::from(self.config.expiry_warning_days));
        let mut out = Vec::new();
        if let Some(not_after) = fed.certificate_expires().filter(|t| *t - now < window) {
            let days = (not_after - now).whole_days();
            let at = gateway_core::date::format_timestamp(not_after);
            out.push(self.alert(
                "certificate.expiring",
                now,
                format!("本节点证书将于 {days} 天后（{at}）到期"),
                format!("this node's certificate expires in {days} days ({at})"),
                json!({ "not_after": at }),
                vec![format!("certificate.expiring:{at}")],
            ));
        }
        if let Ok(registry) = fed.registry.read().map(|r| r.clone())
            && registry.expires_at - now < window
        {
            let days = (registry.expires_at - now).whole_days();
            let at = gateway_core::date::format_timestamp(registry.expires_at);
            let version = registry.body.version;
            out.push(self.alert(
                "registry.expiring",
                now,
                format!("联盟注册表（第 {version} 版）将于 {days} 天后（{at}）到期"),
                format!("the federation registry (version {version}) expires in {days} days ({at})"),
                json!({ "version": version, "expires_at": at }),
                vec![format!("registry.expiring:{version}")],
            ));
        }
        out
    }
}
