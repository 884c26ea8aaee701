//! The desk's side of evaluation recognition: lookups at a partner for this node's officers —
//! fresh cached answers, else a live pull whose signed answer is verified, else stale cached
//! ones marked with their age — with every verdict judged again here, today, under this
//! node's own copy of the agreements; and the evidence bundle of an answer.

use std::collections::HashMap;

use gateway_core::date::{format_date, parse_date, today_in_china};
use gateway_core::interchange::evaluation::{
    self, ANSWER_EVIDENCE_TYP, AgreementBody, AnswerBody, AnswerEvidence, AnsweredEvaluation, Graded, Reason,
    SubjectAnswer, Verdict, recognise,
};
use gateway_core::interchange::registry::Registry;
use gateway_core::interchange::{format_time, parse_time};
use gateway_core::jws::Jws;
use gateway_store::evaluations::{CachedAnswer, Pull};
use serde::Serialize;
use serde_json::Value;
use time::{Date, OffsetDateTime};

use super::{LookupRequest, Partners, checked_subjects};
use crate::error::{ErrorKind, ServiceError};

/// What the desk gets back from a lookup at a partner.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeskAnswer {
    pub partner: String,
    pub partner_name: String,
    /// The day (Beijing time) the verdicts below were judged on, by this node.
    pub as_of: String,
    /// Why the partner could not be asked, when answers come from the cache only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_error: Option<String>,
    pub subjects: Vec<DeskSubject>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeskSubject {
    pub subject_uscc: String,
    /// `live` (asked now), `cache` (a fresh cached answer) or `stale` (an older cached answer,
    /// served because the partner could not be reached).
    pub source: String,
    pub stale: bool,
    /// Seconds since this node received the answer (by its own clock).
    pub age_secs: i64,
    pub answer_id: String,
    /// When this node received the answer.
    pub fetched_at: String,
    /// Per scheme: `scheme_id`, `scheme_version`, `verdict`, `reason` (with `reason_zh`,
    /// `reason_en`) and, under a covered scheme, `disclosed` (the partner's result with the
    /// band judged here) — the answer's evaluation entries of
    /// `schemas/interchange/evaluation_answer`.
    #[schema(value_type = Vec<Object>)]
    pub evaluations: Vec<DeskEvaluation>,
}

/// An evaluation as the partner answered it, with the verdict judged here as of today.
#[derive(Debug, Clone, Serialize)]
pub struct DeskEvaluation {
    #[serde(flatten)]
    pub answered: AnsweredEvaluation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_zh: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_en: Option<&'static str>,
}

/// The partner named by member id or by its registry name (e.g. `信用东营`).
pub fn resolve_partner(registry: &Registry, from: &str) -> Result<(String, String), ServiceError> {
    registry
        .body
        .members
        .iter()
        .find(|m| m.member_id == from || m.name == from)
        .map(|m| (m.member_id.clone(), m.name.clone()))
        .ok_or_else(|| {
            ServiceError::bad_request(
                "evaluation.partner",
                format!("联盟注册表中没有成员 {from:?}"),
                format!("{from:?} is neither a member id nor a member name in the registry"),
            )
            .with_pointer("/from")
        })
}

/// Looks `subjects` up at the partner `from` for this node's desk: fresh cached answers as
/// they are, the rest asked now; if the partner cannot be reached, older cached answers marked
/// stale. Verdicts are judged again here, on today's date, under this node's agreements.
pub async fn lookup(
    partners: &Partners,
    from: &str,
    raw_subjects: &[String],
    officer: Option<String>,
    now: OffsetDateTime,
) -> Result<DeskAnswer, ServiceError> {
    let subjects = checked_subjects(raw_subjects, "/subjects")?;
    let registry = partners.identity.registry_now()?;
    let (partner, partner_name) = resolve_partner(&registry, from)?;
    if partner == partners.identity.member_id {
        return Err(ServiceError::bad_request(
            "evaluation.partner",
            "不能向本平台自身查询互认评价",
            "a node does not pull evaluations from itself",
        )
        .with_pointer("/from"));
    }
    let today = today_in_china(now);
    // Nothing is asked of, or taken from, a partner without an agreement in force here: the
    // companies a desk looks up are not sent to just any member.
    let in_force = match partners.in_force_with(&registry, &partner, today) {
        Ok(agreements) => agreements,
        Err(why) => {
            let reason = if why.is_empty() {
                format!("no partner agreement between {} and {partner}", partners.identity.member_id)
            } else {
                format!("no partner agreement in force: {}", why.join("; "))
            };
            return Err(ServiceError::new(
                ErrorKind::Forbidden,
                "evaluation.no_agreement",
                format!("本平台与 {partner_name}（{partner}）之间没有生效的信用评价结果互认协议（{reason}）"),
                reason,
            ));
        }
    };
    let cached = partners.store.cached_answers(&partner, &subjects).await.map_err(|e| ServiceError::internal(&e))?;
    let mut cached: HashMap<String, CachedAnswer> = cached.into_iter().map(|c| (c.subject_uscc.clone(), c)).collect();
    let age = |c: &CachedAnswer| parse_time(&c.fetched_at).map_or(i64::MAX, |t| (now - t).whole_seconds());
    let fresh = |c: &CachedAnswer| age(c) < partners.cache_ttl.whole_seconds();
    let to_ask: Vec<String> = subjects.iter().filter(|s| !cached.get(*s).is_some_and(fresh)).cloned().collect();

    let audit = |outcome: &str, asked: Vec<String>, reason: Option<String>, answer: Option<(String, String)>| Pull {
        pull_id: uuid::Uuid::now_v7().to_string(),
        direction: "out".into(),
        at: format_time(now),
        asker: partners.identity.member_id.clone(),
        answerer: partner.clone(),
        officer: officer.clone(),
        subjects: asked,
        outcome: outcome.into(),
        reason,
        answer_id: answer.as_ref().map(|(id, _)| id.clone()),
        answer: answer.map(|(_, jws)| jws),
    };
    let mut live: HashMap<String, (String, SubjectAnswer)> = HashMap::new();
    let mut partner_error = None;
    if !to_ask.is_empty() {
        match pull(partners, &registry, &partner, &in_force, &to_ask, officer.as_deref(), now).await {
            Ok((body, text)) => {
                let rows: Vec<CachedAnswer> = body
                    .subjects
                    .iter()
                    .map(|s| CachedAnswer {
                        subject_uscc: s.subject_uscc.clone(),
                        answer_id: body.answer_id.clone(),
                        // Our clock, not the partner's, says how old a cached answer is.
                        fetched_at: format_time(now),
                        entry: serde_json::to_string(s).unwrap_or_default(),
                    })
                    .collect();
                partners
                    .store
                    .record_pull(audit("answered", to_ask.clone(), None, Some((body.answer_id.clone(), text))))
                    .await
                    .map_err(|e| ServiceError::internal(&e))?;
                partners.store.cache_answers(&partner, &rows).await.map_err(|e| ServiceError::internal(&e))?;
                for s in body.subjects {
                    live.insert(s.subject_uscc.clone(), (body.answer_id.clone(), s));
                }
                for s in &to_ask {
                    cached.remove(s);
                }
            }
            Err(PullError::Refused(e)) => {
                let reason = e.body.error.message_en.clone();
                partners
                    .store
                    .record_pull(audit("refused", to_ask, Some(reason), None))
                    .await
                    .map_err(|e| ServiceError::internal(&e))?;
                return Err(e);
            }
            Err(PullError::Failed(why)) => {
                tracing::warn!(%partner, error = %why, "evaluation pull failed; serving cached answers");
                partners
                    .store
                    .record_pull(audit("failed", to_ask.clone(), Some(why.clone()), None))
                    .await
                    .map_err(|e| ServiceError::internal(&e))?;
                if to_ask.iter().any(|s| !cached.contains_key(s)) {
                    return Err(ServiceError::new(
                        ErrorKind::BadGateway,
                        "evaluation.partner_unreachable",
                        format!("无法连接 {partner_name}（{partner}），且本地没有缓存的评价结果：{why}"),
                        format!("{partner_name} ({partner}) cannot be reached and nothing is cached: {why}"),
                    ));
                }
                partner_error = Some(why);
            }
        }
    }
    let served_from_cache: Vec<String> = subjects.iter().filter(|s| cached.contains_key(*s)).cloned().collect();
    if !served_from_cache.is_empty() {
        let outcome = if partner_error.is_some() { "stale" } else { "cache" };
        partners
            .store
            .record_pull(audit(outcome, served_from_cache, None, None))
            .await
            .map_err(|e| ServiceError::internal(&e))?;
    }

    let mut out = Vec::with_capacity(subjects.len());
    for s in &subjects {
        let (source, answer_id, fetched_at, entry) = if let Some((id, entry)) = live.remove(s) {
            ("live", id, format_time(now), entry)
        } else if let Some(c) = cached.remove(s) {
            let entry: SubjectAnswer =
                serde_json::from_str(&c.entry).map_err(|e| ServiceError::internal(&format!("cached answer: {e}")))?;
            let source = if fresh(&c) { "cache" } else { "stale" };
            (source, c.answer_id, c.fetched_at, entry)
        } else {
            continue;
        };
        let evaluations = entry.evaluations.into_iter().map(|e| judge_here(&in_force, e, today)).collect();
        let age_secs = parse_time(&fetched_at).map_or(0, |t| (now - t).whole_seconds().max(0));
        out.push(DeskSubject {
            subject_uscc: s.clone(),
            source: source.into(),
            stale: source == "stale",
            age_secs,
            answer_id,
            fetched_at,
            evaluations,
        });
    }
    Ok(DeskAnswer { partner, partner_name, as_of: format_date(today), partner_error, subjects: out })
}

/// The verdict on a partner's evaluation as this node sees it today: under its own copy of the
/// agreement named if that is among those in force here (else the agreement has ended), with
/// the evaluation's validity judged today.
fn judge_here(in_force: &[(AgreementBody, String)], mut e: AnsweredEvaluation, today: Date) -> DeskEvaluation {
    if let Some(d) = &mut e.disclosed {
        let held = in_force.iter().map(|(a, _)| a).find(|a| a.agreement_id == d.agreement_id);
        let graded = Graded {
            scheme_id: &e.scheme_id,
            scheme_version: &e.scheme_version,
            grade: &d.grade,
            valid_from: parse_date(&d.valid_from).unwrap_or(Date::MIN),
            valid_to: parse_date(&d.valid_to).unwrap_or(Date::MIN),
        };
        let (band, verdict) = match held {
            Some(a) => recognise(a, true, graded, today),
            None => (None, Verdict::NotRecognised(Reason::AgreementExpired)),
        };
        d.band = band;
        e.verdict = verdict.as_str().into();
        e.reason = verdict.reason();
    }
    let reason = e.reason;
    DeskEvaluation { answered: e, reason_zh: reason.map(Reason::zh), reason_en: reason.map(Reason::en) }
}

enum PullError {
    /// The partner answered 4xx: its error, passed to the desk as is.
    Refused(ServiceError),
    /// Unreachable, timed out, 5xx, or an answer that does not verify.
    Failed(String),
}

/// Asks `partner` over mTLS and verifies its signed answer.
async fn pull(
    partners: &Partners,
    registry: &Registry,
    partner: &str,
    in_force: &[(AgreementBody, String)],
    subjects: &[String],
    officer: Option<&str>,
    now: OffsetDateTime,
) -> Result<(AnswerBody, String), PullError> {
    let base = partners
        .identity
        .peers
        .get(partner)
        .cloned()
        .or_else(|| registry.member(partner).map(|m| m.endpoint.clone()))
        .ok_or_else(|| PullError::Failed(format!("{partner} has no endpoint")))?;
    let url = format!("{}/federation/v1/evaluations/lookup", base.trim_end_matches('/'));
    let resp = partners
        .identity
        .client
        .post(&url)
        .timeout(partners.timeout)
        .json(&LookupRequest { subjects: subjects.to_vec(), officer: officer.map(str::to_owned) })
        .send()
        .await
        .map_err(|e| PullError::Failed(format!("{url}: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| PullError::Failed(format!("{url}: {e}")))?;
    if status.is_client_error() {
        let detail: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let msg = |k: &str| detail["error"][k].as_str().unwrap_or(&text).to_owned();
        let code = if status == reqwest::StatusCode::FORBIDDEN {
            "evaluation.partner_refused"
        } else {
            "evaluation.partner_error"
        };
        return Err(PullError::Refused(ServiceError::new(
            if status == reqwest::StatusCode::FORBIDDEN { ErrorKind::Forbidden } else { ErrorKind::BadGateway },
            code,
            format!("{partner} 拒绝了查询（{status}）：{}", msg("message_zh")),
            format!("{partner} refused the lookup ({status}): {}", msg("message_en")),
        )));
    }
    if !status.is_success() {
        return Err(PullError::Failed(format!("{url} answered {status}")));
    }
    let jws: Jws = serde_json::from_str(&text).map_err(|e| PullError::Failed(format!("answer is not a JWS: {e}")))?;
    let body = evaluation::verify_answer(&jws, registry, Some((partner, &partners.identity.member_id)))
        .map_err(|e| PullError::Failed(format!("answer refused: {e}")))?;
    if !body.subjects.iter().map(|s| &s.subject_uscc).eq(subjects.iter()) {
        return Err(PullError::Failed("answer does not answer the subjects asked, in order".into()));
    }
    let answered = parse_time(&body.answered_at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    if (answered - now).abs() > crate::interchange::CLOCK_WINDOW {
        return Err(PullError::Failed(format!("answer time {} is too far from ours", body.answered_at)));
    }
    // The partner's verdicts must be what the agreements in force here give (same digest).
    let mut held = Vec::new();
    for r in &body.agreements {
        let (ours, _) = in_force
            .iter()
            .find(|(a, digest)| a.agreement_id == r.agreement_id && *digest == r.digest)
            .ok_or_else(|| {
                PullError::Failed(format!(
                    "answer under agreement {} ({}), not one in force here",
                    r.agreement_id, r.digest
                ))
            })?;
        held.push(ours);
    }
    evaluation::check_verdicts(&body, &held).map_err(|e| PullError::Failed(format!("answer refused: {e}")))?;
    Ok((body, text))
}

/// The evidence bundle of an answer this node sent or received: the answer, the registry held
/// now, and this node's copies of the agreements it names.
pub async fn answer_evidence(partners: &Partners, answer_id: &str) -> Result<AnswerEvidence, ServiceError> {
    let not_found = || ServiceError::not_found("该互认查询答复", "an evaluation answer with this id");
    let text =
        partners.store.pulled_answer(answer_id).await.map_err(|e| ServiceError::internal(&e))?.ok_or_else(not_found)?;
    let answer: Jws = serde_json::from_str(&text).map_err(|e| ServiceError::internal(&e))?;
    let registry = partners.identity.registry_now()?;
    let body = evaluation::verify_answer(&answer, &registry, None).map_err(|e| {
        ServiceError::new(
            ErrorKind::Conflict,
            "evaluation.answer_unverifiable",
            format!("该答复在本节点现持有的联盟注册表下已无法验证：{e}"),
            format!("the answer no longer verifies under the registry this node holds now: {e}"),
        )
    })?;
    let agreements = partners
        .agreements
        .iter()
        .filter(|a| body.agreements.iter().any(|r| r.agreement_id == a.agreement.agreement_id))
        .cloned()
        .collect();
    Ok(AnswerEvidence { typ: ANSWER_EVIDENCE_TYP.into(), answer, registry: registry.jws.clone(), agreements })
}
