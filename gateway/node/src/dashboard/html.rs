//! The dashboard's HTML: one layout, escaping, and inline SVG charts. Everything is served by
//! the gateway itself — no scripts, fonts or styles from elsewhere (政务外网 has no internet).

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The pages of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Sla,
    Reporting,
    Quality,
    DeadLetters,
    Evaluations,
    Cases,
    None,
}

const NAV: [(Nav, &str, &str); 7] = [
    (Nav::Overview, "/dashboard", "概览 Overview"),
    (Nav::Sla, "/dashboard/sla", "公示时限 SLA"),
    (Nav::Reporting, "/dashboard/reporting", "月报 Reporting"),
    (Nav::Quality, "/dashboard/quality", "数据质量 Quality"),
    (Nav::DeadLetters, "/dashboard/dead-letters", "死信 Dead letters"),
    (Nav::Evaluations, "/dashboard/evaluations", "评价互认 Evaluations"),
    (Nav::Cases, "/dashboard/cases", "联合奖惩 Joint cases"),
];

const STYLE: &str = "body{font-family:'PingFang SC','Microsoft YaHei','Noto Sans CJK SC',sans-serif;margin:0;color:#1f2933;background:#f5f7fa}\
header{background:#8b1a1a;color:#fff;padding:10px 24px;display:flex;align-items:center;gap:24px}\
header h1{font-size:18px;margin:0}header nav a{color:#fde8e8;margin-right:16px;text-decoration:none}\
header nav a.on{color:#fff;font-weight:bold;border-bottom:2px solid #fff}header form{margin-left:auto}\
main{padding:16px 24px}footer{padding:0 24px 16px}h2{font-size:17px;margin:20px 0 8px}table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:12px}\
th,td{border:1px solid #d9e2ec;padding:5px 8px;font-size:13px;text-align:left}th{background:#eef2f7}\
.bad{color:#b42318;font-weight:bold}.warn{color:#b54708;font-weight:bold}.ok{color:#027a48}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #d9e2ec;padding:10px 14px;min-width:150px}\
.card b{display:block;font-size:22px}.flash{background:#ecfdf3;border:1px solid #6ce9a6;padding:8px 12px}\
.error{background:#fef3f2;border:1px solid #fda29b;padding:8px 12px}form.inline{display:inline}\
button{cursor:pointer}input,select{font-size:13px;padding:3px}.muted{color:#7b8794;font-size:12px}svg{background:#fff;border:1px solid #d9e2ec}";

/// A whole page. `form_token` goes into the logout form.
pub fn page(title: &str, nav: Nav, operator: Option<(&str, &str)>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{} · 信用信息交换网关</title>\
         <style>{STYLE}</style></head><body><header><h1>信用信息交换网关 Credit Gateway</h1>",
        esc(title)
    );
    if let Some((name, token)) = operator {
        out.push_str("<nav>");
        for (n, href, label) in NAV {
            let class = if n == nav { " class=\"on\"" } else { "" };
            let _ = write!(out, "<a href=\"{href}\"{class}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><form method=\"post\" action=\"/dashboard/logout\"><span>{}</span> \
             <input type=\"hidden\" name=\"token\" value=\"{}\"><button>退出 Log out</button></form>",
            esc(name),
            esc(token)
        );
    }
    let _ = write!(
        out,
        "</header><main><h2>{}</h2>{body}</main>\
         <footer class=\"muted\">时间均为北京时间（UTC+8）· All times are Beijing time (UTC+8)</footer></body></html>",
        esc(title)
    );
    out
}

/// A stored UTC timestamp (RFC 3339) as Beijing time, the time every page shows: the dates on
/// these pages (today, deadlines, periods) are Beijing dates, so times must agree with them.
/// Text that is not a timestamp is shown as it is.
pub fn beijing(ts: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(ts, &Rfc3339) else { return esc(ts) };
    let t = t.to_offset(gateway_core::date::CHINA);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A percentage, red when below `target`.
pub fn ratio_cell(r: Option<f64>, target: f64) -> String {
    match r {
        None => "<td class=\"muted\">—</td>".to_owned(),
        Some(r) if r < target => format!("<td class=\"bad\">{:.1}%</td>", r * 100.0),
        Some(r) => format!("<td class=\"ok\">{:.1}%</td>", r * 100.0),
    }
}

/// Stacked daily bars: accepted (green) under rejected (red), one per day.
pub fn bars_chart(days: &[(String, i64, i64)]) -> String {
    let (w, h, pad) = (720.0, 180.0, 24.0);
    let max = days.iter().map(|(_, a, r)| a + r).max().unwrap_or(0).max(1) as f64;
    let step = (w - 2.0 * pad) / days.len().max(1) as f64;
    let mut out = format!(
        "<svg id=\"intake-chart\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"每日入库与退回 accepted vs rejected per day\">"
    );
    for (i, (day, accepted, rejected)) in days.iter().enumerate() {
        let x = pad + i as f64 * step;
        let ha = (*accepted as f64 / max) * (h - 2.0 * pad);
        let hr = (*rejected as f64 / max) * (h - 2.0 * pad);
        let base = h - pad;
        let _ = write!(
            out,
            "<g><title>{day}: 入库 {accepted} · 退回 {rejected}</title>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ha:.1}\" fill=\"#12b76a\"/>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hr:.1}\" fill=\"#f04438\"/></g>",
            base - ha,
            (step - 2.0).max(1.0),
            base - ha - hr,
            (step - 2.0).max(1.0),
        );
    }
    let first = days.first().map_or("", |d| d.0.as_str());
    let last = days.last().map_or("", |d| d.0.as_str());
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">{first}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{last}</text>\
         <text x=\"{pad}\" y=\"14\" font-size=\"11\">最多 max {max}/日 · <tspan fill=\"#12b76a\">■ 入库 accepted</tspan> <tspan fill=\"#f04438\">■ 退回 rejected</tspan></text></svg>",
        h - 6.0,
        w - pad,
        h - 6.0,
    );
    out
}

/// One line per series over time (e.g. each destination's backlog).
pub fn lines_chart(id: &str, label: &str, series: &[(String, Vec<f64>)]) -> String {
    const COLOURS: [&str; 6] = ["#2e90fa", "#f79009", "#7a5af8", "#12b76a", "#f04438", "#667085"];
    let (w, h, pad) = (720.0, 180.0, 24.0);
    let max = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(1.0_f64, f64::max);
    let mut out =
        format!("<svg id=\"{}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">", esc(id), esc(label));
    let mut legend = String::new();
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let step = (w - 2.0 * pad) / (values.len().max(2) - 1) as f64;
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(j, v)| format!("{:.1},{:.1}", pad + j as f64 * step, h - pad - v / max * (h - 2.0 * pad)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        let _ = write!(legend, " <tspan fill=\"{colour}\">■ {}</tspan>", esc(name));
    }
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"14\" font-size=\"11\">{} · 最多 max {max:.0}{legend}</text></svg>",
        esc(label)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn shows_stored_times_in_beijing_time() {
        // Half past four in the afternoon UTC is half past midnight the next day in Beijing.
        assert_eq!(beijing("2026-12-07T16:30:05.123Z"), "2026-12-08 00:30:05");
        assert_eq!(beijing("2026-12-07T08:00:00+08:00"), "2026-12-07 08:00:00");
        assert_eq!(beijing("<not a time>"), "&lt;not a time&gt;");
    }
}
