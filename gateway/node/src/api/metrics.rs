//! `GET /metrics`: Prometheus text exposition of what operators alert on: records stored, each
//! destination's queue (backlog and dead letters), and the federation registry's freshness (an
//! expired registry keeps working through its grace period, with loud errors in the log, and
//! this is where an alert rule sees it before traffic stops).

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use time::OffsetDateTime;

use crate::app::App;

/// What the store contributes to the metrics.
#[derive(Debug, Default)]
pub struct StoreFigures {
    /// `None` when the store did not answer: the gauge is left out rather than shown as 0.
    pub records: Option<i64>,
    pub queues: Vec<gateway_store::QueueStats>,
    /// Per local publishing destination: records due by the at-risk horizon in each state.
    pub sla: Vec<(String, std::collections::BTreeMap<String, i64>)>,
    /// Registered departments in each reporting status for last month (none configured: empty).
    pub reporting: Option<std::collections::BTreeMap<String, usize>>,
    /// The joint reward-and-punishment loop per department and month (no catalogue: none).
    pub cases: Option<Vec<crate::joint::LoopRow>>,
}

/// Months of the loop shown as rates (the most recent), so series stay bounded.
const LOOP_MONTHS: usize = 12;

/// The SLA states and reporting statuses always shown (0 when none), so series do not vanish.
const SLA_STATES: [&str; 3] = ["on_time", "at_risk", "breached"];
const REPORTING_STATUSES: [&str; 5] = ["reported", "zero_report", "late", "overdue", "pending"];

/// Gathers the figures `render` shows. A store that does not answer leaves its figures out.
pub async fn figures(app: &App, now: OffsetDateTime) -> StoreFigures {
    let (records, queues) = match (app.ingest.store.count().await, app.ingest.store.queue_stats().await) {
        (Ok(records), Ok(queues)) => (Some(records), queues),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: store figures unavailable");
            return StoreFigures::default();
        }
    };
    let today = gateway_core::date::today_in_china(now);
    let mut sla = Vec::new();
    for d in app.sla.destinations() {
        let q = crate::sla::SlaQuery { limit: 1, scheduled: true, ..crate::sla::SlaQuery::new(&d, today) };
        match crate::sla::view(&app.sla, &q).await {
            Ok(v) => sla.push((d, v.counts)),
            Err(e) => tracing::warn!(error = %e, destination = %d, "metrics: SLA figures unavailable"),
        }
    }
    let reporting = if app.reporting.departments.is_empty() {
        None
    } else {
        let period = gateway_core::reporting::Period::before(today);
        crate::reporting::view(&app.ingest, &app.reporting, period, today).await.ok().map(|v| {
            v.departments.iter().filter(|d| d.registered).fold(std::collections::BTreeMap::new(), |mut m, d| {
                *m.entry(d.status.as_str().to_owned()).or_insert(0) += 1;
                m
            })
        })
    };
    let cases = match &app.measures {
        None => None,
        Some(_) => match crate::joint::loop_rows(&app.ingest, now).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: joint case figures unavailable");
                None
            }
        },
    };
    StoreFigures { records, queues, sla, reporting, cases }
}

/// Renders the metrics at `now`.
pub fn render(app: &App, figures: &StoreFigures, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let mut per_destination = |name: &str, help: &str, value: &dyn Fn(&gateway_store::QueueStats) -> i64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for q in &figures.queues {
            let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", q.destination, value(q));
        }
    };
    per_destination(
        "credit_gateway_outbox_backlog",
        "Records stored after the destination's cursor (an upper bound on what waits for it).",
        &|q| q.backlog,
    );
    per_destination(
        "credit_gateway_dead_letters",
        "Records the destination refused (or that wait behind one) and that are not resent yet.",
        &|q| q.dead,
    );
    per_destination(
        "credit_gateway_outbox_lag_seconds",
        "Age of the oldest record waiting for the destination (0 when none waits).",
        &|q| q.oldest_waiting.as_deref().map_or(0, |t| lag_seconds(t, now)),
    );
    if !figures.sla.is_empty() {
        let name = "credit_gateway_sla_records";
        let _ = writeln!(
            out,
            "# HELP {name} Records due by the at-risk horizon (2 working days ahead), by state at each local publishing destination.\n# TYPE {name} gauge"
        );
        for (destination, counts) in &figures.sla {
            for state in SLA_STATES {
                let n = counts.get(state).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}{{destination=\"{destination}\",state=\"{state}\"}} {n}");
            }
        }
    }
    if let Some(counts) = &figures.reporting {
        let name = "credit_gateway_departments";
        let _ = writeln!(
            out,
            "# HELP {name} Registered departments by monthly reporting status for last month.\n# TYPE {name} gauge"
        );
        for status in REPORTING_STATUSES {
            let _ = writeln!(out, "{name}{{status=\"{status}\"}} {}", counts.get(status).copied().unwrap_or(0));
        }
    }
    if let Some(rows) = &figures.cases {
        render_loop(&mut out, rows);
    }
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge("credit_gateway_up", "1 while the node answers.", 1.0);
    gauge(
        "credit_gateway_leader",
        "1 while this replica holds the lease and runs the relay, SLA tracker, alerts and collectors.",
        if app.leading.load(std::sync::atomic::Ordering::Relaxed) { 1.0 } else { 0.0 },
    );
    if let Some(records) = figures.records {
        gauge(
            "credit_gateway_records_stored",
            "Record versions and lifecycle events stored at this node.",
            records as f64,
        );
    }
    let Some(fed) = app.identity() else { return out };
    if let Some(not_after) = fed.certificate_expires() {
        gauge(
            "credit_gateway_certificate_days_to_expiry",
            "Days until this node's mutual-TLS certificate expires.",
            (not_after - now).whole_seconds() as f64 / 86_400.0,
        );
    }
    let Ok(registry) = fed.registry.read().map(|r| r.clone()) else { return out };
    let expires = registry.expires_at.unix_timestamp() as f64;
    let past_grace = registry.freshness(now, fed.registry_grace).is_err();
    gauge("credit_gateway_registry_version", "Version of the federation registry held.", registry.body.version as f64);
    gauge("credit_gateway_registry_expires_timestamp_seconds", "When the held registry expires (Unix time).", expires);
    gauge(
        "credit_gateway_registry_seconds_to_expiry",
        "Seconds until the held registry expires; negative once it has (the grace period is running).",
        expires - now.unix_timestamp() as f64,
    );
    gauge(
        "credit_gateway_registry_grace_seconds",
        "Grace period after expiry before federation traffic is refused.",
        fed.registry_grace.whole_seconds() as f64,
    );
    gauge(
        "credit_gateway_registry_expired",
        "1 when the held registry is past its expiry (working on the grace period).",
        f64::from(u8::from(now > registry.expires_at)),
    );
    gauge(
        "credit_gateway_federation_refusing",
        "1 when the registry is past its grace period and federation traffic is refused.",
        f64::from(u8::from(past_grace)),
    );
    out
}

/// The loop's counts per department (all months) and its rates per department and month.
fn render_loop(out: &mut String, rows: &[crate::joint::LoopRow]) {
    use std::collections::BTreeMap;
    // Totals over the months, per department and stage (in `LoopCounts::stages` order).
    let mut totals: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for r in rows {
        let stages = r.counts.stages();
        let total =
            totals.entry(r.counts.department_uscc.as_str()).or_insert_with(|| stages.map(|(s, _)| (s, 0)).to_vec());
        for ((_, t), (_, n)) in total.iter_mut().zip(stages) {
            *t += n;
        }
    }
    let name = "credit_gateway_joint_cases";
    let _ = writeln!(
        out,
        "# HELP {name} Joint reward-and-punishment cases per implementing department, by stage of the loop (发起 opened, 响应 responded, 反馈 fed_back, overdue, 解除 lifting/lifted).\n# TYPE {name} gauge"
    );
    for (department, counts) in &totals {
        for (stage, n) in counts {
            let _ = writeln!(out, "{name}{{department=\"{department}\",stage=\"{stage}\"}} {n}");
        }
    }
    let mut months: Vec<&str> = rows.iter().map(|r| r.counts.month.as_str()).collect();
    months.sort_unstable();
    months.dedup();
    let recent = &months[months.len().saturating_sub(LOOP_MONTHS)..];
    for (name, help, rate) in [
        ("credit_gateway_joint_response_rate", "Share of the month's cases responded to (响应率)", 0),
        ("credit_gateway_joint_feedback_rate", "Share of the month's applicable cases fed back (反馈率)", 1),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}, per department and month of opening.\n# TYPE {name} gauge");
        for r in rows.iter().filter(|r| recent.contains(&r.counts.month.as_str())) {
            let value = if rate == 0 { r.response_rate } else { r.feedback_rate };
            if let Some(v) = value {
                let (d, m) = (&r.counts.department_uscc, &r.counts.month);
                let _ = writeln!(out, "{name}{{department=\"{d}\",month=\"{m}\"}} {v}");
            }
        }
    }
}

pub(super) async fn metrics(State(app): State<App>) -> impl IntoResponse {
    // A store that does not answer leaves its figures out; the registry gauges still render.
    let now = OffsetDateTime::now_utc();
    let figures = figures(&app, now).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&app, &figures, now))
}

/// Seconds from an RFC 3339 timestamp to `now` (0 if unreadable or in the future).
pub fn lag_seconds(timestamp: &str, now: OffsetDateTime) -> i64 {
    OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| (now - t).whole_seconds().max(0))
}
