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
//!
//! This module holds what both sides share (the agreements, the lookup's subjects);
//! `answering.rs` answers partners, `desk.rs` asks them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::canonical::{Sha256Digest, parse_strict};
use gateway_core::date::today_in_china;
use gateway_core::ident::{check_uscc, normalize_code};
use gateway_core::interchange::evaluation::{AgreementBody, AgreementError, MAX_SUBJECTS, SignedAgreement};
use gateway_core::interchange::registry::Registry;
use gateway_store::Store;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::error::ServiceError;
use crate::interchange::Identity;

mod answering;
pub mod cli;
mod desk;

pub use answering::answer;
pub use desk::{DeskAnswer, DeskEvaluation, DeskSubject, answer_evidence, lookup, resolve_partner};

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
    /// The desk officer who asks, as the asking node authenticated them (absent from older
    /// nodes): the answering node keeps it in its audit log beside the member that asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub officer: Option<String>,
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

#[cfg(test)]
mod tests {
    use gateway_core::date::parse_date;
    use gateway_core::interchange::evaluation::{Band, SchemeMapping};
    use gateway_core::jws::Jws;
    use gateway_store::evaluations::HeldEvaluation;
    use serde_json::{Value, json};
    use time::macros::date;

    use super::answering::answer_subjects;
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
