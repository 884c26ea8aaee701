//! The manifest's shape (`adapters/<platform>/manifest.toml`). The JSON Schema in
//! `schemas/adapter_manifest/schema.json` is the contract; these types read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::interchange::registry::Level;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always 1 for this layout.
    pub manifest_version: u32,
    pub platform: PlatformInfo,
    pub transport: TransportSpec,
    #[serde(default)]
    pub formats: Formats,
    pub datasets: Vec<DatasetSpec>,
    /// table name → canonical value → platform value.
    #[serde(default)]
    pub code_tables: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformInfo {
    /// Stable id, e.g. `xinyong-zibo`; the registry approves manifests by it.
    pub id: String,
    pub name: String,
    pub level: Level,
    /// GB/T 2260 code of the platform's region.
    pub region_code: String,
    /// The federation member whose gateway runs this adapter.
    pub member_id: String,
    pub direction: Direction,
    /// A label for the platform format (`national-v2`, `legacy-2015`, `department-xlsx` …).
    pub format: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Which way records cross this adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Platform → gateway.
    Ingest,
    /// Gateway → platform.
    Deliver,
    Both,
}

impl Direction {
    pub fn ingests(self) -> bool {
        matches!(self, Self::Ingest | Self::Both)
    }
    pub fn delivers(self) -> bool {
        matches!(self, Self::Deliver | Self::Both)
    }
}

/// The GB/T 39443-2020 exchange mode and its format-level settings. Where the platform lives
/// (URL, folders, database connection) is the node's configuration, not the manifest's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSpec {
    pub mode: Mode,
    #[serde(default)]
    pub service: Option<ServiceSettings>,
    #[serde(default)]
    pub file: Option<FileSettings>,
    #[serde(default)]
    pub database: Option<DatabaseSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// 服务方式: HTTP JSON push and paged pull.
    Service,
    /// 文件方式: packages in watched folders.
    File,
    /// 数据库方式: a 前置库 staging table and its feedback table.
    Database,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Path (under the platform's base URL) rows are POSTed to; `{dataset}` is replaced.
    #[serde(default = "default_service_path")]
    pub push_path: String,
    /// Path pages of rows are read from (GET, with the cursor and page size as query).
    #[serde(default = "default_service_path")]
    pub pull_path: String,
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            push_path: default_service_path(),
            pull_path: default_service_path(),
            cursor_param: default_cursor_param(),
            page_size: default_page_size(),
        }
    }
}

fn default_service_path() -> String {
    "/{dataset}".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_page_size() -> u32 {
    500
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// What a package's data files hold.
    pub package_format: PackageFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageFormat {
    Json,
    Csv,
    Xlsx,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// The department writes results here: one row per staged row.
    pub feedback_table: String,
    /// The staging tables' key column (unique, increasing).
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// The staging tables' column the gateway fills when it has collected a row (NULL = new).
    #[serde(default = "default_collected_column")]
    pub collected_column: String,
}

fn default_collected_column() -> String {
    "GW_COLLECTED_AT".into()
}

fn default_id_column() -> String {
    "ID".into()
}

/// Date and list conventions of the platform format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formats {
    /// How the platform writes dates: `YYYY`, `MM`, `DD` and literal characters.
    #[serde(default = "default_date")]
    pub date: String,
    /// Further date layouts accepted on ingest (departments write dates many ways).
    #[serde(default)]
    pub date_inputs: Vec<String>,
    /// Separator of multi-valued columns (e.g. 处罚类别).
    #[serde(default = "default_separator")]
    pub list_separator: String,
}

impl Default for Formats {
    fn default() -> Self {
        Self { date: default_date(), date_inputs: vec![], list_separator: default_separator() }
    }
}

fn default_date() -> String {
    "YYYY-MM-DD".into()
}
fn default_separator() -> String {
    ";".into()
}

/// One data set of the platform (a table, a sheet, a package type) and the record type it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The platform's name for it: the staging table, package dataset or service path segment.
    pub name: String,
    pub record_type: String,
    /// The sheet that holds it in a workbook (file mode with XLSX, monthly reports).
    #[serde(default)]
    pub sheet: Option<String>,
    /// This dataset's date layout, when it differs from `[formats] date`.
    #[serde(default)]
    pub date: Option<String>,
    /// The platform format's JSON Schema (one object per row).
    pub schema: SchemaRef,
    pub fields: Vec<FieldMap>,
    /// Canonical fields the platform format does not carry, filled on ingest when absent.
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
}

/// A file the manifest relies on, pinned by hash so that the signature covers it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRef {
    /// Relative to the manifest's folder.
    pub path: String,
    pub sha256: String,
}

/// One platform column ↔ one canonical field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    pub column: String,
    pub field: String,
    #[serde(default)]
    pub kind: FieldKind,
    /// Translate values through this code table.
    #[serde(default)]
    pub code_table: Option<String>,
    /// Use the mapping one way only (e.g. a column that also derives a second field).
    #[serde(default)]
    pub only: Option<Way>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    #[default]
    Text,
    /// A date in the platform's layout ↔ canonical `YYYY-MM-DD`.
    Date,
    /// A decimal amount: canonical string ↔ platform string.
    Decimal,
    /// A decimal amount: canonical string ↔ platform JSON number.
    Number,
    /// An integer: canonical number ↔ platform number (text cells are parsed).
    Integer,
    /// A list: canonical array ↔ platform text joined by the list separator.
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    Ingest,
    Deliver,
}
