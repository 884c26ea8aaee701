//! The command line as an operator meets it: read-only commands create nothing, certificates
//! say how long they have left, and logs carry no terminal colour codes off a terminal.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use gateway_core::crypto::Alg;

use testkit::cli;

/// `evidence export` only reads: pointed at a data directory that does not exist, it says so
/// and how to find the node's, and creates nothing.
#[test]
fn evidence_export_of_a_missing_node_creates_nothing() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let missing = dir.path().join("data").join("zibo");
    let (code, text) = cli(&[
        "evidence",
        "export",
        "0193a0b0-0000-7000-8000-000000000001",
        "--member",
        "cn-370300",
        "--pki",
        pki.to_str().expect("utf-8"),
        "--data-dir",
        missing.to_str().expect("utf-8"),
    ]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("no node data at") && text.contains("--data-dir"), "{text}");
    assert!(!dir.path().join("data").exists(), "a read-only command made a data directory");
}

/// Dev certificates are valid for about a year (the CA for five), as production ones are, and
/// `certs status` shows the days each has left.
#[test]
fn dev_certificates_last_about_a_year_and_certs_status_shows_it() {
    let (_dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (code, text) = cli(&["certs", "status", "--pki", pki.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{text}");
    let days = |name: &str| -> i64 {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(2).and_then(|d| d.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    assert!((363..=365).contains(&days("cn-370300")), "{text}");
    assert!((1823..=1825).contains(&days("ca")), "{text}");
    assert!(!text.contains("EXPIRED") && !text.contains("renew soon"), "{text}");
}

/// Logs written to a pipe or a file (journald, a log collector) are plain text.
#[test]
fn logs_off_a_terminal_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(testkit::gateway_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    assert!(line.contains("listening"), "{line}");
    child.kill().expect("kill");
    child.wait().expect("reap");
    let mut logs = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut logs).expect("logs");
    assert!(logs.contains("credit-gateway listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in {logs:?}");
}

/// Pushes `records` to a node's API; returns the ids of those it accepted.
async fn push(client: &reqwest::Client, base: &str, records: &[serde_json::Value]) -> Vec<uuid::Uuid> {
    let resp = client.post(format!("{base}/api/v1/records")).json(records).send().await.expect("push");
    let body: serde_json::Value = resp.json().await.expect("json");
    body["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .filter(|o| o["status"] == "accepted")
        .map(|o| o["record_id"].as_str().expect("id").parse().expect("uuid"))
        .collect()
}

/// `backup` copies a serving node's database while records keep arriving; `restore` brings the
/// copy back as a new data directory's database, holding every record acknowledged before the
/// backup began, each still matching its content hash. Neither overwrites anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_node_serves_restores_every_acknowledged_record() {
    use credit_gateway::bench::synthetic_records;
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (live, restored, copy) =
        (dir.path().join("live"), dir.path().join("restored"), dir.path().join("backup.sqlite"));
    let node = testkit::Node::start(&live);
    let client = reqwest::Client::new();
    let acknowledged = push(&client, &node.base, &synthetic_records(300, 9101)).await;
    assert_eq!(acknowledged.len(), 300);

    // Pushes go on while the copy is taken.
    let base = node.base.clone();
    let pushing = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut n = 0;
        for round in 0..10 {
            n += push(&client, &base, &synthetic_records(200, 9200 + round)).await.len();
        }
        n
    });
    let args: Vec<String> =
        ["backup", "--data-dir", live.to_str().expect("utf-8"), "--out", copy.to_str().expect("utf-8")]
            .map(str::to_owned)
            .to_vec();
    let (code, text) = tokio::task::spawn_blocking(move || cli(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("backup");
    assert_eq!(code, 0, "{text}");
    assert_eq!(pushing.await.expect("pushes"), 2000, "the node kept serving");
    let (code, text) =
        cli(&["backup", "--data-dir", live.to_str().expect("utf-8"), "--out", copy.to_str().expect("utf-8")]);
    assert!(code != 0 && text.contains("exists already"), "{text}");
    drop(node);

    let (code, text) =
        cli(&["restore", "--from", copy.to_str().expect("utf-8"), "--data-dir", restored.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{text}");
    let store = gateway_store::Store::open_sqlite(&restored.join("gateway.sqlite"), gateway_store::SqliteSync::Full)
        .await
        .expect("restored store");
    for id in &acknowledged {
        let versions = store.versions(*id).await.expect("versions");
        assert_eq!(versions.len(), 1, "{id} is missing from the restored copy");
        let hash = gateway_core::canonical::Sha256Digest::of(versions[0].content.as_bytes()).to_hex();
        assert_eq!(hash, versions[0].content_hash);
    }
    let held = store.count().await.expect("count");
    assert!((300..=2300).contains(&held), "{held}");
    store.close().await;
    let (code, text) =
        cli(&["restore", "--from", copy.to_str().expect("utf-8"), "--data-dir", restored.to_str().expect("utf-8")]);
    assert!(code != 0 && text.contains("new data directory"), "{text}");
}

/// `migrate --check` lists what this version would apply to a node's database and changes
/// nothing; `migrate` applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_lists_the_pending_migrations_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let db = data.join("gateway.sqlite");
    std::fs::create_dir_all(&data).expect("dir");
    let store = gateway_store::Store::open_sqlite(&db, gateway_store::SqliteSync::Full).await.expect("store");
    store.close().await;
    let data_dir = data.to_str().expect("utf-8");
    let (code, text) = cli(&["migrate", "--check", "--data-dir", data_dir]);
    assert_eq!((code, text.trim()), (0, "0 migration(s) pending"), "{text}");

    // As a database made before migration 16 would read: its migrations table lacks it.
    let forget = async |version: i64| {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
        let mut conn = sqlx::ConnectOptions::connect(&options).await.expect("connect");
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(version)
            .execute(&mut conn)
            .await
            .expect("forget");
    };
    forget(16).await;
    let (code, text) = cli(&["migrate", "--check", "--data-dir", data_dir]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("pending  0016  joint federation") && text.contains("1 migration(s) pending"), "{text}");
    let (_, again) = cli(&["migrate", "--check", "--data-dir", data_dir]);
    assert!(again.contains("1 migration(s) pending"), "the check changed the database: {again}");
    let (code, text) = cli(&["migrate", "--check", "--data-dir", dir.path().join("none").to_str().expect("utf-8")]);
    assert!(code != 0 && text.contains("no database at"), "{text}");
    assert!(!dir.path().join("none").exists());
}
