//! Departments' monthly Excel reports (月报; the 东营区 plan: last month's records by the 10th,
//! or a 零信息 zero report). A workbook is read as a stream — one sheet, one row at a time — and
//! translated through the district's intake adapter (its datasets name their sheets), stored in
//! chunks, and written back as the department's own workbook with a 问题数据反馈 column that
//! explains every row, plus a 汇总 summary sheet. A monthly_report record is stored for the
//! (department, period) with the counts reported.
//!
//! Memory stays flat for big workbooks: calamine reads cells in order (only the shared-string
//! table is held), rust_xlsxwriter writes in constant-memory mode, and at most one chunk of
//! rows is in flight.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use calamine::{DataRef, Reader, Xlsx};
use gateway_core::adapter::{Adapter, Dataset, Row};
use rust_xlsxwriter::{Color, Format, Workbook, Worksheet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::ingest::{BatchResult, Ingest, RecordOutcome, Status};

/// Rows stored per round trip to the store.
const CHUNK_ROWS: usize = 2_000;
/// The column added to every sheet.
pub const FEEDBACK_HEADER: &str = "问题数据反馈";
pub const SUMMARY_SHEET: &str = "汇总";
/// The template's instructions sheet.
pub const GUIDE_SHEET: &str = "填报说明";

/// Who reports, for which month.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub unit: String,
    pub unit_uscc: String,
    /// `YYYY-MM`.
    pub period: String,
    /// The units the uploader may report for: rows of other units are rejected.
    pub scope: crate::auth::UnitScope,
}

/// How far an import is (read by the status endpoint and the CLI's progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    pub rows_done: AtomicU64,
    pub rows_total: AtomicU64,
}

/// Counts per sheet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SheetSummary {
    pub sheet: String,
    /// The adapter dataset the sheet maps to; none for sheets this gateway does not exchange.
    pub dataset: Option<String>,
    pub rows: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub new_version: u64,
    pub rejected: u64,
    /// Rows of sheets with no dataset (表彰奖励, 判决仲裁, 违法违规 …): kept in the returned
    /// workbook, not stored.
    pub not_exchanged: u64,
}

/// The result of one import.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportSummary {
    pub unit: String,
    pub period: String,
    pub adapter: String,
    pub sheets: Vec<SheetSummary>,
    pub rows: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub new_version: u64,
    pub rejected: u64,
    pub not_exchanged: u64,
    /// No 行政许可 or 行政处罚 rows: a 零信息 report.
    pub zero_report: bool,
    /// The stored monthly_report record (its id), or why it was refused.
    pub monthly_report: RecordOutcome,
}

/// Imports `input` through `adapter`, writes the annotated workbook to `output`. Blocking: run it
/// on a blocking thread; `rt` runs the store calls.
pub fn import(
    gateway: &Arc<Ingest>,
    adapter: &Adapter,
    input: &Path,
    output: &Path,
    req: &ImportRequest,
    progress: &Progress,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<ImportSummary> {
    super::unzip::check_file(input)?;
    let mut book: Xlsx<_> = calamine::open_workbook(input)
        .with_context(|| format!("{} is not a readable .xlsx workbook", input.display()))?;
    let names = book.sheet_names();
    // A workbook without any report sheet is no zero report: it is refused, saying why.
    let expected: Vec<String> = adapter.datasets.iter().filter_map(|d| d.spec.sheet.clone()).collect();
    anyhow::ensure!(
        names.iter().any(|n| expected.iter().any(|e| e == n.trim())),
        "工作簿中没有 {} 月报的工作表（{}）；其工作表为 {} · the workbook has none of the report sheets",
        adapter.manifest.platform.name,
        expected.join("、"),
        names.join("、")
    );
    let mut total = 0u64;
    for name in names.iter().filter(|n| ![GUIDE_SHEET, SUMMARY_SHEET].contains(&n.trim())) {
        let reader = book.worksheet_cells_reader(name).with_context(|| format!("sheet {name}"))?;
        total += u64::from(reader.dimensions().end.0.saturating_sub(reader.dimensions().start.0));
    }
    progress.rows_total.store(total, Ordering::Relaxed);

    let mut out = Workbook::new();
    let red = Format::new().set_font_color(Color::Red);
    let bold = Format::new().set_bold();
    let mut sheets = Vec::new();
    for name in &names {
        // The template's instructions and an earlier feedback's summary are not data.
        if [GUIDE_SHEET, SUMMARY_SHEET].contains(&name.trim()) {
            continue;
        }
        let dataset = adapter.datasets.iter().find(|d| d.spec.sheet.as_deref() == Some(name.trim())).cloned();
        let ws = out.add_worksheet_with_constant_memory()?;
        ws.set_name(name.as_str())?;
        let mut reader = book.worksheet_cells_reader(name).with_context(|| format!("sheet {name}"))?;
        let width = reader.dimensions().end.1 + 1;
        let mut sheet = SheetCopy {
            ws,
            platform: adapter.id().to_owned(),
            scope: &req.scope,
            sender: (&req.unit_uscc, &req.unit),
            red: &red,
            bold: &bold,
            dataset,
            header: Vec::new(),
            feedback_col: 0,
            pending: Vec::new(),
            summary: SheetSummary { sheet: name.clone(), ..SheetSummary::default() },
        };
        sheet.summary.dataset = sheet.dataset.as_ref().map(|d| d.spec.name.clone());
        let mut row_index = None;
        let mut cells: Vec<(u16, Value)> = Vec::new();
        while let Some(cell) = reader.next_cell().with_context(|| format!("reading sheet {name}"))? {
            let (r, c) = cell.get_position();
            if row_index != Some(r) {
                if let Some(prev) = row_index {
                    sheet.row(prev, std::mem::take(&mut cells), width, gateway, rt, progress)?;
                }
                row_index = Some(r);
            }
            let value = cell_value(cell.get_value());
            if !value.is_null() {
                cells.push((u16::try_from(c).unwrap_or(u16::MAX), value));
            }
        }
        if let Some(prev) = row_index {
            sheet.row(prev, cells, width, gateway, rt, progress)?;
        }
        sheet.flush(gateway, rt, progress)?;
        sheets.push(sheet.summary);
    }

    let sum = |f: fn(&SheetSummary) -> u64| sheets.iter().map(f).sum::<u64>();
    let reported = |rt: &str| {
        sheets
            .iter()
            .filter(|s| {
                adapter.datasets.iter().any(|d| Some(&d.spec.name) == s.dataset.as_ref() && d.spec.record_type == rt)
            })
            .map(|s| s.rows)
            .sum::<u64>()
    };
    let (licenses, penalties) = (reported("admin_license"), reported("admin_penalty"));
    let zero_report = licenses == 0 && penalties == 0;
    let monthly = monthly_report(adapter, req, licenses, penalties, OffsetDateTime::now_utc());
    let body = serde_json::to_vec(&[monthly])?;
    let stored = rt
        .block_on(gateway.push_as(body.into(), OffsetDateTime::now_utc(), &req.scope))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let monthly_report = stored.outcomes.into_iter().next().context("no outcome for the monthly report")?;
    let summary = ImportSummary {
        unit: req.unit.clone(),
        period: req.period.clone(),
        adapter: adapter.id().into(),
        rows: sum(|s| s.rows),
        accepted: sum(|s| s.accepted),
        duplicate: sum(|s| s.duplicate),
        new_version: sum(|s| s.new_version),
        rejected: sum(|s| s.rejected),
        not_exchanged: sum(|s| s.not_exchanged),
        zero_report,
        monthly_report,
        sheets,
    };
    progress.rows_done.store(progress.rows_total.load(Ordering::Relaxed).max(summary.rows), Ordering::Relaxed);
    write_summary(out.add_worksheet(), &summary, req, &bold)?;
    // Written whole, then renamed: a half-written feedback workbook is never served.
    let part = output.with_extension("xlsx.part");
    out.save(&part).with_context(|| format!("writing {}", part.display()))?;
    std::fs::rename(&part, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(summary)
}

/// A sheet row waiting for its chunk to be stored: its index, its cells as read (to copy
/// back), and the same cells keyed by header (to import).
type PendingRow = (u32, Vec<(u16, Value)>, Row);

/// One sheet being copied: rows wait in `pending` until a chunk is stored, then are written
/// with their feedback (constant-memory sheets take rows in order only).
struct SheetCopy<'a> {
    ws: &'a mut Worksheet,
    platform: String,
    /// The uploader's units.
    scope: &'a crate::auth::UnitScope,
    /// The reporting unit (统一社会信用代码, name): rows that name no department are its.
    sender: (&'a str, &'a str),
    red: &'a Format,
    bold: &'a Format,
    dataset: Option<Arc<Dataset>>,
    header: Vec<String>,
    feedback_col: u16,
    pending: Vec<PendingRow>,
    summary: SheetSummary,
}

impl SheetCopy<'_> {
    fn row(
        &mut self,
        r: u32,
        cells: Vec<(u16, Value)>,
        width: u32,
        gateway: &Arc<Ingest>,
        rt: &tokio::runtime::Handle,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        if self.header.is_empty() {
            // The first non-empty row names the columns ("* 统一社会\n信用代码" → 统一社会信用代码).
            let last = cells.iter().map(|(c, _)| *c).max().unwrap_or(0);
            self.header = vec![String::new(); usize::from(last) + 1];
            for (c, v) in &cells {
                self.header[usize::from(*c)] = header_name(v);
            }
            // After every column the sheet uses (Excel's last column is XFD, index 16383).
            self.feedback_col = u16::try_from(width.max(u32::from(last) + 1).min(16_383)).unwrap_or(16_383);
            write_cells(self.ws, r, &cells)?;
            self.ws.write_string_with_format(r, self.feedback_col, FEEDBACK_HEADER, self.bold)?;
            return Ok(());
        }
        self.summary.rows += 1;
        let mut row = Row::new();
        for (c, v) in &cells {
            // A workbook sent again after an earlier import still has its feedback column.
            if let Some(name) = self.header.get(usize::from(*c)).filter(|n| !n.is_empty() && *n != FEEDBACK_HEADER) {
                row.insert(name.clone(), v.clone());
            }
        }
        self.pending.push((r, cells, row));
        if self.pending.len() >= CHUNK_ROWS {
            self.flush(gateway, rt, progress)?;
        }
        Ok(())
    }

    fn flush(&mut self, gateway: &Arc<Ingest>, rt: &tokio::runtime::Handle, progress: &Progress) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let count = pending.len() as u64;
        let outcomes: Vec<(String, bool)> = match &self.dataset {
            None => {
                self.summary.not_exchanged += count;
                vec![
                    ("未交换：本网关暂不交换此类信息，本行未入库（仍保留在报送材料中）".to_owned(), false);
                    pending.len()
                ]
            }
            Some(ds) => {
                let rows = pending.iter().map(|(_, _, row)| row.clone()).collect();
                let result = rt
                    .block_on(gateway.push_rows(
                        &self.platform,
                        Arc::clone(ds),
                        rows,
                        OffsetDateTime::now_utc(),
                        self.scope,
                        Some(self.sender),
                    ))
                    .map_err(|e| anyhow::anyhow!("storing rows: {e:?}"))?;
                self.count(&result);
                result.outcomes.iter().map(feedback).collect()
            }
        };
        for ((r, cells, _), (text, bad)) in pending.into_iter().zip(outcomes) {
            write_cells(self.ws, r, &cells)?;
            if bad {
                self.ws.write_string_with_format(r, self.feedback_col, &text, self.red)?;
            } else {
                self.ws.write_string(r, self.feedback_col, &text)?;
            }
        }
        progress.rows_done.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    fn count(&mut self, result: &BatchResult) {
        self.summary.accepted += result.accepted as u64;
        self.summary.duplicate += result.duplicate as u64;
        self.summary.new_version += result.new_version as u64;
        self.summary.rejected += result.rejected as u64;
    }
}

/// The feedback text for one row, and whether it is a problem.
fn feedback(o: &RecordOutcome) -> (String, bool) {
    match o.status {
        Status::Accepted => ("已入库".into(), false),
        Status::Duplicate => ("重复：与已入库的记录相同，未重复入库".into(), false),
        Status::NewVersion => (format!("已入库：更新为第 {} 版", o.version.unwrap_or_default()), false),
        Status::Rejected => {
            let reasons: Vec<String> =
                o.errors.iter().map(|e| format!("{}（{}；{}）", e.message_zh, e.rule, e.message_en)).collect();
            (format!("未入库：{}", reasons.join("；")), true)
        }
    }
}

fn header_name(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().filter(|c| !c.is_whitespace()).collect::<String>().trim_start_matches(['*', '＊']).to_owned()
}

fn write_cells(ws: &mut Worksheet, r: u32, cells: &[(u16, Value)]) -> anyhow::Result<()> {
    for (c, v) in cells {
        match v {
            Value::Number(n) => {
                ws.write_number(r, *c, n.as_f64().unwrap_or_default())?;
            }
            Value::String(s) => {
                ws.write_string(r, *c, s)?;
            }
            other => {
                ws.write_string(r, *c, other.to_string())?;
            }
        }
    }
    Ok(())
}

/// A cell as JSON: text as strings, numbers as numbers, dates as `YYYY-MM-DD`.
fn cell_value(v: &DataRef<'_>) -> Value {
    match v {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) if s.trim().is_empty() => Value::Null,
        DataRef::String(s) => Value::String(s.clone()),
        DataRef::SharedString(s) if s.trim().is_empty() => Value::Null,
        DataRef::SharedString(s) => Value::String((*s).to_owned()),
        DataRef::Int(i) => Value::from(*i),
        DataRef::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        DataRef::Bool(b) => Value::String(if *b { "是" } else { "否" }.into()),
        // A date-formatted cell holding something that is no date (an ID number typed into a
        // date column) keeps its number, for the rules to refuse with a reason.
        DataRef::DateTime(d) => excel_date(d.as_f64())
            .map(Value::String)
            .or_else(|| serde_json::Number::from_f64(d.as_f64()).map(Value::Number))
            .unwrap_or(Value::Null),
        DataRef::DateTimeIso(s) => Value::String(s.chars().take(10).collect()),
        DataRef::DurationIso(s) => Value::String(s.clone()),
        DataRef::Error(e) => Value::String(format!("#{e}")),
        DataRef::Empty => Value::Null,
    }
}

/// An Excel serial date (1900 date system) as `YYYY-MM-DD`.
pub(crate) fn excel_date(serial: f64) -> Option<String> {
    // Excel's dates run from 1900-01-01 (1) to 9999-12-31 (2958465).
    if !(1.0..2_958_466.0).contains(&serial) {
        return None;
    }
    // Day 60 is the phantom 1900-02-29; serials after it count from 1899-12-30.
    let epoch = time::Date::from_calendar_date(1899, time::Month::December, 30).ok()?;
    let days = serial.floor() as i64;
    let date = epoch.checked_add(time::Duration::days(days))?;
    Some(gateway_core::date::format_date(date))
}

fn monthly_report(adapter: &Adapter, req: &ImportRequest, licenses: u64, penalties: u64, now: OffsetDateTime) -> Value {
    let zero = licenses == 0 && penalties == 0;
    let mut record = serde_json::json!({
        "record_type": "monthly_report",
        "region_code": adapter.manifest.platform.region_code,
        "department": req.unit,
        "department_uscc": req.unit_uscc,
        "period": req.period,
        "license_count": licenses,
        "penalty_count": penalties,
        "is_zero_report": zero,
        "submitted_on": gateway_core::date::format_date(gateway_core::date::today_in_china(now)),
        "source_unit": req.unit,
        "source_unit_uscc": req.unit_uscc,
        "disclosure_scope": "gov_shared",
    });
    if zero {
        record["zero_report_declaration"] =
            format!("本单位 {} 无应报送的行政许可、行政处罚信息（零信息报送）。", req.period).into();
    }
    record
}

fn write_summary(ws: &mut Worksheet, s: &ImportSummary, req: &ImportRequest, bold: &Format) -> anyhow::Result<()> {
    ws.set_name(SUMMARY_SHEET)?;
    let facts: [(&str, String); 6] = [
        ("报送单位", req.unit.clone()),
        ("统一社会信用代码", req.unit_uscc.clone()),
        ("所属期", req.period.clone()),
        ("零信息报送", if s.zero_report { "是" } else { "否" }.into()),
        (
            "月报记录",
            match (&s.monthly_report.status, &s.monthly_report.record_id) {
                (Status::Rejected, _) => format!("未入库：{}", feedback(&s.monthly_report).0),
                (_, Some(id)) => format!("已登记（{id}）"),
                _ => "已登记".into(),
            },
        ),
        ("处理时间", gateway_core::date::format_timestamp(OffsetDateTime::now_utc())),
    ];
    for (i, (k, v)) in facts.iter().enumerate() {
        ws.write_string_with_format(i as u32, 0, *k, bold)?;
        ws.write_string(i as u32, 1, v)?;
    }
    let top = facts.len() as u32 + 1;
    for (c, h) in ["工作表", "数据集", "行数", "入库", "重复", "新版本", "拒收", "未交换"].iter().enumerate()
    {
        ws.write_string_with_format(top, c as u16, *h, bold)?;
    }
    let mut totals: BTreeMap<u16, u64> = BTreeMap::new();
    for (i, sh) in s.sheets.iter().enumerate() {
        let r = top + 1 + i as u32;
        ws.write_string(r, 0, &sh.sheet)?;
        ws.write_string(r, 1, sh.dataset.clone().unwrap_or_else(|| "（不交换）".into()))?;
        for (c, n) in
            [sh.rows, sh.accepted, sh.duplicate, sh.new_version, sh.rejected, sh.not_exchanged].iter().enumerate()
        {
            ws.write_number(r, 2 + c as u16, *n as f64)?;
            *totals.entry(2 + c as u16).or_default() += n;
        }
    }
    let r = top + 1 + s.sheets.len() as u32;
    ws.write_string_with_format(r, 0, "合计", bold)?;
    for (c, n) in totals {
        ws.write_number_with_format(r, c, n as f64, bold)?;
    }
    ws.set_column_width(0, 18)?;
    ws.set_column_width(1, 40)?;
    Ok(())
}

/// A blank report workbook for `adapter`: one sheet per dataset with its column headers
/// (required ones marked *), and a 填报说明 sheet that explains every column.
pub fn template(adapter: &Adapter) -> anyhow::Result<Vec<u8>> {
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let required_fmt = Format::new().set_bold().set_font_color(Color::Red);
    let mut notes: Vec<[String; 4]> = Vec::new();
    for ds in adapter.datasets.iter().filter(|d| d.spec.sheet.is_some()) {
        let ws = book.add_worksheet();
        ws.set_name(ds.spec.sheet.as_deref().unwrap_or(&ds.spec.name))?;
        let required: Vec<&str> =
            ds.platform_schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for (c, column) in ds.columns().into_iter().enumerate() {
            let is_required = required.contains(&column);
            let label = if is_required { format!("*{column}") } else { column.to_owned() };
            ws.write_string_with_format(0, c as u16, &label, if is_required { &required_fmt } else { &bold })?;
            ws.set_column_width(c as u16, 18)?;
            let prop = &ds.platform_schema["properties"][column];
            let allowed = prop["enum"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" / "))
                .unwrap_or_default();
            let field = ds.spec.fields.iter().find(|f| f.column == column).map(|f| f.field.as_str());
            let need = match (is_required, field.and_then(required_when)) {
                (true, _) => "必填",
                (false, Some(when)) => when,
                (false, None) => "选填",
            };
            notes.push([ds.spec.sheet.clone().unwrap_or_default(), column.to_owned(), need.into(), allowed]);
        }
    }
    for extra in ["表彰奖励", "判决仲裁", "违法违规"] {
        book.add_worksheet().set_name(extra)?;
    }
    let ws = book.add_worksheet();
    ws.set_name("填报说明")?;
    // The scopes as this platform writes them (its code table), in the order the domain lists them.
    let scopes = adapter.manifest.code_tables.get("disclosure_scope");
    use gateway_core::record::Disclosure;
    let scope_words: Vec<String> = [Disclosure::Public, Disclosure::GovShared, Disclosure::AuthorizedQuery]
        .iter()
        .filter_map(|s| scopes.and_then(|t| t.get(s.as_str())))
        .map(|w| format!("“{w}”"))
        .collect();
    let intro = [
        "每月10日前报送上月信息；当月无信息的，提交各表为空的本工作簿即为“零信息”报送。".to_owned(),
        "带 * 的列必填；“法人及非法人组织必填”“自然人必填”的列按行政相对人类别必填。日期写作 2026-10-08（也接受 2026/10/8、2026年10月8日）；证件号码、统一社会信用代码请填为文本。".to_owned(),
        format!("多个处罚类别用分号（;）分隔。公开属性填{}之一。", scope_words.join("、")),
        "导入后会返回本工作簿，新增“问题数据反馈”列逐行说明未入库原因，另附“汇总”表。".to_owned(),
    ];
    for (i, line) in intro.iter().enumerate() {
        ws.write_string(i as u32, 0, line)?;
    }
    let top = intro.len() as u32 + 1;
    for (c, h) in ["工作表", "列", "必填", "可选值"].iter().enumerate() {
        ws.write_string_with_format(top, c as u16, *h, &bold)?;
    }
    for (i, row) in notes.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            ws.write_string(top + 1 + i as u32, c as u16, v)?;
        }
    }
    ws.set_column_width(0, 14)?;
    ws.set_column_width(1, 36)?;
    ws.set_column_width(3, 40)?;
    Ok(book.save_to_buffer()?)
}

/// When a column the schema leaves optional is required by the domain rules: by the category
/// of the subject (`rules::check_subject`).
fn required_when(field: &str) -> Option<&'static str> {
    match field {
        "party_uscc" | "legal_rep_name" => Some("法人及非法人组织必填"),
        "party_id_type" | "party_id_no" => Some("自然人必填"),
        _ => None,
    }
}

/// Reads every row of every sheet of a workbook as plain values (tests, benchmarks: the raw read
/// rate beside the import rate). Returns the number of non-empty rows.
pub fn count_rows(path: &Path) -> anyhow::Result<u64> {
    let mut book: Xlsx<_> = calamine::open_workbook(path)?;
    let mut rows = 0u64;
    for name in book.sheet_names() {
        let mut reader = book.worksheet_cells_reader(&name)?;
        let mut last = None;
        while let Some(cell) = reader.next_cell()? {
            let r = cell.get_position().0;
            if last != Some(r) && !matches!(cell.get_value(), DataRef::Empty) {
                rows += 1;
                last = Some(r);
            }
        }
    }
    Ok(rows)
}

/// Reads one sheet as rows keyed by its header (first non-empty row), cells converted as an
/// import converts them (text, numbers, dates as `YYYY-MM-DD`). For packages, which are small.
pub fn read_rows(path: &Path, sheet: &str) -> anyhow::Result<Vec<Row>> {
    super::unzip::check_file(path)?;
    let mut book: Xlsx<_> = calamine::open_workbook(path)?;
    let mut reader =
        book.worksheet_cells_reader(sheet).with_context(|| format!("the workbook has no sheet {sheet}"))?;
    let mut by_row: Vec<(u32, Vec<(u32, Value)>)> = Vec::new();
    while let Some(cell) = reader.next_cell()? {
        let (r, c) = cell.get_position();
        let value = cell_value(cell.get_value());
        if value.is_null() {
            continue;
        }
        match by_row.last_mut() {
            Some((row, cells)) if *row == r => cells.push((c, value)),
            _ => by_row.push((r, vec![(c, value)])),
        }
    }
    let mut rows = by_row.into_iter();
    let Some((_, head)) = rows.next() else { return Ok(Vec::new()) };
    let header: BTreeMap<u32, String> = head.iter().map(|(c, v)| (*c, header_name(v))).collect();
    Ok(rows
        .map(|(_, cells)| {
            cells
                .into_iter()
                .filter_map(|(c, v)| header.get(&c).filter(|n| !n.is_empty()).map(|n| (n.clone(), v)))
                .collect()
        })
        .collect())
}

/// [`read_rows`] with every value as text (tests read feedback workbooks with it).
pub fn read_sheet(path: &Path, sheet: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    Ok(read_rows(path, sheet)?
        .into_iter()
        .map(|row| row.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 填报说明 of 周村区's template says what the rules require: 法定代表人 for 法人 rows,
    /// 证件号码 for natural persons, and every 公开属性 value the column takes.
    #[test]
    fn the_template_guide_names_conditional_columns_and_every_disclosure_scope() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../adapters/zhoucun-district/manifest.toml");
        let adapter = crate::adapters::compile(&manifest).expect("manifest");
        let bytes = template(&adapter).expect("template");
        let mut book = Xlsx::new(std::io::Cursor::new(bytes)).expect("xlsx");
        let range = book.worksheet_range(GUIDE_SHEET).expect("guide sheet");
        let rows: Vec<Vec<String>> =
            range.rows().map(|r| r.iter().map(|c| c.to_string()).collect::<Vec<_>>()).collect();
        let need = |column: &str| {
            rows.iter().find(|r| r.get(1).is_some_and(|c| c == column)).map(|r| r[2].clone()).unwrap_or_default()
        };
        assert_eq!(need("法定代表人"), "法人及非法人组织必填");
        assert_eq!(need("证件号码"), "自然人必填");
        assert_eq!(need("备注"), "选填");
        let intro = rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>().join("\n");
        for scope in ["向全社会公开", "由政府部门共享", "授权查询"] {
            assert!(intro.contains(scope), "{scope} missing from {intro}");
        }
    }
}
