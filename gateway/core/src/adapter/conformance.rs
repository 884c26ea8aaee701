//! The conformance suite every adapter passes (CI runs it on `adapters/`, and
//! `credit-gateway adapter check` runs it for a platform engineer):
//! - each platform sample matches the platform schema and translates to a canonical record
//!   that passes the record rules (for adapters that ingest);
//! - each canonical sample passes the record rules, translates to a row that matches the
//!   platform schema;
//! - canonical → platform → canonical gives back every field the dataset writes, and
//!   platform → canonical → platform every column, unchanged, inventing nothing;
//! - fields and columns that one side has and the other does not carry are reported.

use serde_json::Value;
use time::Date;

use super::{Adapter, Coverage, Dataset, Way};
use crate::record::RecordValidator;

/// What one dataset's check found.
#[derive(Debug, Clone)]
pub struct DatasetReport {
    pub dataset: String,
    pub platform_samples: usize,
    pub canonical_samples: usize,
    pub coverage: Coverage,
}

/// Runs the suite. `samples(dataset, side)` gives the sample array for `side` (`platform` or
/// `canonical`), or an error if it is missing. Returns one report per dataset, or the first
/// failure, described for the engineer who has to fix it.
pub fn check(
    adapter: &Adapter,
    samples: impl Fn(&str, &str) -> Result<Vec<Value>, String>,
    validator: &RecordValidator,
    today: Date,
) -> Result<Vec<DatasetReport>, String> {
    let mut reports = Vec::new();
    for ds in &adapter.datasets {
        let what = format!("{} / {}", adapter.id(), ds.spec.name);
        let platform = samples(&ds.spec.name, "platform")?;
        let canonical = samples(&ds.spec.name, "canonical")?;
        if platform.is_empty() || canonical.is_empty() {
            return Err(format!("{what}: both sample files need at least one entry"));
        }
        for (i, row) in platform.iter().enumerate() {
            let at = format!("{what}: platform sample {i}");
            let errors = ds.check_row(row);
            if !errors.is_empty() {
                return Err(format!("{at} fails the platform schema: {}", describe(&errors)));
            }
            let object = row.as_object().ok_or_else(|| format!("{at} is not an object"))?;
            let record = ds.to_canonical(object).map_err(|e| format!("{at} does not translate: {}", describe(&e)))?;
            if adapter.manifest.platform.direction.ingests() {
                validator
                    .check(record.clone(), today)
                    .map_err(|e| format!("{at} translates to a record the rules refuse: {}", describe(&e)))?;
            }
            let again =
                ds.to_platform(&record).map_err(|e| format!("{at} does not translate back: {}", describe(&e)))?;
            round_trip(ds, row, &Value::Object(again), &format!("{at}, platform → canonical → platform"))?;
        }
        for (i, record) in canonical.iter().enumerate() {
            let at = format!("{what}: canonical sample {i}");
            validator
                .check(record.clone(), today)
                .map_err(|e| format!("{at} fails the record rules: {}", describe(&e)))?;
            let row = ds.to_platform(record).map_err(|e| format!("{at} does not translate: {}", describe(&e)))?;
            let row = Value::Object(row);
            let errors = ds.check_row(&row);
            if !errors.is_empty() {
                return Err(format!("{at} translates to a row the platform schema refuses: {}", describe(&errors)));
            }
            let object = row.as_object().ok_or_else(|| format!("{at}: row is not an object"))?;
            let back =
                ds.to_canonical(object).map_err(|e| format!("{at} does not translate back: {}", describe(&e)))?;
            round_trip(ds, record, &back, &format!("{at}, canonical → platform → canonical"))?;
        }
        reports.push(DatasetReport {
            dataset: ds.spec.name.clone(),
            platform_samples: platform.len(),
            canonical_samples: canonical.len(),
            coverage: ds.coverage(),
        });
    }
    Ok(reports)
}

/// A round trip gives back every field or column the dataset writes out, unchanged, and
/// invents nothing.
fn round_trip(ds: &Dataset, original: &Value, back: &Value, what: &str) -> Result<(), String> {
    let back = back.as_object().ok_or_else(|| format!("{what}: not an object"))?;
    for (key, value) in back {
        match original.get(key) {
            Some(v) if v == value => {}
            Some(v) => return Err(format!("{what}: {key} came back as {value}, was {v}")),
            None => return Err(format!("{what}: {key} = {value} appeared from nowhere")),
        }
    }
    for key in original.as_object().map(|o| o.keys()).into_iter().flatten() {
        let written =
            ds.spec.fields.iter().any(|m| (&m.field == key && m.only != Some(Way::Ingest)) || &m.column == key);
        if written && !back.contains_key(key) {
            return Err(format!("{what}: {key} was lost"));
        }
    }
    Ok(())
}

fn describe(errors: &[crate::record::FieldError]) -> String {
    errors.iter().map(|e| format!("{} [{}] {}", e.pointer, e.rule, e.message_en)).collect::<Vec<_>>().join("; ")
}
