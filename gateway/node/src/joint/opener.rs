//! 发起: opening cases. A pass reads the list entries stored after its cursor (pushed,
//! imported or relayed alike), and for each active entry opens one case per measure the
//! catalogue starts for it and per implementing department: the registered department
//! principals (#23) of the measure's category. The cases and the moved cursor commit together,
//! and a case already held (same subject × measure × department) is not opened again, so a
//! pass can be repeated after a crash and an entry that comes again opens nothing new. A
//! department registered after entries were read is caught up once (`catch_up`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use gateway_core::canonical::Sha256Digest;
use gateway_core::date::{format_date, today_in_china};
use gateway_core::interchange::{format_time, parse_time};
use gateway_core::measures::Catalogue;
use gateway_core::record::RecordType;
use gateway_store::cases::NewCase;
use gateway_store::{RecordQuery, StoredRecord};
use serde_json::Value;
use time::OffsetDateTime;

use crate::ingest::Ingest;

/// List entries read per step of a pass.
const PAGE: i64 = 1_000;

/// What one list entry says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// USCC, or SHA-256 (hex) of a natural person's normalised identity number.
    pub subject_key: String,
    pub subject_name: String,
    pub list_type: String,
    pub domain: String,
    /// 有效期至 (YYYY-MM-DD).
    pub valid_until: Option<String>,
}

/// Whether a list entry's version says the subject was removed from the list (移出).
pub fn removed(content: &Value) -> bool {
    content.get("status").and_then(Value::as_str) == Some("removed")
}

/// The subject of an active list entry, or `None` (not a list entry, removed, no subject).
pub fn listed(content: &Value) -> Option<Listed> {
    let text = |k: &str| content.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    if removed(content) {
        return None;
    }
    let subject_key = match (text("party_uscc"), text("party_id_no")) {
        (Some(uscc), _) => gateway_core::ident::normalize_code(uscc),
        (None, Some(id)) => Sha256Digest::of(gateway_core::ident::normalize_code(id).as_bytes()).to_hex(),
        (None, None) => return None,
    };
    Some(Listed {
        subject_key,
        subject_name: text("party_name")?.to_owned(),
        list_type: text("list_type")?.to_owned(),
        domain: text("domain").unwrap_or("").to_owned(),
        valid_until: text("valid_until").map(str::to_owned),
    })
}

/// The implementing departments of each category: the units of active department credentials.
pub type Departments = HashMap<String, BTreeSet<String>>;

/// What every case opened in one pass shares: when it was opened, and each measure's due
/// dates (the same for every entry of the pass, so worked out once, not per case).
#[derive(Debug)]
pub struct Opening {
    /// The node opening the cases: those of entries from elsewhere report upward.
    member: String,
    opened_at: String,
    opened_on: String,
    /// Per measure id: the response and feedback due dates (YYYY-MM-DD), `None` where the
    /// calendar of the year is not loaded.
    dues: HashMap<String, (Option<String>, Option<String>)>,
}

impl Opening {
    pub fn new(
        member: &str,
        catalogue: &Catalogue,
        calendar: &gateway_core::calendar::WorkingCalendar,
        now: OffsetDateTime,
    ) -> Self {
        let today = today_in_china(now);
        let dues = catalogue
            .measures
            .iter()
            .map(|m| {
                let response = calendar.add_working_days(today, m.response_days).ok();
                let feedback = response.and_then(|d| calendar.add_working_days(d, m.feedback_days).ok());
                (m.id.clone(), (response.map(format_date), feedback.map(format_date)))
            })
            .collect();
        Self { member: member.to_owned(), opened_at: format_time(now), opened_on: format_date(today), dues }
    }
}

/// The cases one stored list entry (its content parsed) opens, given the departments of each
/// category.
pub fn plan(
    record: &StoredRecord,
    content: &Value,
    catalogue: &Catalogue,
    departments: &Departments,
    opening: &Opening,
) -> Vec<NewCase> {
    let Some(entry) = listed(content) else { return Vec::new() };
    let mut cases = Vec::new();
    for measure in catalogue.started_by(&entry.list_type, &entry.domain) {
        let (response_due, feedback_due) = opening.dues.get(&measure.id).cloned().unwrap_or_default();
        for department in departments.get(&measure.implementing_category).into_iter().flatten() {
            cases.push(NewCase {
                case_id: uuid::Uuid::now_v7().to_string(),
                subject_key: entry.subject_key.clone(),
                subject_name: entry.subject_name.clone(),
                measure_id: measure.id.clone(),
                catalogue: catalogue.heading.id.clone(),
                department_uscc: department.clone(),
                entry_origin: record.origin.clone(),
                entry_record_id: record.record_id.to_string(),
                list_type: entry.list_type.clone(),
                opened_at: opening.opened_at.clone(),
                opened_on: opening.opened_on.clone(),
                response_due: response_due.clone(),
                feedback_due: feedback_due.clone(),
                valid_until: entry.valid_until.clone(),
                reports: record.origin != opening.member,
            });
        }
    }
    cases
}

/// One pass: opens the cases of every list entry stored after the cursor, asks for the
/// lifting (解除) of the cases whose entry has ended (removed, repaired, withdrawn, past its
/// 有效期至), reports the changes of cases opened from other nodes' entries upward, and reads
/// the reports that came from below (`report`). Returns the cases opened.
pub async fn run_once(ingest: &Arc<Ingest>, catalogue: &Catalogue, now: OffsetDateTime) -> anyhow::Result<u64> {
    let store = &ingest.store;
    // The implementing departments, once a pass: active department credentials, by category.
    let mut departments = Departments::new();
    for c in store.credentials().await? {
        let active = c.revoked_at.is_none() && c.expires_at.as_deref().and_then(parse_time).is_none_or(|t| t > now);
        if let (true, "department", Some(category), Some(unit)) = (active, c.role.as_str(), c.category, c.unit_uscc) {
            departments.entry(category).or_default().insert(unit);
        }
    }
    let opening = Opening::new(&ingest.member_id, catalogue, &ingest.calendar, now);
    let mut after = store.joint_cursor().await?;
    let mut opened = catch_up(store, catalogue, &departments, &opening, after).await?;
    loop {
        let q =
            RecordQuery { record_type: Some(RecordType::CreditListEntry), after, limit: PAGE, ..Default::default() };
        let page = store.query(&q).await?;
        let Some(last) = page.last().map(|r| r.seq) else { break };
        let (mut cases, mut removed) = (Vec::new(), Vec::new());
        for record in &page {
            let Ok(content) = serde_json::from_str::<Value>(&record.content) else { continue };
            if self::removed(&content) {
                removed.push(record.record_id.to_string());
            } else {
                cases.extend(plan(record, &content, catalogue, &departments, &opening));
            }
        }
        opened += store.open_cases(&cases, &removed, &opening.opened_at, Some(last)).await?;
        after = last;
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    let lifting = store.lift_ended_cases(&opening.opened_on, &opening.opened_at).await?;
    if opened > 0 || lifting > 0 {
        tracing::info!(opened, lifting, "joint reward-and-punishment cases opened and lifted");
    }
    super::report::report_cases(ingest, now).await?;
    super::report::read_reports(store, &ingest.member_id).await?;
    Ok(opened)
}

/// Opens the cases of departments registered since the last pass for the entries read before
/// it: the latest version of each entry read so far decides, and entries that have ended
/// (removed, repaired, withdrawn, expired, past 有效期至) open nothing. The cases and the
/// departments marked planned commit together, so each department is caught up once.
async fn catch_up(
    store: &gateway_store::Store,
    catalogue: &Catalogue,
    departments: &Departments,
    opening: &Opening,
    read_up_to: i64,
) -> anyhow::Result<u64> {
    let planned: HashSet<(String, String)> = store.planned_departments().await?.into_iter().collect();
    let new: Vec<(String, String)> = departments
        .iter()
        .flat_map(|(category, units)| units.iter().map(move |u| (u.clone(), category.clone())))
        .filter(|d| !planned.contains(d))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    let mut only_new = Departments::new();
    for (unit, category) in &new {
        only_new.entry(category.clone()).or_default().insert(unit.clone());
    }
    // The cases each entry's latest version opens (none for a removed one), by record id.
    let mut latest: HashMap<String, Vec<NewCase>> = HashMap::new();
    let mut after = 0;
    while after < read_up_to {
        let q =
            RecordQuery { record_type: Some(RecordType::CreditListEntry), after, limit: PAGE, ..Default::default() };
        let page = store.query(&q).await?;
        let Some(last) = page.last().map(|r| r.seq) else { break };
        for record in page.iter().filter(|r| r.seq <= read_up_to) {
            let Ok(content) = serde_json::from_str::<Value>(&record.content) else { continue };
            let cases = plan(record, &content, catalogue, &only_new, opening);
            latest.insert(record.record_id.to_string(), cases);
        }
        after = last;
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    let ids: Vec<String> = latest.keys().cloned().collect();
    let ended = store.ended_records(&ids).await?;
    let today = opening.opened_on.as_str();
    let cases: Vec<NewCase> = latest
        .into_iter()
        .filter(|(id, _)| !ended.contains(id))
        .flat_map(|(_, cases)| cases)
        .filter(|c| c.valid_until.as_deref().is_none_or(|v| v >= today))
        .collect();
    let opened = store.plan_departments(&cases, &new).await?;
    if opened > 0 {
        tracing::info!(opened, departments = new.len(), "joint cases opened for newly registered departments");
    }
    Ok(opened)
}

/// Runs a pass every `every` until the task is aborted; a failed pass is logged and retried.
pub async fn run_loop(ingest: Arc<Ingest>, catalogue: Arc<Catalogue>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = run_once(&ingest, &catalogue, OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %format!("{e:#}"), "opening joint cases failed; retrying");
        }
    }
}
