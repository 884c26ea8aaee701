//! The local publication sink: what this platform publishes, appended as JSON lines to one file
//! per Beijing day, with identity numbers masked. It stands in for the platform's publication
//! system until its adapter exists. A line can repeat after a crash (delivery is at least
//! once); readers key lines by `origin`, `record_id` and `version`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use gateway_core::record::mask_identity_numbers;
use serde_json::{Value, json};
use uuid::Uuid;

use gateway_store::StoredRecord;

/// Appends `records` to today's file and syncs it. Returns the sink's receipts:
/// `(seq, record_id, version, file name)`.
pub fn write(
    dir: &Path,
    records: &[StoredRecord],
    now: time::OffsetDateTime,
) -> anyhow::Result<Vec<(i64, Uuid, i64, String)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}.jsonl", gateway_core::date::today_in_china(now));
    let path = dir.join(&name);
    let mut lines = String::new();
    for r in records {
        let mut content: Value = serde_json::from_str(&r.content).context("stored content is not JSON")?;
        mask_identity_numbers(&mut content);
        let line = json!({
            "origin": r.origin, "record_id": r.record_id, "version": r.version,
            "record_type": r.record_type, "content": content,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(lines.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_data().with_context(|| format!("syncing {}", path.display()))?;
    Ok(records.iter().map(|r| (r.seq, r.record_id, r.version, name.clone())).collect())
}
