//! Checking a record: strict JSON, normalisation of identifiers, the type's JSON Schema (built
//! once), the domain rules (`crate::rules`), then its canonical content, content hash and
//! natural key. A bad record gets every problem found, each with its JSON pointer.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};
use time::Date;

use crate::canonical::{
    Sha256Digest, StrictJsonError, canonical_string, parse_strict, parse_strict_str, pointer_segment, push_json_string,
};
use crate::date::parse_date;
use crate::ident::{IdentError, check_org_code, check_resident_id, check_uscc, is_normal_code, normalize_code};
use crate::rules;

use super::{Disclosure, EventTarget, FieldError, RecordType};

/// A record that passed every check, normalised, with its hashes.
#[derive(Debug, Clone)]
pub struct ValidRecord {
    pub record_type: RecordType,
    /// RFC 8785 canonical JSON of the normalised content: exactly the bytes that were hashed.
    pub canonical_content: String,
    /// SHA-256 of `canonical_content`.
    pub content_hash: Sha256Digest,
    /// Identifies "the same decision" across versions (see [`natural_key`]).
    pub natural_key: Sha256Digest,
    /// The subject's USCC, when it has one (for queries by company).
    pub subject_uscc: Option<String>,
    /// The department answerable for the record (数据来源单位, or the reporting department of a
    /// monthly report) and how complete the record is: quality ratios and SLA views are kept
    /// per department.
    pub quality: crate::quality::Observation,
    /// The day the 7-working-day publicity clock starts: the decision date (双公示) or listing
    /// date (list entries). `None` for types without a publicity deadline.
    pub clock_start: Option<Date>,
    /// Who may see it (`disclosure_scope`); routing keeps `gov_shared` and `authorized_query`
    /// records away from public sinks.
    pub disclosure: Disclosure,
    /// For a lifecycle event, the record version it is about and what it does to it.
    pub target: Option<EventTarget>,
}

/// Operator settings for validation.
#[derive(Debug, Clone, Default)]
pub struct ValidationPolicy {
    /// Genuine pre-2015 pilot USCCs that fail the GB 32100 check character but must be accepted.
    pub uscc_allow_list: Vec<String>,
}

/// Why the validator could not be built (a broken shipped schema: a build defect).
#[derive(Debug, thiserror::Error)]
#[error("schema of {record_type} is invalid: {message}")]
pub struct SchemaBuildError {
    pub record_type: RecordType,
    pub message: String,
}

/// Validates records: schema first, then the domain rules. Built once and shared.
pub struct RecordValidator {
    schemas: Vec<Schema>,
    uscc_allow: HashSet<String>,
}

/// One record type's compiled schema, with what validation reads from it on every record.
struct Schema {
    text: Value,
    validator: jsonschema::Validator,
    /// The fields it requires at the top level (for data quality's 完整率).
    required: Vec<String>,
}

impl fmt::Debug for RecordValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordValidator").field("uscc_allow", &self.uscc_allow.len()).finish_non_exhaustive()
    }
}

/// Fields holding a 统一社会信用代码, normalised and checked wherever they appear.
pub(crate) const USCC_FIELDS: &[&str] = &[
    "party_uscc",
    "issuing_authority_uscc",
    "penalizing_authority_uscc",
    "source_unit_uscc",
    "listing_authority_uscc",
    "evaluator_uscc",
    "subject_uscc",
    "department_uscc",
    "deciding_authority_uscc",
];

impl RecordValidator {
    pub fn new(policy: &ValidationPolicy) -> Result<Self, SchemaBuildError> {
        let mut schemas = Vec::new();
        for t in RecordType::ALL {
            let err = |message: String| SchemaBuildError { record_type: t, message };
            let schema: Value = serde_json::from_str(t.schema_text()).map_err(|e| err(e.to_string()))?;
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| err(e.to_string()))?;
            let required = schema["required"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            schemas.push(Schema { text: schema, validator, required });
        }
        let uscc_allow = policy.uscc_allow_list.iter().map(|c| normalize_code(c)).collect();
        Ok(Self { schemas, uscc_allow })
    }

    /// The fields the schema of `t` requires (top level).
    pub fn required_fields(&self, t: RecordType) -> &[String] {
        &self.schema(t).required
    }

    fn schema(&self, t: RecordType) -> &Schema {
        &self.schemas[t as usize]
    }

    /// What a record, valid or not, says about its department's data quality.
    pub fn observe(&self, value: &Value) -> crate::quality::Observation {
        let record_type = value.get("record_type").and_then(Value::as_str).and_then(|t| t.parse().ok());
        let required = record_type.map(|t| self.required_fields(t)).unwrap_or_default();
        crate::quality::observe(value, record_type, required)
    }

    /// [`observe`](Self::observe) for JSON text; an unreadable record names no department.
    pub fn observe_json(&self, text: &[u8]) -> crate::quality::Observation {
        serde_json::from_slice(text).map(|v: Value| self.observe(&v)).unwrap_or_default()
    }

    /// Checks one record given as JSON text. `today` bounds decision dates.
    pub fn check_json(&self, text: &[u8], today: Date) -> Result<ValidRecord, Vec<FieldError>> {
        let value = parse_strict(text).map_err(|e| vec![json_error(&e)])?;
        self.check(value, today)
    }

    /// [`check_json`](Self::check_json) for text known to be UTF-8 (a record of a parsed
    /// batch), which is not checked for it again.
    pub fn check_str(&self, text: &str, today: Date) -> Result<ValidRecord, Vec<FieldError>> {
        let value = parse_strict_str(text).map_err(|e| vec![json_error(&e)])?;
        self.check(value, today)
    }

    /// Checks one parsed record.
    pub fn check(&self, value: Value, today: Date) -> Result<ValidRecord, Vec<FieldError>> {
        self.check_canonical(value, today, None)
    }

    /// [`check`](Self::check) for a record whose RFC 8785 form is already known (e.g. computed
    /// to hash the item it came in): `canonical` must be exactly `canonical_string(&value)`. It
    /// becomes the stored content unless normalisation changes the record.
    pub fn check_canonical(
        &self,
        value: Value,
        today: Date,
        canonical: Option<String>,
    ) -> Result<ValidRecord, Vec<FieldError>> {
        let Value::Object(mut record) = value else {
            return Err(vec![FieldError::new(
                "",
                "record.not_object",
                "记录必须是 JSON 对象",
                "a record must be a JSON object",
            )]);
        };
        let record_type = match record.get("record_type") {
            None => {
                return Err(vec![FieldError::new(
                    "/record_type",
                    "schema.required",
                    "缺少必填字段 记录类型（record_type）",
                    "required field record_type is missing",
                )]);
            }
            Some(value) => match value.as_str().map(str::parse::<RecordType>) {
                Some(Ok(t)) => t,
                _ => {
                    return Err(vec![FieldError::new(
                        "/record_type",
                        "record_type.unknown",
                        format!("未知的记录类型 {value}，应为以下之一：{}", type_list()),
                        format!("unknown record type {value}; expected one of {}", type_list()),
                    )]);
                }
            },
        };
        let normalised = normalize(&mut record);
        let value = Value::Object(record);
        let schema = self.schema(record_type);
        // `is_valid` is the fast path; the error iterator runs only for records that fail.
        let mut errors: Vec<FieldError> = if schema.validator.is_valid(&value) {
            Vec::new()
        } else {
            schema.validator.iter_errors(&value).map(|e| schema_error(&schema.text, &e)).collect()
        };
        let Value::Object(record) = &value else { unreachable!("built as an object above") };
        let fields = Fields(record);
        rules::check(record_type, &fields, &self.uscc_allow, today, &mut errors);
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.pointer.cmp(&b.pointer).then_with(|| a.rule.cmp(&b.rule)));
            errors.dedup();
            return Err(errors);
        }
        let canonical_content = match canonical {
            Some(c) if !normalised => c,
            _ => canonical_string(&value),
        };
        Ok(ValidRecord {
            record_type,
            content_hash: Sha256Digest::of(canonical_content.as_bytes()),
            natural_key: natural_key(record_type, &fields),
            subject_uscc: ["party_uscc", "subject_uscc", "department_uscc"]
                .iter()
                .find_map(|k| fields.str(k))
                .map(str::to_owned),
            quality: self.observe(&value),
            clock_start: match record_type {
                RecordType::AdminLicense | RecordType::AdminPenalty => fields.date("decision_date"),
                RecordType::CreditListEntry => fields.date("listed_on"),
                _ => None,
            },
            // Every schema requires a valid scope; a record without one is never public.
            disclosure: fields.str("disclosure_scope").and_then(Disclosure::parse).unwrap_or(Disclosure::GovShared),
            target: crate::lifecycle::transition(record_type, &value).map(|transition| EventTarget {
                origin: fields.str("target_origin").unwrap_or_default().to_owned(),
                record_id: fields.str("target_record_id").unwrap_or_default().to_owned(),
                version: fields.get("target_version").and_then(Value::as_i64).unwrap_or(0),
                transition,
                decided_on: fields.str("decided_on").unwrap_or_default().to_owned(),
            }),
            canonical_content,
        })
    }
}

/// The record types, for messages.
fn type_list() -> String {
    RecordType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// Read access to a record's top-level fields.
pub(crate) struct Fields<'a>(pub(crate) &'a Map<String, Value>);

impl Fields<'_> {
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
    }
    pub(crate) fn date(&self, key: &str) -> Option<Date> {
        self.str(key).and_then(parse_date)
    }
    pub(crate) fn has(&self, key: &str) -> bool {
        match self.0.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        }
    }
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

/// Brings identifiers to their canonical spelling before anything is checked or hashed, so
/// `９１…`, `91…` and ` 91… ` are one code. Returns whether anything changed.
fn normalize(record: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    let mut set = |s: &mut String, code: String| {
        if *s != code {
            *s = code;
            changed = true;
        }
    };
    for key in USCC_FIELDS.iter().chain(["party_org_code"].iter()) {
        if let Some(Value::String(s)) = record.get_mut(*key) {
            let org_code = *key == "party_org_code";
            if is_normal_code(s) && !(org_code && s.contains('-')) {
                continue;
            }
            let mut code = normalize_code(s);
            if org_code {
                code.retain(|c| c != '-');
            }
            set(s, code);
        }
    }
    for (type_key, no_key) in [("party_id_type", "party_id_no"), ("legal_rep_id_type", "legal_rep_id_no")] {
        let is_resident_id = record.get(type_key).and_then(Value::as_str) == Some("身份证");
        if let (true, Some(Value::String(s))) = (is_resident_id, record.get_mut(no_key))
            && !is_normal_code(s)
        {
            let code = normalize_code(s);
            set(s, code);
        }
    }
    changed
}

/// The natural key: the fields that name one decision about one subject, whatever its
/// version. Equal natural key and equal content is a duplicate; equal natural key with other
/// content is a new version.
fn natural_key(t: RecordType, f: &Fields<'_>) -> Sha256Digest {
    let party =
        || f.str("party_uscc").or_else(|| f.str("party_id_no")).or_else(|| f.str("party_name")).unwrap_or_default();
    let s = |k: &str| f.str(k).unwrap_or_default();
    let parts: Vec<&str> = match t {
        RecordType::AdminLicense => {
            vec![t.as_str(), s("decision_doc_no"), s("issuing_authority_uscc"), s("decision_date"), party()]
        }
        RecordType::AdminPenalty => {
            vec![t.as_str(), s("decision_doc_no"), s("penalizing_authority_uscc"), s("decision_date"), party()]
        }
        RecordType::CreditListEntry => {
            vec![t.as_str(), s("list_type"), s("domain"), s("listing_authority_uscc"), s("listed_on"), party()]
        }
        RecordType::EvaluationResult => {
            vec![t.as_str(), s("scheme_id"), s("scheme_version"), s("subject_uscc"), s("period"), s("evaluator_uscc")]
        }
        RecordType::MonthlyReport => vec![t.as_str(), s("department_uscc"), s("period")],
        // One case: its changes are versions. The reporting node is the record's origin.
        RecordType::JointCaseReport => {
            vec![
                t.as_str(),
                s("entry_origin"),
                s("entry_record_id"),
                s("measure_id"),
                s("department_uscc"),
                s("case_id"),
            ]
        }
        // One decision about one target version; an objection's opening and resolution are
        // told apart by type, two objections to one target by their id.
        _ => {
            let version = f.get("target_version").map(Value::to_string).unwrap_or_default();
            let parts = [
                t.as_str(),
                s("target_origin"),
                s("target_record_id"),
                &version,
                s("objection_id"),
                s("decided_on"),
                s("deciding_authority_uscc"),
            ];
            return key_of(&parts);
        }
    };
    key_of(&parts)
}

/// The hash of the parts as a JSON array of strings in RFC 8785 form, written directly (it is
/// the hash every stored record's key was made with: the text must not change).
fn key_of(parts: &[&str]) -> Sha256Digest {
    let mut text = String::with_capacity(256);
    text.push('[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        push_json_string(part, &mut text);
    }
    text.push(']');
    Sha256Digest::of(text.as_bytes())
}

pub(crate) fn json_error(e: &StrictJsonError) -> FieldError {
    match e {
        StrictJsonError::DuplicateKey { pointer, key } => FieldError::new(
            pointer.clone(),
            "json.duplicate_key",
            format!("JSON 对象中字段 {key} 重复出现"),
            format!("member {key} appears more than once in one JSON object"),
        ),
        StrictJsonError::Syntax(m) => {
            FieldError::new("", "json.syntax", format!("JSON 格式错误：{m}"), format!("malformed JSON: {m}"))
        }
    }
}

/// The Chinese title of a top-level property, from the schema, for messages.
fn title<'a>(schema: &'a Value, field: &str) -> &'a str {
    schema["properties"][field]["title"].as_str().unwrap_or("")
}

pub(crate) fn schema_error(schema: &Value, e: &jsonschema::ValidationError<'_>) -> FieldError {
    use jsonschema::error::ValidationErrorKind as K;
    let path = e.instance_path().to_string();
    let field = path.trim_start_matches('/').split('/').next().unwrap_or("").to_owned();
    let name = |f: &str| {
        let t = title(schema, f);
        if t.is_empty() { f.to_owned() } else { format!("{t}（{f}）") }
    };
    let (pointer, rule, zh, en) = match e.kind() {
        K::Required { property } => {
            let p = property.as_str().unwrap_or_default();
            (
                format!("{path}/{}", pointer_segment(p)),
                "schema.required",
                format!("缺少必填字段 {}", name(p)),
                format!("required field {p} is missing"),
            )
        }
        K::AdditionalProperties { unexpected } => {
            let p = unexpected.first().cloned().unwrap_or_default();
            (
                format!("{path}/{}", pointer_segment(&p)),
                "schema.additional_properties",
                format!("不允许的字段 {p}"),
                format!("field {p} is not allowed"),
            )
        }
        K::Type { kind } => (
            path,
            "schema.type",
            format!("{} 的类型错误，应为 {kind:?}", name(&field)),
            format!("{field} has the wrong type; expected {kind:?}"),
        ),
        K::Enum { options } => (
            path,
            "schema.enum",
            format!("{} 的取值不在代码表中，可选值：{options}", name(&field)),
            format!("{field} must be one of {options}"),
        ),
        K::Constant { expected_value } => (
            path,
            "schema.const",
            format!("{} 必须为 {expected_value}", name(&field)),
            format!("{field} must be {expected_value}"),
        ),
        K::Pattern { pattern } => (
            path,
            "schema.pattern",
            format!("{} 的格式不正确（应匹配 {pattern}）", name(&field)),
            format!("{field} does not match {pattern}"),
        ),
        K::Format { format } => (
            path,
            "schema.format",
            format!("{} 不是有效的 {format}（日期应为 YYYY-MM-DD）", name(&field)),
            format!("{field} is not a valid {format}"),
        ),
        K::MaxLength { limit } => (
            path,
            "schema.max_length",
            format!("{} 超过最大长度 {limit} 个字符", name(&field)),
            format!("{field} is longer than {limit} characters"),
        ),
        K::MinLength { limit } => (
            path,
            "schema.min_length",
            format!("{} 不能为空（至少 {limit} 个字符）", name(&field)),
            format!("{field} must have at least {limit} characters"),
        ),
        K::Minimum { limit } | K::ExclusiveMinimum { limit } => (
            path,
            "schema.minimum",
            format!("{} 小于允许的最小值 {limit}", name(&field)),
            format!("{field} is below the minimum {limit}"),
        ),
        K::Maximum { limit } | K::ExclusiveMaximum { limit } => (
            path,
            "schema.maximum",
            format!("{} 大于允许的最大值 {limit}", name(&field)),
            format!("{field} is above the maximum {limit}"),
        ),
        K::MinItems { limit } => (
            path,
            "schema.min_items",
            format!("{} 至少需要 {limit} 项", name(&field)),
            format!("{field} needs at least {limit} items"),
        ),
        K::MaxItems { limit } => (
            path,
            "schema.max_items",
            format!("{} 最多 {limit} 项", name(&field)),
            format!("{field} allows at most {limit} items"),
        ),
        K::UniqueItems => {
            (path, "schema.unique_items", format!("{} 中有重复项", name(&field)), format!("{field} has repeated items"))
        }
        _ => (
            path,
            "schema.invalid",
            format!("{} 不符合模式：{e}", name(&field)),
            format!("{field} does not match the schema: {e}"),
        ),
    };
    FieldError { pointer, rule: rule.to_owned(), message_zh: zh, message_en: en }
}

/// Maps an identifier check failure to its rule id and messages.
pub(crate) fn ident_error(pointer: String, family: &str, label_zh: &str, label_en: &str, e: IdentError) -> FieldError {
    let (suffix, zh, en) = match e {
        IdentError::Format => ("format", "格式错误", "is malformed"),
        IdentError::CheckChar => ("check_char", "校验位错误", "has a wrong check character"),
        IdentError::BirthDate => ("birth_date", "中的出生日期无效", "contains an impossible birth date"),
    };
    FieldError::new(pointer, &format!("{family}.{suffix}"), format!("{label_zh}{zh}"), format!("{label_en} {en}"))
}

pub(crate) fn check_uscc_field(f: &Fields<'_>, key: &str, allow: &HashSet<String>, errors: &mut Vec<FieldError>) {
    let Some(code) = f.str(key) else { return };
    // Format errors are the schema's `pattern`; only a well-formed code gets its check character tested.
    if let Err(IdentError::CheckChar) = check_uscc(code)
        && !allow.contains(code)
    {
        errors.push(ident_error(format!("/{key}"), "uscc", "统一社会信用代码", "the USCC", IdentError::CheckChar));
    }
}

pub(crate) fn check_org_code_field(f: &Fields<'_>, errors: &mut Vec<FieldError>) {
    if let Some(Err(IdentError::CheckChar)) = f.str("party_org_code").map(check_org_code) {
        errors.push(ident_error(
            "/party_org_code".into(),
            "org_code",
            "组织机构代码",
            "the organisation code",
            IdentError::CheckChar,
        ));
    }
}

pub(crate) fn check_resident_id_field(f: &Fields<'_>, type_key: &str, no_key: &str, errors: &mut Vec<FieldError>) {
    if f.str(type_key) != Some("身份证") {
        return;
    }
    if let Some(Err(e)) = f.str(no_key).map(check_resident_id) {
        errors.push(ident_error(format!("/{no_key}"), "id_number", "居民身份证号码", "the resident ID number", e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored natural keys were made by hashing a JSON array of the parts in RFC 8785 form;
    /// `key_of` writes that text directly and must give the very same bytes.
    #[test]
    fn natural_keys_hash_the_canonical_array_of_their_parts() {
        let parts =
            ["admin_penalty", "周市监罚〔2026〕7号", "", "a\"b\\c\nd\u{1}e", "😀", "\u{e000}", "91370303MA3C5XKN2B"];
        let array = Value::Array(parts.iter().map(|p| Value::String((*p).to_owned())).collect());
        assert_eq!(key_of(&parts), Sha256Digest::of(&crate::canonical::canonical_bytes(&array)));
        assert_eq!(key_of(&[]), Sha256Digest::of(b"[]"));
    }
}
