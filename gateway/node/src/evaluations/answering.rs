//! The answering side of evaluation recognition: a partner's pull, checked against the
//! agreements in force with it, answered with the results this node may disclose, signed, and
//! in the audit log before the answer leaves.

use std::collections::HashMap;

use gateway_core::date::{format_date, parse_date, today_in_china};
use gateway_core::interchange::evaluation::{
    self, AgreementBody, AgreementRef, AnswerBody, AnsweredEvaluation, Disclosed, Graded, Reason, SubjectAnswer,
    Verdict, recognise,
};
use gateway_core::interchange::format_time;
use gateway_store::evaluations::{HeldEvaluation, Pull};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use super::{Partners, checked_subjects};
use crate::error::{ErrorKind, ServiceError};

/// Answers `asker`'s pull (a pinned member, authenticated by mTLS): the signed answer as JSON
/// text, after the pull is in the audit log. A member without an agreement in force with this
/// node gets 403 with the reason (and that refusal is logged too).
pub async fn answer(
    partners: &Partners,
    asker: &str,
    officer: Option<&str>,
    raw_subjects: &[String],
    now: OffsetDateTime,
) -> Result<String, ServiceError> {
    let pull = |subjects: &[String], outcome: &str, reason: Option<String>, answer: Option<(&str, String)>| Pull {
        pull_id: uuid::Uuid::now_v7().to_string(),
        direction: "in".into(),
        at: format_time(now),
        asker: asker.to_owned(),
        answerer: partners.identity.member_id.clone(),
        // As the asking member's node says (it authenticated the officer; this node
        // authenticated the member).
        officer: officer.map(|o| o.chars().filter(|c| !c.is_control()).take(100).collect()),
        subjects: subjects.to_vec(),
        outcome: outcome.into(),
        reason,
        answer_id: answer.as_ref().map(|(id, _)| (*id).to_owned()),
        answer: answer.map(|(_, jws)| jws),
    };
    let subjects = match checked_subjects(raw_subjects, "/subjects") {
        Ok(s) => s,
        Err(e) => {
            // Logged without the codes asked: they are not valid, and may not be codes at all.
            let reason = format!("{} subjects asked: {}", raw_subjects.len(), e.body.error.message_en);
            partners
                .store
                .record_pull(pull(&[], "refused", Some(reason), None))
                .await
                .map_err(|e| ServiceError::internal(&e))?;
            return Err(e);
        }
    };
    let today = today_in_china(now);
    let (in_force, government) = {
        let registry =
            partners.identity.registry.read().map_err(|_| ServiceError::internal(&"registry lock poisoned"))?;
        let government = registry.member(asker).is_some_and(|m| m.roles.iter().any(|r| r == "government"));
        (partners.in_force_with(&registry, asker, today), government)
    };
    let agreements = match in_force {
        Ok(a) => a,
        Err(why) => {
            let reason = if why.is_empty() {
                format!("no partner agreement between {} and {asker}", partners.identity.member_id)
            } else {
                format!("no partner agreement in force: {}", why.join("; "))
            };
            tracing::warn!(peer = %asker, %reason, "evaluation pull refused");
            partners
                .store
                .record_pull(pull(&subjects, "refused", Some(reason.clone()), None))
                .await
                .map_err(|e| ServiceError::internal(&e))?;
            return Err(ServiceError::new(
                ErrorKind::Forbidden,
                "evaluation.no_agreement",
                format!("{asker} 与本平台之间没有生效的信用评价结果互认协议（{reason}）"),
                reason,
            ));
        }
    };
    let held = partners.store.evaluations_of(&subjects).await.map_err(|e| ServiceError::internal(&e))?;
    let signer = partners.identity.signer(now)?;
    let body = AnswerBody {
        answer_id: uuid::Uuid::now_v7().to_string(),
        answerer: partners.identity.member_id.clone(),
        asker: asker.to_owned(),
        answered_at: format_time(now),
        as_of: format_date(today),
        agreements: agreements
            .iter()
            .map(|(a, digest)| AgreementRef {
                agreement_id: a.agreement_id.clone(),
                digest: digest.clone(),
                purposes: a.purposes.clone(),
            })
            .collect(),
        subjects: Vec::new(),
    };
    // Parsing the held results and signing is CPU work: off the I/O threads for a bulk lookup.
    let asked = subjects.clone();
    let build = move || {
        let refs: Vec<&AgreementBody> = agreements.iter().map(|(a, _)| a).collect();
        let mut body = body;
        body.subjects = answer_subjects(&asked, held, &refs, government, today);
        let jws = evaluation::sign_answer(&body, &signer.kid, &signer.key);
        (body.answer_id, serde_json::to_string(&jws).unwrap_or_default())
    };
    let (answer_id, text) = if raw_subjects.len() > 16 {
        tokio::task::spawn_blocking(build).await.map_err(|e| ServiceError::internal(&e))?
    } else {
        build()
    };
    partners
        .store
        .record_pull(pull(&subjects, "answered", None, Some((&answer_id, text.clone()))))
        .await
        .map_err(|e| ServiceError::internal(&e))?;
    Ok(text)
}

/// Per subject, in the order asked: the current result per scheme among those that may be
/// disclosed, judged under the agreements.
pub(super) fn answer_subjects(
    subjects: &[String],
    held: Vec<HeldEvaluation>,
    agreements: &[&AgreementBody],
    government: bool,
    today: Date,
) -> Vec<SubjectAnswer> {
    // Latest version of each record that may be disclosed, by subject.
    let mut latest: HashMap<String, (HeldEvaluation, Value)> = HashMap::new();
    for h in held {
        if matches!(h.state.as_str(), "withdrawn" | "repaired") {
            continue;
        }
        if latest.get(&h.record_id).is_some_and(|(l, _)| l.version >= h.version) {
            continue;
        }
        let Ok(content) = serde_json::from_str::<Value>(&h.content) else { continue };
        latest.insert(h.record_id.clone(), (h, content));
    }
    // Newest per subject and scheme — later evaluation date, then later period, then stored
    // later — whoever may see it: an older result is never passed off as the current one.
    type Rank = (String, String, i64);
    let mut current: HashMap<(String, String), (Rank, HeldEvaluation, Value)> = HashMap::new();
    for (h, c) in latest.into_values() {
        let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let key = (field("subject_uscc"), field("scheme_id"));
        let rank = (field("evaluated_on"), field("period"), h.seq);
        if current.get(&key).is_none_or(|(held, _, _)| rank > *held) {
            current.insert(key, (rank, h, c));
        }
    }
    let mut by_subject: HashMap<String, Vec<AnsweredEvaluation>> = HashMap::new();
    for ((subject, _), (_, h, c)) in current {
        // The current result may be one the asker may not see: then nothing of that scheme is.
        let disclosable = match c.get("disclosure_scope").and_then(Value::as_str) {
            Some("public") => true,
            Some("gov_shared") => government,
            _ => false,
        };
        if !disclosable {
            continue;
        }
        by_subject.entry(subject).or_default().push(answered(&h, &c, agreements, today));
    }
    subjects
        .iter()
        .map(|s| {
            let mut evaluations = by_subject.remove(s).unwrap_or_default();
            evaluations.sort_by(|a, b| a.scheme_id.cmp(&b.scheme_id));
            SubjectAnswer { subject_uscc: s.clone(), evaluations }
        })
        .collect()
}

fn answered(h: &HeldEvaluation, c: &Value, agreements: &[&AgreementBody], today: Date) -> AnsweredEvaluation {
    let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (scheme_id, scheme_version) = (field("scheme_id"), field("scheme_version"));
    let Some(agreement) = agreements.iter().find(|a| a.scheme(&scheme_id, &scheme_version).is_some()) else {
        return AnsweredEvaluation {
            scheme_id,
            scheme_version,
            verdict: Verdict::NotRecognised(Reason::SchemeNotCovered).as_str().into(),
            reason: Some(Reason::SchemeNotCovered),
            disclosed: None,
        };
    };
    let grade = field("grade");
    let (valid_from, valid_to) = (field("valid_from"), field("valid_to"));
    let graded = Graded {
        scheme_id: &scheme_id,
        scheme_version: &scheme_version,
        grade: &grade,
        valid_from: parse_date(&valid_from).unwrap_or(Date::MIN),
        valid_to: parse_date(&valid_to).unwrap_or(Date::MIN),
    };
    let (band, verdict) = recognise(agreement, true, graded, today);
    AnsweredEvaluation {
        verdict: verdict.as_str().into(),
        reason: verdict.reason(),
        disclosed: Some(Disclosed {
            agreement_id: agreement.agreement_id.clone(),
            record_id: h.record_id.clone(),
            version: u64::try_from(h.version).unwrap_or_default(),
            content_hash: h.content_hash.clone(),
            subject_name: field("subject_name"),
            grade,
            score: c.get("score").and_then(|s| s.as_number().cloned()),
            band,
            period: field("period"),
            valid_from,
            valid_to,
            evaluator: field("evaluator"),
            evaluator_uscc: field("evaluator_uscc"),
            evaluated_on: field("evaluated_on"),
            disclosure_scope: field("disclosure_scope"),
            state: h.state.clone(),
        }),
        scheme_id,
        scheme_version,
    }
}
