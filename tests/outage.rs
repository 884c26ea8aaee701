//! A week-long outage upstream, as #6 describes it: 信用山东 is stopped (a real process, killed)
//! while 信用淄博 takes records decided on 2026-09-28 (deadline 2026-10-13, across 国庆). The
//! alert checks at 信用淄博 run with an injected clock over the simulated week: on 10-09 the
//! records still have three working days (nothing fires), on 10-12 they turn `at_risk`, on 10-14
//! `breached`, and each fires its signed webhook exactly once. Restarting 信用山东 delivers them,
//! and the hop's SLA shows when.

use std::time::Duration;

use credit_gateway::alerts::{Alerter, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use credit_gateway::bench::synthetic_records;
use credit_gateway::config::{AlertsConfig, RelayConfig};
use credit_gateway::sla::SlaQuery;
use gateway_core::crypto::Alg;
use gateway_core::sla::SlaState;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::date;

const CITY: &str = "cn-370300";
const PROVINCE: &str = "cn-370000";

use testkit::{Received, webhook};

fn penalty(base: &Value, n: u32) -> Value {
    let mut r = base.clone();
    r["decision_date"] = "2026-09-28".into();
    r["penalty_effective_until"] = "2027-06-30".into();
    r["decision_doc_no"] = format!("淄市监罚〔2026〕停运{n}号").into();
    r["disclosure_scope"] = "public".into();
    r.as_object_mut().expect("object").remove("publicity_end_date");
    r
}

fn start_province(pki: &std::path::Path, dir: &std::path::Path, api: u16, fed: u16) -> testkit::Node {
    let fed_listen = format!("127.0.0.1:{fed}");
    let pki = pki.display().to_string();
    testkit::Node::start_at(
        dir,
        &format!("127.0.0.1:{api}"),
        &["--member", PROVINCE, "--pki", &pki, "--federation-listen", &fed_listen],
    )
}

/// The alerts of a check, as (kind, record count, body) after checking each signature.
fn take(received: &Received, secret: &[u8]) -> Vec<(String, usize, Value)> {
    let mut got = Vec::new();
    for (headers, body) in received.lock().expect("lock").drain(..) {
        let timestamp = headers[TIMESTAMP_HEADER].to_str().expect("timestamp");
        let signature = headers[SIGNATURE_HEADER].to_str().expect("signature");
        // HMAC-SHA256 of "<timestamp>.<body>", computed here independently of the sender.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = hex::decode(signature.strip_prefix("sha256=").expect("sha256=")).expect("hex");
        ring::hmac::verify(&key, &[timestamp.as_bytes(), b".", &body].concat(), &tag).expect("signature verifies");
        let alert: Value = serde_json::from_slice(&body).expect("json");
        let n = alert["details"]["records"].as_array().map_or(0, Vec::len);
        got.push((alert["kind"].as_str().expect("kind").to_owned(), n, alert));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_without_the_province_turns_records_at_risk_then_breached_and_alerts() {
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let (api, fed) = (testkit::free_port(), testkit::free_port());
    let province_dir = tmp.path().join(PROVINCE);
    let province = start_province(&pki, &province_dir, api, fed);
    // 信用山东 goes down before the city's records come in.
    province.kill9();

    let city_dir = tmp.path().join(CITY);
    let peers = [(PROVINCE, format!("https://localhost:{fed}"))];
    // The city's relay runs as `serve` runs it; the alert checks are called by hand, on the
    // simulated days.
    let city = testkit::federation_node(&pki, CITY, &city_dir, &peers, |c| {
        c.relay = RelayConfig { linger_ms: 5, backoff_base_ms: 20, backoff_max_ms: 200, ..RelayConfig::default() };
    })
    .await;
    let gw = city.app.clone();
    let (url, received) = webhook().await;
    let alerts = AlertsConfig { webhook_url: Some(url), ..AlertsConfig::default() };
    let alerter = Alerter::new(gw.clone(), &alerts, &city_dir).expect("alerter").expect("configured");
    let secret = std::fs::read_to_string(city_dir.join("alerts.key")).expect("generated key");

    let base = synthetic_records(8, 3).into_iter().find(|r| r["record_type"] == "admin_penalty").expect("penalty");
    let records: Vec<Value> = (1..=6).map(|n| penalty(&base, n)).collect();
    let answer = gw
        .ingest
        .push(serde_json::to_vec(&records).expect("json").into(), OffsetDateTime::now_utc())
        .await
        .expect("push");
    assert_eq!(answer.accepted, 6, "{:?}", answer.outcomes);
    assert!(answer.outcomes.iter().all(|o| o.publicity_deadline.as_deref() == Some("2026-10-13")));
    testkit::eventually("the relay to notice 信用山东 is down", Duration::from_secs(30), async || {
        gw.relay.status.snapshot().get(PROVINCE).is_some_and(|s| s.consecutive_failures > 0)
    })
    .await;

    // The simulated week, Beijing mornings. 10-09: three working days left (10-10 is a 调休
    // Saturday): not yet at risk.
    let beijing = |d: time::Date| d.with_time(time::macros::time!(09:00)).assume_offset(time::macros::offset!(+8));
    alerter.check(beijing(date!(2026 - 10 - 09))).await.expect("check");
    assert!(take(&received, secret.trim().as_bytes()).iter().all(|(k, _, _)| !k.starts_with("sla.")));
    // 10-12: one working day left: at risk, at the hop to 信用山东.
    alerter.check(beijing(date!(2026 - 10 - 12))).await.expect("check");
    let got = take(&received, secret.trim().as_bytes());
    let at_risk: Vec<_> =
        got.iter().filter(|(k, _, a)| k == "sla.at_risk" && a["details"]["destination"] == PROVINCE).collect();
    assert_eq!(at_risk.len(), 1, "{got:?}");
    assert_eq!(at_risk[0].1, 6, "all six records named");
    assert!(at_risk[0].2["summary_zh"].as_str().expect("zh").contains("工作日"));
    // The same day again: nothing new.
    alerter.check(beijing(date!(2026 - 10 - 12))).await.expect("check");
    assert!(take(&received, secret.trim().as_bytes()).iter().all(|(k, _, _)| !k.starts_with("sla.")));
    // 10-14: the deadline has passed: breached, once.
    alerter.check(beijing(date!(2026 - 10 - 14))).await.expect("check");
    let got = take(&received, secret.trim().as_bytes());
    let breached: Vec<_> =
        got.iter().filter(|(k, _, a)| k == "sla.breached" && a["details"]["destination"] == PROVINCE).collect();
    assert_eq!(breached.len(), 1, "{got:?}");
    assert_eq!(breached[0].1, 6);
    alerter.check(beijing(date!(2026 - 10 - 16))).await.expect("check");
    assert!(take(&received, secret.trim().as_bytes()).iter().all(|(k, _, _)| !k.starts_with("sla.")));
    // The view at the end of the week agrees.
    let view_at = |today| SlaQuery { since: Some(date!(2026 - 10 - 01)), ..SlaQuery::new(PROVINCE, today) };
    let view = credit_gateway::sla::view(&gw.sla, &view_at(date!(2026 - 10 - 16))).await.expect("view");
    assert_eq!(view.counts.get("breached"), Some(&6));
    assert!(view.records.iter().all(|r| r.state == SlaState::Breached && r.published_at.is_none()));
    // A destination failing longer than the threshold raises its own alert.
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    alerter.check(later).await.expect("check");
    let got = take(&received, secret.trim().as_bytes());
    assert!(
        got.iter().any(|(k, _, a)| k == "destination.failing" && a["details"]["destination"] == PROVINCE),
        "{got:?}"
    );

    // 信用山东 comes back on its address: the relay delivers, the hop's SLA records when.
    let province = start_province(&pki, &province_dir, api, fed);
    let client = reqwest::Client::new();
    testkit::eventually("信用山东 to hold the six records", Duration::from_secs(60), async || {
        testkit::metric(&client, &province.base, "credit_gateway_records_stored").await.is_some_and(|n| n >= 6.0)
    })
    .await;
    testkit::eventually("the city to see the receipts", Duration::from_secs(30), async || {
        let view = credit_gateway::sla::view(&gw.sla, &view_at(date!(2026 - 10 - 16))).await.expect("view");
        view.records.len() == 6 && view.records.iter().all(|r| r.published_at.is_some())
    })
    .await;
    let view = credit_gateway::sla::view(&gw.sla, &view_at(date!(2026 - 10 - 16))).await.expect("view");
    assert!(view.records.iter().all(|r| r.state == SlaState::Breached), "delivered, but after the deadline");
    drop(province);
}
