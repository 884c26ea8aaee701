//! One dataset's translation between platform rows and canonical records.
//!
//! Ingest: platform row → (platform schema) → canonical record (then the usual record checks).
//! Deliver: canonical record → platform row → (platform schema) → out. Errors about a row point
//! at its column (`/CF_WSH`); errors about a canonical record point at its field.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use time::{Date, Month};

use super::manifest::{DatasetSpec, FieldKind, FieldMap, Manifest, Way};
use super::{AdapterError, CodeTables};
use crate::canonical::{Sha256Digest, pointer_segment};
use crate::date::{format_date, parse_date};
use crate::record::{FieldError, RecordType};

/// A platform row: column → value.
pub type Row = Map<String, Value>;

/// A code table both ways: (canonical → platform, platform → canonical).
type TwoWayTable = (BTreeMap<String, String>, BTreeMap<String, String>);

/// A compiled dataset of an adapter.
#[derive(Debug)]
pub struct Dataset {
    pub spec: DatasetSpec,
    pub record_type: RecordType,
    pub canonical_schema: Value,
    pub platform_schema: Value,
    platform_validator: jsonschema::Validator,
    date_out: DatePattern,
    date_in: Vec<DatePattern>,
    separator: String,
    /// Only the tables this dataset uses: name → (canonical → platform, platform → canonical).
    tables: BTreeMap<String, TwoWayTable>,
}

impl Dataset {
    pub(super) fn compile(
        manifest: &Manifest,
        spec: &DatasetSpec,
        read: &impl Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Self, AdapterError> {
        let fail = |message: String| AdapterError::Mapping { dataset: spec.name.clone(), message };
        let record_type: RecordType = spec
            .record_type
            .parse()
            .map_err(|()| fail(format!("record_type {:?} is not a canonical record type", spec.record_type)))?;
        let canonical_schema: Value =
            serde_json::from_str(record_type.schema_text()).map_err(|e| fail(e.to_string()))?;
        let bytes = read(&spec.schema.path).map_err(|message| AdapterError::File {
            dataset: spec.name.clone(),
            path: spec.schema.path.clone(),
            message,
        })?;
        let actual = Sha256Digest::of(&bytes);
        if !actual.is_hex_of(&spec.schema.sha256) {
            return Err(AdapterError::SchemaHash {
                dataset: spec.name.clone(),
                path: spec.schema.path.clone(),
                actual: actual.to_hex(),
                pinned: spec.schema.sha256.clone(),
            });
        }
        let platform_schema: Value =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("{} is not JSON: {e}", spec.schema.path)))?;
        let platform_validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&platform_schema)
            .map_err(|e| fail(format!("{} is not a usable JSON Schema: {e}", spec.schema.path)))?;
        let date_out = DatePattern::parse(spec.date.as_deref().unwrap_or(&manifest.formats.date)).map_err(fail)?;
        let date_in = manifest
            .formats
            .date_inputs
            .iter()
            .map(|p| DatePattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let tables =
            check_fields(manifest, spec, &canonical_schema, &platform_schema, &manifest.code_tables).map_err(fail)?;
        Ok(Self {
            spec: spec.clone(),
            record_type,
            canonical_schema,
            platform_schema,
            platform_validator,
            date_out,
            date_in,
            separator: manifest.formats.list_separator.clone(),
            tables,
        })
    }

    /// Checks a platform row against the platform's schema. Pointers name the column.
    pub fn check_row(&self, row: &Value) -> Vec<FieldError> {
        self.platform_validator
            .iter_errors(row)
            .map(|e| crate::record::schema_error(&self.platform_schema, &e))
            .collect()
    }

    /// A row arriving from the platform: checked against the platform schema, then translated
    /// (the record rules come next, in the caller).
    pub fn ingest(&self, row: Row) -> Result<Value, Vec<FieldError>> {
        let value = Value::Object(row);
        let errors = self.check_row(&value);
        if !errors.is_empty() {
            return Err(errors);
        }
        match &value {
            Value::Object(row) => self.to_canonical(row),
            _ => Ok(Value::Null),
        }
    }

    /// A row whose cells arrived as text (CSV files, database columns read as text): cells
    /// become numbers where the platform schema wants a number and they parse as one.
    pub fn row_from_text(&self, cells: impl IntoIterator<Item = (String, String)>) -> Row {
        cells
            .into_iter()
            .map(|(column, text)| {
                let ty = &self.platform_schema["properties"][&column]["type"];
                let numeric = matches!(ty.as_str(), Some("number" | "integer"));
                let value = match serde_json::from_str::<serde_json::Number>(text.trim()) {
                    Ok(n) if numeric => Value::Number(n),
                    _ => Value::String(text),
                };
                (column, value)
            })
            .collect()
    }

    /// Translates a platform row into a canonical record (not yet checked by the record rules).
    pub fn to_canonical(&self, row: &Row) -> Result<Value, Vec<FieldError>> {
        let mut out = Map::new();
        out.insert("record_type".into(), Value::String(self.record_type.as_str().into()));
        let mut errors = Vec::new();
        for map in self.spec.fields.iter().filter(|m| m.only != Some(Way::Deliver)) {
            let Some(cell) = row.get(&map.column).filter(|v| !is_blank(v)) else { continue };
            match self.cell_to_field(map, cell) {
                Ok(v) => {
                    out.insert(map.field.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        for (field, value) in &self.spec.constants {
            out.entry(field.clone()).or_insert_with(|| value.clone());
        }
        if errors.is_empty() { Ok(Value::Object(out)) } else { Err(errors) }
    }

    /// Translates a canonical record into a platform row (not yet checked by the platform schema).
    pub fn to_platform(&self, record: &Value) -> Result<Row, Vec<FieldError>> {
        let mut row = Row::new();
        let mut errors = Vec::new();
        for map in self.spec.fields.iter().filter(|m| m.only != Some(Way::Ingest)) {
            let Some(value) = record.get(&map.field).filter(|v| !v.is_null()) else { continue };
            match self.field_to_cell(map, value) {
                Ok(v) => {
                    row.insert(map.column.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(row) } else { Err(errors) }
    }

    /// The platform column that carries a canonical field, for messages in the platform's terms.
    pub fn column_of(&self, field: &str) -> Option<&str> {
        self.spec.fields.iter().find(|m| m.field == field && m.only != Some(Way::Deliver)).map(|m| m.column.as_str())
    }

    /// Columns in the order the manifest lists them (a workbook's or CSV file's header).
    pub fn columns(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.spec.fields.iter().map(|m| m.column.as_str()).filter(|c| seen.insert(*c)).collect()
    }

    fn cell_to_field(&self, map: &FieldMap, cell: &Value) -> Result<Value, FieldError> {
        let pointer = format!("/{}", pointer_segment(&map.column));
        let text = cell_text(cell);
        let decode = |s: &str| self.decode(map, s, &pointer);
        match map.kind {
            FieldKind::Text => decode(&text).map(Value::String),
            FieldKind::Decimal | FieldKind::Number => Ok(Value::String(text)),
            FieldKind::Integer => text.parse::<i64>().map(Value::from).map_err(|_| {
                FieldError::new(
                    pointer.clone(),
                    "adapter.integer",
                    format!("列 {} 的值 {text:?} 不是整数", map.column),
                    format!("column {} holds {text:?}, not an integer", map.column),
                )
            }),
            FieldKind::Date => self.parse_date(&text).map(|d| Value::String(format_date(d))).ok_or_else(|| {
                FieldError::new(
                    pointer.clone(),
                    "adapter.date_format",
                    format!("列 {} 的日期 {text:?} 无法识别，应为 {}", map.column, self.date_out.text),
                    format!("column {} holds {text:?}, not a date like {}", map.column, self.date_out.text),
                )
            }),
            FieldKind::List => {
                let items: Vec<&str> = match cell {
                    Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                    _ => split_list(&text, &self.separator),
                };
                items.into_iter().map(|s| decode(s).map(Value::String)).collect::<Result<Vec<_>, _>>().map(Value::Array)
            }
        }
    }

    fn field_to_cell(&self, map: &FieldMap, value: &Value) -> Result<Value, FieldError> {
        let pointer = format!("/{}", pointer_segment(&map.field));
        let wrong = |(zh, en): (&str, &str)| {
            FieldError::new(
                pointer.clone(),
                "adapter.field_type",
                format!("字段 {} 应为{zh}，无法写入列 {}", map.field, map.column),
                format!("field {} should be {en} to fill column {}", map.field, map.column),
            )
        };
        let encode = |s: &str| self.encode(map, s, &pointer);
        match map.kind {
            FieldKind::Text | FieldKind::Decimal => match value {
                Value::String(s) => encode(s).map(Value::String),
                other => encode(&other.to_string()).map(Value::String),
            },
            FieldKind::Number => {
                let s = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
                serde_json::from_str::<serde_json::Number>(&s)
                    .map(Value::Number)
                    .map_err(|_| wrong(("数字", "a number")))
            }
            FieldKind::Integer => value.as_i64().map(Value::from).ok_or_else(|| wrong(("整数", "an integer"))),
            FieldKind::Date => value
                .as_str()
                .and_then(parse_date)
                .map(|d| Value::String(self.date_out.format(d)))
                .ok_or_else(|| wrong(("日期", "a date"))),
            FieldKind::List => {
                let items = value.as_array().ok_or_else(|| wrong(("列表", "a list")))?;
                let parts = items
                    .iter()
                    .map(|v| v.as_str().ok_or_else(|| wrong(("文本列表", "a list of text"))).and_then(encode))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::String(parts.join(&self.separator)))
            }
        }
    }

    /// Platform value → canonical value through the column's code table, if it has one.
    fn decode(&self, map: &FieldMap, s: &str, pointer: &str) -> Result<String, FieldError> {
        let Some(name) = &map.code_table else { return Ok(s.to_owned()) };
        let (forward, backward) = &self.tables[name];
        backward.get(s).cloned().ok_or_else(|| {
            let allowed: Vec<&str> = forward.values().map(String::as_str).collect();
            FieldError::new(
                pointer,
                "adapter.code_unknown",
                format!("列 {} 的代码 {s:?} 不在代码表 {name} 中，可选：{}", map.column, allowed.join("、")),
                format!(
                    "column {} holds {s:?}, which code table {name} does not list ({})",
                    map.column,
                    allowed.join(", ")
                ),
            )
        })
    }

    /// Canonical value → platform value through the column's code table, if it has one.
    fn encode(&self, map: &FieldMap, s: &str, pointer: &str) -> Result<String, FieldError> {
        let Some(name) = &map.code_table else { return Ok(s.to_owned()) };
        self.tables[name].0.get(s).cloned().ok_or_else(|| {
            FieldError::new(
                pointer,
                "adapter.code_unmapped",
                format!("字段 {} 的值 {s:?} 在代码表 {name} 中没有平台代码", map.field),
                format!("code table {name} has no platform code for {s:?} (field {})", map.field),
            )
        })
    }

    fn parse_date(&self, s: &str) -> Option<Date> {
        std::iter::once(&self.date_out).chain(&self.date_in).find_map(|p| p.parse_text(s)).or_else(|| parse_date(s))
    }
}

/// The load-time checks of a dataset's mapping. Returns the code tables it uses.
fn check_fields(
    manifest: &Manifest,
    spec: &DatasetSpec,
    canonical: &Value,
    platform: &Value,
    code_tables: &CodeTables,
) -> Result<BTreeMap<String, TwoWayTable>, String> {
    let fields = canonical["properties"].as_object().cloned().unwrap_or_default();
    let columns = platform["properties"].as_object().cloned().unwrap_or_default();
    let mut tables = BTreeMap::new();
    let mut ingest_fields = BTreeSet::new();
    let mut deliver_columns = BTreeSet::new();
    for map in &spec.fields {
        let Some(field_schema) = fields.get(&map.field) else {
            return Err(format!("field {:?} is not a field of {}", map.field, spec.record_type));
        };
        if !columns.contains_key(&map.column) {
            return Err(format!("column {:?} is not in the platform schema {}", map.column, spec.schema.path));
        }
        if map.only != Some(Way::Deliver) && !ingest_fields.insert(map.field.as_str()) {
            return Err(format!("field {:?} is filled from two columns on ingest", map.field));
        }
        if map.only != Some(Way::Ingest) && !deliver_columns.insert(map.column.as_str()) {
            return Err(format!("column {:?} is written from two fields on delivery", map.column));
        }
        if let Some(name) = &map.code_table {
            if !matches!(map.kind, FieldKind::Text | FieldKind::List) {
                return Err(format!("column {:?}: code tables apply to text and list columns only", map.column));
            }
            let table = code_tables.get(name).ok_or_else(|| format!("code table {name:?} is not defined"))?;
            let allowed = field_schema.get("enum").or_else(|| field_schema["items"].get("enum"));
            if let Some(Value::Array(allowed)) = allowed {
                for key in table.keys() {
                    if !allowed.iter().any(|a| a.as_str() == Some(key)) {
                        return Err(format!("code table {name:?} maps {key:?}, which {} does not allow", map.field));
                    }
                }
            }
            let mut backward = BTreeMap::new();
            for (canonical_value, platform_value) in table {
                if backward.insert(platform_value.clone(), canonical_value.clone()).is_some() {
                    return Err(format!("code table {name:?} gives platform code {platform_value:?} twice"));
                }
            }
            tables.insert(name.clone(), (table.clone(), backward));
        }
    }
    for field in spec.constants.keys() {
        if !fields.contains_key(field) {
            return Err(format!("constant {field:?} is not a field of {}", spec.record_type));
        }
    }
    if manifest.platform.direction.ingests() {
        for required in canonical["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if required != "record_type" && !ingest_fields.contains(required) && !spec.constants.contains_key(required)
            {
                let title = fields[required]["title"].as_str().unwrap_or("");
                return Err(format!(
                    "required canonical field {required} ({title}) has no column and no constant: \
                     this mapping cannot represent it on ingest"
                ));
            }
        }
    }
    if manifest.platform.direction.delivers() {
        for required in platform["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !deliver_columns.contains(required) {
                return Err(format!(
                    "column {required} is required by the platform schema, but no canonical field fills it"
                ));
            }
        }
    }
    Ok(tables)
}

/// Splits a list cell. Departments type the full-width separator (`；`) as often as the ASCII
/// one, so both split.
fn split_list<'a>(text: &'a str, separator: &str) -> Vec<&'a str> {
    let mut chars = separator.chars();
    let parts: Vec<&str> = match (chars.next(), chars.next(), full_width(separator)) {
        (Some(c), None, Some(wide)) => text.split([c, wide]).collect(),
        _ => text.split(separator).collect(),
    };
    parts.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// The full-width form of a one-character ASCII separator (`;` → `；`).
fn full_width(separator: &str) -> Option<char> {
    match separator {
        ";" => Some('；'),
        "," => Some('，'),
        "|" => Some('｜'),
        _ => None,
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A cell as text: strings trimmed, numbers in their shortest form (`5`, not `5.0`).
fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A date layout: `YYYY`, `MM`, `DD` (two digits), `M`, `D` (one or two) and literal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatePattern {
    pub text: String,
    parts: Vec<DatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DatePart {
    Year,
    Month { padded: bool },
    Day { padded: bool },
    Literal(char),
}

impl DatePattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            let (part, len) = if rest.starts_with("YYYY") {
                (DatePart::Year, 4)
            } else if rest.starts_with("MM") {
                (DatePart::Month { padded: true }, 2)
            } else if rest.starts_with("DD") {
                (DatePart::Day { padded: true }, 2)
            } else if rest.starts_with('M') {
                (DatePart::Month { padded: false }, 1)
            } else if rest.starts_with('D') {
                (DatePart::Day { padded: false }, 1)
            } else {
                let c = rest.chars().next().unwrap_or_default();
                (DatePart::Literal(c), c.len_utf8())
            };
            parts.push(part);
            rest = &rest[len..];
        }
        let count = |want: fn(&DatePart) -> bool| parts.iter().filter(|p| want(p)).count();
        if count(|p| *p == DatePart::Year) != 1
            || count(|p| matches!(p, DatePart::Month { .. })) != 1
            || count(|p| matches!(p, DatePart::Day { .. })) != 1
        {
            return Err(format!("date layout {pattern:?} needs exactly one YYYY, one MM (or M) and one DD (or D)"));
        }
        Ok(Self { text: pattern.to_owned(), parts })
    }

    pub fn format(&self, d: Date) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                DatePart::Year => out.push_str(&format!("{:04}", d.year())),
                DatePart::Month { padded: true } => out.push_str(&format!("{:02}", u8::from(d.month()))),
                DatePart::Month { padded: false } => out.push_str(&u8::from(d.month()).to_string()),
                DatePart::Day { padded: true } => out.push_str(&format!("{:02}", d.day())),
                DatePart::Day { padded: false } => out.push_str(&d.day().to_string()),
                DatePart::Literal(c) => out.push(*c),
            }
        }
        out
    }

    pub fn parse_text(&self, s: &str) -> Option<Date> {
        let (mut year, mut month, mut day) = (None, None, None);
        let mut rest = s.trim();
        let digits = |rest: &str, min: usize, max: usize| -> Option<(u32, usize)> {
            let n = rest.bytes().take(max).take_while(u8::is_ascii_digit).count();
            (n >= min).then(|| rest[..n].parse().ok().map(|v| (v, n))).flatten()
        };
        for p in &self.parts {
            let (value, len) = match p {
                DatePart::Year => digits(rest, 4, 4)?,
                DatePart::Month { padded } | DatePart::Day { padded } => {
                    if *padded {
                        digits(rest, 2, 2)?
                    } else {
                        digits(rest, 1, 2)?
                    }
                }
                DatePart::Literal(c) => {
                    rest = rest.strip_prefix(*c)?;
                    continue;
                }
            };
            match p {
                DatePart::Year => year = Some(value),
                DatePart::Month { .. } => month = Some(value),
                _ => day = Some(value),
            }
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return None;
        }
        let month = Month::try_from(u8::try_from(month?).ok()?).ok()?;
        Date::from_calendar_date(i32::try_from(year?).ok()?, month, u8::try_from(day?).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_layouts_read_and_write() {
        let d = Date::from_calendar_date(2024, Month::March, 5).expect("date");
        for (layout, text) in [
            ("YYYY-MM-DD", "2024-03-05"),
            ("YYYY/MM/DD", "2024/03/05"),
            ("YYYYMMDD", "20240305"),
            ("YYYY年M月D日", "2024年3月5日"),
        ] {
            let p = DatePattern::parse(layout).expect("layout");
            assert_eq!(p.format(d), text);
            assert_eq!(p.parse_text(text), Some(d), "{layout}");
        }
        let p = DatePattern::parse("YYYY/M/D").expect("layout");
        assert_eq!(p.parse_text("2024/12/31"), Date::from_calendar_date(2024, Month::December, 31).ok());
        assert_eq!(p.parse_text("2024/13/01"), None);
        assert_eq!(p.parse_text("2024/2/30"), None);
        assert_eq!(p.parse_text("2024/2/3x"), None);
        assert!(DatePattern::parse("MM/DD").is_err());
    }

    #[test]
    fn numbers_read_as_their_shortest_text() {
        assert_eq!(cell_text(&serde_json::json!(5.0)), "5");
        assert_eq!(cell_text(&serde_json::json!(0.126)), "0.126");
        assert_eq!(cell_text(&serde_json::json!(" 周村 ")), "周村");
    }
}
