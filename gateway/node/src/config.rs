//! Node configuration: defaults, then a TOML file, then `CREDIT_GATEWAY_*` environment
//! variables, then command-line flags. Validated once at start-up; unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

pub use gateway_store::SqliteSync;

/// Everything a node needs to run. `credit-gateway serve` works with all defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the department-facing HTTP API. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory for the embedded SQLite database and operator files. Default `./data`.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; empty means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Seconds a replica's leadership lasts unrenewed, with PostgreSQL replicas sharing one
    /// database: the leader renews it every third of that; when it dies, another replica takes
    /// over within about this long. Default 5 (2–300).
    pub lease_secs: u64,
    /// This node's member id in the federation (`cn-` + GB/T 2260 code).
    pub member_id: String,
    /// Directory of extra working-day calendar files (`<year>.toml`); default `<data_dir>/calendar`.
    pub calendar_dir: Option<PathBuf>,
    /// Limits of `POST /api/v1/records`.
    pub limits: Limits,
    /// Validation policy.
    pub validation: Validation,
    /// SQLite tuning.
    pub sqlite: Sqlite,
    /// Log output: `text` or `json`.
    pub log_format: LogFormat,
    /// `dev` (default) or `production`. Production refuses to start without mutual TLS for the
    /// federation and refuses a plain-HTTP department API on anything but loopback.
    pub mode: Mode,
    /// Node-to-node interchange over mutual TLS; absent means this node runs alone.
    pub federation: Option<FederationConfig>,
    /// Store-and-forward to the parent, the children and the publication sink.
    pub relay: RelayConfig,
    /// Platform adapters this node runs (signed manifests and where each platform is).
    pub adapters: Vec<crate::adapters::AdapterBinding>,
    /// Monthly reporting: which departments report here, and by when.
    pub reporting: ReportingConfig,
    /// Alert webhooks: SLA states, failing destinations, overdue departments, expiries.
    pub alerts: AlertsConfig,
    /// The operators' dashboard (`/dashboard`): who may log in.
    pub dashboard: DashboardConfig,
    /// Credit evaluations pulled from partner cities (信用评价结果互认).
    pub evaluations: EvaluationsConfig,
    /// SLA tracking in the background.
    pub sla: SlaConfig,
    /// The publicity-expiry job.
    pub publicity: PublicityConfig,
    /// Who may call the department API, and how fast.
    pub auth: AuthConfig,
    /// HTTPS on the department API, with client certificates under the operator's CA.
    pub api_tls: Option<ApiTlsConfig>,
    /// The joint reward-and-punishment measures catalogue this node applies.
    pub measures: MeasuresConfig,
}

/// `[measures]`: the signed measures catalogue (联合奖惩措施清单), verified at start-up against
/// the registry in force; a catalogue that does not verify stops the start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasuresConfig {
    /// The catalogue file (e.g. `measures/demo.toml`); unset: this node applies no measures.
    pub catalogue: Option<PathBuf>,
    /// Its root signature; default: the catalogue's path with the extension `.sig`.
    pub signature: Option<PathBuf>,
    /// How often the node opens cases for the list entries it stored, and exchanges with the
    /// cases' 前置库 (seconds; 0 = never: for tests, which run a pass themselves). Default 5.
    pub opening_interval_secs: u64,
    /// The cases' 前置库, for departments that answer through a staging database.
    pub frontdb: Option<CasesFrontDb>,
}

impl Default for MeasuresConfig {
    fn default() -> Self {
        Self { catalogue: None, signature: None, opening_interval_secs: 5, frontdb: None }
    }
}

/// `[measures.frontdb]`: the 前置库 through which departments collect their cases and answer
/// them (`joint::frontdb`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFrontDb {
    /// `mysql://…` (MariaDB), `postgres://…` or `sqlite://…`.
    pub url: String,
    /// The departments (统一社会信用代码) that answer through it: required, and a row naming
    /// any other is refused.
    pub units: Vec<String>,
}

/// `[auth]`: credentials on the department API (see `docs/operations.md`, "Access").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every call but the public ones (health, OpenAPI, docs, dashboard login) needs an API
    /// key, a registered client certificate or a dashboard login. Off is allowed only on
    /// loopback outside production mode. Default false.
    pub required: bool,
    /// Calls per second a principal may make on average (0 = unlimited). Default 200.
    pub rate_per_second: f64,
    /// Calls a principal may make at once. Default 400.
    pub burst: u32,
    /// Failed logins and wrong keys a source address may make per minute. Default 10.
    pub failures_per_minute: u32,
    /// Failed attempts a source address may make at once before it must wait. Default 10.
    pub failure_burst: u32,
    /// Requests a client (a principal; without authentication, a source address) may have in
    /// progress at once; one more is answered 503 `too_many_in_flight` with `Retry-After`, so
    /// one client cannot take every connection's worth of work (0 = unlimited). Default 32.
    pub max_in_flight: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: false,
            rate_per_second: 200.0,
            burst: 400,
            failures_per_minute: 10,
            failure_burst: 10,
            max_in_flight: 32,
        }
    }
}

/// `[api_tls]`: the department API over HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    /// The API's certificate chain and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA of the departments' client certificates (the 前置机 habit). A client that presents
    /// one is authenticated by it when it is registered (`credential issue --certificate`);
    /// clients without one may still use an API key.
    pub client_ca: Option<PathBuf>,
}

/// `[publicity]`: the job that raises `publicity_expired` for this node's penalties.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicityConfig {
    /// How often, in seconds, the node looks for penalties whose publicity has ended (the first
    /// look at start-up). Default 3,600. `0` runs no job: no `publicity_expired` is raised here.
    pub expiry_interval_secs: u64,
}

impl Default for PublicityConfig {
    fn default() -> Self {
        Self { expiry_interval_secs: 3_600 }
    }
}

/// `[sla]`: the background SLA tracker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// How often the tracker adds what was stored and settled to the SLA index, in seconds.
    /// Default 10. `0` runs no tracker: every view, `/metrics` and the alerts then track
    /// everything stored before they read, records still in flight included (which costs index
    /// writes on a busy node: meant for tests and one-off runs).
    pub tracking_interval_secs: u64,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self { tracking_interval_secs: 10 }
    }
}

/// Partner pulls of credit evaluations (see `docs/operations.md`, "Evaluation recognition").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationsConfig {
    /// How long a partner's answer is served from the cache before it is asked again.
    /// Default 3,600 s. When the partner is unreachable, older answers are served, marked stale.
    pub cache_ttl_secs: u64,
    /// How long to wait for a partner's answer. Default 10 s.
    pub timeout_secs: u64,
}

impl Default for EvaluationsConfig {
    fn default() -> Self {
        Self { cache_ttl_secs: 3600, timeout_secs: 10 }
    }
}

/// Alert webhooks (see `docs/operations.md`, "Alerts").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are POSTed (JSON). No URL, no alerts.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key signing each alert (hex or any text, one line). Default
    /// `<data_dir>/alerts.key`, generated on first use: give it to the receiver.
    pub secret_file: Option<PathBuf>,
    /// How often the conditions are checked. Default 60 s.
    pub check_interval_secs: u64,
    /// A destination failing this long raises an alert. Default 1800 s.
    pub destination_failing_secs: u64,
    /// A certificate or registry expiring within this many days raises an alert. Default 30.
    pub expiry_warning_days: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            secret_file: None,
            check_interval_secs: 60,
            destination_failing_secs: 1800,
            expiry_warning_days: 30,
        }
    }
}

/// The dashboard (see `docs/operations.md`, "Dashboard").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Operators who may log in; none means the dashboard only shows its login page.
    pub operators: Vec<Operator>,
}

/// An operator account: the password is stored only as a PBKDF2 hash (`credit-gateway operator
/// hash-password` makes one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: String,
    pub password_hash: String,
    /// `operator` (default) or `auditor` (read-only pages). Admins use credentials.
    #[serde(default)]
    pub role: Option<String>,
}

/// Monthly reporting (月报) at a district node (see `docs/operations.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// Day of the following month by which reports are due. Default 10.
    pub due_day: u8,
    /// Move a due date that is not a working day to the next working day. Default true.
    pub roll_to_working_day: bool,
    /// The departments registered to report here.
    pub departments: Vec<Department>,
    /// The share each quality ratio (有效入库率, 完整率, 及时率) is held to. Default 0.95.
    pub quality_target: f64,
}

impl Default for ReportingConfig {
    fn default() -> Self {
        Self {
            due_day: 10,
            roll_to_working_day: true,
            departments: Vec::new(),
            quality_target: gateway_core::quality::DEFAULT_TARGET,
        }
    }
}

/// A department that reports to this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    pub name: String,
    pub uscc: String,
}

/// How accepted records travel on (see `docs/operations.md`, "Relay").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Whether this node forwards at all. Default true (when it has a federation identity).
    pub enabled: bool,
    /// Most records in one envelope. Default 1,000.
    pub batch_max: usize,
    /// How long to wait for more records after the first one arrives, in milliseconds, so
    /// that a trickle still travels in envelopes of useful size. Default 100.
    pub linger_ms: u64,
    /// First retry delay after a failed delivery, in milliseconds; doubles per failure, with
    /// full jitter. Default 500.
    pub backoff_base_ms: u64,
    /// Longest retry delay, in milliseconds. Default 60,000.
    pub backoff_max_ms: u64,
    /// Failed attempts (transport errors, 5xx, timeouts) after which records go to the dead
    /// letters. 0 (default) retries for ever: a destination that is down for days gets
    /// everything, in order, when it comes back.
    pub max_attempts: u32,
    /// Seconds one delivery may take before it counts as failed (for a child that collects its
    /// envelopes: how long one waits to be collected). Default 60.
    pub timeout_secs: u64,
    /// Directory of the local publication sink (this platform's own publication system until
    /// its adapter exists); unset means no publication sink.
    pub publication_dir: Option<PathBuf>,
    /// Routing rules, tried in order before the built-in defaults; the first that matches decides.
    pub routes: Vec<RouteRule>,
    /// Children that poll this node for their envelopes (前置机 style, pull mode) instead of
    /// being pushed to. Member ids.
    pub pull_children: Vec<String>,
    /// Whether this node polls its parent for envelopes addressed to it (pull mode; the
    /// parent lists this node in its `pull_children`).
    pub pull_from_parent: bool,
    /// Milliseconds between polls of the parent when it had nothing (pull mode). Default 1,000.
    pub pull_interval_ms: u64,
}

/// One routing rule: for which destinations, record types and disclosure scopes it holds,
/// and whether those records go there. Empty lists match everything.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// `parent`, `children`, `publication`, or a member id.
    pub destination: String,
    #[serde(default)]
    pub record_types: Vec<String>,
    #[serde(default)]
    pub disclosure: Vec<String>,
    /// `send` or `skip`.
    pub action: RouteAction,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Send,
    Skip,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_max: 1_000,
            linger_ms: 100,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            max_attempts: 0,
            timeout_secs: 60,
            publication_dir: None,
            routes: Vec::new(),
            pull_children: Vec::new(),
            pull_from_parent: false,
            pull_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Dev,
    Production,
}

/// Files and address of the federation endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Address of the mutual-TLS federation endpoint.
    pub listen: SocketAddr,
    /// Federation CA certificate (PEM): peers' certificates must chain to it.
    pub ca: PathBuf,
    /// This node's TLS certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// This node's signing key file.
    pub signing_key: PathBuf,
    /// The signed registry (JWS JSON) to start from.
    pub registry: PathBuf,
    /// The trusted federation root keys (JSON list), obtained out of band.
    pub anchor: PathBuf,
    /// Days a node keeps working on an expired registry, warning loudly, before it refuses
    /// traffic. Default 7.
    #[serde(default = "default_grace_days")]
    pub registry_grace_days: u32,
    /// Seconds between registry refreshes from the parent. Default 300.
    #[serde(default = "default_refresh_secs")]
    pub registry_refresh_secs: u64,
    /// Federation base URLs that replace the registry's `endpoint` for some members (a
    /// 前置机 address inside the government network, a test port), e.g.
    /// `peers = { "cn-370306" = "https://10.1.2.3:8443" }`.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, String>,
    /// Signed partner agreements (信用评价结果互认协议) this node is a party to, as JSON files.
    /// Each takes effect only when every party has signed it and the registry lists it.
    #[serde(default)]
    pub agreements: Vec<PathBuf>,
}

fn default_refresh_secs() -> u64 {
    300
}

fn default_grace_days() -> u32 {
    7
}

impl FederationConfig {
    /// The layout `credit-gateway certs init` writes, for `member`, listening on `listen`.
    pub fn from_pki(pki_dir: &std::path::Path, member: &str, listen: SocketAddr) -> Self {
        let node = crate::pki::NodeFiles::new(pki_dir, member);
        Self {
            listen,
            ca: crate::pki::ca_cert(pki_dir),
            cert: node.tls_cert(),
            key: node.tls_key(),
            signing_key: node.signing_key(),
            registry: crate::pki::registry_file(pki_dir),
            anchor: crate::pki::anchor_file(pki_dir),
            registry_grace_days: default_grace_days(),
            registry_refresh_secs: default_refresh_secs(),
            peers: std::collections::BTreeMap::new(),
            agreements: crate::pki::agreement_files(pki_dir),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most records in one batch. Default 5,000.
    pub max_batch_records: usize,
    /// Largest request body in bytes. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Largest monthly-report workbook upload in bytes. Default 256 MiB.
    pub max_import_bytes: usize,
    /// Deepest nesting of arrays and objects in a pushed record; deeper is a 400 for the whole
    /// request (`too_deep`). Default 32 (records need about 5).
    pub max_nesting_depth: usize,
    /// Push bodies held in memory at once, in bytes: a push reserves its size before reading
    /// it, and one that cannot within 5 s is answered 503 `busy` with `Retry-After`. Bounds the
    /// node's memory under many large pushes. Default 256 MiB (at least `max_body_bytes`).
    pub max_body_bytes_in_flight: usize,
    /// Largest request head (request line, URL and headers) in bytes; more is answered 431.
    /// Default 64 KiB (at least 8 KiB).
    pub max_header_bytes: usize,
    /// Most open connections on the API listener; more wait in the kernel's backlog until one
    /// closes. Default 1,024.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, and that an open connection may sit
    /// idle before its next request; then it is closed. Default 10.
    pub header_read_timeout_secs: u64,
    /// A body the node refuses without reading (413, 401, …) is still read and discarded up to
    /// this many bytes, so that a client that writes its whole body before reading sees the
    /// answer rather than a broken pipe; a longer one is cut off. Default 64 MiB.
    pub discard_bytes: usize,
}

impl Limits {
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_read_timeout_secs.max(1))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Validation {
    /// Genuine pre-2015 pilot USCCs that fail the check character but are accepted.
    pub uscc_allow_list: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sqlite {
    /// `full` (default: every commit is on disk before it is acknowledged, even across power
    /// loss) or `normal` (survives a process crash, may lose the last commits on power loss).
    pub synchronous: SqliteSync,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            lease_secs: 5,
            member_id: "cn-370306".into(),
            calendar_dir: None,
            limits: Limits::default(),
            validation: Validation::default(),
            sqlite: Sqlite::default(),
            log_format: LogFormat::Text,
            mode: Mode::Dev,
            federation: None,
            relay: RelayConfig::default(),
            adapters: Vec::new(),
            reporting: ReportingConfig::default(),
            alerts: AlertsConfig::default(),
            dashboard: DashboardConfig::default(),
            evaluations: EvaluationsConfig::default(),
            sla: SlaConfig::default(),
            publicity: PublicityConfig::default(),
            auth: AuthConfig::default(),
            api_tls: None,
            measures: MeasuresConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_records: 5_000,
            max_body_bytes: 16 * 1024 * 1024,
            max_import_bytes: 256 * 1024 * 1024,
            max_nesting_depth: 32,
            max_body_bytes_in_flight: 256 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_connections: 1_024,
            header_read_timeout_secs: 10,
            discard_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for Sqlite {
    fn default() -> Self {
        Self { synchronous: SqliteSync::Full }
    }
}

/// Environment variables read by [`Config::load`], and the config key each one sets.
const ENV_KEYS: &[(&str, &str)] = &[
    ("CREDIT_GATEWAY_LISTEN", "listen"),
    ("CREDIT_GATEWAY_DATA_DIR", "data_dir"),
    ("CREDIT_GATEWAY_DATABASE_URL", "database_url"),
    ("CREDIT_GATEWAY_MEMBER_ID", "member_id"),
    ("CREDIT_GATEWAY_CALENDAR_DIR", "calendar_dir"),
    ("CREDIT_GATEWAY_LOG_FORMAT", "log_format"),
    ("CREDIT_GATEWAY_MAX_BATCH_RECORDS", "limits.max_batch_records"),
    ("CREDIT_GATEWAY_MAX_BODY_BYTES", "limits.max_body_bytes"),
    ("CREDIT_GATEWAY_SQLITE_SYNCHRONOUS", "sqlite.synchronous"),
    ("CREDIT_GATEWAY_MODE", "mode"),
    ("CREDIT_GATEWAY_AUTH_REQUIRED", "auth.required"),
];

/// Command-line overrides (the highest layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// Run as this member of a `certs init` PKI: sets `member_id` and the federation files.
    pub member: Option<String>,
    pub pki_dir: Option<PathBuf>,
    /// Federation listen address (with `member`); default: the port of the member's endpoint.
    pub federation_listen: Option<SocketAddr>,
}

impl Config {
    /// Builds the configuration from its layers. `env` is passed in so tests never touch the
    /// process environment.
    pub fn load(overrides: &Overrides, env: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let mut table = toml::Table::new();
        if let Some(path) = &overrides.config_file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            table = toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        }
        for (name, value) in env.iter().filter(|(k, _)| k.starts_with("CREDIT_GATEWAY_")) {
            let Some((_, key)) = ENV_KEYS.iter().find(|(n, _)| n == name) else {
                let known: Vec<_> = ENV_KEYS.iter().map(|(n, _)| *n).collect();
                bail!("unknown environment variable {name}; known: {}", known.join(", "));
            };
            set_key(&mut table, key, env_value(key, value))?;
        }
        let mut config: Config = Config::deserialize(toml::Value::Table(table)).context("invalid configuration")?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(member) = &overrides.member {
            let pki = overrides.pki_dir.clone().unwrap_or_else(|| PathBuf::from("certs/dev"));
            let listen = match overrides.federation_listen {
                Some(addr) => addr,
                None => crate::pki::demo_listen(member)
                    .with_context(|| format!("{member} is not in the demo federation; pass --federation-listen"))?,
            };
            config.member_id = member.clone();
            config.federation = Some(FederationConfig::from_pki(&pki, member, listen));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=28).contains(&self.reporting.due_day) {
            bail!("reporting.due_day must be between 1 and 28");
        }
        if !(0.0..=1.0).contains(&self.reporting.quality_target) {
            bail!("reporting.quality_target must be a share between 0 and 1 (e.g. 0.95)");
        }
        if self.limits.max_batch_records == 0 || self.limits.max_body_bytes < 1024 {
            bail!("limits.max_batch_records must be ≥ 1 and limits.max_body_bytes ≥ 1024");
        }
        if self.limits.max_body_bytes_in_flight < self.limits.max_body_bytes {
            bail!("limits.max_body_bytes_in_flight must be at least limits.max_body_bytes");
        }
        if !(4..=100).contains(&self.limits.max_nesting_depth)
            || self.limits.max_connections == 0
            || self.limits.max_header_bytes < 8192
        {
            bail!(
                "limits.max_nesting_depth must be 4–100 (the JSON parser's own limit is 128), limits.max_connections ≥ 1 \
                 and limits.max_header_bytes ≥ 8192"
            );
        }
        if !(2..=300).contains(&self.lease_secs) {
            bail!("lease_secs must be 2–300 (seconds a replica's leadership lasts unrenewed)");
        }
        if let Some(url) = self.postgres_url()
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            bail!("database_url must be a postgres:// URL (leave it unset for the embedded SQLite)");
        }
        let id_ok = self.member_id.strip_prefix("cn-").is_some_and(|rest| {
            let (code, suffix) = rest.split_once('-').unwrap_or((rest, "a"));
            code.len() == 6
                && code.bytes().all(|b| b.is_ascii_digit())
                && (1..=32).contains(&suffix.len())
                && suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !id_ok {
            bail!("member_id {:?} must match ^cn-[0-9]{{6}}(-[a-z0-9]{{1,32}})?$", self.member_id);
        }
        if self.relay.batch_max == 0 || self.relay.timeout_secs == 0 {
            bail!("relay.batch_max and relay.timeout_secs must be ≥ 1");
        }
        for rule in &self.relay.routes {
            for t in &rule.record_types {
                if t.parse::<gateway_core::record::RecordType>().is_err() {
                    bail!("relay.routes: unknown record type {t:?}");
                }
            }
            for d in &rule.disclosure {
                if gateway_core::record::Disclosure::parse(d).is_none() {
                    bail!("relay.routes: unknown disclosure scope {d:?} (public, gov_shared, authorized_query)");
                }
            }
        }
        for op in &self.dashboard.operators {
            if let Some(role) = &op.role
                && !matches!(role.as_str(), "operator" | "auditor")
            {
                bail!("dashboard operator {:?}: role must be operator or auditor, not {role:?}", op.name);
            }
        }
        if !self.auth.required && (self.mode == Mode::Production || !self.listen.ip().is_loopback()) {
            let why = if self.mode == Mode::Production {
                "mode = production".to_owned()
            } else {
                format!("the API would listen on {}, beyond this machine", self.listen)
            };
            bail!(
                "refusing to start without authentication: {why}.\n\
                 未配置身份认证，拒绝启动：\n\
                 \x20 1. issue credentials / 签发凭据:  credential issue --role department --name <单位名称> --unit <统一社会信用代码>\n\
                 \x20 2. require them / 启用认证:     [auth] required = true   (or CREDIT_GATEWAY_AUTH_REQUIRED=true)\n\
                 \x20 3. beyond loopback, serve HTTPS / 非本机访问须启用 HTTPS: [api_tls] cert, key, client_ca\n\
                 For local development listen on 127.0.0.1 (the default). See docs/operations.md, \"Access\"."
            );
        }
        if self.mode == Mode::Production {
            if self.federation.is_none() {
                bail!("mode = production needs [federation] with mutual TLS; refusing to start without TLS");
            }
            if !self.listen.ip().is_loopback() && self.api_tls.is_none() {
                bail!(
                    "mode = production: the department API at {} would be plain HTTP; configure [api_tls] or bind it to loopback behind a TLS proxy",
                    self.listen
                );
            }
        }
        Ok(())
    }

    pub fn calendar_dir(&self) -> PathBuf {
        self.calendar_dir.clone().unwrap_or_else(|| self.data_dir.join("calendar"))
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("gateway.sqlite")
    }

    /// The PostgreSQL URL, if one is configured.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url.as_deref().filter(|u| !u.is_empty())
    }
}

/// Numbers stay numbers so TOML typing applies to environment values too.
fn env_value(key: &str, raw: &str) -> toml::Value {
    match key {
        "limits.max_batch_records" | "limits.max_body_bytes" => {
            raw.parse::<i64>().map(toml::Value::Integer).unwrap_or_else(|_| toml::Value::String(raw.into()))
        }
        "auth.required" => {
            raw.parse::<bool>().map(toml::Value::Boolean).unwrap_or_else(|_| toml::Value::String(raw.into()))
        }
        _ => toml::Value::String(raw.into()),
    }
}

fn set_key(table: &mut toml::Table, dotted: &str, value: toml::Value) -> anyhow::Result<()> {
    match dotted.split_once('.') {
        None => {
            table.insert(dotted.into(), value);
        }
        Some((head, rest)) => {
            let entry = table.entry(head).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(inner) = entry.as_table_mut() else { bail!("config key {head} must be a table") };
            set_key(inner, rest, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::load(&Overrides::default(), &env(&[])).expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert!(c.postgres_url().is_none());
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[limits]\nmax_batch_records = 10\n").expect("write");
        let o = Overrides { config_file: Some(file), ..Default::default() };
        let c = Config::load(&o, &env(&[("CREDIT_GATEWAY_MAX_BATCH_RECORDS", "20")])).expect("valid");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.max_batch_records, 20);
        let o = Overrides { listen: Some("127.0.0.1:9001".parse().expect("addr")), ..o };
        assert_eq!(Config::load(&o, &env(&[])).expect("valid").listen.port(), 9001);
    }

    #[test]
    fn production_refuses_to_run_without_tls() {
        let prod = env(&[("CREDIT_GATEWAY_MODE", "production"), ("CREDIT_GATEWAY_AUTH_REQUIRED", "true")]);
        let err = Config::load(&Overrides::default(), &prod).unwrap_err();
        assert!(err.to_string().contains("without TLS"), "{err}");
        let o = Overrides { member: Some("cn-370300".into()), ..Default::default() };
        let c = Config::load(&o, &prod).expect("federation configured");
        assert_eq!(c.federation.expect("federation").listen.port(), 8442);
        let o = Overrides { listen: Some("0.0.0.0:8080".parse().expect("addr")), ..o };
        let err = Config::load(&o, &prod).unwrap_err();
        assert!(err.to_string().contains("[api_tls]"), "{err}");
    }

    #[test]
    fn no_authentication_beyond_loopback_or_in_production() {
        let o = Overrides { listen: Some("0.0.0.0:8080".parse().expect("addr")), ..Default::default() };
        let err = Config::load(&o, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("refusing to start without authentication") && err.contains("0.0.0.0:8080"), "{err}");
        assert!(err.contains("credential issue") && err.contains("[auth] required = true"), "{err}");
        assert!(err.contains("拒绝启动"), "{err}");
        let c = Config::load(&o, &env(&[("CREDIT_GATEWAY_AUTH_REQUIRED", "true")])).expect("with authentication");
        assert!(c.auth.required);
        let member = Overrides { member: Some("cn-370300".into()), ..Default::default() };
        let err = Config::load(&member, &env(&[("CREDIT_GATEWAY_MODE", "production")])).unwrap_err();
        assert!(err.to_string().contains("mode = production"), "{err}");
        assert!(Config::load(&Overrides::default(), &env(&[])).is_ok(), "loopback development needs nothing");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "listne = \"127.0.0.1:9000\"\n").expect("write");
        let o = Overrides { config_file: Some(file), ..Default::default() };
        let err = format!("{:#}", Config::load(&o, &env(&[])).unwrap_err());
        assert!(err.contains("listne"), "{err}");
        let err = Config::load(&Overrides::default(), &env(&[("CREDIT_GATEWAY_LISTNE", "x")])).unwrap_err();
        assert!(err.to_string().contains("CREDIT_GATEWAY_LISTNE"));
        assert!(Config::load(&Overrides::default(), &env(&[("CREDIT_GATEWAY_DATABASE_URL", "mysql://x")])).is_err());
    }
}
