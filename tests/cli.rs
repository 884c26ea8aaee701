//! The command line as an operator meets it: read-only commands create nothing, certificates
//! say how long they have left, and logs carry no terminal colour codes off a terminal.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use gateway_core::crypto::Alg;

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(testkit::gateway_bin()).args(args).output().expect("run credit-gateway");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

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
