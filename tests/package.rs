//! The Debian package (#25): `cargo deb` builds it from this build's binary; unpacked into a
//! temporary root, its binary serves with the packaged configuration (authentication on), its
//! systemd unit passes `systemd-analyze verify` and scores "OK" on `systemd-analyze security`,
//! and its metadata says what a Debian system needs (conffile, dependencies, maintainer scripts).
//! `tests/run` installs cargo-deb and systemd-analyze where they are missing.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const UNIT: &str = "usr/lib/systemd/system/credit-gateway.service";

/// Builds the package from the binary the tests run (no second build) into `dir`.
fn build_deb(dir: &Path) -> PathBuf {
    let bin = testkit::gateway_bin();
    let profile = bin.parent().and_then(Path::file_name).and_then(|p| p.to_str()).expect("target/<profile>");
    let profile = if profile == "debug" { "dev" } else { profile };
    let deb = dir.join("credit-gateway.deb");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let probe = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "cargo-deb is required for the package test: cargo install cargo-deb --locked (tests/run does)"
    );
    testkit::run_ok(
        Command::new(&cargo)
            .current_dir(testkit::repo_dir())
            .args(["deb", "-p", "credit-gateway", "--no-build", "--fast", "--profile", profile, "--output"])
            .arg(&deb),
    );
    deb
}

#[test]
fn the_debian_package_installs_serves_with_its_configuration_and_its_unit_checks() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    let root = dir.path().join("root");
    testkit::run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control_dir = dir.path().join("DEBIAN");
    testkit::run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control_dir));

    // What dpkg will do with it.
    let control = std::fs::read_to_string(control_dir.join("control")).expect("control");
    assert!(control.contains("Package: credit-gateway"), "{control}");
    let depends = control.lines().find(|l| l.starts_with("Depends:")).unwrap_or_default();
    assert!(depends.contains("libc6") && depends.contains("adduser"), "{depends}");
    let conffiles = std::fs::read_to_string(control_dir.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/credit-gateway/node.toml");
    let postinst = std::fs::read_to_string(control_dir.join("postinst")).expect("postinst");
    assert!(postinst.contains("adduser --system") && postinst.contains("deb-systemd-helper"), "{postinst}");
    for script in ["postinst", "postrm", "prerm"] {
        let path = control_dir.join(script);
        if path.exists() {
            testkit::run_ok(Command::new("sh").arg("-n").arg(&path));
        }
    }
    for file in
        ["usr/bin/credit-gateway", "etc/credit-gateway/node.toml", UNIT, "usr/share/doc/credit-gateway/operations.md"]
    {
        assert!(root.join(file).is_file(), "{file} is not in the package");
    }

    // The unit as systemd reads it, in a root holding the package and the base system's
    // targets and kill(1): no warning, and an "OK" exposure level.
    let units = root.join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/lib/systemd/system").expect("the base system's units") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "target") {
            std::fs::copy(&path, units.join(path.file_name().expect("name"))).expect("copy target");
        }
    }
    std::fs::create_dir_all(root.join("bin")).expect("bin");
    std::fs::copy("/bin/kill", root.join("bin/kill")).expect("kill(1)");
    let analyze = |args: &[&str]| {
        let out = Command::new("systemd-analyze")
            .args(args)
            .arg(format!("--root={}", root.display()))
            .arg(format!("/{UNIT}"))
            .output()
            .expect("systemd-analyze is required for the package test (Debian: apt-get install systemd)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, text) = analyze(&["verify"]);
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
    let (ok, text) = analyze(&["security", "--offline=true"]);
    let level = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_default();
    assert!(ok && level.contains(" OK"), "systemd-analyze security:\n{text}");

    // The installed binary, with the packaged configuration; only the data directory and the
    // port differ (the service's are /var/lib/credit-gateway and 8080).
    let bin = root.join("usr/bin/credit-gateway");
    let config = root.join("etc/credit-gateway/node.toml");
    let data = dir.path().join("data");
    let env = [("CREDIT_GATEWAY_DATA_DIR", data.to_str().expect("utf-8")), ("CREDIT_GATEWAY_LISTEN", "127.0.0.1:0")];
    let key = testkit::run_ok(
        Command::new(&bin)
            .args(["credential", "issue", "--role", "department", "--name", "测试局", "--unit", "11370306MB28554702"])
            .arg("--config")
            .arg(&config)
            .envs(env),
    );
    let key = key.lines().find(|l| l.starts_with("cgk_")).expect("an API key").to_owned();
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the packaged binary");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the listening line");
    let api = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    let served = tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let client = reqwest::Client::new();
        let health = client.get(format!("{api}/healthz")).send().await.map(|r| r.status().as_u16());
        let record = testkit::repo_dir().join("schemas/admin_penalty/valid/legal_entity_food_fine_confiscation.json");
        let body = format!("[{}]", std::fs::read_to_string(record).expect("example"));
        let push = |auth: Option<String>| {
            let mut req = client
                .post(format!("{api}/api/v1/records"))
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(key) = auth {
                req = req.bearer_auth(key);
            }
            async move { req.send().await.map(|r| r.status().as_u16()) }
        };
        (health, push(None).await, push(Some(key.clone())).await)
    });
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (served.0.ok(), served.1.ok(), served.2.ok()),
        (Some(200), Some(401), Some(200)),
        "health, a push without a key, a push with one ({line}):\n{logs}"
    );
    assert!(!logs.contains('\u{1b}'), "no ANSI colour codes off a terminal:\n{logs}");
}
