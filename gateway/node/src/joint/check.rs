//! 信用核查 at the point of decision (嵌入行政审批): before granting a matter, a department's
//! system asks whether the subject has measures the department must apply. The answer lists
//! the department's cases whose measure is in force, with the measure's title and basis from
//! the catalogue, under a check id that the department's feedback can name. Identity numbers
//! are matched by their SHA-256 (as cases keep them) and only ever shown masked; the call is
//! audited like every guarded call, with the check id, the matter and the masked subject.

use gateway_core::canonical::Sha256Digest;
use gateway_core::ident::{check_resident_id, check_uscc, mask_id_number, normalize_code};
use gateway_core::interchange::format_time;
use gateway_core::measures::Catalogue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::api::ServiceError;
use crate::auth::Principal;
use crate::ingest::Ingest;

/// `POST /api/v1/checks`: one subject, by USCC or identity number, and the matter decided.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// The subject's 统一社会信用代码 (legal entities, individual businesses).
    pub uscc: Option<String>,
    /// A natural person's identity number (居民身份证号码 checked with its check character;
    /// other documents matched as given). Never stored or shown unmasked.
    pub id_no: Option<String>,
    /// 事项编码: the administrative matter being decided (1–64 letters, digits, `-`, `_`, `.`).
    pub matter_code: String,
    /// The asking department's area (GB/T 2260, 6 digits), for the audit log.
    pub area_code: Option<String>,
}

/// A measure the asking department must apply to the subject.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeasureInForce {
    pub case_id: String,
    pub measure_id: String,
    /// From the catalogue (absent if the catalogue no longer has the measure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `punish` (惩戒) or `reward` (激励).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<gateway_core::measures::Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    pub list_type: String,
    /// The case's state: `opened`, `accepted` or `executed`.
    pub state: String,
    pub department_uscc: String,
    pub opened_at: String,
}

/// The answer of a check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckAnswer {
    /// Name it in the feedback of a case applied after this check (`check_id`).
    pub check_id: String,
    pub checked_at: String,
    /// The USCC, or the identity number masked.
    pub subject: String,
    pub matter_code: String,
    /// Empty: no measure of the asking department applies.
    pub measures: Vec<MeasureInForce>,
}

fn bad(pointer: &str, rule: &'static str, zh: &str, en: &str) -> ServiceError {
    ServiceError::bad_request(rule, zh, en).with_pointer(pointer)
}

/// The subject's key as cases hold it, and how it may be shown.
fn subject(body: &CheckBody) -> Result<(String, String), ServiceError> {
    match (body.uscc.as_deref(), body.id_no.as_deref()) {
        (Some(uscc), None) => {
            let uscc = normalize_code(uscc);
            check_uscc(&uscc).map_err(|_| {
                bad(
                    "/uscc",
                    "checks.uscc",
                    "统一社会信用代码格式或校验位错误",
                    "the USCC is malformed or its check character is wrong",
                )
            })?;
            Ok((uscc.clone(), uscc))
        }
        (None, Some(id)) => {
            let id = normalize_code(id);
            let resident = id.is_ascii()
                && matches!(id.len(), 15 | 18)
                && id.bytes().take(id.len() - 1).all(|b| b.is_ascii_digit());
            let well_formed = if resident {
                check_resident_id(&id).is_ok()
            } else {
                (6..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
            };
            if !well_formed {
                return Err(bad(
                    "/id_no",
                    "checks.id_no",
                    "证件号码格式或校验位错误",
                    "the identity number is malformed or its check character is wrong",
                ));
            }
            Ok((Sha256Digest::of(id.as_bytes()).to_hex(), mask_id_number(&id)))
        }
        _ => Err(bad("/uscc", "checks.subject", "请给出 uscc 或 id_no 之一", "give exactly one of uscc and id_no")),
    }
}

/// Runs a check for the principal's unit (a development principal sees every department's).
/// Returns the answer and the audit detail of the call.
pub async fn check(
    ingest: &Ingest,
    catalogue: Option<&Catalogue>,
    principal: &Principal,
    body: &CheckBody,
    now: OffsetDateTime,
) -> Result<(CheckAnswer, String), ServiceError> {
    let matter = body.matter_code.trim();
    if matter.is_empty()
        || matter.len() > 64
        || !matter.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "/matter_code",
            "checks.matter_code",
            "事项编码为 1–64 位字母、数字、-、_ 或 .",
            "matter_code is 1–64 letters, digits, '-', '_' or '.'",
        ));
    }
    if let Some(area) = &body.area_code
        && (area.len() != 6 || !area.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("/area_code", "checks.area_code", "地区编码为 6 位数字", "area_code is 6 digits"));
    }
    let (key, shown) = subject(body)?;
    let unit = super::answers::answering_unit(principal)?;
    let cases = ingest.store.subject_cases(&key, unit.as_deref()).await.map_err(|e| ServiceError::internal(&e))?;
    let measures = cases
        .into_iter()
        .map(|c| {
            let m = catalogue.and_then(|cat| cat.measure(&c.case.measure_id));
            MeasureInForce {
                title: m.map(|m| m.title.clone()),
                kind: m.map(|m| m.kind),
                legal_basis: m.map(|m| m.legal_basis.clone()),
                case_id: c.case.case_id,
                measure_id: c.case.measure_id,
                list_type: c.case.list_type,
                state: c.state,
                department_uscc: c.case.department_uscc,
                opened_at: c.case.opened_at,
            }
        })
        .collect::<Vec<_>>();
    let answer = CheckAnswer {
        check_id: uuid::Uuid::now_v7().to_string(),
        checked_at: format_time(now),
        subject: shown,
        matter_code: matter.to_owned(),
        measures,
    };
    let detail = format!(
        "check {} matter {} area {} subject {} measures {}",
        answer.check_id,
        answer.matter_code,
        body.area_code.as_deref().unwrap_or("-"),
        answer.subject,
        answer.measures.len()
    );
    Ok((answer, detail))
}
