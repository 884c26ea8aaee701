//! Delivering records to a platform through its adapter: translate each record into the
//! platform's row, check it against the platform schema, then hand the rows over — HTTP push
//! (服务方式) or a package in the outbox folder (文件方式). The relay calls this as the sender
//! of an `adapter:<platform>` destination, so retries, dead letters and ordering are the relay's.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::adapter::{Dataset, Mode, PackageFormat, Row};
use gateway_core::canonical::Sha256Digest;
use gateway_core::record::{FieldError, RecordType};
use gateway_store::StoredRecord;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Loaded;

/// What a delivery did with each record.
#[derive(Debug, Default)]
pub struct Delivered {
    /// `(seq, record_id, version, where)` of the records the platform took.
    pub delivered: Vec<(i64, Uuid, i64, String)>,
    /// Records whose platform row fails the platform schema, with the reasons.
    pub refused: Vec<(i64, Vec<FieldError>)>,
}

#[derive(Debug)]
pub enum DeliverError {
    /// Try again later (network, 5xx, disk).
    Transient(anyhow::Error),
    /// The platform refused the rows (4xx): the relay narrows it down to the record.
    Refused(Value),
}

/// Rows of one dataset ready to go, with the records they came from.
struct Batch<'a> {
    dataset: &'a Arc<Dataset>,
    rows: Vec<Row>,
    records: Vec<&'a StoredRecord>,
}

pub async fn deliver(
    loaded: &Loaded,
    records: &[StoredRecord],
    now: time::OffsetDateTime,
) -> Result<Delivered, DeliverError> {
    let mut out = Delivered::default();
    let mut batches: Vec<Batch<'_>> = Vec::new();
    for r in records {
        let dataset = r.record_type.parse::<RecordType>().ok().and_then(|t| loaded.adapter.dataset_for(t));
        let Some(dataset) = dataset else {
            // The router sends only the adapter's record types; anything else is a bug upstream.
            let e = FieldError::new(
                "/record_type",
                "adapter.no_dataset",
                "该平台适配器不接收此类记录",
                "this adapter carries no such record type",
            );
            out.refused.push((r.seq, vec![e]));
            continue;
        };
        let content: Value = serde_json::from_str(&r.content).map_err(|e| {
            DeliverError::Transient(anyhow::anyhow!("stored content of {} is not JSON: {e}", r.record_id))
        })?;
        let row = match dataset.to_platform(&content) {
            Ok(row) => row,
            Err(errors) => {
                out.refused.push((r.seq, errors));
                continue;
            }
        };
        let errors = dataset.check_row(&Value::Object(row.clone()));
        if !errors.is_empty() {
            out.refused.push((r.seq, errors));
            continue;
        }
        match batches.iter_mut().find(|b| Arc::ptr_eq(b.dataset, dataset)) {
            Some(b) => {
                b.rows.push(row);
                b.records.push(r);
            }
            None => batches.push(Batch { dataset, rows: vec![row], records: vec![r] }),
        }
    }
    for b in batches {
        let place = match loaded.adapter.manifest.transport.mode {
            Mode::Service => push(loaded, &b).await?,
            Mode::File => write_package(loaded, &b, now).map_err(DeliverError::Transient)?,
            Mode::Database => {
                return Err(DeliverError::Transient(anyhow::anyhow!("database mode does not deliver")));
            }
        };
        out.delivered.extend(b.records.iter().map(|r| (r.seq, r.record_id, r.version, place.clone())));
    }
    Ok(out)
}

/// 服务方式: POSTs the rows as a JSON array to the platform's push path.
async fn push(loaded: &Loaded, b: &Batch<'_>) -> Result<String, DeliverError> {
    let transient = |e: anyhow::Error| DeliverError::Transient(e);
    let base = loaded.binding.url.as_deref().ok_or_else(|| transient(anyhow::anyhow!("no url")))?;
    let service = loaded.adapter.manifest.transport.service.clone().unwrap_or_default();
    let path = service.push_path.replace("{dataset}", &b.dataset.spec.name);
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = loaded
        .http
        .post(&url)
        .json(&b.rows)
        .send()
        .await
        .with_context(|| format!("pushing to {url}"))
        .map_err(transient)?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(url)
    } else if matches!(status.as_u16(), 400 | 413 | 422) {
        // The rows themselves were refused: the relay narrows it down to the record. The
        // platform's answer is kept short — it may echo rows, and rows carry identity numbers.
        Err(DeliverError::Refused(json!({"status": status.as_u16(), "url": url, "answer": excerpt(&body)})))
    } else {
        // Authentication, a wrong path, rate limits, server errors: retried with back-off
        // while an operator looks; nothing is dead-lettered for them.
        Err(transient(anyhow::anyhow!("{url} answered {status}: {}", excerpt(&body))))
    }
}

/// The start of a platform's answer, with digit runs long enough to be identity numbers masked.
fn excerpt(body: &str) -> String {
    // Masked first, cut after: a number straddling the cut would otherwise escape the mask.
    let mut out = String::with_capacity(body.len().min(4096));
    let mut run = String::new();
    for c in body.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() {
            run.push(c);
            continue;
        }
        if run.len() >= 15 && run.chars().filter(char::is_ascii_digit).count() >= 14 {
            out.push_str(&"*".repeat(run.len()));
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out.chars().take(300).collect()
}

/// 文件方式: a ZIP package (data file + `manifest.json` with the record count and SHA-256 of
/// every file), written under a temporary name and renamed, so the platform never sees half
/// a package.
fn write_package(loaded: &Loaded, b: &Batch<'_>, now: time::OffsetDateTime) -> anyhow::Result<String> {
    let outbox = loaded.binding.outbox.as_deref().context("no outbox folder")?;
    std::fs::create_dir_all(outbox).with_context(|| format!("creating {}", outbox.display()))?;
    let format = loaded.adapter.manifest.transport.file.as_ref().map_or(PackageFormat::Json, |f| f.package_format);
    let first = b.records.first().map_or(0, |r| r.seq);
    let stamp = gateway_core::date::format_timestamp(now).replace(['-', ':', '.'], "");
    let name = format!("{}_{}_{}_{first}.zip", loaded.id(), b.dataset.spec.name, stamp.trim_end_matches('Z'));
    let (data_name, data) = match format {
        PackageFormat::Json => ("data.json", serde_json::to_vec_pretty(&b.rows)?),
        PackageFormat::Csv => ("data.csv", csv_bytes(b.dataset, &b.rows)?),
        PackageFormat::Xlsx => ("data.xlsx", xlsx_bytes(b.dataset, &b.rows)?),
    };
    let manifest = json!({
        // The same records make the same package id: a platform can spot a package sent again.
        "package_id": format!("{}-{}-{first}-{}", loaded.id(), b.dataset.spec.name, b.records.last().map_or(0, |r| r.seq)),
        "platform": loaded.id(),
        "dataset": b.dataset.spec.name,
        "record_type": b.dataset.record_type.as_str(),
        "created_at": gateway_core::date::format_timestamp(now),
        "record_count": b.rows.len(),
        "files": [{"name": data_name, "sha256": Sha256Digest::of(&data).to_hex(), "records": b.rows.len()}],
    });
    let part = outbox.join(format!(".{name}.part"));
    write_zip(&part, &[(data_name, &data), ("manifest.json", &serde_json::to_vec_pretty(&manifest)?)])?;
    std::fs::rename(&part, outbox.join(&name)).with_context(|| format!("publishing {name}"))?;
    Ok(name)
}

pub fn write_zip(path: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(*name, options)?;
        zip.write_all(bytes)?;
    }
    let file = zip.finish()?;
    file.sync_all()?;
    Ok(())
}

fn csv_bytes(ds: &Dataset, rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let columns = ds.columns();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&columns)?;
    for row in rows {
        w.write_record(columns.iter().map(|c| match row.get(*c) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }))?;
    }
    Ok(w.into_inner()?)
}

fn xlsx_bytes(ds: &Dataset, rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let columns = ds.columns();
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.set_name(ds.spec.sheet.as_deref().unwrap_or(&ds.spec.name))?;
    for (c, name) in columns.iter().enumerate() {
        ws.write_string(0, c as u16, *name)?;
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, name) in columns.iter().enumerate() {
            match row.get(*name) {
                Some(Value::Number(n)) => {
                    ws.write_number(r as u32 + 1, c as u16, n.as_f64().unwrap_or_default())?;
                }
                Some(Value::String(s)) => {
                    ws.write_string(r as u32 + 1, c as u16, s)?;
                }
                _ => {}
            }
        }
    }
    Ok(book.save_to_buffer()?)
}
