//! `credit-gateway evaluation …`: the desk officer's commands, through a running node's API
//! (the node holds the mTLS identity, the agreements, the cache and the audit log).

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// `evaluation` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EvaluationCommand {
    /// Look companies up at a partner city: their evaluations, the band under the agreement,
    /// and whether each is recognised here (and if not, why).
    Lookup {
        /// USCCs (统一社会信用代码), up to 1,000.
        #[arg(required = true)]
        subjects: Vec<String>,
        /// The partner: its name in the registry (信用东营) or member id (cn-370500).
        #[arg(long)]
        from: String,
        /// Who is asking (kept in this node's audit log); default $USER.
        #[arg(long)]
        officer: Option<String>,
        /// Print the node's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
        /// The node's API base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// The audit log of pulls: partners asking this node (`in`) and this node asking (`out`).
    Audit {
        #[arg(long)]
        direction: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Write the evidence bundle of an answer (verify it with `evidence verify`).
    Evidence {
        answer_id: String,
        /// Output file; default stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

/// Runs one command; returns what to print.
pub async fn run(command: EvaluationCommand) -> anyhow::Result<String> {
    let client = crate::auth::cli::api_client()?;
    let base = |url: &str| url.trim_end_matches('/').to_owned();
    let request = match &command {
        EvaluationCommand::Lookup { subjects, from, officer, url, .. } => {
            let officer = officer.clone().or_else(|| std::env::var("USER").ok());
            client
                .post(format!("{}/api/v1/evaluations/lookup", base(url)))
                .json(&serde_json::json!({"from": from, "subjects": subjects, "officer": officer}))
        }
        EvaluationCommand::Audit { direction, limit, url } => {
            let mut target = format!("{}/api/v1/evaluations/audit?limit={limit}", base(url));
            if let Some(d) = direction {
                anyhow::ensure!(matches!(d.as_str(), "in" | "out"), "--direction is `in` or `out`");
                target.push_str(&format!("&direction={d}"));
            }
            client.get(target)
        }
        EvaluationCommand::Evidence { answer_id, url, .. } => {
            anyhow::ensure!(gateway_core::interchange::is_uuid(answer_id), "{answer_id:?} is not an answer id (UUID)");
            client.get(format!("{}/api/v1/evaluations/answers/{answer_id}/evidence", base(url)))
        }
    };
    let resp = request.send().await.context("the node's API did not answer (is it running? see --url)")?;
    let status = resp.status();
    let body: Value = resp.json().await.context("the node's answer is not JSON")?;
    if !status.is_success() {
        let e = &body["error"];
        anyhow::bail!(
            "{status}: {}\n{}{}",
            e["message_zh"].as_str().unwrap_or(""),
            e["message_en"].as_str().unwrap_or(""),
            crate::auth::cli::credential_hint(status)
        );
    }
    match command {
        EvaluationCommand::Lookup { json: false, .. } => Ok(summary(&body)),
        EvaluationCommand::Evidence { out: Some(path), answer_id, .. } => {
            std::fs::write(&path, serde_json::to_string_pretty(&body)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(format!("evidence of answer {answer_id} written to {}", path.display()))
        }
        _ => Ok(serde_json::to_string_pretty(&body)?),
    }
}

/// A desk answer as lines for a terminal.
fn summary(answer: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out =
        format!("{} ({}) · judged {}\n", s(&answer["partner_name"]), s(&answer["partner"]), s(&answer["as_of"]));
    if let Some(e) = answer["partner_error"].as_str() {
        let _ = writeln!(out, "! partner unreachable, cached answers shown: {e}");
    }
    for subject in answer["subjects"].as_array().into_iter().flatten() {
        let source = match s(&subject["source"]).as_str() {
            "stale" => format!("STALE, answered {}s ago", subject["age_secs"]),
            other => other.to_owned(),
        };
        let _ = writeln!(out, "{}  [{source}, answer {}]", s(&subject["subject_uscc"]), s(&subject["answer_id"]));
        let evaluations = subject["evaluations"].as_array().map(Vec::as_slice).unwrap_or_default();
        if evaluations.is_empty() {
            let _ = writeln!(out, "  (no evaluation the partner may disclose)");
        }
        for e in evaluations {
            let d = &e["disclosed"];
            let grade = if d.is_null() {
                "(withheld)".to_owned()
            } else {
                format!("{} → {}", s(&d["grade"]), d["band"].as_str().unwrap_or("—"))
            };
            let verdict = match e["reason"].as_str() {
                None => s(&e["verdict"]),
                Some(r) => format!("{}: {r} ({})", s(&e["verdict"]), s(&e["reason_zh"])),
            };
            let _ = write!(out, "  {} {}  {grade}  {verdict}", s(&e["scheme_id"]), s(&e["scheme_version"]));
            if !d.is_null() {
                let _ =
                    write!(out, "  valid {} – {}  by {}", s(&d["valid_from"]), s(&d["valid_to"]), s(&d["evaluator"]));
            }
            out.push('\n');
        }
    }
    out
}
