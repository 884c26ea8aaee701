//! Data-quality counters (migration 0009): per department and month, bumped in the transaction
//! that stores a batch (submissions) or settles the publication sink (publications), so the
//! quality page and its exports read a month's few rows, never the records.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// Counters for one department and month.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthCounts {
    pub department_name: String,
    pub submitted: i64,
    pub accepted: i64,
    pub fields_filled: i64,
    pub fields_expected: i64,
    pub reported_late: i64,
    pub published: i64,
    pub published_on_time: i64,
}

/// What a batch (or a settlement) adds to the counters.
#[derive(Debug, Clone, Default)]
pub struct QualityCounts {
    /// By `(department_uscc, period)`.
    pub months: HashMap<(String, String), MonthCounts>,
    /// Rejections by `(department_uscc, period, rule)`.
    pub reasons: HashMap<(String, String, String), i64>,
    /// `day → (accepted, rejected)`.
    pub days: HashMap<String, (i64, i64)>,
}

impl QualityCounts {
    pub fn is_empty(&self) -> bool {
        self.months.is_empty() && self.reasons.is_empty() && self.days.is_empty()
    }

    /// The counters of one department and month, created empty.
    pub fn month(&mut self, department: &str, name: &str, period: &str) -> &mut MonthCounts {
        let m = self.months.entry((department.to_owned(), period.to_owned())).or_default();
        if m.department_name.is_empty() {
            name.clone_into(&mut m.department_name);
        }
        m
    }

    pub fn merge(&mut self, other: &QualityCounts) {
        for ((d, p), c) in &other.months {
            let m = self.month(d, &c.department_name, p);
            m.submitted += c.submitted;
            m.accepted += c.accepted;
            m.fields_filled += c.fields_filled;
            m.fields_expected += c.fields_expected;
            m.reported_late += c.reported_late;
            m.published += c.published;
            m.published_on_time += c.published_on_time;
        }
        for (k, n) in &other.reasons {
            *self.reasons.entry(k.clone()).or_default() += n;
        }
        for (day, (a, r)) in &other.days {
            let e = self.days.entry(day.clone()).or_default();
            e.0 += a;
            e.1 += r;
        }
    }
}

/// Adds `counts` to the counters inside the transaction `$tx`, each table's rows in key order:
/// PostgreSQL commits push groups side by side, and two groups locking the same counter rows in
/// different orders would deadlock.
macro_rules! add_quality {
    ($tx:ident, $counts:expr) => {{
        let counts: &$crate::QualityCounts = $counts;
        let mut months: Vec<_> = counts.months.iter().collect();
        months.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for chunk in months.chunks(200) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO quality_monthly (department_uscc, period, department_name, submitted, accepted, \
                 fields_filled, fields_expected, reported_late, published, published_on_time) ",
            );
            qb.push_values(chunk, |mut b, ((d, p), c)| {
                b.push_bind(d.as_str())
                    .push_bind(p.as_str())
                    .push_bind(c.department_name.as_str())
                    .push_bind(c.submitted)
                    .push_bind(c.accepted)
                    .push_bind(c.fields_filled)
                    .push_bind(c.fields_expected)
                    .push_bind(c.reported_late)
                    .push_bind(c.published)
                    .push_bind(c.published_on_time);
            });
            qb.push(
                " ON CONFLICT (department_uscc, period) DO UPDATE SET \
                 department_name = CASE WHEN excluded.department_name <> '' THEN excluded.department_name \
                 ELSE quality_monthly.department_name END, \
                 submitted = quality_monthly.submitted + excluded.submitted, \
                 accepted = quality_monthly.accepted + excluded.accepted, \
                 fields_filled = quality_monthly.fields_filled + excluded.fields_filled, \
                 fields_expected = quality_monthly.fields_expected + excluded.fields_expected, \
                 reported_late = quality_monthly.reported_late + excluded.reported_late, \
                 published = quality_monthly.published + excluded.published, \
                 published_on_time = quality_monthly.published_on_time + excluded.published_on_time",
            );
            qb.build().execute(&mut *$tx).await?;
        }
        let mut reasons: Vec<_> = counts.reasons.iter().collect();
        reasons.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for chunk in reasons.chunks(200) {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO quality_reasons (department_uscc, period, rule, count) ");
            qb.push_values(chunk, |mut b, ((d, p, r), n)| {
                b.push_bind(d.as_str()).push_bind(p.as_str()).push_bind(r.as_str()).push_bind(**n);
            });
            qb.push(" ON CONFLICT (department_uscc, period, rule) DO UPDATE SET count = quality_reasons.count + excluded.count");
            qb.build().execute(&mut *$tx).await?;
        }
        let mut days: Vec<_> = counts.days.iter().collect();
        days.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for chunk in days.chunks(200) {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO quality_daily (day, accepted, rejected) ");
            qb.push_values(chunk, |mut b, (day, (a, r))| {
                b.push_bind(day.as_str()).push_bind(*a).push_bind(*r);
            });
            qb.push(
                " ON CONFLICT (day) DO UPDATE SET accepted = quality_daily.accepted + excluded.accepted, \
                 rejected = quality_daily.rejected + excluded.rejected",
            );
            qb.build().execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use add_quality;

/// Counts the sink's first publications of records (`seqs`, published on the Beijing day
/// `$on`) toward timeliness (及时率) inside the transaction `$tx`: a record's first version,
/// published on or before its deadline, is on time.
macro_rules! count_publications {
    ($tx:ident, $seqs:expr, $on:expr) => {{
        let mut counts = $crate::QualityCounts::default();
        for chunk in $seqs.chunks(super::LOOKUP_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT COALESCE(department_uscc, ''), deadline, received_at FROM records WHERE version = 1 AND seq IN (",
            );
            let mut list = qb.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *$tx).await? {
                let department: String = sqlx::Row::try_get(&row, 0)?;
                let deadline: Option<String> = sqlx::Row::try_get(&row, 1)?;
                let received_at: String = sqlx::Row::try_get(&row, 2)?;
                let m = counts.month(&department, "", &$crate::quality::period_of(&received_at));
                m.published += 1;
                if deadline.is_none_or(|d| $on <= d.as_str()) {
                    m.published_on_time += 1;
                }
            }
        }
        counts
    }};
}
pub(crate) use count_publications;

/// The 所属期 (`YYYY-MM`, Beijing time) of an RFC 3339 UTC timestamp.
pub fn period_of(timestamp: &str) -> String {
    gateway_core::date::china_date_of(timestamp)
        .map(|d| format!("{:04}-{:02}", d.year(), u8::from(d.month())))
        .unwrap_or_default()
}

/// A month's counters and rejection reasons, as stored.
#[derive(Debug, Clone, Default)]
pub struct QualityMonth {
    /// By department USCC.
    pub departments: BTreeMap<String, MonthCounts>,
    /// `(department_uscc, rule, count)`, most frequent first.
    pub reasons: Vec<(String, String, i64)>,
}

impl Store {
    /// The counters of `period` (`YYYY-MM`).
    pub async fn quality_month(&self, period: &str) -> Result<QualityMonth, StoreError> {
        dispatch!(self, pool => {
            let mut out = QualityMonth::default();
            let rows = sqlx::query(
                "SELECT department_uscc, department_name, submitted, accepted, fields_filled, fields_expected, \
                 reported_late, published, published_on_time FROM quality_monthly WHERE period = $1",
            )
            .bind(period)
            .fetch_all(pool)
            .await?;
            for row in rows {
                out.departments.insert(row.try_get(0)?, MonthCounts {
                    department_name: row.try_get(1)?,
                    submitted: row.try_get(2)?,
                    accepted: row.try_get(3)?,
                    fields_filled: row.try_get(4)?,
                    fields_expected: row.try_get(5)?,
                    reported_late: row.try_get(6)?,
                    published: row.try_get(7)?,
                    published_on_time: row.try_get(8)?,
                });
            }
            let rows = sqlx::query(
                "SELECT department_uscc, rule, count FROM quality_reasons WHERE period = $1 \
                 ORDER BY count DESC, rule, department_uscc",
            )
            .bind(period)
            .fetch_all(pool)
            .await?;
            for row in rows {
                out.reasons.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            Ok(out)
        })
    }

    /// Accepted and rejected submissions per day from `since` (`YYYY-MM-DD`), oldest first.
    pub async fn quality_days(&self, since: &str) -> Result<Vec<(String, i64, i64)>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query("SELECT day, accepted, rejected FROM quality_daily WHERE day >= $1 ORDER BY day")
                .bind(since)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
        })
    }
}
