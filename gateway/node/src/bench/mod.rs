//! `credit-gateway bench ingest`: records/s through the real HTTP API into SQLite, beside the
//! raw ceiling of the same store measured in the same run, written to `docs/benchmarks.md`.

mod access;
mod bodies;
mod dashboard;
mod envelopes;
mod evaluations;
mod import;
mod joint;
mod postgres;
pub mod proxy;
mod relay;
mod soak;
pub use access::{AccessBenchOptions, AccessReport, access};
pub use bodies::{BodiesBenchOptions, BodiesReport, bodies};
pub use dashboard::{DashboardBenchOptions, DashboardReport, dashboard};
pub use envelopes::{EnvelopeOptions, EnvelopeReport, envelopes};
pub use evaluations::{EvaluationBenchOptions, EvaluationReport, evaluations};
pub use import::{ImportBenchOptions, ImportReport, import, import_phase};
pub use joint::{JointBenchOptions, JointReport, joint};
pub use postgres::{PostgresIngestReport, PostgresRound, ingest_postgres};
pub use relay::{RelayOptions, RelayReport, relay};
pub use soak::{SoakOptions, SoakReport, soak};

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gateway_core::ident::uscc_check_char;
use gateway_store::Incoming;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::date;

use crate::config::Config;
use crate::ingest::Ingest;
use gateway_core::date::today_in_china;

#[derive(Debug, Clone, clap::Args)]
pub struct IngestOptions {
    /// Records per run.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Measure on PostgreSQL instead of the embedded SQLite: the server's URL
    /// (`postgres://user@host:5432/postgres`). The bench makes databases of its own there and
    /// drops them afterwards.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Rounds, back to back; the report gives each and the median.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

/// The figures of one run's rounds.
#[derive(Debug)]
pub struct IngestReport {
    pub records: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub mean_record_bytes: usize,
    pub rounds: Vec<IngestRound>,
}

/// One round: each phase on its own fresh database, in this order.
#[derive(Debug, Clone, Copy)]
pub struct IngestRound {
    pub validate_rate: f64,
    pub raw_rate: f64,
    pub http_rate: f64,
}

impl IngestRound {
    pub fn ratio(&self) -> f64 {
        self.http_rate / self.raw_rate
    }
}

impl IngestReport {
    /// The round with the median HTTP / raw ratio.
    pub fn median(&self) -> IngestRound {
        let mut by_ratio = self.rounds.clone();
        by_ratio.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        by_ratio[by_ratio.len() / 2]
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Ingest (foundation): HTTP push into SQLite vs the raw store ceiling\n")?;
        writeln!(
            f,
            "{} synthetic records (mean {} bytes of JSON, Chinese text), batches of {}, {} concurrent HTTP clients, \
             SQLite in WAL mode with `synchronous = FULL` (every batch on disk before it is answered), {} cores.\n",
            self.records,
            self.mean_record_bytes,
            self.batch,
            self.concurrency,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        )?;
        let median = self.median();
        writeln!(f, "| measurement (the round with the median HTTP / raw ratio) | records/s |")?;
        writeln!(f, "|---|---:|")?;
        writeln!(
            f,
            "| validation only (parse + schema + domain rules + JCS + SHA-256, all cores, batch by batch) | {:.0} |",
            median.validate_rate
        )?;
        writeln!(
            f,
            "| raw store ceiling (pre-validated batches straight into `Store::ingest`, same concurrency) | {:.0} |",
            median.raw_rate
        )?;
        writeln!(
            f,
            "| **HTTP API** (`POST /api/v1/records`, parse + validate + store + answer) | **{:.0}** |",
            median.http_rate
        )?;
        writeln!(f, "\n| round | validation | raw store | HTTP | HTTP / raw |")?;
        writeln!(f, "|---:|---:|---:|---:|---:|")?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "| {} | {:.0} | {:.0} | {:.0} | {:.2}× |",
                i + 1,
                r.validate_rate,
                r.raw_rate,
                r.http_rate,
                r.ratio()
            )?;
        }
        let lowest = |g: fn(&IngestRound) -> f64| self.rounds.iter().map(g).fold(f64::INFINITY, f64::min);
        writeln!(
            f,
            "\nHTTP / raw ceiling, median of {} rounds = **{:.2}×**, lowest {:.2}× (target ≥ 0.85× in every round, \
             issue #28). Validation: lowest {:.0} records/s (target ≥ 200,000).",
            self.rounds.len(),
            median.ratio(),
            lowest(IngestRound::ratio),
            lowest(|r| r.validate_rate)
        )
    }
}

/// Runs the ingest benchmark: `opts.rounds` rounds back to back.
pub async fn ingest(opts: &IngestOptions) -> anyhow::Result<IngestReport> {
    if opts.batch == 0 || opts.records < opts.batch || opts.concurrency == 0 {
        bail!("need records ≥ batch ≥ 1 and concurrency ≥ 1");
    }
    let pushes = Pushes::synthetic(opts.records, opts.batch);
    let mut rounds = Vec::with_capacity(opts.rounds);
    for _ in 0..opts.rounds.max(1) {
        rounds.push(round(opts, pushes.texts.clone(), pushes.bodies.clone()).await?);
    }
    let report = IngestReport {
        records: opts.records,
        batch: opts.batch,
        concurrency: opts.concurrency,
        mean_record_bytes: pushes.mean_record_bytes,
        rounds,
    };
    write_section(&opts.report, "## Ingest (foundation)", "bench ingest", &report.to_string())?;
    Ok(report)
}

/// One round of validation alone, the store alone and HTTP, each into a fresh database.
async fn round(opts: &IngestOptions, texts: Vec<String>, bodies: Vec<bytes::Bytes>) -> anyhow::Result<IngestRound> {
    let dir = tempfile::tempdir()?;
    let config = |name: &str| push_only_config(&dir.path().join(name), opts.batch);

    // Validation alone, and the rows the raw run inserts.
    let gw = crate::server::open_ingest(&config("raw")).await?;
    let (validated, validate_rate) = validate_all(&gw, texts, opts.batch).await?;

    let raw_rate = raw_store_rate(&gw, validated, opts.batch, opts.concurrency).await?;
    gw.store.close().await;
    drop(gw);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let http_config = Config { listen: "127.0.0.1:0".parse()?, ..config("http") };
    let node = crate::server::start(http_config, async {
        let _ = stopped.await;
    })
    .await?;
    let http_rate =
        http_rate(&[format!("http://{}/api/v1/records", node.api)], bodies, opts.concurrency, opts.records).await?;
    let stored = node.app.ingest.store.count().await?;
    let _ = stop.send(());
    node.stopped().await?;
    if stored != opts.records as i64 {
        bail!("HTTP run stored {stored} records, expected {}", opts.records);
    }
    Ok(IngestRound { validate_rate, raw_rate, http_rate })
}

/// The ingest benches' records: each as JSON text, their mean size, and the push bodies of
/// `batch` records each.
pub(crate) struct Pushes {
    pub(crate) texts: Vec<String>,
    pub(crate) mean_record_bytes: usize,
    pub(crate) bodies: Vec<bytes::Bytes>,
}

impl Pushes {
    pub(crate) fn synthetic(records: usize, batch: usize) -> Self {
        let texts: Vec<String> = synthetic_records(records, 1).iter().map(Value::to_string).collect();
        let mean_record_bytes = texts.iter().map(String::len).sum::<usize>() / texts.len().max(1);
        let bodies = texts.chunks(batch).map(|c| bytes::Bytes::from(format!("[{}]", c.join(",")))).collect();
        Self { texts, mean_record_bytes, bodies }
    }
}

/// Validates every record text on all cores as the push path does, `batch` records at a time,
/// and gives records/s; then, untimed, the rows for the store-alone run. The timed pass drops
/// each batch once it is checked, as the push path does once a batch is stored: holding all
/// the checked records at once had the kernel zero fresh pages for them, about a fifth of
/// the time measured (a cost of the bench, not of validation).
pub(crate) async fn validate_all(
    gw: &Arc<Ingest>,
    texts: Vec<String>,
    batch: usize,
) -> anyhow::Result<(Vec<Incoming>, f64)> {
    use rayon::prelude::*;
    let today = today_in_china(OffsetDateTime::now_utc());
    let n = texts.len();
    let gw = Arc::clone(gw);
    let check = move |texts: &[String]| {
        texts
            .par_iter()
            .map(|t| gw.validator.check_str(t, today).map(|r| gw.incoming(r)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("synthetic record rejected: {e:?}"))
    };
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for chunk in texts.chunks(batch.max(1)) {
            drop(check(chunk)?);
        }
        let elapsed = started.elapsed();
        Ok((check(&texts)?, rate(n, elapsed)))
    })
    .await?
}

/// A node for measuring the push path alone, with batches of `batch` records: no SLA tracker,
/// no expiry job (before `server::start`, the benchmarks ran the API alone).
pub(crate) fn push_only_config(data_dir: &std::path::Path, batch: usize) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        sla: crate::config::SlaConfig { tracking_interval_secs: 0 },
        publicity: crate::config::PublicityConfig { expiry_interval_secs: 0 },
        limits: crate::config::Limits {
            max_batch_records: batch.max(5_000),
            max_body_bytes: 64 << 20,
            ..crate::config::Limits::default()
        },
        ..Config::default()
    }
}

/// The store alone: pre-validated batches handed to `Store::ingest` by as many concurrent
/// callers as the HTTP run has clients, so both runs can share commits the same way.
pub(crate) async fn raw_store_rate(
    gw: &Arc<Ingest>,
    rows: Vec<Incoming>,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let n = rows.len();
    let mut batches: Vec<Vec<Incoming>> = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        batches.push(rows.by_ref().take(batch).collect());
    }
    let gw = Arc::clone(gw);
    let elapsed = drain(batches, concurrency, move |chunk| {
        let gw = Arc::clone(&gw);
        async move {
            gw.store.ingest("cn-370306", chunk, OffsetDateTime::now_utc()).await?;
            Ok(())
        }
    })
    .await?;
    Ok(rate(n, elapsed))
}

/// Pushes every body, spread over `urls` (replicas of one node) in turn, with `concurrency`
/// clients; records/s.
async fn http_rate(
    urls: &[String],
    bodies: Vec<bytes::Bytes>,
    concurrency: usize,
    records: usize,
) -> anyhow::Result<f64> {
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let pushes: Vec<(String, bytes::Bytes)> =
        bodies.into_iter().enumerate().map(|(i, body)| (urls[i % urls.len()].clone(), body)).collect();
    let elapsed = drain(pushes, concurrency, move |(url, body)| {
        let client = client.clone();
        async move {
            let resp = client.post(&url).header("content-type", "application/json").body(body).send().await?;
            if !resp.status().is_success() {
                bail!("push answered {}", resp.status());
            }
            let answer: Summary = resp.json().await?;
            if answer.accepted != answer.received {
                bail!("{} of {} synthetic records not accepted", answer.received - answer.accepted, answer.received);
            }
            Ok(())
        }
    })
    .await?;
    Ok(rate(records, elapsed))
}

/// Runs `work` over every item with `concurrency` workers and says how long it took.
pub(crate) async fn drain<T, F, Fut>(items: Vec<T>, concurrency: usize, work: F) -> anyhow::Result<Duration>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(items));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (queue, work) = (Arc::clone(&queue), work.clone());
        workers.spawn(async move {
            loop {
                let next = queue.lock().map_err(|_| anyhow::anyhow!("queue poisoned"))?.pop();
                let Some(item) = next else { return Ok::<(), anyhow::Error>(()) };
                work(item).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("bench worker panicked")??;
    }
    Ok(started.elapsed())
}

/// The counts of a push answer; the per-record outcomes are skipped.
#[derive(serde::Deserialize)]
struct Summary {
    received: usize,
    accepted: usize,
}

/// One figure of a node's `/metrics` (`name` with its labels, as the line starts), if it
/// answers and has it.
pub(crate) async fn metric(client: &reqwest::Client, api: &str, name: &str) -> Option<f64> {
    let text = client.get(format!("{api}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
}

/// Polls `check` every `every` until it holds, for at most `timeout`.
pub(crate) async fn wait_until(
    what: &str,
    every: Duration,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// CPU seconds the whole machine has spent busy (all cores, every process; `/proc/stat`), to
/// set a phase's cost beside its rate where the gateway, a database server and the bench's
/// clients share the cores. `None` where unreadable (not Linux).
pub(crate) fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> =
        text.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal, in USER_HZ (100 on Linux) ticks.
    let busy = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / 100.0)
}

pub(crate) fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The number after `key:` in `/proc/<pid>/<file>` (`self` for this process), without a
/// trailing `kB` unit, e.g. `VmHWM` of `status` or `write_bytes` of `io`; `None` where
/// unreadable (not Linux, or the process is gone).
pub(crate) fn proc_value(pid: Option<u32>, file: &str, key: &str) -> Option<f64> {
    let pid = pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Replaces the section that starts with `heading` in a Markdown file (or appends it).
pub fn write_section(report: &str, heading: &str, command: &str, section: &str) -> anyhow::Result<()> {
    if report == "-" {
        return Ok(());
    }
    let path = std::path::Path::new(report);
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nFigures from `credit-gateway bench …` runs; each section is rewritten by its command.\n".into()
    });
    let mut out = String::new();
    let mut skipping = false;
    for line in old.lines() {
        if line.starts_with(heading) {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("## ") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    let stamp = gateway_core::date::format_timestamp(OffsetDateTime::now_utc());
    out.push_str(&format!("\n{}\n_Run {stamp} with `credit-gateway {command}`._\n", section.trim_end()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, out.replace("\n\n\n", "\n\n"))?;
    Ok(())
}

/// A valid USCC derived from `n`, with the given two-character prefix.
fn uscc(prefix: &str, n: u64) -> String {
    uscc_in(prefix, "370306", n)
}

/// A valid USCC derived from `n`, with the given prefix and region code.
pub fn uscc_in(prefix: &str, region: &str, n: u64) -> String {
    let first17 = format!("{prefix}{region}{:09}", n % 1_000_000_000);
    let check = uscc_check_char(&first17).unwrap_or('0');
    format!("{first17}{check}")
}

/// Evaluation results as 信用东营 holds them, two per subject (USCCs `uscc_in("91", "370500",
/// k)` for k in `subjects`): 纳税信用 2014 (public; grades cycle A, B, C, D, M, M without a
/// score) valid for a year from a month ago, and 公共信用综合评价 2024.2 (gov_shared; 优 良 中 差)
/// valid for this quarter.
pub fn synthetic_evaluations(subjects: std::ops::Range<u64>, today: time::Date) -> Vec<Value> {
    let day = |offset: i64| gateway_core::date::format_date(today + time::Duration::days(offset));
    let tax_office = ("国家税务总局东营市税务局", "11370500MB1C435782");
    let credit_centre = ("东营市公共信用信息中心", "12370500MB2850210W");
    let mut out = Vec::with_capacity(subjects.clone().count() * 2);
    for k in subjects {
        let subject = uscc_in("91", "370500", k);
        let name = format!("东营示例企业{k:06}有限公司");
        let grade = ["A", "B", "C", "D", "M"][(k % 5) as usize];
        let mut tax = json!({
            "record_type": "evaluation_result", "region_code": "370500",
            "scheme_id": "tax_credit", "scheme_version": "2014",
            "subject_name": name, "subject_uscc": subject, "grade": grade,
            "period": format!("{}", today.year() - 1),
            "valid_from": day(-30), "valid_to": day(335),
            "evaluator": tax_office.0, "evaluator_uscc": tax_office.1, "evaluated_on": day(-35),
            "source_unit": tax_office.0, "source_unit_uscc": tax_office.1, "disclosure_scope": "public",
        });
        if grade != "M" {
            tax["score"] = json!(95 - (k % 5) * 15);
        }
        out.push(tax);
        let composite = ["优", "良", "中", "差"][(k % 4) as usize];
        out.push(json!({
            "record_type": "evaluation_result", "region_code": "370500",
            "scheme_id": "public_credit_composite", "scheme_version": "2024.2",
            "subject_name": name, "subject_uscc": subject, "grade": composite,
            "score": 900 - (k % 4) * 100,
            "period": format!("{}-Q{}", today.year(), (u8::from(today.month()) - 1) / 3 + 1),
            "valid_from": day(-10), "valid_to": day(80),
            "evaluator": credit_centre.0, "evaluator_uscc": credit_centre.1, "evaluated_on": day(-12),
            "source_unit": credit_centre.0, "source_unit_uscc": credit_centre.1, "disclosure_scope": "gov_shared",
        }));
    }
    out
}

/// The 周村区 departments the synthetic records come from (name, 统一社会信用代码): the demo
/// tells a newcomer to import a monthly report as the first one, so it shows as one department.
pub const SAMPLE_UNITS: &[(&str, &str)] = &[
    ("淄博市周村区市场监督管理局", "11370306MB28554702"),
    ("淄博市周村区生态环境分局", "11370306004217500P"),
    ("淄博市周村区应急管理局", "11370306MB28554715"),
];

/// Deterministic, realistic 行政处罚 / 行政许可 records (≈ 900 bytes of JSON each), every one
/// valid and with its own natural key. `seed` separates runs that must not collide.
pub fn synthetic_records(n: usize, seed: u64) -> Vec<Value> {
    const UNITS: &[(&str, &str)] = SAMPLE_UNITS;
    const FACTS: &[&str] = &[
        "当事人在其经营场所销售的预包装食品标签不符合食品安全国家标准，经抽样检验，标签中未标注生产日期和保质期，违反了《中华人民共和国食品安全法》第六十七条的规定。",
        "当事人未按规定设置危险废物识别标志，且危险废物贮存场所未采取防扬散、防流失、防渗漏措施，违反了《中华人民共和国固体废物污染环境防治法》第七十七条的规定。",
        "当事人未对从业人员进行安全生产教育和培训，未如实记录安全生产教育和培训情况，违反了《中华人民共和国安全生产法》第二十八条的规定。",
    ];
    (0..n)
        .map(|i| {
            let k = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            let (unit, unit_uscc) = UNITS[i % UNITS.len()];
            let decided = date!(2026 - 03 - 02) + time::Duration::days((k % 200) as i64);
            let party_uscc = uscc("91", k.wrapping_mul(7919));
            if i % 4 == 3 {
                json!({
                    "record_type": "admin_license",
                    "region_code": "370306",
                    "source_unit": unit, "source_unit_uscc": unit_uscc, "disclosure_scope": "public",
                    "party_name": format!("淄博周村第{k}号商贸有限公司"), "party_category": "legal_entity",
                    "party_uscc": party_uscc, "legal_rep_name": "王建国",
                    "decision_doc_title": format!("关于淄博周村第{k}号商贸有限公司食品经营许可的决定"),
                    "decision_doc_no": format!("周市监许字〔2026〕第{k}号"),
                    "license_category": "普通", "license_cert_name": "食品经营许可证",
                    "license_no": format!("JY1370306{k:08}"),
                    "license_content": "预包装食品（含冷藏冷冻食品）销售，散装食品（不含冷藏冷冻食品）销售，热食类食品制售。",
                    "decision_date": gateway_core::date::format_date(decided),
                    "valid_from": gateway_core::date::format_date(decided),
                    "valid_to": "2031-03-01",
                    "issuing_authority": unit, "issuing_authority_uscc": unit_uscc, "status": "有效"
                })
            } else {
                json!({
                    "record_type": "admin_penalty",
                    "region_code": "370306",
                    "source_unit": unit, "source_unit_uscc": unit_uscc, "disclosure_scope": "public",
                    "party_name": format!("淄博周村第{k}号商贸有限公司"), "party_category": "legal_entity",
                    "party_uscc": party_uscc, "legal_rep_name": "李红梅",
                    "decision_doc_no": format!("周市监罚〔2026〕{k}号"),
                    "violation_type": "违反食品安全管理规定",
                    "violation_facts": FACTS[i % FACTS.len()],
                    "legal_basis": "《中华人民共和国食品安全法》第一百二十五条第一款第二项",
                    "penalty_categories": ["警告", "罚款"],
                    "penalty_content": format!("给予警告，并处罚款{}元", 2000 + k % 50 * 100),
                    "fine_amount_wan": format!("{}", (2000 + k % 50 * 100) as f64 / 10_000.0),
                    "decision_date": gateway_core::date::format_date(decided),
                    "penalty_effective_until": gateway_core::date::format_date(decided + time::Duration::days(365)),
                    "penalizing_authority": unit, "penalizing_authority_uscc": unit_uscc,
                    "dishonesty_level": "general"
                })
            }
        })
        .collect()
}
