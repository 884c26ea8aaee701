//! `credit-gateway bench envelopes`: signed-envelope ingest over mutual TLS (district →
//! city, batches of 1,000), beside the raw Ed25519 verify rate and the unsigned HTTP ingest
//! rate measured in the same run.

use std::fmt;
use std::time::Instant;

use anyhow::{Context, bail};
use gateway_core::crypto::{Alg, SigningKey};
use time::OffsetDateTime;

use super::{IngestOptions, drain, rate, synthetic_records, write_section};
use crate::config::{Config, FederationConfig};
use crate::pki::{self, InitOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct EnvelopeOptions {
    /// Records per run.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Records per envelope.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Envelopes in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Rounds of (unsigned, signed) runs; the report gives each and the median ratio, since
    /// one pair on a shared 2-core host can be off by a third either way.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Markdown report to (re)write; `-` to skip.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: String,
}

#[derive(Debug)]
pub struct EnvelopeReport {
    pub records: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub verify_rate: f64,
    /// (unsigned records/s, signed records/s) per round, in run order.
    pub rounds: Vec<(f64, f64)>,
}

impl EnvelopeReport {
    /// The round with the median signed/unsigned ratio.
    fn median(&self) -> (f64, f64) {
        let mut by_ratio = self.rounds.clone();
        by_ratio.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        by_ratio.get(by_ratio.len() / 2).copied().unwrap_or((f64::NAN, f64::NAN))
    }
}

impl fmt::Display for EnvelopeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Signed envelopes (interchange): district → city over mutual TLS\n")?;
        writeln!(
            f,
            "{} synthetic records, envelopes of {}, {} in flight, sealed and signed before the clock starts (as the \
             unsigned run pre-serialises its bodies). Timed: mTLS delivery; the receiver verifies the signature and the \
             Merkle root, validates every record, stores the items and its signed receipt; the sender verifies and \
             stores the receipt. Both nodes in one process on {} cores; SQLite `synchronous = FULL`.\n",
            self.records,
            self.batch,
            self.concurrency,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        )?;
        let (unsigned, signed) = self.median();
        writeln!(f, "| measurement | per second |")?;
        writeln!(f, "|---|---:|")?;
        writeln!(f, "| raw Ed25519 verifications (ring, one core) | {:.0} |", self.verify_rate)?;
        writeln!(
            f,
            "| unsigned ingest (`POST /api/v1/records`, the foundation path), median round | {unsigned:.0} records |"
        )?;
        writeln!(
            f,
            "| **signed-envelope ingest** (`POST /federation/v1/envelopes` over mTLS), median round | **{signed:.0} records** |"
        )?;
        writeln!(f, "\n| round | unsigned records/s | signed records/s | signed / unsigned |")?;
        writeln!(f, "|---:|---:|---:|---:|")?;
        for (i, (u, s)) in self.rounds.iter().enumerate() {
            writeln!(f, "| {} | {u:.0} | {s:.0} | {:.2}× |", i + 1, s / u)?;
        }
        writeln!(
            f,
            "\nSigned / unsigned, median of {} rounds = **{:.2}×** (target ≥ 0.9×, issue #28). One signature per envelope: {:.0} envelopes/s use {:.2} % of one core's verify capacity.",
            self.rounds.len(),
            signed / unsigned,
            signed / self.batch as f64,
            100.0 * (signed / self.batch as f64) / self.verify_rate
        )
    }
}

/// Runs the benchmark.
pub async fn envelopes(opts: &EnvelopeOptions) -> anyhow::Result<EnvelopeReport> {
    crate::tls::install_crypto_provider();
    let verify_rate = ed25519_verify_rate();
    let mut rounds = Vec::with_capacity(opts.rounds);
    for _ in 0..opts.rounds.max(1) {
        let unsigned = super::ingest(&IngestOptions {
            records: opts.records,
            batch: opts.batch,
            concurrency: opts.concurrency,
            postgres: None,
            rounds: 1,
            report: "-".into(),
        })
        .await?;
        rounds.push((unsigned.median().http_rate, signed_run(opts).await?));
    }
    let report =
        EnvelopeReport { records: opts.records, batch: opts.batch, concurrency: opts.concurrency, verify_rate, rounds };
    write_section(&opts.report, "## Signed envelopes", "bench envelopes", &report.to_string())?;
    Ok(report)
}

/// One timed run of signed envelopes, district → city, in fresh stores. Returns records/s.
async fn signed_run(opts: &EnvelopeOptions) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let pki_dir = dir.path().join("pki");
    pki::init(&InitOptions::dev(&pki_dir))?;
    let node = |member: &str, name: &str| {
        let fed = FederationConfig::from_pki(&pki_dir, member, ([127, 0, 0, 1], 0).into());
        Config {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.path().join(name),
            member_id: member.into(),
            federation: Some(fed),
            // Only the one hop is measured: the city forwards nothing and runs no background job.
            relay: crate::config::RelayConfig { enabled: false, ..Default::default() },
            sla: crate::config::SlaConfig { tracking_interval_secs: 0 },
            publicity: crate::config::PublicityConfig { expiry_interval_secs: 0 },
            ..Config::default()
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let city = crate::server::start(node("cn-370300", "city"), async {
        let _ = stopped.await;
    })
    .await?;
    let url = format!("https://localhost:{}", city.federation.context("the city's federation endpoint")?.port());

    let district_config = node("cn-370306", "district");
    let district_fed = district_config.federation.clone().context("federation")?;
    let district = crate::server::open_node(&district_config, &district_fed).await?;
    for chunk in synthetic_records(opts.records, 2).chunks(5_000) {
        district
            .ingest
            .push(serde_json::to_vec(chunk)?.into(), OffsetDateTime::now_utc())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let mut records = Vec::with_capacity(opts.records);
    let mut after = 0;
    loop {
        let page = district
            .ingest
            .store
            .query(&gateway_store::RecordQuery { after, limit: 10_000, ..Default::default() })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        records.extend(page);
    }
    // The bulk load's log is folded in now, not during the timed run.
    district.ingest.store.checkpoint().await?;
    // Envelopes are sealed before the clock starts, as the unsigned run pre-serialises its
    // bodies: what is timed is delivery, the receiver's ingest, and the receipt check.
    let now = OffsetDateTime::now_utc();
    let mut prepared = Vec::with_capacity(records.len() / opts.batch.max(1) + 1);
    for batch in records.chunks(opts.batch) {
        prepared.push(district.prepare("cn-370300", batch, now).await?);
    }
    let elapsed = drain(prepared, opts.concurrency, move |envelope| {
        let (district, url) = (district.clone(), url.clone());
        async move {
            let receipt = district.deliver(&url, &envelope).await?;
            if receipt.outcomes.iter().any(|o| o.status != "accepted") {
                bail!("the city did not accept every record");
            }
            Ok(())
        }
    })
    .await?;
    let signed_rate = rate(records.len(), elapsed);
    let stored = city.app.ingest.store.count().await?;
    let _ = stop.send(());
    city.stopped().await?;
    if stored != opts.records as i64 {
        bail!("the city stored {stored} records, expected {}", opts.records);
    }
    Ok(signed_rate)
}

/// Ed25519 verifications per second on one core, over envelope-header-sized messages.
fn ed25519_verify_rate() -> f64 {
    let key = SigningKey::from_secret(Alg::EdDsa, &[5; 32]).unwrap_or_else(|_| unreachable!("fixed valid seed"));
    let public = key.public_key();
    let messages: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("{i:0>300}").into_bytes()).collect();
    let signatures: Vec<Vec<u8>> = messages.iter().map(|m| key.sign(m)).collect();
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        for (m, s) in messages.iter().zip(&signatures) {
            if public.verify(m, s).is_err() {
                return 0.0;
            }
        }
    }
    rate(rounds * messages.len(), started.elapsed())
}
