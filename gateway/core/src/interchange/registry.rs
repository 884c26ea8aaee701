//! The federation registry (interchange-v1 §7): who is a member, where it listens, which TLS
//! certificate and signing keys it has, and who its parent and partners are. Signed by a
//! federation root; refused if signed otherwise, rolled back, or expired past the grace period.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::{kid_member, parse_time};
use crate::canonical::Sha256Digest;
use crate::crypto::{Alg, PublicKey, SignatureError};
use crate::jws::{Jws, JwsError, from_b64u};

pub const REGISTRY_TYP: &str = "credit-gateway/registry+v1";

/// The registry body (a wire type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryBody {
    pub federation: String,
    pub version: u64,
    pub issued_at: String,
    pub expires_at: String,
    pub roots: Vec<RootKey>,
    pub members: Vec<Member>,
    pub agreements: Vec<Value>,
    pub adapters: Vec<AdapterEntry>,
    /// Measures catalogues in force (联合奖惩措施清单, by hash). An addition to interchange-v1 §7
    /// (ADR 0007): absent from older registries, and left out when empty so that nodes that
    /// do not know it still read registries without catalogues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<MeasuresEntry>,
}

/// A federation root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKey {
    pub kid: String,
    pub alg: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    District,
    Municipal,
    Provincial,
    National,
}

/// One member node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub member_id: String,
    pub name: String,
    pub level: Level,
    pub region_code: String,
    pub parent: Option<String>,
    pub partners: Vec<String>,
    pub endpoint: String,
    /// SHA-256 (hex) of the DER of the member's pinned TLS certificate.
    pub tls_cert_sha256: String,
    pub keys: Vec<MemberKey>,
    pub roles: Vec<String>,
}

/// A member's signing key and the window in which it may sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberKey {
    pub kid: String,
    pub alg: String,
    pub public_key: String,
    pub valid_from: String,
    pub valid_to: String,
    /// SM2 signer identity, when not the GM/T 0009 default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm2_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterEntry {
    pub platform: String,
    pub manifest_sha256: String,
}

/// An approved measures catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuresEntry {
    pub catalogue: String,
    pub catalogue_sha256: String,
}

/// Why a document said to be signed by a federation root was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSignatureError {
    /// Not a JWS of the expected type.
    Form(String),
    /// Signed by a key that is not a root of the registry.
    UntrustedSigner {
        kid: String,
    },
    BadSignature,
}

/// Why a registry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry JWS: {0}")]
    Form(#[from] JwsError),
    #[error("registry body does not match the schema: {0}")]
    Body(String),
    #[error("registry is signed by {kid}, which is not a trusted federation root")]
    UntrustedSigner { kid: String },
    #[error("registry signature does not verify")]
    BadSignature,
    #[error("registry version {offered} is older than the held version {held} (rollback refused)")]
    Rollback { offered: u64, held: u64 },
    #[error("registry expired at {expires_at} and the grace period has passed")]
    Expired { expires_at: String },
    #[error("registry is inconsistent: {0}")]
    Inconsistent(String),
}

/// Why a key could not be used for a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid} is not registered")]
    Unknown { kid: String },
    #[error("key {kid} is not valid at {at} (window {valid_from} – {valid_to})")]
    OutsideWindow { kid: String, at: String, valid_from: String, valid_to: String },
    #[error("key {kid} belongs to {owner}, not to {claimed}")]
    WrongMember { kid: String, owner: String, claimed: String },
    #[error("key {kid} is malformed: {source}")]
    Malformed { kid: String, source: SignatureError },
}

/// How current a verified registry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// Past `expires_at` but inside the grace period: keep working, warn loudly.
    InGrace {
        expired_for: Duration,
    },
}

/// A registry whose signature, version and expiry have been checked.
#[derive(Debug, Clone)]
pub struct Registry {
    pub body: RegistryBody,
    pub jws: Jws,
    pub digest: Sha256Digest,
    pub expires_at: OffsetDateTime,
}

impl RootKey {
    pub fn public_key(&self) -> Result<PublicKey, SignatureError> {
        decode_key(&self.alg, &self.public_key, None)
    }
}

fn decode_key(alg: &str, b64: &str, sm2_id: Option<&str>) -> Result<PublicKey, SignatureError> {
    let alg: Alg = alg.parse()?;
    let bytes = from_b64u(b64).ok_or(SignatureError::BadKey { alg })?;
    Ok(PublicKey { alg, bytes, sm2_id: sm2_id.map(str::to_owned) })
}

impl Registry {
    /// Verifies a registry document. `trusted` are the root keys this node already trusts
    /// (the configuration anchor, or the roots of the registry it holds); `held_version` is the
    /// version it holds, if any.
    pub fn verify(
        jws: &Jws,
        trusted: &[RootKey],
        held_version: Option<u64>,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<(Registry, Freshness), RegistryError> {
        let registry = Self::verify_signed(jws, trusted)?;
        if let Some(held) = held_version
            && registry.body.version < held
        {
            return Err(RegistryError::Rollback { offered: registry.body.version, held });
        }
        let freshness = registry.freshness(now, grace)?;
        Ok((registry, freshness))
    }

    /// Checks the root signature, the body and its consistency, but neither version nor
    /// expiry: for evidence, which is judged by the key windows at the time it was signed.
    pub fn verify_signed(jws: &Jws, trusted: &[RootKey]) -> Result<Registry, RegistryError> {
        let decoded = jws.decode(REGISTRY_TYP)?;
        let root = trusted
            .iter()
            .find(|r| r.kid == decoded.header.kid)
            .ok_or_else(|| RegistryError::UntrustedSigner { kid: decoded.header.kid.clone() })?;
        let key = root.public_key().map_err(|_| RegistryError::BadSignature)?;
        decoded.verify(&key).map_err(|_| RegistryError::BadSignature)?;
        let body: RegistryBody =
            serde_json::from_value(decoded.body).map_err(|e| RegistryError::Body(e.to_string()))?;
        let expires_at = parse_time(&body.expires_at)
            .ok_or_else(|| RegistryError::Body(format!("expires_at {:?} is not a spec timestamp", body.expires_at)))?;
        let registry = Registry { body, jws: jws.clone(), digest: jws.digest(), expires_at };
        registry.check_consistency()?;
        Ok(registry)
    }

    /// How current this registry is at `now`: an error once it is past its grace period (the
    /// node then refuses federation traffic until a newer registry arrives).
    pub fn freshness(&self, now: OffsetDateTime, grace: Duration) -> Result<Freshness, RegistryError> {
        if now <= self.expires_at {
            Ok(Freshness::Current)
        } else if now - self.expires_at <= grace {
            Ok(Freshness::InGrace { expired_for: now - self.expires_at })
        } else {
            Err(RegistryError::Expired { expires_at: self.body.expires_at.clone() })
        }
    }

    /// The root keys a successor registry may be signed by: this registry's roots.
    pub fn trusted_roots(&self) -> &[RootKey] {
        &self.body.roots
    }

    /// The body of `jws` (of type `typ`), once a root of this registry is shown to have signed
    /// it: what root-signed documents (adapter manifests, measures catalogues) are checked by.
    pub fn root_signed_body(&self, jws: &Jws, typ: &str) -> Result<Value, RootSignatureError> {
        let decoded = jws.decode(typ).map_err(|e| RootSignatureError::Form(e.to_string()))?;
        let root = self
            .trusted_roots()
            .iter()
            .find(|r| r.kid == decoded.header.kid)
            .ok_or_else(|| RootSignatureError::UntrustedSigner { kid: decoded.header.kid.clone() })?;
        let key = root.public_key().map_err(|_| RootSignatureError::BadSignature)?;
        decoded.verify(&key).map_err(|_| RootSignatureError::BadSignature)?;
        Ok(decoded.body)
    }

    fn check_consistency(&self) -> Result<(), RegistryError> {
        let bad = |m: String| Err(RegistryError::Inconsistent(m));
        let mut seen = std::collections::HashSet::new();
        for m in &self.body.members {
            if !super::is_member_id(&m.member_id) || !seen.insert(m.member_id.as_str()) {
                return bad(format!("member id {:?} is malformed or repeated", m.member_id));
            }
            if let Some(parent) = &m.parent
                && self.member(parent).is_none()
            {
                return bad(format!("{} names unknown parent {parent}", m.member_id));
            }
            for k in &m.keys {
                if kid_member(&k.kid) != Some(m.member_id.as_str()) {
                    return bad(format!("key {} is listed under {}", k.kid, m.member_id));
                }
            }
        }
        // Parent links must end at a root: no cycles.
        for m in &self.body.members {
            let mut at = m;
            for _ in 0..=self.body.members.len() {
                match at.parent.as_deref().and_then(|p| self.member(p)) {
                    Some(p) => at = p,
                    None => break,
                }
            }
            if at.parent.is_some() {
                return bad(format!("parent links from {} form a cycle", m.member_id));
            }
        }
        Ok(())
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.body.members.iter().find(|m| m.member_id == id)
    }

    /// The registered key `kid`, whatever its window.
    pub fn key(&self, kid: &str) -> Option<&MemberKey> {
        self.member(kid_member(kid)?)?.keys.iter().find(|k| k.kid == kid)
    }

    /// The public key `kid` of `member`, valid at `at`.
    pub fn signing_key(&self, kid: &str, member: &str, at: OffsetDateTime) -> Result<PublicKey, KeyError> {
        let owner = kid_member(kid).unwrap_or_default();
        let key = self
            .member(owner)
            .and_then(|m| m.keys.iter().find(|k| k.kid == kid))
            .ok_or_else(|| KeyError::Unknown { kid: kid.to_owned() })?;
        if owner != member {
            return Err(KeyError::WrongMember {
                kid: kid.to_owned(),
                owner: owner.to_owned(),
                claimed: member.to_owned(),
            });
        }
        let window = (parse_time(&key.valid_from), parse_time(&key.valid_to));
        let inside = matches!(window, (Some(from), Some(to)) if from <= at && at <= to);
        if !inside {
            return Err(KeyError::OutsideWindow {
                kid: kid.to_owned(),
                at: super::format_time(at),
                valid_from: key.valid_from.clone(),
                valid_to: key.valid_to.clone(),
            });
        }
        decode_key(&key.alg, &key.public_key, key.sm2_id.as_deref())
            .map_err(|source| KeyError::Malformed { kid: kid.to_owned(), source })
    }

    /// Whether `ancestor` is `member` or above it in the tree.
    pub fn is_ancestor_or_self(&self, ancestor: &str, member: &str) -> bool {
        let mut at = Some(member);
        for _ in 0..=self.body.members.len() {
            match at {
                Some(id) if id == ancestor => return true,
                Some(id) => at = self.member(id).and_then(|m| m.parent.as_deref()),
                None => return false,
            }
        }
        false
    }

    /// Whether `sender` may pass an item that originated at `origin` to `receiver`: upward from
    /// its own subtree, downward into its own subtree, or across a partner link.
    pub fn may_forward(&self, sender: &str, origin: &str, receiver: &str) -> bool {
        let partners = self.member(sender).is_some_and(|m| m.partners.iter().any(|p| p == receiver));
        self.is_ancestor_or_self(sender, origin) || self.is_ancestor_or_self(sender, receiver) || partners
    }
}
