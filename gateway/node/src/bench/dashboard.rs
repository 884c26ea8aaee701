//! `credit-gateway bench dashboard`: how fast the dashboard's pages answer with a million
//! records stored (target: under 500 ms each), beside the floor of the same server answering
//! `/healthz` in the same run.
//!
//! The store is filled through the push path (so the quality counters are real), with decision
//! dates spread over about eleven months so that the SLA window holds a realistic tenth of the
//! records; most are published on time, one in 33 is never published, and a thousand are dead
//! letters.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gateway_store::{DeadLetter, Settlement};
use serde_json::Value;
use time::OffsetDateTime;

use super::synthetic_records;
use crate::config::{Config, DashboardConfig, Department, Operator, ReportingConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardBenchOptions {
    /// Records stored before the pages are timed.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

/// One page's timings, in milliseconds.
#[derive(Debug)]
pub struct PageTiming {
    pub page: &'static str,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Debug)]
pub struct DashboardReport {
    pub records: i64,
    pub fill_secs: f64,
    pub database_mib: f64,
    /// Records the first SLA catch-up tracked, and how long it took.
    pub tracked: u64,
    pub catch_up_secs: f64,
    pub rounds: usize,
    pub floor: PageTiming,
    pub pages: Vec<PageTiming>,
}

const PAGES: [(&str, &str); 8] = [
    ("overview", "/dashboard"),
    ("SLA (default destination)", "/dashboard/sla"),
    ("SLA, one department and type", "/dashboard/sla?department=11370306MB28554702&record_type=admin_penalty"),
    ("monthly reporting", "/dashboard/reporting"),
    ("quality", "/dashboard/quality"),
    ("dead letters", "/dashboard/dead-letters"),
    ("GET /api/v1/sla", "/api/v1/sla"),
    ("GET /metrics", "/metrics"),
];

const BATCH: usize = 5_000;
/// Decision dates cycle over this many days before today.
const SPREAD_DAYS: i64 = 330;

pub async fn dashboard(opts: &DashboardBenchOptions) -> anyhow::Result<DashboardReport> {
    let dir = tempfile::tempdir()?;
    let password = "bench dashboard password";
    let units = [
        ("淄博市周村区市场监督管理局", "11370306MB28554702"),
        ("淄博市周村区生态环境分局", "11370306004217500P"),
        ("淄博市周村区应急管理局", "11370306MB28554715"),
    ];
    let config = Config {
        data_dir: dir.path().to_owned(),
        dashboard: DashboardConfig {
            operators: vec![Operator {
                name: "bench".into(),
                password_hash: crate::dashboard::auth::hash_password(password, 1_000)?,
                role: None,
            }],
        },
        reporting: ReportingConfig {
            departments: units.iter().map(|(n, u)| Department { name: (*n).into(), uscc: (*u).into() }).collect(),
            ..ReportingConfig::default()
        },
        // The pages are timed on the store as filled: no background job changes it meanwhile.
        sla: crate::config::SlaConfig { tracking_interval_secs: 0 },
        publicity: crate::config::PublicityConfig { expiry_interval_secs: 0 },
        ..Config::default()
    };
    let gw = crate::server::open_ingest(&config).await?;
    let started = Instant::now();
    fill(&gw, opts.records).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let records = gw.store.count().await?;
    gw.store.checkpoint().await?;
    let database_mib = std::fs::metadata(config.sqlite_path()).map(|m| m.len() as f64 / 1_048_576.0).unwrap_or(0.0);
    // The SLA tracking of the sink catches up on everything at once, as after an upgrade.
    let started = Instant::now();
    let sink = crate::relay::PUBLICATION;
    let routes = Arc::new(crate::relay::Routes::new(&config.member_id, None, &[], &config.relay, None));
    let scope = crate::sla::Sla::new(Arc::clone(&gw), routes, None).scope(sink);
    let tracked = gw.store.track_sla(sink, &scope, None).await?;
    let catch_up_secs = started.elapsed().as_secs_f64();
    gw.store.close().await;
    drop(gw);

    // The node as `serve` runs it, on the filled store.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = crate::server::start(Config { listen: "127.0.0.1:0".parse()?, ..config }, async {
        let _ = stopped.await;
    })
    .await?;
    let base = format!("http://{}", node.api);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let login = client
        .post(format!("{base}/dashboard/login"))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("username=bench&password={}", password.replace(' ', "+")))
        .send()
        .await?;
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("login gave no session cookie")?
        .to_owned();
    let floor = time_page(&client, &base, &cookie, "floor: GET /healthz", "/healthz", opts.rounds).await?;
    let mut pages = Vec::new();
    for (name, path) in PAGES {
        pages.push(time_page(&client, &base, &cookie, name, path, opts.rounds).await?);
    }
    let _ = stop.send(());
    node.stopped().await?;
    let report =
        DashboardReport { records, fill_secs, database_mib, tracked, catch_up_secs, rounds: opts.rounds, floor, pages };
    super::write_section(&opts.report, "## Dashboard pages", "bench dashboard", &report.to_string())?;
    Ok(report)
}

/// Pushes `n` records in batches, then settles the publication sink the way a healthy node
/// would have: each batch published three days after its decision date, except one record in 33.
async fn fill(gw: &Arc<crate::ingest::Ingest>, n: usize) -> anyhow::Result<()> {
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let mut last_seq = 0;
    let batches = n.div_ceil(BATCH);
    for b in 0..batches {
        let size = BATCH.min(n - b * BATCH);
        let decided = today - time::Duration::days(1 + (b as i64 * 7) % SPREAD_DAYS);
        let records: Vec<Value> = synthetic_records(size, 10_000 + b as u64)
            .into_iter()
            .map(|mut r| {
                let day = gateway_core::date::format_date(decided);
                r["decision_date"] = day.clone().into();
                if r["record_type"] == "admin_license" {
                    r["valid_from"] = day.into();
                } else {
                    r["penalty_effective_until"] =
                        gateway_core::date::format_date(decided + time::Duration::days(365)).into();
                }
                r
            })
            .collect();
        let answer = gw
            .push(serde_json::to_vec(&records)?.into(), OffsetDateTime::now_utc())
            .await
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
        anyhow::ensure!(answer.accepted == size, "batch {b}: {} of {size} accepted", answer.accepted);
        let queued = gw.store.queued_after(last_seq, BATCH as i64).await?;
        let Some(last) = queued.last() else { continue };
        last_seq = last.seq;
        let at = decided + time::Duration::days(3);
        let s = Settlement {
            published: queued
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 33 != 0)
                .map(|(_, q)| (q.seq, q.record_id, q.version, "bench.jsonl".to_owned()))
                .collect(),
            position: Some(last_seq),
            at: format!("{}T02:00:00.000Z", gateway_core::date::format_date(at)),
            ..Settlement::default()
        };
        gw.store.settle(crate::relay::PUBLICATION, s).await?;
        if b + 1 == batches {
            // The parent refused a thousand of the last batch for good.
            let reason = r#"{"code":"rejected","message_zh":"上级平台拒收","message_en":"refused by the parent"}"#;
            let dead = queued
                .iter()
                .take(1_000)
                .map(|q| DeadLetter {
                    seq: q.seq,
                    record_id: q.record_id,
                    version: q.version,
                    reason: reason.into(),
                    attempts: 1,
                })
                .collect();
            let at = gateway_core::date::format_timestamp(OffsetDateTime::now_utc());
            gw.store
                .settle("cn-370300", Settlement { dead, position: Some(last_seq), at, ..Settlement::default() })
                .await?;
        }
        if b % 20 == 19 {
            tracing::info!(stored = (b + 1) * BATCH, "bench dashboard: filling");
        }
    }
    Ok(())
}

async fn time_page(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    page: &'static str,
    path: &str,
    rounds: usize,
) -> anyhow::Result<PageTiming> {
    let get = || async {
        let started = Instant::now();
        let resp = client.get(format!("{base}{path}")).header(reqwest::header::COOKIE, cookie).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
        let body = resp.bytes().await?;
        anyhow::ensure!(!body.is_empty(), "{path}: empty answer");
        Ok::<Duration, anyhow::Error>(started.elapsed())
    };
    get().await?; // warm-up
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        ms.push(get().await?.as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(PageTiming { page, median: at(0.5), p95: at(0.95), max: *ms.last().unwrap_or(&0.0) })
}

impl fmt::Display for DashboardReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Dashboard pages with {} records stored\n", self.records)?;
        writeln!(
            f,
            "SQLite (`synchronous = FULL`, database {:.0} MiB), filled through the push path in {:.0} s; decision dates spread \
             over {SPREAD_DAYS} days, one record in 33 never published, 1,000 dead letters. Each page is fetched once to warm up, \
             then {} times in a row by one logged-in client over loopback HTTP; release build, 2 cores.\n",
            self.database_mib, self.fill_secs, self.rounds
        )?;
        writeln!(f, "| page | median ms | p95 ms | max ms | target |\n|---|---:|---:|---:|---|")?;
        let row = |f: &mut fmt::Formatter<'_>, t: &PageTiming, target: &str| {
            writeln!(f, "| {} | {:.1} | {:.1} | {:.1} | {target} |", t.page, t.median, t.p95, t.max)
        };
        row(f, &self.floor, "floor (same server, no store)")?;
        for p in &self.pages {
            row(f, p, if p.max < 500.0 { "< 500 ms ✔" } else { "< 500 ms ✘" })?;
        }
        let worst = self.pages.iter().map(|p| p.max).fold(0.0, f64::max);
        writeln!(f, "\nSlowest page, worst request: **{worst:.0} ms** (target 500 ms).")?;
        writeln!(
            f,
            "\nSLA tracking caught up on the whole store once before the pages were timed (as after an upgrade): {} \
             records tracked for the publication sink in {:.1} s ({:.0} records/s, in steps of 5,000). After that each \
             catch-up covers only what arrived since the last (every 10 s, and before each view).",
            self.tracked,
            self.catch_up_secs,
            self.records as f64 / self.catch_up_secs.max(1e-9)
        )
    }
}
