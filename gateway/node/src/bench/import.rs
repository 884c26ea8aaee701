//! `credit-gateway bench import`: a department's 100,000-row monthly workbook through 周村区's
//! intake adapter into SQLite, with the annotated workbook written back — rows/s and peak memory,
//! beside the raw read rate of the same workbook (calamine's cell stream, nothing else) measured
//! in the same run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;

use super::{synthetic_records, write_section};
use crate::adapters::xlsx::{self, ImportRequest, Progress};
use crate::config::Config;

#[derive(Debug, Clone, clap::Args)]
pub struct ImportBenchOptions {
    /// Data rows in the workbook (over its two sheets).
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// The intake adapter's manifest.
    #[arg(long, default_value = "adapters/zhoucun-district/manifest.toml")]
    pub adapter: PathBuf,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
    /// Internal: run one phase (`read` or `import`) on `--workbook` in this process and print
    /// its figures as JSON. The benchmark runs each phase in a fresh child process so that
    /// each peak-memory figure is that phase's alone.
    #[arg(long, hide = true)]
    pub phase: Option<String>,
    #[arg(long, hide = true)]
    pub workbook: Option<PathBuf>,
}

/// One phase's figures, as a child process reports them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Phase {
    seconds: f64,
    peak_mib: Option<f64>,
    accepted: u64,
    rejected: u64,
}

#[derive(Debug)]
pub struct ImportReport {
    pub rows: usize,
    pub file_bytes: u64,
    pub read_rate: f64,
    pub read_peak_mib: Option<f64>,
    pub import_rate: f64,
    pub import_peak_mib: Option<f64>,
    pub accepted: u64,
    pub rejected: u64,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |v: Option<f64>| v.map_or("n/a".into(), |m| format!("{m:.0} MiB"));
        writeln!(f, "## Monthly workbook import: {} rows through the intake adapter\n", self.rows)?;
        writeln!(
            f,
            "One .xlsx workbook ({:.1} MB) with 行政许可 and 行政处罚 sheets in the Chinese column headers \
             departments use (周村区's `department-xlsx` manifest), one row in 50 with a wrong USCC check \
             character. SQLite with `synchronous = FULL`, {} cores. Each phase runs in a fresh process \
             of the release binary; peak memory is that process's peak resident set (VmHWM).\n",
            self.file_bytes as f64 / 1e6,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        )?;
        writeln!(f, "| phase | rows/s | peak memory |")?;
        writeln!(f, "|---|---:|---:|")?;
        writeln!(
            f,
            "| raw read (calamine cell stream over every sheet, no mapping) | {:.0} | {} |",
            self.read_rate,
            mib(self.read_peak_mib)
        )?;
        writeln!(
            f,
            "| **import** (read + platform schema + mapping + record rules + store + annotated workbook) | **{:.0}** | **{}** |",
            self.import_rate,
            mib(self.import_peak_mib)
        )?;
        writeln!(
            f,
            "\nImport / raw read = **{:.2}×**. {} rows stored, {} rejected and explained in the returned workbook.",
            self.import_rate / self.read_rate,
            self.accepted,
            self.rejected
        )
    }
}

/// The child side of [`import`]: runs `--phase` on `--workbook`, returns its figures as JSON.
pub async fn import_phase(opts: &ImportBenchOptions) -> anyhow::Result<String> {
    let (Some(phase), Some(workbook)) = (&opts.phase, &opts.workbook) else {
        anyhow::bail!("--phase needs --workbook");
    };
    Ok(serde_json::to_string(&run_phase(phase, workbook, &opts.adapter).await?)?)
}

pub async fn import(opts: &ImportBenchOptions) -> anyhow::Result<ImportReport> {
    let dir = tempfile::tempdir()?;
    let adapter = crate::adapters::compile(&opts.adapter)?;
    let input = dir.path().join("report.xlsx");
    write_workbook(&adapter, &input, opts.rows)?;
    let file_bytes = std::fs::metadata(&input)?.len();
    let read = child(&input, &opts.adapter, "read")?;
    let imported = child(&input, &opts.adapter, "import")?;
    let report = ImportReport {
        rows: opts.rows,
        file_bytes,
        read_rate: opts.rows as f64 / read.seconds,
        read_peak_mib: read.peak_mib,
        import_rate: opts.rows as f64 / imported.seconds,
        import_peak_mib: imported.peak_mib,
        accepted: imported.accepted,
        rejected: imported.rejected,
    };
    write_section(&opts.report, "## Monthly workbook import", "bench import", &report.to_string())?;
    Ok(report)
}

/// Runs one phase in a fresh process of this binary and reads its figures.
fn child(workbook: &Path, adapter: &Path, phase: &str) -> anyhow::Result<Phase> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "import", "--report", "-", "--phase", phase, "--workbook"])
        .arg(workbook)
        .arg("--adapter")
        .arg(adapter)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a benchmark phase")?;
    anyhow::ensure!(out.status.success(), "phase {phase} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("phase printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("phase {phase} printed {line:?}"))
}

async fn run_phase(phase: &str, input: &Path, adapter: &Path) -> anyhow::Result<Phase> {
    let started = Instant::now();
    match phase {
        "read" => {
            let input = input.to_owned();
            let rows = tokio::task::spawn_blocking(move || xlsx::count_rows(&input)).await??;
            anyhow::ensure!(rows > 0, "no rows read");
            Ok(Phase { seconds: started.elapsed().as_secs_f64(), peak_mib: peak_mib(), accepted: 0, rejected: 0 })
        }
        "import" => {
            let dir = tempfile::tempdir()?;
            let adapter = Arc::new(crate::adapters::compile(adapter)?);
            let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
            let gateway = crate::server::open_ingest(&config).await?;
            let req = ImportRequest {
                unit: "淄博市周村区市场监督管理局".into(),
                unit_uscc: "11370306MB28501648".into(),
                period: "2026-10".into(),
                scope: crate::auth::UnitScope::Any,
            };
            let started = Instant::now();
            let summary = tokio::task::spawn_blocking({
                let (gateway, input) = (Arc::clone(&gateway), input.to_owned());
                let output = dir.path().join("feedback.xlsx");
                let rt = tokio::runtime::Handle::current();
                move || xlsx::import(&gateway, &adapter, &input, &output, &req, &Progress::default(), &rt)
            })
            .await??;
            let seconds = started.elapsed().as_secs_f64();
            gateway.store.close().await;
            Ok(Phase { seconds, peak_mib: peak_mib(), accepted: summary.accepted, rejected: summary.rejected })
        }
        other => anyhow::bail!("unknown phase {other:?}"),
    }
}

/// Writes `rows` synthetic records as a department workbook (constant memory).
fn write_workbook(adapter: &gateway_core::adapter::Adapter, path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let records = synthetic_records(rows, 2610);
    for (dataset, sheet) in [("XK", "行政许可"), ("CF", "行政处罚")] {
        let ds = adapter.dataset(dataset).with_context(|| format!("no dataset {dataset}"))?;
        let columns = ds.columns();
        let ws = book.add_worksheet_with_constant_memory()?;
        ws.set_name(sheet)?;
        for (c, name) in columns.iter().enumerate() {
            ws.write_string(0, c as u16, *name)?;
        }
        let mut r = 0u32;
        for (i, record) in records.iter().enumerate().filter(|(_, rec)| rec["record_type"] == ds.record_type.as_str()) {
            let mut record = record.clone();
            if i % 50 == 17 {
                let uscc = record["party_uscc"].as_str().unwrap_or_default().to_owned();
                record["party_uscc"] = format!("{}{}", &uscc[..17], if uscc.ends_with('0') { '1' } else { '0' }).into();
            }
            let row = ds.to_platform(&record).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            r += 1;
            for (c, name) in columns.iter().enumerate() {
                match row.get(*name) {
                    Some(Value::String(s)) => {
                        ws.write_string(r, c as u16, s)?;
                    }
                    Some(Value::Number(n)) => {
                        ws.write_number(r, c as u16, n.as_f64().unwrap_or_default())?;
                    }
                    _ => {}
                }
            }
        }
    }
    book.save(path)?;
    Ok(())
}

/// The process's peak resident set in MiB (Linux), if readable.
fn peak_mib() -> Option<f64> {
    Some(super::proc_value(None, "status", "VmHWM")? / 1024.0)
}
