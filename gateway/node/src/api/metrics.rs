//! `GET /metrics`: Prometheus text exposition of what operators alert on. Today that is the
//! federation registry's freshness: an expired registry keeps working through its grace period
//! (loud errors in the log), and this is where an alert rule sees it before traffic stops.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use time::OffsetDateTime;

use crate::ingest::Gateway;

/// Renders the metrics at `now`.
pub fn render(gw: &Gateway, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    gauge("credit_gateway_up", "1 while the node answers.", 1.0);
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&gw, OffsetDateTime::now_utc()))
}
