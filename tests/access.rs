//! Who may do what (#23), over real HTTP and real HTTPS with client certificates: departments
//! push only their own units' records and read back only theirs; no, revoked or expired keys
//! get 401; the wrong role gets 403; every route declares its permission (the route walk) and
//! each role meets each endpoint with the status of the matrix below; rate limits answer 429
//! with Retry-After; the audit log carries who did what; a node beyond loopback without
//! authentication refuses to start.

use credit_gateway::api::access::Rule;
use credit_gateway::auth::Role;
use serde_json::{Value, json};
use testkit::Running;

/// 淄博市周村区市场监督管理局 and 淄博市周村区生态环境分局: the units of `synthetic_records`
/// (record i is of unit i % 3).
const MARKET: &str = "11370306MB28554702";
const ECOLOGY: &str = "11370306004217500P";

async fn auth_node(dir: &std::path::Path, configure: impl FnOnce(&mut credit_gateway::config::Config)) -> Running {
    credit_gateway::tls::install_crypto_provider();
    let mut config = testkit::config(dir);
    config.auth.required = true;
    configure(&mut config);
    testkit::start(config).await
}

async fn push(client: &reqwest::Client, base: &str, key: Option<&str>, records: &[Value]) -> (u16, Value) {
    let mut req = client.post(format!("{base}/api/v1/records")).json(records);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("push");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn rules(outcome: &Value) -> Vec<(String, String)> {
    outcome["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| (e["rule"].as_str().unwrap_or("").into(), e["pointer"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_push_and_read_only_their_own_units_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = auth_node(dir.path(), |_| {}).await;
    let (app, base) = (&node.app, node.api.as_str());
    let client = reqwest::Client::new();
    let market = testkit::issue_key(app, "department", "淄博市周村区市场监督管理局", Some(MARKET)).await;
    let ecology = testkit::issue_key(app, "department", "淄博市周村区生态环境分局", Some(ECOLOGY)).await;
    let operator = testkit::issue_key(app, "operator", "值班员", None).await;

    let records = credit_gateway::bench::synthetic_records(6, 23);
    // Records 0 and 3 are the market bureau's; record 1 names the ecology branch.
    let batch = [records[0].clone(), records[1].clone(), records[3].clone()];

    let (status, body) = push(&client, base, None, &batch).await;
    assert_eq!(status, 401, "no key: {body}");
    assert_eq!(body["error"]["code"], "auth.required");
    let (status, body) = push(&client, base, Some("cgk_not-a-key-of-this-node"), &batch).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("auth.unknown_credential")));
    let (status, body) = push(&client, base, Some(&operator), &batch).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("auth.forbidden")), "{body}");
    assert!(body["error"]["message_en"].as_str().is_some_and(|m| m.contains("records.push")), "{body}");

    let (status, body) = push(&client, base, Some(&market), &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(2), Some(1)), "{body}");
    let outcomes = body["outcomes"].as_array().expect("outcomes");
    assert_eq!(outcomes[0]["status"], "accepted");
    assert_eq!(outcomes[1]["status"], "rejected");
    assert_eq!(rules(&outcomes[1]), [("auth.unit_not_allowed".to_owned(), "/source_unit_uscc".to_owned())]);
    assert!(outcomes[1]["errors"][0]["message_zh"].as_str().is_some_and(|m| m.contains(ECOLOGY)));
    assert_eq!(outcomes[2]["status"], "accepted");
    let penalty_id = outcomes[0]["record_id"].as_str().expect("id").to_owned();

    // Another unit may not withdraw the market bureau's penalty (the attack of the issue).
    let withdrawal = json!({
        "record_type": "withdrawal", "region_code": "370306",
        "target_origin": "cn-370306", "target_record_id": penalty_id, "target_version": 1,
        "decided_on": "2026-11-06", "deciding_authority": "淄博市周村区生态环境分局",
        "deciding_authority_uscc": ECOLOGY, "reason": "冒名撤销（测试）",
        "source_unit": "淄博市周村区生态环境分局", "source_unit_uscc": ECOLOGY, "disclosure_scope": "gov_shared"
    });
    let (status, body) = push(&client, base, Some(&ecology), &[withdrawal]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rules(&body["outcomes"][0]), [("auth.unit_not_allowed".to_owned(), "/target_record_id".to_owned())]);
    let trail: Value = client
        .get(format!("{base}/api/v1/records/{penalty_id}/trail"))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("trail")
        .json()
        .await
        .expect("json");
    assert_ne!(trail["state"]["state"], "withdrawn", "{trail}");

    // Nor may it take the market bureau's penalty over by sending the same decision (same
    // natural key) under its own source unit.
    let mut takeover = records[0].clone();
    takeover["source_unit"] = json!("淄博市周村区生态环境分局");
    takeover["source_unit_uscc"] = json!(ECOLOGY);
    takeover["penalty_content"] = json!("撤销处罚（冒名新版本）");
    let (status, body) = push(&client, base, Some(&ecology), &[takeover]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rules(&body["outcomes"][0]), [("auth.unit_not_allowed".to_owned(), "/source_unit_uscc".to_owned())]);
    assert_eq!(app.ingest.store.versions(penalty_id.parse().expect("uuid")).await.expect("versions").len(), 1);

    // Reads: each department sees its own records only; the operator sees all.
    let list = |key: String| {
        let client = client.clone();
        async move {
            let page: Value = client
                .get(format!("{base}/api/v1/records?limit=100"))
                .bearer_auth(key)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            page["items"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(list(market.clone()).await, 2);
    assert_eq!(list(ecology.clone()).await, 0);
    assert_eq!(list(operator.clone()).await, 2);
    let read = |key: &str| client.get(format!("{base}/api/v1/records/{penalty_id}")).bearer_auth(key.to_owned()).send();
    assert_eq!(read(&market).await.expect("read").status(), 200);
    assert_eq!(read(&ecology).await.expect("read").status(), 404, "another unit's record is not found");

    // Revoked and expired keys are refused.
    let store = &app.ingest.store;
    let id = store
        .credentials()
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.unit_uscc.as_deref() == Some(ECOLOGY))
        .expect("ecology")
        .credential_id;
    assert!(store.revoke_credential(&id, "2026-12-07T00:00:00Z").await.expect("revoke"));
    let (status, body) = push(&client, base, Some(&ecology), &[records[1].clone()]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("auth.revoked")));
    let expiring = credit_gateway::auth::IssueRequest {
        principal: "临时".into(),
        role: Some(Role::Department),
        unit_uscc: Some(ECOLOGY.into()),
        expires_in_days: Some(0),
        ..Default::default()
    };
    let expired = credit_gateway::auth::credentials::issue(store, expiring, time::OffsetDateTime::now_utc())
        .await
        .expect("issue")
        .api_key
        .expect("key");
    let (status, body) = push(&client, base, Some(&expired), &[records[1].clone()]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("auth.expired")));

    // The audit log has each call: who, what, outcome, request id; and the chain holds.
    let entries = store.audit_entries(0, 1_000).await.expect("audit");
    let pushes: Vec<_> = entries.iter().filter(|e| e.event.action == "POST /api/v1/records").collect();
    assert!(pushes.iter().any(|e| e.event.principal == "anonymous" && e.event.status == 401));
    assert!(pushes.iter().any(|e| e.event.role == "operator" && e.event.outcome == "denied"));
    let ok =
        pushes.iter().find(|e| e.event.principal == "淄博市周村区市场监督管理局").expect("the market bureau's push");
    assert_eq!((ok.event.status, ok.event.outcome.as_str()), (200, "ok"));
    assert!(ok.event.detail.contains("accepted 2") && ok.event.detail.contains("rejected 1"), "{}", ok.event.detail);
    assert!(!ok.event.request_id.is_empty());
    let check = store.verify_audit().await.expect("verify");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = testkit::ApiPki::new(&dir.path().join("api-pki"));
    let node = auth_node(&dir.path().join("node"), |c| c.api_tls = Some(pki.config())).await;
    let base = node.api.replacen("http://", "https://", 1);
    let (cert, market) = pki.client("market-bureau");
    let (_, stranger) = pki.client("not-registered");
    let req = credit_gateway::auth::IssueRequest {
        principal: "淄博市周村区市场监督管理局".into(),
        role: Some(Role::Department),
        unit_uscc: Some(MARKET.into()),
        certificate_pem: Some(cert),
        ..Default::default()
    };
    credit_gateway::auth::credentials::issue(&node.app.ingest.store, req, time::OffsetDateTime::now_utc())
        .await
        .expect("register the certificate");

    let records = credit_gateway::bench::synthetic_records(3, 24);
    let (status, body) = push(&market, &base, None, &records).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(1), Some(2)), "{body}");
    assert_eq!(rules(&body["outcomes"][1]), [("auth.unit_not_allowed".to_owned(), "/source_unit_uscc".to_owned())]);

    let (status, body) = push(&stranger, &base, None, &records).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("auth.unknown_credential")),
        "a CA-valid certificate that is not registered"
    );
    let (status, _) = push(&pki.anonymous_client(), &base, None, &records).await;
    assert_eq!(status, 401, "no certificate and no key");
    // An API key works over HTTPS too, without a certificate.
    let key = testkit::issue_key(&node.app, "operator", "值班员", None).await;
    let resp =
        pki.anonymous_client().get(format!("{base}/api/v1/outbox")).bearer_auth(key).send().await.expect("outbox");
    assert_eq!(resp.status(), 200);
    // Plain HTTP to the HTTPS port gets nothing.
    assert!(reqwest::Client::new().get(format!("{}/healthz", node.api)).send().await.is_err());
}

/// Who may call what: one row per route, the roles in the order of [`ROLES`]. Written out by
/// hand so that a change to the permission table shows up here as a failing test.
const ROLES: [&str; 5] = ["department", "desk_officer", "operator", "auditor", "admin"];
const MATRIX: &[(&str, &str, [bool; 5])] = &[
    //                                                     dept   desk   oper   audit  admin
    ("POST", "/api/v1/records", [true, false, false, false, false]),
    ("GET", "/api/v1/records", [true, false, true, true, false]),
    ("GET", "/api/v1/records/{id}", [true, false, true, true, false]),
    ("GET", "/api/v1/records/{id}/trail", [true, false, true, true, false]),
    ("GET", "/api/v1/outbox", [false, false, true, true, false]),
    ("GET", "/api/v1/dead-letters", [false, false, true, true, false]),
    ("POST", "/api/v1/dead-letters/resend", [false, false, true, false, false]),
    ("POST", "/api/v1/imports", [true, false, false, false, false]),
    ("GET", "/api/v1/imports/{id}", [true, false, true, false, false]),
    ("GET", "/api/v1/imports/{id}/feedback.xlsx", [true, false, true, false, false]),
    ("GET", "/api/v1/templates/monthly-report.xlsx", [true, false, true, false, false]),
    ("GET", "/api/v1/reporting", [true, false, true, true, false]),
    ("GET", "/api/v1/sla", [false, false, true, true, false]),
    ("GET", "/api/v1/quality", [true, false, true, true, false]),
    ("GET", "/api/v1/quality.csv", [true, false, true, true, false]),
    ("GET", "/api/v1/quality.xlsx", [true, false, true, true, false]),
    ("POST", "/api/v1/evaluations/lookup", [false, true, false, false, false]),
    ("GET", "/api/v1/evaluations/audit", [false, false, true, true, false]),
    ("GET", "/api/v1/evaluations/answers/{answer_id}/evidence", [false, true, false, true, false]),
    ("GET", "/api/v1/evaluations/{uscc}", [false, true, false, false, false]),
    ("GET", "/api/v1/cases", [true, false, true, true, false]),
    ("GET", "/api/v1/cases/overdue", [true, false, true, true, false]),
    ("GET", "/api/v1/cases/loop", [true, false, true, true, false]),
    ("GET", "/api/v1/cases.xlsx", [true, false, false, false, false]),
    ("POST", "/api/v1/cases.xlsx", [true, false, false, false, false]),
    ("POST", "/api/v1/cases/{id}/response", [true, false, false, false, false]),
    ("POST", "/api/v1/cases/{id}/feedback", [true, false, false, false, false]),
    ("POST", "/api/v1/cases/{id}/lifted", [true, false, false, false, false]),
    ("POST", "/api/v1/checks", [true, false, false, false, false]),
    ("GET", "/api/v1/audit", [false, false, false, true, false]),
    ("GET", "/api/v1/audit/verify", [false, false, false, true, false]),
    ("GET", "/api/v1/credentials", [false, false, false, false, true]),
    ("POST", "/api/v1/credentials", [false, false, false, false, true]),
    ("POST", "/api/v1/credentials/{id}/revoke", [false, false, false, false, true]),
    ("GET", "/metrics", [false, false, true, false, false]),
    ("GET", "/dashboard", [false, false, true, true, false]),
    ("GET", "/dashboard/sla", [false, false, true, true, false]),
    ("GET", "/dashboard/reporting", [false, false, true, true, false]),
    ("GET", "/dashboard/quality", [false, false, true, true, false]),
    ("GET", "/dashboard/dead-letters", [false, false, true, true, false]),
    ("POST", "/dashboard/dead-letters/resend", [false, false, true, false, false]),
    ("GET", "/dashboard/trail/{id}", [false, false, true, true, false]),
    ("GET", "/dashboard/evaluations", [false, false, true, true, false]),
    ("GET", "/dashboard/cases", [false, false, true, true, false]),
];
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/docs"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/dashboard/login"),
    ("POST", "/dashboard/login"),
    ("POST", "/dashboard/logout"),
];

/// A concrete request for a route: path parameters filled in, a small body where one is needed.
fn request(client: &reqwest::Client, base: &str, method: &str, route: &str) -> reqwest::RequestBuilder {
    let path = route
        .replace("{id}", "0190a5b2-0000-7000-8000-000000000000")
        .replace("{answer_id}", "no-such-answer")
        .replace("{uscc}", "91370500MA3C8Q2X1Y");
    let url = format!("{base}{path}");
    match method {
        "GET" => client.get(url),
        _ => {
            let body = match route {
                "/api/v1/records" => "[]",
                "/api/v1/credentials" => r#"{"principal": "x", "role": "nobody"}"#,
                "/api/v1/evaluations/lookup" => r#"{"from": "cn-370500", "subjects": []}"#,
                _ => "{}",
            };
            client.post(url).header("content-type", "application/json").body(body)
        }
    }
}

async fn walk_matrix(clients: &[(reqwest::Client, Option<String>)], base: &str) {
    let mut wrong = Vec::new();
    for (method, route, allowed) in MATRIX {
        for (i, (client, key)) in clients.iter().enumerate() {
            let mut req = request(client, base, method, route);
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let status = req.send().await.expect("request").status().as_u16();
            // Allowed: the handler answered (a 4xx about the request itself, or 503 where the
            // node has no federation identity), never 401, 403 or a server fault.
            let ok = if allowed[i] { !matches!(status, 401 | 403 | 500) } else { status == 403 };
            if !ok {
                wrong.push(format!("{} {method} {route} → {status} (allowed: {})", ROLES[i], allowed[i]));
            }
        }
    }
    assert!(wrong.is_empty(), "the role × endpoint matrix does not hold:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_declares_its_permission_and_each_role_meets_the_matrix() {
    // The table the access layer enforces is exactly the matrix above plus the public list.
    let (_, table) = credit_gateway::api::routes().into_parts();
    let mut declared: Vec<(String, String, Option<Vec<bool>>)> = table
        .iter()
        .map(|d| {
            let roles = match d.rule {
                Rule::Public => None,
                Rule::Needs(p) => Some(ROLES.iter().map(|r| Role::parse(r).expect("role").permits(p)).collect()),
            };
            (d.method.to_string(), d.path.to_owned(), roles)
        })
        .collect();
    let mut expected: Vec<(String, String, Option<Vec<bool>>)> = MATRIX
        .iter()
        .map(|(m, p, a)| ((*m).to_owned(), (*p).to_owned(), Some(a.to_vec())))
        .chain(PUBLIC.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned(), None)))
        .collect();
    declared.sort();
    expected.sort();
    assert_eq!(declared, expected, "a route was added or its permission changed: update MATRIX or PUBLIC");

    // Over real HTTP: no credential → 401 on every guarded route (the dashboard's pages send a
    // browser to the login page); public routes answer without one.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = testkit::ApiPki::new(&dir.path().join("api-pki"));
    // (Calls without a credential count against the source address: this walk makes many.)
    let node = auth_node(&dir.path().join("http"), |c| c.auth.failure_burst = 1_000).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for d in &table {
        let status =
            request(&client, &node.api, d.method.as_str(), d.path).send().await.expect("request").status().as_u16();
        match d.rule {
            Rule::Public => {
                assert!(status != 401 && status != 403, "{} {} is public but got {status}", d.method, d.path)
            }
            Rule::Needs(_) if d.path.starts_with("/dashboard") && d.method == "GET" => {
                assert_eq!(status, 303, "{} {} without a login", d.method, d.path)
            }
            Rule::Needs(_) => assert_eq!(status, 401, "{} {} without a credential", d.method, d.path),
        }
        // HEAD is answered by the GET handler: it needs the same.
        if d.method == "GET" && matches!(d.rule, Rule::Needs(_)) {
            let url = request(&client, &node.api, "GET", d.path).build().expect("request").url().clone();
            let status = client.head(url).send().await.expect("HEAD").status().as_u16();
            assert!(matches!(status, 401 | 303), "HEAD {} without a credential got {status}", d.path);
        }
    }

    // Each role with an API key over HTTP.
    let mut keyed = Vec::new();
    for role in ROLES {
        let unit = matches!(role, "department" | "desk_officer").then_some(MARKET);
        keyed.push((client.clone(), Some(testkit::issue_key(&node.app, role, &format!("{role} 1"), unit).await)));
    }
    walk_matrix(&keyed, &node.api).await;

    // Each role with a registered client certificate over HTTPS.
    let tls_node = auth_node(&dir.path().join("https"), |c| c.api_tls = Some(pki.config())).await;
    let mut certified = Vec::new();
    for role in ROLES {
        let (pem, client) = pki.client(&format!("{role}-cert"));
        let req = credit_gateway::auth::IssueRequest {
            principal: format!("{role} 2"),
            role: Role::parse(role),
            unit_uscc: matches!(role, "department" | "desk_officer").then(|| MARKET.to_owned()),
            certificate_pem: Some(pem),
            ..Default::default()
        };
        credit_gateway::auth::credentials::issue(&tls_node.app.ingest.store, req, time::OffsetDateTime::now_utc())
            .await
            .expect("register");
        certified.push((client, None));
    }
    walk_matrix(&certified, &tls_node.api.replacen("http://", "https://", 1)).await;
}

#[test]
fn no_module_adds_a_route_around_the_permission_table() {
    let src = testkit::repo_dir().join("gateway/node/src");
    let mut offenders = Vec::new();
    for sub in ["api", "dashboard"] {
        for entry in std::fs::read_dir(src.join(sub)).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n == "access.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            if text.contains(".route(") || text.contains(".nest(") || text.contains(".route_service(") {
                offenders.push(path.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "routes must be added through api::access::Guarded: {offenders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_declares_the_security_of_every_operation() {
    let doc = credit_gateway::api::openapi_document();
    assert_eq!(doc["components"]["securitySchemes"]["clientCertificate"]["type"], "mutualTLS");
    assert_eq!(doc["components"]["securitySchemes"]["apiKey"]["scheme"], "bearer");
    let (_, table) = credit_gateway::api::routes().into_parts();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            operations += 1;
            let declared = table
                .iter()
                .find(|d| d.path == path && d.method.as_str().eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
            let security = op["security"].as_array().unwrap_or_else(|| panic!("{method} {path} has no security"));
            match declared.rule {
                Rule::Public => assert!(security.is_empty(), "{method} {path}"),
                Rule::Needs(p) => {
                    assert_eq!(op["x-permission"], p.as_str(), "{method} {path}");
                    assert!(!security.is_empty() && op["responses"]["401"].is_object(), "{method} {path}");
                }
            }
        }
    }
    assert!(operations >= 25, "{operations} operations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = auth_node(dir.path(), |c| {
        // One call every 20 s after the burst: the fourth is refused however slow the machine.
        c.auth.rate_per_second = 0.05;
        c.auth.burst = 3;
        c.auth.failures_per_minute = 6;
        c.auth.failure_burst = 4;
    })
    .await;
    let client = reqwest::Client::new();
    let key = testkit::issue_key(&node.app, "operator", "值班员", None).await;
    let call = |key: String| client.get(format!("{}/api/v1/outbox", node.api)).bearer_auth(key).send();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(call(key.clone()).await.expect("call"));
    }
    assert_eq!(statuses.iter().map(|r| r.status().as_u16()).collect::<Vec<_>>(), [200, 200, 200, 429]);
    let retry: u64 = statuses[3].headers()["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((1..=20).contains(&retry), "{retry}");

    // Wrong keys from one address: four are checked, then the address gets 429 for wrong keys
    // (and for calls without any); a right key from it still works (behind a proxy every
    // client has the proxy's address).
    for _ in 0..4 {
        assert_eq!(call("cgk_wrong".into()).await.expect("call").status(), 401);
    }
    let limited = call("cgk_wrong".into()).await.expect("call");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let anonymous = client.get(format!("{}/api/v1/outbox", node.api)).send().await.expect("call");
    assert_eq!(anonymous.status(), 429);
    let other = testkit::issue_key(&node.app, "auditor", "审计员", None).await;
    assert_eq!(call(other).await.expect("call").status(), 200, "a right key is never held up by wrong ones");
    // Refusals at line speed do not fill the audit log: 429s are not written.
    let entries = node.app.ingest.store.audit_entries(0, 1_000).await.expect("audit");
    assert!(entries.iter().all(|e| e.event.status != 429), "{entries:?}");
    assert_eq!(entries.iter().filter(|e| e.event.status == 401).count(), 4);
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_logins_is_limited_per_address_and_the_right_one_gets_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = credit_gateway::dashboard::auth::hash_password("正确的密码", 20_000).expect("hash");
    let node = auth_node(dir.path(), |c| {
        // One attempt a minute after the burst: the flood cannot earn more while it runs.
        c.auth.failures_per_minute = 1;
        c.dashboard.operators =
            vec![credit_gateway::config::Operator { name: "ops".into(), password_hash: hash, role: None }];
    })
    .await;
    let client_from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    };
    let attacker = client_from([127, 0, 0, 2]);
    let login = |client: reqwest::Client, password: &'static str| {
        let url = format!("{}/dashboard/login", node.api);
        async move {
            // The form, URL-encoded by hand (the password is ASCII or percent-encoded UTF-8).
            let body = format!("username=ops&password={}", percent(password));
            let req = client.post(url).header("content-type", "application/x-www-form-urlencoded").body(body);
            req.send().await.expect("login").status().as_u16()
        }
    };
    let flood: Vec<_> = (0..20).map(|_| tokio::spawn(login(attacker.clone(), "wrong"))).collect();
    let operator = client_from([127, 0, 0, 1]);
    let right = operator
        .post(format!("{}/dashboard/login", node.api))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=ops&password={}", percent("正确的密码")))
        .send()
        .await
        .expect("login");
    assert_eq!(right.status(), 303, "the right login gets in during the flood");
    // The login is the operator's credential on the API too (the pages' export links).
    let cookie = right.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("cookie").to_owned();
    let with_login = |method: reqwest::Method, path: &str| {
        operator.request(method, format!("{}{path}", node.api)).header("cookie", cookie.clone())
    };
    assert_eq!(with_login(reqwest::Method::GET, "/api/v1/quality.csv").send().await.expect("csv").status(), 200);
    let push =
        with_login(reqwest::Method::POST, "/api/v1/records").header("content-type", "application/json").body("[]");
    // The cookie stands for a login on reads and on the dashboard's own forms, never on the
    // API's other writes (they carry no form token).
    assert_eq!(push.send().await.expect("push").status(), 401, "a login cookie does not push");
    let mut answers = Vec::new();
    for f in flood {
        answers.push(f.await.expect("task"));
    }
    let checked = answers.iter().filter(|s| **s == 401).count();
    assert!(answers.iter().all(|s| *s == 401 || *s == 429), "{answers:?}");
    assert!(checked <= 10, "at most the failure burst is checked: {answers:?}");
    assert!(answers.contains(&429), "{answers:?}");
    // Logins are in the audit log, refused ones too (those answered 429 are not).
    let logins: Vec<_> = node
        .app
        .ingest
        .store
        .audit_entries(0, 1_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.event.action == "POST /dashboard/login")
        .collect();
    assert!(logins.iter().any(|e| (e.event.status, e.event.role.as_str()) == (303, "operator")));
    assert_eq!(logins.iter().filter(|e| e.event.status == 401).count(), checked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_beyond_loopback_without_authentication_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(testkit::gateway_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("CREDIT_GATEWAY_AUTH_REQUIRED")
        .output()
        .expect("run credit-gateway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to start without authentication"), "{stderr}");
    assert!(stderr.contains("credential issue") && stderr.contains("[auth] required = true"), "{stderr}");
    assert!(!dir.path().join("gateway.sqlite").exists(), "refused before anything was opened");
}
