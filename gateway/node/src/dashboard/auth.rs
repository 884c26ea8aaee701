//! Operator access to the dashboard: passwords kept only as PBKDF2-HMAC-SHA256 hashes in the
//! configuration, a session cookie signed with a key of this node (`<data_dir>/dashboard.key`,
//! generated), and a per-session token on every form so another site cannot post one.

use std::num::NonZeroU32;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::{hmac, pbkdf2};

use crate::auth::Role;
use crate::config::Operator;

/// The session cookie's name.
pub const COOKIE: &str = "cg_session";
/// How long a login lasts.
pub const SESSION_SECS: i64 = 12 * 3600;
/// PBKDF2 iterations of new hashes (OWASP 2023 guidance for PBKDF2-HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;
/// Checked against when a login names no operator at all (never matches anything typed).
const DUMMY_HASH: &str = "pbkdf2-sha256$600000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Who may log in, and the key that signs their sessions.
#[derive(Clone)]
pub struct Access {
    operators: Vec<Operator>,
    key: hmac::Key,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("operators", &self.operators.len()).finish_non_exhaustive()
    }
}

/// A hash for the configuration: `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64url).
pub fn hash_password(password: &str, iterations: u32) -> anyhow::Result<String> {
    let salt = crate::pki::random_secret(&ring::rand::SystemRandom::new())?;
    let n = NonZeroU32::new(iterations).ok_or_else(|| anyhow::anyhow!("iterations must be positive"))?;
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, &salt[..16], password.as_bytes(), &mut out);
    Ok(format!("pbkdf2-sha256${iterations}${}${}", B64.encode(&salt[..16]), B64.encode(out)))
}

/// Whether `password` matches a hash made by [`hash_password`] (constant-time compare).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let [scheme, iterations, salt, expected] = parts[..] else { return false };
    let (Some(n), Ok(salt), Ok(expected)) =
        (iterations.parse().ok().and_then(NonZeroU32::new), B64.decode(salt), B64.decode(expected))
    else {
        return false;
    };
    scheme == "pbkdf2-sha256"
        && pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, n, &salt, password.as_bytes(), &expected).is_ok()
}

impl Access {
    /// Loads the session key from `data_dir` (creating it) for these operators. Every hash is
    /// checked for form here, so a typo is found at start-up, not at the first login.
    pub fn load(operators: &[Operator], data_dir: &Path) -> anyhow::Result<Self> {
        for op in operators {
            anyhow::ensure!(
                op.password_hash.starts_with("pbkdf2-sha256$") && op.password_hash.split('$').count() == 4,
                "dashboard operator {:?}: password_hash must come from `credit-gateway operator hash-password`",
                op.name
            );
        }
        let secret = crate::alerts::load_or_create_secret(&data_dir.join("dashboard.key"))?;
        Ok(Self { operators: operators.to_vec(), key: hmac::Key::new(hmac::HMAC_SHA256, &secret) })
    }

    /// The operator named `name` if `password` is theirs. An unknown name costs the same hash
    /// as a known one, so that timing does not tell which names exist.
    pub fn login(&self, name: &str, password: &str) -> Option<&str> {
        match self.operators.iter().find(|o| o.name == name) {
            Some(op) => verify_password(&op.password_hash, password).then_some(op.name.as_str()),
            None => {
                let cost = self.operators.first().map_or(DUMMY_HASH, |o| o.password_hash.as_str());
                let _ = verify_password(cost, password);
                None
            }
        }
    }

    pub fn has_operators(&self) -> bool {
        !self.operators.is_empty()
    }

    /// A session cookie value for `name`, valid until `expires` (Unix seconds).
    pub fn session(&self, name: &str, expires: i64) -> String {
        let body = format!("{}.{expires}", B64.encode(name));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", B64.encode(tag.as_ref()))
    }

    /// The operator a cookie value names, if its signature holds, it has not expired at `now`,
    /// and the operator is still configured.
    pub fn operator(&self, cookie: &str, now: i64) -> Option<String> {
        let (body, tag) = cookie.rsplit_once('.')?;
        hmac::verify(&self.key, body.as_bytes(), &B64.decode(tag).ok()?).ok()?;
        let (name, expires) = body.split_once('.')?;
        let name = String::from_utf8(B64.decode(name).ok()?).ok()?;
        (expires.parse::<i64>().ok()? > now && self.operators.iter().any(|o| o.name == name)).then_some(name)
    }

    /// [`Access::operator`] with the account's role (`operator` unless configured otherwise).
    pub fn operator_role(&self, cookie: &str, now: i64) -> Option<(String, Role)> {
        let name = self.operator(cookie, now)?;
        let role = self.role_of(&name)?;
        Some((name, role))
    }

    /// The role of a configured account.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.operators.iter().find(|o| o.name == name).map(|o| Role::of_login(o.role.as_deref()))
    }

    /// The form token of a session: forms carry it, posts must echo it.
    pub fn form_token(&self, cookie: &str) -> String {
        hex::encode(hmac::sign(&self.key, format!("form|{cookie}").as_bytes()).as_ref())
    }

    pub fn form_token_ok(&self, cookie: &str, token: &str) -> bool {
        hex::decode(token).is_ok_and(|t| hmac::verify(&self.key, format!("form|{cookie}").as_bytes(), &t).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_sessions_and_form_tokens() {
        let hash = hash_password("正确的密码", 1_000).expect("hash");
        assert!(verify_password(&hash, "正确的密码"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("pbkdf2-sha256$1000$bad", "x"));
        let dir = tempfile::tempdir().expect("tmp");
        let ops = vec![Operator { name: "ops".into(), password_hash: hash, role: None }];
        let access = Access::load(&ops, dir.path()).expect("access");
        assert_eq!(access.login("ops", "正确的密码"), Some("ops"));
        assert_eq!(access.login("ops", "wrong"), None);
        assert_eq!(access.login("nobody", "正确的密码"), None);
        let cookie = access.session("ops", 2_000);
        assert_eq!(access.operator(&cookie, 1_000).as_deref(), Some("ops"));
        assert_eq!(access.operator_role(&cookie, 1_000), Some(("ops".to_owned(), Role::Operator)));
        assert_eq!(access.operator(&cookie, 2_000), None, "expired");
        let forged = cookie.replacen("ops", "xyz", 1);
        assert_eq!(access.operator(&forged.replace(&B64.encode("ops"), &B64.encode("root")), 1_000), None);
        let token = access.form_token(&cookie);
        assert!(access.form_token_ok(&cookie, &token));
        assert!(!access.form_token_ok(&access.session("ops", 3_000), &token));
        // The same key after a restart: sessions survive.
        let again = Access::load(&ops, dir.path()).expect("access");
        assert_eq!(again.operator(&cookie, 1_000).as_deref(), Some("ops"));
        let bad = vec![Operator { name: "x".into(), password_hash: "plain".into(), role: None }];
        assert!(Access::load(&bad, dir.path()).is_err());
    }
}
