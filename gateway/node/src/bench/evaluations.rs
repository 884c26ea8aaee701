//! `credit-gateway bench evaluations`: partner lookups at 信用东营 with a million evaluation
//! results stored (targets: single lookups over mTLS at ≥ 2,000 requests/s with p99 ≤ 20 ms;
//! a bulk lookup of 1,000 USCCs in ≤ 200 ms), beside ceilings measured in the same run: the
//! same mTLS server answering `GET /federation/v1/registry` (no store, no signature, no audit)
//! at the same concurrency, and the raw signing rate of one core.
//!
//! Everything runs in one process on the machine's cores: 信用东营's node (SQLite, `synchronous
//! = FULL`, every pull written to the audit log before it is answered) and the client, which
//! presents 信用淄博's certificate and keeps its connections open, as a partner node does.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use time::OffsetDateTime;

use super::{synthetic_evaluations, uscc_in};

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluationBenchOptions {
    /// Evaluation results stored (two per company).
    #[arg(long, default_value_t = 1_000_000)]
    pub evaluations: usize,
    /// Single lookups timed.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Bulk lookups of 1,000 USCCs timed.
    #[arg(long, default_value_t = 20)]
    pub bulk_rounds: usize,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

/// Throughput and latency of one kind of request.
#[derive(Debug)]
pub struct Load {
    pub what: &'static str,
    pub requests: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug)]
pub struct EvaluationReport {
    pub stored: i64,
    pub fill_secs: f64,
    pub database_mib: f64,
    pub concurrency: usize,
    pub floor: Load,
    pub single: Load,
    pub bulk: Load,
    pub signatures_per_sec: f64,
    pub audited: usize,
}

const BATCH_COMPANIES: u64 = 2_500;

pub async fn evaluations(opts: &EvaluationBenchOptions) -> anyhow::Result<EvaluationReport> {
    crate::tls::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    crate::pki::init(&crate::pki::InitOptions::dev(&pki))?;
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    let fed = crate::config::FederationConfig::from_pki(&pki, "cn-370500", listen);
    let config = crate::config::Config {
        listen,
        data_dir: dir.path().join("dongying"),
        member_id: "cn-370500".into(),
        federation: Some(fed),
        // Only lookups are measured: 信用东营 forwards nothing and runs no background job.
        relay: crate::config::RelayConfig { enabled: false, ..Default::default() },
        sla: crate::config::SlaConfig { tracking_interval_secs: 0 },
        publicity: crate::config::PublicityConfig { expiry_interval_secs: 0 },
        ..crate::config::Config::default()
    };
    let sqlite_path = config.sqlite_path();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = crate::server::start(config, async {
        let _ = stopped.await;
    })
    .await?;
    let base = format!("https://{}", node.federation.context("the federation endpoint")?);
    let gw = Arc::clone(&node.app.ingest);

    let companies = (opts.evaluations as u64).div_ceil(2).max(1);
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let started = Instant::now();
    let mut first = 0;
    while first < companies {
        let last = (first + BATCH_COMPANIES).min(companies);
        let records = synthetic_evaluations(first..last, today);
        let answer = gw
            .push(serde_json::to_vec(&records)?.into(), OffsetDateTime::now_utc())
            .await
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
        anyhow::ensure!(answer.accepted == records.len(), "{} of {} accepted", answer.accepted, records.len());
        first = last;
        if first % 100_000 == 0 {
            tracing::info!(companies = first, "bench evaluations: filling");
        }
    }
    let fill_secs = started.elapsed().as_secs_f64();
    let stored = gw.store.count().await?;
    gw.store.checkpoint().await?;
    let database_mib = std::fs::metadata(&sqlite_path).map(|m| m.len() as f64 / 1_048_576.0).unwrap_or(0.0);

    let client = partner_client(&pki)?;
    let subject = move |i: usize| uscc_in("91", "370500", spread(i as u64) % companies);
    let lookup = |offset: usize| {
        let base = base.clone();
        move |c: &reqwest::Client, i: usize| c.get(format!("{base}/federation/v1/evaluations/{}", subject(i + offset)))
    };
    // Warm up: connections, and the pages of the index the lookups touch first.
    run_load(&client, opts.concurrency, opts.concurrency * 4, lookup(0)).await?;
    let registry = format!("{base}/federation/v1/registry");
    let floor = run_load(&client, opts.concurrency, opts.requests, move |c, _| c.get(&registry))
        .await?
        .named("floor: GET /federation/v1/registry (mTLS, no store, no signature)");
    let single = run_load(&client, opts.concurrency, opts.requests, lookup(7_919))
        .await?
        .named("GET /federation/v1/evaluations/{uscc}");

    let mut bulk_ms = Vec::new();
    for round in 0..opts.bulk_rounds.max(1) {
        let subjects: Vec<String> = (0..1_000).map(|i| subject(round * 1_000 + i + 104_729)).collect();
        let started = Instant::now();
        let resp = client
            .post(format!("{base}/federation/v1/evaluations/lookup"))
            .json(&crate::evaluations::LookupRequest { subjects, officer: None })
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "bulk lookup: {}", resp.status());
        let body = resp.bytes().await?;
        bulk_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(body.len() > 100_000, "bulk answer too small: {} bytes", body.len());
    }
    let bulk_total: f64 = bulk_ms.iter().sum();
    let bulk = Load::from_ms("POST /federation/v1/evaluations/lookup (1,000 USCCs)", bulk_ms, bulk_total / 1000.0);

    let signatures_per_sec = sign_rate();
    let audited = gw.store.pulls(Some("in"), "", 1_000_000).await?.len();
    let _ = stop.send(());
    node.stopped().await?;
    let report = EvaluationReport {
        stored,
        fill_secs,
        database_mib,
        concurrency: opts.concurrency,
        floor,
        single,
        bulk,
        signatures_per_sec,
        audited,
    };
    super::write_section(&opts.report, "## Evaluation lookups", "bench evaluations", &report.to_string())?;
    Ok(report)
}

/// 信用淄博's mutual-TLS client.
fn partner_client(pki: &std::path::Path) -> anyhow::Result<reqwest::Client> {
    let files = crate::pki::NodeFiles::new(pki, "cn-370300");
    let ca = crate::pki::ca_cert(pki);
    let tls =
        crate::tls::client_config(&crate::tls::TlsFiles { ca: &ca, cert: &files.tls_cert(), key: &files.tls_key() })?;
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls).pool_max_idle_per_host(256).build()?)
}

/// A scramble of `i` (so lookups hit the whole index, not one corner of it).
fn spread(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// `total` requests `request(client, i)`, `concurrency` in flight at once; each must answer 200.
pub(super) async fn run_load(
    client: &reqwest::Client,
    concurrency: usize,
    total: usize,
    request: impl Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> anyhow::Result<Load> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, request) = (client.clone(), Arc::clone(&next), Arc::clone(&request));
        workers.spawn(async move {
            let mut ms = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<Vec<f64>, anyhow::Error>(ms);
                }
                let t = Instant::now();
                let resp = request(&client, i).send().await?;
                let status = resp.status();
                anyhow::ensure!(
                    status.is_success(),
                    "request {i}: {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
                resp.bytes().await?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(done) = workers.join_next().await {
        all.extend(done.context("load worker")??);
    }
    Ok(Load::from_ms("", all, started.elapsed().as_secs_f64()))
}

impl Load {
    pub(super) fn from_ms(what: &'static str, mut ms: Vec<f64>, secs: f64) -> Load {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms.get(((ms.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
        Load {
            what,
            requests: ms.len(),
            per_sec: ms.len() as f64 / secs.max(1e-9),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }

    /// The heading of a table of loads.
    pub(super) const TABLE_HEAD: &str =
        "| requests | count | per second | p50 ms | p99 ms | max ms | target |\n|---|---:|---:|---:|---:|---:|---|";

    /// This load as a row of that table.
    pub(super) fn row(&self, f: &mut fmt::Formatter<'_>, target: &str) -> fmt::Result {
        writeln!(
            f,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {target} |",
            self.what, self.requests, self.per_sec, self.p50_ms, self.p99_ms, self.max_ms
        )
    }

    pub(super) fn named(self, what: &'static str) -> Load {
        Load { what, ..self }
    }
}

/// Ed25519 signatures per second on one core (the answer's signature is on every request).
fn sign_rate() -> f64 {
    let key = gateway_core::crypto::SigningKey::from_secret(gateway_core::crypto::Alg::EdDsa, &[7; 32]);
    let Ok(key) = key else { return 0.0 };
    let message = [0u8; 1200];
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_millis(500) {
        std::hint::black_box(key.sign(&message));
        n += 1;
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

impl fmt::Display for EvaluationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Evaluation lookups with {} evaluation results stored\n", self.stored)?;
        writeln!(
            f,
            "信用东营's node (SQLite `synchronous = FULL`, database {:.0} MiB, filled through the push path in {:.0} s) \
             answers 信用淄博's client over mutual TLS on loopback, in one process on 2 cores; the client keeps {} \
             requests in flight on pooled connections. Every answer is signed (Ed25519) and every pull is in the audit \
             log before it is answered (group commit). Subjects are spread over the whole store; release build.\n",
            self.database_mib, self.fill_secs, self.concurrency
        )?;
        writeln!(f, "{}", Load::TABLE_HEAD)?;
        let row = |f: &mut fmt::Formatter<'_>, l: &Load, target: String| l.row(f, &target);
        row(f, &self.floor, "ceiling (same server and client)".into())?;
        let ok = |b: bool| if b { "✔" } else { "✘" };
        row(
            f,
            &self.single,
            format!(
                "≥ 2,000/s {} · p99 ≤ 20 ms {}",
                ok(self.single.per_sec >= 2_000.0),
                ok(self.single.p99_ms <= 20.0)
            ),
        )?;
        row(f, &self.bulk, format!("≤ 200 ms {}", ok(self.bulk.max_ms <= 200.0)))?;
        writeln!(
            f,
            "\nSingle lookups ran at {:.0} % of the ceiling's rate. Raw Ed25519 signing on one core in the same run: \
             {:.0} signatures/s. Pulls in 信用东营's audit log after the run: {}.",
            100.0 * self.single.per_sec / self.floor.per_sec.max(1e-9),
            self.signatures_per_sec,
            self.audited
        )
    }
}
