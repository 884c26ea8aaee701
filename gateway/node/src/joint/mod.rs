//! Joint reward and punishment (联合奖惩, #24) on a node:
//! - the measures catalogue's commands (`cli`; the catalogue itself is loaded and verified at
//!   start-up by `server::load_catalogue`);
//! - opening cases (发起, `opener`) and asking for their lifting (解除) when the entry ends;
//! - the departments' answers (响应, 反馈, 解除 acknowledged: `answers`), as JSON or through the
//!   cases workbook (`workbook`, which also writes the 督办清单);
//! - the check at the point of decision (信用核查, `check`);
//! - the loop's counts per department and month (below), for the API, `/metrics`, the
//!   dashboard and alerts.
//!
//! Across nodes (routing list entries by a measure's reach, signed answers back) comes next
//! (ADR 0007).

pub mod answers;
pub mod check;
pub mod cli;
pub mod opener;
pub mod workbook;

use gateway_core::date::{format_date, today_in_china};
use gateway_store::cases::LoopCounts;
use serde::Serialize;
use time::OffsetDateTime;

use crate::ingest::Ingest;

/// The loop of one department in one month, with its rates.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoopRow {
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
