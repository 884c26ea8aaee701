//! Joint reward-and-punishment cases (migrations 0014–0015; ADR 0007): one per subject ×
//! measure × implementing department while it stands (opened, accepted, executed, not
//! applicable). Opening is idempotent: a list entry that comes again opens no second case; once
//! a case is lifting or lifted, a new listing opens a new one. The node decides which cases a
//! list entry opens; the store keeps them and their answers.
//!
//! Every write here holds the store's write lock, as every writer of this process does.

use sqlx::{QueryBuilder, Row};

use super::{Backend, Store, StoreError};

/// A case to open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewCase {
    pub case_id: String,
    /// USCC, or SHA-256 (hex) of a natural person's normalised identity number. Shown only
    /// when it is a USCC: the hash of an identity number could be reversed by trying every
    /// number, so it never leaves the node (`null` in answers).
    #[serde(serialize_with = "uscc_only")]
    pub subject_key: String,
    pub subject_name: String,
    pub measure_id: String,
    pub catalogue: String,
    /// The implementing department (统一社会信用代码).
    pub department_uscc: String,
    pub entry_origin: String,
    pub entry_record_id: String,
    pub list_type: String,
    pub opened_at: String,
    /// The day of opening in China (YYYY-MM-DD): the month the loop counts the case in.
    pub opened_on: String,
    pub response_due: Option<String>,
    pub feedback_due: Option<String>,
    /// The list entry's 有效期至: the case is lifted once it has passed.
    pub valid_until: Option<String>,
    /// Whether the case reports its changes upward (a `joint_case_report` record): it does
    /// when the entry came from another node (ADR 0008).
    #[serde(skip)]
    pub reports: bool,
}

/// Whether a subject key is a USCC (18 characters), not the hash of an identity number.
pub fn is_uscc(subject_key: &str) -> bool {
    subject_key.len() == 18
}

fn uscc_only<S: serde::Serializer>(key: &str, s: S) -> Result<S::Ok, S::Error> {
    if is_uscc(key) { s.serialize_str(key) } else { s.serialize_none() }
}

/// A stored case, its state and its answers so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    #[serde(flatten)]
    pub case: NewCase,
    /// `opened`, `accepted`, `not_applicable`, `executed`, `lifting` or `lifted`.
    pub state: String,
    #[serde(flatten)]
    pub answers: Answers,
}

/// What the department answered, and the lifting of the measure.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Answers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responded_at: Option<String>,
    /// The credential that answered (its id, never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responded_by: Option<String>,
    /// Why the measure does not apply (`not_applicable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub feedback: Option<Feedback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fed_back_at: Option<String>,
    /// `repaired`, `withdrawn`, `removed` or `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lift_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lift_requested_at: Option<String>,
    /// When the department acknowledged the lifting (解除).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<String>,
}

/// 反馈: what the department did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Feedback {
    /// The day the measure was applied (YYYY-MM-DD).
    pub executed_on: String,
    /// 执行内容.
    pub action_taken: String,
    /// 成效.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// The number of the department's decision or notice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_no: Option<String>,
    /// SHA-256 (hex) of an attachment kept by the department.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_sha256: Option<String>,
    /// The point-of-decision check (信用核查) the measure was applied after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
}

/// An answer of the implementing department to one of its cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 响应: the measure applies and will be applied.
    Accepted,
    /// 响应: the measure does not apply to this subject, and why.
    NotApplicable { reason: String },
    /// 反馈: the measure was applied (answering an opened case accepts it too).
    Executed(Feedback),
    /// The lifting (解除) is acknowledged: the measure is no longer applied.
    LiftAcknowledged,
}

impl Answer {
    /// The states the answer may be given in, and the state it leaves.
    fn transition(&self) -> (&'static [&'static str], &'static str) {
        match self {
            Answer::Accepted => (&["opened"], "accepted"),
            Answer::NotApplicable { .. } => (&["opened"], "not_applicable"),
            Answer::Executed(_) => (&["opened", "accepted"], "executed"),
            Answer::LiftAcknowledged => (&["lifting"], "lifted"),
        }
    }
}

/// What became of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Stored; the case as it is now.
    Done(Box<Case>),
    /// No such case of this department.
    NotFound,
    /// The case is in a state the answer cannot be given in (answered already, lifted, …).
    Conflict(Box<Case>),
}

/// States in which a measure may be in force, and must be lifted when the entry ends (the
/// lifting statements spell them out too).
pub const IN_FORCE: [&str; 3] = ["opened", "accepted", "executed"];

impl LoopCounts {
    /// Each stage's count, by the name `/metrics` gives it.
    pub fn stages(&self) -> [(&'static str, i64); 8] {
        [
            ("opened", self.opened),
            ("responded", self.responded),
            ("not_applicable", self.not_applicable),
            ("fed_back", self.fed_back),
            ("response_overdue", self.response_overdue),
            ("feedback_overdue", self.feedback_overdue),
            ("lifting", self.lifting),
            ("lifted", self.lifted),
        ]
    }
}

/// The loop of one department in one month (of opening): 发起 → 响应 → 反馈 → 解除.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoopCounts {
    pub department_uscc: String,
    /// YYYY-MM of `opened_on` (China time).
    pub month: String,
    pub opened: i64,
    /// Answered at all (accepted, not applicable, or executed).
    pub responded: i64,
    pub not_applicable: i64,
    /// Fed back (executed).
    pub fed_back: i64,
    /// Opened and past the response due date.
    pub response_overdue: i64,
    /// Accepted and past the feedback due date.
    pub feedback_overdue: i64,
    /// Lifting asked, not yet acknowledged.
    pub lifting: i64,
    pub lifted: i64,
}

/// The readers of `records` that keep a cursor in `joint_cursor`, by row id.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// The case opener, over list entries.
    Opener = 1,
    /// The reader of case reports from below (`take_case_reports`).
    Reports = 2,
}

/// Moves a cursor (binds its id, then the seq read up to), in the transaction of what it read.
const SET_CURSOR: &str = "INSERT INTO joint_cursor (id, after_seq) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET after_seq = excluded.after_seq";

/// One case as the node where its department answers reported it (a `joint_case_report`
/// record read at a node above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    /// The reporting node (the record's origin).
    pub reporter: String,
    pub case_id: String,
    pub entry_origin: String,
    pub entry_record_id: String,
    pub measure_id: String,
    pub department_uscc: String,
    pub state: String,
    pub opened_on: String,
    pub response_due: Option<String>,
    pub feedback_due: Option<String>,
    pub responded_at: Option<String>,
    pub not_applicable: bool,
    pub fed_back_at: Option<String>,
    pub lift_requested_at: Option<String>,
    pub lifted_at: Option<String>,
    /// The version of the report record (at its origin): a later one is a later state.
    pub report_version: i64,
}

/// The loop of one department of a node below, in one month.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportedLoop {
    /// The node where the department answers.
    pub reporter: String,
    #[serde(flatten)]
    pub counts: LoopCounts,
}

/// The columns a new case fills, in `NewCase` order, then its state and what it has reported
/// ('' before its first report, NULL for a case that reports to no one).
const NEW_COLUMNS: &str = "case_id, subject_key, subject_name, measure_id, catalogue, department_uscc, entry_origin, \
                           entry_record_id, list_type, opened_at, opened_on, response_due, feedback_due, valid_until, \
                           state, reported_state";
/// Every column read, in `case()` order.
const COLUMNS: &str = "case_id, subject_key, subject_name, measure_id, catalogue, department_uscc, entry_origin, \
                       entry_record_id, list_type, opened_at, opened_on, response_due, feedback_due, valid_until, state, \
                       responded_at, responded_by, reason, executed_on, action_taken, effect, document_no, \
                       attachment_sha256, check_id, fed_back_at, lift_reason, lift_requested_at, lifted_at, \
                       reported_state";
/// 16 columns: 2,000 rows stay under SQLite's bound-parameter limit.
const CHUNK: usize = 2_000;

/// A loop row: department, month, then the eight counts in `LoopCounts` order, from column
/// `first` on.
fn loop_counts<R: Row>(row: &R, first: usize) -> Result<LoopCounts, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let n = |k: usize| row.try_get::<i64, _>(first + k);
    Ok(LoopCounts {
        department_uscc: row.try_get(first)?,
        month: row.try_get(first + 1)?,
        opened: n(2)?,
        responded: n(3)?,
        not_applicable: n(4)?,
        fed_back: n(5)?,
        response_overdue: n(6)?,
        feedback_overdue: n(7)?,
        lifting: n(8)?,
        lifted: n(9)?,
    })
}

fn case<R: Row>(row: &R) -> Result<Case, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    Ok(Case {
        case: NewCase {
            case_id: row.try_get(0)?,
            subject_key: row.try_get(1)?,
            subject_name: row.try_get(2)?,
            measure_id: row.try_get(3)?,
            catalogue: row.try_get(4)?,
            department_uscc: row.try_get(5)?,
            entry_origin: row.try_get(6)?,
            entry_record_id: row.try_get(7)?,
            list_type: row.try_get(8)?,
            opened_at: row.try_get(9)?,
            opened_on: row.try_get(10)?,
            response_due: row.try_get(11)?,
            feedback_due: row.try_get(12)?,
            valid_until: row.try_get(13)?,
            reports: row.try_get::<Option<String>, _>(28)?.is_some(),
        },
        state: row.try_get(14)?,
        answers: Answers {
            responded_at: row.try_get(15)?,
            responded_by: row.try_get(16)?,
            reason: row.try_get(17)?,
            feedback: match row.try_get::<Option<String>, _>(18)? {
                None => None,
                Some(executed_on) => Some(Feedback {
                    executed_on,
                    action_taken: row.try_get::<Option<String>, _>(19)?.unwrap_or_default(),
                    effect: row.try_get(20)?,
                    document_no: row.try_get(21)?,
                    attachment_sha256: row.try_get(22)?,
                    check_id: row.try_get(23)?,
                }),
            },
            fed_back_at: row.try_get(24)?,
            lift_reason: row.try_get(25)?,
            lift_requested_at: row.try_get(26)?,
            lifted_at: row.try_get(27)?,
        },
    })
}

/// Inserts `$cases` (`&[NewCase]`) into `joint_cases` inside the transaction `$tx`, skipping a
/// case whose subject × measure × department already has a standing one; evaluates to how
/// many were inserted.
macro_rules! insert_cases {
    ($tx:ident, $verb:expr, $tail:expr, $cases:expr) => {{
        let mut inserted = 0;
        for chunk in $cases.chunks(CHUNK) {
            let mut qb = QueryBuilder::new(format!("{} joint_cases ({NEW_COLUMNS}) ", $verb));
            qb.push_values(chunk, |mut b, c| {
                b.push_bind(c.case_id.as_str())
                    .push_bind(c.subject_key.as_str())
                    .push_bind(c.subject_name.as_str())
                    .push_bind(c.measure_id.as_str())
                    .push_bind(c.catalogue.as_str())
                    .push_bind(c.department_uscc.as_str())
                    .push_bind(c.entry_origin.as_str())
                    .push_bind(c.entry_record_id.as_str())
                    .push_bind(c.list_type.as_str())
                    .push_bind(c.opened_at.as_str())
                    .push_bind(c.opened_on.as_str())
                    .push_bind(c.response_due.as_deref())
                    .push_bind(c.feedback_due.as_deref())
                    .push_bind(c.valid_until.as_deref())
                    .push_bind("opened")
                    .push_bind(c.reports.then_some(""));
            });
            qb.push($tail);
            inserted += qb.build().execute(&mut *$tx).await?.rows_affected();
        }
        inserted
    }};
}

impl Store {
    /// The implementing departments (unit, category) the opener has planned cases for.
    pub async fn planned_departments(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query("SELECT department_uscc, category FROM joint_departments").fetch_all(pool).await?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
        })
    }

    /// Opens a newly registered department's catch-up cases and marks the departments planned,
    /// in one transaction; returns how many cases were opened.
    pub async fn plan_departments(
        &self,
        cases: &[NewCase],
        departments: &[(String, String)],
    ) -> Result<u64, StoreError> {
        let _serialised = self.write_lock.lock().await;
        let (verb, tail) = self.backend.skip_held();
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            let opened = insert_cases!(tx, verb, tail, cases);
            for chunk in departments.chunks(CHUNK) {
                let mut qb = QueryBuilder::new(format!("{verb} joint_departments (department_uscc, category) "));
                qb.push_values(chunk, |mut b, (unit, category)| {
                    b.push_bind(unit.as_str()).push_bind(category.as_str());
                });
                qb.push(tail);
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(opened)
        })
    }

    /// Which of `record_ids` have ended by a lifecycle event held here (repaired, withdrawn,
    /// expired).
    pub async fn ended_records(&self, record_ids: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut ended = std::collections::HashSet::new();
        for chunk in record_ids.chunks(CHUNK) {
            dispatch!(self, pool => {
                let mut qb = QueryBuilder::new(
                    "SELECT record_id FROM record_states WHERE state IN ('repaired', 'withdrawn', 'expired') \
                     AND record_id IN (",
                );
                let mut ids = qb.separated(", ");
                for id in chunk {
                    ids.push_bind(id.as_str());
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    ended.insert(row.try_get::<String, _>(0)?);
                }
            });
        }
        Ok(ended)
    }

    /// Opens the cases not held yet (by subject × measure × department), then asks for the
    /// lifting of the cases of `removed` list entries (record ids), in one transaction; returns
    /// how many were opened. With `read_up_to`, the opener's cursor moves there in the same
    /// transaction.
    pub async fn open_cases(
        &self,
        cases: &[NewCase],
        removed: &[String],
        at: &str,
        read_up_to: Option<i64>,
    ) -> Result<u64, StoreError> {
        let _serialised = self.write_lock.lock().await;
        let (verb, tail) = self.backend.skip_held();
        let mut opened = 0;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            opened += insert_cases!(tx, verb, tail, cases);
            for chunk in removed.chunks(CHUNK) {
                let mut qb = QueryBuilder::new("UPDATE joint_cases SET state = 'lifting', lift_reason = 'removed', ");
                qb.push("lift_requested_at = ").push_bind(at);
                qb.push(format!(" WHERE state IN ('{}') AND entry_record_id IN (", IN_FORCE.join("', '")));
                let mut ids = qb.separated(", ");
                for id in chunk {
                    ids.push_bind(id.as_str());
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
            }
            if let Some(seq) = read_up_to {
                sqlx::query(SET_CURSOR).bind(Cursor::Opener as i64).bind(seq).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(opened)
    }

    /// How far the case opener has read `records` (0 before its first pass).
    pub async fn joint_cursor(&self) -> Result<i64, StoreError> {
        self.cursor(Cursor::Opener).await
    }

    /// How far a reader of `records` has read (0 before its first pass).
    async fn cursor(&self, cursor: Cursor) -> Result<i64, StoreError> {
        dispatch!(self, pool => {
            let row = sqlx::query("SELECT after_seq FROM joint_cursor WHERE id = $1")
                .bind(cursor as i64)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0))
        })
    }

    /// Cases of one implementing department (or of all, with `None`), optionally in one state,
    /// oldest first, after `after` (a case id, for paging), at most `limit`.
    pub async fn cases(
        &self,
        department: Option<&str>,
        state: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM joint_cases WHERE case_id > "));
            qb.push_bind(after);
            if let Some(d) = department {
                qb.push(" AND department_uscc = ").push_bind(d);
            }
            if let Some(s) = state {
                qb.push(" AND state = ").push_bind(s);
            }
            qb.push(" ORDER BY case_id LIMIT ").push_bind(limit);
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(case).collect()
        })
    }
}

impl Store {
    /// Asks for the lifting (解除) of every case whose list entry has ended: repaired, withdrawn
    /// or expired (公示期满) by a lifecycle event held here (the reason is that state), or past
    /// its 有效期至 (`today`, YYYY-MM-DD; reason `expired`). Returns how many turned `lifting`.
    pub async fn lift_ended_cases(&self, today: &str, at: &str) -> Result<u64, StoreError> {
        let _serialised = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            let ended = sqlx::query(
                "UPDATE joint_cases SET state = 'lifting', lift_requested_at = $1, lift_reason = \
                 (SELECT s.state FROM record_states s WHERE s.record_id = joint_cases.entry_record_id) \
                 WHERE state IN ('opened', 'accepted', 'executed') AND entry_record_id IN \
                 (SELECT record_id FROM record_states WHERE state IN ('repaired', 'withdrawn', 'expired'))",
            )
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let expired = sqlx::query(
                "UPDATE joint_cases SET state = 'lifting', lift_requested_at = $1, lift_reason = 'expired' \
                 WHERE state IN ('opened', 'accepted', 'executed') AND valid_until < $2",
            )
            .bind(at)
            .bind(today)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(ended + expired)
        })
    }

    /// Stores a department's answer to its case, if the case is in a state that takes it.
    /// `department` is the answering unit (`None`: any, for development principals); `by`
    /// the credential id that answered.
    pub async fn answer_case(
        &self,
        case_id: &str,
        department: Option<&str>,
        answer: &Answer,
        by: &str,
        at: &str,
    ) -> Result<Answered, StoreError> {
        let (from, to) = answer.transition();
        let _serialised = self.write_lock.lock().await;
        let changed = dispatch!(self, pool => {
            let mut qb = QueryBuilder::new("UPDATE joint_cases SET state = ");
            qb.push_bind(to);
            match answer {
                Answer::Accepted | Answer::NotApplicable { .. } => {
                    qb.push(", responded_at = ").push_bind(at).push(", responded_by = ").push_bind(by);
                    if let Answer::NotApplicable { reason } = answer {
                        qb.push(", reason = ").push_bind(reason.as_str());
                    }
                }
                Answer::Executed(f) => {
                    // Feedback on an opened case is its response too.
                    qb.push(", responded_at = COALESCE(responded_at, ").push_bind(at).push(")");
                    qb.push(", responded_by = COALESCE(responded_by, ").push_bind(by).push(")");
                    qb.push(", executed_on = ").push_bind(f.executed_on.as_str());
                    qb.push(", action_taken = ").push_bind(f.action_taken.as_str());
                    qb.push(", effect = ").push_bind(f.effect.as_deref());
                    qb.push(", document_no = ").push_bind(f.document_no.as_deref());
                    qb.push(", attachment_sha256 = ").push_bind(f.attachment_sha256.as_deref());
                    qb.push(", check_id = ").push_bind(f.check_id.as_deref());
                    qb.push(", fed_back_at = ").push_bind(at);
                }
                Answer::LiftAcknowledged => {
                    qb.push(", lifted_at = ").push_bind(at);
                }
            }
            qb.push(" WHERE case_id = ").push_bind(case_id);
            if let Some(d) = department {
                qb.push(" AND department_uscc = ").push_bind(d);
            }
            qb.push(format!(" AND state IN ('{}') RETURNING {COLUMNS}", from.join("', '")));
            qb.build().fetch_optional(pool).await?.as_ref().map(case).transpose()?
        });
        drop(_serialised);
        if let Some(done) = changed {
            return Ok(Answered::Done(Box::new(done)));
        }
        // Not taken: no such case of this department, or one in another state.
        Ok(match self.case(case_id, department).await? {
            None => Answered::NotFound,
            Some(held) => Answered::Conflict(Box::new(held)),
        })
    }

    /// One case, if it belongs to `department` (`None`: any department's).
    pub async fn case(&self, case_id: &str, department: Option<&str>) -> Result<Option<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM joint_cases WHERE case_id = "));
            qb.push_bind(case_id);
            if let Some(d) = department {
                qb.push(" AND department_uscc = ").push_bind(d);
            }
            qb.build().fetch_optional(pool).await?.as_ref().map(case).transpose()
        })
    }

    /// The cases of one subject whose measure is in force (opened, accepted, executed), at one
    /// department (`None`: at every department): what a point-of-decision check answers. A case
    /// whose entry has ended (repaired, withdrawn, expired) or whose sanctions are suspended
    /// while an objection is verified is left out at once, before the opener's next pass.
    pub async fn subject_cases(&self, subject_key: &str, department: Option<&str>) -> Result<Vec<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM joint_cases WHERE subject_key = "));
            qb.push_bind(subject_key);
            if let Some(d) = department {
                qb.push(" AND department_uscc = ").push_bind(d);
            }
            qb.push(format!(" AND state IN ('{}')", IN_FORCE.join("', '")));
            qb.push(
                " AND NOT EXISTS (SELECT 1 FROM record_states s WHERE s.record_id = joint_cases.entry_record_id \
                 AND (s.sanctions_suspended <> 0 OR s.state IN ('repaired', 'withdrawn', 'expired'))) \
                 ORDER BY measure_id, department_uscc",
            );
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(case).collect()
        })
    }

    /// Cases past a due date on `today` (YYYY-MM-DD): opened and not responded to by
    /// `response_due`, or accepted and not fed back by `feedback_due`; of one department or of
    /// all, optionally of one month of opening (YYYY-MM), oldest due first (or, with
    /// `newest_first`, what has just turned overdue first), at most `limit`.
    pub async fn overdue_cases(
        &self,
        today: &str,
        department: Option<&str>,
        month: Option<&str>,
        newest_first: bool,
        limit: i64,
    ) -> Result<Vec<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM joint_cases WHERE ((state = 'opened' AND response_due < "));
            qb.push_bind(today).push(") OR (state = 'accepted' AND feedback_due < ").push_bind(today).push("))");
            if let Some(d) = department {
                qb.push(" AND department_uscc = ").push_bind(d);
            }
            if let Some(m) = month {
                qb.push(" AND substr(opened_on, 1, 7) = ").push_bind(m);
            }
            let order = if newest_first { "DESC" } else { "ASC" };
            qb.push(format!(
                " ORDER BY COALESCE(CASE WHEN state = 'opened' THEN response_due ELSE feedback_due END, '') {order}, \
                 case_id {order} LIMIT "
            ));
            qb.push_bind(limit);
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(case).collect()
        })
    }

    /// The loop per department and month of opening, as it stands on `today` (YYYY-MM-DD).
    pub async fn case_loop(&self, today: &str) -> Result<Vec<LoopCounts>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query(
                "SELECT department_uscc, substr(opened_on, 1, 7) AS month, COUNT(*), \
                 SUM(CASE WHEN responded_at IS NOT NULL THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN reason IS NOT NULL THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN fed_back_at IS NOT NULL THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'opened' AND response_due < $1 THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'accepted' AND feedback_due < $1 THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'lifting' THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'lifted' THEN 1 ELSE 0 END) \
                 FROM joint_cases GROUP BY department_uscc, substr(opened_on, 1, 7) ORDER BY 2, 1",
            )
            .bind(today)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| loop_counts(r, 0)).collect()
        })
    }

    /// Cases with a change of state not yet reported upward, oldest first: those opened from
    /// an entry that came from another node (migration 0016's partial index holds exactly
    /// these).
    pub async fn unreported_cases(&self, limit: i64) -> Result<Vec<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {COLUMNS} FROM joint_cases WHERE reported_state IS NOT NULL AND reported_state <> state \
                 ORDER BY case_id LIMIT "
            ));
            qb.push_bind(limit);
            qb.build().fetch_all(pool).await?.iter().map(case).collect()
        })
    }

    /// Records that each `(case_id, state)` has been reported in that state. A case that has
    /// changed again since stays unreported.
    pub async fn mark_reported(&self, reported: &[(String, String)]) -> Result<(), StoreError> {
        self.mark_cases("UPDATE joint_cases SET reported_state = $1 WHERE case_id = $2", reported).await
    }

    /// Runs `update` (binding a state, then a case id) for each `(case_id, state)`, in one
    /// transaction.
    async fn mark_cases(&self, update: &'static str, marks: &[(String, String)]) -> Result<(), StoreError> {
        let _serialised = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            for (case_id, state) in marks {
                sqlx::query(update).bind(state).bind(case_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// How far the reader of case reports has read `records` (0 before its first pass).
    pub async fn report_cursor(&self) -> Result<i64, StoreError> {
        self.cursor(Cursor::Reports).await
    }

    /// Keeps the latest report of each case (the highest version wins, whatever the order of arrival) and moves the reports'
    /// cursor to `read_up_to`, in one transaction.
    pub async fn take_case_reports(&self, reports: &[CaseReport], read_up_to: i64) -> Result<(), StoreError> {
        // One row per case: a multi-row upsert may not touch a row twice.
        let mut latest: std::collections::HashMap<(&str, &str), &CaseReport> = std::collections::HashMap::new();
        for r in reports {
            let key = (r.reporter.as_str(), r.case_id.as_str());
            if latest.get(&key).is_none_or(|held| held.report_version < r.report_version) {
                latest.insert(key, r);
            }
        }
        let rows: Vec<&CaseReport> = latest.into_values().collect();
        let _serialised = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            // 16 columns: 2,000 rows stay under SQLite's bound-parameter limit.
            for chunk in rows.chunks(CHUNK) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO joint_case_reports (reporter, case_id, entry_origin, entry_record_id, measure_id, \
                     department_uscc, state, opened_on, response_due, feedback_due, responded_at, not_applicable, \
                     fed_back_at, lift_requested_at, lifted_at, report_version) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.reporter.as_str())
                        .push_bind(r.case_id.as_str())
                        .push_bind(r.entry_origin.as_str())
                        .push_bind(r.entry_record_id.as_str())
                        .push_bind(r.measure_id.as_str())
                        .push_bind(r.department_uscc.as_str())
                        .push_bind(r.state.as_str())
                        .push_bind(r.opened_on.as_str())
                        .push_bind(r.response_due.as_deref())
                        .push_bind(r.feedback_due.as_deref())
                        .push_bind(r.responded_at.as_deref())
                        .push_bind(i64::from(r.not_applicable))
                        .push_bind(r.fed_back_at.as_deref())
                        .push_bind(r.lift_requested_at.as_deref())
                        .push_bind(r.lifted_at.as_deref())
                        .push_bind(r.report_version);
                });
                qb.push(
                    " ON CONFLICT (reporter, case_id) DO UPDATE SET state = excluded.state, \
                     response_due = excluded.response_due, feedback_due = excluded.feedback_due, \
                     responded_at = excluded.responded_at, not_applicable = excluded.not_applicable, \
                     fed_back_at = excluded.fed_back_at, lift_requested_at = excluded.lift_requested_at, \
                     lifted_at = excluded.lifted_at, report_version = excluded.report_version \
                     WHERE excluded.report_version > joint_case_reports.report_version",
                );
                qb.build().execute(&mut *tx).await?;
            }
            sqlx::query(SET_CURSOR).bind(Cursor::Reports as i64).bind(read_up_to).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The loop of the cases reported from the nodes below, per reporting node, department
    /// and month, as it stands on `today` (YYYY-MM-DD, China).
    pub async fn reported_loop(&self, today: &str) -> Result<Vec<ReportedLoop>, StoreError> {
        dispatch!(self, pool => {
            let rows = sqlx::query(
                "SELECT reporter, department_uscc, substr(opened_on, 1, 7), COUNT(*), \
                 SUM(CASE WHEN responded_at IS NOT NULL THEN 1 ELSE 0 END), SUM(not_applicable), \
                 SUM(CASE WHEN fed_back_at IS NOT NULL THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'opened' AND response_due < $1 THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'accepted' AND feedback_due < $1 THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'lifting' THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'lifted' THEN 1 ELSE 0 END) \
                 FROM joint_case_reports GROUP BY reporter, department_uscc, substr(opened_on, 1, 7) \
                 ORDER BY 3, 1, 2",
            )
            .bind(today)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok(ReportedLoop { reporter: r.try_get(0)?, counts: loop_counts(r, 1)? })).collect()
        })
    }

    /// Cases of `department` whose state has changed since they were last written to the
    /// cases' 前置库 (or never written), oldest first.
    pub async fn unexported_cases(&self, department: &str, limit: i64) -> Result<Vec<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM joint_cases WHERE department_uscc = "));
            qb.push_bind(department);
            qb.push(" AND (exported_state IS NULL OR exported_state <> state) ORDER BY case_id LIMIT ").push_bind(limit);
            qb.build().fetch_all(pool).await?.iter().map(case).collect()
        })
    }

    /// Records that each `(case_id, state)` was written to the cases' 前置库 in that state.
    pub async fn mark_exported(&self, exported: &[(String, String)]) -> Result<(), StoreError> {
        self.mark_cases("UPDATE joint_cases SET exported_state = $1 WHERE case_id = $2", exported).await
    }
}
