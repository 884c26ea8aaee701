//! Issuing and checking credentials. An API key is `cgk_` and 256 random bits (base64url);
//! the store keeps only its SHA-256, which is enough for a random 256-bit secret (nothing can
//! be guessed, so a slow password hash would only cost time on every call) and needs no
//! node-held pepper that replicas would have to share. A client certificate is registered by
//! the SHA-256 of its DER, and must also chain to the operator's client CA (checked in the
//! TLS handshake).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use gateway_core::canonical::Sha256Digest;
use gateway_core::interchange::{format_time, parse_time};
use gateway_store::Store;
use gateway_store::access::Credential;
use time::OffsetDateTime;

use super::{Principal, Role, grants};

/// How an API key starts: tells a leaked key apart in logs and secret scanners.
pub const KEY_PREFIX: &str = "cgk_";
/// A credential's last-used time is written at most this often.
const TOUCH_EVERY_SECS: i64 = 60;

/// What `credential issue` asks for.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    pub principal: String,
    pub role: Option<Role>,
    pub unit_uscc: Option<String>,
    pub category: Option<String>,
    pub report_for: Vec<String>,
    pub grants: Vec<String>,
    /// Days until it expires; `None` = never.
    pub expires_in_days: Option<u32>,
    /// PEM of a client certificate to register instead of making an API key.
    pub certificate_pem: Option<Vec<u8>>,
}

/// A credential just issued: the API key is shown once, here, and never again.
#[derive(Debug)]
pub struct Issued {
    pub credential: Credential,
    pub api_key: Option<String>,
}

/// The SHA-256 (hex) an API key is kept and looked up by.
pub fn key_digest(key: &str) -> String {
    Sha256Digest::of(key.as_bytes()).to_hex()
}

/// The SHA-256 (hex) of the first certificate in a PEM file.
pub fn certificate_digest(pem: &[u8]) -> anyhow::Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).context("not a PEM certificate")?;
    pem.parse_x509().context("not an X.509 certificate")?;
    Ok(Sha256Digest::of(&pem.contents).to_hex())
}

/// Checks `req` and keeps the credential. Errors say what is wrong, for the CLI and the API.
pub async fn issue(store: &Store, req: IssueRequest, now: OffsetDateTime) -> anyhow::Result<Issued> {
    let role = req.role.context("a credential needs a role (department, desk_officer, operator, auditor, admin)")?;
    let principal = req.principal.trim().to_owned();
    anyhow::ensure!(
        !principal.is_empty() && principal.chars().count() <= 100 && !principal.chars().any(char::is_control),
        "the principal's name must be 1–100 characters without control characters"
    );
    let code = |c: &str| -> anyhow::Result<String> {
        let c = gateway_core::ident::normalize_code(c);
        gateway_core::ident::check_uscc(&c).map_err(|e| anyhow::anyhow!("{c:?} is not a valid USCC ({e:?})"))?;
        Ok(c)
    };
    let unit_uscc = req.unit_uscc.as_deref().map(code).transpose()?;
    let report_for = req.report_for.iter().map(|c| code(c)).collect::<anyhow::Result<Vec<_>>>()?;
    if matches!(role, Role::Department | Role::DeskOfficer) {
        anyhow::ensure!(unit_uscc.is_some(), "a {role} names its unit: pass its USCC (--unit)");
    }
    for g in &req.grants {
        anyhow::ensure!(grants::ALL.contains(&g.as_str()), "unknown grant {g:?}; known: {}", grants::ALL.join(", "));
    }
    let (kind, secret_sha256, api_key) = match &req.certificate_pem {
        Some(pem) => ("certificate", certificate_digest(pem)?, None),
        None => {
            let secret = crate::pki::random_secret(&ring::rand::SystemRandom::new())?;
            let key = format!("{KEY_PREFIX}{}", B64.encode(secret));
            ("api_key", key_digest(&key), Some(key))
        }
    };
    let expires_at = req.expires_in_days.map(|d| format_time(now + time::Duration::days(i64::from(d))));
    let credential = Credential {
        credential_id: format!("cred-{}", uuid::Uuid::now_v7().simple()),
        kind: kind.into(),
        principal,
        role: role.as_str().into(),
        unit_uscc,
        category: req.category.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
        report_for,
        grants: req.grants,
        secret_sha256,
        created_at: format_time(now),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    store.add_credential(&credential).await.map_err(|e| {
        if kind == "certificate" && e.to_string().contains("secret_sha256") {
            anyhow::anyhow!("this certificate is registered already")
        } else {
            anyhow::anyhow!(e)
        }
    })?;
    Ok(Issued { credential, api_key })
}

/// What an audit entry says about a credential issued: everything it allows, never its secret.
pub fn describe(c: &Credential) -> String {
    format!(
        "issued {} {} for {} ({}), unit {}, category {}, reports for [{}], grants [{}], expires {}",
        c.kind,
        c.credential_id,
        c.principal,
        c.role,
        c.unit_uscc.as_deref().unwrap_or("-"),
        c.category.as_deref().unwrap_or("-"),
        c.report_for.join(", "),
        c.grants.join(", "),
        c.expires_at.as_deref().unwrap_or("never")
    )
}

/// Why a credential was turned away (401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Unknown,
    Revoked,
    Expired,
    Malformed,
    /// Not checked: the credential store could not be read. No fault of the caller's, and not
    /// counted against it; answered 503 when the store is unreachable, else 500.
    Unchecked {
        unavailable: bool,
    },
}

impl Denied {
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Unknown => "auth.unknown_credential",
            Denied::Revoked => "auth.revoked",
            Denied::Expired => "auth.expired",
            Denied::Malformed => "auth.malformed_credential",
            Denied::Unchecked { .. } => "store_unavailable",
        }
    }

    pub fn messages(&self) -> (&'static str, &'static str) {
        match self {
            Denied::Unknown => ("凭据无效", "the credential is not valid"),
            Denied::Revoked => ("该凭据已被吊销", "the credential has been revoked"),
            Denied::Expired => ("该凭据已过期", "the credential has expired"),
            Denied::Malformed => (
                "凭据格式不对（应为 Authorization: Bearer cgk_…）",
                "malformed credential (expected Authorization: Bearer cgk_…)",
            ),
            Denied::Unchecked { .. } => ("凭据暂时无法核验", "the credential cannot be checked at the moment"),
        }
    }
}

/// Checks credentials against the store for the API's access layer.
#[derive(Debug)]
pub struct Authenticator {
    /// Whether calls need a credential (off only for loopback development).
    pub required: bool,
    store: Arc<Store>,
    /// When each credential's last use was last written (Unix seconds).
    touched: Mutex<HashMap<String, i64>>,
}

impl Authenticator {
    pub fn new(required: bool, store: Arc<Store>) -> Self {
        Self { required, store, touched: Mutex::new(HashMap::new()) }
    }

    /// The principal of an API key.
    pub async fn api_key(&self, key: &str, now: OffsetDateTime) -> Result<Principal, Denied> {
        if !key.starts_with(KEY_PREFIX) || key.len() > 200 {
            return Err(Denied::Malformed);
        }
        self.by_digest(&key_digest(key), now).await
    }

    /// The principal of a client certificate (its SHA-256), if one is registered.
    pub async fn certificate(&self, sha256: &str, now: OffsetDateTime) -> Result<Principal, Denied> {
        self.by_digest(sha256, now).await
    }

    async fn by_digest(&self, digest: &str, now: OffsetDateTime) -> Result<Principal, Denied> {
        let found = self.store.credential_by_secret(digest).await.map_err(|e| {
            tracing::error!(error = %e, "credential lookup failed");
            Denied::Unchecked { unavailable: e.is_unavailable() }
        })?;
        let c = found.ok_or(Denied::Unknown)?;
        if c.revoked_at.is_some() {
            return Err(Denied::Revoked);
        }
        if c.expires_at.as_deref().and_then(parse_time).is_some_and(|t| t <= now) {
            return Err(Denied::Expired);
        }
        let role = Role::parse(&c.role).ok_or(Denied::Unknown)?;
        self.touch(&c.credential_id, now);
        Ok(Principal {
            name: c.principal,
            role,
            credential_id: Some(c.credential_id),
            unit_uscc: c.unit_uscc,
            category: c.category,
            report_for: c.report_for,
            grants: c.grants,
        })
    }

    /// Notes the use in the background, at most once a minute per credential.
    fn touch(&self, id: &str, now: OffsetDateTime) {
        let t = now.unix_timestamp();
        let due = self.touched.lock().is_ok_and(|mut m| {
            let last = m.get(id).copied();
            let due = last.is_none_or(|last| t.saturating_sub(last) >= TOUCH_EVERY_SECS);
            if due {
                m.insert(id.to_owned(), t);
            }
            due
        });
        if due {
            let (store, used) = (Arc::clone(&self.store), vec![(id.to_owned(), format_time(now))]);
            tokio::spawn(async move {
                if let Err(e) = store.touch_credentials(&used).await {
                    tracing::warn!(error = %e, "could not note a credential's last use");
                }
            });
        }
    }
}
