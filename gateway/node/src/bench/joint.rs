//! `credit-gateway bench joint`: the joint reward-and-punishment loop at scale (targets:
//! opening the cases of 100,000 list entries × 5 measures in ≤ 60 s; with 1,000,000 cases
//! stored, point-of-decision checks at ≥ 3,000/s with p99 ≤ 20 ms), beside ceilings measured
//! in the same run: the store inserting the same cases handed to it ready-made, and the same
//! HTTP server and client answering `GET /healthz` (no authentication, no store, no audit).
//!
//! One process on the machine's cores: a node with SQLite (`synchronous = FULL`) and
//! authentication on, and the client. Each check is authenticated with a department's API key
//! and written to the audit log (group commit) before it is answered, as in production.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use gateway_core::measures::Catalogue;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::evaluations::{Load, run_load};
use super::uscc_in;
use crate::auth::{IssueRequest, Role};

#[derive(Debug, Clone, clap::Args)]
pub struct JointBenchOptions {
    /// Black-list entries whose cases are opened in the timed pass (each starts 5 measures).
    #[arg(long, default_value_t = 100_000)]
    pub entries: usize,
    /// Cases stored before the checks (more entries are added untimed to reach it).
    #[arg(long, default_value_t = 1_000_000)]
    pub cases: usize,
    /// Checks timed.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Checks in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

#[derive(Debug)]
pub struct JointReport {
    pub entries: usize,
    pub opened: u64,
    pub open_secs: f64,
    pub raw_open_secs: f64,
    pub stored_cases: i64,
    pub database_mib: f64,
    pub concurrency: usize,
    pub floor: Load,
    pub checks: Load,
    pub with_measures: usize,
    /// One reading of the loop's counts (what `/metrics` and the dashboard page do per call).
    pub loop_ms: f64,
}

/// Five measures a black-list entry starts, one per department category.
const CATEGORIES: [&str; 5] =
    ["finance", "housing_construction", "market_regulation", "taxation", "development_reform"];

fn catalogue() -> anyhow::Result<Catalogue> {
    let mut text = String::from(
        "[catalogue]\nid = \"bench-measures\"\nversion = \"1\"\ntitle = \"基准测试措施清单\"\nbasis = \"基准测试\"\n",
    );
    for (i, category) in CATEGORIES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[measures]]\nid = \"bench-measure-{i}\"\ntitle = \"基准测试措施 {i}\"\nkind = \"punish\"\n\
             list_types = [\"black\"]\nbasis_item = \"基准测试条目 {i}\"\nlegal_basis = \"基准测试依据 {i}\"\n\
             implementing_category = \"{category}\"\nresponse_days = 5\nfeedback_days = 20\n\
             feedback_evidence = false\nreach = \"region\"\n"
        ));
    }
    Ok(Catalogue::parse(text.as_bytes())?)
}

/// Black-list entry `n` of 周村区 (subject `91…370306…n`).
fn entry(n: u64) -> Value {
    json!({
        "record_type": "credit_list_entry",
        "region_code": "370306",
        "list_type": "black",
        "domain": "政府采购",
        "party_name": format!("淄博基准测试商贸有限公司{n}"),
        "party_category": "legal_entity",
        "party_uscc": uscc_in("91", "370306", n),
        "legal_rep_name": "张三",
        "listing_authority": "淄博市周村区财政局",
        "listing_authority_uscc": "113703060042858757",
        "criteria_ref": "《中华人民共和国政府采购法》第七十七条",
        "listing_reason": "在政府采购活动中提供虚假材料谋取中标。",
        "listed_on": "2026-11-20",
        "valid_until": "2099-12-31",
        "status": "active",
        "source_unit": "淄博市周村区财政局",
        "source_unit_uscc": "113703060042858757",
        "disclosure_scope": "public"
    })
}

/// Pushes entries `range` through the push path, in batches.
async fn fill(gw: &Arc<crate::ingest::Ingest>, range: std::ops::Range<u64>) -> anyhow::Result<()> {
    let mut first = range.start;
    while first < range.end {
        let last = (first + 2_500).min(range.end);
        let records: Vec<Value> = (first..last).map(entry).collect();
        let answer = gw
            .push(serde_json::to_vec(&records)?.into(), OffsetDateTime::now_utc())
            .await
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
        anyhow::ensure!(
            answer.accepted == records.len(),
            "{} of {} accepted: {:?}",
            answer.accepted,
            records.len(),
            answer.outcomes.first()
        );
        first = last;
    }
    Ok(())
}

pub async fn joint(opts: &JointBenchOptions) -> anyhow::Result<JointReport> {
    let dir = tempfile::tempdir()?;
    let config = crate::config::Config {
        listen: "127.0.0.1:0".parse()?,
        auth: crate::config::AuthConfig { required: true, rate_per_second: 0.0, ..Default::default() },
        ..super::push_only_config(&dir.path().join("node"), 2_500)
    };
    let sqlite_path = config.sqlite_path();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = crate::server::start(config, async {
        let _ = stopped.await;
    })
    .await?;
    let gw = Arc::clone(&node.app.ingest);
    let now = OffsetDateTime::now_utc();
    let mut keys = Vec::new();
    for (k, category) in CATEGORIES.iter().enumerate() {
        let req = IssueRequest {
            principal: format!("基准测试部门 {k}"),
            role: Some(Role::Department),
            unit_uscc: Some(uscc_in("11", "370300", k as u64 + 1)),
            category: Some((*category).to_owned()),
            ..IssueRequest::default()
        };
        keys.push(crate::auth::credentials::issue(&gw.store, req, now).await?.api_key.context("key")?);
    }
    let catalogue = catalogue()?;

    // The timed pass: cases of `entries` list entries stored and not yet read.
    let entries = opts.entries as u64;
    fill(&gw, 0..entries).await?;
    gw.store.checkpoint().await?;
    let started = Instant::now();
    let opened = crate::joint::opener::run_once(&gw, &catalogue, now).await?;
    let open_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(opened == entries * 5, "opened {opened} cases for {entries} entries");

    // The ceiling: the same cases, ready-made, into a fresh store.
    let ceiling_store =
        gateway_store::Store::open_sqlite(&dir.path().join("ceiling.sqlite3"), gateway_store::SqliteSync::Full).await?;
    let cases = gw.store.cases(None, None, "", opened as i64 + 1).await?;
    let fresh: Vec<_> = cases.into_iter().map(|c| c.case).collect();
    let at = gateway_core::interchange::format_time(now);
    let started = Instant::now();
    ceiling_store.open_cases(&fresh, &[], &at, None).await?;
    let raw_open_secs = started.elapsed().as_secs_f64();
    drop(fresh);

    // Up to the cases wanted, untimed.
    let subjects = (opts.cases as u64).div_ceil(5).max(entries);
    fill(&gw, entries..subjects).await?;
    crate::joint::opener::run_once(&gw, &catalogue, now).await?;
    gw.store.checkpoint().await?;
    let started = Instant::now();
    let stored_cases = gw.store.case_loop("2000-01-01").await?.iter().map(|r| r.opened).sum();
    let loop_ms = started.elapsed().as_secs_f64() * 1000.0;
    let database_mib = std::fs::metadata(&sqlite_path).map(|m| m.len() as f64 / 1_048_576.0).unwrap_or(0.0);

    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let base = format!("http://{}", node.api);
    let health = format!("{base}/healthz");
    let checks_url = format!("{base}/api/v1/checks");
    // Subjects spread over twice the listed ones: about half the checks find measures.
    let check = move |key: String| {
        let url = checks_url.clone();
        move |c: &reqwest::Client, i: usize| {
            let n = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % (subjects * 2);
            c.post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(json!({"uscc": uscc_in("91", "370306", n), "matter_code": "370300-ZFCG-0001"}).to_string())
        }
    };
    run_load(&client, opts.concurrency, opts.concurrency * 4, check(keys[0].clone())).await?;
    let floor = run_load(&client, opts.concurrency, opts.requests, move |c, _| c.get(&health))
        .await?
        .named("floor: GET /healthz (no authentication, no store, no audit)");
    let checks = run_load(&client, opts.concurrency, opts.requests, check(keys[2].clone()))
        .await?
        .named("POST /api/v1/checks (API key, audited)");
    // How many of a sample of the checked subjects have a case at that department.
    let mut with_measures = 0;
    for n in (0..subjects * 2).step_by(((subjects * 2) / 1_000).max(1) as usize) {
        with_measures += usize::from(
            !gw.store.subject_cases(&uscc_in("91", "370306", n), Some(&uscc_in("11", "370300", 3))).await?.is_empty(),
        );
    }
    let _ = stop.send(());
    node.stopped().await?;
    let report = JointReport {
        entries: opts.entries,
        opened,
        open_secs,
        raw_open_secs,
        stored_cases,
        database_mib,
        concurrency: opts.concurrency,
        floor,
        checks,
        with_measures,
        loop_ms,
    };
    super::write_section(&opts.report, "## Joint reward and punishment", "bench joint", &report.to_string())?;
    Ok(report)
}

impl fmt::Display for JointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ok = |b: bool| if b { "✔" } else { "✘" };
        writeln!(f, "## Joint reward and punishment\n")?;
        writeln!(
            f,
            "A node with SQLite (`synchronous = FULL`) and authentication on, in one process with its client on 2 \
             cores; release build. The catalogue starts 5 measures per black-list entry, each at one department.\n"
        )?;
        writeln!(f, "### Opening cases (发起)\n")?;
        writeln!(f, "| what | cases | seconds | cases/s | target |\n|---|---:|---:|---:|---|")?;
        writeln!(
            f,
            "| ceiling: the same cases handed ready-made to the store (one transaction) | {} | {:.1} | {:.0} | |",
            self.opened,
            self.raw_open_secs,
            self.opened as f64 / self.raw_open_secs.max(1e-9)
        )?;
        writeln!(
            f,
            "| opener pass over {} stored list entries (read, plan, open, cursor) | {} | {:.1} | {:.0} | ≤ 60 s {} |",
            self.entries,
            self.opened,
            self.open_secs,
            self.opened as f64 / self.open_secs.max(1e-9),
            ok(self.open_secs <= 60.0)
        )?;
        writeln!(
            f,
            "\nThe pass ran at {:.0} % of the ceiling's rate.\n",
            100.0 * self.raw_open_secs / self.open_secs.max(1e-9)
        )?;
        writeln!(
            f,
            "### Point-of-decision checks (信用核查) with {} cases stored (database {:.0} MiB)\n",
            self.stored_cases, self.database_mib
        )?;
        writeln!(f, "{}", Load::TABLE_HEAD)?;
        let row = |f: &mut fmt::Formatter<'_>, l: &Load, target: String| l.row(f, &target);
        row(f, &self.floor, "ceiling (same server and client)".into())?;
        row(
            f,
            &self.checks,
            format!(
                "≥ 3,000/s {} · p99 ≤ 20 ms {}",
                ok(self.checks.per_sec >= 3_000.0),
                ok(self.checks.p99_ms <= 20.0)
            ),
        )?;
        writeln!(
            f,
            "\n{} clients in flight; subjects spread over twice the listed ones ({} of a sample of 1,000 have a \
             measure at the asking department). Checks ran at {:.0} % of the ceiling's rate.\n\n\
             Reading the loop's counts per department and month over all {} cases (what `/metrics`, \
             `GET /api/v1/cases/loop` and the dashboard page do on each call) took {:.0} ms.",
            self.concurrency,
            self.with_measures,
            100.0 * self.checks.per_sec / self.floor.per_sec.max(1e-9),
            self.stored_cases,
            self.loop_ms
        )
    }
}
