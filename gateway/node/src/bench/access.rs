//! `bench access`: what authentication costs the push path. The same batches go over HTTP into
//! a fresh node on SQLite three ways — authentication off (the development principal), with a
//! department's API key, and over HTTPS with a registered client certificate — round after
//! round, interleaved so that drift of the machine hits each the same; beside them, in the
//! same run, the raw store ceiling. Every way writes the audit log (one entry per batch).

use std::fmt;

use anyhow::{Context, bail};
use serde_json::Value;

use super::{drain, rate, synthetic_records};
use crate::auth::{IssueRequest, Role};
use crate::config::Config;

#[derive(Debug, Clone, clap::Args)]
pub struct AccessBenchOptions {
    /// Records per run (runs much shorter than a few seconds are mostly noise).
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Runs of each way (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Off,
    ApiKey,
    ClientCert,
}

impl Way {
    const ALL: [Way; 3] = [Way::Off, Way::ApiKey, Way::ClientCert];

    fn label(self) -> &'static str {
        match self {
            Way::Off => "authentication off (HTTP)",
            Way::ApiKey => "department API key (HTTP)",
            Way::ClientCert => "registered client certificate (HTTPS)",
        }
    }
}

#[derive(Debug)]
pub struct AccessReport {
    records: usize,
    batch: usize,
    concurrency: usize,
    raw_rate: f64,
    /// Per way, the rate of every round.
    rates: Vec<(Way, Vec<f64>)>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl AccessReport {
    fn median_of(&self, way: Way) -> f64 {
        self.rates.iter().find(|(w, _)| *w == way).map_or(0.0, |(_, r)| median(r))
    }

    /// The rate of `way` against authentication off, medians of the same run.
    pub fn ratio(&self, way: &str) -> f64 {
        let way = if way == "cert" { Way::ClientCert } else { Way::ApiKey };
        self.median_of(way) / self.median_of(Way::Off)
    }
}

impl fmt::Display for AccessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Access control: ingest with authentication vs without (issue #23)\n")?;
        writeln!(
            f,
            "{} synthetic records per run, batches of {}, {} concurrent clients, SQLite (`synchronous = FULL`), \
             a fresh node per run; {} rounds, the ways interleaved; medians. Every way writes one audit entry per batch. \
             Targets: API key ≥ 0.95× and client certificate ≥ 0.85× of authentication off.\n",
            self.records,
            self.batch,
            self.concurrency,
            self.rates.first().map_or(0, |(_, r)| r.len())
        )?;
        writeln!(f, "| way | records/s (median) | × off | rounds |")?;
        writeln!(f, "|---|---:|---:|---|")?;
        let off = self.median_of(Way::Off);
        for (way, rates) in &self.rates {
            let rounds: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            let m = median(rates);
            writeln!(f, "| {} | {m:.0} | {:.3} | {} |", way.label(), m / off, rounds.join(", "))?;
        }
        writeln!(
            f,
            "| raw store ceiling (`Store::ingest`, pre-validated, no HTTP) | {:.0} | {:.3} | 1 |",
            self.raw_rate,
            self.raw_rate / off
        )?;
        writeln!(f, "\nReproduce: `credit-gateway bench access` (`--records`, `--rounds`; `--report -` to only print).")
    }
}

/// A CA, the API's server certificate and one client certificate, written to `dir`.
struct Pki {
    server: crate::config::ApiTlsConfig,
    client: reqwest::Client,
    client_pem: String,
}

fn pki(dir: &std::path::Path) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let (issuer, ca_pem, _) = crate::pki::new_ca("bench API client CA")?;
    let (server_pem, server_key, _) = crate::pki::issue_tls_cert(&issuer, "api")?;
    let (client_pem, client_key, _) = crate::pki::issue_tls_cert(&issuer, "department")?;
    let write = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let ca = write("ca.pem", &ca_pem)?;
    let server = crate::config::ApiTlsConfig {
        cert: write("server.pem", &server_pem)?,
        key: write("server.key", &server_key)?,
        client_ca: Some(ca.clone()),
    };
    let (cert, key) = (write("client.pem", &client_pem)?, write("client.key", &client_key)?);
    let tls = crate::tls::client_config(&crate::tls::TlsFiles { ca: &ca, cert: &cert, key: &key })?;
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build()?;
    Ok(Pki { server, client, client_pem })
}

/// One run of `way`: a fresh node, its credential, every batch pushed; the rate.
async fn run(
    way: Way,
    dir: &std::path::Path,
    pki: &Pki,
    bodies: Vec<bytes::Bytes>,
    opts: &AccessBenchOptions,
) -> anyhow::Result<f64> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        auth: crate::config::AuthConfig {
            required: way != Way::Off,
            rate_per_second: 0.0,
            ..crate::config::AuthConfig::default()
        },
        api_tls: (way == Way::ClientCert).then(|| pki.server.clone()),
        ..super::push_only_config(dir, opts.batch)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = crate::server::start(config, async {
        let _ = stopped.await;
    })
    .await?;
    // The synthetic records name three units: the department reports for all of them.
    let units = ["11370306MB28554702", "11370306004217500P", "11370306MB28554715"];
    let req = IssueRequest {
        principal: "淄博市周村区市场监督管理局".into(),
        role: Some(Role::Department),
        unit_uscc: Some(units[0].into()),
        report_for: units[1..].iter().map(|u| (*u).to_owned()).collect(),
        certificate_pem: (way == Way::ClientCert).then(|| pki.client_pem.clone().into_bytes()),
        ..IssueRequest::default()
    };
    let issued = crate::auth::credentials::issue(&node.app.ingest.store, req, time::OffsetDateTime::now_utc()).await?;
    let (client, url) = match way {
        Way::ClientCert => (pki.client.clone(), format!("https://{}/api/v1/records", node.api)),
        _ => (
            reqwest::Client::builder().pool_max_idle_per_host(opts.concurrency).build()?,
            format!("http://{}/api/v1/records", node.api),
        ),
    };
    let key = issued.api_key.filter(|_| way == Way::ApiKey);
    let elapsed = drain(bodies, opts.concurrency, move |body| {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        async move {
            let mut req = client.post(&url).header("content-type", "application/json").body(body);
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                bail!("push answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            let answer: Value = resp.json().await?;
            if answer["accepted"] != answer["received"] {
                bail!("not every synthetic record was accepted: {}", answer["rejected"]);
            }
            Ok(())
        }
    })
    .await?;
    let stored = node.app.ingest.store.count().await?;
    let audited = node.app.ingest.store.audit_entries(0, i64::MAX).await?.len();
    let _ = stop.send(());
    node.stopped().await?;
    if stored != opts.records as i64 || audited != opts.records.div_ceil(opts.batch) {
        bail!("{way:?} stored {stored} records with {audited} audit entries");
    }
    Ok(rate(opts.records, elapsed))
}

/// Runs the access benchmark.
pub async fn access(opts: &AccessBenchOptions) -> anyhow::Result<AccessReport> {
    if opts.batch == 0 || opts.records < opts.batch || opts.concurrency == 0 || opts.rounds == 0 {
        bail!("need records ≥ batch ≥ 1, concurrency ≥ 1 and rounds ≥ 1");
    }
    crate::tls::install_crypto_provider();
    let records = synthetic_records(opts.records, 7);
    let texts: Vec<String> = records.iter().map(Value::to_string).collect();
    let bodies: Vec<bytes::Bytes> =
        texts.chunks(opts.batch).map(|c| bytes::Bytes::from(format!("[{}]", c.join(",")))).collect();
    let dir = tempfile::tempdir()?;
    let pki = pki(&dir.path().join("pki"))?;

    // The ceiling: the same records, validated beforehand, straight into a store.
    let raw_config = Config { data_dir: dir.path().join("raw"), ..Config::default() };
    let gw = crate::server::open_ingest(&raw_config).await?;
    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    let validated = texts
        .iter()
        .map(|t| gw.validator.check_str(t, today).map(|r| gw.incoming(r)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("synthetic record rejected: {e:?}"))?;
    let raw_rate = super::raw_store_rate(&gw, validated, opts.batch, opts.concurrency).await?;
    gw.store.close().await;

    let mut rates: Vec<(Way, Vec<f64>)> = Way::ALL.iter().map(|w| (*w, Vec::new())).collect();
    for round in 0..opts.rounds {
        for (way, got) in &mut rates {
            let run_dir = dir.path().join(format!("{way:?}-{round}"));
            let r = run(*way, &run_dir, &pki, bodies.clone(), opts)
                .await
                .with_context(|| format!("{way:?} round {round}"))?;
            eprintln!("round {round}: {} {r:.0} records/s", way.label());
            got.push(r);
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
    let report =
        AccessReport { records: opts.records, batch: opts.batch, concurrency: opts.concurrency, raw_rate, rates };
    super::write_section(&opts.report, "## Access control", "bench access", &report.to_string())?;
    Ok(report)
}
