//! `certs rotate-key` and `certs renew-tls`: a member's new signing key or renewed TLS
//! certificate, and the next registry version that publishes it, in a `certs init` PKI.
//!
//! Both sides happen here because a dev PKI holds every key. In production the member makes
//! its key or certificate request on its own machine and the federation operator signs the
//! registry (docs/operations.md, "密钥轮换 · Key rotation"); the registry edits are the same.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gateway_core::canonical::Sha256Digest;
use gateway_core::crypto::{Alg, SigningKey};
use gateway_core::interchange::registry::{Member, MemberKey, REGISTRY_TYP, Registry, RegistryBody, RootKey};
use gateway_core::interchange::{format_time, parse_time};
use gateway_core::jws::{self, Jws, b64u};
use rcgen::{Issuer, KeyPair};
use ring::rand::SystemRandom;
use time::{Duration, OffsetDateTime};

use super::{NodeFiles, SigningKeyFile, anchor_file, ca_cert, random_secret, registry_file};

/// How long a published registry is valid, as `certs init` makes it.
const REGISTRY_DAYS: i64 = 30;
/// How long a new signing key is valid.
const KEY_DAYS: i64 = 365;

/// When a new signing key takes over, and how long the keys it replaces stay valid after.
#[derive(Debug, Clone, Copy)]
pub struct KeySwitch {
    /// From this time the member signs with the new key. Peers must hold the new registry by
    /// then: leave them a few registry refresh intervals (default 300 s at each level).
    pub at: OffsetDateTime,
    /// The old keys stay valid this long after `at` (clocks differ, envelopes in flight).
    pub overlap: Duration,
}

/// What a rotation wrote.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub kid: String,
    /// The new key file, beside the member's signing key (the node loads it on reload).
    pub key_file: PathBuf,
    pub registry_version: u64,
}

/// Makes a new signing key for `member` (same algorithm as its newest key), writes it beside
/// its signing key as `signing.key.<label>.json`, and publishes the next registry version:
/// the new key valid from `switch.at`, every key of the member still valid then cut to end
/// `switch.overlap` later. Retired keys stay listed, so that what they signed still verifies.
pub fn rotate_key(pki_dir: &Path, member: &str, switch: KeySwitch, now: OffsetDateTime) -> anyhow::Result<Rotated> {
    let files = NodeFiles::new(pki_dir, member);
    let label = format!(
        "k{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let kid = format!("{member}#{label}");
    let key_file = files.dir.join(format!("signing.key.{label}.json"));
    if key_file.exists() {
        bail!("{} already exists; rotate again in a second", key_file.display());
    }
    let version = amend_registry(pki_dir, now, |body| {
        let m = member_mut(body, member)?;
        let alg: Alg = m.keys.last().map_or("EdDSA", |k| k.alg.as_str()).parse()?;
        let secret = random_secret(&SystemRandom::new())?;
        let key = SigningKey::from_secret(alg, &secret)?;
        let cut = switch.at + switch.overlap;
        // A key an earlier rotation scheduled for later has signed nothing yet: this rotation
        // replaces it (left listed, it would take over again when its time came).
        m.keys.retain(|k| parse_time(&k.valid_from).is_none_or(|from| from <= now));
        for old in &mut m.keys {
            let ends = parse_time(&old.valid_to).unwrap_or(cut);
            if parse_time(&old.valid_from).is_some_and(|from| from <= switch.at) && ends > cut {
                old.valid_to = format_time(cut);
            }
        }
        m.keys.push(MemberKey {
            kid: kid.clone(),
            alg: alg.as_str().into(),
            public_key: b64u(&key.public_key().bytes),
            valid_from: format_time(switch.at),
            valid_to: format_time(switch.at + Duration::days(KEY_DAYS)),
            sm2_id: None,
        });
        let file = SigningKeyFile { alg: alg.as_str().into(), kid: kid.clone(), secret: hex::encode(secret) };
        replace_file(&key_file, &serde_json::to_string_pretty(&file)?, true)
    })?;
    Ok(Rotated { kid, key_file, registry_version: version })
}

/// Issues `member` a new TLS certificate from the PKI's CA, writes it over the old one (key
/// first; a reload that reads a certificate and key that do not match keeps the held pair),
/// and publishes the next registry version pinning it. Returns the new pin and the version.
pub fn renew_tls(pki_dir: &Path, member: &str, now: OffsetDateTime) -> anyhow::Result<(String, u64)> {
    let files = NodeFiles::new(pki_dir, member);
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let ca_key = KeyPair::from_pem(&read(&pki_dir.join("ca.key.pem"))?).context("the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_cert(pki_dir))?, ca_key).context("the CA certificate")?;
    let (cert_pem, key_pem, der) = super::issue_tls_cert(&issuer, member)?;
    let pin = Sha256Digest::of(&der).to_hex();
    let version = amend_registry(pki_dir, now, |body| {
        let m = member_mut(body, member)?;
        m.tls_cert_sha256.clone_from(&pin);
        replace_file(&files.tls_key(), &key_pem, true)?;
        replace_file(&files.tls_cert(), &cert_pem, false)
    })?;
    Ok((pin, version))
}

fn member_mut<'b>(body: &'b mut RegistryBody, member: &str) -> anyhow::Result<&'b mut Member> {
    body.members
        .iter_mut()
        .find(|m| m.member_id == member)
        .with_context(|| format!("member {member} is not in the registry"))
}

/// Reads the PKI's registry (verified against its anchor), lets `edit` change the body, and
/// writes the next version signed by the root key. `edit` writes its own files; the registry
/// is written last, so a failure leaves the published registry as it was.
fn amend_registry(
    pki_dir: &Path,
    now: OffsetDateTime,
    edit: impl FnOnce(&mut RegistryBody) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let path = registry_file(pki_dir);
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let jws: Jws = serde_json::from_slice(&read(&path)?).with_context(|| path.display().to_string())?;
    let anchor: Vec<RootKey> = serde_json::from_slice(&read(&anchor_file(pki_dir))?).context("anchor file")?;
    let (held, _) = Registry::verify(&jws, &anchor, None, now, Duration::days(7))
        .with_context(|| format!("registry {}", path.display()))?;
    let (root, root_kid) = SigningKeyFile::load(&pki_dir.join("root-signing.key.json"))?;
    let mut body = held.body;
    edit(&mut body)?;
    body.version += 1;
    body.issued_at = format_time(now);
    body.expires_at = format_time(now + Duration::days(REGISTRY_DAYS));
    let signed = jws::sign(REGISTRY_TYP, &root_kid, &serde_json::to_value(&body)?, &root);
    replace_file(&path, &serde_json::to_string_pretty(&signed)?, false)?;
    Ok(body.version)
}

/// Writes `contents` to a temporary file beside `path`, syncs it and renames it over `path`,
/// then syncs the directory: a reader sees the old file or the new one, never half of one, and
/// after a power loss the rename holds only once the contents do. `secret` files are 0600.
fn replace_file(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    if secret {
        super::write_secret(&tmp, contents)?;
    } else {
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut file, contents.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interchange::Keyring;
    use crate::pki::{InitOptions, init};

    fn registry(pki_dir: &Path) -> Registry {
        let jws: Jws = serde_json::from_slice(&std::fs::read(registry_file(pki_dir)).expect("registry")).expect("jws");
        let anchor: Vec<RootKey> =
            serde_json::from_slice(&std::fs::read(anchor_file(pki_dir)).expect("anchor")).expect("anchor");
        Registry::verify_signed(&jws, &anchor).expect("registry verifies")
    }

    #[test]
    fn the_new_key_signs_from_its_switch_time_and_the_old_one_ends_after_the_overlap() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(&InitOptions::dev(dir.path())).expect("certs init");
        let (member, now) = ("cn-370306", OffsetDateTime::now_utc());
        let before = registry(dir.path());
        let switch = KeySwitch { at: now + Duration::hours(1), overlap: Duration::days(1) };
        let rotated = rotate_key(dir.path(), member, switch, now).expect("rotate");
        let after = registry(dir.path());
        assert_eq!((before.body.version, after.body.version, rotated.registry_version), (1, 2, 2));
        let keys = &after.member(member).expect("member").keys;
        assert_eq!(keys.len(), 2, "the old key stays listed");
        assert_eq!(keys[0].valid_to, format_time(switch.at + switch.overlap));
        assert_eq!(
            (keys[1].kid.as_str(), keys[1].valid_from.as_str()),
            (rotated.kid.as_str(), &*format_time(switch.at))
        );
        // Other members' keys are untouched.
        assert_eq!(after.member("cn-370300"), before.member("cn-370300"));

        let ring = Keyring::load(&NodeFiles::new(dir.path(), member).signing_key()).expect("keys");
        let old = format!("{member}#dev1");
        let signs_at = |registry: &Registry, at: OffsetDateTime| ring.signer(registry, member, at).kid.clone();
        assert_eq!(signs_at(&after, now), old, "before the switch");
        assert_eq!(signs_at(&after, switch.at + Duration::minutes(1)), rotated.kid, "after it, in the overlap");
        assert_eq!(signs_at(&after, switch.at + Duration::days(2)), rotated.kid, "after the overlap");
        // A node still on the old registry knows only the old key.
        assert_eq!(signs_at(&before, switch.at + Duration::minutes(1)), old);
    }

    /// A key scheduled for later is replaced by a rotation that switches sooner: left listed,
    /// it would take over again when its time came.
    #[test]
    fn a_second_rotation_drops_the_key_the_first_scheduled() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(&InitOptions::dev(dir.path())).expect("certs init");
        let (member, now) = ("cn-370306", OffsetDateTime::now_utc());
        let later = KeySwitch { at: now + Duration::days(1), overlap: Duration::days(7) };
        let pending = rotate_key(dir.path(), member, later, now).expect("first rotation");
        let sooner = KeySwitch { at: now + Duration::seconds(2), overlap: Duration::days(7) };
        let urgent = rotate_key(dir.path(), member, sooner, now + Duration::seconds(2)).expect("second rotation");
        let kids: Vec<String> =
            registry(dir.path()).member(member).expect("member").keys.iter().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, [format!("{member}#dev1"), urgent.kid.clone()], "{} is gone", pending.kid);
    }

    #[test]
    fn a_renewed_certificate_is_pinned_in_the_next_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(&InitOptions::dev(dir.path())).expect("certs init");
        let files = NodeFiles::new(dir.path(), "cn-370300");
        let old = std::fs::read(files.tls_cert()).expect("cert");
        let (pin, version) = renew_tls(dir.path(), "cn-370300", OffsetDateTime::now_utc()).expect("renew");
        assert_eq!(version, 2);
        assert_ne!(std::fs::read(files.tls_cert()).expect("cert"), old);
        assert_eq!(registry(dir.path()).member("cn-370300").expect("member").tls_cert_sha256, pin);
        let cell = crate::tls::CertCell::load(&files.tls_cert(), &files.tls_key()).expect("certificate and key match");
        assert_eq!(cell.reload().expect("reload"), pin);
    }
}
