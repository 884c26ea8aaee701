//! Platform adapters on a node: loading the signed manifests named in `[[adapters]]`, and the
//! transports of GB/T 39443-2020 — 前置库 tables ([`database`]), packages and monthly
//! workbooks ([`xlsx`]), HTTP push ([`deliver`]).
//!
//! **Invariant:** a node runs no adapter whose manifest the federation root did not sign and
//! the registry in force does not approve; start-up stops and says why.

pub mod cli;
pub mod database;
pub mod deliver;
pub mod files;
pub mod imports;
pub mod service;
pub mod unzip;
pub mod xlsx;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use gateway_core::adapter::{self, Adapter, Dataset};
use gateway_core::canonical::pointer_segment;
use gateway_core::interchange::registry::Registry;
use gateway_core::record::FieldError;
use serde::Deserialize;

/// One `[[adapters]]` entry: which manifest, and where this node reaches the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterBinding {
    /// `adapters/<platform>/manifest.toml`.
    pub manifest: PathBuf,
    /// The root's signature; default `manifest.sig` beside the manifest.
    #[serde(default)]
    pub signature: Option<PathBuf>,
    /// Service mode: the platform's base URL.
    #[serde(default)]
    pub url: Option<String>,
    /// File mode: the folder packages arrive in.
    #[serde(default)]
    pub inbox: Option<PathBuf>,
    /// File mode: the folder this node writes packages (and results) to.
    #[serde(default)]
    pub outbox: Option<PathBuf>,
    /// Database mode: the 前置库 (`postgres://…`, `sqlite://…`).
    #[serde(default)]
    pub database_url: Option<String>,
    /// How often ingest transports look for new rows or packages, in milliseconds. Default 5,000.
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// The units (USCCs) the platform's transport may report for, as a department's
    /// credential would. Empty: any unit (logged as a warning at start; refused in production).
    #[serde(default)]
    pub units: Vec<String>,
}

fn default_poll() -> u64 {
    5_000
}

impl AdapterBinding {
    pub fn signature_path(&self) -> PathBuf {
        self.signature.clone().unwrap_or_else(|| self.manifest.with_file_name("manifest.sig"))
    }
}

/// An adapter this node runs: its verified manifest and its binding.
#[derive(Debug)]
pub struct Loaded {
    pub adapter: Adapter,
    pub binding: AdapterBinding,
    /// Service mode: the client that talks to the platform.
    pub http: reqwest::Client,
}

impl Loaded {
    pub fn id(&self) -> &str {
        self.adapter.id()
    }

    /// The units this adapter's transport acts for.
    pub fn scope(&self) -> crate::auth::UnitScope {
        if self.binding.units.is_empty() {
            crate::auth::UnitScope::Any
        } else {
            crate::auth::UnitScope::Only(
                self.binding.units.iter().map(|u| gateway_core::ident::normalize_code(u)).collect(),
            )
        }
    }
}

/// Compiles a manifest file, resolving the files it names against its folder.
pub fn compile(manifest: &Path) -> anyhow::Result<Adapter> {
    let text = std::fs::read(manifest).with_context(|| format!("reading adapter manifest {}", manifest.display()))?;
    let dir = manifest.parent().unwrap_or(Path::new(".")).to_owned();
    Adapter::compile(&text, |rel| std::fs::read(dir.join(rel)).map_err(|e| e.to_string()))
        .with_context(|| format!("adapter manifest {}", manifest.display()))
}

/// Loads and verifies one adapter of node `member_id` against the registry in force.
pub fn load(binding: &AdapterBinding, registry: &Registry, member_id: &str) -> anyhow::Result<Loaded> {
    let adapter = compile(&binding.manifest)?;
    let sig_path = binding.signature_path();
    let signature = match std::fs::read(&sig_path) {
        Ok(bytes) => serde_json::from_slice::<gateway_core::jws::Jws>(&bytes)
            .map_err(|e| adapter::AdapterError::SignatureForm(format!("{}: {e}", sig_path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(adapter::AdapterError::Unsigned(sig_path.display().to_string()))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    signature
        .and_then(|sig| adapter::verify_signature(&adapter, &sig, registry))
        .with_context(|| format!("adapter {} ({}) refused", adapter.id(), binding.manifest.display()))?;
    let runs_on = &adapter.manifest.platform.member_id;
    anyhow::ensure!(
        runs_on == member_id,
        "adapter {} is signed for the gateway of {runs_on}; this node is {member_id}",
        adapter.id()
    );
    check_binding(&adapter, binding)?;
    tracing::info!(platform = adapter.id(), sha256 = %adapter.sha256.to_hex(), "adapter loaded");
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("building the adapter's HTTP client")?;
    Ok(Loaded { adapter, binding: binding.clone(), http })
}

/// Loads every configured adapter; the first refusal stops start-up.
pub fn load_all(bindings: &[AdapterBinding], registry: &Registry, member_id: &str) -> anyhow::Result<Vec<Arc<Loaded>>> {
    bindings.iter().map(|b| load(b, registry, member_id).map(Arc::new)).collect()
}

/// The binding must give what the manifest's mode needs.
fn check_binding(adapter: &Adapter, b: &AdapterBinding) -> anyhow::Result<()> {
    use gateway_core::adapter::Mode;
    let id = adapter.id();
    let direction = adapter.manifest.platform.direction;
    match adapter.manifest.transport.mode {
        Mode::Service if b.url.is_none() => anyhow::bail!("adapter {id} (service mode) needs `url` in [[adapters]]"),
        Mode::Database if b.database_url.is_none() => {
            anyhow::bail!("adapter {id} (database mode) needs `database_url` in [[adapters]]")
        }
        Mode::File if direction.delivers() && b.outbox.is_none() => {
            anyhow::bail!("adapter {id} (file mode, delivers) needs `outbox` in [[adapters]]")
        }
        _ => Ok(()),
    }
}

/// Whether an ingest round found work; a failed round is logged (as `what`) and counts as idle.
pub fn busy(loaded: &Loaded, what: &str, round: anyhow::Result<usize>) -> bool {
    match round {
        Ok(n) => n > 0,
        Err(e) => {
            tracing::warn!(platform = loaded.id(), error = %format!("{e:#}"), "{what} failed; retrying");
            false
        }
    }
}

/// After an idle round, waits `poll_interval_ms` (or until `stop` changes); after a busy one,
/// goes straight on.
pub async fn pause(loaded: &Loaded, busy: bool, stop: &mut tokio::sync::watch::Receiver<bool>) {
    if !busy {
        let every = std::time::Duration::from_millis(loaded.binding.poll_interval_ms.max(10));
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Starts the ingest side of every adapter that ingests: a collector per 前置库, a watcher per
/// inbox, a puller per service interface. They stop when `stop` turns true.
pub fn start_ingest(
    gateway: &Arc<crate::ingest::Ingest>,
    adapters: &[Arc<Loaded>],
    data_dir: &Path,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use gateway_core::adapter::Mode;
    let mut tasks = Vec::new();
    for a in adapters.iter().filter(|a| a.adapter.manifest.platform.direction.ingests()) {
        let (gw, a2, stop) = (Arc::clone(gateway), Arc::clone(a), stop.clone());
        match a.adapter.manifest.transport.mode {
            Mode::Database => tasks.push(tokio::spawn(database::run(gw, a2, stop))),
            Mode::File if a.binding.inbox.is_some() => tasks.push(tokio::spawn(files::run(gw, a2, stop))),
            Mode::Service => {
                tasks.push(tokio::spawn(service::run(gw, a2, data_dir.join("adapters"), stop)));
            }
            // A file-mode intake without an inbox takes monthly workbooks through the API only.
            Mode::File => {}
        }
    }
    tasks
}

/// Rewrites a record-rule error about a canonical field so that it points at the platform
/// column the field came from, and says both names.
pub fn name_column(dataset: &Dataset, mut e: FieldError) -> FieldError {
    let field = e.pointer.trim_start_matches('/').split('/').next().unwrap_or("").to_owned();
    if let Some(column) = dataset.column_of(&field) {
        e.pointer = format!("/{}", pointer_segment(column));
        e.message_zh = format!("列「{column}」：{}", e.message_zh);
        e.message_en = format!("column {column} ({field}): {}", e.message_en);
    }
    e
}
