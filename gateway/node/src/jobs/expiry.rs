//! 公示期满: the origin node raises `publicity_expired` for its own penalties whose publicity
//! period (domain §2.2, by the rules in force on the decision date, or the record's
//! `publicity_end_date`) has ended. The events go through the push path, so they are
//! validated, stored, applied and relayed like any other.
//!
//! A pass reads the candidates page by page and pushes the events in batches the node accepts
//! (`limits.max_batch_records`): however many are pending, one pass marks every one expired.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::date::{format_date, parse_date, today_in_china};
use gateway_core::publicity::{Regime, publicity_end};
use gateway_store::StoredRecord;
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use crate::error::ServiceError;
use crate::ingest::Ingest;

/// Candidates read per query.
const PAGE: i64 = 2_000;

/// One pass at `now`: raises `publicity_expired` for every penalty of this node whose
/// publicity ended before today (Beijing). Returns how many events were stored.
pub async fn run_once(gw: &Arc<Ingest>, now: OffsetDateTime) -> Result<usize, ServiceError> {
    let today = today_in_china(now);
    // Nothing decided in the last three months (the shortest period) can have expired.
    let decided_by = format_date(today - time::Duration::days(89));
    let batch = gw.limits.max_batch_records.max(1);
    let mut after = 0;
    let mut pending = Vec::new();
    let mut raised = 0;
    loop {
        let page = gw
            .store
            .publicity_candidates(&gw.member_id, &decided_by, after, PAGE)
            .await
            .map_err(|e| ServiceError::internal(&e))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for record in &page {
            match expiry_event(record, today) {
                Ok(event) => pending.extend(event),
                // One stored record that cannot be read must not stop the others expiring.
                Err(e) => {
                    tracing::error!(record_id = %record.record_id, error = %e, "publicity expiry skipped a record")
                }
            }
        }
        while pending.len() >= batch {
            let events: Vec<Value> = pending.drain(..batch).collect();
            raised += push(gw, &events, now).await?;
        }
    }
    if !pending.is_empty() {
        raised += push(gw, &pending, now).await?;
    }
    Ok(raised)
}

/// Runs a pass every `every` (the first at once) until the task is dropped.
pub async fn run_loop(gw: Arc<Ingest>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&gw, OffsetDateTime::now_utc()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "publicity periods ended: publicity_expired raised"),
            Err(e) => tracing::warn!(error = ?e, "could not raise publicity_expired events"),
        }
    }
}

/// The `publicity_expired` event of `record` (the latest version of a penalty), if its
/// publicity ended before `today`.
fn expiry_event(record: &StoredRecord, today: Date) -> Result<Option<Value>, ServiceError> {
    let content: Value = serde_json::from_str(&record.content).map_err(|e| ServiceError::internal(&e))?;
    let date = |k: &str| content[k].as_str().and_then(parse_date);
    let Some(decided) = date("decision_date") else { return Ok(None) };
    let (end, regime) = publicity_end(decided, content["dishonesty_level"].as_str(), date("publicity_end_date"));
    if end >= today {
        return Ok(None);
    }
    let mut event = json!({
        "record_type": "publicity_expired",
        "region_code": content["region_code"],
        "target_origin": record.origin,
        "target_record_id": record.record_id.to_string(),
        "target_version": record.version,
        "decided_on": format_date(today),
        "expired_on": format_date(end),
        "deciding_authority": content["penalizing_authority"],
        "deciding_authority_uscc": content["penalizing_authority_uscc"],
        "reason": format!("行政处罚信息公示期已于 {} 届满，停止公示", format_date(end)),
        "source_unit": content["source_unit"],
        "source_unit_uscc": content["source_unit_uscc"],
        "disclosure_scope": content["disclosure_scope"],
    });
    if regime != Regime::Y2017 {
        event["regime"] = regime.as_str().into();
    }
    Ok(Some(event))
}

/// Pushes one batch of events; returns how many were stored.
async fn push(gw: &Arc<Ingest>, events: &[Value], now: OffsetDateTime) -> Result<usize, ServiceError> {
    let body = serde_json::to_vec(events).map_err(|e| ServiceError::internal(&e))?;
    let result = gw.push(body.into(), now).await?;
    if result.rejected > 0 {
        let first = result.outcomes.iter().find(|o| !o.errors.is_empty()).map(|o| &o.errors[0]);
        tracing::warn!(
            rejected = result.rejected,
            rule = first.map(|e| e.rule.as_str()),
            pointer = first.map(|e| e.pointer.as_str()),
            "some publicity_expired events were refused"
        );
    }
    Ok(result.accepted + result.new_version)
}
