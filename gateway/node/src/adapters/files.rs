//! 文件方式, inbound: packages a platform drops into the inbox folder. A package is a ZIP with
//! `manifest.json` (`dataset`, `record_count`, `files: [{name, sha256, records}]`) and its data
//! files (JSON array of rows, CSV with a header row, or XLSX with a header row), as
//! [`deliver`](super::deliver) writes them.
//!
//! **Invariants:** a half-written package is never read — names starting with `.` or ending in
//! `.part`/`.tmp` are skipped, and a ZIP that does not open yet is left alone until it has been
//! unchanged for a while; a package whose checksums or counts disagree with its manifest is
//! refused whole. Every collected package gets a result file (`<package>.result.json`, one
//! outcome per row) in the outbox (or beside it), written before the package moves to
//! `done/`; a kill in between means the package is read again and its rows answered `duplicate`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use gateway_core::adapter::{Dataset, PackageFormat, Row};
use gateway_core::canonical::Sha256Digest;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Loaded;
use crate::ingest::{Ingest, RecordOutcome};

/// How long an unreadable ZIP may still be in the making before it is refused as corrupt.
const SETTLE: Duration = Duration::from_secs(60);
/// Rows stored per round trip to the store.
const CHUNK_ROWS: usize = 2_000;

/// Watches one file-mode adapter's inbox until `stop` fires.
pub async fn run(gateway: Arc<Ingest>, loaded: Arc<Loaded>, mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        let busy = super::busy(&loaded, "inbox round", collect(&gateway, &loaded).await);
        super::pause(&loaded, busy, &mut stop).await;
    }
}

/// One pass over the inbox. Returns how many packages were settled.
pub async fn collect(gateway: &Arc<Ingest>, loaded: &Arc<Loaded>) -> anyhow::Result<usize> {
    let inbox = loaded.binding.inbox.as_deref().context("no inbox folder")?;
    let mut packages: Vec<PathBuf> = std::fs::read_dir(inbox)
        .with_context(|| format!("reading {}", inbox.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_package_name(p))
        .collect();
    packages.sort();
    let mut settled = 0;
    for path in packages {
        let result = match read_package(loaded, &path) {
            Ok(Some(package)) => store(gateway, loaded, &package).await?,
            Ok(None) => continue,
            Err(refusal) => json!({"status": "refused", "reason": format!("{refusal:#}")}),
        };
        finish(loaded, &path, &result)?;
        settled += 1;
    }
    Ok(settled)
}

fn is_package_name(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.ends_with(".zip")
}

/// A package's rows, by dataset.
struct Package {
    name: String,
    dataset: Arc<Dataset>,
    rows: Vec<Row>,
}

/// Reads and checks a package. `Ok(None)`: not complete yet, look again later.
fn read_package(loaded: &Loaded, path: &Path) -> anyhow::Result<Option<Package>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let file = std::fs::File::open(path)?;
    let mut zip = match zip::ZipArchive::new(file) {
        Ok(z) => z,
        Err(e) => {
            let age = std::fs::metadata(path)?.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
            if age.is_none_or(|a| a < SETTLE) {
                return Ok(None);
            }
            anyhow::bail!("{name} is not a readable ZIP package: {e}");
        }
    };
    super::unzip::check_archive(&mut zip, &name)?;
    let manifest: Value =
        serde_json::from_slice(&entry(&mut zip, "manifest.json")?).context("manifest.json is not JSON")?;
    let dataset_name = manifest["dataset"].as_str().context("manifest.json names no dataset")?;
    let dataset = loaded
        .adapter
        .dataset(dataset_name)
        .with_context(|| format!("dataset {dataset_name:?} is not in the {} manifest", loaded.id()))?
        .clone();
    let format = loaded.adapter.manifest.transport.file.as_ref().map_or(PackageFormat::Json, |f| f.package_format);
    let mut rows = Vec::new();
    let mut named = std::collections::HashSet::new();
    for f in manifest["files"].as_array().context("manifest.json lists no files")? {
        let file_name = f["name"].as_str().context("a file without a name")?;
        // Each listed once: a name listed again would be unpacked again, past the size bound.
        anyhow::ensure!(named.insert(file_name), "manifest.json lists {file_name} more than once");
        let bytes = entry(&mut zip, file_name)?;
        let actual = Sha256Digest::of(&bytes);
        let pinned = f["sha256"].as_str().unwrap_or_default();
        anyhow::ensure!(
            actual.is_hex_of(pinned),
            "{file_name}: SHA-256 is {}, the manifest says {pinned}",
            actual.to_hex()
        );
        let parsed = parse_rows(&dataset, format, &bytes).with_context(|| file_name.to_owned())?;
        if let Some(n) = f["records"].as_u64() {
            anyhow::ensure!(parsed.len() as u64 == n, "{file_name}: {} rows, the manifest says {n}", parsed.len());
        }
        rows.extend(parsed);
    }
    if let Some(n) = manifest["record_count"].as_u64() {
        anyhow::ensure!(rows.len() as u64 == n, "{} rows in the package, the manifest says {n}", rows.len());
    }
    Ok(Some(Package { name, dataset, rows }))
}

fn entry(zip: &mut zip::ZipArchive<std::fs::File>, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut f = zip.by_name(name).with_context(|| format!("the package has no {name}"))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The rows of one file of a package (JSON, CSV or XLSX), as its dataset maps them. The parser
/// fuzz target (`fuzz/`) drives it.
pub fn parse_rows(ds: &Dataset, format: PackageFormat, bytes: &[u8]) -> anyhow::Result<Vec<Row>> {
    match format {
        PackageFormat::Json => {
            let rows: Vec<Value> = serde_json::from_slice(bytes).context("not a JSON array of rows")?;
            rows.into_iter()
                .map(|r| match r {
                    Value::Object(o) => Ok(o),
                    _ => Err(anyhow::anyhow!("a row is not a JSON object")),
                })
                .collect()
        }
        PackageFormat::Csv => {
            let mut reader = csv::Reader::from_reader(bytes);
            let headers = reader.headers()?.clone();
            reader
                .records()
                .map(|r| {
                    let r = r?;
                    Ok(ds.row_from_text(
                        headers
                            .iter()
                            .zip(r.iter())
                            .filter(|(_, v)| !v.trim().is_empty())
                            .map(|(h, v)| (h.trim().to_owned(), v.to_owned())),
                    ))
                })
                .collect()
        }
        PackageFormat::Xlsx => {
            let tmp = tempfile::NamedTempFile::new()?;
            std::fs::write(tmp.path(), bytes)?;
            let sheet = ds.spec.sheet.clone().unwrap_or_else(|| ds.spec.name.clone());
            super::xlsx::read_rows(tmp.path(), &sheet)
        }
    }
}

/// Stores a package's rows; returns its result document.
async fn store(gateway: &Arc<Ingest>, loaded: &Loaded, p: &Package) -> anyhow::Result<Value> {
    let (platform, scope) = (loaded.id(), loaded.scope());
    let mut outcomes: Vec<RecordOutcome> = Vec::with_capacity(p.rows.len());
    for chunk in p.rows.chunks(CHUNK_ROWS) {
        let result = gateway
            .push_rows(platform, Arc::clone(&p.dataset), chunk.to_vec(), OffsetDateTime::now_utc(), &scope, None)
            .await
            .map_err(|e| anyhow::anyhow!("storing rows: {e:?}"))?;
        let base = outcomes.len();
        outcomes.extend(result.outcomes.into_iter().map(|mut o| {
            o.index += base;
            o
        }));
    }
    let count = |s: crate::ingest::Status| outcomes.iter().filter(|o| o.status == s).count();
    Ok(json!({
        "status": "collected",
        "package": p.name,
        "dataset": p.dataset.spec.name,
        "received": outcomes.len(),
        "accepted": count(crate::ingest::Status::Accepted),
        "duplicate": count(crate::ingest::Status::Duplicate),
        "new_version": count(crate::ingest::Status::NewVersion),
        "rejected": count(crate::ingest::Status::Rejected),
        "outcomes": outcomes,
    }))
}

/// Writes the result file (atomically), then moves the package to `done/`.
fn finish(loaded: &Loaded, path: &Path, result: &Value) -> anyhow::Result<()> {
    let inbox = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let results = loaded.binding.outbox.clone().unwrap_or_else(|| inbox.join("results"));
    std::fs::create_dir_all(&results)?;
    let mut doc = result.clone();
    doc["platform"] = loaded.id().into();
    doc["finished_at"] = gateway_core::date::format_timestamp(OffsetDateTime::now_utc()).into();
    let tmp = results.join(format!(".{name}.result.json.part"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
    let mut result_file = results.join(format!("{name}.result.json"));
    if result_file.exists() {
        let stamp = gateway_core::date::format_timestamp(OffsetDateTime::now_utc()).replace(':', "");
        result_file = results.join(format!("{name}.{stamp}.result.json"));
    }
    std::fs::rename(&tmp, result_file)?;
    let done = inbox.join("done");
    std::fs::create_dir_all(&done)?;
    // A platform that reuses a package name does not overwrite the earlier package.
    let mut target = done.join(name);
    if target.exists() {
        target = done.join(format!(
            "{}.{name}",
            gateway_core::date::format_timestamp(OffsetDateTime::now_utc()).replace(':', "")
        ));
    }
    std::fs::rename(path, &target).with_context(|| format!("moving {name} to done/"))?;
    tracing::info!(platform = loaded.id(), package = name, status = %doc["status"], "package collected");
    Ok(())
}
