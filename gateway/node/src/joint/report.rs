//! Cases across nodes (ADR 0008): a case opened here from a list entry that came from another
//! node reports each change of its state upward as a `joint_case_report` record, and a node
//! reads the reports that reached it from below into its view of the federation's loop.
//!
//! A report is a record this node originates, so the interchange signs, proves, receipts and
//! forwards it like any other (store and forward, no new transport). Each change of one case
//! is a new version of one record (natural key: entry × measure × department × case), built
//! only from the case as stored: a report made again after a crash is the same content, which
//! the store takes as a duplicate. The case is marked reported after its record is stored, so
//! nothing is lost between the two.

use std::sync::Arc;

use gateway_core::record::RecordType;
use gateway_store::cases::{Case, CaseReport};
use gateway_store::{RecordQuery, Store};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::ingest::{Ingest, Status};

/// Cases reported, and report records read, per step.
const PAGE: i64 = 500;

/// The `region_code` of the records a member originates: the division in its id (信用中国,
/// `cn-000000`, writes 100000 as the schemas say).
fn region_code(member_id: &str) -> String {
    match member_id.strip_prefix("cn-").and_then(|rest| rest.get(..6)) {
        Some("000000") | None => "100000".to_owned(),
        Some(code) => code.to_owned(),
    }
}

/// The report of one case as it stands: its entry, measure and department, its state and its
/// answers. Nothing about the subject beyond the entry's ids (the nodes above hold the entry).
pub fn report(case: &Case, member_id: &str) -> Value {
    let c = &case.case;
    let mut v = Map::new();
    let mut put = |k: &str, value: Option<&str>| {
        if let Some(value) = value {
            v.insert(k.to_owned(), Value::String(value.to_owned()));
        }
    };
    put("record_type", Some(RecordType::JointCaseReport.as_str()));
    put("region_code", Some(&region_code(member_id)));
    put("case_id", Some(&c.case_id));
    put("entry_origin", Some(&c.entry_origin));
    put("entry_record_id", Some(&c.entry_record_id));
    put("catalogue", Some(&c.catalogue));
    put("measure_id", Some(&c.measure_id));
    put("department_uscc", Some(&c.department_uscc));
    put("list_type", Some(&c.list_type));
    put("state", Some(&case.state));
    put("opened_on", Some(&c.opened_on));
    put("response_due", c.response_due.as_deref());
    put("feedback_due", c.feedback_due.as_deref());
    let a = &case.answers;
    put("responded_at", a.responded_at.as_deref());
    put("reason", a.reason.as_deref());
    if let Some(f) = &a.feedback {
        put("executed_on", Some(&f.executed_on));
        put("action_taken", Some(&f.action_taken));
        put("effect", f.effect.as_deref());
        put("document_no", f.document_no.as_deref());
        put("attachment_sha256", f.attachment_sha256.as_deref());
        put("check_id", f.check_id.as_deref());
    }
    put("fed_back_at", a.fed_back_at.as_deref());
    put("lift_reason", a.lift_reason.as_deref());
    put("lift_requested_at", a.lift_requested_at.as_deref());
    put("lifted_at", a.lifted_at.as_deref());
    put("disclosure_scope", Some("gov_shared"));
    Value::Object(v)
}

/// Reports every case with an unreported change; returns how many were reported.
pub async fn report_cases(ingest: &Arc<Ingest>, now: OffsetDateTime) -> anyhow::Result<u64> {
    let mut reported = 0;
    // One batch per step, within the node's own batch limit.
    let page = PAGE.min(i64::try_from(ingest.limits.max_batch_records).unwrap_or(PAGE)).max(1);
    loop {
        let cases = ingest.store.unreported_cases(page).await?;
        if cases.is_empty() {
            break;
        }
        let body: Vec<Value> = cases.iter().map(|c| report(c, &ingest.member_id)).collect();
        let result = ingest.push_node_made(bytes::Bytes::from(serde_json::to_vec(&body)?), now).await?;
        let mut stored = Vec::new();
        for outcome in &result.outcomes {
            let case = &cases[outcome.index];
            if outcome.status == Status::Rejected {
                // A case the report schema refuses is a defect here, not a client's mistake:
                // it stays unreported, and says why, until a fixed version reports it.
                tracing::error!(case_id = %case.case.case_id, errors = ?outcome.errors, "joint case report refused");
            } else {
                stored.push((case.case.case_id.clone(), case.state.clone()));
            }
        }
        ingest.store.mark_reported(&stored).await?;
        reported += stored.len() as u64;
        if stored.is_empty() || (cases.len() as i64) < page {
            break;
        }
    }
    if reported > 0 {
        tracing::info!(reported, "joint case changes reported upward");
    }
    Ok(reported)
}

/// Reads the case reports stored since the last pass (from the nodes below: this node's own
/// are its cases) into the federation's loop. Returns how many were read.
pub async fn read_reports(store: &Store, member_id: &str) -> anyhow::Result<u64> {
    let mut after = store.report_cursor().await?;
    let mut read = 0;
    loop {
        let q =
            RecordQuery { record_type: Some(RecordType::JointCaseReport), after, limit: PAGE, ..Default::default() };
        let page = store.query(&q).await?;
        let Some(last) = page.last().map(|r| r.seq) else { break };
        let reports: Vec<CaseReport> = page
            .iter()
            .filter(|r| r.origin != member_id)
            .filter_map(|r| {
                let content: Value = serde_json::from_str(&r.content).ok()?;
                case_report(&r.origin, r.version, &content)
            })
            .collect();
        read += reports.len() as u64;
        store.take_case_reports(&reports, last).await?;
        after = last;
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    Ok(read)
}

/// A stored report's content as the loop counts it (the schema made sure of its fields).
fn case_report(reporter: &str, version: i64, content: &Value) -> Option<CaseReport> {
    let text = |k: &str| content.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(CaseReport {
        reporter: reporter.to_owned(),
        case_id: text("case_id")?,
        entry_origin: text("entry_origin")?,
        entry_record_id: text("entry_record_id")?,
        measure_id: text("measure_id")?,
        department_uscc: text("department_uscc")?,
        state: text("state")?,
        opened_on: text("opened_on")?,
        response_due: text("response_due"),
        feedback_due: text("feedback_due"),
        responded_at: text("responded_at"),
        not_applicable: content.get("reason").is_some(),
        fed_back_at: text("fed_back_at"),
        lift_requested_at: text("lift_requested_at"),
        lifted_at: text("lifted_at"),
        report_version: version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_national_platform_writes_its_region_as_the_schemas_say() {
        assert_eq!(region_code("cn-370306"), "370306");
        assert_eq!(region_code("cn-000000"), "100000");
        assert_eq!(region_code("cn-370300-test"), "370300");
    }

    #[test]
    fn a_report_is_valid_in_every_state_and_carries_no_subject() {
        let validator = gateway_core::record::RecordValidator::new(&Default::default()).expect("schemas");
        let today = time::macros::date!(2026 - 12 - 07);
        let mut case = Case {
            case: gateway_store::cases::NewCase {
                case_id: "019a7c1e-5b2d-7e10-8a3f-2c4d5e6f7a81".into(),
                subject_key: "91370306MA3P6H1L2M".into(),
                subject_name: "淄博某某建材有限公司".into(),
                measure_id: "restrict-public-bidding".into(),
                catalogue: "cn-credit-measures-demo".into(),
                department_uscc: "11370306MB0D271921".into(),
                entry_origin: "cn-000000".into(),
                entry_record_id: "019a7b00-1111-7222-8333-444455556666".into(),
                list_type: "black".into(),
                opened_at: "2026-12-01T02:00:00Z".into(),
                opened_on: "2026-12-01".into(),
                response_due: Some("2026-12-08".into()),
                feedback_due: Some("2027-01-05".into()),
                valid_until: Some("2099-12-31".into()),
                reports: true,
            },
            state: "opened".into(),
            answers: Default::default(),
        };
        let check = |case: &Case| {
            let v = report(case, "cn-370306");
            assert!(v.get("subject_name").is_none() && v.get("subject_key").is_none(), "{v}");
            validator.check_json(v.to_string().as_bytes(), today).unwrap_or_else(|e| panic!("{}: {e:#?}", case.state));
        };
        check(&case);
        case.state = "executed".into();
        case.answers.responded_at = Some("2026-12-02T01:00:00Z".into());
        case.answers.fed_back_at = Some("2026-12-03T01:00:00Z".into());
        case.answers.feedback = Some(gateway_store::cases::Feedback {
            executed_on: "2026-12-03".into(),
            action_taken: "限制参与区属工程招标投标".into(),
            effect: None,
            document_no: Some("周住建限〔2026〕12号".into()),
            attachment_sha256: None,
            check_id: Some("HC-2026-01".into()),
        });
        check(&case);
        case.state = "lifted".into();
        case.answers.lift_reason = Some("repaired".into());
        case.answers.lift_requested_at = Some("2026-12-04T01:00:00Z".into());
        case.answers.lifted_at = Some("2026-12-04T02:00:00Z".into());
        check(&case);
        let mut refused = report(&case, "cn-370306");
        refused.as_object_mut().expect("object").remove("lifted_at");
        let errors = validator.check_json(refused.to_string().as_bytes(), today).expect_err("lifted needs lifted_at");
        assert_eq!(errors[0].pointer, "/lifted_at");
    }
}
