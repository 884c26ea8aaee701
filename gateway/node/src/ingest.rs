//! The push path: parse a batch, validate every record (in parallel), store the good ones in
//! one transaction, and answer per record, in order.
//!
//! **Invariant:** a bad record never stops the good ones; an outcome is returned only after
//! the store has committed.

use std::sync::Arc;

use gateway_core::calendar::WorkingCalendar;
use gateway_core::date::{format_date, today_in_china};
use gateway_core::quality::Observation;
use gateway_core::record::{FieldError, RecordValidator, ValidRecord};
use gateway_store::{Incoming, QualityCounts, Store, Stored};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::UnitScope;
use crate::config::Limits;
use crate::error::ServiceError;

/// The push path's state: what checking and storing a batch needs, and nothing more. The
/// interchange, the adapters' transports and the jobs push through it too.
#[derive(Debug)]
pub struct Ingest {
    pub member_id: String,
    pub validator: RecordValidator,
    pub calendar: WorkingCalendar,
    /// Shared with the services that read what the push path stores (evaluations, SLA views).
    pub store: Arc<Store>,
    pub limits: Limits,
    /// The push bodies being read or parsed, in KiB (`limits.max_body_bytes_in_flight`).
    pub bodies_in_flight: Arc<tokio::sync::Semaphore>,
}

impl Ingest {
    /// The semaphore of `limits.max_body_bytes_in_flight`, counted in KiB.
    pub fn body_budget(limits: &Limits) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(limits.max_body_bytes_in_flight.div_ceil(1024)))
    }
}

/// A checked item that holds a record on its way to the store.
pub trait CarriesRecord {
    fn incoming(&self) -> &Incoming;
}

impl CarriesRecord for Incoming {
    fn incoming(&self) -> &Incoming {
        self
    }
}

impl CarriesRecord for gateway_store::RelayedItem {
    fn incoming(&self) -> &Incoming {
        &self.incoming
    }
}

/// What happened to one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored as a new record.
    Accepted,
    /// Identical content was already stored; nothing changed.
    Duplicate,
    /// Same natural key, changed content: stored as the next version.
    NewVersion,
    /// Not stored; `errors` says why.
    Rejected,
}

/// Whether the publicity deadline could be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeadlineStatus {
    /// `publicity_deadline` is on the loaded calendar (7 working days after the decision date;
    /// 3 for a credit repair).
    OnCalendar,
    /// The count runs into a year whose official calendar is not loaded; never guessed.
    CalendarUnknown,
}

/// One record's outcome.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct RecordOutcome {
    /// Position of the record in the batch (from 0).
    pub index: usize,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// SHA-256 (hex) of the RFC 8785 canonical content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// 公示截止日: the 7th working day after the decision date (双公示 and list entries); for a
    /// credit repair, the 3rd working day after its decision, by which every holder must have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publicity_deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_status: Option<DeadlineStatus>,
    /// Every problem found, when rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// The answer to `POST /api/v1/records`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchResult {
    pub received: usize,
    pub accepted: usize,
    pub duplicate: usize,
    pub new_version: usize,
    pub rejected: usize,
    /// One per record, in batch order.
    pub outcomes: Vec<RecordOutcome>,
}

/// A record (or relayed item) that passed validation, or why it did not.
pub type Checked<T = Incoming> = Result<T, Vec<FieldError>>;

impl Ingest {
    /// Handles one batch (the raw request body) that the node itself sends: its jobs, the
    /// benchmarks. Callers from outside go through [`Ingest::push_as`].
    pub async fn push(self: &Arc<Self>, body: bytes::Bytes, now: OffsetDateTime) -> Result<BatchResult, ServiceError> {
        self.push_as(body, now, &UnitScope::Any).await
    }

    /// Handles a batch of records only a gateway makes (`joint_case_report`, from its cases),
    /// which [`Ingest::push_as`] and the adapters refuse: a department cannot report its own
    /// case as answered.
    pub async fn push_node_made(
        self: &Arc<Self>,
        body: bytes::Bytes,
        now: OffsetDateTime,
    ) -> Result<BatchResult, ServiceError> {
        self.push_batch(body, now, &UnitScope::Any, true).await
    }

    /// Handles one pushed batch for a caller who may report for the units of `scope`: a record
    /// of another unit is rejected (`auth.unit_not_allowed`), and the rest are kept.
    pub async fn push_as(
        self: &Arc<Self>,
        body: bytes::Bytes,
        now: OffsetDateTime,
        scope: &UnitScope,
    ) -> Result<BatchResult, ServiceError> {
        self.push_batch(body, now, scope, false).await
    }

    /// Parses, checks and stores one batch; only the node's own (`node_made`) may hold records
    /// that only a gateway makes.
    async fn push_batch(
        self: &Arc<Self>,
        body: bytes::Bytes,
        now: OffsetDateTime,
        scope: &UnitScope,
        node_made: bool,
    ) -> Result<BatchResult, ServiceError> {
        let this = Arc::clone(self);
        let today = today_in_china(now);
        let mut checked = tokio::task::spawn_blocking(move || this.check_batch(&body, today))
            .await
            .map_err(|e| ServiceError::internal(&e))??;
        if !node_made {
            refuse_node_made(&mut checked);
        }
        self.store_checked(checked, now, scope).await
    }

    /// Handles rows that came through a platform adapter: each is checked against the platform
    /// schema, translated, then checked and stored like a pushed record. Errors about a field
    /// that came from a column name the column too, so the platform's people can find it.
    /// The adapter acts for the units of `scope` (its configured units, or the uploader's).
    /// `sender` is the unit (统一社会信用代码, name) the rows come from when a row names none
    /// (an import's reporting unit); by default the one unit of `scope`, if it has one.
    pub async fn push_rows(
        self: &Arc<Self>,
        platform: &str,
        dataset: Arc<gateway_core::adapter::Dataset>,
        rows: Vec<gateway_core::adapter::Row>,
        now: OffsetDateTime,
        scope: &UnitScope,
        sender: Option<(&str, &str)>,
    ) -> Result<BatchResult, ServiceError> {
        let intake = crate::relay::adapter_destination(platform);
        let this = Arc::clone(self);
        let today = today_in_china(now);
        let checked = tokio::task::spawn_blocking(move || {
            rows.into_par_iter()
                .map(|row| {
                    let canonical = match dataset.ingest(row) {
                        Ok(canonical) => canonical,
                        Err(errors) => return (Err(errors), Observation::default()),
                    };
                    let observed = this.validator.observe(&canonical);
                    let checked = this
                        .validator
                        .check(canonical, today)
                        .map(|record| Incoming { intake: Some(intake.clone()), ..this.incoming(record) })
                        .map_err(|errors| {
                            errors.into_iter().map(|e| crate::adapters::name_column(&dataset, e)).collect::<Vec<_>>()
                        });
                    (checked, observed)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ServiceError::internal(&e))?;
        let mut checked = checked;
        refuse_node_made(&mut checked);
        // A row that names no department (or one that cannot be read) is still the sender's
        // submission: its rejection counts against that unit's data quality, not against no one.
        let only_unit = match scope {
            UnitScope::Only(units) if units.len() == 1 => Some((units[0].as_str(), "")),
            _ => None,
        };
        if let Some((uscc, name)) = sender.or(only_unit) {
            for (_, observed) in checked.iter_mut().filter(|(_, o)| o.department_uscc.is_empty()) {
                observed.department_uscc = gateway_core::ident::normalize_code(uscc);
                name.clone_into(&mut observed.department_name);
            }
        }
        self.store_checked(checked, now, scope).await
    }

    /// Stores the records that passed, then answers for every one, in order. Every record, with
    /// what it says about its department's data quality, counts toward the quality ratios.
    async fn store_checked(
        self: &Arc<Self>,
        observed: Vec<(Checked, Observation)>,
        now: OffsetDateTime,
        scope: &UnitScope,
    ) -> Result<BatchResult, ServiceError> {
        let (mut checked, observations): (Vec<Checked>, Vec<Observation>) = observed.into_iter().unzip();
        require_units(&mut checked, scope);
        self.require_targets(&mut checked, scope).await?;
        let quality = quality_counts(&checked, &observations, today_in_china(now));
        // The records move into the store; their outcomes need only these few facts.
        let mut incoming = Vec::with_capacity(checked.len());
        let verdicts: Vec<Result<Summary, Vec<FieldError>>> = checked
            .into_iter()
            .map(|c| {
                c.map(|inc| {
                    let summary = Summary::of(&inc);
                    incoming.push(inc);
                    summary
                })
            })
            .collect();
        // A department never adds a version to another unit's record, whatever its own fields
        // say: the store judges that against the record's first version, in its transaction.
        let owners = match scope {
            UnitScope::Any => None,
            UnitScope::Only(units) => Some(units.clone()),
        };
        let mut stored = self
            .store
            .ingest_scoped(&self.member_id, owners, incoming, quality, now)
            .await
            .map_err(|e| ServiceError::internal(&e))?
            .into_iter();
        let mut result = BatchResult {
            received: verdicts.len(),
            accepted: 0,
            duplicate: 0,
            new_version: 0,
            rejected: 0,
            outcomes: Vec::with_capacity(verdicts.len()),
        };
        for (index, verdict) in verdicts.into_iter().enumerate() {
            let outcome = match verdict {
                Err(errors) => RecordOutcome::rejected(index, errors),
                Ok(summary) => match stored.next() {
                    Some(s) => RecordOutcome::stored(index, s, summary),
                    None => return Err(ServiceError::internal(&"store returned fewer outcomes than records")),
                },
            };
            match outcome.status {
                Status::Accepted => result.accepted += 1,
                Status::Duplicate => result.duplicate += 1,
                Status::NewVersion => result.new_version += 1,
                Status::Rejected => result.rejected += 1,
            }
            result.outcomes.push(outcome);
        }
        tracing::debug!(
            received = result.received,
            accepted = result.accepted,
            duplicate = result.duplicate,
            new_version = result.new_version,
            rejected = result.rejected,
            "batch stored"
        );
        Ok(result)
    }

    /// Parses and validates a batch. CPU-bound: runs on the blocking pool, records in parallel.
    fn check_batch(&self, body: &[u8], today: Date) -> Result<Vec<(Checked, Observation)>, ServiceError> {
        let raws = parse_push_body(body, &self.limits)?;
        Ok(raws
            .par_iter()
            .map(|raw| match self.validator.check_str(raw.get(), today) {
                Ok(record) => {
                    let observed = record.quality.clone();
                    (Ok(self.incoming(record)), observed)
                }
                Err(errors) => (Err(errors), self.validator.observe_json(raw.get().as_bytes())),
            })
            .collect())
    }

    /// Refuses lifecycle events about records not held here (with that origin): an event can
    /// change the state only of a record this node has.
    /// With a `scope` that is not [`UnitScope::Any`], the record an event is about must be of
    /// a unit the caller may act for: a department withdraws or corrects only its own.
    pub async fn require_targets<T: CarriesRecord>(
        &self,
        items: &mut [Result<T, Vec<FieldError>>],
        scope: &UnitScope,
    ) -> Result<(), ServiceError> {
        let mut events: Vec<(&mut Checked<T>, (String, String))> = Vec::new();
        for item in items.iter_mut() {
            let key = match item {
                Ok(t) => t.incoming().record.target.as_ref().map(|t| (t.origin.clone(), t.record_id.clone())),
                Err(_) => None,
            };
            if let Some(key) = key {
                events.push((item, key));
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, String)> = events.iter().map(|(_, k)| k.clone()).collect();
        let held = self.store.held_records(&keys).await.map_err(|e| ServiceError::internal(&e))?;
        for (item, key) in events {
            match held.get(&key) {
                None => {
                    *item = Err(vec![FieldError::new(
                        "/target_record_id",
                        "event.target_unknown",
                        format!("本节点没有来源为 {} 的记录 {}，不能对其登记事件", key.0, key.1),
                        format!(
                            "this node holds no record {} from {}; an event must be about a record held here",
                            key.1, key.0
                        ),
                    )]);
                }
                Some(department) if !scope.allows(department) => {
                    *item = Err(vec![FieldError::new(
                        "/target_record_id",
                        UNIT_NOT_ALLOWED,
                        format!("记录 {} 属于单位 {department}，您无权对其登记事件", key.1),
                        format!("record {} belongs to unit {department}; you may not raise events about it", key.1),
                    )]);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Adds the publicity deadline to a validated record.
    /// A checked record with its deadline: 双公示 and list entries are due 7 working days after
    /// the decision; a credit repair must reach every holder within 3 working days of its
    /// decision (design §8). Past the loaded calendar there is no deadline (calendar unknown).
    pub fn incoming(&self, record: ValidRecord) -> Incoming {
        let deadline = match (&record.clock_start, &record.target) {
            (Some(start), _) => self.calendar.deadline(*start).ok(),
            (None, Some(t)) if record.record_type == gateway_core::record::RecordType::Repair => {
                gateway_core::date::parse_date(&t.decided_on)
                    .and_then(|d| gateway_core::sla::repair_deadline(&self.calendar, d).ok())
            }
            _ => None,
        };
        Incoming { record, deadline, intake: None }
    }
}

impl RecordOutcome {
    fn rejected(index: usize, errors: Vec<FieldError>) -> Self {
        Self {
            index,
            status: Status::Rejected,
            record_id: None,
            version: None,
            content_hash: None,
            publicity_deadline: None,
            deadline_status: None,
            errors,
        }
    }

    fn stored(index: usize, stored: Stored, summary: Summary) -> Self {
        let (status, record_id, version) = match stored {
            Stored::Accepted { record_id, version } => (Status::Accepted, record_id, version),
            Stored::Duplicate { record_id, version } => (Status::Duplicate, record_id, version),
            Stored::NewVersion { record_id, version } => (Status::NewVersion, record_id, version),
            Stored::OtherDepartment { record_id } => {
                return Self::rejected(
                    index,
                    vec![FieldError::new(
                        "/source_unit_uscc",
                        UNIT_NOT_ALLOWED,
                        format!("本节点已有另一单位报送的同一决定（记录 {record_id}），您无权报送其新版本"),
                        format!(
                            "this decision is held here as another unit's record ({record_id}); you may not send a version of it"
                        ),
                    )],
                );
            }
        };
        Self {
            index,
            status,
            record_id: Some(record_id),
            version: Some(version),
            content_hash: Some(summary.content_hash),
            publicity_deadline: summary.publicity_deadline,
            deadline_status: summary.deadline_status,
            errors: Vec::new(),
        }
    }
}

/// The rule a record breaks when it names a unit its sender may not report for.
pub const UNIT_NOT_ALLOWED: &str = "auth.unit_not_allowed";

/// Rejects the checked records whose department (数据来源单位, or the reporting department)
/// is not one `scope` allows, at that field's pointer.
fn require_units<T: CarriesRecord>(items: &mut [Result<T, Vec<FieldError>>], scope: &UnitScope) {
    if *scope == UnitScope::Any {
        return;
    }
    for item in items.iter_mut() {
        let Ok(t) = item else { continue };
        let department = &t.incoming().record.quality.department_uscc;
        if !scope.allows(department) {
            let shown = if department.is_empty() { "（未填写）" } else { department.as_str() };
            *item = Err(vec![FieldError::new(
                "/source_unit_uscc",
                UNIT_NOT_ALLOWED,
                format!("您无权为单位 {shown} 报送数据：数据来源单位须是本单位或已授权代报的单位"),
                format!(
                    "you may not report for unit {department:?}: the source unit must be your own or one you are allowed to report for"
                ),
            )]);
        }
    }
}

/// What an outcome reports about a record that went to the store.
struct Summary {
    content_hash: String,
    publicity_deadline: Option<String>,
    deadline_status: Option<DeadlineStatus>,
}

impl Summary {
    fn of(inc: &Incoming) -> Self {
        let has_deadline = inc.record.clock_start.is_some();
        Self {
            content_hash: inc.record.content_hash.to_hex(),
            publicity_deadline: inc.deadline.map(format_date),
            deadline_status: match (has_deadline, inc.deadline) {
                (false, _) => None,
                (true, Some(_)) => Some(DeadlineStatus::OnCalendar),
                (true, None) => Some(DeadlineStatus::CalendarUnknown),
            },
        }
    }
}

/// What a batch's rejected records add to the quality counters (所属期 = the day they arrived):
/// per department, submissions, fields filled of those expected, and each rejection's rules.
/// The records that pass are counted by the store, as it stores them (duplicates are not).
/// The records of a batch body (a JSON array), counted while parsing: the parser stops at the
/// first record past `limit`, so a body of millions of tiny values (`[0,0,…]`) holds no more
/// memory than a full batch would.
fn parse_batch(body: &[u8], limit: usize) -> Result<Vec<&RawValue>, ServiceError> {
    use serde::de::{Deserializer as _, Error as _, SeqAccess, Visitor};
    struct Records<'c> {
        limit: usize,
        exceeded: &'c std::cell::Cell<bool>,
    }
    impl<'de> Visitor<'de> for Records<'_> {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit));
            while let Some(record) = seq.next_element::<&'de RawValue>()? {
                if records.len() == self.limit {
                    self.exceeded.set(true);
                    return Err(A::Error::custom("too many records"));
                }
                records.push(record);
            }
            Ok(records)
        }
    }
    let exceeded = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de.deserialize_seq(Records { limit, exceeded: &exceeded }).and_then(|records| {
        de.end()?;
        Ok(records)
    });
    match parsed {
        Ok(records) => Ok(records),
        Err(_) if exceeded.get() => Err(ServiceError::too_many_records(limit)),
        Err(e) => Err(ServiceError::from_batch_json(e)),
    }
}

/// The request-level checks of a push body (nesting, then the batch counted while parsing),
/// without storing anything: the records it holds, or the error the push would answer. The
/// parser fuzz target (`fuzz/`) drives it.
pub fn parse_push_body<'b>(body: &'b [u8], limits: &crate::config::Limits) -> Result<Vec<&'b RawValue>, ServiceError> {
    check_nesting(body, limits.max_nesting_depth)?;
    parse_batch(body, limits.max_batch_records)
}

/// Refuses a batch whose records nest arrays and objects deeper than `max` (a record is a
/// few levels deep): a request-level 400 naming the record, before anything is parsed. One
/// pass over the bytes, strings skipped. It runs on one core before a batch's records are
/// checked in parallel, so strings (most of a record) are jumped over by `memchr`: a loop
/// byte by byte took about a tenth of a push's CPU.
fn check_nesting(body: &[u8], max: usize) -> Result<(), ServiceError> {
    let (mut depth, mut record, mut at) = (0usize, 0usize, 0usize);
    while let Some(&b) = body.get(at) {
        at += 1;
        match b {
            b'"' => loop {
                // To the closing quote; an escape takes the byte after it along. An unterminated
                // string ends the scan: the parser names that error.
                let Some(i) = body.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) else {
                    return Ok(());
                };
                at += i + 1;
                if body[at - 1] == b'"' {
                    break;
                }
                at += 1;
            },
            b'[' | b'{' => {
                depth += 1;
                // The batch's own array is level 1; a record's levels start below it.
                if depth > max + 1 {
                    return Err(ServiceError::bad_request(
                        "too_deep",
                        format!("第 {record} 条记录的数组、对象嵌套超过 {max} 层"),
                        format!("record {record} nests arrays and objects deeper than {max} levels"),
                    )
                    .with_pointer(format!("/{record}")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => record += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Refuses the records only a gateway makes (a `joint_case_report` is made from the case as
/// stored, never taken from a caller).
fn refuse_node_made(checked: &mut [(Checked, Observation)]) {
    for (item, _) in checked.iter_mut() {
        if item.as_ref().is_ok_and(|inc| inc.record.record_type == gateway_core::record::RecordType::JointCaseReport) {
            *item = Err(vec![FieldError::new(
                "/record_type",
                "record_type.node_made",
                "联合奖惩案件反馈（joint_case_report）由网关根据案件生成，不能报送；请通过案件答复接口答复",
                "joint_case_report records are made by the gateway from its cases and cannot be pushed; answer the case instead",
            )]);
        }
    }
}

fn quality_counts(checked: &[Checked], observations: &[Observation], today: Date) -> QualityCounts {
    let day = format_date(today);
    let period = day[..7].to_owned();
    let mut counts = QualityCounts::default();
    for (item, obs) in checked.iter().zip(observations) {
        let Err(errors) = item else { continue };
        let m = counts.month(&obs.department_uscc, &obs.department_name, &period);
        m.submitted += 1;
        m.fields_filled += i64::from(obs.filled);
        m.fields_expected += i64::from(obs.expected);
        counts.days.entry(day.clone()).or_default().1 += 1;
        let mut rules: Vec<&str> = errors.iter().map(|e| e.rule.as_str()).collect();
        rules.sort_unstable();
        rules.dedup();
        for rule in rules {
            *counts.reasons.entry((obs.department_uscc.clone(), period.clone(), rule.to_owned())).or_default() += 1;
        }
    }
    counts
}

#[cfg(test)]
mod batch_tests {
    use super::{check_nesting, parse_batch};

    #[test]
    fn deep_nesting_is_refused_for_the_whole_request_naming_the_record() {
        let fine = br#"[{"a": [{"b": "[[[[[[[[\"]]]]"}]}, {"c": {"d": [1, 2]}}]"#;
        check_nesting(fine, 4).expect("brackets in strings do not count");
        // An escaped backslash does not escape the quote after it: the string ends there.
        let e = check_nesting(br#"[{"a": "\\\\"}, [[[[[]]]]]]"#, 4).expect_err("too deep after the string");
        assert_eq!(e.body.error.pointer.as_deref(), Some("/1"));
        check_nesting(br#"[{"a": "\"[[[[[[[[["}]"#, 4).expect("an escaped quote does not end the string");
        check_nesting(br#"[{"a": "unterminated\\"#, 4).expect("the parser reports it");
        check_nesting(br#"[{"a": "x\"#, 4).expect("an escape as the last byte: the parser reports it");
        let deep = format!("[{{}}, {}{}]", "[".repeat(10_000), "]".repeat(10_000));
        let e = check_nesting(deep.as_bytes(), 32).expect_err("too deep");
        assert_eq!((e.kind.status(), e.body.error.code), (400, "too_deep"));
        assert_eq!(e.body.error.pointer.as_deref(), Some("/1"));
        check_nesting(format!("[{}{}]", "[".repeat(32), "]".repeat(32)).as_bytes(), 32).expect("32 levels are fine");
    }

    #[test]
    fn a_batch_is_counted_while_it_is_parsed() {
        assert_eq!(parse_batch(b"[1, {\"a\": 2}, 3]", 3).expect("three").len(), 3);
        // A million values: refused at the first past the limit, holding no more than it.
        let mut huge = String::from("[0");
        huge.push_str(&",0".repeat(1_000_000));
        huge.push(']');
        let e = parse_batch(huge.as_bytes(), 5_000).expect_err("too many");
        assert_eq!((e.kind.status(), e.body.error.code), (413, "too_many_records"));
        for (body, code) in [(&b"{}"[..], "not_an_array"), (b"[1,", "malformed_json"), (b"[1] x", "malformed_json")] {
            let e = parse_batch(body, 10).expect_err("refused");
            assert_eq!((e.kind.status(), e.body.error.code), (400, code), "{}", String::from_utf8_lossy(body));
        }
    }
}
