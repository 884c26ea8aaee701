//! `credit-gateway measures …`: the conformance check of a measures catalogue, signing a
//! reviewed one as the federation root, and the registry entry that approves it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gateway_core::measures::Catalogue;

fn read(path: &Path) -> anyhow::Result<(Vec<u8>, Catalogue)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let catalogue = Catalogue::parse(&bytes).with_context(|| path.display().to_string())?;
    Ok((bytes, catalogue))
}

/// `measures check`: every catalogue given (default: `measures/*.toml`) through the conformance
/// check. Returns whether all passed; prints each one's verdict.
pub fn check(files: &[PathBuf]) -> anyhow::Result<bool> {
    let files = if files.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("measures")
            .context("reading measures/ (or name the catalogues to check)")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        found.sort();
        found
    } else {
        files.to_vec()
    };
    let mut ok = true;
    for f in &files {
        match read(f) {
            Ok((_, c)) => println!(
                "ok    {} — {} {} ({} measures, sha256 {})",
                f.display(),
                c.heading.id,
                c.heading.version,
                c.measures.len(),
                c.sha256.to_hex()
            ),
            Err(e) => {
                ok = false;
                println!("FAIL  {e:#}");
            }
        }
    }
    Ok(ok)
}

/// `measures sign`: signs a reviewed catalogue as the federation root.
pub fn sign(file: &Path, root_key: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (_, catalogue) = read(file)?;
    let (key, kid) = crate::pki::SigningKeyFile::load(root_key)?;
    let now = gateway_core::interchange::format_time(time::OffsetDateTime::now_utc());
    let sig = gateway_core::measures::sign(&catalogue, &now, &kid, &key);
    let out = out.map(Path::to_owned).unwrap_or_else(|| file.with_extension("sig"));
    std::fs::write(&out, serde_json::to_string_pretty(&sig)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("signed {} ({}) as {kid}: {}", catalogue.heading.id, catalogue.sha256.to_hex(), out.display());
    println!("approve it in the registry's `measures`: {}", entry(&catalogue));
    Ok(out)
}

/// `measures hash`: the registry entry that approves a catalogue.
pub fn hash(file: &Path) -> anyhow::Result<String> {
    Ok(entry(&read(file)?.1))
}

fn entry(c: &Catalogue) -> String {
    serde_json::json!({"catalogue": c.heading.id, "catalogue_sha256": c.sha256.to_hex()}).to_string()
}
