//! Publication SLAs at a node (design §8): for each record with a deadline (双公示 and list
//! entries: 7 working days after the decision; credit repairs: 3), where it stands at each
//! destination that takes it — the publication sink, a platform adapter, the parent (the hop
//! up: delivered when the parent's accepting receipt came back) or a child (repairs about its
//! subtree) — on time, at risk, breached, as of a day that is an argument, so that tests and
//! what-if views move it by hand. Tracking is incremental (`store::sla`): each view first adds
//! what was stored since its last look (a scheduled one only as far as the background tracker,
//! see [`Background`]), then reads a deadline range of the tracking index.

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_core::date::parse_date;
use gateway_core::sla::{SlaPolicy, SlaState, state, working_days_between};
use gateway_store::StoreError;
use gateway_store::sla::{SlaRows, SlaScope, SlaWindow};
use serde::Serialize;
use time::Date;

use crate::ingest::Ingest;
use crate::interchange::Identity;
use crate::relay::{Destination, Link, PUBLICATION, Routes};

/// One record's SLA at the destination.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlaRecord {
    pub record_id: String,
    pub record_type: String,
    pub origin: String,
    /// 数据来源单位 (USCC), when the record names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department_uscc: Option<String>,
    /// 公示截止日: the 7th working day after the decision.
    pub deadline: String,
    /// When the destination published or acknowledged it (RFC 3339 UTC).
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
    /// Records in each state in the whole window (not only those listed).
    pub counts: BTreeMap<String, i64>,
    pub records: Vec<SlaRecord>,
}

/// Days back a view looks by default: older deadlines are history, asked for with `since`.
pub const LOOKBACK_DAYS: i64 = 31;

/// What an SLA view shows.
#[derive(Debug, Clone)]
pub struct SlaQuery<'a> {
    /// The publication sink, `adapter:<platform>`, or a peer member id (the hop to it).
    pub destination: &'a str,
    pub today: Date,
    /// Deadlines from this day; default [`LOOKBACK_DAYS`] before `today`.
    pub since: Option<Date>,
    pub policy: SlaPolicy,
    /// Only records in this state.
    pub only: Option<SlaState>,
    /// Only records at risk or breached.
    pub problems: bool,
    /// List the latest deadlines first (what has just turned at risk or breached).
    pub newest_first: bool,
    pub department: Option<&'a str>,
    pub record_type: Option<&'a str>,
    pub limit: i64,
    /// Asked on a schedule (`/metrics`, alerts): track only as far as the background tracker
    /// does (see [`Background`]), not every record stored.
    pub scheduled: bool,
}

impl<'a> SlaQuery<'a> {
    pub fn new(destination: &'a str, today: Date) -> Self {
        Self {
            destination,
            today,
            since: None,
            policy: SlaPolicy::default(),
            only: None,
            problems: false,
            newest_first: false,
            department: None,
            record_type: None,
            limit: 500,
            scheduled: false,
        }
    }
}

/// What SLA views and the background tracker work from: the push path's store and calendar,
/// the relay's destinations and what each takes, the registry (a child's subtree), and how far
/// the tracker reaches.
#[derive(Debug)]
pub struct Sla {
    pub ingest: Arc<Ingest>,
    pub routes: Arc<Routes>,
    /// The federation identity, when the node has one.
    pub identity: Option<Identity>,
    pub background: Background,
}

impl Sla {
    pub fn new(ingest: Arc<Ingest>, routes: Arc<Routes>, identity: Option<Identity>) -> Self {
        Self { ingest, routes, identity, background: Background::default() }
    }

    /// The destinations whose SLA this node watches: every destination of the relay (the
    /// parent, the children — repairs must reach every holder within 3 working days —, the
    /// publication sink, and every platform delivered to through an adapter).
    pub fn destinations(&self) -> Vec<String> {
        self.routes.destinations().iter().map(|d| d.name.clone()).collect()
    }

    /// Whether `destination` is one this node watches (views of any other name are refused,
    /// so that no request makes the node track a destination it never sends to). The
    /// publication sink is always watched: it is the default view, and a node whose sink is
    /// not configured shows what it has not published.
    pub fn watched(&self, destination: &str) -> bool {
        destination == PUBLICATION || self.routes.get(destination).is_some()
    }

    /// What `destination` takes, as the relay's routes say: the record types and disclosure
    /// scopes its rules let through (configured `[[relay.routes]]` first, then the defaults);
    /// a child only events, about records of its subtree that did not come up from it; the
    /// parent an event only if its target went there.
    pub fn scope(&self, destination: &str) -> SlaScope {
        // A name this node does not send to (the sink when none is configured; the API refuses
        // other names) is judged as a destination of its kind would be under the rules.
        let unlisted;
        let dest = match self.routes.get(destination) {
            Some(dest) => dest,
            None => {
                unlisted = Destination::unlisted(destination);
                &unlisted
            }
        };
        let child = dest.link == Link::Child;
        let strings = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        let takes = self
            .routes
            .takes(dest, |t| !child || t.is_event())
            .into_iter()
            .map(|(types, scopes)| (strings(types.iter().map(|t| t.as_str()).collect()), strings(scopes)))
            .collect();
        let mut scope = SlaScope { takes, ..SlaScope::default() };
        match dest.link {
            Link::Parent => scope.sent_targets_only = true,
            Link::Child => {
                let subtree = self.identity.as_ref().and_then(|i| i.registry.read().ok()).map(|r| {
                    r.body
                        .members
                        .iter()
                        .filter(|m| r.is_ancestor_or_self(destination, &m.member_id))
                        .map(|m| m.member_id.clone())
                        .collect()
                });
                scope.subtree = Some(subtree.unwrap_or_default());
            }
            Link::Publication | Link::Adapter => {}
        }
        scope
    }
}

/// How long the background catch-up leaves a record its destination has not settled untracked.
/// A record tracked after its delivery settled goes into the window index once, with its
/// delivery time; one tracked before is stamped at settlement, which moves its index entry (a
/// rewrite of scattered index pages in every settling commit while a relay works through a
/// backlog). The API's and the dashboard's views track everything before they read; views
/// asked on a schedule follow the tracker (see [`Background`]).
pub const UNSETTLED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// How far the background tracker takes each destination, shared with the views asked on a
/// schedule. `/metrics` is scraped every few seconds and alerts are checked every minute: if
/// they tracked everything stored, each would again track the records in flight undelivered,
/// and a backlog's settlements would stamp and move them all. While the tracker runs, they
/// follow it (counts lag by at most the grace and one tick); without it (tests, one-off
/// commands) every view tracks everything, as the API's and the dashboard's always do.
#[derive(Debug, Default)]
pub struct Background {
    /// The last `seq` stored [`UNSETTLED_GRACE`] ago; `None` until the tracker's first tick.
    settled_or: std::sync::Mutex<Option<i64>>,
}

impl Background {
    /// How far to track `destination`: what it has settled (its outbox cursor) or what was
    /// stored a grace period ago, whichever is further; `None` (everything) while no tracker runs.
    pub async fn until(&self, store: &gateway_store::Store, destination: &str) -> Result<Option<i64>, StoreError> {
        let Some(settled_or) = *self.settled_or.lock().unwrap_or_else(std::sync::PoisonError::into_inner) else {
            return Ok(None);
        };
        Ok(Some(settled_or.max(store.outbox_position(destination).await?)))
    }

    /// Records that the tracker now takes each destination to `settled_or` or its cursor.
    pub fn set(&self, settled_or: i64) {
        *self.settled_or.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(settled_or);
    }
}

/// Brings every watched destination's tracking as far as [`Background::until`] says.
/// A destination that fails is logged and the others are still tracked; the first error is
/// returned after all were tried.
pub async fn track_all(sla: &Sla) -> Result<u64, StoreError> {
    let store = &sla.ingest.store;
    let mut added = 0;
    let mut failed = None;
    for d in sla.destinations() {
        let tracked = match sla.background.until(store, &d).await {
            Ok(until) => store.track_sla(&d, &sla.scope(&d), until).await,
            Err(e) => Err(e),
        };
        match tracked {
            Ok(n) => added += n,
            Err(e) => {
                tracing::warn!(destination = %d, error = %e, "SLA tracking failed for one destination");
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(added), Err)
}

/// Tracks records every `every` until the process ends: those settled at their destination,
/// and those stored at least [`UNSETTLED_GRACE`] ago.
pub async fn track_loop(sla: Arc<Sla>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut grace = GraceCutoff::default();
    loop {
        tick.tick().await;
        match sla.ingest.store.last_seq().await {
            // Timed after the read (a tick's own time is when it was due, maybe long before).
            Ok(seq) => grace.observe(tokio::time::Instant::now(), seq),
            Err(e) => tracing::warn!(error = %e, "SLA tracking could not read the store; retrying"),
        }
        sla.background.set(grace.cutoff);
        if let Err(e) = track_all(&sla).await {
            tracing::warn!(error = %e, "SLA tracking failed; retrying");
        }
    }
}

/// The last `seq` stored at least [`UNSETTLED_GRACE`] ago, from the last `seq` seen at each tick.
#[derive(Debug, Default)]
struct GraceCutoff {
    /// (when, the last `seq` then) younger than the grace, oldest first.
    seen: std::collections::VecDeque<(tokio::time::Instant, i64)>,
    cutoff: i64,
}

impl GraceCutoff {
    fn observe(&mut self, now: tokio::time::Instant, last_seq: i64) {
        self.seen.push_back((now, last_seq));
        while let Some(&(at, seq)) = self.seen.front()
            && now.duration_since(at) >= UNSETTLED_GRACE
        {
            self.cutoff = seq;
            self.seen.pop_front();
        }
    }
}

/// The SLA of records due from `since` to the at-risk horizon at the destination, as of `today`.
pub async fn view(sla: &Sla, q: &SlaQuery<'_>) -> Result<SlaView, StoreError> {
    let (store, calendar) = (&sla.ingest.store, &sla.ingest.calendar);
    use gateway_core::date::format_date;
    let today = q.today;
    let horizon = format_date(horizon(calendar, today, q.policy));
    let since = q.since.unwrap_or(today - time::Duration::days(LOOKBACK_DAYS));
    let since_text = format_date(since);
    let today_text = format_date(today);
    let until = if q.scheduled { sla.background.until(store, q.destination).await? } else { None };
    store.track_sla(q.destination, &sla.scope(q.destination), until).await?;
    let window = SlaWindow {
        destination: q.destination,
        since: &since_text,
        horizon: &horizon,
        department: q.department,
        record_type: q.record_type,
    };
    let c = store.sla_counts(&window, &today_text).await?;
    let counts = BTreeMap::from([
        ("on_time".to_owned(), c.on_time),
        ("at_risk".to_owned(), c.at_risk),
        ("breached".to_owned(), c.breached),
    ]);
    let rows = match (q.only, q.problems) {
        (Some(SlaState::AtRisk), _) => SlaRows::AtRisk { today: &today_text },
        (Some(SlaState::Breached), _) => SlaRows::Breached { today: &today_text },
        (_, true) => SlaRows::Problems,
        _ => SlaRows::All,
    };
    let rows = store.sla_rows(&window, rows, q.newest_first, q.limit).await?;
    let mut records = Vec::new();
    for r in rows {
        let Some(deadline) = parse_date(&r.deadline) else { continue };
        let published_on = r.published_at.as_deref().and_then(gateway_core::date::china_date_of);
        let s = state(calendar, Ok(deadline), published_on, today, q.policy);
        let problem = matches!(s, SlaState::AtRisk | SlaState::Breached);
        if q.only.is_none_or(|o| o == s) && (problem || !q.problems) {
            records.push(SlaRecord {
                trail: format!("/api/v1/records/{}/trail", r.record_id),
                record_id: r.record_id,
                record_type: r.record_type,
                origin: r.origin,
                department_uscc: r.department_uscc,
                deadline: r.deadline,
                published_at: r.published_at,
                state: s,
            });
        }
    }
    Ok(SlaView {
        destination: q.destination.to_owned(),
        today: format_date(today),
        since: since_text,
        at_risk_working_days: q.policy.at_risk_working_days,
        counts,
        records,
    })
}

/// The last day whose deadline is at risk today: a record due later still has more than the
/// margin of working days left. Past the loaded calendar, the last known day.
fn horizon(calendar: &gateway_core::calendar::WorkingCalendar, today: Date, policy: SlaPolicy) -> Date {
    let mut day = today;
    for _ in 0..60 {
        let Some(next) = day.next_day() else { break };
        match working_days_between(calendar, today, next) {
            Ok(n) if n <= policy.at_risk_working_days => day = next,
            _ => break,
        }
    }
    day
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_cutoff_is_what_was_stored_a_grace_period_ago() {
        let start = tokio::time::Instant::now();
        let at = |secs| start + std::time::Duration::from_secs(secs);
        let mut grace = GraceCutoff::default();
        grace.observe(at(0), 100);
        grace.observe(at(10), 250);
        grace.observe(at(20), 400);
        assert_eq!(grace.cutoff, 0, "nothing is a grace period old yet");
        grace.observe(at(30), 500);
        assert_eq!(grace.cutoff, 100, "stored by 0 s, seen at 30 s");
        grace.observe(at(45), 600);
        assert_eq!(grace.cutoff, 250, "10 s is the latest look 30 s before 45 s");
        assert_eq!(grace.seen.len(), 3, "older looks are dropped");
    }
}
