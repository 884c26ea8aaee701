//! Domain rules beyond the JSON Schema: identifier check characters, the conditional
//! requirements of the 双公示 standard, penalty categories by the law in force, and dates.
//!
//! Each rule adds [`FieldError`]s; none stops the others, so a producer sees every problem of a
//! record at once. Rules only look at well-typed values: a wrong type is the schema's error.

use std::collections::HashSet;

use serde_json::Value;
use time::Date;
use time::macros::date;

use crate::record::{
    FieldError, Fields, RecordType, USCC_FIELDS, check_org_code_field, check_resident_id_field, check_uscc_field,
};

/// 行政处罚法 (2021) took effect on this day and changed the list of penalty kinds.
pub const PENALTY_LAW_2021: Date = date!(2021 - 07 - 15);

/// Penalty kinds of the 1996 行政处罚法 Art. 8 (decisions before 2021-07-15).
pub const PENALTY_CATEGORIES_1996: &[&str] = &[
    "警告",
    "罚款",
    "没收违法所得",
    "没收非法财物",
    "责令停产停业",
    "暂扣或者吊销许可证",
    "暂扣或者吊销执照",
    "行政拘留",
    "其他",
];

/// Penalty kinds of the 2021 行政处罚法 Art. 9 (decisions from 2021-07-15).
pub const PENALTY_CATEGORIES_2021: &[&str] = &[
    "警告",
    "通报批评",
    "罚款",
    "没收违法所得",
    "没收非法财物",
    "暂扣许可证件",
    "降低资质等级",
    "吊销许可证件",
    "限制开展生产经营活动",
    "责令停产停业",
    "责令关闭",
    "限制从业",
    "行政拘留",
    "其他",
];

/// The penalty kinds in force on a decision date.
pub fn penalty_categories_in_force(decision_date: Date) -> &'static [&'static str] {
    if decision_date < PENALTY_LAW_2021 { PENALTY_CATEGORIES_1996 } else { PENALTY_CATEGORIES_2021 }
}

pub(crate) fn check(
    t: RecordType,
    f: &Fields<'_>,
    uscc_allow: &HashSet<String>,
    today: Date,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in f.0 {
        check_control_chars(value, &Path::Member(&Path::Root, key), key, errors);
    }
    for key in USCC_FIELDS {
        check_uscc_field(f, key, uscc_allow, errors);
    }
    if matches!(t, RecordType::AdminLicense | RecordType::AdminPenalty | RecordType::CreditListEntry) {
        check_subject(f, errors);
    }
    match t {
        RecordType::AdminLicense => {
            not_in_future(f, "decision_date", today, errors);
            not_before(f, "valid_to", "有效期至", "valid_from", "有效期自", errors);
        }
        RecordType::AdminPenalty => {
            not_in_future(f, "decision_date", today, errors);
            not_before(f, "penalty_effective_until", "处罚有效期", "decision_date", "处罚决定日期", errors);
            not_before(f, "publicity_end_date", "公示截止期", "decision_date", "处罚决定日期", errors);
            check_penalty(f, errors);
        }
        RecordType::CreditListEntry => {
            not_in_future(f, "listed_on", today, errors);
            not_before(f, "valid_until", "有效期至", "listed_on", "列入日期", errors);
            if f.str("status") == Some("removed") {
                for (key, zh) in [("removed_on", "移出日期"), ("removal_reason", "移出原因")] {
                    if !f.has(key) {
                        errors.push(FieldError::new(
                            format!("/{key}"),
                            "list.removal_required",
                            format!("状态为已移出（removed）时必须填写{zh}（{key}）"),
                            format!("{key} is required when status is removed"),
                        ));
                    }
                }
            }
        }
        RecordType::EvaluationResult => {
            not_in_future(f, "evaluated_on", today, errors);
            not_before(f, "valid_to", "有效期至", "valid_from", "有效期自", errors);
        }
        RecordType::MonthlyReport => {
            not_in_future(f, "submitted_on", today, errors);
            check_monthly_report(f, today, errors);
        }
        RecordType::JointCaseReport => check_case_report(f, errors),
        t => {
            not_in_future(f, "decided_on", today, errors);
            check_event(t, f, errors);
        }
    }
}

/// No text holds control characters (a NUL in a name is stored, shown and published as if it
/// were part of it): none at all in names, codes and document numbers; line breaks and tabs
/// only in free text (facts, reasons, remarks). Nested records (a correction's replacement) are
/// walked too. `key` is the member `value` is, or for an array item the array's.
fn check_control_chars(value: &Value, path: &Path<'_>, key: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::String(s) => {
            // Control characters are C0 (bytes below 0x20), DEL (0x7F) and C1 (U+0080..U+009F,
            // written 0xC2 0x80..0x9F in UTF-8): text without those bytes needs no closer look.
            // A pass without early exit, which the compiler vectorises.
            if !s.bytes().fold(false, |found, b| found | (b < 0x20) | (b == 0x7f) | (b == 0xc2)) {
                return;
            }
            const NAMES_AND_CODES: [&str; 8] =
                ["_name", "_no", "_uscc", "_code", "_id", "_unit", "_authority", "_type"];
            let free_text = !(NAMES_AND_CODES.iter().any(|s| key.ends_with(s)) || key == "department");
            let bad = |c: char| c.is_control() && !(free_text && matches!(c, '\n' | '\r' | '\t'));
            if let Some(c) = s.chars().find(|c| bad(*c)) {
                let code = format!("U+{:04X}", u32::from(c));
                errors.push(FieldError::new(
                    path.pointer(),
                    "text.control_char",
                    format!("{key} 含有控制字符 {code}，请删除后重新报送"),
                    format!("{key} contains the control character {code}; remove it and send again"),
                ));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_control_chars(item, &Path::Item(path, i), key, errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                check_control_chars(v, &Path::Member(path, k), k, errors);
            }
        }
        _ => {}
    }
}

/// Where a value sits in a record. The JSON pointer is written only when a rule fails: every
/// text of every record is checked, and writing a pointer per field cost more than the check.
enum Path<'a> {
    Root,
    Member(&'a Path<'a>, &'a str),
    Item(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn pointer(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Member(parent, key) => format!("{}/{}", parent.pointer(), crate::canonical::pointer_segment(key)),
            Path::Item(parent, i) => format!("{}/{i}", parent.pointer()),
        }
    }
}

/// A case report carries the answer fields its state needs: a reason when the measure does
/// not apply, what was done once it was applied, and when the lifting was asked and
/// acknowledged.
fn check_case_report(f: &Fields<'_>, errors: &mut Vec<FieldError>) {
    let state = f.str("state").unwrap_or_default();
    let executed = matches!(state, "executed") || (f.has("fed_back_at") && matches!(state, "lifting" | "lifted"));
    let mut needs: Vec<(&str, &str)> = Vec::new();
    if matches!(state, "accepted" | "not_applicable" | "executed") {
        needs.push(("responded_at", "响应时间"));
    }
    if state == "not_applicable" {
        needs.push(("reason", "不适用理由"));
    }
    if executed {
        needs.extend([("executed_on", "执行日期"), ("action_taken", "执行内容"), ("fed_back_at", "反馈时间")]);
    }
    if matches!(state, "lifting" | "lifted") {
        needs.extend([("lift_reason", "解除原因"), ("lift_requested_at", "解除通知时间")]);
    }
    if state == "lifted" {
        needs.push(("lifted_at", "解除确认时间"));
    }
    for (key, zh) in needs {
        if !f.has(key) {
            errors.push(FieldError::new(
                format!("/{key}"),
                "case_report.field_required",
                format!("案件状态为 {state} 时必须填写{zh}（{key}）"),
                format!("{key} is required when the case's state is {state}"),
            ));
        }
    }
}

/// Lifecycle events: a replacement is present exactly when the event replaces content, and it
/// is a record (not another event).
fn check_event(t: RecordType, f: &Fields<'_>, errors: &mut Vec<FieldError>) {
    let replaces = match t {
        RecordType::Correction => true,
        RecordType::ObjectionResolved => f.str("result") == Some("upheld_corrected"),
        _ => return,
    };
    match (replaces, f.get("replacement")) {
        // A correction without one is the schema's `required` error.
        (true, None) if t == RecordType::ObjectionResolved => errors.push(FieldError::new(
            "/replacement",
            "event.replacement_required",
            "异议成立需更正时必须提供更正后的内容（replacement）",
            "replacement is required when the objection is upheld with a correction",
        )),
        (false, Some(_)) => errors.push(FieldError::new(
            "/replacement",
            "event.replacement_not_allowed",
            "只有异议成立需更正时才能提供更正后的内容（replacement）",
            "replacement is allowed only when the objection is upheld with a correction",
        )),
        (true, Some(Value::Object(replacement))) => {
            let is_record = replacement
                .get("record_type")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<RecordType>().ok())
                .is_some_and(|t| !t.is_event());
            if !is_record {
                errors.push(FieldError::new(
                    "/replacement/record_type",
                    "event.replacement_type",
                    "更正后的内容必须是一条记录，其记录类型应为 admin_license、admin_penalty、credit_list_entry、evaluation_result 或 monthly_report",
                    "the replacement must be a record whose record_type is admin_license, admin_penalty, credit_list_entry, evaluation_result or monthly_report",
                ));
            }
        }
        // A replacement of the wrong type is the schema's error.
        _ => {}
    }
}

fn required_when(f: &Fields<'_>, key: &str, rule: &str, zh: &str, en: &str, errors: &mut Vec<FieldError>) {
    if !f.has(key) {
        errors.push(FieldError::new(format!("/{key}"), rule, zh, en));
    }
}

fn check_subject(f: &Fields<'_>, errors: &mut Vec<FieldError>) {
    check_org_code_field(f, errors);
    check_resident_id_field(f, "party_id_type", "party_id_no", errors);
    check_resident_id_field(f, "legal_rep_id_type", "legal_rep_id_no", errors);
    match f.str("party_category") {
        Some("legal_entity") => {
            required_when(
                f,
                "party_uscc",
                "party.uscc_required",
                "行政相对人类别为法人及非法人组织时，必须填写统一社会信用代码（party_uscc）",
                "party_uscc is required when party_category is legal_entity",
                errors,
            );
            required_when(
                f,
                "legal_rep_name",
                "party.legal_rep_required",
                "行政相对人类别为法人及非法人组织时，必须填写法定代表人（legal_rep_name）",
                "legal_rep_name is required when party_category is legal_entity",
                errors,
            );
        }
        Some("natural_person") => {
            required_when(
                f,
                "party_id_type",
                "party.id_type_required",
                "行政相对人类别为自然人时，必须填写证件类型（party_id_type）",
                "party_id_type is required when party_category is natural_person",
                errors,
            );
            required_when(
                f,
                "party_id_no",
                "party.id_no_required",
                "行政相对人类别为自然人时，必须填写证件号码（party_id_no）",
                "party_id_no is required when party_category is natural_person",
                errors,
            );
        }
        _ => {}
    }
}

fn check_penalty(f: &Fields<'_>, errors: &mut Vec<FieldError>) {
    let Some(Value::Array(categories)) = f.get("penalty_categories") else { return };
    let categories: Vec<(usize, &str)> =
        categories.iter().enumerate().filter_map(|(i, c)| Some((i, c.as_str()?))).collect();
    let any = |pred: &dyn Fn(&str) -> bool| categories.iter().any(|(_, c)| pred(c));
    if any(&|c| c == "罚款") {
        required_when(
            f,
            "fine_amount_wan",
            "penalty.fine_amount_required",
            "处罚类别含罚款时，必须填写罚款金额（万元）（fine_amount_wan）",
            "fine_amount_wan is required when the penalty categories include 罚款 (fine)",
            errors,
        );
    }
    if any(&|c| c == "没收违法所得" || c == "没收非法财物") {
        required_when(
            f,
            "confiscation_amount_wan",
            "penalty.confiscation_amount_required",
            "处罚类别含没收时，必须填写没收违法所得、没收非法财物的金额（万元）（confiscation_amount_wan）",
            "confiscation_amount_wan is required when the penalty categories include a confiscation",
            errors,
        );
    }
    if any(&|c| !c.starts_with("其他") && (c.contains("暂扣") || c.contains("吊销"))) {
        required_when(
            f,
            "suspended_or_revoked_license",
            "penalty.license_required",
            "处罚类别含暂扣或吊销时，必须填写暂扣或吊销证照名称及编号（suspended_or_revoked_license）",
            "suspended_or_revoked_license is required when the penalty categories include a suspension or revocation",
            errors,
        );
    }
    let Some(decided) = f.date("decision_date") else { return };
    let in_force = penalty_categories_in_force(decided);
    let law = if decided < PENALTY_LAW_2021 { "1996" } else { "2021" };
    let known = |c: &str| PENALTY_CATEGORIES_1996.contains(&c) || PENALTY_CATEGORIES_2021.contains(&c);
    for (i, c) in categories {
        // Unknown kinds are the schema's `pattern` error; `其他-…` is always allowed.
        if known(c) && !in_force.contains(&c) {
            errors.push(FieldError::new(
                format!("/penalty_categories/{i}"),
                "penalty.category_not_in_force",
                format!("处罚类别「{c}」在处罚决定日期 {decided} 施行的行政处罚法（{law}年版）中不存在"),
                format!(
                    "penalty category {c} is not in the 行政处罚法 ({law} text) in force on the decision date {decided}"
                ),
            ));
        }
    }
}

fn check_monthly_report(f: &Fields<'_>, today: Date, errors: &mut Vec<FieldError>) {
    let zero = f.get("is_zero_report").and_then(Value::as_bool);
    let count = |k: &str| f.get(k).and_then(Value::as_u64);
    let counts = (count("license_count"), count("penalty_count"));
    match (zero, counts) {
        (Some(true), (Some(a), Some(b))) if a > 0 || b > 0 => errors.push(FieldError::new(
            "/is_zero_report",
            "report.zero_with_counts",
            "零信息报送（is_zero_report）的许可和处罚条数必须为 0",
            "a zero report (is_zero_report) must have zero licence and penalty counts",
        )),
        (Some(false), (Some(0), Some(0))) => errors.push(FieldError::new(
            "/is_zero_report",
            "report.zero_counts_without_flag",
            "当月无信息时应进行零信息报送：请将 is_zero_report 设为 true 并填写声明",
            "a month with no records must be filed as a zero report: set is_zero_report to true and add the declaration",
        )),
        _ => {}
    }
    if zero == Some(true) {
        required_when(
            f,
            "zero_report_declaration",
            "report.zero_declaration_required",
            "零信息报送必须填写零信息声明（zero_report_declaration）",
            "a zero report needs its declaration (zero_report_declaration)",
            errors,
        );
    }
    let period = f.str("period").and_then(|p| crate::date::parse_date(&format!("{p}-01")));
    if let Some(first_day) = period
        && (first_day.year(), first_day.month()) > (today.year(), today.month())
    {
        errors.push(in_future_error("period", "报送期间", today));
    }
}

fn in_future_error(key: &str, zh: &str, today: Date) -> FieldError {
    FieldError::new(
        format!("/{key}"),
        "date.in_future",
        format!("{zh}（{key}）不能晚于今天（{today}）"),
        format!("{key} cannot be later than today ({today})"),
    )
}

fn not_in_future(f: &Fields<'_>, key: &str, today: Date, errors: &mut Vec<FieldError>) {
    if f.date(key).is_some_and(|d| d > today) {
        errors.push(in_future_error(key, "日期", today));
    }
}

/// `later` must not be before `earlier` (e.g. valid_to ≥ valid_from).
fn not_before(
    f: &Fields<'_>,
    later: &str,
    later_zh: &str,
    earlier: &str,
    earlier_zh: &str,
    errors: &mut Vec<FieldError>,
) {
    if let (Some(l), Some(e)) = (f.date(later), f.date(earlier))
        && l < e
    {
        errors.push(FieldError::new(
            format!("/{later}"),
            "date.order",
            format!("{later_zh}（{later}）{l} 早于{earlier_zh}（{earlier}）{e}"),
            format!("{later} ({l}) is before {earlier} ({e})"),
        ));
    }
}
