//! Mutual recognition of credit evaluations (信用评价结果互认) in the demo federation: 信用淄博
//! pulls 信用东营's evaluations over mutual TLS under the dev PKI's signed agreement. Checks
//! the verdicts (recognised, not rated, expired, scheme not covered), what is never disclosed,
//! refusals of members without an agreement in force (none at all, or one signed by one party
//! only), the cache (fresh, then stale while 信用东营 is unreachable), the audit log on both
//! sides, revocation (once a node holds a registry without the agreement, nothing is answered or
//! served from the cache), the desk CLI, and the answer's offline verification with `evidence verify`
//! and with the independent Python verifier (`tools/verify_evidence.py`).

use gateway_core::crypto::Alg;
use gateway_core::interchange::evaluation::{AgreementError, SignedAgreement};
use serde_json::{Value, json};
use testkit::proxy::{Fault, FaultProxy};
use time::OffsetDateTime;

const DONGYING: &str = "cn-370500";
const ZIBO: &str = "cn-370300";

fn subject(k: u64) -> String {
    credit_gateway::bench::uscc_in("91", "370500", k)
}

/// 信用东营's evaluations: the synthetic set for subjects 0–5, plus for subject 0 an older
/// 纳税信用 D (superseded), a sector result (not covered) and an `authorized_query` one
/// (never disclosed); subject 5's 纳税信用 expired yesterday.
fn dongying_evaluations(today: time::Date) -> Vec<Value> {
    let day = |offset: i64| gateway_core::date::format_date(today + time::Duration::days(offset));
    let mut records = credit_gateway::bench::synthetic_evaluations(0..6, today);
    let tax5 = records
        .iter_mut()
        .find(|r| r["subject_uscc"] == subject(5) && r["scheme_id"] == "tax_credit")
        .expect("test setup");
    tax5["valid_from"] = json!(day(-366));
    tax5["valid_to"] = json!(day(-1));
    tax5["evaluated_on"] = json!(day(-370));
    tax5["period"] = json!("2024");
    let base = records[0].clone();
    let mut older = base.clone();
    older["grade"] = json!("D");
    older["score"] = json!(30);
    older["period"] = json!("2023");
    older["evaluated_on"] = json!(day(-400));
    let mut sector = base.clone();
    sector["scheme_id"] = json!("sector:mining_restoration");
    sector["scheme_version"] = json!("1.0");
    sector["grade"] = json!("B");
    let mut authorized = base.clone();
    authorized["scheme_id"] = json!("sector:construction");
    authorized["disclosure_scope"] = json!("authorized_query");
    records.extend([older, sector, authorized]);
    records
}

fn find<'a>(answer: &'a Value, uscc: &str, scheme: &str) -> Option<&'a Value> {
    let s = answer["subjects"].as_array()?.iter().find(|s| s["subject_uscc"] == uscc)?;
    s["evaluations"].as_array()?.iter().find(|e| e["scheme_id"] == scheme)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zibo_pulls_dongying_evaluations_under_the_signed_agreement() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let now = OffsetDateTime::now_utc();
    let today = gateway_core::date::today_in_china(now);

    // 信用东营 holds the evaluations; 信用淄博 reaches it through a proxy that can fail.
    let (dongying_port, dongying) = testkit::start_federation_node(&pki, DONGYING, &dir.path().join("dongying")).await;
    let stored = dongying
        .ingest
        .push(serde_json::to_vec(&dongying_evaluations(today)).expect("test setup").into(), now)
        .await
        .expect("push evaluations");
    assert_eq!(stored.accepted, 15, "{:?}", stored.outcomes);
    let proxy = FaultProxy::start(dongying_port).await.expect("fault proxy");
    let peers = [(DONGYING, format!("https://127.0.0.1:{}", proxy.port))];
    let operator = credit_gateway::config::Operator {
        name: "ops".into(),
        password_hash: credit_gateway::dashboard::auth::hash_password("operator password", 1_000).expect("hash"),
        role: None,
    };
    let zibo = testkit::federation_node(&pki, ZIBO, &dir.path().join("zibo"), &peers, |c| {
        c.dashboard.operators = vec![operator];
    })
    .await;
    let desk = zibo.api.clone();
    let client = reqwest::Client::new();

    // One company, asked by a desk officer at 信用淄博.
    let s0 = subject(0);
    let resp =
        client.get(format!("{desk}/api/v1/evaluations/{s0}?from=信用东营&officer=张三")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let one: Value = resp.json().await.expect("JSON answer");
    assert_eq!(one["partner"], DONGYING);
    let s = &one["subjects"][0];
    assert_eq!((s["source"].as_str(), s["stale"].as_bool()), (Some("live"), Some(false)));
    let tax = find(&one, &s0, "tax_credit").expect("tax credit");
    assert_eq!((tax["verdict"].as_str(), tax["disclosed"]["grade"].as_str()), (Some("recognised"), Some("A")));
    assert_eq!(tax["disclosed"]["band"], "优", "the newer A supersedes the older D");
    let composite = find(&one, &s0, "public_credit_composite").expect("gov_shared to a government member");
    assert_eq!(
        (composite["verdict"].as_str(), composite["disclosed"]["band"].as_str()),
        (Some("recognised"), Some("优"))
    );
    let sector = find(&one, &s0, "sector:mining_restoration").expect("sector scheme named");
    assert_eq!(
        (sector["verdict"].as_str(), sector["reason"].as_str()),
        (Some("not_recognised"), Some("scheme_not_covered"))
    );
    assert!(sector.get("disclosed").is_none(), "nothing of a scheme the agreement does not cover: {sector}");
    assert!(find(&one, &s0, "sector:construction").is_none(), "authorized_query results are never disclosed");
    let first_answer = s["answer_id"].as_str().expect("test setup").to_owned();

    // Bulk: the other subjects are asked live; subject 0 comes from the cache.
    let subjects: Vec<String> = (0..6).map(subject).collect();
    let resp = client
        .post(format!("{desk}/api/v1/evaluations/lookup"))
        .json(&json!({"from": DONGYING, "subjects": subjects, "officer": "李四"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let bulk: Value = resp.json().await.expect("JSON answer");
    let sources: Vec<&str> = bulk["subjects"]
        .as_array()
        .expect("test setup")
        .iter()
        .map(|s| s["source"].as_str().expect("test setup"))
        .collect();
    assert_eq!(sources, ["cache", "live", "live", "live", "live", "live"]);
    let m = find(&bulk, &subject(4), "tax_credit").expect("test setup");
    assert_eq!((m["disclosed"]["grade"].as_str(), m["reason"].as_str()), (Some("M"), Some("not_rated")));
    assert!(m["disclosed"].get("band").is_none(), "M is never a rank");
    let expired = find(&bulk, &subject(5), "tax_credit").expect("test setup");
    assert_eq!(
        (expired["verdict"].as_str(), expired["reason"].as_str()),
        (Some("not_recognised"), Some("evaluation_expired"))
    );
    assert!(expired["reason_zh"].as_str().is_some_and(|z| z.contains("有效期")));
    assert_eq!(find(&bulk, &subject(3), "tax_credit").expect("test setup")["disclosed"]["band"], "差");

    // Bad input at the desk: named by pointer, 4xx.
    let resp = client
        .get(format!("{desk}/api/v1/evaluations/91370500000000000X?from=信用东营"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.expect("JSON answer");
    assert_eq!(
        (err["error"]["code"].as_str(), err["error"]["pointer"].as_str()),
        (Some("uscc.check_char"), Some("/uscc"))
    );
    let resp = client.get(format!("{desk}/api/v1/evaluations/{s0}?from=信用火星")).send().await.expect("request");
    assert_eq!(resp.status(), 400);

    // 信用东营 unreachable: cached answers are served, marked stale with their age (the desk's
    // clock is moved two hours on, past the cache's hour); an uncached subject cannot be.
    proxy.set(Fault::Down);
    proxy.redirect(dongying_port); // closes the pooled connection
    let partners = zibo.app.evaluations.as_ref().expect("test setup");
    let later = now + time::Duration::hours(2);
    let stale = credit_gateway::evaluations::lookup(partners, "信用东营", std::slice::from_ref(&s0), None, later)
        .await
        .expect("served from the cache");
    let s = &stale.subjects[0];
    assert!(s.stale && s.source == "stale" && s.age_secs > 3600, "{s:?}");
    assert!(stale.partner_error.is_some());
    let unknown = credit_gateway::evaluations::lookup(partners, DONGYING, &[subject(99)], None, later)
        .await
        .expect_err("nothing cached");
    assert_eq!(unknown.kind.status(), 502);
    proxy.set(Fault::None);

    // A member without an agreement: 信用濮阳 and 信用山东 get 403 with the reason.
    for stranger in ["cn-410900", "cn-370000"] {
        let resp = testkit::federation_client(&pki, stranger)
            .post(format!("https://127.0.0.1:{dongying_port}/federation/v1/evaluations/lookup"))
            .json(&json!({"subjects": [s0]}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 403, "{stranger}");
        let err: Value = resp.json().await.expect("JSON answer");
        assert_eq!(err["error"]["code"], "evaluation.no_agreement");
    }

    // An agreement 信用东营 signed with 信用山东, which has not signed it: not in force.
    let demo_file = pki.join("agreements/zibo-dongying-evaluations.json");
    let mut draft: SignedAgreement =
        serde_json::from_slice(&std::fs::read(&demo_file).expect("test setup")).expect("test setup");
    draft.agreement.agreement_id = "dongying-shandong-draft".into();
    draft.agreement.parties = vec![DONGYING.into(), "cn-370000".into()];
    draft.signatures.clear();
    let (key, kid) =
        credit_gateway::pki::SigningKeyFile::load(&credit_gateway::pki::NodeFiles::new(&pki, DONGYING).signing_key())
            .expect("test setup");
    draft.sign(&kid, &key);
    let registry = dongying.identity.registry.read().expect("test setup").clone();
    assert_eq!(draft.in_force(&registry, today), Err(AgreementError::Unsigned { missing: vec!["cn-370000".into()] }));
    std::fs::write(
        pki.join("agreements/dongying-shandong-draft.json"),
        serde_json::to_vec(&draft).expect("test setup"),
    )
    .expect("test setup");
    let (draft_port, _) = testkit::start_federation_node(&pki, DONGYING, &dir.path().join("dongying-2")).await;
    let resp = testkit::federation_client(&pki, "cn-370000")
        .get(format!("https://127.0.0.1:{draft_port}/federation/v1/evaluations/{s0}"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.expect("JSON answer");
    assert!(
        err["error"]["message_en"].as_str().expect("test setup").contains("not signed by [\"cn-370000\"]"),
        "{err}"
    );
    // The agreement in force ends the day after its validity.
    let demo: SignedAgreement =
        serde_json::from_slice(&std::fs::read(&demo_file).expect("test setup")).expect("test setup");
    let end = gateway_core::date::parse_date(&demo.agreement.valid_to).expect("test setup");
    assert!(demo.in_force(&registry, end).is_ok());
    assert!(matches!(demo.in_force(&registry, end + time::Duration::days(1)), Err(AgreementError::Expired { .. })));

    // The audit log, on both sides.
    let out: Value = get_json(&client, format!("{desk}/api/v1/evaluations/audit?direction=out")).await;
    let out = out.as_array().expect("test setup");
    let outcomes: Vec<(&str, Option<&str>)> =
        out.iter().rev().map(|p| (p["outcome"].as_str().expect("test setup"), p["officer"].as_str())).collect();
    assert_eq!(
        outcomes,
        [
            ("answered", Some("张三")),
            ("answered", Some("李四")),
            ("cache", Some("李四")),
            ("failed", None),
            ("stale", None),
            ("failed", None)
        ]
    );
    let incoming = dongying.ingest.store.pulls(Some("in"), "", 100).await.expect("test setup");
    let answered: Vec<_> = incoming.iter().filter(|p| p.outcome == "answered").collect();
    assert_eq!(answered.len(), 2);
    assert!(answered.iter().all(|p| p.asker == ZIBO));
    assert!(
        answered.iter().any(|p| p.answer_id.as_deref() == Some(first_answer.as_str()) && p.subjects == [s0.clone()])
    );
    let refused: Vec<&str> = incoming.iter().filter(|p| p.outcome == "refused").map(|p| p.asker.as_str()).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.contains(&"cn-410900") && refused.contains(&"cn-370000"));

    // Operators see the same log on the dashboard.
    let web = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let login = web
        .post(format!("{desk}/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=ops&password=operator+password")
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let page = web.get(format!("{desk}/dashboard/evaluations")).header("cookie", cookie).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("pulls-table") && html.contains("张三") && html.contains(&first_answer), "{html}");
    assert_eq!(html.matches("data-outcome=\"stale\"").count(), 1);

    // The answer verifies offline; a bundle whose agreement lost a party's signature does not.
    let bundle: Value = get_json(&client, format!("{desk}/api/v1/evaluations/answers/{first_answer}/evidence")).await;
    // What the code emits matches the published schemas.
    assert_schema("evaluation_evidence", &bundle);
    let payload = gateway_core::jws::from_b64u(bundle["answer"]["payload"].as_str().expect("payload")).expect("b64u");
    assert_schema("evaluation_answer", &serde_json::from_slice(&payload).expect("answer body"));
    assert_schema("agreement", &bundle["agreements"][0]["agreement"]);
    let bundle_file = dir.path().join("answer.json");
    std::fs::write(&bundle_file, serde_json::to_vec_pretty(&bundle).expect("test setup")).expect("test setup");
    let verify = |file: &std::path::Path| {
        std::process::Command::new(testkit::gateway_bin())
            .args(["evidence", "verify"])
            .arg(file)
            .arg("--anchor")
            .arg(credit_gateway::pki::anchor_file(&pki))
            .output()
            .expect("run credit-gateway")
    };
    let ok = verify(&bundle_file);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && text.starts_with("ok: evaluation answer"), "{text}");
    let mut broken = bundle.clone();
    broken["agreements"][0]["signatures"].as_array_mut().expect("test setup").pop();
    let broken_file = dir.path().join("broken.json");
    std::fs::write(&broken_file, serde_json::to_vec(&broken).expect("test setup")).expect("test setup");
    let failed = verify(&broken_file);
    let text = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    assert!(text.contains("/agreements/0") && text.contains("not signed by"), "{text}");
    // The independent verifier (Python, `cryptography`) agrees on both.
    let anchor = credit_gateway::pki::anchor_file(&pki);
    let (code, text) = testkit::python_verify(&bundle_file, &anchor);
    assert!(code == 0 && text.contains("ok: evaluation answer"), "{text}");
    let (code, text) = testkit::python_verify(&broken_file, &anchor);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/agreements/0: not signed by"), "{text}");

    // Revoking: the federation operator drops the agreement from the next registry. Once a node
    // holds it, 信用东营 refuses pulls and 信用淄博's desk serves nothing, not even what it has
    // cached (still fresh).
    let (root, root_kid) =
        credit_gateway::pki::SigningKeyFile::load(&pki.join("root-signing.key.json")).expect("root key");
    let mut body = registry.body.clone();
    body.version += 1;
    body.agreements.clear();
    let jws = gateway_core::jws::sign(
        gateway_core::interchange::registry::REGISTRY_TYP,
        &root_kid,
        &serde_json::to_value(&body).expect("registry body"),
        &root,
    );
    let revoked =
        gateway_core::interchange::registry::Registry::verify_signed(&jws, registry.trusted_roots()).expect("registry");
    *dongying.identity.registry.write().expect("lock") = revoked.clone();
    *zibo.node().identity.registry.write().expect("lock") = revoked;
    let resp = testkit::federation_client(&pki, ZIBO)
        .get(format!("https://127.0.0.1:{dongying_port}/federation/v1/evaluations/{s0}"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403, "a revoked agreement lets nothing through");
    let resp =
        client.get(format!("{desk}/api/v1/evaluations/{}?from=信用东营", subject(2))).send().await.expect("request");
    assert_eq!(resp.status(), 403, "the desk serves nothing, cached or not, without an agreement in force");
    let err: Value = resp.json().await.expect("JSON answer");
    assert_eq!(err["error"]["code"], "evaluation.no_agreement");
    *dongying.identity.registry.write().expect("lock") = registry.clone();
    *zibo.node().identity.registry.write().expect("lock") = registry.clone();

    // The desk officer's command.
    let cli = std::process::Command::new(testkit::gateway_bin())
        .args(["evaluation", "lookup", &subject(1), "--from", "信用东营", "--officer", "王五", "--url", &desk])
        .output()
        .expect("run credit-gateway");
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{text}{}", String::from_utf8_lossy(&cli.stderr));
    assert!(text.contains("信用东营 (cn-370500)") && text.contains("tax_credit 2014  B → 良  recognised"), "{text}");
}

/// Panics with every error if `doc` does not match `schemas/interchange/<name>`.
fn assert_schema(name: &str, doc: &Value) {
    let path = testkit::repo_dir().join("schemas/interchange").join(name).join("schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).expect("schema")).expect("schema JSON");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}");
}

/// With authentication on, a desk lookup is made by an authenticated desk officer: the
/// officer's name (not one the desk types in) is what both nodes' logs keep, and an operator
/// may not look anything up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desk_lookups_carry_the_authenticated_officer_into_both_audit_logs() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let now = OffsetDateTime::now_utc();
    let today = gateway_core::date::today_in_china(now);
    let (dongying_port, dongying) = testkit::start_federation_node(&pki, DONGYING, &dir.path().join("dongying")).await;
    let body = serde_json::to_vec(&dongying_evaluations(today)).expect("test setup");
    dongying.ingest.push(body.into(), now).await.expect("push evaluations");
    let peers = [(DONGYING, format!("https://127.0.0.1:{dongying_port}"))];
    let zibo = testkit::federation_node(&pki, ZIBO, &dir.path().join("zibo"), &peers, |c| c.auth.required = true).await;
    let desk_unit = credit_gateway::bench::uscc_in("11", "370300", 1);
    const OFFICER: &str = "张三（信用淄博窗口）";
    let officer = testkit::issue_key(&zibo.app, "desk_officer", OFFICER, Some(&desk_unit)).await;
    let operator = testkit::issue_key(&zibo.app, "operator", "值班员", None).await;
    let client = reqwest::Client::new();
    let s0 = subject(0);
    let url = format!("{}/api/v1/evaluations/{s0}?from=信用东营&officer=冒名者", zibo.api);
    assert_eq!(client.get(&url).send().await.expect("request").status(), 401);
    assert_eq!(client.get(&url).bearer_auth(&operator).send().await.expect("request").status(), 403);
    let resp = client.get(&url).bearer_auth(&officer).send().await.expect("request");
    assert_eq!(resp.status(), 200);

    let out = zibo.app.ingest.store.pulls(Some("out"), "", 10).await.expect("pulls");
    assert_eq!(out.iter().map(|p| p.officer.as_deref()).collect::<Vec<_>>(), [Some(OFFICER)]);
    let incoming = dongying.ingest.store.pulls(Some("in"), "", 10).await.expect("pulls");
    assert_eq!(
        incoming.iter().map(|p| (p.asker.as_str(), p.officer.as_deref())).collect::<Vec<_>>(),
        [(ZIBO, Some(OFFICER))]
    );

    let asked = zibo.app.ingest.store.audit_entries(0, 100).await.expect("audit");
    let lookup = asked
        .iter()
        .find(|e| e.event.action == "GET /api/v1/evaluations/{uscc}" && e.event.status == 200)
        .expect("the lookup in 信用淄博's audit log");
    assert_eq!((lookup.event.principal.as_str(), lookup.event.role.as_str()), (OFFICER, "desk_officer"));
    assert!(lookup.event.detail.contains(DONGYING), "{}", lookup.event.detail);
    let answered = dongying.ingest.store.audit_entries(0, 100).await.expect("audit");
    let pull =
        answered.iter().find(|e| e.event.action == "federation.evaluation_pull").expect("the pull in 信用东营's log");
    assert_eq!((pull.event.principal.as_str(), pull.event.status), (ZIBO, 200));
    assert!(pull.event.detail.contains(OFFICER), "{}", pull.event.detail);
    for store in [&zibo.app.ingest.store, &dongying.ingest.store] {
        assert!(store.verify_audit().await.expect("verify").problems.is_empty());
    }
}

/// GETs `url` and reads the JSON answer, whatever its status.
async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.expect("request").json().await.expect("JSON answer")
}
