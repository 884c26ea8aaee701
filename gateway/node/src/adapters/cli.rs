//! The operator commands around adapters: `adapter check|sign|hash`, `import` (a monthly
//! workbook through a running node's API, with a progress bar) and `template xlsx`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use gateway_core::adapter::conformance;
use gateway_core::record::{RecordValidator, ValidationPolicy};
use serde_json::Value;

/// `adapter check`: compiles each manifest and runs the conformance suite on its samples.
/// Prints a report per adapter; returns whether all passed.
pub fn check(dirs: &[PathBuf]) -> anyhow::Result<bool> {
    let dirs = if dirs.is_empty() { adapter_dirs(Path::new("adapters"))? } else { dirs.to_vec() };
    let validator = RecordValidator::new(&ValidationPolicy::default())?;
    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    let mut ok = true;
    for dir in dirs {
        let manifest = if dir.is_file() { dir.clone() } else { dir.join("manifest.toml") };
        let folder = manifest.parent().unwrap_or(Path::new(".")).to_owned();
        let adapter = match super::compile(&manifest) {
            Ok(a) => a,
            Err(e) => {
                println!("FAIL {}: {e:#}", manifest.display());
                ok = false;
                continue;
            }
        };
        let folder_name = folder.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if folder_name != adapter.id() {
            println!(
                "FAIL {}: the folder is named {folder_name:?}, the platform id is {:?}",
                manifest.display(),
                adapter.id()
            );
            ok = false;
            continue;
        }
        let samples = |dataset: &str, side: &str| {
            let path = folder.join("samples").join(format!("{dataset}.{side}.json"));
            let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            match serde_json::from_slice(&text) {
                Ok(Value::Array(rows)) => Ok(rows),
                _ => Err(format!("{} must hold a JSON array", path.display())),
            }
        };
        match conformance::check(&adapter, samples, &validator, today) {
            Ok(reports) => {
                println!(
                    "ok   {} ({}) sha256 {}",
                    adapter.id(),
                    adapter.manifest.platform.name,
                    adapter.sha256.to_hex()
                );
                for r in reports {
                    println!(
                        "     {}: {} platform + {} canonical samples round-trip; not carried: fields {:?}, columns {:?}",
                        r.dataset,
                        r.platform_samples,
                        r.canonical_samples,
                        r.coverage.unmapped_fields,
                        r.coverage.unmapped_columns
                    );
                }
            }
            Err(e) => {
                println!("FAIL {e}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn adapter_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.toml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// `adapter sign`: the federation root signs a reviewed manifest.
pub fn sign(manifest: &Path, root_key: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let adapter = super::compile(manifest)?;
    let text = std::fs::read(manifest)?;
    let (key, kid) = crate::pki::SigningKeyFile::load(root_key)?;
    let now = gateway_core::interchange::format_time(time::OffsetDateTime::now_utc());
    let sig = gateway_core::adapter::sign_manifest(&text, adapter.id(), &now, &kid, &key);
    let out = out.map(Path::to_owned).unwrap_or_else(|| manifest.with_file_name("manifest.sig"));
    std::fs::write(&out, serde_json::to_string_pretty(&sig)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("signed {} ({}) as {kid}: {}", adapter.id(), adapter.sha256.to_hex(), out.display());
    println!(
        "approve it in the registry's `adapters`: {{\"platform\": \"{}\", \"manifest_sha256\": \"{}\"}}",
        adapter.id(),
        adapter.sha256.to_hex()
    );
    Ok(out)
}

/// `adapter hash`: the registry entry that approves a manifest.
pub fn hash(manifest: &Path) -> anyhow::Result<String> {
    let adapter = super::compile(manifest)?;
    Ok(serde_json::json!({"platform": adapter.id(), "manifest_sha256": adapter.sha256.to_hex()}).to_string())
}

/// Options of `import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportOptions {
    /// The department's workbook (.xlsx).
    pub file: PathBuf,
    /// 报送单位: the department's full name.
    #[arg(long)]
    pub unit: String,
    /// 报送单位统一社会信用代码.
    #[arg(long)]
    pub unit_uscc: String,
    /// 所属期 YYYY-MM (default: last month).
    #[arg(long)]
    pub period: Option<String>,
    /// The intake adapter (platform id), if the node has several.
    #[arg(long)]
    pub adapter: Option<String>,
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Where to write the annotated workbook (default: `<file>.反馈.xlsx`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `import`: uploads the workbook, shows progress, saves the annotated workbook back.
pub async fn import(opts: &ImportOptions) -> anyhow::Result<Value> {
    let client = crate::auth::cli::api_client()?;
    let bytes = tokio::fs::read(&opts.file).await.with_context(|| format!("reading {}", opts.file.display()))?;
    let mut query = vec![("unit", opts.unit.clone()), ("unit_uscc", opts.unit_uscc.clone())];
    query.extend(opts.period.clone().map(|p| ("period", p)));
    query.extend(opts.adapter.clone().map(|a| ("adapter", a)));
    let api = opts.url.trim_end_matches('/');
    let url = reqwest::Url::parse_with_params(&format!("{api}/api/v1/imports"), &query)
        .with_context(|| format!("{api} is not a URL"))?;
    let resp = client
        .post(url)
        .header("content-type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("uploading to {api}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.context("reading the node's answer")?;
    anyhow::ensure!(
        status.is_success(),
        "the node refused the workbook ({status}): {answer}{}",
        crate::auth::cli::credential_hint(status)
    );
    let id = answer["import_id"].as_str().context("no import id")?.to_owned();
    let done = loop {
        let s: Value = client.get(format!("{api}/api/v1/imports/{id}")).send().await?.json().await?;
        let (n, total) = (s["rows_done"].as_u64().unwrap_or(0), s["rows_total"].as_u64().unwrap_or(0));
        progress_bar(n, total);
        match s["state"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(250)).await,
            Some("done") => break s,
            _ => anyhow::bail!("import {id} {}: {}", s["state"], s["error"]),
        }
    };
    eprintln!();
    let out = opts.out.clone().unwrap_or_else(|| opts.file.with_extension("反馈.xlsx"));
    let feedback = client.get(format!("{api}/api/v1/imports/{id}/feedback.xlsx")).send().await?.error_for_status()?;
    tokio::fs::write(&out, feedback.bytes().await?).await.with_context(|| format!("writing {}", out.display()))?;
    let summary = &done["summary"];
    println!(
        "导入完成 · imported: {} rows, {} accepted, {} duplicate, {} new versions, {} rejected, {} not exchanged{}",
        summary["rows"],
        summary["accepted"],
        summary["duplicate"],
        summary["new_version"],
        summary["rejected"],
        summary["not_exchanged"],
        if summary["zero_report"] == true { " (零信息报送 zero report)" } else { "" }
    );
    println!("问题数据反馈 · annotated workbook: {}", out.display());
    Ok(done)
}

/// A one-line progress bar on stderr.
fn progress_bar(done: u64, total: u64) {
    let total = total.max(1);
    let filled = (done.min(total) * 30 / total) as usize;
    eprint!("\r[{}{}] {done}/{total} 行", "#".repeat(filled), ".".repeat(30 - filled));
    let _ = std::io::stderr().flush();
}
