//! Data-quality facts about one submitted record (design §8): which department answers for it
//! and how complete it is. Counted for every submission, accepted or not, so that 有效入库率
//! (accepted ÷ submitted) and 完整率 (fields filled ÷ fields expected) describe what departments
//! actually sent.

use serde_json::Value;

use crate::record::RecordType;

/// The share every ratio is held to unless configured otherwise (design §8: ≥ 95 %).
pub const DEFAULT_TARGET: f64 = 0.95;

/// Fields that are not required by the schema but that a complete record fills: the subject's
/// code and legal representative for organisations, and what the decision concerns. 完整率 counts
/// them next to the required ones. Fields that only apply to some subjects are listed with the
/// party category they apply to.
fn recommended(t: RecordType, party_category: Option<&str>) -> &'static [&'static str] {
    let organisation = party_category.is_none_or(|c| c != "自然人");
    match (t, organisation) {
        (RecordType::AdminLicense, true) => &["party_uscc", "legal_rep_name", "license_cert_name", "license_no"],
        (RecordType::AdminLicense, false) => &["license_cert_name", "license_no"],
        (RecordType::AdminPenalty, true) => &["party_uscc", "legal_rep_name", "publicity_end_date"],
        (RecordType::AdminPenalty, false) => &["publicity_end_date"],
        _ => &[],
    }
}

/// What one submission says about its department's data quality.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// 数据来源单位统一社会信用代码 (normalised), empty when the record names none.
    pub department_uscc: String,
    /// 数据来源单位 as the record names it.
    pub department_name: String,
    /// Expected fields that hold a value.
    pub filled: u32,
    /// Required fields of its type plus the recommended ones (0 when the type is unknown).
    pub expected: u32,
}

/// The department a record names: `(uscc, name)` from 数据来源单位 (双公示, list entries) or the
/// reporting department (monthly reports).
pub fn department_of(record: &Value) -> Option<(&str, &str)> {
    [
        ("source_unit_uscc", "source_unit"),
        ("department_uscc", "department_name"),
        ("listing_authority_uscc", "listing_authority"),
    ]
    .iter()
    .find_map(|(code, name)| {
        let uscc = record.get(code)?.as_str().filter(|s| !s.trim().is_empty())?;
        Some((uscc, record.get(name).and_then(Value::as_str).unwrap_or("")))
    })
}

/// Observes one submitted record (valid or not). `required` lists the fields its schema requires;
/// `None` when the record type could not be told.
pub fn observe<S: AsRef<str>>(record: &Value, record_type: Option<RecordType>, required: &[S]) -> Observation {
    // A rejected record may name anything: only a well-formed USCC makes a department, and
    // names are cut to what the schemas allow (200 characters).
    let (uscc, name) = department_of(record)
        .map(|(u, n)| (crate::ident::normalize_code(u), n))
        .filter(|(u, _)| crate::ident::check_uscc(u).is_ok())
        .unwrap_or_default();
    let mut obs = Observation {
        department_uscc: uscc,
        department_name: name.trim().chars().take(200).collect(),
        ..Observation::default()
    };
    let Some(t) = record_type else { return obs };
    let category = record.get("party_category").and_then(Value::as_str);
    for field in required.iter().map(AsRef::as_ref).chain(recommended(t, category).iter().copied()) {
        obs.expected += 1;
        if record.get(field).is_some_and(is_filled) {
            obs.filled += 1;
        }
    }
    obs
}

fn is_filled(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// A ratio for display: `None` when nothing was counted (no submissions is not 0 %).
pub fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn completeness_counts_required_and_recommended_fields() {
        let record = json!({
            "record_type": "admin_penalty", "party_category": "法人及非法人组织", "party_uscc": "91370303MA3C5XKN2B",
            "decision_doc_no": "", "source_unit": " 周村区市场监督管理局 ", "source_unit_uscc": "11370306mb28554702"
        });
        let obs =
            observe(&record, Some(RecordType::AdminPenalty), &["record_type", "decision_doc_no", "decision_date"]);
        assert_eq!(obs.department_uscc, "11370306MB28554702");
        assert_eq!(obs.department_name, "周村区市场监督管理局");
        // record_type and party_uscc are filled; an empty string, a missing date, legal_rep_name
        // and publicity_end_date are not.
        assert_eq!((obs.filled, obs.expected), (2, 6));
        // A code with a wrong check character names no department.
        let forged = json!({"source_unit": "x", "source_unit_uscc": "11370306MB28554703"});
        assert_eq!(observe(&forged, None, &[] as &[&str]).department_uscc, "");
        let person = json!({"record_type": "admin_penalty", "party_category": "自然人"});
        assert_eq!(observe(&person, Some(RecordType::AdminPenalty), &[] as &[&str]).expected, 1);
        assert_eq!(observe(&json!({}), None, &["x"]), Observation::default());
        assert_eq!(ratio(1, 0), None);
        assert_eq!(ratio(19, 20), Some(0.95));
    }
}
