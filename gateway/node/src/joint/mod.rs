//! Joint reward and punishment (联合奖惩, #24) on a node:
//! - the measures catalogue's commands (`cli`; the catalogue itself is loaded and verified at
//!   start-up by `server::load_catalogue`);
//! - opening cases (发起, `opener`) and asking for their lifting (解除) when the entry ends;
//! - the departments' answers (响应, 反馈, 解除 acknowledged: `answers`), as JSON, through the
//!   cases workbook (`workbook`, which also writes the 督办清单) or through the 前置库
//!   (`frontdb`);
//! - the check at the point of decision (信用核查, `check`);
//! - the loop's counts per department and month (below), for the API, `/metrics`, the
//!   dashboard and alerts;
//! - across nodes (ADR 0008): list entries go down by a measure's reach (`relay::routing`),
//!   and a case opened from an entry of another node reports its changes upward (`report`),
//!   so the nodes above count the federation's loop.

pub mod answers;
pub mod check;
pub mod cli;
pub mod frontdb;
pub mod opener;
pub mod report;
pub mod workbook;

use gateway_core::date::{format_date, today_in_china};
use gateway_store::cases::LoopCounts;
use serde::Serialize;
use time::OffsetDateTime;

use crate::ingest::Ingest;

/// The loop of one department in one month, with its rates.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoopRow {
    /// The node where the department answers (in the federation's loop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub counts: LoopCounts,
    /// Responded ÷ opened (响应率), when any case was opened.
    pub response_rate: Option<f64>,
    /// Fed back ÷ cases the measure applies to (opened − not applicable) (反馈率).
    pub feedback_rate: Option<f64>,
}

impl LoopRow {
    pub fn new(counts: LoopCounts) -> Self {
        let rate = |n: i64, of: i64| (of > 0).then(|| n as f64 / of as f64);
        Self {
            node: None,
            response_rate: rate(counts.responded, counts.opened),
            feedback_rate: rate(counts.fed_back, counts.opened - counts.not_applicable),
            counts,
        }
    }
}

/// The loop per department and month as it stands at `now`.
pub async fn loop_rows(ingest: &Ingest, now: OffsetDateTime) -> Result<Vec<LoopRow>, gateway_store::StoreError> {
    let today = format_date(today_in_china(now));
    Ok(ingest.store.case_loop(&today).await?.into_iter().map(LoopRow::new).collect())
}

/// The federation's loop as this node sees it at `now`: its own departments' rows, then those
/// reported from the nodes below, each naming its node.
pub async fn federation_rows(ingest: &Ingest, now: OffsetDateTime) -> Result<Vec<LoopRow>, gateway_store::StoreError> {
    let today = format_date(today_in_china(now));
    let own = ingest
        .store
        .case_loop(&today)
        .await?
        .into_iter()
        .map(|counts| LoopRow { node: Some(ingest.member_id.clone()), ..LoopRow::new(counts) });
    let reported = ingest
        .store
        .reported_loop(&today)
        .await?
        .into_iter()
        .map(|r| LoopRow { node: Some(r.reporter), ..LoopRow::new(r.counts) });
    Ok(own.chain(reported).collect())
}
