//! `credit-gateway`: the gateway node and its operator commands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use credit_gateway::config::{Config, LogFormat, Overrides};
use credit_gateway::{bench, pki, server};
use gateway_core::date::{format_date, parse_date};

/// mimalloc, tuned at start by `gateway_memory::keep_freed_memory` (see that crate).
#[global_allocator]
static GLOBAL: gateway_memory::MiMalloc = gateway_memory::MiMalloc;

#[derive(Parser)]
#[command(name = "credit-gateway", version, about = "信用信息交换网关 · Credit Gateway node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway node (defaults: SQLite in ./data, listening on 127.0.0.1:8080).
    Serve {
        /// Address to listen on.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Federation (mTLS) address; default: the member's port in the demo registry.
        #[arg(long)]
        federation_listen: Option<SocketAddr>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// A consistent copy of the node's SQLite database, taken while the node serves.
    Backup {
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The database migrations this version carries: `--check` lists those the node's database
    /// has not applied (and changes nothing); without it they are applied now (a node applies
    /// them itself when it starts).
    Migrate {
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Restores a backup as the database of a new data directory (never over an existing one).
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run the demo federation on loopback (周村区 → 信用淄博 → 信用山东 → 信用中国, plus
    /// 信用东营): push sample records, raise a correction, a repair and an objection, and show
    /// each reaching every node. Runs until stopped.
    Demo(credit_gateway::demo::DemoOptions),
    /// Evidence bundles: export a record's signed path, verify one offline.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
    /// Credit evaluations of partner cities (信用评价结果互认), through a running node.
    Evaluation {
        #[command(subcommand)]
        command: credit_gateway::evaluations::cli::EvaluationCommand,
    },
    /// Node-to-node operations.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// The relay's queues and dead letters, through a running node's API.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Development PKI for a demo federation.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Working-day calendar.
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// Reproducible benchmarks; results go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Platform adapter manifests: run the conformance suite, sign, print the registry entry.
    Adapter {
        #[command(subcommand)]
        command: AdapterCommand,
    },
    /// Import a department's monthly Excel report (月报) through a running node; writes the
    /// workbook back with a 问题数据反馈 column.
    Import(credit_gateway::adapters::cli::ImportOptions),
    /// Blank templates for departments.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// The joint reward-and-punishment measures catalogue (联合奖惩措施清单): conformance
    /// check, sign, print the registry entry.
    Measures {
        #[command(subcommand)]
        command: MeasuresCommand,
    },
    /// Credentials of the API's principals (API keys, client certificates), on this host.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// The hash-chained audit log: verify it, export it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Dashboard operator accounts.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
}

#[derive(Subcommand)]
enum MeasuresCommand {
    /// Run the conformance check on catalogues (default: measures/*.toml). Exits 1 if any fails.
    Check { files: Vec<PathBuf> },
    /// Sign a reviewed catalogue as the federation root (writes `<catalogue>.sig` beside it).
    Sign {
        catalogue: PathBuf,
        /// The root's signing key file.
        #[arg(long, default_value = "certs/dev/root-signing.key.json")]
        root_key: PathBuf,
        /// Signature file to write.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the registry `measures` entry that approves a catalogue.
    Hash { catalogue: PathBuf },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Issue an API key (printed once, alone on standard output) or register a client
    /// certificate for a principal.
    Issue {
        #[command(flatten)]
        options: credit_gateway::auth::cli::IssueOptions,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List credentials: role, unit, state, last use (never secrets).
    List {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Revoke a credential (refused from the next call on).
    Revoke {
        /// The credential id (see `credential list`).
        id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain; exit 1 and name every entry deleted, altered or out of place.
    Verify {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Write the entries as JSON lines (with their chain fields).
    Export {
        /// Only entries after this seq.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// File to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Read a password from standard input (one line) and print its hash for
    /// `[[dashboard.operators]] password_hash`.
    HashPassword {
        /// PBKDF2 iterations (default: the current recommendation).
        #[arg(long, default_value_t = credit_gateway::dashboard::auth::ITERATIONS)]
        iterations: u32,
    },
}

#[derive(Subcommand)]
enum AdapterCommand {
    /// Compile manifests and run the conformance suite on their samples (default: every
    /// adapter under ./adapters). Exits 1 if any fails.
    Check {
        /// Adapter folders (or manifest files).
        dirs: Vec<PathBuf>,
    },
    /// Sign a reviewed manifest as the federation root (writes manifest.sig beside it).
    Sign {
        manifest: PathBuf,
        /// The root's signing key file.
        #[arg(long, default_value = "certs/dev/root-signing.key.json")]
        root_key: PathBuf,
        /// Signature file to write.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the registry `adapters` entry that approves a manifest.
    Hash { manifest: PathBuf },
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// The monthly report workbook of an intake adapter, with a 填报说明 sheet.
    Xlsx {
        /// The intake adapter's manifest.
        #[arg(long, default_value = "adapters/zhoucun-district/manifest.toml")]
        adapter: PathBuf,
        #[arg(long, default_value = "月报模板.xlsx")]
        out: PathBuf,
    },
}

/// Which node: its configuration, data and federation identity.
#[derive(clap::Args)]
struct NodeArgs {
    /// Data directory (SQLite database, operator calendar files).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run as this member of a `certs init` PKI (e.g. cn-370300): federation over mTLS.
    #[arg(long)]
    member: Option<String>,
    /// The PKI directory written by `certs init`.
    #[arg(long, default_value = "certs/dev")]
    pki: PathBuf,
    /// A peer's federation URL instead of its registry endpoint, as MEMBER=URL (repeatable;
    /// adds to `[federation.peers]`).
    #[arg(long = "peer", value_name = "MEMBER=URL")]
    peers: Vec<String>,
}

impl NodeArgs {
    fn load(self, listen: Option<SocketAddr>, federation_listen: Option<SocketAddr>) -> anyhow::Result<Config> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let overrides = Overrides {
            config_file: self.config,
            listen,
            data_dir: self.data_dir,
            member: self.member,
            pki_dir: Some(self.pki),
            federation_listen,
        };
        let mut config = Config::load(&overrides, &env)?;
        for peer in self.peers {
            let (member, url) = peer.split_once('=').with_context(|| format!("--peer {peer:?} is not MEMBER=URL"))?;
            let fed =
                config.federation.as_mut().context("--peer needs a federation identity (--member or [federation])")?;
            fed.peers.insert(member.to_owned(), url.to_owned());
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum EvidenceCommand {
    /// Write the evidence bundle of a record version held by this node (asks the nodes it
    /// came through for the earlier hops).
    Export {
        /// The record id (UUID).
        record_id: uuid::Uuid,
        /// Record version; default the latest held.
        #[arg(long)]
        version: Option<i64>,
        /// Output file; default stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Verify a bundle offline against the federation root keys (the configuration anchor).
    /// Exits 1 and names the first failure if anything does not hold.
    Verify {
        bundle: PathBuf,
        /// Trusted federation root keys (JSON list).
        #[arg(long, default_value = "certs/dev/anchor.json")]
        anchor: PathBuf,
    },
}

#[derive(Subcommand)]
enum CalendarCommand {
    /// Print the 双公示 publicity deadline (7th working day after the decision date).
    Deadline {
        /// Decision date, YYYY-MM-DD.
        date: String,
        /// Extra calendar files (default: ./data/calendar).
        #[arg(long, default_value = "data/calendar")]
        calendar_dir: PathBuf,
    },
    /// List the loaded years and their sources.
    Years {
        #[arg(long, default_value = "data/calendar")]
        calendar_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Check the mutual-TLS link to a peer: fetch and verify its registry as MEMBER.
    Check {
        /// Connect as this member (its certificate from the PKI directory).
        #[arg(long)]
        member: String,
        /// The peer's federation base URL, e.g. https://localhost:8442.
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "certs/dev")]
        pki: PathBuf,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Each destination's cursor, backlog, dead letters and delivery state.
    Status {
        /// The node's API base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Records a destination refused for good (or that wait behind one), with the reason.
    DeadLetters {
        /// Only this destination (member id or `publication`).
        #[arg(long)]
        destination: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Queue a destination's dead letters for delivery again, after fixing their cause.
    Resend {
        #[arg(long)]
        destination: String,
        /// Only this record's dead letters.
        #[arg(long)]
        record_id: Option<uuid::Uuid>,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Generate a federation CA, root key, node certificates and keys, and a signed registry.
    Init(pki::InitOptions),
    /// Days to expiry of the CA and of every node's TLS certificate in a PKI directory.
    Status {
        /// The PKI directory written by `certs init`.
        #[arg(long, default_value = "certs/dev")]
        pki: PathBuf,
    },
    /// A member's new signing key: written beside its key, and published in the next
    /// registry version from the switch time, the old key kept valid for the overlap after.
    /// Then reload the member's node (SIGHUP) and every node that reads this registry file.
    RotateKey {
        #[arg(long)]
        member: String,
        /// Minutes until the new key signs (peers must hold the new registry by then).
        #[arg(long, default_value_t = 60)]
        switch_in_minutes: i64,
        /// Days the old key stays valid after the switch.
        #[arg(long, default_value_t = 7)]
        overlap_days: i64,
        #[arg(long, default_value = "certs/dev")]
        pki: PathBuf,
    },
    /// A member's renewed TLS certificate from the PKI's CA, pinned in the next registry
    /// version. Then reload (SIGHUP) the member's node and the nodes that read this registry.
    RenewTls {
        #[arg(long)]
        member: String,
        #[arg(long, default_value = "certs/dev")]
        pki: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ingest through the HTTP API into SQLite (or PostgreSQL), beside the raw store ceiling.
    Ingest(bench::IngestOptions),
    /// Ingest with authentication (API key, client certificate) vs without.
    Access(bench::AccessBenchOptions),
    /// Signed-envelope ingest over mutual TLS, beside raw Ed25519 verification and unsigned ingest.
    Envelopes(bench::EnvelopeOptions),
    /// Four nodes over mutual TLS: bulk load and steady-rate latency from district to national,
    /// peak RSS per node, beside one node's ingest rate.
    Relay(bench::RelayOptions),
    /// A 100,000-row monthly workbook through the intake adapter, beside its raw read rate.
    Import(bench::ImportBenchOptions),
    /// The dashboard's pages with 1,000,000 records stored, beside the server's floor.
    Dashboard(bench::DashboardBenchOptions),
    /// Partner evaluation lookups over mTLS with a million evaluations stored.
    Evaluations(bench::EvaluationBenchOptions),
    /// Joint cases: opening 100,000 entries × 5 measures, then checks with 1,000,000 cases stored.
    Joint(bench::JointBenchOptions),
    /// A node's RSS under 40 concurrent 16 MiB bodies, and how soon it falls back after.
    Bodies(bench::BodiesBenchOptions),
    /// Three nodes for 30 minutes of pushes, relay and lookups at half their ceiling, with kill -9s
    /// and cut connections: RSS, open files and WAL over time; records lost and duplicated.
    Soak(bench::SoakOptions),
}

fn main() -> std::process::ExitCode {
    gateway_memory::keep_freed_memory();
    // One TLS crypto provider for the whole process: ring (never aws-lc-rs).
    credit_gateway::tls::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve { listen, federation_listen, node } => {
            let config = node.load(listen, federation_listen)?;
            init_logging(config.log_format);
            runtime()?.block_on(serve(config))?;
        }
        Command::Evidence { command: EvidenceCommand::Export { record_id, version, out, node } } => {
            let config = node.load(None, None)?;
            init_logging(LogFormat::Text);
            let bundle = runtime()?.block_on(export_evidence(&config, record_id, version))?;
            let text = serde_json::to_string_pretty(&bundle)? + "\n";
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("evidence of {record_id} ({} hops) written to {}", bundle.hops.len(), path.display());
                }
                None => print!("{text}"),
            }
        }
        Command::Evidence { command: EvidenceCommand::Verify { bundle, anchor } } => {
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let roots: Vec<gateway_core::interchange::registry::RootKey> =
                serde_json::from_slice(&read(&anchor)?).with_context(|| format!("{}", anchor.display()))?;
            let bytes = read(&bundle)?;
            if gateway_core::interchange::evaluation::is_answer_evidence(&bytes) {
                return Ok(match gateway_core::interchange::evaluation::verify_answer_evidence(&bytes, &roots) {
                    Ok(v) => {
                        print!("{}", answer_summary(&v));
                        std::process::ExitCode::SUCCESS
                    }
                    Err(e) => {
                        println!("FAILED {}: {e}", bundle.display());
                        std::process::ExitCode::from(1)
                    }
                });
            }
            match gateway_core::interchange::evidence::verify(&bytes, &roots) {
                Ok(v) => print!("{}", evidence_summary(&v)),
                Err(e) => {
                    println!("FAILED {}: {e}", bundle.display());
                    return Ok(std::process::ExitCode::from(1));
                }
            }
        }
        Command::Calendar { command: CalendarCommand::Deadline { date, calendar_dir } } => {
            let cal = server::load_calendar(&calendar_dir)?;
            let day = parse_date(&date).with_context(|| format!("{date:?} is not a YYYY-MM-DD date"))?;
            match cal.deadline(day) {
                Ok(deadline) => println!("{}", format_date(deadline)),
                Err(unknown) => {
                    println!("calendar-unknown");
                    eprintln!("{unknown}; add {}/{}.toml to extend the calendar", calendar_dir.display(), unknown.year);
                    return Ok(std::process::ExitCode::from(3));
                }
            }
        }
        Command::Calendar { command: CalendarCommand::Years { calendar_dir } } => {
            for y in server::load_calendar(&calendar_dir)?.years() {
                println!("{}\t{} working days\t{}", y.year, y.working_day_count(), y.source);
            }
        }
        Command::Federation { command: FederationCommand::Check { member, url, pki } } => {
            let version = runtime()?.block_on(credit_gateway::federation::check_link(&pki, &member, &url))?;
            println!("ok: mutual TLS link to {url} as {member}; registry version {version} verified");
        }
        Command::Demo(opts) => {
            // Five nodes' info lines would bury the guide; warnings still show.
            init_logging_at(LogFormat::Text, "warn");
            runtime()?.block_on(credit_gateway::demo::run(&opts, shutdown_signal()))?;
        }
        Command::Evaluation { command } => {
            let text = runtime()?.block_on(credit_gateway::evaluations::cli::run(command))?;
            println!("{text}");
        }
        Command::Outbox { command } => {
            let text = runtime()?.block_on(outbox(command))?;
            println!("{text}");
        }
        Command::Certs { command: CertsCommand::Init(opts) } => {
            pki::init(&opts)?;
            println!("dev PKI written to {} (see certs/README.md)", opts.out.display());
        }
        Command::Backup { out, node } => {
            let config = node.load(None, None)?;
            let db = embedded_database(&config)?;
            let bytes = runtime()?.block_on(gateway_store::backup::copy(&db, &out))?;
            println!("backed up {} to {} ({bytes} bytes)", db.display(), out.display());
        }
        Command::Migrate { check, node } => {
            let config = node.load(None, None)?;
            let rt = runtime()?;
            let pending = rt.block_on(async {
                match config.postgres_url() {
                    Some(url) => gateway_store::migrations::pending_postgres(url).await,
                    None => gateway_store::migrations::pending_sqlite(&config.sqlite_path()).await,
                }
            })?;
            for (version, description) in &pending {
                println!("pending  {version:04}  {description}");
            }
            if check {
                println!("{} migration(s) pending", pending.len());
            } else if !pending.is_empty() {
                rt.block_on(async {
                    server::open_store(&config).await?.close().await;
                    anyhow::Ok(())
                })?;
                println!("{} migration(s) applied", pending.len());
            } else {
                println!("the database is up to date");
            }
        }
        Command::Restore { from, node } => {
            let config = node.load(None, None)?;
            let db = embedded_database(&config)?;
            let records = runtime()?.block_on(gateway_store::backup::restore(&from, &db))?;
            println!("restored {} into {} ({records} records)", from.display(), db.display());
        }
        Command::Certs { command: CertsCommand::Status { pki } } => {
            let now = time::OffsetDateTime::now_utc();
            println!("{:<12} {:<22} {:>9}  file", "certificate", "not after (UTC)", "days left");
            for c in pki::cert_status(&pki)? {
                let (when, left) = match (c.not_after, c.days_left(now)) {
                    (Some(t), Some(d)) => (gateway_core::date::format_timestamp(t), d.to_string()),
                    _ => ("unreadable".to_owned(), "—".to_owned()),
                };
                let flag = match c.days_left(now) {
                    Some(d) if d < 0 => "  EXPIRED",
                    Some(d) if d < 30 => "  renew soon",
                    _ => "",
                };
                println!("{:<12} {:<22} {:>9}  {}{flag}", c.name, when, left, c.path.display());
            }
        }
        Command::Certs { command: CertsCommand::RotateKey { member, switch_in_minutes, overlap_days, pki } } => {
            let now = time::OffsetDateTime::now_utc();
            let switch = pki::KeySwitch {
                at: now + time::Duration::minutes(switch_in_minutes.max(0)),
                overlap: time::Duration::days(overlap_days.max(0)),
            };
            let r = pki::rotate_key(&pki, &member, switch, now)?;
            println!(
                "new key {} in {}; registry version {} lists it from {} (old keys valid until {})\n\
                 next: reload (SIGHUP) {member}'s node and every node reading {}",
                r.kid,
                r.key_file.display(),
                r.registry_version,
                gateway_core::date::format_timestamp(switch.at),
                gateway_core::date::format_timestamp(switch.at + switch.overlap),
                pki::registry_file(&pki).display(),
            );
        }
        Command::Certs { command: CertsCommand::RenewTls { member, pki } } => {
            let (pin, version) = pki::renew_tls(&pki, &member, time::OffsetDateTime::now_utc())?;
            println!(
                "renewed {}; registry version {version} pins {pin}\n\
                 next: reload (SIGHUP) {member}'s node and every node reading {}",
                pki::NodeFiles::new(&pki, &member).tls_cert().display(),
                pki::registry_file(&pki).display(),
            );
        }
        Command::Adapter { command: AdapterCommand::Check { dirs } } => {
            if !credit_gateway::adapters::cli::check(&dirs)? {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Adapter { command: AdapterCommand::Sign { manifest, root_key, out } } => {
            credit_gateway::adapters::cli::sign(&manifest, &root_key, out.as_deref())?;
        }
        Command::Adapter { command: AdapterCommand::Hash { manifest } } => {
            println!("{}", credit_gateway::adapters::cli::hash(&manifest)?);
        }
        Command::Measures { command } => {
            use credit_gateway::joint::cli;
            match command {
                MeasuresCommand::Check { files } => {
                    if !cli::check(&files)? {
                        return Ok(std::process::ExitCode::from(1));
                    }
                }
                MeasuresCommand::Sign { catalogue, root_key, out } => {
                    cli::sign(&catalogue, &root_key, out.as_deref())?;
                }
                MeasuresCommand::Hash { catalogue } => println!("{}", cli::hash(&catalogue)?),
            }
        }
        Command::Credential { command } => {
            use credit_gateway::auth::cli;
            init_logging_at(LogFormat::Text, "warn");
            match command {
                CredentialCommand::Issue { options, node } => {
                    let config = node.load(None, None)?;
                    runtime()?.block_on(cli::issue(&config, options))?;
                }
                CredentialCommand::List { node } => runtime()?.block_on(cli::list(&node.load(None, None)?))?,
                CredentialCommand::Revoke { id, node } => {
                    runtime()?.block_on(cli::revoke(&node.load(None, None)?, &id))?
                }
            }
        }
        Command::Audit { command } => {
            use credit_gateway::auth::cli;
            init_logging_at(LogFormat::Text, "warn");
            match command {
                AuditCommand::Verify { node } => {
                    if !runtime()?.block_on(cli::verify(&node.load(None, None)?))? {
                        return Ok(std::process::ExitCode::from(1));
                    }
                }
                AuditCommand::Export { after, out, node } => {
                    runtime()?.block_on(cli::export(&node.load(None, None)?, after, out))?;
                }
            }
        }
        Command::Operator { command: OperatorCommand::HashPassword { iterations } } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(password.chars().count() >= 12, "use a password of at least 12 characters");
            println!("{}", credit_gateway::dashboard::auth::hash_password(password, iterations)?);
        }
        Command::Import(opts) => {
            runtime()?.block_on(credit_gateway::adapters::cli::import(&opts))?;
        }
        Command::Template { command: TemplateCommand::Xlsx { adapter, out } } => {
            let adapter = credit_gateway::adapters::compile(&adapter)?;
            let bytes = credit_gateway::adapters::xlsx::template(&adapter)?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("template of {} written to {}", adapter.manifest.platform.name, out.display());
        }
        Command::Bench { command: BenchCommand::Import(opts) } if opts.phase.is_some() => {
            init_logging(LogFormat::Text);
            println!("{}", runtime()?.block_on(bench::import_phase(&opts))?);
        }
        Command::Bench { command: BenchCommand::Import(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::import(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Dashboard(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::dashboard(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Soak(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::soak(&opts))?;
            println!("{report}");
            let (lost, duplicated) = report.lost_and_duplicated();
            anyhow::ensure!(lost == 0 && duplicated == 0, "{lost} records lost, {duplicated} duplicated");
        }
        Command::Bench { command: BenchCommand::Bodies(opts) } => {
            init_logging(LogFormat::Text);
            println!("{}", bench::bodies(&opts)?);
        }
        Command::Bench { command: BenchCommand::Joint(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::joint(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Evaluations(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::evaluations(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Relay(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::relay(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Envelopes(opts) } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(bench::envelopes(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Access(opts) } => {
            init_logging_at(LogFormat::Text, "error");
            let report = runtime()?.block_on(bench::access(&opts))?;
            println!("{report}");
        }
        Command::Bench { command: BenchCommand::Ingest(opts) } => {
            init_logging(LogFormat::Text);
            match &opts.postgres {
                Some(url) => println!("{}", runtime()?.block_on(bench::ingest_postgres(&opts, url))?),
                None => println!("{}", runtime()?.block_on(bench::ingest(&opts))?),
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn export_evidence(
    config: &Config,
    record_id: uuid::Uuid,
    version: Option<i64>,
) -> anyhow::Result<gateway_core::interchange::evidence::Bundle> {
    let fed = config
        .federation
        .as_ref()
        .context("evidence export needs the node's federation identity (--member or [federation])")?;
    // A read-only command: it never makes a data directory or an empty database.
    let database = config.sqlite_path();
    anyhow::ensure!(
        config.postgres_url().is_some() || database.exists(),
        "no node data at {}: pass the node's --data-dir (the demo keeps each node's under data/demo/<member>, \
         e.g. --data-dir data/demo/cn-370300)",
        database.display()
    );
    let node = server::open_node(config, fed).await?;
    let bundle = node.export_evidence(record_id, version).await;
    node.ingest.store.close().await;
    bundle
}

/// Runs an `outbox` command against a node's API; returns the answer, pretty-printed.
async fn outbox(command: OutboxCommand) -> anyhow::Result<String> {
    let client = credit_gateway::auth::cli::api_client()?;
    let request = match &command {
        OutboxCommand::Status { url } => client.get(format!("{}/api/v1/outbox", url.trim_end_matches('/'))),
        OutboxCommand::DeadLetters { destination, url } => {
            let mut target = format!("{}/api/v1/dead-letters", url.trim_end_matches('/'));
            if let Some(d) = destination {
                // Member ids and `publication` need no escaping; anything else is a typo.
                anyhow::ensure!(
                    d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                    "--destination {d:?} is not a member id or `publication`"
                );
                target.push_str(&format!("?destination={d}"));
            }
            client.get(target)
        }
        OutboxCommand::Resend { destination, record_id, url } => client
            .post(format!("{}/api/v1/dead-letters/resend", url.trim_end_matches('/')))
            .json(&serde_json::json!({"destination": destination, "record_id": record_id})),
    };
    let resp = request.send().await.context("the node's API did not answer (is it running? see --url)")?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("the node's answer is not JSON")?;
    anyhow::ensure!(status.is_success(), "{status}: {body}{}", credit_gateway::auth::cli::credential_hint(status));
    Ok(serde_json::to_string_pretty(&body)?)
}

/// What a verified evaluation answer shows.
fn answer_summary(v: &gateway_core::interchange::evaluation::VerifiedAnswer) -> String {
    let b = &v.body;
    let agreements: Vec<&str> = b.agreements.iter().map(|a| a.agreement_id.as_str()).collect();
    let evaluations: usize = b.subjects.iter().map(|s| s.evaluations.len()).sum();
    format!(
        "ok: evaluation answer {} from {} to {} at {} (signed by {}), registry version {}\n\
         agreements {} signed by every party; {} subjects, {} evaluations, every verdict as of {} checked\n",
        b.answer_id,
        b.answerer,
        b.asker,
        b.answered_at,
        v.signer,
        v.registry_version,
        agreements.join(", "),
        b.subjects.len(),
        evaluations,
        b.as_of
    )
}

/// What a verified bundle shows, one line per hop.
fn evidence_summary(v: &gateway_core::interchange::evidence::Verified) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "ok: record {} v{} of {} (item sha-256 {}), registry version {}\n",
        v.record_id,
        v.version,
        v.origin,
        v.item_hash.to_hex(),
        v.registry_version
    );
    for (i, h) in v.hops.iter().enumerate() {
        let _ = writeln!(
            s,
            "hop {i}: {} -> {}  envelope {} signed {}  receipt {} at {}",
            h.sender, h.receiver, h.envelope_id, h.created_at, h.status, h.received_at
        );
    }
    s
}

/// The node's SQLite database; a PostgreSQL node is backed up with PostgreSQL's tools.
fn embedded_database(config: &Config) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        config.postgres_url().is_none(),
        "this node keeps its data in PostgreSQL: back it up and restore it with pg_dump and pg_restore \
         (docs/operations.md, \"备份 · Backup\")"
    );
    Ok(config.sqlite_path())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Taken before the node starts: from then on SIGHUP reloads instead of ending the process.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let node = server::start(config, shutdown_signal()).await?;
    #[cfg(unix)]
    {
        let reloader = node.reloader.clone();
        tokio::spawn(async move {
            use std::io::Write as _;
            while hangups.recv().await.is_some() {
                let done = reloader.reload(time::OffsetDateTime::now_utc());
                // A plain line, like the listening lines, for scripts; nobody may be reading.
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "credit-gateway reloaded: {} part(s) refused{}",
                    done.errors.len(),
                    done.errors.iter().map(|e| format!("; {e}")).collect::<String>()
                );
            }
        });
    }
    // Plain lines on stdout: scripts and tests wait for them to learn the bound ports.
    if let Some(addr) = node.federation {
        println!("credit-gateway federation listening on https://{addr}");
    }
    println!("credit-gateway listening on http://{}", node.api);
    node.stopped().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

fn init_logging(format: LogFormat) {
    init_logging_at(format, "info,sqlx=warn,tower_http=warn");
}

/// Logging with `default` as the filter when `RUST_LOG` is not set.
fn init_logging_at(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        // Colours only on a terminal: journald and files get plain text.
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}
