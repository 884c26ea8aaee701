//! The workbooks of the loop, for offices that work in Excel:
//! - the cases workbook (案件答复表): a department downloads its open cases, fills in the answer
//!   columns and uploads it; each row is checked like the JSON answer and stored or refused with
//!   its reason;
//! - the 督办清单 (follow-up list): the overdue cases of a department or a month, to send out.

use std::collections::BTreeMap;
use std::io::Cursor;

use calamine::{DataRef, Reader, Xlsx};
use gateway_core::measures::Catalogue;
use gateway_store::cases::Case;
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use serde::Serialize;
use utoipa::ToSchema;

/// Most cases in one cases workbook, and most answered rows taken from one upload.
pub const MAX_ROWS: usize = 5_000;
/// Largest upload of a cases workbook: 5,000 filled rows take well under 2 MiB.
pub const MAX_UPLOAD_BYTES: usize = 8 << 20;
/// Rows read from an upload (answered or not) and columns kept, whatever the sheet claims.
const MAX_SHEET_ROWS: u32 = 2 * MAX_ROWS as u32;
const MAX_COLUMNS: u32 = 64;
/// Longest cell taken from an upload (characters); longer ones are cut before any use.
const MAX_CELL_CHARS: usize = 600;
/// The sheet of the cases workbook.
pub const CASES_SHEET: &str = "案件答复";
/// Its columns: what the gateway fills in, then what the department answers.
pub const CASE_COLUMNS: [&str; 10] = [
    "案件编号",
    "措施编号",
    "措施名称",
    "主体名称",
    "主体代码",
    "名单类型",
    "发起时间",
    "响应期限",
    "反馈期限",
    "当前状态",
];
pub const ANSWER_COLUMNS: [&str; 8] =
    ["答复", "不适用理由", "实施日期", "执行内容", "成效", "文书号", "附件SHA-256", "核查编号"];
/// What the 答复 column takes, and the answer each means.
pub const ANSWERS: [(&str, &str); 4] =
    [("予以实施", "accepted"), ("不适用", "not_applicable"), ("已实施", "executed"), ("已解除", "lifted")];

fn state_zh(state: &str) -> &str {
    match state {
        "opened" => "待响应",
        "accepted" => "已响应待反馈",
        "not_applicable" => "不适用",
        "executed" => "已反馈",
        "lifting" => "待解除",
        "lifted" => "已解除",
        other => other,
    }
}

fn list_zh(list_type: &str) -> &str {
    match list_type {
        "black" => "黑名单",
        "red" => "红名单",
        "watch" => "重点关注名单",
        other => other,
    }
}

/// A natural person's subject key is a hash: the code column shows nothing for it.
fn subject_code(c: &Case) -> &str {
    if c.case.subject_key.len() == 18 { &c.case.subject_key } else { "" }
}

fn title<'a>(catalogue: Option<&'a Catalogue>, c: &Case) -> &'a str {
    catalogue.and_then(|cat| cat.measure(&c.case.measure_id)).map_or("", |m| m.title.as_str())
}

fn case_cells(ws: &mut Worksheet, row: u32, c: &Case, catalogue: Option<&Catalogue>) -> Result<(), XlsxError> {
    let cells = [
        c.case.case_id.as_str(),
        c.case.measure_id.as_str(),
        title(catalogue, c),
        c.case.subject_name.as_str(),
        subject_code(c),
        list_zh(&c.case.list_type),
        c.case.opened_at.as_str(),
        c.case.response_due.as_deref().unwrap_or(""),
        c.case.feedback_due.as_deref().unwrap_or(""),
        state_zh(&c.state),
    ];
    for (col, text) in cells.into_iter().enumerate() {
        ws.write_string(row, col as u16, text)?;
    }
    Ok(())
}

/// The cases workbook of a department: one row per case, answer columns empty.
pub fn cases_workbook(cases: &[Case], catalogue: Option<&Catalogue>) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let ws = book.add_worksheet();
    ws.set_name(CASES_SHEET)?;
    for (col, h) in CASE_COLUMNS.iter().chain(&ANSWER_COLUMNS).enumerate() {
        ws.write_string_with_format(0, col as u16, *h, &bold)?;
    }
    for (i, c) in cases.iter().enumerate() {
        case_cells(ws, i as u32 + 1, c, catalogue)?;
    }
    ws.set_column_width(0, 38)?;
    ws.set_column_width(2, 30)?;
    ws.set_column_width(3, 30)?;
    let guide = book.add_worksheet();
    guide.set_name("填报说明")?;
    let lines = [
        "在“答复”列填写：予以实施、不适用（并填写不适用理由）、已实施（并填写实施日期、执行内容，须附证明的措施填写文书号或附件SHA-256）、已解除（确认已解除措施）。",
        "“答复”列为空的行不处理。实施日期格式为 YYYY-MM-DD。不要修改案件编号。",
        "Answer column: 予以实施 (accepted), 不适用 (not applicable, with a reason), 已实施 (executed: date, action, and evidence where the measure needs it), 已解除 (lifting acknowledged). Rows without an answer are skipped.",
    ];
    for (i, l) in lines.iter().enumerate() {
        guide.write_string(i as u32, 0, *l)?;
    }
    book.save_to_buffer()
}

/// The 督办清单: overdue cases with what is overdue and since when.
pub fn follow_up_list(cases: &[Case], catalogue: Option<&Catalogue>, today: &str) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let ws = book.add_worksheet();
    ws.set_name("督办清单")?;
    ws.write_string_with_format(0, 0, format!("联合奖惩督办清单 · 截至 {today} · 共 {} 件", cases.len()), &bold)?;
    let head = ["实施部门", "逾期环节", "期限"];
    for (col, h) in head.iter().chain(&CASE_COLUMNS).enumerate() {
        ws.write_string_with_format(1, col as u16, *h, &bold)?;
    }
    for (i, c) in cases.iter().enumerate() {
        let row = i as u32 + 2;
        let (stage, due) = if c.state == "opened" {
            ("响应", c.case.response_due.as_deref())
        } else {
            ("反馈", c.case.feedback_due.as_deref())
        };
        ws.write_string(row, 0, &c.case.department_uscc)?;
        ws.write_string(row, 1, stage)?;
        ws.write_string(row, 2, due.unwrap_or(""))?;
        // The case columns, shifted right by the three above.
        let mut cells = Vec::new();
        cells.push(c.case.case_id.as_str());
        cells.extend([c.case.measure_id.as_str(), title(catalogue, c), c.case.subject_name.as_str(), subject_code(c)]);
        cells.extend([list_zh(&c.case.list_type), c.case.opened_at.as_str()]);
        cells.extend([c.case.response_due.as_deref().unwrap_or(""), c.case.feedback_due.as_deref().unwrap_or("")]);
        cells.push(state_zh(&c.state));
        for (col, text) in cells.into_iter().enumerate() {
            ws.write_string(row, col as u16 + 3, text)?;
        }
    }
    ws.set_column_width(0, 22)?;
    ws.set_column_width(3, 38)?;
    ws.set_column_width(6, 30)?;
    book.save_to_buffer()
}

/// One answered row of an uploaded cases workbook: its row number (as Excel shows it) and its
/// cells by column heading.
#[derive(Debug, Clone)]
pub struct AnswerRow {
    pub row: u32,
    pub cells: BTreeMap<String, String>,
}

/// The rows of an uploaded cases workbook that carry an answer, at most `max_rows` of them.
/// The sheet is read cell by cell (never as a grid its dimensions could make huge), and rows,
/// columns and cell lengths are bounded while reading. Errors name what is wrong with the
/// workbook itself.
pub fn answer_rows(bytes: &[u8], max_rows: usize) -> Result<Vec<AnswerRow>, String> {
    crate::adapters::unzip::check_bytes(bytes, "the workbook").map_err(|e| format!("{e:#}"))?;
    let mut book = Xlsx::new(Cursor::new(bytes)).map_err(|e| format!("not a readable .xlsx workbook: {e}"))?;
    let mut reader = book
        .worksheet_cells_reader(CASES_SHEET)
        .map_err(|_| format!("the workbook has no sheet {CASES_SHEET} (download it from GET /api/v1/cases.xlsx)"))?;
    let mut by_row: Vec<(u32, Vec<(u32, String)>)> = Vec::new();
    while let Some(cell) = reader.next_cell().map_err(|e| format!("sheet {CASES_SHEET} cannot be read: {e}"))? {
        let (r, c) = cell.get_position();
        if r >= MAX_SHEET_ROWS {
            return Err(format!("sheet {CASES_SHEET} has more than {MAX_SHEET_ROWS} rows; split the workbook"));
        }
        let text = cell_text(cell.get_value());
        if c >= MAX_COLUMNS || text.is_empty() {
            continue;
        }
        match by_row.last_mut() {
            Some((row, cells)) if *row == r => cells.push((c, text)),
            _ => by_row.push((r, vec![(c, text)])),
        }
    }
    let mut rows = by_row.into_iter();
    let (_, head) = rows.next().ok_or_else(|| format!("sheet {CASES_SHEET} is empty"))?;
    let header: BTreeMap<u32, String> = head.into_iter().collect();
    for needed in ["案件编号", "答复"] {
        if !header.values().any(|h| h == needed) {
            return Err(format!("sheet {CASES_SHEET} has no column {needed}"));
        }
    }
    let mut out = Vec::new();
    for (r, cells) in rows {
        let cells: BTreeMap<String, String> =
            cells.into_iter().filter_map(|(c, v)| header.get(&c).map(|h| (h.clone(), v))).collect();
        if !cells.contains_key("答复") {
            continue;
        }
        if out.len() == max_rows {
            return Err(format!("more than {max_rows} answered rows; split the workbook"));
        }
        // Excel numbers rows from 1.
        out.push(AnswerRow { row: r + 1, cells });
    }
    Ok(out)
}

/// A cell as trimmed text, cut to `MAX_CELL_CHARS`; dates as `YYYY-MM-DD`.
fn cell_text(c: &DataRef<'_>) -> String {
    let text = match c {
        // A date typed into 实施日期 arrives as an Excel date.
        DataRef::DateTime(d) => crate::adapters::xlsx::excel_date(d.as_f64()).unwrap_or_default(),
        DataRef::DateTimeIso(s) => s.chars().take(10).collect(),
        DataRef::String(s) => s.trim().to_owned(),
        DataRef::SharedString(s) => s.trim().to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(_) | DataRef::Error(_) | DataRef::DurationIso(_) | DataRef::Empty => String::new(),
    };
    if text.chars().count() > MAX_CELL_CHARS { text.chars().take(MAX_CELL_CHARS).collect() } else { text }
}

/// What became of one uploaded row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowOutcome {
    /// The row as Excel numbers it.
    pub row: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// `stored` or `rejected`.
    pub outcome: &'static str,
    /// Why a row was refused (the column it names, the rule, in Chinese and English).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorDetail>,
}

/// Applies the answered rows of a department's workbook, each as its JSON answer would be:
/// the good rows are stored, each bad one is refused with its reason, and nothing else.
pub async fn apply(
    ingest: &crate::ingest::Ingest,
    catalogue: Option<&Catalogue>,
    principal: &crate::auth::Principal,
    rows: Vec<AnswerRow>,
    now: time::OffsetDateTime,
) -> Vec<RowOutcome> {
    use super::answers::{self, FeedbackBody, ResponseBody};
    let mut out = Vec::with_capacity(rows.len());
    for AnswerRow { row, cells } in rows {
        let get = |k: &str| cells.get(k).cloned();
        // A case id is a UUID: anything longer is refused and not echoed back.
        let case_id = get("案件编号").filter(|id| id.len() <= 64);
        let result = async {
            let case_id = case_id.as_deref().ok_or_else(|| {
                crate::api::ServiceError::bad_request(
                    "cases.case_id",
                    "案件编号 为空或过长（应为下载的案件答复表中的编号）",
                    "案件编号 (case id) is empty or too long (keep the id of the downloaded workbook)",
                )
                .with_pointer("/案件编号")
            })?;
            let said: String = get("答复").unwrap_or_default().chars().take(20).collect();
            let answer = match ANSWERS.iter().find(|(zh, _)| *zh == said).map(|(_, a)| *a) {
                Some(a @ ("accepted" | "not_applicable")) => {
                    answers::response(&ResponseBody { answer: a.into(), reason: get("不适用理由") })?
                }
                Some("executed") => {
                    let case = answers::own_case(ingest, principal, case_id).await?;
                    let body = FeedbackBody {
                        executed_on: get("实施日期").unwrap_or_default(),
                        action_taken: get("执行内容").unwrap_or_default(),
                        effect: get("成效"),
                        document_no: get("文书号"),
                        attachment_sha256: get("附件SHA-256"),
                        check_id: get("核查编号"),
                    };
                    answers::feedback(&body, &case, catalogue, gateway_core::date::today_in_china(now))?
                }
                Some("lifted") => gateway_store::cases::Answer::LiftAcknowledged,
                _ => {
                    let choices: Vec<&str> = ANSWERS.iter().map(|(zh, _)| *zh).collect();
                    return Err(crate::api::ServiceError::bad_request(
                        "cases.answer",
                        format!("答复 {said:?} 无效，可选：{}", choices.join("、")),
                        format!("答复 (answer) {said:?} is not one of {}", choices.join(", ")),
                    )
                    .with_pointer("/答复"));
                }
            };
            answers::give(ingest, principal, case_id, &answer, now).await
        }
        .await;
        out.push(match result {
            Ok(_) => RowOutcome { row, case_id, outcome: "stored", error: None },
            Err(e) => {
                let mut error = e.body.error;
                // Name the column, not the JSON field it stands for.
                error.pointer = error.pointer.map(|p| column_of(&p));
                RowOutcome { row, case_id, outcome: "rejected", error: Some(error) }
            }
        });
    }
    out
}

/// The workbook column a JSON pointer of an answer body stands for.
fn column_of(pointer: &str) -> String {
    let column = match pointer {
        "/answer" => "答复",
        "/reason" => "不适用理由",
        "/executed_on" => "实施日期",
        "/action_taken" => "执行内容",
        "/effect" => "成效",
        "/document_no" => "文书号",
        "/attachment_sha256" => "附件SHA-256",
        "/check_id" => "核查编号",
        other => return other.to_owned(),
    };
    format!("/{column}")
}
