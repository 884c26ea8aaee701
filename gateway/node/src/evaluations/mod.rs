//! Mutual recognition of credit evaluations (信用评价结果互认) on a node: answering a partner
//! city's pull (`/federation/v1/evaluations/…`, mTLS) with a signed answer, and asking a
//! partner on behalf of this node's desk (`/api/v1/evaluations/…`), with a cache that serves
//! the desk — marked stale, with its age — while the partner cannot be reached. Every pull is
//! written to the audit log on both sides before anything is answered.
//!
//! What is disclosed: only to a party of an agreement in force with this node; only results
//! under the schemes (and versions) the agreement covers — of others, only that one exists and
//! is not covered; `gov_shared` results only to members registered as `government`;
//! `authorized_query` results never. Withdrawn and repaired results are not answered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::canonical::{Sha256Digest, parse_strict};
use gateway_core::date::{format_date, parse_date, today_in_china};
use gateway_core::ident::{check_uscc, normalize_code};
use gateway_core::interchange::evaluation::{
    self, ANSWER_EVIDENCE_TYP, AgreementBody, AgreementError, AgreementRef, AnswerBody, AnswerEvidence,
    AnsweredEvaluation, Disclosed, Graded, MAX_SUBJECTS, Reason, SignedAgreement, SubjectAnswer, Verdict, recognise,
};
use gateway_core::interchange::registry::Registry;
use gateway_core::interchange::{format_time, parse_time};
use gateway_core::jws::Jws;
use gateway_store::Store;
use gateway_store::evaluations::{CachedAnswer, HeldEvaluation, Pull};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::error::{ErrorKind, ServiceError};
use crate::interchange::Identity;

pub mod cli;

/// What a node needs to answer and to ask partners: the agreements it is a party to, its
/// registry, its signing key and its mutual-TLS client.
pub struct Partners {
    /// This node's federation identity (registry, signing key, mutual-TLS client).
    pub identity: Identity,
    pub store: Arc<Store>,
    pub agreements: Vec<SignedAgreement>,
    pub cache_ttl: time::Duration,
    pub timeout: std::time::Duration,
    /// Each agreement's signature check under the registry held (by its digest): verified
    /// once per registry, not on every pull.
    pub verified: std::sync::Mutex<Option<Verified>>,
}

/// The digest of a registry, and under it each held agreement's signature check.
type Verified = (Sha256Digest, Vec<Result<Sha256Digest, AgreementError>>);

impl std::fmt::Debug for Partners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partners({}, {} agreements)", self.identity.member_id, self.agreements.len())
    }
}

/// The body of `POST /federation/v1/evaluations/lookup`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub subjects: Vec<String>,
}

/// Reads the agreement files; keeps those `member` is a party to. A file that cannot be read
/// stops the start (an operator configured it); whether each is in force is judged per request.
pub fn load_agreements(member: &str, files: &[PathBuf], registry: &Registry) -> anyhow::Result<Vec<SignedAgreement>> {
    let mut out = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).with_context(|| format!("reading agreement {}", path.display()))?;
        let value = parse_strict(&bytes).with_context(|| format!("agreement {}", path.display()))?;
        let signed: SignedAgreement =
            serde_json::from_value(value).with_context(|| format!("agreement {}", path.display()))?;
        if !signed.agreement.covers(member) {
            tracing::debug!(file = %path.display(), "agreement does not name this member; skipped");
            continue;
        }
        let today = today_in_china(OffsetDateTime::now_utc());
        match signed.in_force(registry, today) {
            Ok(_) => tracing::info!(agreement = %signed.agreement.agreement_id, "partner agreement in force"),
            Err(e) => {
                tracing::warn!(agreement = %signed.agreement.agreement_id, reason = %e, "partner agreement NOT in force")
            }
        }
        out.push(signed);
    }
    Ok(out)
}

impl Partners {
    /// Whether each agreement is in force on `today` under `registry`, in the order held.
    fn judged(&self, registry: &Registry, today: Date) -> Vec<Result<Sha256Digest, AgreementError>> {
        let mut cache = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.as_ref().is_none_or(|(digest, _)| *digest != registry.digest) {
            let signed = self.agreements.iter().map(|a| a.verify_signatures(registry)).collect();
            *cache = Some((registry.digest, signed));
        }
        let signed = cache.as_ref().map(|(_, s)| s.as_slice()).unwrap_or_default();
        self.agreements
            .iter()
            .zip(signed)
            .map(|(a, s)| s.clone().and_then(|digest| a.in_force_signed(registry, digest, today)))
            .collect()
    }

    /// The agreements in force on `today` between this node and `other`, with their digests;
    /// or why there are none.
    fn in_force_with(
        &self,
        registry: &Registry,
        other: &str,
        today: Date,
    ) -> Result<Vec<(AgreementBody, String)>, Vec<String>> {
        let mut ok = Vec::new();
        let mut why = Vec::new();
        for (a, judged) in self.agreements.iter().zip(self.judged(registry, today)) {
            if !(a.agreement.covers(other) && a.agreement.covers(&self.identity.member_id)) {
                continue;
            }
            match judged {
                Ok(digest) => ok.push((a.agreement.clone(), digest.to_hex())),
                Err(e) => why.push(format!("{}: {e}", a.agreement.agreement_id)),
            }
        }
        if ok.is_empty() { Err(why) } else { Ok(ok) }
    }
}

/// The subjects of a lookup: 1 to 1,000 USCCs, normalised (full-width, lower case) and
/// checked; repeats asked once. Errors point at `{pointer}/{index}`.
pub fn checked_subjects(raw: &[String], pointer: &str) -> Result<Vec<String>, ServiceError> {
    if raw.is_empty() || raw.len() > MAX_SUBJECTS {
        return Err(ServiceError::bad_request(
            "evaluation.subjects",
            format!("一次查询应包含 1 至 {MAX_SUBJECTS} 个统一社会信用代码，实际 {} 个", raw.len()),
            format!("a lookup names 1 to {MAX_SUBJECTS} USCCs; this one names {}", raw.len()),
        )
        .with_pointer(pointer));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for (i, s) in raw.iter().enumerate() {
        let code = normalize_code(s);
        if let Err(e) = check_uscc(&code) {
            let (rule, zh, en) = match e {
                gateway_core::ident::IdentError::CheckChar => {
                    ("uscc.check_char", "校验位错误", "has a wrong check character")
                }
                _ => ("uscc.format", "格式错误", "is malformed"),
            };
            return Err(ServiceError::bad_request(
                rule,
                format!("第 {} 个统一社会信用代码{zh}", i + 1),
                format!("subject {i}: the USCC {en}"),
            )
            .with_pointer(format!("{pointer}/{i}")));
        }
        if seen.insert(code.clone()) {
            out.push(code);
        }
    }
    Ok(out)
}

/// For a lookup of one subject named in the path (`…/evaluations/{uscc}`): an error about the
/// subject points at `/uscc`, not at the `/subjects/0` of the list it was checked as.
pub fn path_subject_error(e: ServiceError) -> ServiceError {
    if e.body.error.pointer.as_deref() == Some("/subjects/0") { e.with_pointer("/uscc") } else { e }
}

/// Answers `asker`'s pull (a pinned member, authenticated by mTLS): the signed answer as JSON
/// text, after the pull is in the audit log. A member without an agreement in force with this
/// node gets 403 with the reason (and that refusal is logged too).
pub async fn answer(
    partners: &Partners,
    asker: &str,
    raw_subjects: &[String],
    now: OffsetDateTime,
) -> Result<String, ServiceError> {
    let pull = |subjects: &[String], outcome: &str, reason: Option<String>, answer: Option<(&str, String)>| Pull {
        pull_id: uuid::Uuid::now_v7().to_string(),
        direction: "in".into(),
        at: format_time(now),
        asker: asker.to_owned(),
        answerer: partners.identity.member_id.clone(),
        officer: None,
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
    let signer = Arc::clone(&partners.identity.signer);
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
fn answer_subjects(
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
        match pull(partners, &registry, &partner, &in_force, &to_ask, now).await {
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
        .json(&LookupRequest { subjects: subjects.to_vec() })
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

#[cfg(test)]
mod tests {
    use gateway_core::interchange::evaluation::{Band, SchemeMapping};
    use serde_json::json;
    use time::macros::date;

    use super::*;

    fn agreement() -> AgreementBody {
        let bands = |pairs: &[(&str, Band)]| pairs.iter().map(|(g, b)| ((*g).to_owned(), *b)).collect();
        AgreementBody {
            agreement_id: "a".into(),
            title: "t".into(),
            parties: vec!["cn-370300".into(), "cn-370500".into()],
            schemes: vec![
                SchemeMapping {
                    scheme_id: "tax_credit".into(),
                    versions: vec!["2014".into()],
                    bands: bands(&[("A", Band::Excellent), ("D", Band::Poor)]),
                    not_rated: vec!["M".into()],
                },
                SchemeMapping {
                    scheme_id: "public_credit_composite".into(),
                    versions: vec!["2024.2".into()],
                    bands: bands(&[("优", Band::Excellent), ("良", Band::Good)]),
                    not_rated: vec![],
                },
            ],
            purposes: vec!["administrative_approval".into()],
            valid_from: "2026-01-01".into(),
            valid_to: "2027-12-31".into(),
        }
    }

    fn held(seq: i64, content: &Value) -> HeldEvaluation {
        HeldEvaluation {
            seq,
            record_id: format!("record-{seq}"),
            version: 1,
            content_hash: "00".repeat(32),
            content: content.to_string(),
            state: "active".into(),
        }
    }

    /// Which result is current is decided before who may see it: a newer restricted result
    /// hides the older public one instead of letting it pass as current.
    #[test]
    fn the_current_result_decides_what_is_disclosed() {
        let today = date!(2026 - 11 - 23);
        let records = crate::bench::synthetic_evaluations(0..1, today);
        let (tax, composite) = (&records[0], &records[1]);
        let subject = tax["subject_uscc"].as_str().expect("subject").to_owned();
        let mut restricted = tax.clone();
        restricted["grade"] = json!("D");
        restricted["evaluated_on"] = json!("2026-11-20");
        restricted["disclosure_scope"] = json!("authorized_query");
        let a = agreement();
        let answer = |rows: Vec<HeldEvaluation>, government: bool| {
            let subjects = answer_subjects(std::slice::from_ref(&subject), rows, &[&a], government, today);
            subjects[0].evaluations.iter().map(|e| e.scheme_id.clone()).collect::<Vec<_>>()
        };
        let all = || vec![held(1, tax), held(2, composite), held(3, &restricted)];
        assert_eq!(answer(all(), true), ["public_credit_composite"], "the older tax A is not current");
        assert!(answer(all(), false).is_empty(), "gov_shared is for government members only");
        assert_eq!(answer(vec![held(1, tax), held(2, composite)], false), ["tax_credit"]);
        assert_eq!(answer(vec![held(1, tax), held(2, composite)], true), ["public_credit_composite", "tax_credit"]);
    }

    /// Every party must sign exactly this text, with a key registered to it and valid on the
    /// agreement's first day; anyone else's signature spoils the document.
    #[test]
    fn agreement_signatures_are_checked_party_by_party() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        crate::pki::init(&crate::pki::InitOptions::dev(dir.path())).expect("certs init");
        let read = |p: std::path::PathBuf| std::fs::read(p).expect("read");
        let jws: Jws = serde_json::from_slice(&read(crate::pki::registry_file(dir.path()))).expect("registry");
        let roots: Vec<gateway_core::interchange::registry::RootKey> =
            serde_json::from_slice(&read(crate::pki::anchor_file(dir.path()))).expect("anchor");
        let registry = Registry::verify_signed(&jws, &roots).expect("registry verifies");
        let file = dir.path().join("agreements/zibo-dongying-evaluations.json");
        let demo: SignedAgreement = serde_json::from_slice(&read(file)).expect("agreement");
        let today = parse_date(&demo.agreement.valid_from).expect("date");
        assert!(demo.in_force(&registry, today).is_ok());
        let key = |member: &str| {
            crate::pki::SigningKeyFile::load(&crate::pki::NodeFiles::new(dir.path(), member).signing_key())
                .expect("signing key")
        };
        let signature_error = |a: &SignedAgreement| match a.verify_signatures(&registry) {
            Err(AgreementError::Signature { reason, .. }) => reason,
            other => panic!("expected a signature error, got {other:?}"),
        };

        let mut altered = demo.clone();
        altered.agreement.title.push_str("（修订）");
        assert!(signature_error(&altered).contains("different text"));

        let mut outsider = demo.clone();
        let (k, kid) = key("cn-370000");
        outsider.sign(&kid, &k);
        assert!(signature_error(&outsider).contains("not a party's key"));

        // A text that starts after the parties' keys expire cannot be signed with them.
        let mut late = demo.clone();
        late.agreement.valid_from = gateway_core::date::format_date(today + time::Duration::days(400));
        late.agreement.valid_to = gateway_core::date::format_date(today + time::Duration::days(800));
        late.signatures.clear();
        for party in ["cn-370300", "cn-370500"] {
            let (k, kid) = key(party);
            late.sign(&kid, &k);
        }
        assert!(signature_error(&late).contains("not valid on the agreement's first day"));
    }
}
