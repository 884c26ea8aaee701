//! Every parser fuzz target, briefly (`CREDIT_GATEWAY_FUZZ_SECONDS`, default 2 s each, on the
//! test build), and every regression input kept from earlier findings. Run longer with
//! `cargo run --release -p credit-gateway-fuzz -- run --seconds 600` (docs/operations.md).

use std::path::Path;
use std::time::Duration;

use credit_gateway_fuzz::{Fixtures, TARGETS, fuzz, load_inputs, run_one};

#[test]
fn no_parser_panics_on_mutated_inputs_or_on_past_findings() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixtures = Fixtures::load(&repo).expect("fixtures (fuzz/corpus, adapters)");
    let seconds = std::env::var("CREDIT_GATEWAY_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed = std::env::var("CREDIT_GATEWAY_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for target in TARGETS {
        let (seeds, regressions) = load_inputs(&repo, target.name).expect("inputs");
        for (path, input) in &regressions {
            if let Err(message) = run_one(target, &fixtures, input) {
                failures.push(format!("{}: regression {} panics again: {message}", target.name, path.display()));
            }
        }
        let run = fuzz(target, &fixtures, &seeds, Duration::from_secs(seconds), seed);
        report.push(format!(
            "{} {} inputs ({} seeds, {} regressions)",
            target.name,
            run.executions,
            seeds.len(),
            regressions.len()
        ));
        if let Some((input, message)) = run.crash {
            let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
            failures.push(format!("{}: {message}\n  input ({} bytes): {shown:?}", target.name, input.len()));
        }
    }
    std::panic::set_hook(hook);
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
