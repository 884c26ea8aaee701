//! API conformance fuzzing (#26): schemathesis drives 信用淄博's API from its served OpenAPI
//! document, every operation, with the credentials of each role that may call it (and none for
//! the public ones), against a node with its federation identity and its partner 信用东营
//! running. Over hundreds of generated requests per run: no server error, and every response's
//! status, content type, headers and body as documented.
//!
//! `CREDIT_GATEWAY_FUZZ_EXAMPLES` (default 20 per operation and phase) and
//! `CREDIT_GATEWAY_FUZZ_SEED` (default 1) run it longer or differently; `tests/run` installs
//! schemathesis.

use std::process::Command;

use credit_gateway::config::{AuthConfig, Config};
use gateway_core::crypto::Alg;
use serde_json::Value;

const CITY: &str = "cn-370300";
const PARTNER: &str = "cn-370500";
/// The responses checked; requests the node refuses although the schema allows them (and the
/// reverse) are outside this test: the push, for one, answers a bad record in its outcomes.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";
const ROLES: [&str; 5] = ["department", "desk_officer", "operator", "auditor", "admin"];

/// The document with only the operations `role` may call (`None`: the public ones).
fn operations_of(doc: &Value, role: Option<&str>) -> (Value, usize) {
    let mut doc = doc.clone();
    let mut kept = 0;
    let paths = doc["paths"].as_object_mut().expect("paths");
    for item in paths.values_mut() {
        let operations = item.as_object_mut().expect("operations");
        operations.retain(|_, op| match (op.get("x-roles").and_then(Value::as_array), role) {
            (None, None) => true,
            (Some(roles), Some(role)) => roles.iter().any(|r| r == role),
            _ => false,
        });
        kept += operations.len();
    }
    paths.retain(|_, item| item.as_object().is_some_and(|o| !o.is_empty()));
    (doc, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    let (dir, pki_dir) = testkit::demo_pki(Alg::EdDsa);
    let (running, _nodes, _relays) =
        testkit::federation(dir.path(), &pki_dir, &[CITY, PARTNER], |member, c: &mut Config| {
            if member == CITY {
                // Credentials required, as in production; no rate limit (the fuzzer is one client
                // sending thousands of calls, some of them with no key at all).
                c.auth = AuthConfig {
                    required: true,
                    rate_per_second: 1e9,
                    burst: u32::MAX,
                    failures_per_minute: u32::MAX,
                    failure_burst: u32::MAX,
                    ..AuthConfig::default()
                };
            }
        })
        .await;
    let city = &running[0];
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", city.api))
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("json");
    let examples = std::env::var("CREDIT_GATEWAY_FUZZ_EXAMPLES").unwrap_or_else(|_| "20".into());
    let seed = std::env::var("CREDIT_GATEWAY_FUZZ_SEED").unwrap_or_else(|_| "1".into());

    let mut covered = 0;
    let mut failed = Vec::new();
    for role in ROLES.map(Some).into_iter().chain([None]) {
        let (subset, operations) = operations_of(&doc, role);
        covered += operations;
        let name = role.unwrap_or("public");
        let spec = dir.path().join(format!("openapi-{name}.json"));
        std::fs::write(&spec, serde_json::to_vec(&subset).expect("json")).expect("write");
        let mut st = Command::new("st");
        st.arg("run")
            .arg(&spec)
            .args(["--url", &city.api, "--checks", CHECKS, "--max-examples", &examples, "--seed", &seed])
            // One worker: hypothesis's source cache is not safe across threads (an internal
            // "AST constructor recursion depth mismatch" now and then).
            .args(["--workers", "1", "--no-color"]);
        if let Some(role) = role {
            let unit = matches!(role, "department" | "desk_officer").then_some("11370306MB28554702");
            let key = testkit::issue_key(&city.app, role, &format!("fuzz {role}"), unit).await;
            st.args(["--header", &format!("Authorization: Bearer {key}")]);
        }
        let out = tokio::task::spawn_blocking(move || st.output())
            .await
            .expect("join")
            .expect("schemathesis (`st`) is required: python3 -m pip install schemathesis (tests/run does)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary = text.lines().rfind(|l| l.starts_with('=')).unwrap_or_default().to_owned();
        let cases =
            text.lines().find(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains(" generated"));
        eprintln!("{name}: {operations} operations, {}: {summary}", cases.unwrap_or_default().trim());
        if !out.status.success() {
            failed.push(format!("--- {name}\n{text}{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let total = doc["paths"].as_object().expect("paths").values().map(|i| i.as_object().map_or(0, |o| o.len())).sum();
    assert!(covered >= total, "every operation is fuzzed by at least one role ({covered} of {total})");
    assert!(failed.is_empty(), "schemathesis found problems:\n{}", failed.join("\n"));
}
