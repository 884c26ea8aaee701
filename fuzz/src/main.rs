//! `credit-gateway-fuzz`: runs the parser fuzz targets longer than CI does, and makes the
//! seed corpus of the signed documents.
//!
//! ```sh
//! cargo run --release -p credit-gateway-fuzz -- run                      # every target, 60 s each
//! cargo run --release -p credit-gateway-fuzz -- run envelope --seconds 3600 --seed 7
//! cargo run --release -p credit-gateway-fuzz -- make-corpus              # rewrites the signed seeds
//! ```
//!
//! A crash is written to `fuzz/regressions/<target>/crash-<sha256>`; fix it and keep the file
//! (`tests/brief.rs` replays every regression input on each test run).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use credit_gateway_fuzz::{Fixtures, TARGETS, fuzz, load_inputs};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("make-corpus") => make_corpus(&repo()),
        Some("run") => {
            let seconds: u64 = flag("--seconds").map_or(Ok(60), |s| s.parse()).context("--seconds")?;
            let seed: u64 = flag("--seed").map_or(Ok(1), |s| s.parse()).context("--seed")?;
            let chosen: Vec<&str> = args[1..].iter().take_while(|a| !a.starts_with("--")).map(String::as_str).collect();
            let fixtures = Fixtures::load(&repo())?;
            std::panic::set_hook(Box::new(|_| {}));
            let mut crashed = false;
            for target in TARGETS.iter().filter(|t| chosen.is_empty() || chosen.contains(&t.name)) {
                let (seeds, _) = load_inputs(&repo(), target.name)?;
                let run = fuzz(target, &fixtures, &seeds, Duration::from_secs(seconds), seed);
                match run.crash {
                    None => println!("{:<10} {:>10} inputs, no crash", target.name, run.executions),
                    Some((input, message)) => {
                        crashed = true;
                        let dir = repo().join("fuzz/regressions").join(target.name);
                        std::fs::create_dir_all(&dir)?;
                        let path =
                            dir.join(format!("crash-{}", gateway_core::canonical::Sha256Digest::of(&input).to_hex()));
                        std::fs::write(&path, &input)?;
                        println!(
                            "{:<10} CRASH after {} inputs: {message}\n           input: {}",
                            target.name,
                            run.executions,
                            path.display()
                        );
                    }
                }
            }
            if crashed {
                std::process::exit(1);
            }
            Ok(())
        }
        _ => {
            eprintln!("usage: credit-gateway-fuzz run [TARGET…] [--seconds N] [--seed S] | make-corpus");
            eprintln!("targets: {}", TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "));
            std::process::exit(2);
        }
    }
}

/// Writes the seeds of the signed documents from a throwaway two-node federation (周村区 →
/// 信用淄博, in-process): its anchor and registry, the envelope 周村区 sends, 信用淄博's receipt,
/// and the evidence bundle of one record. Only public halves leave the temporary directory.
fn make_corpus(repo: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let (dir, pki_dir) = testkit::demo_pki(gateway_core::crypto::Alg::EdDsa);
        let (_, district) = testkit::start_federation_node(&pki_dir, "cn-370306", &dir.path().join("d")).await;
        let (_, city) = testkit::start_federation_node(&pki_dir, "cn-370300", &dir.path().join("c")).await;
        let body = serde_json::to_vec(&credit_gateway::bench::synthetic_records(3, 1)).expect("json");
        let now = time::OffsetDateTime::now_utc();
        district.ingest.push(body.into(), now).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let records = testkit::all_records(&district.ingest.store, 10).await;
        let prepared = district.prepare("cn-370300", &records, now).await?;
        let receipt =
            city.receive("cn-370306", prepared.body.clone(), now).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let bundle = city.export_evidence(records[0].record_id, None).await?;
        let corpus = repo.join("fuzz/corpus");
        let write = |rel: &str, bytes: &[u8]| -> anyhow::Result<()> {
            let path = corpus.join(rel);
            std::fs::create_dir_all(path.parent().context("parent")?)?;
            std::fs::write(&path, bytes).with_context(|| path.display().to_string())
        };
        write("anchor.json", &std::fs::read(credit_gateway::pki::anchor_file(&pki_dir))?)?;
        let registry = std::fs::read(credit_gateway::pki::registry_file(&pki_dir))?;
        write("registry/registry.jws.json", &registry)?;
        write("jws/registry.jws.json", &registry)?;
        write("envelope/seed.json", &prepared.body)?;
        write("receive/seed.json", &prepared.body)?;
        write("receipt/seed.json", receipt.as_bytes())?;
        write("jws/receipt.json", receipt.as_bytes())?;
        write("evidence/seed.json", &serde_json::to_vec_pretty(&bundle)?)?;
        // A cases workbook with two answered rows.
        write(
            "workbook/cases.xlsx",
            &testkit::cases_workbook(
                &["案件编号", "响应", "不适用理由"],
                &[
                    &["01900000-0000-7000-8000-000000000001", "accepted", ""],
                    &["01900000-0000-7000-8000-000000000002", "not_applicable", "主体已注销"],
                ],
            ),
        )?;
        println!("seeds written under {}", corpus.display());
        anyhow::Ok(())
    })
}
