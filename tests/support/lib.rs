//! `testkit`: helpers shared by the system tests beside this file and by the node's own
//! tests — stores on SQLite and PostgreSQL, nodes in-process or as `credit-gateway`
//! processes, dev PKIs, a fault proxy, polling with a deadline.

pub use credit_gateway::bench::proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credit_gateway::app::App;
use credit_gateway::config::Config;
use gateway_store::{RecordQuery, Store, StoredRecord};

/// The PostgreSQL the tests use (CI starts it at 127.0.0.1:5432).
pub fn postgres_url() -> String {
    std::env::var("CREDIT_GATEWAY_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL schema per test, so tests never see each other's rows. Returns the
/// schema's name for [`drop_postgres_schema`].
pub async fn postgres_store() -> (Store, String) {
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let store = Store::open_postgres(&postgres_url(), Some(&schema))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required for the store suite: {e}", postgres_url()));
    (store, schema)
}

/// Removes a test schema and everything in it.
pub async fn drop_postgres_schema(schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.expect("connect");
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("drop schema");
}

pub async fn sqlite_store(dir: &Path) -> Store {
    Store::open_sqlite(&dir.join("gateway.sqlite"), credit_gateway::config::SqliteSync::Full).await.expect("sqlite")
}

/// The configuration of an in-process test node: SQLite in `dir`, the API on a free loopback
/// port; no relay, no background SLA tracker (views track everything) and no publicity-expiry
/// job (its first pass, on the wall clock, would race the test's own pushes). A test that
/// wants one switches it on.
pub fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_owned(),
        relay: credit_gateway::config::RelayConfig { enabled: false, ..Default::default() },
        sla: credit_gateway::config::SlaConfig { tracking_interval_secs: 0 },
        publicity: credit_gateway::config::PublicityConfig { expiry_interval_secs: 0 },
        ..Config::default()
    }
}

/// Starts a node of `config` in-process with `server::start`, as `serve` does. It runs until
/// the test's runtime ends.
pub async fn start(config: Config) -> Running {
    let running = credit_gateway::server::start(config, std::future::pending()).await.expect("node starts");
    Running {
        api: format!("http://{}", running.api),
        federation_port: running.federation.map(|a| a.port()),
        app: running.app.clone(),
        _node: Arc::new(running),
    }
}

/// An in-process node started by [`start`].
#[derive(Debug, Clone)]
pub struct Running {
    /// `http://127.0.0.1:<port>` of its API.
    pub api: String,
    /// The port of its federation endpoint, when it has one.
    pub federation_port: Option<u16>,
    pub app: App,
    _node: Arc<credit_gateway::server::Running>,
}

impl Running {
    /// What `serve` does on SIGHUP: takes up a newer registry file, new signing keys and
    /// renewed certificates.
    pub fn reload(&self) -> credit_gateway::server::Reloaded {
        self._node.reloader.reload(time::OffsetDateTime::now_utc())
    }

    /// The interchange side of a node with a federation identity.
    pub fn node(&self) -> credit_gateway::interchange::Node {
        self.app.federation.clone().expect("a node with a federation identity")
    }
}

/// A node on SQLite in `dir`, with default settings, serving its API on a free port.
pub async fn gateway(dir: &Path) -> App {
    start(config(dir)).await.app
}

/// A `credit-gateway serve` child process.
#[derive(Debug)]
pub struct Node {
    pub child: Child,
    pub base: String,
    pub federation: Option<String>,
}

impl Node {
    /// Starts the real binary on a free loopback port and waits for its "listening" line.
    pub fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[])
    }

    /// Like [`Node::start`], with extra `serve` arguments. With a federation endpoint, its
    /// address is in `federation`.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Node {
        Self::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Like [`Node::start_with`], with the API on `listen` (a restarted node keeps its address).
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(gateway_bin())
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn credit-gateway");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        match read_addresses(stdout) {
            Ok((base, federation)) => Node { child, base, federation },
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("credit-gateway did not start: {why}");
            }
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

/// Reads the "listening" lines: the API address, and the federation address if there is one.
fn read_addresses(mut stdout: impl BufRead) -> Result<(String, Option<String>), String> {
    let mut federation = None;
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("exited before listening".into());
        }
        let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        if line.contains("federation listening") {
            federation = Some(addr);
        } else if addr.starts_with("http://127.0.0.1:") {
            return Ok((addr, federation));
        } else {
            return Err(format!("unexpected line {line:?}"));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome letters (`a` accepted, `n` new version, `d` duplicate) of every envelope the
/// node with SQLite in `data_dir` received, from its compact receipts, in one string: counting
/// a letter counts those outcomes over all its receipts. Panics on a receipt kept in full
/// (one with a rejected item).
pub async fn received_outcomes(data_dir: &Path) -> String {
    use sqlx::Row as _;
    let url = format!("sqlite://{}?mode=ro", data_dir.join("gateway.sqlite").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("open the node's database");
    let rows = sqlx::query("SELECT receipt_compact FROM envelopes WHERE direction = 'in'")
        .fetch_all(&db)
        .await
        .expect("receipts");
    db.close().await;
    rows.iter()
        .map(|r| {
            let compact: String = r.get::<Option<String>, _>(0).expect("every item was taken: compact receipts");
            let compact: serde_json::Value = serde_json::from_str(&compact).expect("json");
            compact["outcomes"].as_str().expect("letters").to_owned()
        })
        .collect()
}

/// A loopback port that was free a moment ago (for nodes that must keep their port across
/// restarts), below the kernel's ephemeral range: a port the kernel handed out there could be
/// taken by any outgoing connection's source port before a restarted node binds it again (a
/// replica test lost a restart so, under `cargo test`'s parallel threads).
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// The first of `n` consecutive loopback ports that were all free a moment ago, below the
/// kernel's ephemeral range (32768 and up), where other tests' connections and listeners on
/// port 0 take theirs: for a process that binds a block (the demo's nodes).
pub fn free_port_block(n: u16) -> u16 {
    let mut seed = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).expect("random");
    let mut base = 20_000 + u16::from_le_bytes(seed) % 10_000;
    loop {
        let held: Vec<_> = (base..base + n).map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == usize::from(n) {
            return base;
        }
        base = if base + 2 * n < 32_000 { base + n } else { 20_000 };
    }
}

/// A gauge's value from a node's `/metrics`, if it is there.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = client.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `credit-gateway ARGS`: its exit code and output (stdout, then stderr).
pub fn cli(args: &[&str]) -> (i32, String) {
    cli_with_env(args, &[])
}

/// [`cli`] with extra environment variables.
pub fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(gateway_bin()).args(args).envs(env.iter().copied()).output().expect("run credit-gateway");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// `python3 tools/verify_evidence.py FILE ANCHOR`, the independent verifier of evidence and
/// answer bundles: its exit code and output.
pub fn python_verify(file: &Path, anchor: &Path) -> (i32, String) {
    let out = Command::new("python3")
        .arg(repo_dir().join("tools/verify_evidence.py"))
        .arg(file)
        .arg(anchor)
        .output()
        .expect("python3 is required for the independent evidence check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("ModuleNotFoundError"), "the Python `cryptography` package is required: {text}");
    (out.status.code().unwrap_or(-1), text)
}

/// The trusted federation root keys (the anchor) of the PKI at `pki_dir`.
pub fn anchor(pki_dir: &Path) -> Vec<gateway_core::interchange::registry::RootKey> {
    serde_json::from_slice(&std::fs::read(credit_gateway::pki::anchor_file(pki_dir)).expect("anchor")).expect("json")
}

/// Runs a command that must succeed; returns its output (stdout, then stderr).
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every stored record version, read page by page of `page` rows.
pub async fn all_records(store: &Store, page: i64) -> Vec<StoredRecord> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |r: &StoredRecord| r.seq);
        let rows = store.query(&RecordQuery { after, limit: page, ..Default::default() }).await.expect("query");
        if rows.is_empty() {
            return all;
        }
        all.extend(rows);
    }
}

/// Runs `member` of the PKI at `pki_dir` in-process: a gateway on SQLite in `data_dir` and its
/// mutual-TLS federation endpoint on a free port. Returns the port and the node.
pub async fn start_federation_node(
    pki_dir: &Path,
    member: &str,
    data_dir: &Path,
) -> (u16, credit_gateway::interchange::Node) {
    start_federation_node_with_peers(pki_dir, member, data_dir, &[]).await
}

/// [`start_federation_node`] with `peers` (member, URL) replacing registry endpoints.
pub async fn start_federation_node_with_peers(
    pki_dir: &Path,
    member: &str,
    data_dir: &Path,
    peers: &[(&str, String)],
) -> (u16, credit_gateway::interchange::Node) {
    start_federation_node_with(pki_dir, member, data_dir, peers, |_| {}).await
}

/// [`start_federation_node_with_peers`] with the node's configuration adjusted by `configure`.
pub async fn start_federation_node_with(
    pki_dir: &Path,
    member: &str,
    data_dir: &Path,
    peers: &[(&str, String)],
    configure: impl FnOnce(&mut Config),
) -> (u16, credit_gateway::interchange::Node) {
    let node = federation_node(pki_dir, member, data_dir, peers, configure).await;
    (node.federation_port.expect("federation port"), node.node())
}

/// Runs `member` of the PKI at `pki_dir` in-process (see [`config`]: no relay unless
/// `configure` turns it on), with `peers` (member, URL) replacing registry endpoints.
pub async fn federation_node(
    pki_dir: &Path,
    member: &str,
    data_dir: &Path,
    peers: &[(&str, String)],
    configure: impl FnOnce(&mut Config),
) -> Running {
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut fed = credit_gateway::config::FederationConfig::from_pki(pki_dir, member, listen);
    fed.peers = peers.iter().map(|(m, url)| ((*m).to_owned(), url.clone())).collect();
    let mut config = Config { member_id: member.into(), federation: Some(fed), ..config(data_dir) };
    configure(&mut config);
    start(config).await
}

/// A new, empty PostgreSQL database on the test server, for a node of its own (the store
/// suite uses schemas instead): its URL. [`drop_postgres_database`] removes it.
pub async fn new_postgres_database() -> String {
    use sqlx::Connection as _;
    let admin = postgres_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create db");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base).to_owned();
    format!("{base}/{name}")
}

/// Drops a database made by [`new_postgres_database`], closing what is still connected to it.
pub async fn drop_postgres_database(url: &str) {
    use sqlx::Connection as _;
    let name = url.rsplit('/').next().expect("database name");
    let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .expect("drop db");
}

/// Runs `test` with the URL of a new, empty MySQL/MariaDB database, dropped afterwards (`tests/run`
/// starts the local MariaDB; `CREDIT_GATEWAY_TEST_MYSQL` points elsewhere).
pub async fn with_mysql_database(test: impl AsyncFnOnce(&str)) {
    use sqlx::Connection as _;
    let admin = std::env::var("CREDIT_GATEWAY_TEST_MYSQL").unwrap_or_else(|_| "mysql://gw:gw@127.0.0.1:3306".into());
    sqlx::any::install_default_drivers();
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("MySQL/MariaDB at {admin} is required for this test: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create db");
    test(&format!("{admin}/{name}")).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}"))).execute(&mut conn).await.expect("drop db");
}

/// A department's filled-in cases workbook (sheet 案件答复): `head` names the columns, each row
/// gives their cells.
pub fn cases_workbook(head: &[&str], rows: &[&[&str]]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.set_name("案件答复").expect("name");
    for (c, h) in head.iter().enumerate() {
        ws.write_string(0, c as u16, *h).expect("cell");
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            ws.write_string(r as u32 + 1, c as u16, *v).expect("cell");
        }
    }
    book.save_to_buffer().expect("xlsx")
}

/// Relay settings for tests: short waits so a test runs in seconds, and a publication sink in
/// the node's data directory.
pub fn quick_relay(data_dir: &Path) -> credit_gateway::config::RelayConfig {
    credit_gateway::config::RelayConfig {
        linger_ms: 5,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        publication_dir: Some(data_dir.join("publication")),
        ..credit_gateway::config::RelayConfig::default()
    }
}

/// `members` of the PKI at `pki_dir`, each in-process in `root/<member>` serving mutual TLS
/// and adjusted by `configure`, with their relays ([`quick_relay`]) started once every node's
/// address is known. Returned in the order given: the nodes, their federation handles, and
/// their relays (dropping one stops it).
pub async fn federation(
    root: &Path,
    pki_dir: &Path,
    members: &[&str],
    configure: impl Fn(&str, &mut Config),
) -> (Vec<Running>, Vec<credit_gateway::interchange::Node>, Vec<credit_gateway::relay::Relay>) {
    let mut running = Vec::new();
    let mut urls = Vec::new();
    for member in members {
        let dir = root.join(member);
        let node = federation_node(pki_dir, member, &dir, &[], |c| {
            c.relay = credit_gateway::config::RelayConfig { enabled: false, ..quick_relay(&dir) };
            configure(member, c);
        })
        .await;
        urls.push(((*member).to_owned(), format!("https://localhost:{}", node.federation_port.expect("port"))));
        running.push(node);
    }
    let peers: Arc<std::collections::BTreeMap<String, String>> = Arc::new(urls.into_iter().collect());
    let (mut nodes, mut relays) = (Vec::new(), Vec::new());
    for r in &running {
        let mut node = r.node();
        node.identity.peers = Arc::clone(&peers);
        let config = quick_relay(&root.join(node.member_id()));
        relays.push(credit_gateway::relay::Relay::start(node.clone(), &r.app.relay, config));
        nodes.push(node);
    }
    (running, nodes, relays)
}

/// A reqwest client presenting `member`'s certificate from the PKI.
pub fn federation_client(pki_dir: &Path, member: &str) -> reqwest::Client {
    let files = credit_gateway::pki::NodeFiles::new(pki_dir, member);
    let ca = credit_gateway::pki::ca_cert(pki_dir);
    let tls = credit_gateway::tls::client_config(&credit_gateway::tls::TlsFiles {
        ca: &ca,
        cert: &files.tls_cert(),
        key: &files.tls_key(),
    })
    .expect("client tls");
    reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client")
}

/// A fresh temporary directory with a `certs init` PKI for `alg` under `pki/`. Returns the
/// directory (kept alive by the caller) and the PKI path.
pub fn demo_pki(alg: gateway_core::crypto::Alg) -> (tempfile::TempDir, std::path::PathBuf) {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = dir.path().join("pki");
    let opts = credit_gateway::pki::InitOptions {
        alg: alg.as_str().into(),
        adapters: repo_dir().join("adapters"),
        measures: repo_dir().join("measures"),
        ..credit_gateway::pki::InitOptions::dev(&pki_dir)
    };
    credit_gateway::pki::init(&opts).expect("certs init");
    (dir, pki_dir)
}

/// The repository root (for `adapters/`, `schemas/` and `tools/`).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `credit-gateway` binary of this build, for tests that run it as a process.
///
/// `cargo test --workspace` (the README's command) builds it with every test: it sits in the
/// target directory beside the `deps/` folder of the running test. Once per test process this
/// also asks cargo to bring it up to date, so that a test run of this package alone (`cargo
/// test -p credit-gateway-tests`) never runs a stale or missing binary. It asks for the
/// workspace's tests, as `cargo test --workspace` builds them: then the features are resolved
/// the same way and, after that command, the call is a no-op (`cargo build -p credit-gateway`
/// alone resolves them without the dev-dependencies and would rebuild the binary every time).
pub fn gateway_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_owned();
        let bin = profile_dir.join(format!("credit-gateway{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--workspace", "--tests"]).current_dir(repo_dir());
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        // Cargo sets these for the test process; build scripts that watch them (ring's watches
        // CARGO_MANIFEST_DIR) would see another value and rebuild half the tree, twice a run.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    key.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                )
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build.status().expect("run cargo build for the credit-gateway binary");
        assert!(status.success(), "cargo could not build the credit-gateway binary");
        assert!(bin.exists(), "{} is missing after cargo build", bin.display());
        bin
    })
    .clone()
}

/// Issues a credential straight into a node's store (as `credential issue` does) and returns
/// its API key. `unit` is required for departments and desk officers.
pub async fn issue_key(app: &App, role: &str, name: &str, unit: Option<&str>) -> String {
    let req = credit_gateway::auth::IssueRequest {
        principal: name.into(),
        role: Some(credit_gateway::auth::Role::parse(role).expect("role")),
        unit_uscc: unit.map(str::to_owned),
        ..Default::default()
    };
    let issued = credit_gateway::auth::credentials::issue(&app.ingest.store, req, time::OffsetDateTime::now_utc())
        .await
        .expect("issue a credential");
    issued.api_key.expect("an API key")
}

/// A CA for the API's HTTPS listener and its departments' client certificates, with the
/// server's certificate, in `dir`.
#[allow(missing_debug_implementations)] // the issuer holds a private key
pub struct ApiPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl ApiPki {
    pub fn new(dir: &Path) -> Self {
        credit_gateway::tls::install_crypto_provider();
        std::fs::create_dir_all(dir).expect("pki dir");
        let (issuer, ca_pem, _) = credit_gateway::pki::new_ca("Test API client CA").expect("ca");
        let (cert_pem, key_pem, _) = credit_gateway::pki::issue_tls_cert(&issuer, "api-server").expect("server cert");
        let (ca, cert, key) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&ca, ca_pem).expect("write");
        std::fs::write(&cert, cert_pem).expect("write");
        std::fs::write(&key, key_pem).expect("write");
        Self { ca, cert, key, issuer, dir: dir.to_owned() }
    }

    /// `[api_tls]` for a node: HTTPS with client certificates under this CA.
    pub fn config(&self) -> credit_gateway::config::ApiTlsConfig {
        credit_gateway::config::ApiTlsConfig {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: Some(self.ca.clone()),
        }
    }

    /// A client certificate (PEM) and a client that presents it.
    pub fn client(&self, name: &str) -> (Vec<u8>, reqwest::Client) {
        let (cert_pem, key_pem, _) = credit_gateway::pki::issue_tls_cert(&self.issuer, name).expect("client cert");
        let (cert, key) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        std::fs::write(&cert, &cert_pem).expect("write");
        std::fs::write(&key, key_pem).expect("write");
        let tls =
            credit_gateway::tls::client_config(&credit_gateway::tls::TlsFiles { ca: &self.ca, cert: &cert, key: &key })
                .expect("client tls");
        (cert_pem.into_bytes(), reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client"))
    }

    /// A client that trusts the server but presents no certificate.
    pub fn anonymous_client(&self) -> reqwest::Client {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pki_types::CertificateDer::pem_file_iter(&self.ca).expect("ca") {
            roots.add(ca.expect("ca")).expect("add ca");
        }
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client")
    }
}

/// What a webhook receiver was sent: each request's headers and body.
pub type Received = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>;

/// A webhook receiver on loopback that keeps what it is sent (alerts); returns its URL.
pub async fn webhook() -> (String, Received) {
    let received: Received = Arc::default();
    let keep = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().expect("lock").push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// An active 政府采购 black-list entry of 周村区, listed today (the demo's; see
/// `credit_gateway::demo::active_black_list_entry`).
pub fn active_black_list_entry() -> serde_json::Value {
    let today = gateway_core::date::today_in_china(time::OffsetDateTime::now_utc());
    credit_gateway::demo::active_black_list_entry(today).expect("the shipped example")
}
