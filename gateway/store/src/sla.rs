//! Publication SLAs, kept incrementally (migration 0009, design §8). For each destination a
//! node watches, `sla_tracking` holds one row per record with a deadline that the destination
//! takes: a catch-up adds the records stored since the destination's cursor (`sla_cursors`), and
//! settling a delivery stamps `delivered_at` in the same transaction. Views, counts and alerts
//! read a deadline range of the `sla_tracking_window` index — never the records table — so they
//! cost the few weeks they show, whatever the store holds.

use sqlx::{QueryBuilder, Row};

use super::{Backend, Store, StoreError};

/// A tracked record, and when (if) the destination took it.
#[derive(Debug, Clone)]
pub struct SlaRow {
    pub record_id: String,
    pub record_type: String,
    pub origin: String,
    pub department_uscc: Option<String>,
    /// `YYYY-MM-DD`.
    pub deadline: String,
    /// RFC 3339 UTC: the first publication, or accepting receipt, of any version there.
    pub published_at: Option<String>,
}

/// What a destination takes, for the catch-up: the relay's routing rules as a filter.
#[derive(Debug, Clone, Default)]
pub struct SlaScope {
    /// What it takes, as groups of record types with the disclosure scopes it takes of them
    /// (from the relay's routes: its configured rules, then the defaults). Nothing listed:
    /// nothing taken.
    pub takes: Vec<(Vec<String>, Vec<String>)>,
    /// Only events about records from these origins, taken from elsewhere (a child is sent
    /// the events about records of its subtree, never those that came up from it).
    pub subtree: Option<Vec<String>>,
    /// Events count only when their target was sent there (the parent).
    pub sent_targets_only: bool,
}

/// Which tracked records a view reads.
#[derive(Debug, Clone)]
pub struct SlaWindow<'a> {
    pub destination: &'a str,
    /// Deadlines from `since` to `horizon` (`YYYY-MM-DD`, inclusive).
    pub since: &'a str,
    pub horizon: &'a str,
    pub department: Option<&'a str>,
    pub record_type: Option<&'a str>,
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

/// Records a catch-up step adds at most. Each step is one transaction under the write lock, so
/// envelopes and pushes wait for it: 5,000 rows hold them up for tens of milliseconds (20,000
/// held them for about 150 ms, a stall in every hop's latency every 10 s at 2,000 records/s).
const CATCH_UP_STEP: i64 = 5_000;
/// Delivered late: at or after the end of the deadline day in Beijing (16:00 UTC).
const LATE: &str = "delivered_at >= deadline || 'T16:00:00'";

/// `AND` the record types and disclosure scopes a destination takes.
fn push_takes<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, takes: &[(Vec<String>, Vec<String>)])
where
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    if takes.is_empty() {
        qb.push(" AND 1 = 0");
        return;
    }
    qb.push(" AND (");
    for (i, (record_types, disclosures)) in takes.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        for (j, (column, values)) in
            [("r.record_type", record_types), ("r.disclosure", disclosures)].into_iter().enumerate()
        {
            qb.push(if j == 0 { "(" } else { " AND " }).push(column).push(" IN (");
            let mut list = qb.separated(", ");
            for v in values {
                list.push_bind(v.as_str());
            }
            qb.push(")");
        }
        qb.push(")");
    }
    qb.push(")");
}

fn push_window<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, w: &SlaWindow<'_>)
where
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push(" FROM sla_tracking WHERE destination = ")
        .push_bind(w.destination)
        .push(" AND deadline >= ")
        .push_bind(w.since)
        .push(" AND deadline <= ")
        .push_bind(w.horizon);
    if let Some(d) = w.department {
        qb.push(" AND department_uscc = ").push_bind(d);
    }
    if let Some(t) = w.record_type {
        qb.push(" AND record_type = ").push_bind(t);
    }
}

impl Store {
    /// Adds to `destination`'s tracking the records stored since its cursor that it takes
    /// (`scope`), up to `seq` `until` (`None`: all), each with its delivery there if that was
    /// settled already. Runs in steps, each its own transaction under the write lock, so
    /// settlements and the catch-up never miss each other. Returns how many records were tracked.
    pub async fn track_sla(&self, destination: &str, scope: &SlaScope, until: Option<i64>) -> Result<u64, StoreError> {
        let mut added = 0;
        loop {
            let _turn = self.write_lock.lock().await;
            let (step, done) = dispatch!(self, pool => {
                let mut tx = pool.begin().await?;
                if matches!(self.backend, Backend::Postgres(_)) {
                    // Replicas sharing one database: a settle on another replica must not slip
                    // between this step's read of the deliveries and its commit.
                    sqlx::query(crate::horizon::ENTER_EXCLUSIVE).execute(&mut *tx).await?;
                }
                let position: i64 = sqlx::query("SELECT position FROM sla_cursors WHERE destination = $1")
                    .bind(destination)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(0);
                let stored: i64 =
                    sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM records").fetch_one(&mut *tx).await?.try_get(0)?;
                let last = until.map_or(stored, |u| u.min(stored));
                let upto = last.min(position + CATCH_UP_STEP);
                let mut step = 0;
                if upto > position {
                    let (verb, tail) = self.backend.skip_held();
                    let mut qb = QueryBuilder::new(format!(
                        "{verb} sla_tracking (destination, record_id, deadline, record_type, origin, department_uscc, \
                         delivered_at) SELECT "
                    ));
                    qb.push_bind(destination)
                        .push(
                            ", r.record_id, r.deadline, r.record_type, r.origin, r.department_uscc, COALESCE(\
                             (SELECT MIN(p.published_at) FROM publications p WHERE p.destination = ",
                        )
                        .push_bind(destination)
                        .push(
                            " AND p.record_id = r.record_id), (SELECT MIN(s.acknowledged_at) FROM sent_items s \
                             WHERE s.destination = ",
                        )
                        .push_bind(destination)
                        .push(" AND s.record_id = r.record_id)) FROM records r WHERE r.seq > ")
                        .push_bind(position)
                        .push(" AND r.seq <= ")
                        .push_bind(upto)
                        // Every version is offered; the first one held here (any version, when
                        // an earlier one was refused upstream) makes the row.
                        .push(" AND r.deadline IS NOT NULL AND COALESCE(r.intake, '') <> ")
                        .push_bind(destination)
                        .push(
                            " AND NOT EXISTS (SELECT 1 FROM envelopes e WHERE e.digest = r.envelope_digest AND e.sender = ",
                        )
                        .push_bind(destination)
                        .push(")");
                    push_takes(&mut qb, &scope.takes);
                    if scope.sent_targets_only {
                        // The relay sends an event up only if its target went there. Judged
                        // when the event is tracked: one tracked before its target was sent
                        // stays untracked. The background tracker mostly takes an event once
                        // the destination has settled it, so after its target; a view, or the
                        // grace period while the destination is down, may take it earlier.
                        qb.push(
                            " AND (r.target_record_id IS NULL OR EXISTS (SELECT 1 FROM sent_items t \
                             WHERE t.record_id = r.target_record_id AND t.destination = ",
                        )
                        .push_bind(destination)
                        .push("))");
                    }
                    if scope.subtree.as_ref().is_some_and(Vec::is_empty) {
                        // No subtree (the child left the registry): nothing goes there, and
                        // `IN ()` is no SQL on PostgreSQL.
                        qb.push(" AND 1 = 0");
                    } else if let Some(origins) = &scope.subtree {
                        for (clause, close) in [(" AND r.target_origin IN (", ")"), (" AND r.origin NOT IN (", ")")] {
                            qb.push(clause);
                            let mut list = qb.separated(", ");
                            for o in origins {
                                list.push_bind(o.as_str());
                            }
                            qb.push(close);
                        }
                    }
                    qb.push(tail);
                    step = qb.build().execute(&mut *tx).await?.rows_affected();
                    sqlx::query(
                        "INSERT INTO sla_cursors (destination, position) VALUES ($1, $2) \
                         ON CONFLICT (destination) DO UPDATE SET position = excluded.position",
                    )
                    .bind(destination)
                    .bind(upto)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                (step, upto >= last)
            });
            added += step;
            if done {
                return Ok(added);
            }
        }
    }

    /// The `rows` of `w`, earliest deadline first (latest first with `newest_first`: what has
    /// just turned at risk or breached).
    pub async fn sla_rows(
        &self,
        w: &SlaWindow<'_>,
        rows: SlaRows<'_>,
        newest_first: bool,
        limit: i64,
    ) -> Result<Vec<SlaRow>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT record_id, record_type, origin, department_uscc, deadline, delivered_at");
            push_window(&mut qb, w);
            match rows {
                SlaRows::All => {}
                SlaRows::Problems => {
                    qb.push(format!(" AND (delivered_at IS NULL OR {LATE})"));
                }
                SlaRows::AtRisk { today } => {
                    qb.push(" AND delivered_at IS NULL AND deadline >= ").push_bind(today);
                }
                SlaRows::Breached { today } => {
                    qb.push(" AND ((delivered_at IS NULL AND deadline < ").push_bind(today);
                    qb.push(format!(") OR {LATE})"));
                }
            }
            let order = if newest_first { "DESC" } else { "ASC" };
            qb.push(format!(" ORDER BY deadline {order}, record_id LIMIT ")).push_bind(limit);
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
            let mut qb = QueryBuilder::new(format!(
                "SELECT COALESCE(SUM(CASE WHEN delivered_at IS NOT NULL AND NOT ({LATE}) THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN delivered_at IS NULL AND deadline >= "
            ));
            qb.push_bind(today).push(" THEN 1 ELSE 0 END), 0), COUNT(*)");
            push_window(&mut qb, w);
            let row = qb.build().fetch_one(pool).await?;
            let on_time: i64 = row.try_get(0)?;
            let at_risk: i64 = row.try_get(1)?;
            let total: i64 = row.try_get(2)?;
            Ok(SlaCounts { on_time, at_risk, breached: total - on_time - at_risk })
        })
    }
}

/// Stamps the tracked records `ids` as delivered to `$destination` at `$at`, inside the
/// transaction `$tx` that records the delivery.
macro_rules! mark_delivered {
    ($tx:ident, $destination:expr, $ids:expr, $at:expr) => {
        for chunk in $ids.chunks(super::LOOKUP_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new("UPDATE sla_tracking SET delivered_at = ");
            qb.push_bind($at).push(" WHERE destination = ").push_bind($destination);
            qb.push(" AND delivered_at IS NULL AND record_id IN (");
            let mut list = qb.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            qb.push(")");
            qb.build().execute(&mut *$tx).await?;
        }
    };
}
pub(crate) use mark_delivered;
