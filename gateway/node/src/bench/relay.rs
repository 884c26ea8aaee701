//! `credit-gateway bench relay`: records pushed into 周村区 travelling through 信用淄博 and 信用山东
//! to 信用中国, four `serve` processes over mutual TLS on this machine, each with SQLite
//! (`synchronous = FULL`) and its relay. Measures the time for a bulk load to arrive at
//! national, the district → national latency at a steady push rate, and each node's peak RSS,
//! beside the single-node HTTP ingest rate measured in the same run.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::Row;

use super::postgres::Scratch;
use super::synthetic_records;
use crate::config::RelayConfig;

const CHAIN: [(&str, &str); 4] =
    [("cn-370306", "周村区"), ("cn-370300", "信用淄博"), ("cn-370000", "信用山东"), ("cn-000000", "信用中国")];

#[derive(Debug, Clone, clap::Args)]
pub struct RelayOptions {
    /// Records of the bulk load.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Records per push request.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Records per second of the steady phase.
    #[arg(long, default_value_t = 2_000)]
    pub rate: usize,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 30)]
    pub steady_secs: u64,
    /// Most records per envelope (`relay.batch_max`).
    #[arg(long, default_value_t = RelayConfig::default().batch_max)]
    pub envelope_max: usize,
    /// `relay.linger_ms` of every node.
    #[arg(long, default_value_t = RelayConfig::default().linger_ms)]
    pub linger_ms: u64,
    /// Give every node a database of its own on this PostgreSQL server
    /// (`postgres://user@host:5432/postgres`) instead of SQLite; the bench makes the databases
    /// and drops them afterwards.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

#[derive(Debug)]
pub struct RelayReport {
    pub records: usize,
    pub batch: usize,
    /// Single-node HTTP ingest of the same records (the ceiling of the first hop).
    pub single_node_rate: f64,
    /// CPU seconds that single node used for it.
    pub single_node_cpu_seconds: f64,
    /// Seconds from the first push until national held every record.
    pub bulk_seconds: f64,
    /// Seconds the pushes into the district took during the bulk load.
    pub bulk_push_seconds: f64,
    pub steady_rate: f64,
    pub steady_records: usize,
    /// Latency percentiles, district acceptance → national receipt, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Peak resident set per node, MiB, in chain order.
    pub peak_rss_mib: Vec<(String, f64)>,
    /// CPU seconds (user + system) each node had used when the bulk load was complete, in
    /// chain order: with the cores, it bounds what the bulk figure can be on this machine.
    pub bulk_cpu_seconds: Vec<(String, f64)>,
    /// MiB each node had written to storage (its WAL and checkpoints into the database) when
    /// the bulk load was complete, in chain order: copying them is much of the kernel's share.
    pub bulk_written_mib: Vec<(String, f64)>,
    /// CPU seconds each node used over the whole run (bulk and steady phases), after its SLA
    /// views brought every tracking up to date: work deferred past the bulk figure's end is
    /// counted here.
    pub total_cpu_seconds: Vec<(String, f64)>,
    /// MiB the four nodes wrote to storage over the whole run, read with `total_cpu_seconds`.
    pub total_written_mib: f64,
    /// CPU seconds of the whole machine (the nodes, a database server, the bench) from the
    /// first push until the bulk load was complete.
    pub bulk_machine_cpu_seconds: f64,
    pub envelope_max: usize,
    pub linger_ms: u64,
    /// The PostgreSQL server the nodes had their databases on (`None`: SQLite files).
    pub postgres: Option<String>,
}

impl fmt::Display for RelayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (heading, storage) = match &self.postgres {
            None => ("Relay:", "SQLite (`synchronous = FULL`)".to_owned()),
            Some(server) => {
                ("Relay on PostgreSQL:", format!("a database of its own on one PostgreSQL server ({server})"))
            }
        };
        writeln!(f, "## {heading} 周村区 → 信用淄博 → 信用山东 → 信用中国 over mutual TLS\n")?;
        writeln!(
            f,
            "Four `credit-gateway serve` processes on this machine ({} cores), each with {storage} \
             and its relay (envelopes of up to {} records, {} ms linger); every \
             record is validated, stored and signed for at each of the four nodes. Pushes of {} records.\n",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            self.envelope_max,
            self.linger_ms,
            self.batch
        )?;
        writeln!(f, "| measurement | figure | target |")?;
        writeln!(f, "|---|---:|---:|")?;
        writeln!(
            f,
            "| ceiling: one node alone, HTTP ingest of the same records | {:.0} records/s | |",
            self.single_node_rate
        )?;
        writeln!(
            f,
            "| **bulk: {} records pushed into 周村区, all at 信用中国** | **{:.1} s** ({:.0} records/s) | ≤ 20 s |",
            self.records,
            self.bulk_seconds,
            self.records as f64 / self.bulk_seconds
        )?;
        writeln!(f, "| of which pushing into 周村区 | {:.1} s | |", self.bulk_push_seconds)?;
        writeln!(
            f,
            "| steady push rate achieved ({} records) | {:.0} records/s | 2,000 |",
            self.steady_records, self.steady_rate
        )?;
        writeln!(
            f,
            "| **latency 周村区 accepted → 信用中国 received, p99** | **{:.0} ms** (p50 {:.0} ms, max {:.0} ms) | ≤ 1,000 ms |",
            self.p99_ms, self.p50_ms, self.max_ms
        )?;
        for (member, mib) in &self.peak_rss_mib {
            writeln!(f, "| peak RSS {member} | {mib:.0} MiB | |")?;
        }
        for (member, secs) in &self.bulk_cpu_seconds {
            writeln!(
                f,
                "| CPU used by {member} from the first push until the bulk load was at 信用中国 | {secs:.1} s | |"
            )?;
        }
        // On PostgreSQL the server writes, not the nodes: their own figures would read 0.
        if self.postgres.is_none() {
            for (member, mib) in &self.bulk_written_mib {
                writeln!(f, "| written to storage by {member} until the bulk load was at 信用中国 | {mib:.0} MiB | |")?;
            }
        }
        for (member, secs) in &self.total_cpu_seconds {
            writeln!(f, "| CPU used by {member} over the whole run, SLA tracking up to date | {secs:.1} s | |")?;
        }
        if self.postgres.is_none() {
            writeln!(
                f,
                "| written to storage by the four nodes over the whole run, SLA tracking up to date | {:.0} MiB | |",
                self.total_written_mib
            )?;
        }
        writeln!(
            f,
            "| CPU of the whole machine (nodes, database server, clients) until the bulk load was at 信用中国 | {:.1} s | |",
            self.bulk_machine_cpu_seconds
        )?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu: f64 = self.bulk_cpu_seconds.iter().map(|(_, s)| s).sum();
        writeln!(
            f,
            "| CPU of the four nodes / ({cores} cores × bulk seconds) | {:.0} % | |",
            100.0 * cpu / (cores as f64 * self.bulk_seconds)
        )?;
        // The chain's CPU is one ingest (at 周村区) and three hops (send, receive, store).
        let per_record_us = |secs: f64| secs * 1e6 / self.records as f64;
        let ingest_us = per_record_us(self.single_node_cpu_seconds);
        let hop_us = (per_record_us(cpu) - ingest_us) / 3.0;
        writeln!(f, "| CPU per record of a one-node HTTP ingest (the same pushes) | {ingest_us:.1} µs | |")?;
        writeln!(
            f,
            "| **CPU per record per hop** (the four nodes' CPU less one ingest, over 3 hops) | **{hop_us:.1} µs** \
             ({:.2}× the ingest's) | ≤ 1.2× |",
            hop_us / ingest_us
        )?;
        writeln!(
            f,
            "\nBulk end to end / one-node ingest ceiling = **{:.2}×** (four nodes share the cores; each record is \
             handled four times).",
            (self.records as f64 / self.bulk_seconds) / self.single_node_rate
        )
    }
}

/// A `serve` process of the benchmark; dropping it kills it (SIGKILL).
pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) api: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `serve` with `args`, its log going to `log`, and waits until it listens.
    pub(super) fn start(args: &[String], log: Stdio) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("serve")
            .args(args)
            // `BENCH_NODE_LOG` (a `RUST_LOG` filter) lets a profiling run see, for example, every
            // statement's time (`sqlx::query=debug`); the nodes log warnings only by default.
            .env("RUST_LOG", std::env::var("BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting a node")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                bail!("a node exited before listening");
            }
            if let Some(api) = line.trim().strip_prefix("credit-gateway listening on ") {
                return Ok(Proc { api: api.to_owned(), child });
            }
        }
    }

    /// Peak resident set (VmHWM) in MiB, from `/proc`.
    pub(super) fn peak_rss_mib(&self) -> f64 {
        super::proc_value(Some(self.child.id()), "status", "VmHWM").map_or(0.0, |kb| kb / 1024.0)
    }

    /// CPU seconds used so far (user + system, all threads), from `/proc/<pid>/stat`.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th
        // fields of the line, in clock ticks (USER_HZ, 100 on Linux).
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// MiB written to storage so far (`write_bytes` of `/proc/<pid>/io`: pages the process
    /// dirtied, whether or not yet flushed).
    fn written_mib(&self) -> f64 {
        super::proc_value(Some(self.child.id()), "io", "write_bytes").map_or(0.0, |b| b / (1024.0 * 1024.0))
    }
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) async fn stored(client: &reqwest::Client, api: &str) -> u64 {
    super::metric(client, api, "credit_gateway_records_stored").await.map_or(0, |v| v as u64)
}

/// Pushes every body with `concurrency` clients at once.
pub(super) async fn push_all(
    client: &reqwest::Client,
    api: &str,
    bodies: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    let bodies = std::sync::Arc::new(bodies.to_vec());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, api, bodies, next) = (client.clone(), api.to_owned(), bodies.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(body) = bodies.get(i) else { return anyhow::Ok(()) };
                let resp = client
                    .post(format!("{api}/api/v1/records"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "push answered {}", resp.status());
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok(())
}

/// Waits until the node at `api` holds `n` records. It looks only every quarter second: each
/// look costs the node a count of its records and its SLA views, and looking every few
/// milliseconds slowed the very node being timed. Arrival times come from the node's own
/// `received_at` (see [`last_received`]), so the interval does not blur them.
async fn wait_for_count(client: &reqwest::Client, api: &str, n: u64, timeout: Duration) -> anyhow::Result<()> {
    let what = format!("{api} holding {n} records");
    super::wait_until(&what, Duration::from_millis(250), timeout, async || stored(client, api).await >= n).await
}

pub(super) fn bodies(records: &[Value], batch: usize) -> Vec<String> {
    records.chunks(batch).map(|c| serde_json::to_string(c).unwrap_or_default()).collect()
}

/// Where a node of the bench keeps its records.
enum NodeDb {
    Sqlite(PathBuf),
    Postgres(String),
}

impl NodeDb {
    /// The `database_url` line of the node's configuration, if it needs one.
    fn config_line(&self) -> String {
        match self {
            NodeDb::Sqlite(_) => String::new(),
            NodeDb::Postgres(url) => format!("database_url = {url:?}\n"),
        }
    }
}

/// A connection to a node's database for reading what it holds (the node may still be running).
async fn connect_to(db: &NodeDb) -> anyhow::Result<sqlx::AnyPool> {
    sqlx::any::install_default_drivers();
    let url = match db {
        NodeDb::Sqlite(dir) => format!("sqlite://{}?mode=ro", dir.join("gateway.sqlite").display()),
        NodeDb::Postgres(url) => url.clone(),
    };
    Ok(sqlx::pool::PoolOptions::<sqlx::Any>::new().max_connections(1).connect(&url).await?)
}

/// The latest `received_at` in the node database at `db`.
async fn last_received(db: &NodeDb) -> anyhow::Result<String> {
    let pool = connect_to(db).await?;
    let last: Option<String> = sqlx::query_scalar("SELECT max(received_at) FROM records").fetch_one(&pool).await?;
    pool.close().await;
    last.context("no records at all")
}

/// `received_at` by record id, for records received at or after `since`.
async fn received(db: &NodeDb, since: &str) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let pool = connect_to(db).await?;
    let rows = sqlx::query("SELECT record_id, received_at FROM records WHERE received_at >= $1")
        .bind(since)
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

fn parse_ms(t: &str) -> Option<i128> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

/// Runs the relay benchmark.
pub async fn relay(opts: &RelayOptions) -> anyhow::Result<RelayReport> {
    if opts.batch == 0 || opts.records < opts.batch || opts.rate < 20 {
        bail!("need records ≥ batch ≥ 1 and rate ≥ 20");
    }
    let mut scratch = opts.postgres.as_deref().map(Scratch::on);
    let result = run(opts, scratch.as_mut()).await;
    if let Some(scratch) = scratch {
        scratch.drop_all().await;
    }
    let report = result?;
    let (heading, command) = match opts.postgres {
        Some(_) => ("## Relay on PostgreSQL:", "bench relay --postgres …"),
        None => ("## Relay:", "bench relay"),
    };
    super::write_section(&opts.report, heading, command, &report.to_string())?;
    Ok(report)
}

async fn run(opts: &RelayOptions, mut scratch: Option<&mut Scratch>) -> anyhow::Result<RelayReport> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    crate::pki::init(&crate::pki::InitOptions::dev(&pki))?;
    // Each node's database (on PostgreSQL one of its own) and its configuration file.
    let mut node = async |name: &str| -> anyhow::Result<(NodeDb, PathBuf)> {
        let db = match scratch.as_deref_mut() {
            Some(scratch) => NodeDb::Postgres(scratch.create().await?),
            None => NodeDb::Sqlite(data_dir(dir.path(), name)),
        };
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "{}[limits]\nmax_batch_records = 5000\n[relay]\nbatch_max = {}\nlinger_ms = {}\n",
                db.config_line(),
                opts.envelope_max,
                opts.linger_ms
            ),
        )?;
        Ok((db, config))
    };
    let client = reqwest::Client::new();
    let records = synthetic_records(opts.records, 17);
    let bulk = bodies(&records, opts.batch);

    // The ceiling: one node alone takes the same pushes.
    let (_, config) = node("single").await?;
    let single = Proc::start(
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.path().join("single").display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        Stdio::inherit(),
    )?;
    // CPU figures leave out what a node used to start.
    let single_at_start = single.cpu_seconds();
    let started = Instant::now();
    push_all(&client, &single.api, &bulk, 2).await?;
    let single_node_rate = opts.records as f64 / started.elapsed().as_secs_f64();
    let single_node_cpu_seconds = single.cpu_seconds() - single_at_start;
    drop(single);

    // The chain, each node knowing the others' federation ports.
    let ports: Vec<(u16, u16)> = (0..4).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
    let mut nodes = Vec::new();
    let mut dbs = Vec::new();
    for (i, (member, _)) in CHAIN.iter().enumerate() {
        let (db, config) = node(member).await?;
        dbs.push(db);
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i].0),
            "--federation-listen".into(),
            format!("127.0.0.1:{}", ports[i].1),
            "--member".into(),
            (*member).into(),
            "--pki".into(),
            pki.display().to_string(),
            "--data-dir".into(),
            data_dir(dir.path(), member).display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        for (j, (other, _)) in CHAIN.iter().enumerate().filter(|(j, _)| *j != i) {
            args.push("--peer".into());
            args.push(format!("{other}=https://localhost:{}", ports[j].1));
        }
        nodes.push(Proc::start(&args, Stdio::inherit())?);
    }
    let national = nodes[3].api.clone();

    // Bulk load, timed from the first push to national's own receipt time of its last record.
    let at_start: Vec<f64> = nodes.iter().map(Proc::cpu_seconds).collect();
    let started_at = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    let machine_before = super::machine_busy_seconds();
    push_all(&client, &nodes[0].api, &bulk, 2).await?;
    let bulk_push_seconds = started.elapsed().as_secs_f64();
    wait_for_count(&client, &national, opts.records as u64, Duration::from_secs(600)).await?;
    let last = last_received(&dbs[3]).await?;
    let last_ms = parse_ms(&last).with_context(|| format!("national's received_at {last:?} is not a timestamp"))?;
    let bulk_seconds = (last_ms - started_at.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0;
    // The wait above polls every quarter second: the machine's figure may include up to that
    // much idle time after the last arrival, never less work.
    let bulk_machine_cpu_seconds =
        super::machine_busy_seconds().zip(machine_before).map_or(f64::NAN, |(after, before)| after - before);
    let bulk_cpu_seconds = CHAIN
        .iter()
        .zip(&nodes)
        .zip(&at_start)
        .map(|(((m, name), p), start)| (format!("{m} {name}"), p.cpu_seconds() - start))
        .collect();
    let bulk_written_mib =
        CHAIN.iter().zip(&nodes).map(|((m, name), p)| (format!("{m} {name}"), p.written_mib())).collect();

    // Steady rate: a push of rate/20 records every 50 ms.
    let per_tick = opts.rate / 20;
    let ticks = (opts.steady_secs * 20) as usize;
    let steady = synthetic_records(per_tick * ticks, 29);
    let steady_bodies = bodies(&steady, per_tick);
    let since = gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for body in steady_bodies {
        tick.tick().await;
        let (client, api) = (client.clone(), nodes[0].api.clone());
        in_flight.spawn(async move {
            client
                .post(format!("{api}/api/v1/records"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        });
    }
    while let Some(r) = in_flight.join_next().await {
        let resp = r??;
        anyhow::ensure!(resp.status().is_success(), "steady push answered {}", resp.status());
    }
    let steady_rate = steady.len() as f64 / started.elapsed().as_secs_f64();
    wait_for_count(&client, &national, (opts.records + steady.len()) as u64, Duration::from_secs(300)).await?;
    let peak_rss_mib =
        CHAIN.iter().zip(&nodes).map(|((m, name), p)| (format!("{m} {name}"), p.peak_rss_mib())).collect();
    // The API's SLA view of each destination a node watches (its neighbours in the chain)
    // first tracks all that is stored: then the whole-run figures hold all the tracking work.
    let mut total_cpu_seconds = Vec::new();
    let mut total_written_mib = 0.0;
    for (i, ((m, name), p)) in CHAIN.iter().zip(&nodes).enumerate() {
        let neighbours = [i.checked_sub(1), Some(i + 1)].into_iter().flatten().filter_map(|j| CHAIN.get(j));
        for (neighbour, _) in neighbours {
            let resp = client.get(format!("{}/api/v1/sla?destination={neighbour}&limit=1", p.api)).send().await?;
            anyhow::ensure!(resp.status().is_success(), "{m}'s SLA view of {neighbour} answered {}", resp.status());
        }
        total_cpu_seconds.push((format!("{m} {name}"), p.cpu_seconds()));
        total_written_mib += p.written_mib();
    }
    drop(nodes);

    let at_district = received(&dbs[0], &since).await?;
    let at_national = received(&dbs[3], &since).await?;
    let mut latencies: Vec<i128> = at_district
        .iter()
        .filter_map(|(id, accepted)| Some(parse_ms(at_national.get(id)?)? - parse_ms(accepted)?))
        .collect();
    anyhow::ensure!(latencies.len() == steady.len(), "{} of {} steady records matched", latencies.len(), steady.len());
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64;
    let report = RelayReport {
        records: opts.records,
        batch: opts.batch,
        single_node_rate,
        single_node_cpu_seconds,
        bulk_seconds,
        bulk_push_seconds,
        steady_rate,
        steady_records: steady.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        peak_rss_mib,
        bulk_cpu_seconds,
        bulk_written_mib,
        total_cpu_seconds,
        total_written_mib,
        bulk_machine_cpu_seconds,
        envelope_max: opts.envelope_max,
        linger_ms: opts.linger_ms,
        postgres: opts.postgres.as_deref().map(redact_password),
    };
    Ok(report)
}

/// A database URL as a report may show it: without a password.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
            let user = &url[scheme + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}:…{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn data_dir(root: &Path, member: &str) -> PathBuf {
    root.join(member)
}
