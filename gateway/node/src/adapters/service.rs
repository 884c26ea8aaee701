//! 服务方式, inbound: pages of rows pulled from the platform's interface.
//!
//! `GET <url><pull_path>?<cursor_param>=<cursor>&limit=<page_size>` answers
//! `{"rows": [...], "next_cursor": "…" | null}`. The cursor of each dataset is kept in
//! `<data_dir>/adapters/<platform>/<dataset>.cursor` and moves only after the page's rows are
//! stored: a kill in between means the page is pulled again and its rows answered `duplicate`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gateway_core::adapter::Dataset;
use serde_json::Value;
use time::OffsetDateTime;

use super::Loaded;
use crate::ingest::Gateway;

/// Pulls one service-mode adapter until `stop` fires.
pub async fn run(
    gateway: Arc<Gateway>,
    loaded: Arc<Loaded>,
    state_dir: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_millis(loaded.binding.poll_interval_ms.max(10));
    loop {
        if *stop.borrow() {
            return;
        }
        let busy = match pull_once(&gateway, &loaded, &state_dir).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(platform = loaded.id(), error = %format!("{e:#}"), "pull failed; retrying");
                false
            }
        };
        if !busy {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// One page of every dataset. Returns how many rows were stored.
pub async fn pull_once(
    gateway: &Arc<Gateway>,
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
    gateway: &Arc<Gateway>,
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
    let rows: Vec<_> = page["rows"]
        .as_array()
        .with_context(|| format!("{url} answered without a `rows` array"))?
        .iter()
        .filter_map(|r| r.as_object().cloned())
        .collect();
    let count = rows.len();
    if count > 0 {
        let result = gateway
            .push_rows(Arc::clone(ds), rows, OffsetDateTime::now_utc())
            .await
            .map_err(|e| anyhow::anyhow!("storing rows: {e:?}"))?;
        tracing::info!(platform = loaded.id(), dataset = %ds.spec.name, rows = count, rejected = result.rejected, "page pulled");
        if result.rejected > 0 {
            for o in result.outcomes.iter().filter(|o| !o.errors.is_empty()) {
                let rules: Vec<&str> = o.errors.iter().map(|e| e.rule.as_str()).collect();
                tracing::warn!(platform = loaded.id(), dataset = %ds.spec.name, row = o.index, ?rules, "pulled row rejected");
            }
        }
    }
    if let Some(next) = page["next_cursor"].as_str().filter(|n| *n != cursor.trim()) {
        std::fs::create_dir_all(cursor_file.parent().unwrap_or(state_dir))?;
        let tmp = cursor_file.with_extension("cursor.part");
        std::fs::write(&tmp, next)?;
        std::fs::rename(&tmp, &cursor_file)?;
    }
    Ok(count)
}
