//! The joint reward-and-punishment measures catalogue (联合奖惩措施清单, #24): which measures a
//! list entry starts, at which category of department, on what legal basis, and by when the
//! department must respond and feed back. Since 国办发〔2020〕49号 a measure must come from the
//! list of measures (全国失信惩戒措施基础清单 and its local supplements), never be made up case by
//! case, so the catalogue is data, signed by a federation root and approved by its hash in the
//! registry (`measures`), like an adapter manifest.
//!
//! Sans-IO: the caller reads the catalogue (TOML) and its signature and hands in bytes.
//! [`Catalogue::parse`] is the conformance check: it names every problem at once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::canonical::Sha256Digest;
use crate::interchange::registry::Registry;
use crate::jws::Jws;

/// `typ` of a catalogue signature (a JWS over `{catalogue, catalogue_sha256, signed_at}`).
pub const CATALOGUE_SIGNATURE_TYP: &str = "credit-gateway/measures-catalogue+v1";

/// 惩戒 or 激励.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 失信惩戒: started by black-list and 重点关注 entries.
    Punish,
    /// 守信激励: started by red-list entries.
    Reward,
}

/// Which platforms a list entry must reach for the measure's departments to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// The platforms of the subject's region and those above it.
    Region,
    /// Every platform of the federation.
    All,
}

/// The catalogue's heading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heading {
    /// e.g. `cn-credit-measures`.
    pub id: String,
    /// e.g. `2026.1`.
    pub version: String,
    pub title: String,
    /// The list of measures it follows (e.g. 全国失信惩戒措施基础清单（2024年版）).
    pub basis: String,
}

/// One measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// Stable id, `[a-z0-9-]`, at most 64 characters.
    pub id: String,
    /// 措施名称.
    pub title: String,
    pub kind: Kind,
    /// The list types that start it: `black`, `watch` (惩戒) or `red` (激励).
    pub list_types: Vec<String>,
    /// The domains (领域) whose entries start it; empty means every domain.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The item of the list of measures (or memorandum) it comes from.
    pub basis_item: String,
    /// The article of law it rests on.
    pub legal_basis: String,
    /// 实施主体: the department category that applies it (as credentials name categories).
    pub implementing_category: String,
    /// Working days to respond (响应) after the case is opened.
    pub response_days: u32,
    /// Working days to feed back (反馈) after the response.
    pub feedback_days: u32,
    /// Whether a feedback must carry evidence (a document number or an attachment hash).
    pub feedback_evidence: bool,
    pub reach: Reach,
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    catalogue: Heading,
    measures: Vec<Measure>,
}

/// A checked catalogue and the SHA-256 of the exact bytes it came from (what is signed and
/// approved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    pub heading: Heading,
    pub measures: Vec<Measure>,
    pub sha256: Sha256Digest,
}

/// Why a catalogue or its signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("measures catalogue is not valid TOML of the catalogue's form: {0}")]
    Form(String),
    #[error("measures catalogue fails the conformance check:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Conformance(Vec<String>),
    #[error("measures catalogue is unsigned: no signature file {0} (sign it with `credit-gateway measures sign`)")]
    Unsigned(String),
    #[error("measures catalogue signature is malformed: {0}")]
    SignatureForm(String),
    #[error("measures catalogue is signed by {kid}, which is not a federation root of the registry in force")]
    UntrustedSigner { kid: String },
    #[error("measures catalogue signature does not verify")]
    BadSignature,
    #[error(
        "measures catalogue was altered after signing: its SHA-256 is {actual}, the signature covers {signed} \
         (re-sign the reviewed catalogue, or restore the signed one)"
    )]
    Tampered { actual: String, signed: String },
    #[error("signature is for catalogue {signed}, but the file declares {declared}")]
    WrongCatalogue { signed: String, declared: String },
    #[error(
        "measures catalogue {id} ({sha256}) is not approved by registry version {registry_version} \
         (the federation operator lists approved catalogue hashes under `measures`)"
    )]
    NotApproved { id: String, sha256: String, registry_version: u64 },
}

const LIST_TYPES: [&str; 3] = ["red", "black", "watch"];

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Catalogue {
    /// Reads and checks a catalogue: its form, then every rule, each problem named.
    pub fn parse(bytes: &[u8]) -> Result<Self, CatalogueError> {
        let text = std::str::from_utf8(bytes).map_err(|e| CatalogueError::Form(e.to_string()))?;
        let file: CatalogueFile = toml::from_str(text).map_err(|e| CatalogueError::Form(e.to_string()))?;
        let mut problems = Vec::new();
        let h = &file.catalogue;
        if !is_id(&h.id) {
            problems.push(format!("catalogue.id {:?} must be 1–64 of [a-z0-9-]", h.id));
        }
        for (name, value) in [("version", &h.version), ("title", &h.title), ("basis", &h.basis)] {
            if value.trim().is_empty() {
                problems.push(format!("catalogue.{name} is empty"));
            }
        }
        if file.measures.is_empty() {
            problems.push("the catalogue lists no measures".into());
        }
        let mut seen = BTreeSet::new();
        for (i, m) in file.measures.iter().enumerate() {
            let at = format!("measures[{i}] ({})", m.id);
            if !is_id(&m.id) {
                problems.push(format!("{at}: id must be 1–64 of [a-z0-9-]"));
            }
            if !seen.insert(m.id.as_str()) {
                problems.push(format!("{at}: id is used twice"));
            }
            for (name, value) in [
                ("title", &m.title),
                ("basis_item", &m.basis_item),
                ("legal_basis", &m.legal_basis),
                ("implementing_category", &m.implementing_category),
            ] {
                if value.trim().is_empty() {
                    problems.push(format!("{at}: {name} is empty"));
                }
            }
            if m.list_types.is_empty() {
                problems.push(format!("{at}: list_types is empty (which list entries start it?)"));
            }
            for t in &m.list_types {
                let fits = match (m.kind, t.as_str()) {
                    (Kind::Punish, "black" | "watch") | (Kind::Reward, "red") => true,
                    _ if !LIST_TYPES.contains(&t.as_str()) => {
                        problems.push(format!("{at}: unknown list type {t:?} (red, black, watch)"));
                        true
                    }
                    _ => false,
                };
                if !fits {
                    problems.push(format!("{at}: a {:?} measure cannot be started by a {t:?} list entry", m.kind));
                }
            }
            if m.domains.iter().any(|d| d.trim().is_empty() || d.chars().count() > 50) {
                problems.push(format!("{at}: a domain is empty or longer than 50 characters"));
            }
            for (name, days) in [("response_days", m.response_days), ("feedback_days", m.feedback_days)] {
                if !(1..=60).contains(&days) {
                    problems.push(format!("{at}: {name} must be 1–60 working days, not {days}"));
                }
            }
        }
        if !problems.is_empty() {
            return Err(CatalogueError::Conformance(problems));
        }
        Ok(Self { heading: file.catalogue, measures: file.measures, sha256: Sha256Digest::of(bytes) })
    }

    /// The measure with this id.
    pub fn measure(&self, id: &str) -> Option<&Measure> {
        self.measures.iter().find(|m| m.id == id)
    }

    /// The measures a list entry of `list_type` in `domain` starts.
    pub fn started_by<'a>(&'a self, list_type: &'a str, domain: &'a str) -> impl Iterator<Item = &'a Measure> + 'a {
        self.measures.iter().filter(move |m| {
            m.list_types.iter().any(|t| t == list_type)
                && (m.domains.is_empty() || m.domains.iter().any(|d| d == domain))
        })
    }
}

/// The signed statement: which catalogue, which bytes, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSignature {
    pub catalogue: String,
    pub catalogue_sha256: String,
    pub signed_at: String,
}

/// Signs a catalogue's bytes as the federation root `kid`.
pub fn sign(catalogue: &Catalogue, signed_at: &str, kid: &str, key: &crate::crypto::SigningKey) -> Jws {
    let body = CatalogueSignature {
        catalogue: catalogue.heading.id.clone(),
        catalogue_sha256: catalogue.sha256.to_hex(),
        signed_at: signed_at.into(),
    };
    crate::jws::sign(CATALOGUE_SIGNATURE_TYP, kid, &serde_json::to_value(&body).unwrap_or_default(), key)
}

/// Checks that `catalogue` is exactly what a root of `registry` signed, and that the registry
/// approves its hash.
pub fn verify_signature(catalogue: &Catalogue, signature: &Jws, registry: &Registry) -> Result<(), CatalogueError> {
    use crate::interchange::registry::RootSignatureError as R;
    let body = registry.root_signed_body(signature, CATALOGUE_SIGNATURE_TYP).map_err(|e| match e {
        R::Form(e) => CatalogueError::SignatureForm(e),
        R::UntrustedSigner { kid } => CatalogueError::UntrustedSigner { kid },
        R::BadSignature => CatalogueError::BadSignature,
    })?;
    let body: CatalogueSignature =
        serde_json::from_value(body).map_err(|e| CatalogueError::SignatureForm(e.to_string()))?;
    if !catalogue.sha256.is_hex_of(&body.catalogue_sha256) {
        return Err(CatalogueError::Tampered { actual: catalogue.sha256.to_hex(), signed: body.catalogue_sha256 });
    }
    if body.catalogue != catalogue.heading.id {
        return Err(CatalogueError::WrongCatalogue { signed: body.catalogue, declared: catalogue.heading.id.clone() });
    }
    let approved = registry
        .body
        .measures
        .iter()
        .any(|m| m.catalogue == catalogue.heading.id && catalogue.sha256.is_hex_of(&m.catalogue_sha256));
    if !approved {
        return Err(CatalogueError::NotApproved {
            id: catalogue.heading.id.clone(),
            sha256: catalogue.sha256.to_hex(),
            registry_version: registry.body.version,
        });
    }
    Ok(())
}
