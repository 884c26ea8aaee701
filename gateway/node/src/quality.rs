//! Data quality per department and month (design §8): 有效入库率 (accepted ÷ submitted), 完整率
//! (fields filled ÷ expected), 及时率 (published by the deadline ÷ published), 迟报 (submitted
//! after the deadline had passed) and the rejection reasons ranked — read from the counters the
//! store keeps, and exported as CSV and XLSX for the monthly bulletin.

use std::collections::BTreeMap;

use gateway_core::ident::normalize_code;
use gateway_core::quality::ratio;
use gateway_core::reporting::Period;
use gateway_store::{MonthCounts, StoreError};
use serde::Serialize;

use crate::config::ReportingConfig;

/// A rejection rule and how often it struck.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReasonCount {
    pub rule: String,
    pub count: i64,
}

/// One department's month.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DepartmentQuality {
    /// Empty for submissions that named no 数据来源单位.
    pub department_uscc: String,
    pub department_name: String,
    /// Listed in `[reporting] departments`.
    pub registered: bool,
    pub submitted: i64,
    pub accepted: i64,
    pub rejected: i64,
    /// 有效入库率; absent when nothing was submitted.
    pub valid_rate: Option<f64>,
    /// 完整率.
    pub completeness: Option<f64>,
    /// 及时率 at the publication sink.
    pub timeliness: Option<f64>,
    pub published: i64,
    pub published_on_time: i64,
    /// 迟报: records submitted after their publicity deadline had passed.
    pub late_reports: i64,
    /// Every ratio that could be computed is at or above the target.
    pub meets_target: bool,
    /// This department's rejection reasons, most frequent first.
    pub reasons: Vec<ReasonCount>,
}

/// `GET /api/v1/quality`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QualityView {
    /// 所属期 `YYYY-MM`: the month submissions arrived (Beijing time).
    pub period: String,
    pub target: f64,
    pub departments: Vec<DepartmentQuality>,
    /// All rejection reasons of the month, most frequent first.
    pub reasons: Vec<ReasonCount>,
}

/// The quality of `period` for every department that submitted or is registered.
pub async fn view(
    store: &gateway_store::Store,
    cfg: &ReportingConfig,
    period: Period,
) -> Result<QualityView, StoreError> {
    let period = period.to_string();
    let month = store.quality_month(&period).await?;
    let target = cfg.quality_target;
    let registered: BTreeMap<String, &str> =
        cfg.departments.iter().map(|d| (normalize_code(&d.uscc), d.name.as_str())).collect();
    let mut counts: BTreeMap<String, MonthCounts> = month.departments;
    for (uscc, name) in &registered {
        let c = counts.entry(uscc.clone()).or_default();
        (*name).clone_into(&mut c.department_name);
    }
    let mut reasons_of: BTreeMap<&str, Vec<ReasonCount>> = BTreeMap::new();
    let mut all: BTreeMap<&str, i64> = BTreeMap::new();
    for (dept, rule, n) in &month.reasons {
        reasons_of.entry(dept.as_str()).or_default().push(ReasonCount { rule: rule.clone(), count: *n });
        *all.entry(rule.as_str()).or_default() += n;
    }
    let mut departments: Vec<DepartmentQuality> = counts
        .iter()
        .map(|(uscc, c)| {
            let valid_rate = ratio(c.accepted, c.submitted);
            let completeness = ratio(c.fields_filled, c.fields_expected);
            let timeliness = ratio(c.published_on_time, c.published);
            DepartmentQuality {
                department_uscc: uscc.clone(),
                department_name: c.department_name.clone(),
                registered: registered.contains_key(uscc),
                submitted: c.submitted,
                accepted: c.accepted,
                rejected: c.submitted - c.accepted,
                valid_rate,
                completeness,
                timeliness,
                published: c.published,
                published_on_time: c.published_on_time,
                late_reports: c.reported_late,
                meets_target: [valid_rate, completeness, timeliness].iter().flatten().all(|r| *r >= target),
                reasons: reasons_of.remove(uscc.as_str()).unwrap_or_default(),
            }
        })
        .collect();
    // Those furthest below target first: the people reading this act on the top rows.
    departments.sort_by(|a, b| {
        let worst = |d: &DepartmentQuality| {
            [d.valid_rate, d.completeness, d.timeliness].iter().flatten().fold(f64::INFINITY, |m, r| m.min(*r))
        };
        worst(a).total_cmp(&worst(b)).then_with(|| a.department_uscc.cmp(&b.department_uscc))
    });
    let mut reasons: Vec<ReasonCount> =
        all.into_iter().map(|(rule, count)| ReasonCount { rule: rule.to_owned(), count }).collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
    Ok(QualityView { period, target, departments, reasons })
}

/// Column headings of the exports, Chinese first.
const HEADINGS: [&str; 13] = [
    "数据来源单位 Department",
    "统一社会信用代码 USCC",
    "报送 Submitted",
    "入库 Accepted",
    "退回 Rejected",
    "有效入库率 Valid rate",
    "完整率 Completeness",
    "公示 Published",
    "按时公示 On time",
    "及时率 Timeliness",
    "迟报 Late reports",
    "达标 Meets target",
    "主要退回原因 Top rejection reasons",
];

fn cells(d: &DepartmentQuality) -> [String; 13] {
    let pct = |r: Option<f64>| r.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_default();
    let reasons: Vec<String> = d.reasons.iter().take(3).map(|r| format!("{} ×{}", r.rule, r.count)).collect();
    [
        d.department_name.clone(),
        d.department_uscc.clone(),
        d.submitted.to_string(),
        d.accepted.to_string(),
        d.rejected.to_string(),
        pct(d.valid_rate),
        pct(d.completeness),
        d.published.to_string(),
        d.published_on_time.to_string(),
        pct(d.timeliness),
        d.late_reports.to_string(),
        if d.meets_target { "是 yes" } else { "否 no" }.to_owned(),
        reasons.join("; "),
    ]
}

/// The view as CSV (UTF-8 with a byte-order mark, so that Excel reads the Chinese). A cell
/// that a spreadsheet would take for a formula is quoted with a leading `'`.
pub fn to_csv(v: &QualityView) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    out.write_record(HEADINGS)?;
    for d in &v.departments {
        out.write_record(
            cells(d).map(|c| if c.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{c}") } else { c }),
        )?;
    }
    out.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The view as an XLSX workbook: a sheet of departments (ratios below target in red), a sheet
/// of rejection reasons ranked, and, when given, a sheet of the month's joint
/// reward-and-punishment loop per implementing department (联合奖惩).
pub fn to_xlsx(
    v: &QualityView,
    joint: Option<&[crate::joint::LoopRow]>,
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Color, Format, Workbook};
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let percent = Format::new().set_num_format("0.0%");
    let below = Format::new().set_num_format("0.0%").set_font_color(Color::Red).set_bold();
    let ws = book.add_worksheet();
    ws.set_name("数据质量")?;
    ws.write_string_with_format(0, 0, format!("所属期 {} · 目标 target {:.0}%", v.period, v.target * 100.0), &bold)?;
    for (c, h) in HEADINGS.iter().enumerate() {
        ws.write_string_with_format(1, c as u16, *h, &bold)?;
    }
    for (i, d) in v.departments.iter().enumerate() {
        let row = i as u32 + 2;
        let text = cells(d);
        ws.write_string(row, 0, &text[0])?;
        ws.write_string(row, 1, &text[1])?;
        for (col, n) in [(2, d.submitted), (3, d.accepted), (4, d.rejected), (7, d.published), (8, d.published_on_time)]
        {
            ws.write_number(row, col, n as f64)?;
        }
        ws.write_number(row, 10, d.late_reports as f64)?;
        for (col, r) in [(5, d.valid_rate), (6, d.completeness), (9, d.timeliness)] {
            if let Some(r) = r {
                ws.write_number_with_format(row, col, r, if r < v.target { &below } else { &percent })?;
            }
        }
        ws.write_string(row, 11, &text[11])?;
        ws.write_string(row, 12, &text[12])?;
    }
    ws.set_column_width(0, 28)?;
    ws.set_column_width(1, 22)?;
    ws.set_column_width(12, 40)?;
    let ws = book.add_worksheet();
    ws.set_name("退回原因")?;
    ws.write_string_with_format(0, 0, "规则 Rule", &bold)?;
    ws.write_string_with_format(0, 1, "次数 Count", &bold)?;
    for (i, r) in v.reasons.iter().enumerate() {
        ws.write_string(i as u32 + 1, 0, &r.rule)?;
        ws.write_number(i as u32 + 1, 1, r.count as f64)?;
    }
    ws.set_column_width(0, 36)?;
    if let Some(rows) = joint {
        let ws = book.add_worksheet();
        ws.set_name("联合奖惩")?;
        let head = [
            "实施部门 Department",
            "发起 Opened",
            "响应 Responded",
            "响应率 Response rate",
            "不适用 Not applicable",
            "反馈 Fed back",
            "反馈率 Feedback rate",
            "响应逾期 Late response",
            "反馈逾期 Late feedback",
            "待解除 Lifting",
            "已解除 Lifted",
        ];
        for (c, h) in head.iter().enumerate() {
            ws.write_string_with_format(0, c as u16, *h, &bold)?;
        }
        for (i, r) in rows.iter().enumerate() {
            let (row, c) = (i as u32 + 1, &r.counts);
            ws.write_string(row, 0, &c.department_uscc)?;
            for (col, n) in [(1, c.opened), (2, c.responded), (4, c.not_applicable), (5, c.fed_back)]
                .into_iter()
                .chain([(7, c.response_overdue), (8, c.feedback_overdue), (9, c.lifting), (10, c.lifted)])
            {
                ws.write_number(row, col, n as f64)?;
            }
            for (col, rate) in [(3, r.response_rate), (6, r.feedback_rate)] {
                if let Some(rate) = rate {
                    ws.write_number_with_format(row, col, rate, &percent)?;
                }
            }
        }
        ws.set_column_width(0, 24)?;
    }
    book.save_to_buffer()
}
