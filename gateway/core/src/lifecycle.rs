//! Lifecycle events (interchange-v1 §2): what each one does to the state of the record version
//! it targets. Pure, so every node applies the same rule.

use serde::Serialize;
use serde_json::Value;

use crate::record::RecordType;

/// A record's state as seen by the node holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Published and shared as usual.
    Active,
    /// An objection (异议) is being verified: shown as disputed.
    Disputed,
    /// Withdrawn (撤销): no longer published or shared.
    Withdrawn,
    /// Credit repair (信用修复) granted: publicity and sharing stop.
    Repaired,
    /// The publicity period (公示期) is over.
    Expired,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disputed => "disputed",
            Self::Withdrawn => "withdrawn",
            Self::Repaired => "repaired",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Disputed, Self::Withdrawn, Self::Repaired, Self::Expired]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    /// Whether the record may still be published and shared.
    pub fn is_public(self) -> bool {
        matches!(self, Self::Active | Self::Disputed)
    }
}

/// What applying one event does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new state; `None` keeps the current one (a plain correction).
    pub state: Option<RecordState>,
    /// Whether sanctions based on the record are suspended from now on.
    pub sanctions_suspended: bool,
    /// Whether the event's `replacement` becomes the target's current content.
    pub replaces_content: bool,
}

/// The transition of an event of type `t` with (validated) content `content`; `None` for a
/// record type that is not an event.
pub fn transition(t: RecordType, content: &Value) -> Option<Transition> {
    let set = |state, replaces_content| Transition { state: Some(state), sanctions_suspended: false, replaces_content };
    Some(match t {
        RecordType::Correction => Transition { state: None, sanctions_suspended: false, replaces_content: true },
        RecordType::Withdrawal => set(RecordState::Withdrawn, false),
        RecordType::Repair => set(RecordState::Repaired, false),
        RecordType::PublicityExpired => set(RecordState::Expired, false),
        RecordType::ObjectionOpened => Transition {
            state: Some(RecordState::Disputed),
            // Domain §2.5: suspension during verification is a per-jurisdiction policy,
            // defaulting to suspend; the event says what the deciding authority chose.
            sanctions_suspended: content["sanctions_suspended"].as_bool().unwrap_or(true),
            replaces_content: false,
        },
        RecordType::ObjectionResolved => match content["result"].as_str() {
            Some("upheld_corrected") => set(RecordState::Active, true),
            Some("upheld_withdrawn") => set(RecordState::Withdrawn, false),
            _ => set(RecordState::Active, false),
        },
        RecordType::AdminLicense
        | RecordType::AdminPenalty
        | RecordType::CreditListEntry
        | RecordType::EvaluationResult
        | RecordType::MonthlyReport
        | RecordType::JointCaseReport => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objections_suspend_then_restore_or_withdraw() {
        let opened = transition(RecordType::ObjectionOpened, &json!({"sanctions_suspended": true})).unwrap();
        assert_eq!(opened.state, Some(RecordState::Disputed));
        assert!(opened.sanctions_suspended);
        let rejected = transition(RecordType::ObjectionResolved, &json!({"result": "rejected"})).unwrap();
        assert_eq!((rejected.state, rejected.sanctions_suspended), (Some(RecordState::Active), false));
        let withdrawn = transition(RecordType::ObjectionResolved, &json!({"result": "upheld_withdrawn"})).unwrap();
        assert_eq!(withdrawn.state, Some(RecordState::Withdrawn));
        let corrected = transition(RecordType::ObjectionResolved, &json!({"result": "upheld_corrected"})).unwrap();
        assert!(corrected.replaces_content);
    }

    #[test]
    fn a_correction_keeps_the_state_and_records_are_not_events() {
        let c = transition(RecordType::Correction, &json!({})).unwrap();
        assert_eq!((c.state, c.replaces_content), (None, true));
        assert!(transition(RecordType::AdminPenalty, &json!({})).is_none());
        assert!(!RecordState::Repaired.is_public() && RecordState::Disputed.is_public());
    }
}
