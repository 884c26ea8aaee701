//! `credit-gateway bench soak`: a long mixed run with faults (issue #26).
//!
//! Three `serve` processes, 周村区 → 信用淄博 → 信用山东, each on SQLite with its relay, its SLA
//! tracker and its other jobs as configured by default, over mutual TLS through fault proxies.
//! First the chain's ceiling is measured: a bulk load pushed into 周村区 until 信用山东 holds it.
//! Then, for the given minutes:
//! - records are pushed into 周村区 at a fraction of that ceiling (a push that fails is sent
//!   again until it is answered, as a district platform does);
//! - lookups read records, trails and lists at all three nodes;
//! - 信用淄博 and 信用山东 are killed -9 in turn and restarted on the same ports;
//! - the proxies cut every open connection between the nodes and break answers for a while.
//!
//! Each node's RSS, open files, WAL and database size are sampled throughout. At the end, once
//! 信用山东 holds all that was acknowledged, the databases are compared: every record
//! acknowledged to a client must be at every node, and accepted exactly once by each receiver.
//! 周村区 is never killed, so its figures span the whole run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::Row;

use super::proxy::{Fault, FaultProxy};
use super::relay::{Proc, bodies, free_port, push_all, stored};
use super::{metric, synthetic_records, wait_until};

const CHAIN: [(&str, &str); 3] = [("cn-370306", "周村区"), ("cn-370300", "信用淄博"), ("cn-370000", "信用山东")];
const DISTRICT: usize = 0;
const TOP: usize = 2;
/// Push requests per second in the mixed run.
const TICKS_PER_SEC: u64 = 10;
/// Lookups per second in the mixed run.
const LOOKUPS_PER_SEC: u64 = 20;
/// How often the end of a phase is looked for.
const POLL: Duration = Duration::from_millis(500);
/// How long a cut leaves answers broken (`Fault::CutResponses`) after closing the connections.
const CUT_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct SoakOptions {
    /// Minutes of the mixed run.
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Push rate as a share of the chain's ceiling measured first.
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
    /// Records of the ceiling measurement.
    #[arg(long, default_value_t = 30_000)]
    pub ceiling_records: usize,
    /// Seconds between kill -9s (信用淄博 and 信用山东 in turn); 0 for none.
    #[arg(long, default_value_t = 300)]
    pub kill_every_secs: u64,
    /// Seconds between connection cuts on both hops; 0 for none.
    #[arg(long, default_value_t = 120)]
    pub cut_every_secs: u64,
    /// Seconds between samples of each node.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Where the nodes keep their data (default: a temporary directory). Each record takes a
    /// few KiB at each of the three nodes.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

/// One look at one node.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSample {
    pub alive: bool,
    pub rss_mib: f64,
    pub open_files: usize,
    pub wal_mib: f64,
    pub db_mib: f64,
}

/// One look at the chain.
#[derive(Debug, Clone)]
pub struct Sample {
    pub secs: f64,
    pub nodes: [NodeSample; 3],
    /// Records acknowledged to clients so far, and stored at 信用山东.
    pub acknowledged: u64,
    pub at_top: u64,
}

/// What each node's database holds at the end.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub records: u64,
    /// Records of 周村区 missing here.
    pub missing: u64,
    /// Records stored more than once, or accepted more than once in this node's receipts.
    pub duplicated: u64,
    /// Items this node's receipts said `accepted`, and `duplicate` (resends after a fault).
    pub receipts_accepted: u64,
    pub receipts_duplicate: u64,
}

#[derive(Debug)]
pub struct SoakReport {
    pub minutes: u64,
    pub fraction: f64,
    pub ceiling_rate: f64,
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub pushes: u64,
    pub push_retries: u64,
    pub acknowledged: u64,
    pub lookups: u64,
    pub lookup_errors_while_up: u64,
    pub lookup_errors_while_down: u64,
    pub lookup_p99_ms: f64,
    pub kills: Vec<(String, f64)>,
    pub cuts: u64,
    /// Seconds from the last push until 信用山东 held everything acknowledged.
    pub drain_secs: f64,
    pub samples: Vec<Sample>,
    pub held: Vec<Held>,
    pub elapsed: Duration,
    pub kill_every_secs: u64,
    pub cut_every_secs: u64,
    pub sample_secs: u64,
}

impl SoakReport {
    /// Records lost (acknowledged to a client, missing at a node) and duplicated, over all nodes.
    pub fn lost_and_duplicated(&self) -> (u64, u64) {
        let district = self.held.first().map_or(0, |h| h.records);
        let lost = self.held.iter().map(|h| h.missing).sum::<u64>() + self.acknowledged.saturating_sub(district);
        (lost, self.held.iter().map(|h| h.duplicated).sum())
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Soak: {} minutes of mixed load with faults (issue #26)\n", self.minutes)?;
        writeln!(
            f,
            "Three `credit-gateway serve` processes on this machine ({} cores), 周村区 → 信用淄博 → 信用山东, each on \
             SQLite (`synchronous = FULL`) with its relay, SLA tracker and default jobs, over mutual TLS through fault \
             proxies. Ceiling first: {:.0} records/s, a bulk load pushed into 周村区 until 信用山东 held it. Then pushes \
             into 周村区 at {:.0} % of it ({:.0} records/s asked, {:.0} achieved) in {} requests a second, a failed push \
             sent again until answered; {} lookups a second (a record at 信用淄博, a trail at 信用山东, a list at 周村区); \
             信用淄博 and 信用山东 killed -9 in turn and restarted every {} s; every {} s both hops' connections cut and \
             their answers broken for {} s.\n",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            self.ceiling_rate,
            self.fraction * 100.0,
            self.target_rate,
            self.achieved_rate,
            TICKS_PER_SEC,
            LOOKUPS_PER_SEC,
            self.kill_every_secs,
            self.cut_every_secs,
            CUT_FOR.as_secs(),
        )?;
        let (lost, duplicated) = self.lost_and_duplicated();
        writeln!(f, "| measurement | figure |\n|---|---:|")?;
        writeln!(f, "| records acknowledged to clients | {} |", self.acknowledged)?;
        for ((member, name), held) in CHAIN.iter().zip(&self.held) {
            writeln!(
                f,
                "| held at {member} {name} | {} ({} missing; receipts: {} accepted, {} duplicate) |",
                held.records, held.missing, held.receipts_accepted, held.receipts_duplicate
            )?;
        }
        writeln!(f, "| **records lost** | **{lost}** |")?;
        writeln!(f, "| **records duplicated** | **{duplicated}** |")?;
        writeln!(f, "| push requests (sent again after a failure) | {} ({}) |", self.pushes, self.push_retries)?;
        writeln!(
            f,
            "| lookups (failed while their node was up / down) | {} ({} / {}) |",
            self.lookups, self.lookup_errors_while_up, self.lookup_errors_while_down
        )?;
        writeln!(f, "| lookup latency p99 | {:.0} ms |", self.lookup_p99_ms)?;
        let kills: Vec<String> = self.kills.iter().map(|(m, s)| format!("{m} ({s:.1} s to listen again)")).collect();
        writeln!(f, "| kill -9 and restart | {} |", if kills.is_empty() { "none".into() } else { kills.join(", ") })?;
        writeln!(f, "| connection cuts (both hops) | {} |", self.cuts)?;
        writeln!(f, "| after the last push, until 信用山东 held everything | {:.1} s |", self.drain_secs)?;
        writeln!(f, "| whole run | {:.0} s |", self.elapsed.as_secs_f64())?;

        // Resources: the first sample of the mixed run, then every five minutes, then the last.
        writeln!(
            f,
            "\nEach node's resident memory, open files, WAL and database, sampled every {} s (a restarted \
             node starts again from its own start-up figures):\n",
            self.sample_secs
        )?;
        write!(f, "| minute |")?;
        for (_, name) in CHAIN {
            write!(f, " {name} RSS | files | WAL | database |")?;
        }
        writeln!(f)?;
        writeln!(f, "|---:|{}", "---:|".repeat(4 * CHAIN.len()))?;
        let mut shown = Vec::new();
        let mut next_minute = 0.0;
        for (i, s) in self.samples.iter().enumerate() {
            if s.secs / 60.0 >= next_minute || i + 1 == self.samples.len() {
                shown.push(s);
                next_minute = (s.secs / 60.0 / 5.0).floor() * 5.0 + 5.0;
            }
        }
        for s in shown {
            write!(f, "| {:.1} |", s.secs / 60.0)?;
            for n in &s.nodes {
                if n.alive {
                    write!(
                        f,
                        " {:.0} MiB | {} | {:.1} MiB | {:.0} MiB |",
                        n.rss_mib, n.open_files, n.wal_mib, n.db_mib
                    )?;
                } else {
                    write!(f, " down | | | |")?;
                }
            }
            writeln!(f)?;
        }
        writeln!(f, "\n| node | RSS min – max | open files min – max | WAL max |\n|---|---:|---:|---:|")?;
        for (i, (member, name)) in CHAIN.iter().enumerate() {
            let alive: Vec<&NodeSample> = self.samples.iter().map(|s| &s.nodes[i]).filter(|n| n.alive).collect();
            let (rss_lo, rss_hi) = min_max(alive.iter().map(|n| n.rss_mib));
            let (fd_lo, fd_hi) = min_max(alive.iter().map(|n| n.open_files as f64));
            let (_, wal_hi) = min_max(alive.iter().map(|n| n.wal_mib));
            writeln!(
                f,
                "| {member} {name} | {rss_lo:.0} – {rss_hi:.0} MiB | {fd_lo:.0} – {fd_hi:.0} | {wal_hi:.1} MiB |"
            )?;
        }
        Ok(())
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The three nodes, each restartable on its own ports; `None` while one is down.
struct Chain {
    procs: Mutex<Vec<Option<Proc>>>,
    args: Vec<Vec<String>>,
    data_dirs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    apis: Vec<String>,
}

impl Chain {
    fn start(&self, i: usize) -> anyhow::Result<Proc> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.logs[i])?;
        Proc::start(&self.args[i], Stdio::from(log))
    }

    fn alive(&self, i: usize) -> bool {
        self.procs.lock().is_ok_and(|p| p[i].is_some())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.procs.lock().ok().and_then(|p| p[i].as_ref().map(|p| p.child.id()))
    }

    /// kill -9 (dropping a [`Proc`] kills it), then a new process on the same ports. Returns the
    /// seconds until it listened again.
    async fn kill_and_restart(self: &Arc<Self>, i: usize) -> anyhow::Result<f64> {
        let victim = self.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i].take();
        drop(victim);
        let started = Instant::now();
        let chain = Arc::clone(self);
        let proc = tokio::task::spawn_blocking(move || chain.start(i)).await??;
        self.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = Some(proc);
        Ok(started.elapsed().as_secs_f64())
    }

    fn sample(&self, i: usize) -> NodeSample {
        let Some(pid) = self.pid(i) else { return NodeSample::default() };
        let mib = |path: PathBuf| std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0));
        NodeSample {
            alive: true,
            rss_mib: super::proc_value(Some(pid), "status", "VmRSS").unwrap_or(0.0) / 1024.0,
            open_files: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
            wal_mib: mib(self.data_dirs[i].join("gateway.sqlite-wal")),
            db_mib: mib(self.data_dirs[i].join("gateway.sqlite")),
        }
    }

    /// Bytes of the three databases, without their WALs (which checkpoints keep bounded).
    fn database_bytes(&self) -> f64 {
        (0..CHAIN.len()).map(|i| self.sample(i).db_mib * 1024.0 * 1024.0).sum()
    }
}

/// Bytes free on the file system holding `dir` (from `df`).
fn free_bytes(dir: &Path) -> anyhow::Result<f64> {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<f64>().ok())
        .context("reading df's answer")
}

/// Counters of the mixed run, shared by its tasks.
#[derive(Debug, Default)]
struct Counters {
    pushes: AtomicU64,
    retries: AtomicU64,
    acknowledged: AtomicU64,
    lookups: AtomicU64,
    errors_up: AtomicU64,
    errors_down: AtomicU64,
    cuts: AtomicU64,
    /// A few record ids per second, oldest first, for the lookups.
    recent: Mutex<std::collections::VecDeque<String>>,
    lookup_ms: Mutex<Vec<f64>>,
}

/// Sends one batch until it is answered 200; counts what the answer acknowledges.
async fn push_until_answered(client: reqwest::Client, api: String, body: String, counters: Arc<Counters>) {
    loop {
        counters.pushes.fetch_add(1, Ordering::Relaxed);
        let answer = client
            .post(format!("{api}/api/v1/records"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        if let Ok(resp) = answer
            && resp.status().is_success()
            && let Ok(result) = resp.json::<Value>().await
        {
            let outcomes = result["outcomes"].as_array().map(Vec::as_slice).unwrap_or_default();
            let acked = outcomes.iter().filter(|o| matches!(o["status"].as_str(), Some("accepted" | "duplicate")));
            counters.acknowledged.fetch_add(acked.count() as u64, Ordering::Relaxed);
            if let (Some(id), Ok(mut recent)) =
                (outcomes.first().and_then(|o| o["record_id"].as_str()), counters.recent.lock())
            {
                recent.push_back(id.to_owned());
                if recent.len() > 600 {
                    recent.pop_front();
                }
            }
            return;
        }
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One lookup, in turn: a record at 信用淄博, a record's trail at 信用山东, a list at 周村区. A 404
/// (a record not arrived yet) is an answer; a transport error or a 5xx is a failure.
async fn look_up(client: &reqwest::Client, chain: &Chain, counters: &Counters, n: u64) {
    // The oldest of the recent ids: about a minute old, long since relayed unless a fault holds it.
    let id = counters.recent.lock().ok().and_then(|r| r.front().cloned()).unwrap_or_default();
    let (node, url) = match n % 3 {
        0 => (1, format!("{}/api/v1/records/{id}", chain.apis[1])),
        1 => (2, format!("{}/api/v1/records/{id}/trail", chain.apis[2])),
        _ => (0, format!("{}/api/v1/records?limit=50", chain.apis[0])),
    };
    let up_before = chain.alive(node);
    let started = Instant::now();
    let answered = client.get(url).send().await.is_ok_and(|r| !r.status().is_server_error());
    counters.lookups.fetch_add(1, Ordering::Relaxed);
    if answered {
        if let Ok(mut ms) = counters.lookup_ms.lock() {
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    } else if up_before && chain.alive(node) {
        counters.errors_up.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.errors_down.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the database at `db` holds, against 周村区's at `district` (both nodes stopped).
async fn held(db: &Path, district: &Path) -> anyhow::Result<Held> {
    use sqlx::Connection as _;
    // One connection: the attached database belongs to it.
    let mut db_conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records").fetch_one(&mut db_conn).await?;
    let distinct: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT record_id) FROM records").fetch_one(&mut db_conn).await?;
    let mut held = Held { records: records as u64, duplicated: (records - distinct) as u64, ..Held::default() };
    if db != district {
        sqlx::query(sqlx::AssertSqlSafe(format!("ATTACH DATABASE '{}' AS district", district.display())))
            .execute(&mut db_conn)
            .await?;
        let missing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM district.records d WHERE NOT EXISTS (SELECT 1 FROM main.records r WHERE r.record_id = d.record_id)",
        )
        .fetch_one(&mut db_conn)
        .await?;
        held.missing = missing as u64;
        for row in
            sqlx::query("SELECT receipt_compact FROM envelopes WHERE direction = 'in'").fetch_all(&mut db_conn).await?
        {
            let Some(compact) = row.try_get::<Option<String>, _>(0)? else { continue };
            let compact: Value = serde_json::from_str(&compact)?;
            let letters = compact["outcomes"].as_str().unwrap_or_default();
            held.receipts_accepted += letters.matches('a').count() as u64;
            held.receipts_duplicate += letters.matches('d').count() as u64;
        }
        held.duplicated += held.receipts_accepted.saturating_sub(distinct as u64);
    }
    db_conn.close().await?;
    Ok(held)
}

/// Runs the soak benchmark.
pub async fn soak(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    if opts.minutes == 0 || opts.ceiling_records < 1_000 || !(0.0..=1.0).contains(&opts.fraction) {
        bail!("need minutes ≥ 1, ceiling records ≥ 1,000 and a fraction between 0 and 1");
    }
    let began = Instant::now();
    let temp = tempfile::tempdir_in(opts.dir.as_deref().unwrap_or(&std::env::temp_dir()))?;
    let dir = temp.path();
    let pki = dir.join("pki");
    crate::pki::init(&crate::pki::InitOptions::dev(&pki))?;
    let config = dir.join("node.toml");
    // One pushing client with up to 64 pushes unanswered: no per-client bound on them.
    std::fs::write(&config, "[limits]\nmax_batch_records = 5000\n[auth]\nmax_in_flight = 0\n")?;

    // Each node's API and federation ports; each hop goes through a fault proxy.
    let ports: Vec<(u16, u16)> =
        (0..CHAIN.len()).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
    let proxies = [FaultProxy::start(ports[1].1).await?, FaultProxy::start(ports[2].1).await?];
    let mut args = Vec::new();
    for (i, (member, _)) in CHAIN.iter().enumerate() {
        let mut a: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{}", ports[i].0),
            "--federation-listen",
            &format!("127.0.0.1:{}", ports[i].1),
            "--member",
            member,
            "--pki",
            &pki.display().to_string(),
            "--data-dir",
            &dir.join(member).display().to_string(),
            "--config",
            &config.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        for (j, (other, _)) in CHAIN.iter().enumerate().filter(|(j, _)| *j != i) {
            // Upwards through the proxy in front of the receiver; anything else direct.
            let port = if j == i + 1 { proxies[i].port } else { ports[j].1 };
            a.extend(["--peer".to_owned(), format!("{other}=https://localhost:{port}")]);
        }
        args.push(a);
    }
    let chain = Arc::new(Chain {
        procs: Mutex::new(Vec::new()),
        data_dirs: CHAIN.iter().map(|(m, _)| dir.join(m)).collect(),
        logs: CHAIN.iter().map(|(m, _)| dir.join(format!("{m}.log"))).collect(),
        apis: ports.iter().map(|(api, _)| format!("http://127.0.0.1:{api}")).collect(),
        args,
    });
    for i in 0..CHAIN.len() {
        let proc = chain.start(i)?;
        chain.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(Some(proc));
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let (district, top) = (chain.apis[DISTRICT].clone(), chain.apis[TOP].clone());

    // The ceiling: a bulk load, timed until the top holds all of it.
    let bulk = bodies(&synthetic_records(opts.ceiling_records, 1), 500);
    let started = Instant::now();
    push_all(&client, &district, &bulk, 2).await?;
    let n = opts.ceiling_records as u64;
    wait_until("the ceiling load at 信用山东", POLL, Duration::from_secs(600), async || {
        stored(&client, &top).await >= n
    })
    .await?;
    let ceiling_rate = n as f64 / started.elapsed().as_secs_f64();
    let target_rate = ceiling_rate * opts.fraction;
    let secs = opts.minutes * 60;
    let needed = chain.database_bytes() / n as f64 * target_rate * secs as f64;
    let free = free_bytes(dir)?;
    anyhow::ensure!(
        needed < 0.8 * free,
        "the run would write about {:.0} GiB of databases and {:.0} GiB are free under {}: lower --fraction or \
         --minutes, or give --dir on a larger disk",
        needed / f64::from(1 << 30),
        free / f64::from(1 << 30),
        dir.display()
    );
    eprintln!(
        "soak: ceiling {ceiling_rate:.0} records/s; pushing at {target_rate:.0} records/s for {} min",
        opts.minutes
    );

    // The mixed run.
    let counters = Arc::new(Counters::default());
    counters.acknowledged.store(n, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicBool::new(false));
    let run_started = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (chain, counters, drained, samples, client, top) = (
            Arc::clone(&chain),
            Arc::clone(&counters),
            Arc::clone(&drained),
            Arc::clone(&samples),
            client.clone(),
            top.clone(),
        );
        let every = Duration::from_secs(opts.sample_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut at_top = 0;
            loop {
                tick.tick().await;
                if chain.alive(TOP) {
                    at_top = stored(&client, &top).await.max(at_top);
                }
                let sample = Sample {
                    secs: run_started.elapsed().as_secs_f64(),
                    nodes: [chain.sample(0), chain.sample(1), chain.sample(2)],
                    acknowledged: counters.acknowledged.load(Ordering::Relaxed),
                    at_top,
                };
                if let Ok(mut s) = samples.lock() {
                    s.push(sample);
                }
                if drained.load(Ordering::Relaxed) {
                    return;
                }
            }
        })
    };
    let lookups = {
        let (chain, counters, stop, client) =
            (Arc::clone(&chain), Arc::clone(&counters), Arc::clone(&stop), client.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / LOOKUPS_PER_SEC));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                look_up(&client, &chain, &counters, n).await;
                n += 1;
            }
        })
    };
    let killer = {
        let (chain, stop) = (Arc::clone(&chain), Arc::clone(&stop));
        let every = opts.kill_every_secs;
        tokio::spawn(async move {
            let mut kills = Vec::new();
            if every == 0 {
                return anyhow::Ok(kills);
            }
            for victim in [1, 2].into_iter().cycle() {
                let due = Instant::now() + Duration::from_secs(every);
                while Instant::now() < due {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(kills);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let secs = chain.kill_and_restart(victim).await?;
                kills.push((format!("{} {}", CHAIN[victim].0, CHAIN[victim].1), secs));
            }
            Ok(kills)
        })
    };
    let cutter = {
        let (proxies, counters, stop) = (proxies.clone(), Arc::clone(&counters), Arc::clone(&stop));
        let every = opts.cut_every_secs;
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            // Half a period out of step with the kills.
            let mut next = Instant::now() + Duration::from_secs(every / 2);
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    for p in &proxies {
                        p.set(Fault::CutResponses);
                        p.cut();
                    }
                    tokio::time::sleep(CUT_FOR).await;
                    for p in &proxies {
                        p.set(Fault::None);
                    }
                    counters.cuts.fetch_add(1, Ordering::Relaxed);
                    next += Duration::from_secs(every);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Pushes: TICKS_PER_SEC batches a second, each sent until answered; at most 64 unanswered.
    let per_tick = ((target_rate / TICKS_PER_SEC as f64).round() as usize).max(1);
    let ticks = secs * TICKS_PER_SEC;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut pushes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / TICKS_PER_SEC));
    for t in 0..ticks {
        tick.tick().await;
        let body = serde_json::to_string(&synthetic_records(per_tick, 1_000 + t))?;
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let (client, api, counters) = (client.clone(), district.clone(), Arc::clone(&counters));
        pushes.spawn(async move {
            push_until_answered(client, api, body, counters).await;
            drop(permit);
        });
        while pushes.try_join_next().is_some() {}
    }
    while pushes.join_next().await.is_some() {}
    let achieved_rate = (per_tick as u64 * ticks) as f64 / run_started.elapsed().as_secs_f64();
    let last_push = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let kills = killer.await??;
    cutter.await?;
    lookups.await?;

    // Drain: everything acknowledged at the top, every sender settled.
    let acknowledged = counters.acknowledged.load(Ordering::Relaxed);
    wait_until("everything acknowledged at 信用山东", POLL, Duration::from_secs(1800), async || {
        stored(&client, &top).await >= acknowledged
    })
    .await?;
    let drain_secs = last_push.elapsed().as_secs_f64();
    for (i, (destination, _)) in CHAIN.iter().enumerate().skip(1) {
        let api = chain.apis[i - 1].clone();
        let backlog = format!("credit_gateway_outbox_backlog{{destination=\"{destination}\"}}");
        wait_until("every sender settled", POLL, Duration::from_secs(300), async || {
            metric(&client, &api, &backlog).await == Some(0.0)
        })
        .await?;
    }
    drained.store(true, Ordering::Relaxed);
    sampler.await?;
    chain.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clear();

    let district_db = chain.data_dirs[DISTRICT].join("gateway.sqlite");
    let mut held_at = Vec::new();
    for data_dir in &chain.data_dirs {
        held_at.push(held(&data_dir.join("gateway.sqlite"), &district_db).await?);
    }
    let mut ms = counters.lookup_ms.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    ms.sort_by(f64::total_cmp);
    let report = SoakReport {
        minutes: opts.minutes,
        fraction: opts.fraction,
        ceiling_rate,
        target_rate,
        achieved_rate,
        pushes: counters.pushes.load(Ordering::Relaxed),
        push_retries: counters.retries.load(Ordering::Relaxed),
        acknowledged,
        lookups: counters.lookups.load(Ordering::Relaxed),
        lookup_errors_while_up: counters.errors_up.load(Ordering::Relaxed),
        lookup_errors_while_down: counters.errors_down.load(Ordering::Relaxed),
        lookup_p99_ms: ms.get(((ms.len().max(1) - 1) as f64 * 0.99) as usize).copied().unwrap_or(0.0),
        kills,
        cuts: counters.cuts.load(Ordering::Relaxed),
        drain_secs,
        samples: samples.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone(),
        held: held_at,
        elapsed: began.elapsed(),
        kill_every_secs: opts.kill_every_secs,
        cut_every_secs: opts.cut_every_secs,
        sample_secs: opts.sample_secs,
    };
    super::write_section(&opts.report, "## Soak:", "bench soak", &report.to_string())?;
    Ok(report)
}
