//! Canonical credit records, the vocabulary: the closed list of record types, field errors,
//! disclosure scopes, event targets, and which fields hold identity numbers (masked whenever
//! content leaves the store). `validator.rs` checks records against their JSON Schemas (the
//! wire contract in `schemas/`) and the domain rules, normalises them, and gives their content
//! hashes and natural keys.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

mod validator;

pub(crate) use validator::{
    Fields, USCC_FIELDS, check_org_code_field, check_resident_id_field, check_uscc_field, schema_error,
};
pub use validator::{RecordValidator, SchemaBuildError, ValidRecord, ValidationPolicy};

/// The kinds of record the gateway carries. A closed list: adding one means adding its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// 行政许可
    AdminLicense,
    /// 行政处罚
    AdminPenalty,
    /// 红名单 / 黑名单 / 重点关注名单
    CreditListEntry,
    /// 信用评价结果
    EvaluationResult,
    /// 月报 / 零信息报送
    MonthlyReport,
    /// 更正: the replacement becomes the target's current content.
    Correction,
    /// 撤销: the target is withdrawn.
    Withdrawal,
    /// 信用修复: publicity and sharing of the target stop.
    Repair,
    /// 异议受理: the target is disputed.
    ObjectionOpened,
    /// 异议处理结果: the target is restored, corrected or withdrawn.
    ObjectionResolved,
    /// 公示期满: the target's publicity period is over.
    PublicityExpired,
    /// 联合奖惩案件反馈: one joint case's state where its department answers, sent upward
    /// (ADR 0008). Each change of the case is a new version of one record.
    JointCaseReport,
}

impl RecordType {
    /// Every type, in declaration order (the validator indexes its schemas by `t as usize`).
    pub const ALL: [RecordType; 12] = [
        Self::AdminLicense,
        Self::AdminPenalty,
        Self::CreditListEntry,
        Self::EvaluationResult,
        Self::MonthlyReport,
        Self::Correction,
        Self::Withdrawal,
        Self::Repair,
        Self::ObjectionOpened,
        Self::ObjectionResolved,
        Self::PublicityExpired,
        Self::JointCaseReport,
    ];

    /// Whether this is a lifecycle event about another record (interchange-v1 §2).
    pub fn is_event(self) -> bool {
        matches!(
            self,
            Self::Correction
                | Self::Withdrawal
                | Self::Repair
                | Self::ObjectionOpened
                | Self::ObjectionResolved
                | Self::PublicityExpired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminLicense => "admin_license",
            Self::AdminPenalty => "admin_penalty",
            Self::CreditListEntry => "credit_list_entry",
            Self::EvaluationResult => "evaluation_result",
            Self::MonthlyReport => "monthly_report",
            Self::Correction => "correction",
            Self::Withdrawal => "withdrawal",
            Self::Repair => "repair",
            Self::ObjectionOpened => "objection_opened",
            Self::ObjectionResolved => "objection_resolved",
            Self::PublicityExpired => "publicity_expired",
            Self::JointCaseReport => "joint_case_report",
        }
    }

    /// The JSON Schema of this type, as shipped in `schemas/<type>/schema.json`.
    pub fn schema_text(self) -> &'static str {
        match self {
            Self::AdminLicense => include_str!("../../../../schemas/admin_license/schema.json"),
            Self::AdminPenalty => include_str!("../../../../schemas/admin_penalty/schema.json"),
            Self::CreditListEntry => include_str!("../../../../schemas/credit_list_entry/schema.json"),
            Self::EvaluationResult => include_str!("../../../../schemas/evaluation_result/schema.json"),
            Self::MonthlyReport => include_str!("../../../../schemas/monthly_report/schema.json"),
            Self::Correction => include_str!("../../../../schemas/correction/schema.json"),
            Self::Withdrawal => include_str!("../../../../schemas/withdrawal/schema.json"),
            Self::Repair => include_str!("../../../../schemas/repair/schema.json"),
            Self::ObjectionOpened => include_str!("../../../../schemas/objection_opened/schema.json"),
            Self::ObjectionResolved => include_str!("../../../../schemas/objection_resolved/schema.json"),
            Self::PublicityExpired => include_str!("../../../../schemas/publicity_expired/schema.json"),
            Self::JointCaseReport => include_str!("../../../../schemas/joint_case_report/schema.json"),
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or(())
    }
}

/// One thing wrong with a record: where (JSON pointer into the record), which rule, and a
/// message in Chinese and English. A wire type: it appears in push answers and receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub pointer: String,
    pub rule: String,
    pub message_zh: String,
    pub message_en: String,
}

impl FieldError {
    pub fn new(
        pointer: impl Into<String>,
        rule: &str,
        message_zh: impl Into<String>,
        message_en: impl Into<String>,
    ) -> Self {
        Self {
            pointer: pointer.into(),
            rule: rule.to_owned(),
            message_zh: message_zh.into(),
            message_en: message_en.into(),
        }
    }
}

/// `disclosure_scope` (domain §1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disclosure {
    /// 向社会公开
    Public,
    /// 政务共享: government consumers only.
    GovShared,
    /// 授权查询: released only with the subject's authorisation.
    AuthorizedQuery,
}

impl Disclosure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::GovShared => "gov_shared",
            Self::AuthorizedQuery => "authorized_query",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Public, Self::GovShared, Self::AuthorizedQuery].into_iter().find(|d| d.as_str() == s)
    }
}

/// The record version a lifecycle event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTarget {
    pub origin: String,
    pub record_id: String,
    pub version: i64,
    pub transition: crate::lifecycle::Transition,
    /// When the event was decided (`decided_on`): the latest decision sets the state.
    pub decided_on: String,
}

/// Identity-number fields: never published, never logged.
pub const IDENTITY_NUMBER_FIELDS: &[&str] = &["party_id_no", "legal_rep_id_no"];

/// Replaces identity numbers by their masked form, for answers that leave the node's store.
/// Nested records are masked too: a correction's `replacement` is a whole record.
pub fn mask_identity_numbers(content: &mut Value) {
    match content {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(s) if IDENTITY_NUMBER_FIELDS.contains(&key.as_str()) => {
                        *s = crate::ident::mask_id_number(s);
                    }
                    Value::Object(_) | Value::Array(_) => mask_identity_numbers(value),
                    _ => {}
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_identity_numbers),
        _ => {}
    }
}
