//! 响应 → 反馈 → 解除: a department's answers to its cases, checked the same way whether they
//! come as JSON (`POST /api/v1/cases/{id}/…`) or as rows of the cases workbook. Each rule
//! broken is named with its field, in Chinese and English.

use gateway_core::date::{format_date, parse_date};
use gateway_core::interchange::format_time;
use gateway_core::measures::Catalogue;
use gateway_store::cases::{Answer, Answered, Case, Feedback};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::api::ServiceError;
use crate::auth::{Principal, Role};
use crate::error::ErrorKind;
use crate::ingest::Ingest;

/// Longest free text of an answer (characters).
const MAX_TEXT: usize = 500;

/// 响应: whether the measure applies.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    /// `accepted` (the measure will be applied) or `not_applicable` (with `reason`).
    pub answer: String,
    /// Why the measure does not apply (required with `not_applicable`, at most 500 characters).
    pub reason: Option<String>,
}

/// 反馈: what was done.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// The day the measure was applied (YYYY-MM-DD, not in the future).
    pub executed_on: String,
    /// 执行内容: what was done (1–500 characters).
    pub action_taken: String,
    /// 成效: its effect (at most 500 characters).
    pub effect: Option<String>,
    /// The number of the department's decision or notice (at most 100 characters).
    pub document_no: Option<String>,
    /// SHA-256 (64 lower-case hex digits) of an attachment the department keeps.
    pub attachment_sha256: Option<String>,
    /// The point-of-decision check (`check_id` of `POST /api/v1/checks`) it follows from.
    pub check_id: Option<String>,
}

fn bad(pointer: &str, rule: &'static str, zh: String, en: String) -> ServiceError {
    ServiceError::bad_request(rule, zh, en).with_pointer(pointer)
}

/// Optional text: trimmed, empty as absent, at most `max` characters, no control characters.
fn text(pointer: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ServiceError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(bad(
            pointer,
            "cases.text",
            format!("{pointer} 最长 {max} 个字符，且不能含控制字符"),
            format!("{pointer} is at most {max} characters, without control characters"),
        ));
    }
    Ok(Some(v.to_owned()))
}

fn required(pointer: &str, value: Option<&str>, max: usize) -> Result<String, ServiceError> {
    text(pointer, value, max)?.ok_or_else(|| {
        bad(pointer, "cases.required", format!("{pointer} 不能为空"), format!("{pointer} must not be empty"))
    })
}

/// The answer a response body gives.
pub fn response(body: &ResponseBody) -> Result<Answer, ServiceError> {
    match body.answer.as_str() {
        "accepted" => Ok(Answer::Accepted),
        "not_applicable" => {
            Ok(Answer::NotApplicable { reason: required("/reason", body.reason.as_deref(), MAX_TEXT)? })
        }
        other => Err(bad(
            "/answer",
            "cases.answer",
            format!("响应 {other:?} 无效，可选：accepted（予以实施）、not_applicable（不适用，须说明理由）"),
            format!("answer {other:?} is not accepted or not_applicable (with a reason)"),
        )),
    }
}

/// The answer a feedback body gives, for a case of `case.measure_id` (whose catalogue entry
/// says whether evidence is needed), on `today`.
pub fn feedback(
    body: &FeedbackBody,
    case: &Case,
    catalogue: Option<&Catalogue>,
    today: time::Date,
) -> Result<Answer, ServiceError> {
    let executed_on = required("/executed_on", Some(&body.executed_on), 10)?;
    match parse_date(&executed_on) {
        Some(d) if d <= today => {}
        Some(_) => {
            return Err(bad(
                "/executed_on",
                "cases.future_date",
                format!("实施日期 {executed_on} 晚于今日 {}", format_date(today)),
                format!("executed_on {executed_on} is after today ({})", format_date(today)),
            ));
        }
        None => {
            return Err(bad(
                "/executed_on",
                "cases.date",
                format!("实施日期 {executed_on:?} 应为 YYYY-MM-DD"),
                format!("executed_on {executed_on:?} is not YYYY-MM-DD"),
            ));
        }
    }
    let attachment_sha256 = text("/attachment_sha256", body.attachment_sha256.as_deref(), 64)?;
    if let Some(h) = &attachment_sha256
        && (h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    {
        return Err(bad(
            "/attachment_sha256",
            "cases.sha256",
            "附件摘要应为 64 位小写十六进制 SHA-256".into(),
            "attachment_sha256 is 64 lower-case hex digits (SHA-256)".into(),
        ));
    }
    let check_id = text("/check_id", body.check_id.as_deref(), 64)?;
    if let Some(c) = &check_id
        && !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad(
            "/check_id",
            "cases.check_id",
            "核查编号只含字母、数字和连字符".into(),
            "check_id has letters, digits and hyphens only".into(),
        ));
    }
    let feedback = Feedback {
        executed_on,
        action_taken: required("/action_taken", Some(&body.action_taken), MAX_TEXT)?,
        effect: text("/effect", body.effect.as_deref(), MAX_TEXT)?,
        document_no: text("/document_no", body.document_no.as_deref(), 100)?,
        attachment_sha256,
        check_id,
    };
    let needs_evidence = catalogue.and_then(|c| c.measure(&case.case.measure_id)).is_some_and(|m| m.feedback_evidence);
    if needs_evidence && feedback.document_no.is_none() && feedback.attachment_sha256.is_none() {
        return Err(bad(
            "/document_no",
            "cases.evidence",
            format!("措施 {} 的反馈须附证明：文书号或附件摘要", case.case.measure_id),
            format!(
                "feedback on measure {} needs evidence: a document number or an attachment hash",
                case.case.measure_id
            ),
        ));
    }
    Ok(Answer::Executed(feedback))
}

/// The unit a principal answers for: a department its own; development principals any.
pub fn answering_unit(principal: &Principal) -> Result<Option<String>, ServiceError> {
    match (principal.role, &principal.unit_uscc) {
        (Role::Department, Some(unit)) => Ok(Some(unit.clone())),
        (Role::Development, _) => Ok(None),
        _ => Err(ServiceError::new(
            ErrorKind::Forbidden,
            "auth.forbidden",
            "只有案件的实施部门可以答复",
            "only the case's implementing department answers it",
        )),
    }
}

/// A case of the principal's unit, or 404 (another unit's case is not shown to exist).
pub async fn own_case(ingest: &Ingest, principal: &Principal, case_id: &str) -> Result<Case, ServiceError> {
    let unit = answering_unit(principal)?;
    ingest
        .store
        .case(case_id, unit.as_deref())
        .await
        .map_err(|e| ServiceError::internal(&e))?
        .ok_or_else(|| ServiceError::not_found("该案件", "case"))
}

/// Stores an answer of the principal's unit to its case; a case in a state that does not take
/// the answer is 409, naming the state.
pub async fn give(
    ingest: &Ingest,
    principal: &Principal,
    case_id: &str,
    answer: &Answer,
    now: OffsetDateTime,
) -> Result<Case, ServiceError> {
    let unit = answering_unit(principal)?;
    let by = principal.credential_id.as_deref().unwrap_or(&principal.name);
    let answered = ingest
        .store
        .answer_case(case_id, unit.as_deref(), answer, by, &format_time(now))
        .await
        .map_err(|e| ServiceError::internal(&e))?;
    match answered {
        Answered::Done(case) => Ok(*case),
        Answered::NotFound => Err(ServiceError::not_found("该案件", "case")),
        Answered::Conflict(case) => Err(ServiceError::new(
            ErrorKind::Conflict,
            "cases.state",
            format!("案件当前状态为 {}，不接受此答复", case.state),
            format!("the case is {}; it does not take this answer", case.state),
        )),
    }
}
