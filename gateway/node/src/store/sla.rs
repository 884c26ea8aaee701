//! What the SLA view reads: records with a publicity deadline in a window (a lookback to a
//! horizon), with their first publication at one local destination. The `records_deadline`
//! index keeps it to that window, not the whole table.

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// A record with a deadline, and when (if) a destination published it.
#[derive(Debug, Clone)]
pub struct SlaRow {
    pub record_id: String,
    pub record_type: String,
    pub origin: String,
    /// `YYYY-MM-DD`.
    pub deadline: String,
    /// RFC 3339 UTC, the first publication of any version at the destination.
    pub published_at: Option<String>,
}

impl Store {
    /// Records whose deadline is from `since` to `horizon` (`YYYY-MM-DD`, inclusive), earliest
    /// deadline first, with their first publication at `destination`.
    pub async fn sla_rows(
        &self,
        destination: &str,
        since: &str,
        horizon: &str,
        limit: i64,
    ) -> Result<Vec<SlaRow>, StoreError> {
        const SQL: &str = "SELECT r.record_id, MIN(r.record_type), MIN(r.origin), MIN(r.deadline), MIN(p.published_at) \
             FROM records r LEFT JOIN publications p ON p.record_id = r.record_id AND p.destination = $1 \
             WHERE r.deadline >= $2 AND r.deadline <= $3 \
             GROUP BY r.record_id ORDER BY MIN(r.deadline), r.record_id LIMIT $4";
        dispatch!(self, pool => {
            let rows = sqlx::query(SQL).bind(destination).bind(since).bind(horizon).bind(limit).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(SlaRow {
                        record_id: row.try_get(0)?,
                        record_type: row.try_get(1)?,
                        origin: row.try_get(2)?,
                        deadline: row.try_get(3)?,
                        published_at: row.try_get(4)?,
                    })
                })
                .collect()
        })
    }
}
