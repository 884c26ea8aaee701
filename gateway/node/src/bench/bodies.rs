//! `bench bodies`: a node's memory under many large bodies at once, and after (issue #26).
//!
//! A `credit-gateway serve` child process (its own RSS, nothing of the clients') takes
//! `clients` concurrent pushes, each written whole before its answer is read, as Python's
//! http.client does: a maximum-size body of tiny values (`[0,0,…]`), refused while it is
//! parsed, or with `--valid` a maximum batch of valid records (each client its own), all
//! validated and stored. Reported: RSS at start, peak RSS (`VmHWM`), the answers, and RSS each
//! second after until it is back under the bound.

use std::fmt;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[derive(Debug, Clone, clap::Args)]
pub struct BodiesBenchOptions {
    /// Clients sending at once.
    #[arg(long, default_value_t = 40)]
    pub clients: usize,
    /// Body size in MiB (the node's default limit is 16).
    #[arg(long, default_value_t = 16)]
    pub body_mib: usize,
    /// Push valid batches of the most records a batch may hold (5,000) instead.
    #[arg(long)]
    pub valid: bool,
    /// The RSS the node must fall back under, MiB.
    #[arg(long, default_value_t = 300)]
    pub settle_mib: u64,
    /// Longest wait for it, seconds.
    #[arg(long, default_value_t = 60)]
    pub settle_secs: u64,
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

#[derive(Debug, Clone)]
pub struct BodiesReport {
    pub clients: usize,
    /// Each body's size, MiB.
    pub body_mib: f64,
    /// Records per body, when they were valid batches.
    pub valid_records: Option<usize>,
    pub start_mib: f64,
    pub peak_mib: f64,
    /// Each client's status line.
    pub answers: Vec<String>,
    /// RSS sampled each second after the last answer.
    pub after: Vec<f64>,
    pub settle_mib: u64,
    /// Seconds after the last answer until RSS was under `settle_mib`.
    pub settled_after: Option<u64>,
    pub elapsed: Duration,
}

impl fmt::Display for BodiesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.valid_records {
            None => writeln!(f, "## Memory under large bodies (issue #26)\n")?,
            Some(_) => writeln!(f, "## Memory under maximum valid batches (issue #26)\n")?,
        }
        let mut statuses: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for a in &self.answers {
            *statuses.entry(a.as_str()).or_default() += 1;
        }
        let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} × `{s}`")).collect();
        let what = match self.valid_records {
            None => "`[0,0,…]`".to_owned(),
            Some(n) => format!("{n} valid records (its own; all validated and stored)"),
        };
        writeln!(
            f,
            "{} clients at once, each writing a {:.1} MiB body of {what} whole before reading; the node a \
             `serve` process of its own (SQLite, `synchronous = FULL`). Answers: {}.\n",
            self.clients,
            self.body_mib,
            statuses.join(", ")
        )?;
        writeln!(f, "| measure | RSS |\n|---|---|")?;
        writeln!(f, "| at start | {:.0} MiB |", self.start_mib)?;
        writeln!(f, "| peak (VmHWM) | {:.0} MiB |", self.peak_mib)?;
        for (i, mib) in self.after.iter().enumerate().filter(|(i, _)| [0, 4, 9, 29, 59].contains(i)) {
            writeln!(f, "| {} s after | {mib:.0} MiB |", i + 1)?;
        }
        match self.settled_after {
            Some(s) => writeln!(f, "\nBack under {} MiB {s} s after the last answer.", self.settle_mib),
            None => writeln!(f, "\nNot back under {} MiB within the wait.", self.settle_mib),
        }
    }
}

fn rss_mib(pid: u32, key: &str) -> f64 {
    super::proc_value(Some(pid), "status", key).unwrap_or(0.0) / 1024.0
}

/// Writes `body` as one push, then reads the status line.
fn push_whole(addr: &str, body: &[u8]) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "POST /api/v1/records HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut line = String::new();
    std::io::BufReader::new(&mut stream).read_line(&mut line)?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    Ok(line.trim().to_owned())
}

pub fn bodies(opts: &BodiesBenchOptions) -> anyhow::Result<BodiesReport> {
    // A valid body holds the most records a batch may: the node's default limit.
    let valid_batch = crate::config::Limits::default().max_batch_records;
    let dir = tempfile::tempdir()?;
    // Every client is 127.0.0.1, one client to the per-client bound on requests in progress
    // (`[auth] max_in_flight`, 32): lifted, so that all the bodies are in the node at once and
    // only the memory budget holds them back.
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[auth]\nmax_in_flight = 0\n")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the node")?;
    let pid = child.id();
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_owned();
    let result = (|| {
        anyhow::ensure!(addr.starts_with("127.0.0.1:"), "the node did not start: {line:?}");
        std::thread::sleep(Duration::from_secs(1));
        let start_mib = rss_mib(pid, "VmRSS");
        let bodies: Vec<std::sync::Arc<Vec<u8>>> = if opts.valid {
            (0..opts.clients)
                .map(|i| {
                    Ok(std::sync::Arc::new(serde_json::to_vec(&super::synthetic_records(valid_batch, 500 + i as u64))?))
                })
                .collect::<anyhow::Result<_>>()?
        } else {
            let mut body = Vec::with_capacity(opts.body_mib << 20);
            body.push(b'[');
            while body.len() + 3 < opts.body_mib << 20 {
                body.extend_from_slice(b"0,");
            }
            body.extend_from_slice(b"0]");
            // One body, shared by every client.
            let body = std::sync::Arc::new(body);
            (0..opts.clients).map(|_| std::sync::Arc::clone(&body)).collect()
        };
        let body_mib = bodies.iter().map(|b| b.len()).max().unwrap_or(0) as f64 / f64::from(1 << 20);
        let started = Instant::now();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(opts.clients));
        let threads: Vec<_> = (0..opts.clients)
            .map(|i| {
                let (addr, body, barrier) =
                    (addr.clone(), std::sync::Arc::clone(&bodies[i]), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    push_whole(&addr, &body).unwrap_or_else(|e| format!("error: {e}"))
                })
            })
            .collect();
        let answers: Vec<String> = threads.into_iter().map(|t| t.join().unwrap_or_else(|_| "panic".into())).collect();
        let elapsed = started.elapsed();
        let peak_mib = rss_mib(pid, "VmHWM");
        let mut after = Vec::new();
        let mut settled_after = None;
        for s in 1..=opts.settle_secs {
            std::thread::sleep(Duration::from_secs(1));
            let mib = rss_mib(pid, "VmRSS");
            after.push(mib);
            if mib < opts.settle_mib as f64 && settled_after.is_none() {
                settled_after = Some(s);
            }
            if settled_after.is_some() && s >= 10 {
                break;
            }
        }
        Ok(BodiesReport {
            clients: opts.clients,
            body_mib,
            valid_records: opts.valid.then_some(valid_batch),
            start_mib,
            peak_mib,
            answers,
            after,
            settle_mib: opts.settle_mib,
            settled_after,
            elapsed,
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    let report = result?;
    let (heading, command) = match report.valid_records {
        None => ("## Memory under large bodies", "bench bodies"),
        Some(_) => ("## Memory under maximum valid batches", "bench bodies --valid"),
    };
    super::write_section(&opts.report, heading, command, &report.to_string())?;
    Ok(report)
}
