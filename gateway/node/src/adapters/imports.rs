//! Monthly-report imports as jobs: the upload is saved first (so nothing a department sent is
//! lost if the node stops), then imported on a blocking thread while its progress is readable;
//! the feedback workbook and a summary stay on disk under `<data_dir>/imports/<id>/`.
//!
//! An import cut short by a restart is reported as interrupted; importing the same workbook
//! again is safe (records already stored come back as `duplicate`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Loaded;
use super::xlsx::{ImportRequest, ImportSummary, Progress};
use crate::ingest::Ingest;

/// Where an import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    Running,
    Done,
    Failed,
    /// The node stopped while it ran; upload the workbook again.
    Interrupted,
}

/// `GET /api/v1/imports/{id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportStatus {
    pub import_id: Uuid,
    pub state: ImportState,
    pub rows_done: u64,
    pub rows_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<ImportSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the annotated workbook is, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_url: Option<String>,
}

#[derive(Debug)]
struct Job {
    progress: Progress,
    outcome: Mutex<Option<Result<ImportSummary, String>>>,
}

/// The imports of one node.
#[derive(Debug)]
pub struct Imports {
    dir: PathBuf,
    jobs: Mutex<HashMap<Uuid, Arc<Job>>>,
}

impl Imports {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, jobs: Mutex::new(HashMap::new()) }
    }

    /// A new import's folder, noting the reporting unit (only callers who may act for it see
    /// the import); the caller saves the upload to [`Imports::upload_path`].
    pub fn create(&self, unit_uscc: &str) -> std::io::Result<Uuid> {
        let id = Uuid::now_v7();
        let dir = self.dir.join(id.to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("unit"), unit_uscc)?;
        Ok(id)
    }

    /// The unit an import reports for (`None` for an unknown id, or one made before units
    /// were noted).
    pub fn unit_of(&self, id: Uuid) -> Option<String> {
        std::fs::read_to_string(self.dir.join(id.to_string()).join("unit")).ok().map(|u| u.trim().to_owned())
    }

    pub fn upload_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string()).join("upload.xlsx")
    }

    pub fn feedback_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string()).join("feedback.xlsx")
    }

    fn summary_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string()).join("summary.json")
    }

    /// Starts importing a saved upload.
    pub fn start(&self, id: Uuid, gateway: Arc<Ingest>, adapter: Arc<Loaded>, req: ImportRequest) {
        let job = Arc::new(Job { progress: Progress::default(), outcome: Mutex::new(None) });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id, Arc::clone(&job));
        }
        let (input, output, summary_path) = (self.upload_path(id), self.feedback_path(id), self.summary_path(id));
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let run = || super::xlsx::import(&gateway, &adapter.adapter, &input, &output, &req, &job.progress, &rt);
            // A bug must not leave the job "running" for ever: a panic ends it as failed.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error while importing (see the node's log)")));
            let outcome = match result {
                Ok(summary) => {
                    tracing::info!(import = %id, unit = %req.unit, rows = summary.rows, rejected = summary.rejected, "monthly report imported");
                    Ok(summary)
                }
                Err(e) => {
                    tracing::warn!(import = %id, error = %format!("{e:#}"), "monthly report import failed");
                    Err(format!("{e:#}"))
                }
            };
            if let Ok(text) = serde_json::to_vec_pretty(&StoredOutcome::from(&outcome)) {
                let _ = std::fs::write(&summary_path, text);
            }
            if let Ok(mut slot) = job.outcome.lock() {
                *slot = Some(outcome);
            }
        });
    }

    /// The status of an import, from memory or (after a restart) from its folder.
    pub fn status(&self, id: Uuid) -> Option<ImportStatus> {
        let job = self.jobs.lock().ok().and_then(|j| j.get(&id).cloned());
        let feedback_url = Some(format!("/api/v1/imports/{id}/feedback.xlsx"));
        if let Some(job) = job {
            let outcome = job.outcome.lock().ok().and_then(|o| o.clone());
            let (rows_done, rows_total) =
                (job.progress.rows_done.load(Ordering::Relaxed), job.progress.rows_total.load(Ordering::Relaxed));
            let base = ImportStatus {
                import_id: id,
                state: ImportState::Running,
                rows_done,
                rows_total,
                summary: None,
                error: None,
                feedback_url: None,
            };
            return Some(match outcome {
                None => base,
                Some(Ok(summary)) => {
                    ImportStatus { state: ImportState::Done, summary: Some(summary), feedback_url, ..base }
                }
                Some(Err(e)) => ImportStatus { state: ImportState::Failed, error: Some(e), ..base },
            });
        }
        if !self.upload_path(id).exists() {
            return None;
        }
        let stored: Option<StoredOutcome> =
            std::fs::read(self.summary_path(id)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        Some(match stored {
            Some(StoredOutcome { summary: Some(summary), .. }) => ImportStatus {
                import_id: id,
                state: ImportState::Done,
                rows_done: summary.rows,
                rows_total: summary.rows,
                summary: Some(summary),
                error: None,
                feedback_url,
            },
            Some(StoredOutcome { error, .. }) => ImportStatus {
                import_id: id,
                state: ImportState::Failed,
                rows_done: 0,
                rows_total: 0,
                summary: None,
                error,
                feedback_url: None,
            },
            None => ImportStatus {
                import_id: id,
                state: ImportState::Interrupted,
                rows_done: 0,
                rows_total: 0,
                summary: None,
                error: Some("the node stopped during this import; upload the workbook again".into()),
                feedback_url: None,
            },
        })
    }
}

/// `summary.json` of a finished import.
#[derive(Debug, Serialize, Deserialize)]
struct StoredOutcome {
    summary: Option<ImportSummary>,
    error: Option<String>,
}

impl From<&Result<ImportSummary, String>> for StoredOutcome {
    fn from(r: &Result<ImportSummary, String>) -> Self {
        match r {
            Ok(s) => Self { summary: Some(s.clone()), error: None },
            Err(e) => Self { summary: None, error: Some(e.clone()) },
        }
    }
}
