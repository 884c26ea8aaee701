//! 服务方式, inbound: pages of rows pulled from the platform's interface.
//!
//! `GET <url><pull_path>?<cursor_param>=<cursor>&limit=<page_size>` answers
//! `{"rows": [...], "next_cursor": "…" | null}`. The cursor of each dataset is kept in
//! `<data_dir>/adapters/<platform>/<dataset>.cursor` and moves only after the page's rows are
//! stored: a kill in between means the page is pulled again and its rows answered `duplicate`.
//! A page without a `next_cursor` (or with the same one) is the end of the data for now. Refused
//! rows are written with their reasons to `<dataset>.rejected.jsonl` beside the cursor.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::adapter::Dataset;
use serde_json::Value;
use time::OffsetDateTime;

use super::Loaded;
use crate::ingest::Ingest;

/// Pulls one service-mode adapter until `stop` fires.
pub async fn run(
    gateway: Arc<Ingest>,
    loaded: Arc<Loaded>,
    state_dir: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let busy = super::busy(&loaded, "pull", pull_once(&gateway, &loaded, &state_dir).await);
        super::pause(&loaded, busy, &mut stop).await;
    }
}

/// One page of every dataset. Returns how many rows were stored.
pub async fn pull_once(
    gateway: &Arc<Ingest>,
    loaded: &Arc<Loaded>,
    state_dir: &std::path::Path,
) -> anyhow::Result<usize> {
    let mut stored = 0;
    for ds in &loaded.adapter.datasets {
        stored +=
            pull_page(gateway, loaded, ds, state_dir).await.with_context(|| format!("dataset {}", ds.spec.name))?;
    }
    Ok(stored)
}

async fn pull_page(
    gateway: &Arc<Ingest>,
    loaded: &Loaded,
    ds: &Arc<Dataset>,
    state_dir: &std::path::Path,
) -> anyhow::Result<usize> {
    let base = loaded.binding.url.as_deref().context("no url")?;
    let service = loaded.adapter.manifest.transport.service.clone().unwrap_or_default();
    let cursor_file = state_dir.join(loaded.id()).join(format!("{}.cursor", ds.spec.name));
    let cursor = std::fs::read_to_string(&cursor_file).unwrap_or_default();
    let path = service.pull_path.replace("{dataset}", &ds.spec.name);
    let url = reqwest::Url::parse_with_params(
        &format!("{}{path}", base.trim_end_matches('/')),
        &[(service.cursor_param.as_str(), cursor.trim()), ("limit", &service.page_size.to_string())],
    )?;
    let resp = loaded.http.get(url.clone()).send().await.with_context(|| format!("pulling {url}"))?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    let page: Value = resp.json().await.with_context(|| format!("{url} did not answer JSON"))?;
    let cells = page["rows"].as_array().with_context(|| format!("{url} answered without a `rows` array"))?;
    // A page must be rows: anything else is refused whole and pulled again, not skipped.
    let rows = cells
        .iter()
        .enumerate()
        .map(|(i, r)| r.as_object().cloned().with_context(|| format!("{url}: rows[{i}] is not an object")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let count = rows.len();
    if count > 0 {
        let result = gateway
            .push_rows(loaded.id(), Arc::clone(ds), rows, OffsetDateTime::now_utc(), &loaded.scope(), None)
            .await
            .map_err(|e| anyhow::anyhow!("storing rows: {e:?}"))?;
        tracing::info!(platform = loaded.id(), dataset = %ds.spec.name, rows = count, rejected = result.rejected, "page pulled");
        if result.rejected > 0 {
            record_rejections(&state_dir.join(loaded.id()), &ds.spec.name, cursor.trim(), &result)?;
        }
    }
    // The end of the data is a page with no next cursor (or the same one): wait for new rows.
    let Some(next) = page["next_cursor"].as_str().filter(|n| *n != cursor.trim()) else { return Ok(0) };
    std::fs::create_dir_all(cursor_file.parent().unwrap_or(state_dir))?;
    let tmp = cursor_file.with_extension("cursor.part");
    std::fs::write(&tmp, next)?;
    std::fs::rename(&tmp, &cursor_file)?;
    Ok(count)
}

/// Pull mode has no answer channel to the platform: refused rows and their reasons go to
/// `<dataset>.rejected.jsonl` beside the cursor (one line per row: the page's cursor, the row's
/// index, its errors), for the platform's operators.
fn record_rejections(
    dir: &std::path::Path,
    dataset: &str,
    cursor: &str,
    result: &crate::ingest::BatchResult,
) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{dataset}.rejected.jsonl")))?;
    for o in result.outcomes.iter().filter(|o| !o.errors.is_empty()) {
        let line = serde_json::json!({"cursor": cursor, "index": o.index, "errors": o.errors});
        writeln!(file, "{line}")?;
    }
    file.sync_data()?;
    Ok(())
}
