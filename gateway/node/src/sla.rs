//! Publication SLAs at a node (design §8): for each 双公示 record with a publicity deadline,
//! where it stands at one local publishing destination (the publication sink or a platform
//! adapter) — on time, at risk, breached — as of a day that is an argument, so that tests and
//! what-if views move it by hand. Only records due up to a few working days ahead are read.

use std::collections::BTreeMap;

use gateway_core::date::parse_date;
use gateway_core::sla::{SlaPolicy, SlaState, state, working_days_between};
use serde::Serialize;
use time::Date;

use crate::ingest::Gateway;
use crate::store::StoreError;

/// One record's SLA at the destination.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlaRecord {
    pub record_id: String,
    pub record_type: String,
    pub origin: String,
    /// 公示截止日: the 7th working day after the decision.
    pub deadline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[schema(value_type = String)]
    pub state: SlaState,
    /// Where to see its delivery trail.
    pub trail: String,
}

/// `GET /api/v1/sla`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlaView {
    pub destination: String,
    pub today: String,
    /// Deadlines from this day are read (older ones are history).
    pub since: String,
    pub at_risk_working_days: u32,
    /// Records in each state among those listed.
    pub counts: BTreeMap<String, usize>,
    pub records: Vec<SlaRecord>,
}

/// Days back a view looks by default: older deadlines are history, asked for with `since`.
pub const LOOKBACK_DAYS: i64 = 31;

/// The SLA of records due from `since` (default [`LOOKBACK_DAYS`] before `today`) to the
/// at-risk horizon at `destination`, as of `today`; only `only` states when given.
pub async fn view(
    gw: &Gateway,
    destination: &str,
    today: Date,
    since: Option<Date>,
    policy: SlaPolicy,
    only: Option<SlaState>,
    limit: i64,
) -> Result<SlaView, StoreError> {
    use gateway_core::date::format_date;
    let horizon = horizon(gw, today, policy);
    let since = since.unwrap_or(today - time::Duration::days(LOOKBACK_DAYS));
    let rows = gw.store.sla_rows(destination, &format_date(since), &format_date(horizon), limit).await?;
    let mut counts = BTreeMap::new();
    let mut records = Vec::new();
    for r in rows {
        let Some(deadline) = parse_date(&r.deadline) else { continue };
        let published_on = r.published_at.as_deref().and_then(beijing_date);
        let s = state(&gw.calendar, Ok(deadline), published_on, today, policy);
        *counts.entry(s.as_str().to_owned()).or_insert(0) += 1;
        if only.is_none_or(|o| o == s) {
            records.push(SlaRecord {
                trail: format!("/api/v1/records/{}/trail", r.record_id),
                record_id: r.record_id,
                record_type: r.record_type,
                origin: r.origin,
                deadline: r.deadline,
                published_at: r.published_at,
                state: s,
            });
        }
    }
    Ok(SlaView {
        destination: destination.to_owned(),
        today: format_date(today),
        since: format_date(since),
        at_risk_working_days: policy.at_risk_working_days,
        counts,
        records,
    })
}

/// The last day whose deadline is at risk today: a record due later still has more than the
/// margin of working days left. Past the loaded calendar, the last known day.
fn horizon(gw: &Gateway, today: Date, policy: SlaPolicy) -> Date {
    let mut day = today;
    for _ in 0..60 {
        let Some(next) = day.next_day() else { break };
        match working_days_between(&gw.calendar, today, next) {
            Ok(n) if n <= policy.at_risk_working_days => day = next,
            _ => break,
        }
    }
    day
}

/// The Beijing date of an RFC 3339 timestamp.
fn beijing_date(ts: &str) -> Option<Date> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(crate::clock::today_in_china(t))
}
