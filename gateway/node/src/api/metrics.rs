//! `GET /metrics`: Prometheus text exposition of what operators alert on: records stored, each
//! destination's queue (backlog and dead letters), and the federation registry's freshness (an
//! expired registry keeps working through its grace period, with loud errors in the log, and
//! this is where an alert rule sees it before traffic stops).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use time::OffsetDateTime;

use crate::ingest::Gateway;

/// What the store contributes to the metrics.
#[derive(Debug, Default)]
pub struct StoreFigures {
    /// `None` when the store did not answer: the gauge is left out rather than shown as 0.
    pub records: Option<i64>,
    pub queues: Vec<crate::store::QueueStats>,
}

/// Renders the metrics at `now`.
pub fn render(gw: &Gateway, figures: &StoreFigures, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let mut per_destination = |name: &str, help: &str, value: &dyn Fn(&crate::store::QueueStats) -> i64| {
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
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge("credit_gateway_up", "1 while the node answers.", 1.0);
    if let Some(records) = figures.records {
        gauge(
            "credit_gateway_records_stored",
            "Record versions and lifecycle events stored at this node.",
            records as f64,
        );
    }
    let Some(fed) = gw.federation.get() else { return out };
    let Ok(registry) = fed.registry.read().map(|r| r.clone()) else { return out };
    let expires = registry.expires_at.unix_timestamp() as f64;
    let past_grace = registry.freshness(now, fed.grace).is_err();
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
        fed.grace.whole_seconds() as f64,
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

pub(super) async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    // A store that does not answer leaves its figures out; the registry gauges still render.
    let figures = match (gw.store.count().await, gw.store.queue_stats().await) {
        (Ok(records), Ok(queues)) => StoreFigures { records: Some(records), queues },
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: store figures unavailable");
            StoreFigures::default()
        }
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&gw, &figures, OffsetDateTime::now_utc()),
    )
}
