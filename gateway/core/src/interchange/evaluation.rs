//! Mutual recognition of credit evaluations (信用评价结果互认) between partner cities:
//! partner agreements signed by every party, and the signed answers a node gives a partner
//! that asks for its evaluations of some subjects.
//!
//! An agreement names, per grading scheme and version, which shared band (优 / 良 / 中 / 差)
//! each raw grade maps to, and which grades mean "not rated" (纳税信用 M is never a rank). It is
//! in force only while every party has signed it, the registry in force lists its digest, and
//! today lies in its validity period. The verdict on an evaluation — recognised, or not and why —
//! is a pure function of the agreement, the evaluation and the day ([`recognise`]), so the
//! asker, the answerer and an offline verifier all reach the same one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::Date;

use super::registry::{KeyError, Registry};
use super::{kid_member, parse_time};
use crate::canonical::{Sha256Digest, canonical_bytes, canonical_string};
use crate::crypto::SigningKey;
use crate::date::parse_date;
use crate::jws::{self, Jws, JwsError};

pub const AGREEMENT_TYP: &str = "credit-gateway/agreement+v1";
pub const ANSWER_TYP: &str = "credit-gateway/evaluation-answer+v1";
pub const ANSWER_EVIDENCE_TYP: &str = "credit-gateway/evaluation-evidence+v1";
/// Subjects one lookup may name.
pub const MAX_SUBJECTS: usize = 1000;

/// The shared band a grade maps to under an agreement (domain §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Band {
    #[serde(rename = "优")]
    Excellent,
    #[serde(rename = "良")]
    Good,
    #[serde(rename = "中")]
    Fair,
    #[serde(rename = "差")]
    Poor,
}

/// The agreed text (a wire type; schema `schemas/interchange/agreement`). Every party signs
/// exactly these bytes (RFC 8785); its digest names the agreement in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementBody {
    pub agreement_id: String,
    pub title: String,
    /// Member ids of the parties (at least two).
    pub parties: Vec<String>,
    pub schemes: Vec<SchemeMapping>,
    /// What a recognised result may be used for (e.g. `administrative_approval`).
    pub purposes: Vec<String>,
    pub valid_from: String,
    pub valid_to: String,
}

/// One grading scheme an agreement covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeMapping {
    pub scheme_id: String,
    /// The scheme versions covered; a result under another version is not recognised.
    pub versions: Vec<String>,
    /// Raw grade → shared band.
    pub bands: BTreeMap<String, Band>,
    /// Grades that mean "not rated" (纳税信用 M): disclosed, never ranked.
    pub not_rated: Vec<String>,
}

/// An agreement as exchanged and kept: the text and one JWS per party over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAgreement {
    pub agreement: AgreementBody,
    pub signatures: Vec<Jws>,
}

/// Why an agreement is not in force (or cannot even be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreementError {
    #[error("/agreement: {0}")]
    Body(String),
    #[error("/signatures/{index}: {reason}")]
    Signature { index: usize, reason: String },
    #[error("not signed by {missing:?}: an agreement takes effect only when every party has signed it")]
    Unsigned { missing: Vec<String> },
    #[error("party {0} is not a member in the registry in force")]
    UnknownParty(String),
    #[error("the registry in force (version {version}) does not list agreement {agreement_id} with digest {digest}")]
    NotListed { agreement_id: String, digest: String, version: u64 },
    #[error("agreement {agreement_id} is valid from {valid_from}")]
    NotYetValid { agreement_id: String, valid_from: String },
    #[error("agreement {agreement_id} expired after {valid_to}")]
    Expired { agreement_id: String, valid_to: String },
}

impl AgreementBody {
    /// SHA-256 of the canonical text: the agreement's name in the registry and in answers.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&canonical_bytes(&serde_json::to_value(self).unwrap_or(Value::Null)))
    }

    fn canonical(&self) -> String {
        canonical_string(&serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// Checks what the schema cannot: parties distinct member ids, dates in order, each scheme
    /// once, no grade both banded and not rated.
    pub fn check(&self) -> Result<(Date, Date), AgreementError> {
        let bad = |m: String| Err(AgreementError::Body(m));
        let mut parties = self.parties.clone();
        parties.sort();
        parties.dedup();
        if parties.len() != self.parties.len() || parties.len() < 2 {
            return bad("parties must be at least two distinct members".into());
        }
        if let Some(p) = self.parties.iter().find(|p| !super::is_member_id(p)) {
            return bad(format!("party {p:?} is not a member id"));
        }
        let (Some(from), Some(to)) = (parse_date(&self.valid_from), parse_date(&self.valid_to)) else {
            return bad("valid_from and valid_to must be YYYY-MM-DD dates".into());
        };
        if to < from {
            return bad(format!("valid_to {} is before valid_from {}", self.valid_to, self.valid_from));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.schemes {
            if !seen.insert(s.scheme_id.as_str()) {
                return bad(format!("scheme {} is listed twice", s.scheme_id));
            }
            if let Some(g) = s.not_rated.iter().find(|g| s.bands.contains_key(*g)) {
                return bad(format!("grade {g:?} of {} is both banded and not rated", s.scheme_id));
            }
        }
        Ok((from, to))
    }

    pub fn covers(&self, member: &str) -> bool {
        self.parties.iter().any(|p| p == member)
    }

    /// The mapping for a scheme and version, if covered.
    pub fn scheme(&self, scheme_id: &str, version: &str) -> Option<&SchemeMapping> {
        self.schemes.iter().find(|s| s.scheme_id == scheme_id && s.versions.iter().any(|v| v == version))
    }
}

impl SignedAgreement {
    /// Signs the text as `kid` and adds the signature (replacing an earlier one by that key).
    pub fn sign(&mut self, kid: &str, key: &SigningKey) {
        let jws = jws::sign_canonical(AGREEMENT_TYP, kid, &self.agreement.canonical(), key);
        self.signatures.retain(|s| s.unverified_kid().as_deref() != Some(kid));
        self.signatures.push(jws);
    }

    /// Whether the agreement is in force on `today` under `registry`: its text is sound, every
    /// party signed exactly this text with a key the registry lists for it (valid on the
    /// agreement's first day), the registry lists its digest, and `today` is inside its period.
    /// Returns its digest.
    pub fn in_force(&self, registry: &Registry, today: Date) -> Result<Sha256Digest, AgreementError> {
        let digest = self.verify_signatures(registry)?;
        self.in_force_signed(registry, digest, today)
    }

    /// [`in_force`](Self::in_force) for an agreement whose signatures [`verify_signatures`]
    /// already accepted under this `registry`, giving `digest` (a node keeps that result for
    /// as long as it holds the registry: the signatures do not change from day to day).
    pub fn in_force_signed(
        &self,
        registry: &Registry,
        digest: Sha256Digest,
        today: Date,
    ) -> Result<Sha256Digest, AgreementError> {
        let a = &self.agreement;
        let listed = registry.body.agreements.iter().any(|entry| {
            entry.get("agreement_id").and_then(Value::as_str) == Some(a.agreement_id.as_str())
                && entry.get("digest").and_then(Value::as_str) == Some(digest.to_hex().as_str())
        });
        if !listed {
            return Err(AgreementError::NotListed {
                agreement_id: a.agreement_id.clone(),
                digest: digest.to_hex(),
                version: registry.body.version,
            });
        }
        let (from, to) = a.check()?;
        if today < from {
            return Err(AgreementError::NotYetValid {
                agreement_id: a.agreement_id.clone(),
                valid_from: a.valid_from.clone(),
            });
        }
        if today > to {
            return Err(AgreementError::Expired { agreement_id: a.agreement_id.clone(), valid_to: a.valid_to.clone() });
        }
        Ok(digest)
    }

    /// Every signature is over this text by a registered key of a party; every party signed.
    /// Says nothing about the registry listing or the dates (evidence judges those apart).
    pub fn verify_signatures(&self, registry: &Registry) -> Result<Sha256Digest, AgreementError> {
        let a = &self.agreement;
        let (from, _) = a.check()?;
        let text = a.canonical();
        let mut signed = std::collections::BTreeSet::new();
        for (index, jws) in self.signatures.iter().enumerate() {
            let fail = |reason: String| AgreementError::Signature { index, reason };
            let decoded = jws.decode(AGREEMENT_TYP).map_err(|e: JwsError| fail(e.to_string()))?;
            if canonical_string(&decoded.body) != text {
                return Err(fail("signs a different text than /agreement".into()));
            }
            let kid = &decoded.header.kid;
            let member = kid_member(kid).unwrap_or_default();
            if !a.covers(member) {
                return Err(fail(format!("signed by {kid}, which is not a party's key")));
            }
            let key = registry.key(kid).ok_or_else(|| fail(format!("key {kid} is not registered")))?;
            // The key must be valid on the agreement's first day: a key retired before it, or
            // not yet valid then, signs nothing for it (the JWS profile carries no signing time).
            let (Some(kf), Some(kt)) = (parse_time(&key.valid_from), parse_time(&key.valid_to)) else {
                return Err(fail(format!("key {kid} has an unreadable validity window")));
            };
            if !(kf.date() <= from && from <= kt.date()) {
                return Err(fail(format!(
                    "key {kid} (valid {} – {}) is not valid on the agreement's first day {}",
                    key.valid_from, key.valid_to, a.valid_from
                )));
            }
            let at = from.midnight().assume_utc().clamp(kf, kt);
            let public = registry.signing_key(kid, member, at).map_err(|e: KeyError| fail(e.to_string()))?;
            decoded.verify(&public).map_err(|_| fail(format!("signature by {kid} does not verify")))?;
            signed.insert(member.to_owned());
        }
        if let Some(p) = a.parties.iter().find(|p| registry.member(p).is_none()) {
            return Err(AgreementError::UnknownParty(p.clone()));
        }
        let missing: Vec<String> = a.parties.iter().filter(|p| !signed.contains(*p)).cloned().collect();
        if !missing.is_empty() {
            return Err(AgreementError::Unsigned { missing });
        }
        Ok(a.digest())
    }
}

/// Why an evaluation is not recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No agreement in force covers its scheme and version.
    SchemeNotCovered,
    /// The agreement it would be recognised under has expired, or is no longer in force
    /// (revoked: dropped from the registry).
    AgreementExpired,
    /// Past its `valid_to`, or before its `valid_from`.
    EvaluationExpired,
    /// A "not rated" grade (纳税信用 M): never a rank.
    NotRated,
    /// A grade the agreement's mapping does not list.
    GradeNotMapped,
}

impl Reason {
    pub fn zh(self) -> &'static str {
        match self {
            Reason::SchemeNotCovered => "评价体系或版本不在互认协议范围内",
            Reason::AgreementExpired => "互认协议已过期或已不再生效",
            Reason::EvaluationExpired => "评价结果不在有效期内",
            Reason::NotRated => "该等级表示未评级，不作为等级互认",
            Reason::GradeNotMapped => "互认协议未约定该等级的对应关系",
        }
    }

    pub fn en(self) -> &'static str {
        match self {
            Reason::SchemeNotCovered => "the scheme or its version is not covered by the agreement",
            Reason::AgreementExpired => "the agreement has expired or is no longer in force",
            Reason::EvaluationExpired => "the evaluation is outside its validity period",
            Reason::NotRated => "the grade means not rated; it is never recognised as a rank",
            Reason::GradeNotMapped => "the agreement maps no band to this grade",
        }
    }
}

/// `recognised`, or `not_recognised` with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Recognised,
    NotRecognised(Reason),
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Recognised => "recognised",
            Verdict::NotRecognised(_) => "not_recognised",
        }
    }

    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Recognised => None,
            Verdict::NotRecognised(r) => Some(r),
        }
    }
}

/// What [`recognise`] needs of an evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Graded<'a> {
    pub scheme_id: &'a str,
    pub scheme_version: &'a str,
    pub grade: &'a str,
    pub valid_from: Date,
    pub valid_to: Date,
}

/// The band and verdict of an evaluation under `agreement` on `today`. `in_force` says whether
/// the agreement is in force (an asker judging a cached answer passes what it knows now).
pub fn recognise(agreement: &AgreementBody, in_force: bool, e: Graded<'_>, today: Date) -> (Option<Band>, Verdict) {
    let Some(mapping) = agreement.scheme(e.scheme_id, e.scheme_version) else {
        return (None, Verdict::NotRecognised(Reason::SchemeNotCovered));
    };
    let band = mapping.bands.get(e.grade).copied();
    let verdict = if !in_force {
        Verdict::NotRecognised(Reason::AgreementExpired)
    } else if mapping.not_rated.iter().any(|g| g == e.grade) {
        Verdict::NotRecognised(Reason::NotRated)
    } else if band.is_none() {
        Verdict::NotRecognised(Reason::GradeNotMapped)
    } else if today < e.valid_from || today > e.valid_to {
        Verdict::NotRecognised(Reason::EvaluationExpired)
    } else {
        Verdict::Recognised
    };
    (band, verdict)
}

/// The signed answer to a partner's lookup (a wire type; schema
/// `schemas/interchange/evaluation_answer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    pub answer_id: String,
    pub answerer: String,
    pub asker: String,
    pub answered_at: String,
    /// The day (Beijing time) the verdicts were judged on.
    pub as_of: String,
    /// The agreements in force the answer was given under.
    pub agreements: Vec<AgreementRef>,
    /// One entry per subject asked, in the order asked.
    pub subjects: Vec<SubjectAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementRef {
    pub agreement_id: String,
    pub digest: String,
    pub purposes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAnswer {
    pub subject_uscc: String,
    /// The current evaluation per scheme (newer results supersede older ones).
    pub evaluations: Vec<AnsweredEvaluation>,
}

/// One evaluation as answered. Under a scheme the agreement does not cover, only the scheme
/// and the verdict are disclosed; the rest is withheld.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsweredEvaluation {
    pub scheme_id: String,
    pub scheme_version: String,
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosed: Option<Disclosed>,
}

/// What is disclosed of an evaluation under a covered scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disclosed {
    pub agreement_id: String,
    pub record_id: String,
    pub version: u64,
    pub content_hash: String,
    pub subject_name: String,
    pub grade: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<Band>,
    pub period: String,
    pub valid_from: String,
    pub valid_to: String,
    pub evaluator: String,
    pub evaluator_uscc: String,
    pub evaluated_on: String,
    pub disclosure_scope: String,
    /// The record's state where it is held: `active` or `disputed` (异议 pending).
    pub state: String,
}

impl AnsweredEvaluation {
    pub fn verdict(&self) -> Option<Verdict> {
        match (self.verdict.as_str(), self.reason) {
            ("recognised", None) => Some(Verdict::Recognised),
            ("not_recognised", Some(r)) => Some(Verdict::NotRecognised(r)),
            _ => None,
        }
    }
}

/// Signs an answer as this node.
pub fn sign_answer(body: &AnswerBody, kid: &str, key: &SigningKey) -> Jws {
    jws::sign(ANSWER_TYP, kid, &serde_json::to_value(body).unwrap_or(Value::Null), key)
}

/// Why an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("answer JWS: {0}")]
    Form(#[from] JwsError),
    #[error("answer body does not match the schema: {0}")]
    Body(String),
    #[error("answer is signed by {kid}, not by the answerer {answerer}")]
    WrongSigner { kid: String, answerer: String },
    #[error("answer key: {0}")]
    Key(#[from] KeyError),
    #[error("answer signature does not verify")]
    BadSignature,
    #[error("answer was given to {asker}, not to {expected}")]
    WrongAsker { asker: String, expected: String },
    #[error("/subjects/{subject}/evaluations/{index}: {reason}")]
    Verdict { subject: usize, index: usize, reason: String },
}

/// Verifies an answer's signature against `registry`: signed by a key of the answerer valid
/// when it was answered. `expected` = (answerer, asker) when the caller knows them.
pub fn verify_answer(
    jws: &Jws,
    registry: &Registry,
    expected: Option<(&str, &str)>,
) -> Result<AnswerBody, AnswerError> {
    let decoded = jws.decode(ANSWER_TYP)?;
    let body: AnswerBody =
        serde_json::from_value(decoded.body.clone()).map_err(|e| AnswerError::Body(e.to_string()))?;
    let kid = &decoded.header.kid;
    if kid_member(kid) != Some(body.answerer.as_str()) {
        return Err(AnswerError::WrongSigner { kid: kid.clone(), answerer: body.answerer.clone() });
    }
    if let Some((answerer, asker)) = expected {
        if body.answerer != answerer {
            return Err(AnswerError::WrongSigner { kid: kid.clone(), answerer: answerer.into() });
        }
        if body.asker != asker {
            return Err(AnswerError::WrongAsker { asker: body.asker.clone(), expected: asker.into() });
        }
    }
    let at = parse_time(&body.answered_at)
        .ok_or_else(|| AnswerError::Body(format!("answered_at {:?} is not a spec timestamp", body.answered_at)))?;
    let key = registry.signing_key(kid, &body.answerer, at)?;
    decoded.verify(&key).map_err(|_| AnswerError::BadSignature)?;
    Ok(body)
}

/// Checks that every verdict in `body` is what [`recognise`] gives under the `agreements`
/// it names, judged on its `as_of` day (the agreements in force then).
pub fn check_verdicts(body: &AnswerBody, agreements: &[&AgreementBody]) -> Result<(), AnswerError> {
    let today = parse_date(&body.as_of).ok_or_else(|| AnswerError::Body(format!("as_of {:?}", body.as_of)))?;
    for (s, subject) in body.subjects.iter().enumerate() {
        for (i, e) in subject.evaluations.iter().enumerate() {
            let fail = |reason: String| AnswerError::Verdict { subject: s, index: i, reason };
            let claimed =
                e.verdict().ok_or_else(|| fail(format!("verdict {:?} with reason {:?}", e.verdict, e.reason)))?;
            let Some(d) = &e.disclosed else {
                // Withheld: only "not covered" may withhold, and then no agreement may cover it.
                let covered = agreements.iter().any(|a| a.scheme(&e.scheme_id, &e.scheme_version).is_some());
                if claimed != Verdict::NotRecognised(Reason::SchemeNotCovered) || covered {
                    return Err(fail("details withheld for a scheme the agreements cover".into()));
                }
                continue;
            };
            let agreement = agreements
                .iter()
                .find(|a| a.agreement_id == d.agreement_id)
                .ok_or_else(|| fail(format!("agreement {} is not among the answer's agreements", d.agreement_id)))?;
            if agreement.scheme(&e.scheme_id, &e.scheme_version).is_none() {
                return Err(fail(format!("details disclosed under a scheme {} does not cover", d.agreement_id)));
            }
            let (Some(from), Some(to)) = (parse_date(&d.valid_from), parse_date(&d.valid_to)) else {
                return Err(fail("validity dates are not YYYY-MM-DD".into()));
            };
            let graded = Graded {
                scheme_id: &e.scheme_id,
                scheme_version: &e.scheme_version,
                grade: &d.grade,
                valid_from: from,
                valid_to: to,
            };
            let (band, verdict) = recognise(agreement, true, graded, today);
            if band != d.band || verdict != claimed {
                return Err(fail(format!(
                    "the agreement gives band {band:?} and {}, the answer says {:?} and {}",
                    verdict.as_str(),
                    d.band,
                    claimed.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// An answer with what is needed to check it offline (schema
/// `schemas/interchange/evaluation_evidence`): the registry in force and the agreements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerEvidence {
    pub typ: String,
    pub answer: Jws,
    pub registry: Jws,
    pub agreements: Vec<SignedAgreement>,
}

/// Whether `bytes` look like an answer bundle (by `typ`), so that `evidence verify` can tell
/// it from a record's evidence bundle before verifying either.
pub fn is_answer_evidence(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Typ {
        typ: Option<String>,
    }
    serde_json::from_slice::<Typ>(bytes).is_ok_and(|t| t.typ.as_deref() == Some(ANSWER_EVIDENCE_TYP))
}

/// What a verified answer bundle showed.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedAnswer {
    pub body: AnswerBody,
    pub registry_version: u64,
    pub signer: String,
}

/// Verifies an answer bundle offline against trusted roots: the registry's root signature, the
/// answer's signature by the answerer's key at `answered_at`, each agreement the answer names
/// (present, same digest, signed by every party), and every verdict.
pub fn verify_answer_evidence(bytes: &[u8], roots: &[super::registry::RootKey]) -> Result<VerifiedAnswer, String> {
    let value = crate::canonical::parse_strict(bytes).map_err(|e| format!("not strict JSON: {e}"))?;
    let bundle: AnswerEvidence = serde_json::from_value(value).map_err(|e| format!("not an answer bundle: {e}"))?;
    if bundle.typ != ANSWER_EVIDENCE_TYP {
        return Err(format!("/typ: expected {ANSWER_EVIDENCE_TYP}, found {}", bundle.typ));
    }
    let registry = Registry::verify_signed(&bundle.registry, roots).map_err(|e| format!("/registry: {e}"))?;
    let body = verify_answer(&bundle.answer, &registry, None).map_err(|e| format!("/answer: {e}"))?;
    // as_of is the answerer's day (Beijing, UTC+8) when it answered.
    let answered = parse_time(&body.answered_at).map(|t| (t + time::Duration::hours(8)).date());
    if answered.map(crate::date::format_date).as_deref() != Some(body.as_of.as_str()) {
        return Err(format!(
            "/answer: as_of {} is not the Beijing date of answered_at {}",
            body.as_of, body.answered_at
        ));
    }
    let mut used = Vec::new();
    for (i, r) in body.agreements.iter().enumerate() {
        let (j, signed) = bundle
            .agreements
            .iter()
            .enumerate()
            .find(|(_, a)| a.agreement.agreement_id == r.agreement_id)
            .ok_or_else(|| format!("/answer agreements/{i}: agreement {} is not in the bundle", r.agreement_id))?;
        let digest = signed.verify_signatures(&registry).map_err(|e| format!("/agreements/{j}: {e}"))?;
        if digest.to_hex() != r.digest {
            return Err(format!("/agreements/{j}: digest {} differs from the answer's {}", digest.to_hex(), r.digest));
        }
        if !signed.agreement.covers(&body.asker) || !signed.agreement.covers(&body.answerer) {
            return Err(format!("/agreements/{j}: {} and {} are not both parties", body.answerer, body.asker));
        }
        let (from, to) = signed.agreement.check().map_err(|e| format!("/agreements/{j}: {e}"))?;
        let as_of = parse_date(&body.as_of).ok_or_else(|| format!("/answer as_of {:?} is not a date", body.as_of))?;
        if as_of < from || as_of > to {
            return Err(format!(
                "/agreements/{j}: the answer was given on {as_of}, outside the agreement's period {} – {}",
                signed.agreement.valid_from, signed.agreement.valid_to
            ));
        }
        used.push(&signed.agreement);
    }
    check_verdicts(&body, &used).map_err(|e| format!("/answer: {e}"))?;
    let signer = bundle.answer.unverified_kid().unwrap_or_default();
    Ok(VerifiedAnswer { body, registry_version: registry.body.version, signer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn agreement() -> AgreementBody {
        AgreementBody {
            agreement_id: "zibo-dongying-2026".into(),
            title: "淄博—东营信用评价结果互认协议".into(),
            parties: vec!["cn-370300".into(), "cn-370500".into()],
            schemes: vec![SchemeMapping {
                scheme_id: "tax_credit".into(),
                versions: vec!["2014".into()],
                bands: [("A", Band::Excellent), ("B", Band::Good), ("C", Band::Fair), ("D", Band::Poor)]
                    .into_iter()
                    .map(|(g, b)| (g.to_owned(), b))
                    .collect(),
                not_rated: vec!["M".into()],
            }],
            purposes: vec!["administrative_approval".into()],
            valid_from: "2026-01-01".into(),
            valid_to: "2027-12-31".into(),
        }
    }

    fn graded<'a>(scheme: &'a str, version: &'a str, grade: &'a str) -> Graded<'a> {
        Graded {
            scheme_id: scheme,
            scheme_version: version,
            grade,
            valid_from: date!(2026 - 04 - 01),
            valid_to: date!(2027 - 03 - 31),
        }
    }

    #[test]
    fn verdicts_follow_the_mapping_the_dates_and_the_agreement() {
        let a = agreement();
        let today = date!(2026 - 11 - 23);
        assert_eq!(
            recognise(&a, true, graded("tax_credit", "2014", "A"), today),
            (Some(Band::Excellent), Verdict::Recognised)
        );
        assert_eq!(
            recognise(&a, true, graded("tax_credit", "2014", "D"), today),
            (Some(Band::Poor), Verdict::Recognised)
        );
        assert_eq!(
            recognise(&a, true, graded("tax_credit", "2014", "M"), today),
            (None, Verdict::NotRecognised(Reason::NotRated))
        );
        assert_eq!(
            recognise(&a, true, graded("tax_credit", "2025", "A"), today),
            (None, Verdict::NotRecognised(Reason::SchemeNotCovered))
        );
        assert_eq!(
            recognise(&a, true, graded("public_credit_composite", "2014", "A"), today),
            (None, Verdict::NotRecognised(Reason::SchemeNotCovered))
        );
        assert_eq!(
            recognise(&a, true, graded("tax_credit", "2014", "E"), today),
            (None, Verdict::NotRecognised(Reason::GradeNotMapped))
        );
        assert_eq!(
            recognise(&a, true, graded("tax_credit", "2014", "B"), date!(2027 - 04 - 01)),
            (Some(Band::Good), Verdict::NotRecognised(Reason::EvaluationExpired))
        );
        assert_eq!(
            recognise(&a, false, graded("tax_credit", "2014", "B"), today),
            (Some(Band::Good), Verdict::NotRecognised(Reason::AgreementExpired))
        );
    }

    #[test]
    fn agreement_text_is_checked() {
        let mut a = agreement();
        assert!(a.check().is_ok());
        a.parties = vec!["cn-370300".into(), "cn-370300".into()];
        assert!(matches!(a.check(), Err(AgreementError::Body(_))));
        let mut a = agreement();
        a.valid_to = "2025-12-31".into();
        assert!(matches!(a.check(), Err(AgreementError::Body(_))));
        let mut a = agreement();
        a.schemes[0].not_rated.push("A".into());
        assert!(matches!(a.check(), Err(AgreementError::Body(_))));
        // The digest names the text: any change makes another agreement.
        let mut b = agreement();
        b.purposes.push("public_procurement".into());
        assert_ne!(agreement().digest(), b.digest());
    }
}
