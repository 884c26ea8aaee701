//! Parser fuzzing on the stable toolchain (issue #26).
//!
//! Each [`Target`] feeds bytes to one parser that faces other parties: the strict JSON parser
//! and canonicaliser, the push batch, JWS, registries, envelopes (as the interchange library
//! reads them, and as a receiving node does), receipts, evidence bundles, adapter manifests,
//! workbooks and package files. [`fuzz`] takes a target's seed corpus
//! (`fuzz/corpus/<target>/`), mutates it (bit flips, interesting bytes, insertions, deletions,
//! duplications, splices with other seeds) and runs the target on every input, catching
//! panics. A panic is a finding: its input is written to `fuzz/regressions/<target>/` and, once
//! fixed, stays there as a regression input that `tests/brief.rs` replays on every run.
//!
//! Targets check properties where they have one (canonical JSON is a fixed point; a refused
//! input is refused with an error, never a panic), not only "does not crash".

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gateway_core::canonical::{Sha256Digest, canonical_string, parse_strict};
use gateway_core::interchange::envelope::{self, Envelope, Receiving};
use gateway_core::interchange::receipt::{self, Sent};
use gateway_core::interchange::registry::{Registry, RootKey};
use gateway_core::interchange::{evidence, parse_time};
use gateway_core::jws::Jws;
use gateway_core::record::{RecordValidator, ValidationPolicy};

/// The node the corpus's envelopes are addressed to.
pub const RECEIVER: &str = "cn-370300";

/// What the targets check against: the corpus's registry and anchor (a throwaway dev PKI,
/// public halves only), the envelope the receipt answers, a record validator and an adapter.
pub struct Fixtures {
    pub anchor: Vec<RootKey>,
    pub registry: Registry,
    /// When the corpus's envelopes are opened (inside their clock window).
    pub now: time::OffsetDateTime,
    /// The seed envelope's id, digest and item hashes (what its receipt must answer).
    pub sent: (String, Sha256Digest, Vec<Sha256Digest>),
    pub validator: RecordValidator,
    pub limits: credit_gateway::config::Limits,
    /// The CSV adapter's first dataset, for package rows.
    pub dataset: Arc<gateway_core::adapter::Dataset>,
    /// The receiving node's push path (its store in `_data` is never written: the receive
    /// target stops where storing would begin).
    pub ingest: Arc<credit_gateway::ingest::Ingest>,
    _data: tempfile::TempDir,
}

impl Fixtures {
    /// Loads the fixtures from the repository (`fuzz/corpus/`, `adapters/`).
    pub fn load(repo: &Path) -> anyhow::Result<Self> {
        let corpus = repo.join("fuzz/corpus");
        let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
        let anchor: Vec<RootKey> = serde_json::from_slice(&read(corpus.join("anchor.json"))?)?;
        let jws: Jws = serde_json::from_slice(&read(corpus.join("registry/registry.jws.json"))?)?;
        let registry = Registry::verify_signed(&jws, &anchor).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let seed: Envelope = serde_json::from_slice(&read(corpus.join("envelope/seed.json"))?)?;
        let opened_at = Receiving {
            registry: &registry,
            me: RECEIVER,
            now: parse_time(&registry.body.issued_at).context("issued_at")? + time::Duration::minutes(1),
            clock_window: time::Duration::minutes(5),
        };
        let opened = envelope::open(&seed, &opened_at).map_err(|e| anyhow::anyhow!("the seed envelope: {e}"))?;
        let sent =
            (opened.header.envelope_id.clone(), opened.digest, opened.items.iter().map(|i| i.item_hash).collect());
        let manifest = repo.join("adapters/xinyong-liaoning/manifest.toml");
        let adapter = credit_gateway::adapters::compile(&manifest)?;
        let dataset = Arc::clone(adapter.datasets.first().context("a dataset")?);
        let data = tempfile::tempdir()?;
        let config = credit_gateway::config::Config {
            data_dir: data.path().to_owned(),
            member_id: RECEIVER.to_owned(),
            ..Default::default()
        };
        let ingest = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(credit_gateway::server::open_ingest(&config))?;
        Ok(Self {
            ingest,
            _data: data,
            anchor,
            now: opened_at.now,
            registry,
            sent,
            validator: RecordValidator::new(&ValidationPolicy::default()).map_err(|e| anyhow::anyhow!("{e:?}"))?,
            limits: credit_gateway::config::Limits { max_batch_records: 50, ..Default::default() },
            dataset,
        })
    }
}

impl std::fmt::Debug for Fixtures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fixtures(registry v{})", self.registry.body.version)
    }
}

/// One parser under fuzzing.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&Fixtures, &[u8]),
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target { name: "json", run: json },
    Target { name: "batch", run: batch },
    Target { name: "jws", run: jws },
    Target { name: "registry", run: registry },
    Target { name: "envelope", run: envelope_target },
    Target { name: "receive", run: receive },
    Target { name: "receipt", run: receipt_target },
    Target { name: "evidence", run: evidence_target },
    Target { name: "manifest", run: manifest },
    Target { name: "workbook", run: workbook },
    Target { name: "package", run: package },
];

/// Strict parsing refuses or accepts; what it accepts canonicalises to a fixed point.
fn json(_: &Fixtures, bytes: &[u8]) {
    if let Ok(value) = parse_strict(bytes) {
        let text = canonical_string(&value);
        let again = parse_strict(text.as_bytes()).expect("canonical JSON parses strictly");
        assert_eq!(canonical_string(&again), text, "canonical JSON is a fixed point");
    }
}

/// The push body: nesting and count checked while parsing, then each record validated.
fn batch(f: &Fixtures, bytes: &[u8]) {
    if let Ok(records) = credit_gateway::ingest::parse_push_body(bytes, &f.limits) {
        assert!(records.len() <= f.limits.max_batch_records);
        let today = time::macros::date!(2026 - 12 - 07);
        for raw in records {
            let _ = f.validator.check_json(raw.get().as_bytes(), today);
        }
    }
}

fn jws(f: &Fixtures, bytes: &[u8]) {
    if let Ok(jws) = serde_json::from_slice::<Jws>(bytes) {
        for typ in ["credit-gateway/envelope+v1", "credit-gateway/receipt+v1", "credit-gateway/registry+v1"] {
            if let Ok(decoded) = jws.decode(typ)
                && let Ok(key) = f.registry.signing_key(&decoded.header.kid, RECEIVER, f.now)
            {
                let _ = decoded.verify(&key);
            }
        }
    }
}

fn registry(f: &Fixtures, bytes: &[u8]) {
    if let Ok(jws) = serde_json::from_slice::<Jws>(bytes) {
        let _ = Registry::verify(&jws, &f.anchor, Some(1), f.now, time::Duration::days(7));
    }
}

fn envelope_target(f: &Fixtures, bytes: &[u8]) {
    if let Ok(env) = serde_json::from_slice::<Envelope>(bytes) {
        let at =
            Receiving { registry: &f.registry, me: RECEIVER, now: f.now, clock_window: time::Duration::minutes(5) };
        if let Ok(opened) = envelope::open(&env, &at) {
            // Whatever opens is what its sender signed: every item is in the Merkle tree.
            for item in &opened.items {
                assert!(envelope::verify_proof(&item.proof, &item.item_hash, &opened.header));
            }
        }
    }
}

/// The body of `POST /federation/v1/envelopes` as the receiving node reads it (its own
/// borrowing wire parser, not the [`Envelope`] type): checked, or refused with a 4xx.
fn receive(f: &Fixtures, bytes: &[u8]) {
    let at = Receiving { registry: &f.registry, me: RECEIVER, now: f.now, clock_window: time::Duration::minutes(5) };
    let today = gateway_core::date::today_in_china(f.now);
    match credit_gateway::interchange::check_received_body(&f.ingest, "cn-370306", bytes, &at, today) {
        Ok((items, rejected)) => assert!(rejected <= items),
        Err(e) => assert!(e.kind.status() < 500, "a received body answered {}: {e:?}", e.kind.status()),
    }
}

fn receipt_target(f: &Fixtures, bytes: &[u8]) {
    if let Ok(jws) = serde_json::from_slice::<Jws>(bytes) {
        let (id, digest, hashes) = &f.sent;
        let sent =
            Sent { envelope_id: id, digest: *digest, sender: "cn-370306", receiver: RECEIVER, item_hashes: hashes };
        if let Ok(body) = receipt::verify_receipt(&jws, &sent, &f.registry) {
            assert_eq!(body.outcomes.len(), hashes.len());
        }
    }
}

fn evidence_target(f: &Fixtures, bytes: &[u8]) {
    let _ = evidence::verify(bytes, &f.anchor);
}

fn manifest(_: &Fixtures, bytes: &[u8]) {
    let _ = gateway_core::adapter::Adapter::compile(bytes, |name| Err(format!("{name}: not read while fuzzing")));
}

/// An uploaded cases workbook, and the directory check every workbook passes first.
fn workbook(_: &Fixtures, bytes: &[u8]) {
    let _ = credit_gateway::adapters::unzip::check_bytes(bytes, "fuzz.xlsx");
    if let Ok(rows) = credit_gateway::joint::workbook::answer_rows(bytes, 100) {
        assert!(rows.len() <= 100);
    }
}

/// A file of an inbox package, read as CSV, JSON and XLSX rows.
fn package(f: &Fixtures, bytes: &[u8]) {
    use gateway_core::adapter::PackageFormat;
    for format in [PackageFormat::Csv, PackageFormat::Json, PackageFormat::Xlsx] {
        let _ = credit_gateway::adapters::files::parse_rows(&f.dataset, format, bytes);
    }
}

/// A small, fast, seedable generator (xorshift64*): runs are reproducible from their seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

/// Bytes parsers trip over: boundaries, JSON and ZIP structure, UTF-8 lead bytes.
const INTERESTING: &[&[u8]] = &[
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xc3",
    b"\xe4\xb8",
    b"\xf0\x9f\x98",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"-",
    b"0",
    b"1e999",
    b"-0",
    b"9007199254740993",
    b"null",
    b"true",
    b"\\u0000",
    b"\\ud800",
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"\r\n",
    b"=",
    b".",
    b"/",
    b"../",
    b"%",
    b"\t",
];

/// One mutated input from the corpus.
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(6) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next_u64() as u8;
            }
            2 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                data.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(256)).min(len);
                let piece = data[from..to].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, piece);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + 1 + rng.below(512)).min(other.len());
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[from..to].iter().copied());
                }
            }
            _ if len > 0 => data.truncate(rng.below(len)),
            _ => {}
        }
    }
    data
}

/// Files of a directory with their bytes.
pub type Files = Vec<(PathBuf, Vec<u8>)>;

/// The seed inputs of a target, and the regression inputs kept from its findings.
pub fn load_inputs(repo: &Path, target: &str) -> anyhow::Result<(Vec<Vec<u8>>, Files)> {
    let read_dir = |dir: PathBuf| -> anyhow::Result<Files> {
        let mut files = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let path = entry?.path();
                if path.is_file() {
                    files.push((path.clone(), std::fs::read(&path)?));
                }
            }
        }
        files.sort();
        Ok(files)
    };
    let seeds: Vec<Vec<u8>> = read_dir(repo.join("fuzz/corpus").join(target))?.into_iter().map(|(_, b)| b).collect();
    anyhow::ensure!(!seeds.is_empty(), "fuzz/corpus/{target}/ holds no seed");
    let regressions = read_dir(repo.join("fuzz/regressions").join(target))?;
    Ok((seeds, regressions))
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Run {
    pub executions: u64,
    /// The first input that panicked, and the panic's message.
    pub crash: Option<(Vec<u8>, String)>,
}

/// Runs `input` through `target`; a panic is returned as its message.
pub fn run_one(target: &Target, fixtures: &Fixtures, input: &[u8]) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(fixtures, input))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned())
    })
}

/// Fuzzes `target` for `time` from `seeds` with `seed`: the seeds first, then mutations.
pub fn fuzz(target: &Target, fixtures: &Fixtures, seeds: &[Vec<u8>], time: Duration, seed: u64) -> Run {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut executions = 0;
    for input in seeds {
        executions += 1;
        if let Err(message) = run_one(target, fixtures, input) {
            return Run { executions, crash: Some((input.clone(), message)) };
        }
    }
    while started.elapsed() < time {
        let input = mutate(&mut rng, seeds);
        executions += 1;
        if let Err(message) = run_one(target, fixtures, &input) {
            return Run { executions, crash: Some((input, message)) };
        }
    }
    Run { executions, crash: None }
}
