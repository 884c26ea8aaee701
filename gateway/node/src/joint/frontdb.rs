//! Cases through the 前置库 (`[measures.frontdb]`): for departments whose systems exchange
//! through a staging database rather than call the API or send workbooks.
//!
//! Two tables in the 前置库 (created when missing; the DDL is in `docs/operations.md`):
//! - `GW_JOINT_CASES`, written by the gateway: one row per case of the configured departments,
//!   rewritten whenever the case's state changes (opened, lifting …);
//! - `GW_JOINT_ANSWERS`, written by the departments: one row per answer (the workbook's answer
//!   words and columns). The gateway takes the rows it has not collected, applies each as the
//!   department's answer would be through the API, and writes back `RESULT` (`stored` or
//!   `rejected`), `MESSAGE` (the rule and field, in Chinese and English) and `COLLECTED_AT`.
//!
//! A row is answered for the department it names, and only for a department configured in
//! `units` (any other is refused with `auth.unit_not_allowed`): the 前置库 acts for those units
//! as their credentials would. A row applied whose `COLLECTED_AT` was not written (a crash
//! between the two databases) is applied again: the case is then found already in the state
//! the answer leads to, and the row is `stored`. Nothing is lost or applied twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::interchange::format_time;
use gateway_core::measures::Catalogue;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row as _};
use time::OffsetDateTime;

use super::workbook::{ANSWERS, AnswerRow};
use crate::adapters::database::Dialect;
use crate::auth::{Principal, Role};
use crate::config::CasesFrontDb;
use crate::ingest::Ingest;

const CASES: &str = "GW_JOINT_CASES";
const ANSWERS_TABLE: &str = "GW_JOINT_ANSWERS";
/// Rows written and collected per step.
const ROUND_ROWS: i64 = 500;
/// Longest text taken from an answer cell, as from a workbook cell.
const MAX_CELL_CHARS: usize = 600;

/// The answer columns, and the workbook headings they stand for (the answers are checked as
/// the workbook's rows are).
const ANSWER_COLUMNS: [(&str, &str); 9] = [
    ("CASE_ID", "案件编号"),
    ("ANSWER", "答复"),
    ("REASON", "不适用理由"),
    ("EXECUTED_ON", "实施日期"),
    ("ACTION_TAKEN", "执行内容"),
    ("EFFECT", "成效"),
    ("DOCUMENT_NO", "文书号"),
    ("ATTACHMENT_SHA256", "附件SHA-256"),
    ("CHECK_ID", "核查编号"),
];

/// The case columns the gateway writes, in the order they are bound.
const CASE_COLUMNS: [&str; 13] = [
    "CASE_ID",
    "DEPARTMENT_USCC",
    "MEASURE_ID",
    "MEASURE_TITLE",
    "SUBJECT_NAME",
    "SUBJECT_USCC",
    "LIST_TYPE",
    "STATE",
    "OPENED_ON",
    "RESPONSE_DUE",
    "FEEDBACK_DUE",
    "LIFT_REASON",
    "UPDATED_AT",
];

/// A connection to the cases' 前置库.
#[derive(Debug)]
pub struct FrontDb {
    pool: AnyPool,
    dialect: Dialect,
    units: Vec<String>,
    sql: Sql,
}

/// The statements of a round, spelled once for the 前置库's dialect.
#[derive(Debug)]
struct Sql {
    /// Writes one case (binds `CASE_COLUMNS` in order), replacing its row.
    upsert_case: String,
    /// The oldest answer rows not yet collected: `ID`, `DEPARTMENT_USCC`, then `ANSWER_COLUMNS`.
    uncollected: String,
    /// Marks one answer row collected (binds the time, result, message, then its `ID`).
    collected: String,
}

impl Sql {
    fn new(d: Dialect) -> anyhow::Result<Self> {
        let q = |c: &str| d.ident(c);
        let columns: Vec<String> = CASE_COLUMNS.iter().map(|c| q(c)).collect::<anyhow::Result<_>>()?;
        let params: Vec<String> = (1..=CASE_COLUMNS.len()).map(|n| d.param(n)).collect();
        let updates: Vec<String> = columns[1..]
            .iter()
            .map(|c| match d {
                Dialect::MySql => format!("{c} = VALUES({c})"),
                _ => format!("{c} = excluded.{c}"),
            })
            .collect();
        let upsert_case = match d {
            Dialect::MySql => format!(
                "INSERT INTO {} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
                q(CASES)?,
                columns.join(", "),
                params.join(", "),
                updates.join(", ")
            ),
            _ => format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
                q(CASES)?,
                columns.join(", "),
                params.join(", "),
                columns[0],
                updates.join(", ")
            ),
        };
        let mut uncollected = format!("SELECT {}, CAST({} AS {})", q("ID")?, q("DEPARTMENT_USCC")?, d.text());
        for (column, _) in ANSWER_COLUMNS {
            uncollected.push_str(&format!(", SUBSTR(CAST({} AS {}), 1, {MAX_CELL_CHARS})", q(column)?, d.text()));
        }
        uncollected.push_str(&format!(
            " FROM {} WHERE {} IS NULL ORDER BY {} LIMIT {ROUND_ROWS}",
            q(ANSWERS_TABLE)?,
            q("COLLECTED_AT")?,
            q("ID")?
        ));
        let collected = format!(
            "UPDATE {} SET {} = {}, {} = {}, {} = {} WHERE {} = {}",
            q(ANSWERS_TABLE)?,
            q("COLLECTED_AT")?,
            d.param(1),
            q("RESULT")?,
            d.param(2),
            q("MESSAGE")?,
            d.param(3),
            q("ID")?,
            d.param(4)
        );
        Ok(Self { upsert_case, uncollected, collected })
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Cases written to `GW_JOINT_CASES`.
    pub written: usize,
    /// Answer rows collected (stored or rejected).
    pub collected: usize,
}

impl FrontDb {
    /// Connects and creates the two tables if they are missing.
    pub async fn connect(config: &CasesFrontDb) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.units.is_empty(),
            "[measures.frontdb] names no `units`: list the departments (统一社会信用代码) that answer through it"
        );
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of(&config.url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&config.url)
            .await
            .context("connecting to the cases' 前置库")?;
        let db = Self { pool, dialect, units: config.units.clone(), sql: Sql::new(dialect)? };
        db.create_tables().await?;
        Ok(db)
    }

    async fn create_tables(&self) -> anyhow::Result<()> {
        let d = self.dialect;
        let q = |c: &str| d.ident(c);
        let cases = format!(
            "CREATE TABLE IF NOT EXISTS {} ({} VARCHAR(64) PRIMARY KEY, {} VARCHAR(18) NOT NULL, {} VARCHAR(64) NOT NULL, \
             {} VARCHAR(500), {} VARCHAR(500) NOT NULL, {} VARCHAR(18), {} VARCHAR(8) NOT NULL, {} VARCHAR(16) NOT NULL, \
             {} VARCHAR(10) NOT NULL, {} VARCHAR(10), {} VARCHAR(10), {} VARCHAR(16), {} VARCHAR(40) NOT NULL)",
            q(CASES)?,
            q("CASE_ID")?,
            q("DEPARTMENT_USCC")?,
            q("MEASURE_ID")?,
            q("MEASURE_TITLE")?,
            q("SUBJECT_NAME")?,
            q("SUBJECT_USCC")?,
            q("LIST_TYPE")?,
            q("STATE")?,
            q("OPENED_ON")?,
            q("RESPONSE_DUE")?,
            q("FEEDBACK_DUE")?,
            q("LIFT_REASON")?,
            q("UPDATED_AT")?,
        );
        let answers = format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, {} VARCHAR(64) NOT NULL, {} VARCHAR(18) NOT NULL, {} VARCHAR(20) NOT NULL, \
             {} TEXT, {} VARCHAR(10), {} TEXT, {} TEXT, {} VARCHAR(200), {} VARCHAR(64), {} VARCHAR(64), \
             {} VARCHAR(40), {} VARCHAR(16), {} TEXT)",
            q(ANSWERS_TABLE)?,
            d.serial_id(),
            q("CASE_ID")?,
            q("DEPARTMENT_USCC")?,
            q("ANSWER")?,
            q("REASON")?,
            q("EXECUTED_ON")?,
            q("ACTION_TAKEN")?,
            q("EFFECT")?,
            q("DOCUMENT_NO")?,
            q("ATTACHMENT_SHA256")?,
            q("CHECK_ID")?,
            q("COLLECTED_AT")?,
            q("RESULT")?,
            q("MESSAGE")?,
        );
        for sql in [cases, answers] {
            sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await.context("creating the cases' 前置库 tables")?;
        }
        Ok(())
    }

    /// One round: writes the cases that changed, then collects the answers.
    pub async fn round(&self, ingest: &Ingest, catalogue: &Catalogue, now: OffsetDateTime) -> anyhow::Result<Round> {
        // Answers are collected even when writing cases fails (and the other way round).
        let mut written = Ok(0);
        for unit in &self.units {
            written = match written {
                Ok(n) => self.write_cases(ingest, catalogue, unit, now).await.map(|m| n + m),
                failed => failed,
            };
        }
        let collected = self.collect(ingest, catalogue, now).await;
        Ok(Round { written: written?, collected: collected? })
    }

    /// Writes the department's cases whose state changed, then marks them written here.
    async fn write_cases(
        &self,
        ingest: &Ingest,
        catalogue: &Catalogue,
        unit: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<usize> {
        let at = format_time(now);
        let mut written = 0;
        loop {
            let cases = ingest.store.unexported_cases(unit, ROUND_ROWS).await?;
            if cases.is_empty() {
                break;
            }
            let mut tx = self.pool.begin().await?;
            for case in &cases {
                let c = &case.case;
                let uscc = gateway_store::cases::is_uscc(&c.subject_key).then(|| c.subject_key.clone());
                let title = catalogue.measure(&c.measure_id).map(|m| m.title.clone());
                sqlx::query(AssertSqlSafe(self.sql.upsert_case.clone()))
                    .bind(c.case_id.clone())
                    .bind(c.department_uscc.clone())
                    .bind(c.measure_id.clone())
                    .bind(title)
                    .bind(c.subject_name.clone())
                    .bind(uscc)
                    .bind(c.list_type.clone())
                    .bind(case.state.clone())
                    .bind(c.opened_on.clone())
                    .bind(c.response_due.clone())
                    .bind(c.feedback_due.clone())
                    .bind(case.answers.lift_reason.clone())
                    .bind(at.clone())
                    .execute(&mut *tx)
                    .await
                    .context("writing cases to the 前置库")?;
            }
            tx.commit().await.context("committing cases to the 前置库")?;
            let marks: Vec<(String, String)> =
                cases.iter().map(|c| (c.case.case_id.clone(), c.state.clone())).collect();
            ingest.store.mark_exported(&marks).await?;
            written += cases.len();
            if (cases.len() as i64) < ROUND_ROWS {
                break;
            }
        }
        Ok(written)
    }

    /// Applies the answer rows not yet collected and writes back what became of each.
    async fn collect(&self, ingest: &Ingest, catalogue: &Catalogue, now: OffsetDateTime) -> anyhow::Result<usize> {
        let rows: Vec<AnyRow> = sqlx::query(AssertSqlSafe(self.sql.uncollected.clone())).fetch_all(&self.pool).await?;
        let mut results = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get(0)?;
            let unit: Option<String> = row.try_get(1)?;
            let mut cells = BTreeMap::new();
            for (i, (_, heading)) in ANSWER_COLUMNS.iter().enumerate() {
                if let Some(v) = row.try_get::<Option<String>, _>(i + 2)? {
                    let v: String = v.trim().chars().take(MAX_CELL_CHARS).collect();
                    if !v.is_empty() {
                        cells.insert((*heading).to_owned(), v);
                    }
                }
            }
            results.push((id, self.apply(ingest, catalogue, unit, cells, now).await?));
        }
        let at = format_time(now);
        let mut tx = self.pool.begin().await?;
        for (id, (result, message)) in &results {
            sqlx::query(AssertSqlSafe(self.sql.collected.clone()))
                .bind(at.clone())
                .bind(*result)
                .bind(message.clone())
                .bind(*id)
                .execute(&mut *tx)
                .await
                .context("writing answer results to the 前置库")?;
        }
        tx.commit().await.context("committing answer results to the 前置库")?;
        if !results.is_empty() {
            let stored = results.iter().filter(|(_, (r, _))| *r == "stored").count();
            tracing::info!(rows = results.len(), stored, "joint case answers collected from the 前置库");
        }
        Ok(results.len())
    }

    /// One answer row, for the department it names: `("stored", None)` or `("rejected",
    /// Some(message))`.
    async fn apply(
        &self,
        ingest: &Ingest,
        catalogue: &Catalogue,
        unit: Option<String>,
        cells: BTreeMap<String, String>,
        now: OffsetDateTime,
    ) -> anyhow::Result<(&'static str, Option<String>)> {
        let Some(unit) = unit.filter(|u| self.units.contains(u)) else {
            let message = "auth.unit_not_allowed /DEPARTMENT_USCC：该部门未配置为通过本前置库答复 / \
                           this department is not configured to answer through this 前置库";
            return Ok(("rejected", Some(message.to_owned())));
        };
        let principal = Principal {
            name: format!("前置库 {unit}"),
            role: Role::Department,
            credential_id: None,
            unit_uscc: Some(unit.clone()),
            category: None,
            report_for: Vec::new(),
            grants: Vec::new(),
        };
        let target = cells.get("答复").and_then(|a| ANSWERS.iter().find(|(zh, _)| zh == a)).map(|(_, s)| *s);
        let case_id = cells.get("案件编号").cloned();
        let said = cells.clone();
        let outcome =
            super::workbook::apply(ingest, Some(catalogue), &principal, vec![AnswerRow { row: 0, cells }], now)
                .await
                .pop()
                .context("one outcome per row")?;
        let Some(error) = outcome.error else { return Ok(("stored", None)) };
        // Applied before, but not marked collected (a crash between the two databases): the
        // case already holds this very answer.
        if error.code == "cases.state"
            && let (Some(case_id), Some(target)) = (case_id, target)
            && let Some(case) = ingest.store.case(&case_id, Some(&unit)).await?
            && holds(&case, target, &said)
        {
            return Ok(("stored", None));
        }
        let column = error.pointer.as_deref().and_then(|p| {
            let heading = p.trim_start_matches('/');
            ANSWER_COLUMNS.iter().find(|(_, h)| *h == heading).map(|(c, _)| format!("/{c}"))
        });
        let message =
            format!("{} {}：{} / {}", error.code, column.unwrap_or_default(), error.message_zh, error.message_en);
        Ok(("rejected", Some(message)))
    }
}

/// Whether a case already holds the answer a row gives (`target`: the state it leads to): the
/// same response, the same feedback, or the lifting acknowledged. An acceptance holds once the
/// case has gone on to feedback or lifting.
fn holds(case: &gateway_store::cases::Case, target: &str, row: &BTreeMap<String, String>) -> bool {
    let a = &case.answers;
    let cell = |k: &str| row.get(k).map(String::as_str);
    match target {
        "accepted" => a.responded_at.is_some() && a.reason.is_none(),
        "not_applicable" => case.state == "not_applicable" && a.reason.as_deref() == cell("不适用理由"),
        "executed" => a.feedback.as_ref().is_some_and(|f| {
            Some(f.executed_on.as_str()) == cell("实施日期")
                && Some(f.action_taken.as_str()) == cell("执行内容")
                && f.document_no.as_deref() == cell("文书号")
        }),
        "lifted" => case.state == "lifted",
        _ => false,
    }
}

/// Runs a round every `every` until the task is aborted; a failed round (the 前置库 away) is
/// logged and retried, connecting again.
pub async fn run_loop(
    ingest: Arc<Ingest>,
    catalogue: Arc<Catalogue>,
    config: CasesFrontDb,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut db: Option<FrontDb> = None;
    loop {
        tick.tick().await;
        if db.is_none() {
            match FrontDb::connect(&config).await {
                Ok(c) => db = Some(c),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the cases' 前置库 is not reachable; retrying");
                    continue;
                }
            }
        }
        if let Some(c) = &db
            && let Err(e) = c.round(&ingest, &catalogue, OffsetDateTime::now_utc()).await
        {
            tracing::warn!(error = %format!("{e:#}"), "a round with the cases' 前置库 failed; retrying");
            db = None;
        }
    }
}
