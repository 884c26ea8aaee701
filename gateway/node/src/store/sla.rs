//! What the SLA views read: records with a publicity deadline in a window (a lookback to a
//! horizon), with their first delivery at one destination — a publication (the sink, a platform
//! adapter) or a receipt from a peer (the parent hop). The `records_deadline` index keeps every
//! query to that window, not the whole table; counts are taken in SQL.

use sqlx::{QueryBuilder, Row};

use super::{Backend, Store, StoreError};

/// A record with a deadline, and when (if) a destination took it.
#[derive(Debug, Clone)]
pub struct SlaRow {
    pub record_id: String,
    pub record_type: String,
    pub origin: String,
    pub department_uscc: Option<String>,
    /// `YYYY-MM-DD`.
    pub deadline: String,
    /// RFC 3339 UTC: the first publication or acknowledgement of any version at the destination.
    pub published_at: Option<String>,
}

/// Which records a view reads.
#[derive(Debug, Clone)]
pub struct SlaWindow<'a> {
    pub destination: &'a str,
    /// Deadlines from `since` to `horizon` (`YYYY-MM-DD`, inclusive).
    pub since: &'a str,
    pub horizon: &'a str,
    /// The disclosure scopes the destination takes (others never go there, so have no SLA there).
    pub disclosures: &'a [&'a str],
    pub department: Option<&'a str>,
    pub record_type: Option<&'a str>,
    /// The record types the destination takes at all (a platform its manifest's, a child only
    /// repairs); `None` for every type.
    pub types: Option<&'a [&'a str]>,
    /// Only events about records from these origins, taken from elsewhere (a child is sent
    /// the repairs about records of its subtree, never those that came up from it).
    pub subtree: Option<&'a [String]>,
}

/// Which rows of a window to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaRows<'a> {
    All,
    /// Not delivered by the deadline, or not yet.
    Problems,
    /// Not delivered, deadline `today` or later.
    AtRisk {
        today: &'a str,
    },
    /// Not delivered and the deadline before `today`, or delivered late.
    Breached {
        today: &'a str,
    },
}

/// State counts over a window, as of a day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaCounts {
    pub on_time: i64,
    pub at_risk: i64,
    pub breached: i64,
}

/// The records of a window, one row per record id, with their first delivery as `delivered`
/// (an RFC 3339 UTC string, compared as text with `<deadline>T16:00:00`: the end of the deadline
/// day in Beijing).
fn push_window<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, w: &SlaWindow<'_>)
where
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push(
        "SELECT r.record_id, MIN(r.record_type) AS record_type, MIN(r.origin) AS origin, \
         MIN(r.department_uscc) AS department_uscc, MIN(r.deadline) AS deadline, \
         MIN(COALESCE(p.published_at, s.acknowledged_at)) AS delivered \
         FROM records r LEFT JOIN publications p ON p.record_id = r.record_id AND p.destination = ",
    );
    qb.push_bind(w.destination)
        .push(" LEFT JOIN sent_items s ON s.record_id = r.record_id AND s.destination = ")
        .push_bind(w.destination)
        .push(" WHERE r.deadline >= ")
        .push_bind(w.since)
        .push(" AND r.deadline <= ")
        .push_bind(w.horizon)
        .push(" AND r.disclosure IN (");
    let mut list = qb.separated(", ");
    for d in w.disclosures {
        list.push_bind(*d);
    }
    qb.push(")");
    if let Some(d) = w.department {
        qb.push(" AND r.department_uscc = ").push_bind(d);
    }
    if let Some(t) = w.record_type {
        qb.push(" AND r.record_type = ").push_bind(t);
    }
    if let Some(origins) = w.subtree {
        qb.push(" AND r.target_origin IN (");
        let mut list = qb.separated(", ");
        for o in origins {
            list.push_bind(o.as_str());
        }
        qb.push(") AND r.origin NOT IN (");
        let mut list = qb.separated(", ");
        for o in origins {
            list.push_bind(o.as_str());
        }
        qb.push(")");
    }
    if let Some(types) = w.types {
        qb.push(" AND r.record_type IN (");
        let mut list = qb.separated(", ");
        for t in types {
            list.push_bind(*t);
        }
        qb.push(")");
    }
    qb.push(" GROUP BY r.record_id");
}

impl Store {
    /// The `rows` of `w`, earliest deadline first (latest first with `newest_first`: what has
    /// just turned at risk or breached).
    pub async fn sla_rows(
        &self,
        w: &SlaWindow<'_>,
        rows: SlaRows<'_>,
        newest_first: bool,
        limit: i64,
    ) -> Result<Vec<SlaRow>, StoreError> {
        const DELIVERED: &str = "MIN(COALESCE(p.published_at, s.acknowledged_at))";
        const LATE: &str = "MIN(COALESCE(p.published_at, s.acknowledged_at)) >= MIN(r.deadline) || 'T16:00:00'";
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new("");
            push_window(&mut qb, w);
            match rows {
                SlaRows::All => {}
                SlaRows::Problems => {
                    qb.push(format!(" HAVING {DELIVERED} IS NULL OR {LATE}"));
                }
                SlaRows::AtRisk { today } => {
                    qb.push(format!(" HAVING {DELIVERED} IS NULL AND MIN(r.deadline) >= ")).push_bind(today);
                }
                SlaRows::Breached { today } => {
                    qb.push(format!(" HAVING ({DELIVERED} IS NULL AND MIN(r.deadline) < ")).push_bind(today);
                    qb.push(format!(") OR {LATE}"));
                }
            }
            let order = if newest_first { "DESC" } else { "ASC" };
            qb.push(format!(" ORDER BY MIN(r.deadline) {order}, r.record_id LIMIT ")).push_bind(limit);
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(SlaRow {
                        record_id: row.try_get(0)?,
                        record_type: row.try_get(1)?,
                        origin: row.try_get(2)?,
                        department_uscc: row.try_get(3)?,
                        deadline: row.try_get(4)?,
                        published_at: row.try_get(5)?,
                    })
                })
                .collect()
        })
    }

    /// How many records of `w` are on time, at risk and breached as of `today` (`YYYY-MM-DD`).
    pub async fn sla_counts(&self, w: &SlaWindow<'_>, today: &str) -> Result<SlaCounts, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT COALESCE(SUM(CASE WHEN delivered IS NOT NULL AND delivered < deadline || 'T16:00:00' THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN delivered IS NULL AND deadline >= ",
            );
            qb.push_bind(today).push(
                " THEN 1 ELSE 0 END), 0), COUNT(*) FROM (",
            );
            push_window(&mut qb, w);
            qb.push(") t");
            let row = qb.build().fetch_one(pool).await?;
            let on_time: i64 = row.try_get(0)?;
            let at_risk: i64 = row.try_get(1)?;
            let total: i64 = row.try_get(2)?;
            Ok(SlaCounts { on_time, at_risk, breached: total - on_time - at_risk })
        })
    }
}
