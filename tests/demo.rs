//! `credit-gateway demo` as the README runs it: five nodes start, the sample records reach
//! national, the correction, repair and objection reach every node of the chain, and Ctrl-C
//! (SIGINT) stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's process, killed if the test fails before stopping it (so no demo keeps the ports).
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_demo_shows_every_event_at_every_node_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Five API ports in a row (周村区 … 信用东营).
    let api_port = testkit::free_port_block(5).to_string();
    let child = Command::new(testkit::gateway_bin())
        .args(["demo", "--records", "120", "--api-port", &api_port, "--pki"])
        .arg(dir.path().join("pki"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        // As a newcomer runs it: from the checkout, where `measures/` is.
        .current_dir(testkit::repo_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn demo");
    let mut demo = Demo(child);
    let child = &mut demo.0;
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let deadline = Instant::now() + Duration::from_secs(180);
    // A demo that stalls without printing is killed at the deadline, so the read below ends.
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(180)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("line");
        let done = line.contains("Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not finish its scenario: {lines:#?}");
    }
    let _ = done.send(());
    watchdog.join().expect("watchdog");
    // One joint-punishment loop: opened at three departments of 信用淄博, answered, lifted by
    // the repair and acknowledged by the finance bureau.
    let case = |measure: &str| lines.iter().find(|l| l.trim_start().starts_with(measure)).cloned().unwrap_or_default();
    assert!(case("restrict-government-procurement").contains("lifted"), "{lines:#?}");
    assert!(case("strict-market-inspection").contains("not_applicable"), "{lines:#?}");
    assert!(
        case("restrict-public-bidding").contains("lifting") && case("restrict-public-bidding").contains("repaired")
    );
    // The entry was listed at 信用中国: 信用淄博's answers came back up as case reports, and
    // 信用中国 counted three cases there, two answered, one lifted.
    let at = lines.iter().position(|l| l.contains("信用中国 sees the loop")).unwrap_or_else(|| panic!("{lines:#?}"));
    let zibo: Vec<Vec<i64>> = lines[at + 2..]
        .iter()
        .take_while(|l| l.starts_with("  cn-"))
        .filter(|l| l.trim_start().starts_with("cn-370300"))
        .map(|l| l.split_whitespace().skip(2).map(|n| n.parse().expect("count")).collect())
        .collect();
    let sum = |k: usize| zibo.iter().map(|cells| cells[k]).sum::<i64>();
    assert_eq!((sum(0), sum(1), sum(2), sum(4)), (3, 2, 1, 1), "opened, responded, fed back, lifted: {lines:#?}");
    let rows: Vec<&String> = lines.iter().filter(|l| l.starts_with("cn-") && !l.contains("records")).collect();
    for member in ["cn-370306", "cn-370300", "cn-370000", "cn-000000"] {
        let row =
            rows.iter().find(|l| l.starts_with(member)).unwrap_or_else(|| panic!("no row for {member}: {lines:#?}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "124", "120 records, a monthly report and three events at {member}: {row}");
        assert_eq!(&cells[2..5], ["corrected", "repaired", "disputed"], "{row}");
    }
    // 信用淄博 recognised 信用东营's evaluations under their signed agreement; 纳税信用 M is no rank.
    for verdict in [
        "tax_credit A→优 recognised",
        "public_credit_composite 良→良 recognised",
        "tax_credit M not recognised (not_rated)",
    ] {
        assert!(lines.iter().any(|l| l.contains(verdict)), "no {verdict:?} in the demo: {lines:#?}");
    }
    // The printed operator password opens 信用淄博's dashboard.
    let password = lines
        .iter()
        .find_map(|l| l.split("operator admin, password ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dashboard password in the guide: {lines:#?}"))
        .to_owned();
    let city = format!("http://127.0.0.1:{}", api_port.parse::<u16>().expect("port") + 1);
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        credit_gateway::tls::install_crypto_provider();
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let login = client
            .post(format!("{city}/dashboard/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username=admin&password={password}"))
            .send()
            .await
            .expect("login");
        assert_eq!(login.status(), reqwest::StatusCode::SEE_OTHER);
        let cookie =
            login.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
        let page = client.get(format!("{city}/dashboard/quality")).header("cookie", cookie).send().await.expect("page");
        assert_eq!(page.status(), reqwest::StatusCode::OK);
        assert!(page.text().await.expect("html").contains("quality-table"));
    });
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "the demo exits cleanly on Ctrl-C: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}
