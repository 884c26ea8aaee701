//! `credential …` and `audit …`: the admin's and auditor's commands on the node's host. They
//! open the node's store directly (SQLite file or PostgreSQL), so they work with the node
//! stopped too; what they change is in the audit log like any API call.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use gateway_store::Store;
use gateway_store::audit::AuditEvent;
use time::OffsetDateTime;

use super::{IssueRequest, Role};
use crate::config::Config;

/// The environment variable the API commands (`outbox`, `import`, `evaluation`) take their
/// API key from: kept out of the command line, where `ps` and shell history would show it.
pub const API_KEY_ENV: &str = "CREDIT_GATEWAY_API_KEY";

/// An HTTP client for a node's API that sends the key in [`API_KEY_ENV`], if set.
pub fn api_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(key) = std::env::var(API_KEY_ENV)
        && !key.trim().is_empty()
    {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .with_context(|| format!("{API_KEY_ENV} is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers).build()?)
}

/// What to add to an API command's error when the node turned its credential away.
pub fn credential_hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "\nhint: set CREDIT_GATEWAY_API_KEY to an API key of this node (`credential issue`) · 请设置 API 密钥",
        403 => "\nhint: the key in CREDIT_GATEWAY_API_KEY is of a role that may not do this · 该密钥的角色无此权限",
        _ => "",
    }
}

/// `credential issue`'s options.
#[derive(Debug, clap::Args)]
pub struct IssueOptions {
    /// department, desk_officer, operator, auditor or admin.
    #[arg(long)]
    pub role: String,
    /// The principal's name, as audit entries will carry it (e.g. 淄博市周村区市场监督管理局, 张三).
    #[arg(long)]
    pub name: String,
    /// Its unit's USCC (required for departments and desk officers).
    #[arg(long)]
    pub unit: Option<String>,
    /// Its department category (e.g. market_regulation).
    #[arg(long)]
    pub category: Option<String>,
    /// Another unit (USCC) it may report for (repeatable).
    #[arg(long = "report-for", value_name = "USCC")]
    pub report_for: Vec<String>,
    /// A grant: authorized_query, all_units (repeatable).
    #[arg(long = "grant")]
    pub grants: Vec<String>,
    /// Days until it expires (default: never).
    #[arg(long)]
    pub expires_days: Option<u32>,
    /// Register this client certificate (PEM) instead of making an API key.
    #[arg(long)]
    pub certificate: Option<PathBuf>,
}

/// Who ran a command, for the audit log.
fn operator() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

async fn audit_cli(store: &Store, action: &str, target: &str, detail: String) -> anyhow::Result<()> {
    let event = AuditEvent {
        at: gateway_core::interchange::format_time(OffsetDateTime::now_utc()),
        principal: operator(),
        role: Role::Admin.as_str().into(),
        action: action.into(),
        target: target.into(),
        status: 0,
        outcome: "ok".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        source: "cli".into(),
        detail,
    };
    store.audit(event).await.context("writing the audit log")?;
    Ok(())
}

/// Issues a credential; the API key alone goes to standard output (once), the rest to stderr.
pub async fn issue(config: &Config, opts: IssueOptions) -> anyhow::Result<()> {
    let store = crate::server::open_store(config).await?;
    let role = Role::parse(&opts.role).with_context(|| {
        format!("unknown role {:?}; one of department, desk_officer, operator, auditor, admin", opts.role)
    })?;
    let certificate_pem = match &opts.certificate {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let req = IssueRequest {
        principal: opts.name,
        role: Some(role),
        unit_uscc: opts.unit,
        category: opts.category,
        report_for: opts.report_for,
        grants: opts.grants,
        expires_in_days: opts.expires_days,
        certificate_pem,
    };
    let issued = super::credentials::issue(&store, req, OffsetDateTime::now_utc()).await?;
    let c = &issued.credential;
    audit_cli(&store, "credential.issue", &c.credential_id, super::credentials::describe(c)).await?;
    store.close().await;
    eprintln!(
        "issued {} {} for {} ({}{}){}",
        c.kind,
        c.credential_id,
        c.principal,
        c.role,
        c.unit_uscc.as_deref().map(|u| format!(", unit {u}")).unwrap_or_default(),
        c.expires_at.as_deref().map(|e| format!(", expires {e}")).unwrap_or_default()
    );
    if let Some(key) = issued.api_key {
        eprintln!("此密钥仅显示这一次，请立即妥善保存 · this key is shown once: keep it now");
        println!("{key}");
    }
    Ok(())
}

/// Lists credentials (never their secrets).
pub async fn list(config: &Config) -> anyhow::Result<()> {
    let store = crate::server::open_store(config).await?;
    let all = store.credentials().await?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<37} {:<12} {:<13} {:<20} {:<8} {:<20} principal",
        "id", "kind", "role", "unit", "state", "last used"
    )?;
    let now = OffsetDateTime::now_utc();
    for c in all {
        let expired = c.expires_at.as_deref().and_then(gateway_core::interchange::parse_time).is_some_and(|t| t <= now);
        let state = if c.revoked_at.is_some() {
            "revoked"
        } else if expired {
            "expired"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:<37} {:<12} {:<13} {:<20} {:<8} {:<20} {}",
            c.credential_id,
            c.kind,
            c.role,
            c.unit_uscc.as_deref().unwrap_or("-"),
            state,
            c.last_used_at.as_deref().unwrap_or("never"),
            c.principal
        )?;
    }
    Ok(())
}

/// Revokes a credential: refused from the next call on.
pub async fn revoke(config: &Config, id: &str) -> anyhow::Result<()> {
    let store = crate::server::open_store(config).await?;
    let at = gateway_core::interchange::format_time(OffsetDateTime::now_utc());
    let found = store.revoke_credential(id, &at).await?;
    if found {
        audit_cli(&store, "credential.revoke", id, format!("revoked {id}")).await?;
    }
    store.close().await;
    anyhow::ensure!(found, "no credential {id:?} (see `credential list`)");
    eprintln!("revoked {id}");
    Ok(())
}

/// Walks the audit log's chain. Exit code 1 (with every break named) if it is broken.
pub async fn verify(config: &Config) -> anyhow::Result<bool> {
    let store = crate::server::open_store(config).await?;
    let check = store.verify_audit().await?;
    store.close().await;
    match &check.head {
        Some((seq, hash)) => println!("{} entries; head {seq} {hash}", check.entries),
        None => println!("the audit log is empty"),
    }
    if check.problems.is_empty() {
        println!("intact: every entry present, unaltered and in order · 审计日志完整");
        return Ok(true);
    }
    println!("BROKEN · 审计日志已被篡改:");
    for p in &check.problems {
        println!("  entry {}: {}", p.seq, p.problem);
    }
    Ok(false)
}

/// Writes the audit log as JSON lines (one entry each, with its chain fields).
pub async fn export(config: &Config, after: i64, out: Option<PathBuf>) -> anyhow::Result<()> {
    let store = crate::server::open_store(config).await?;
    let mut sink: Box<dyn Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut after, mut written) = (after, 0_u64);
    loop {
        let page = store.audit_entries(after, 5_000).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        for e in &page {
            serde_json::to_writer(&mut sink, e)?;
            sink.write_all(b"\n")?;
            written += 1;
        }
        after = last;
    }
    sink.flush()?;
    store.close().await;
    if let Some(path) = out {
        eprintln!("{written} audit entries written to {}", path.display());
    }
    Ok(())
}
