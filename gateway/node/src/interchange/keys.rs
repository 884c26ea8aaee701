//! The node's signing keys, and which of them signs now.
//!
//! A key is rotated without downtime (docs/operations.md, "密钥轮换 · Key rotation"): the new key
//! file is put beside the current one, the registry lists the new key from a switch time and
//! keeps the old one valid for an overlap after it, and the node is told to reload (SIGHUP).
//! From the switch time on, the node signs with the new key; peers that verify an envelope or
//! receipt check the key's window at the time it was signed, so everything signed with the old
//! key (evidence included) still verifies as long as the registry keeps listing it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use gateway_core::interchange::parse_time;
use gateway_core::interchange::registry::Registry;
use time::OffsetDateTime;

use super::Signer;
use crate::pki::SigningKeyFile;

/// Every signing key this node holds: the configured file and the key files beside it named
/// `<its name without .json>.<label>.json` (e.g. `signing.key.json` and `signing.key.2027a.json`).
#[derive(Debug)]
pub struct Keyring {
    primary: PathBuf,
    keys: RwLock<Arc<[Arc<Signer>]>>,
}

impl Keyring {
    /// Reads the key file at `primary` and its siblings. Fails if any of them is unreadable.
    pub fn load(primary: &Path) -> anyhow::Result<Self> {
        let keys = read_keys(primary)?;
        Ok(Self { primary: primary.to_owned(), keys: RwLock::new(keys) })
    }

    /// Reads the key files again (a key added beside the configured one is taken up). On
    /// failure the held keys stay. Returns the key ids now held.
    pub fn reload(&self) -> anyhow::Result<Vec<String>> {
        let keys = read_keys(&self.primary)?;
        let kids = keys.iter().map(|s| s.kid.clone()).collect();
        *self.keys.write().map_err(|_| anyhow::anyhow!("keyring lock poisoned"))? = keys;
        Ok(kids)
    }

    /// The key to sign with at `now`: of the keys held that `registry` lists for `member` and
    /// that are valid at `now`, the one valid from the latest time (the newest key once its
    /// switch time has come). When none is, the configured key, so that peers refuse the
    /// signature with a clear "not valid at" error instead of this node going quiet.
    pub fn signer(&self, registry: &Registry, member: &str, now: OffsetDateTime) -> Arc<Signer> {
        let keys = self.keys.read().map_or_else(|poisoned| Arc::clone(&poisoned.into_inner()), |k| Arc::clone(&k));
        let listed = registry.member(member).map(|m| m.keys.as_slice()).unwrap_or_default();
        let valid_from = |signer: &Signer| {
            let key = listed.iter().find(|k| k.kid == signer.kid)?;
            let (from, to) = (parse_time(&key.valid_from)?, parse_time(&key.valid_to)?);
            (from <= now && now <= to).then_some(from)
        };
        keys.iter()
            .filter_map(|s| valid_from(s).map(|from| (from, s)))
            .max_by_key(|(from, _)| *from)
            .map_or_else(|| Arc::clone(&keys[0]), |(_, s)| Arc::clone(s))
    }
}

/// The configured key first, then its siblings in name order.
fn read_keys(primary: &Path) -> anyhow::Result<Arc<[Arc<Signer>]>> {
    let mut paths = vec![primary.to_owned()];
    paths.extend(siblings(primary)?);
    let mut keys = Vec::with_capacity(paths.len());
    for path in paths {
        let (key, kid) = SigningKeyFile::load(&path)?;
        keys.push(Arc::new(Signer { key, kid }));
    }
    Ok(keys.into())
}

/// Key files beside `primary` named `<stem>.<label>.json`, where `primary` is `<stem>.json`.
pub fn siblings(primary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (primary.parent(), primary.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let stem = name.strip_suffix(".json").unwrap_or(name);
    let prefix = format!("{stem}.");
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading key directory {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let label = file.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".json"));
        if label.is_some_and(|l| !l.is_empty() && !l.contains('.')) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
