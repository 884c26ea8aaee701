//! A receiver that times out, closes the connection in the middle of its answer, or answers
//! 500 (its database is locked): the sender retries and nothing is stored twice. A record the
//! parent refuses is dead-lettered with the reason, later versions of it wait behind it, and
//! an operator's resend delivers them in order once the cause is fixed.
//!
//! Real nodes over mutual TLS; faults come from a TCP proxy between them (`testkit::proxy`) and
//! from a real lock on the receiver's SQLite database.

use std::sync::Arc;
use std::time::Duration;

use credit_gateway::bench::synthetic_records;
use credit_gateway::config::RelayConfig;
use credit_gateway::interchange::Node;
use credit_gateway::relay::Relay;
use gateway_core::crypto::Alg;
use serde_json::{Value, json};
use sqlx::Connection;
use testkit::proxy::{Fault, FaultProxy};
use time::OffsetDateTime;
use tower::ServiceExt;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";

fn relay_config(timeout_secs: u64) -> RelayConfig {
    RelayConfig { linger_ms: 5, backoff_base_ms: 20, backoff_max_ms: 200, timeout_secs, ..RelayConfig::default() }
}

/// The district's relay sending to the city through `proxy` (started and stopped by the tests,
/// with the district's destinations and status board).
fn district_relay(district: &testkit::Running, proxy: &FaultProxy, timeout_secs: u64) -> Relay {
    Relay::start(through(district, proxy), &district.app.relay, relay_config(timeout_secs))
}

/// The district's interchange side, reaching the city through `proxy`.
fn through(district: &testkit::Running, proxy: &FaultProxy) -> Node {
    let mut node = district.node();
    node.identity.peers = Arc::new([(CITY.to_owned(), format!("https://localhost:{}", proxy.port))].into());
    node
}

async fn push(node: &Node, records: &[Value]) -> Value {
    let body = serde_json::to_vec(records).expect("json");
    serde_json::to_value(node.ingest.push(body.into(), OffsetDateTime::now_utc()).await.expect("push")).expect("json")
}

async fn count(node: &Node) -> i64 {
    node.ingest.store.count().await.expect("count")
}

/// Whether everything the district stored is settled for the city.
async fn settled(district: &Node) -> bool {
    let store = &district.ingest.store;
    store.outbox_position(CITY).await.expect("cursor") == store.last_seq().await.expect("last")
}

fn failing_with(district: &testkit::Running, needle: &str) -> bool {
    district
        .app
        .relay
        .status
        .snapshot()
        .get(CITY)
        .is_some_and(|s| s.consecutive_failures > 0 && s.last_error.as_deref().is_some_and(|e| e.contains(needle)))
}

/// The receiver's outcome for every hop of every record the district holds, from its trail.
async fn statuses(district: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for r in testkit::all_records(&district.ingest.store, 1000).await {
        let trail = district.ingest.store.trail(r.record_id).await.expect("trail").expect("held");
        out.extend(trail.versions.iter().flat_map(|v| v.forwarded.iter().map(|h| h.status.clone())));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_failures_are_retried_without_duplicates() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (city_port, city) = testkit::start_federation_node(&pki, CITY, &dir.path().join("city")).await;
    let running = testkit::federation_node(&pki, DISTRICT, &dir.path().join("district"), &[], |_| {}).await;
    let district = running.node();
    let proxy = FaultProxy::start(city_port).await.expect("fault proxy");
    let deadline = Duration::from_secs(60);

    // Timeouts: the city stores the records, but its answers never arrive.
    let relay = district_relay(&running, &proxy, 1);
    proxy.set(Fault::SwallowResponses);
    let batch = synthetic_records(50, 1);
    assert_eq!(push(&district, &batch).await["accepted"], 50);
    testkit::eventually("a timed-out delivery", deadline, async || failing_with(&running, "timed out")).await;
    assert_eq!(count(&city).await, 50, "the receiver stored the first attempt");
    proxy.set(Fault::None);
    testkit::eventually("the retry to settle", deadline, async || settled(&district).await).await;
    assert_eq!(count(&city).await, 50, "the retry stored nothing twice");
    assert!(statuses(&district).await.iter().all(|s| s == "duplicate"), "the retry's receipt says duplicate");

    // The connection closes in the middle of the answer.
    proxy.set(Fault::CutResponses);
    assert_eq!(push(&district, &synthetic_records(50, 2)).await["accepted"], 50);
    testkit::eventually("a cut delivery", deadline, async || {
        running.app.relay.status.snapshot().get(CITY).is_some_and(|s| s.consecutive_failures > 0)
    })
    .await;
    proxy.set(Fault::None);
    testkit::eventually("the retry to settle", deadline, async || settled(&district).await).await;
    assert_eq!(count(&city).await, 100);
    relay.stop().await;

    // 500: the city's database is locked by another writer; its store gives up after its busy
    // timeout and the city answers 500. The sender waits longer than that for an answer.
    let relay = district_relay(&running, &proxy, 60);
    let url = format!("sqlite://{}", dir.path().join("city/gateway.sqlite").display());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.expect("open city database");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut lock).await.expect("lock");
    assert_eq!(push(&district, &synthetic_records(50, 3)).await["accepted"], 50);
    testkit::eventually("a 500 from the city", deadline, async || failing_with(&running, "500")).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.expect("unlock");
    testkit::eventually("the retry to settle", deadline, async || settled(&district).await).await;
    assert_eq!(count(&city).await, 150);
    assert!(district.ingest.store.dead_letters(None, 10).await.expect("dead letters").is_empty());
    relay.stop().await;
}

/// A penalty whose authority USCC fails the check character: a genuine pre-2015 pilot code
/// the district allows, which the city does not (yet).
fn pilot_code_record() -> (Value, String) {
    let path = testkit::repo_dir().join("schemas/admin_penalty/invalid/authority_uscc_bad_check_char.json");
    let wrapper: Value = serde_json::from_slice(&std::fs::read(path).expect("example")).expect("json");
    let record = wrapper["record"].clone();
    let code = record["penalizing_authority_uscc"].as_str().expect("uscc").to_owned();
    (record, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_record_is_dead_lettered_and_resent_once_fixed() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (record, code) = pilot_code_record();
    let allow = |c: &mut credit_gateway::config::Config| c.validation.uscc_allow_list = vec![code.clone()];
    let city_dir = dir.path().join("city");
    let (strict_port, city) = testkit::start_federation_node(&pki, CITY, &city_dir).await;
    let running = testkit::federation_node(&pki, DISTRICT, &dir.path().join("district"), &[], allow).await;
    let district = running.node();
    let proxy = FaultProxy::start(strict_port).await.expect("fault proxy");
    let _relay = district_relay(&running, &proxy, 10);
    let deadline = Duration::from_secs(60);

    let mut batch = synthetic_records(10, 5);
    batch.push(record.clone());
    assert_eq!(push(&district, &batch).await["accepted"], 11);
    testkit::eventually("the refusal in the dead letters", deadline, async || {
        !district.ingest.store.dead_letters(Some(CITY), 10).await.expect("dead letters").is_empty()
    })
    .await;
    testkit::eventually("the good records at the city", deadline, async || count(&city).await == 10).await;
    let letters = district.ingest.store.dead_letters(Some(CITY), 10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = &letters[0].reason;
    assert_eq!(reason["code"], "rejected", "{reason}");
    // The hop's SLA counts the ten the city took as delivered, never the one it refused.
    let today = gateway_core::date::today_in_china(OffsetDateTime::now_utc());
    let q = credit_gateway::sla::SlaQuery {
        since: Some(time::macros::date!(2020 - 01 - 01)),
        ..credit_gateway::sla::SlaQuery::new(CITY, today)
    };
    let view = credit_gateway::sla::view(&running.app.sla, &q).await.expect("view");
    let refused = view.records.iter().find(|r| r.record_id == letters[0].record_id).expect("listed");
    assert_eq!(refused.published_at, None, "refused, so not delivered");
    assert_eq!(view.records.iter().filter(|r| r.published_at.is_some()).count(), 10);
    assert!(
        reason["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["rule"] == "uscc.check_char" && e["pointer"] == "/content/penalizing_authority_uscc"),
        "the receiver's reason is kept: {reason}"
    );
    let record_id: uuid::Uuid = letters[0].record_id.parse().expect("uuid");

    // A correction of the refused record waits behind it: it must not arrive first.
    let mut corrected = record.clone();
    corrected["penalty_content"] = json!("没收违法所得48元；罚款4万元。");
    corrected["fine_amount_wan"] = json!("4");
    assert_eq!(push(&district, &[corrected]).await["new_version"], 1);
    testkit::eventually("the correction held", deadline, async || {
        district.ingest.store.dead_letters(Some(CITY), 10).await.expect("dead letters").len() == 2
    })
    .await;
    let letters = district.ingest.store.dead_letters(Some(CITY), 10).await.expect("dead letters");
    assert!(letters.iter().any(|l| l.version == 2 && l.reason["code"] == "held_behind_dead_letter"), "{letters:?}");
    assert_eq!(count(&city).await, 10);

    // The cause is fixed: the city now allows the pilot code (restarted with it). An operator
    // resends through the API; both versions arrive, in order.
    let (fixed_port, _fixed_city) = testkit::start_federation_node_with(&pki, CITY, &city_dir, &[], allow).await;
    proxy.redirect(fixed_port);
    let api = credit_gateway::api::router(running.app.clone());
    let request = axum::http::Request::post("/api/v1/dead-letters/resend")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({"destination": CITY}).to_string()))
        .expect("request");
    let answer = api.oneshot(request).await.expect("resend");
    assert_eq!(answer.status(), 200);
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(answer.into_body(), 1 << 20).await.expect("body")).expect("json");
    assert_eq!(body["queued"], 2, "{body}");
    testkit::eventually("both versions at the city", deadline, async || count(&city).await == 12).await;
    let versions = city.ingest.store.versions(record_id).await.expect("versions");
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert!(versions[0].seq < versions[1].seq, "version 1 arrived first");
    testkit::eventually("the letters marked resent", deadline, async || {
        let letters = district.ingest.store.dead_letters(Some(CITY), 10).await.expect("dead letters");
        letters.iter().all(|l| l.state == "resent")
    })
    .await;
}

/// A destination down for three (simulated) days: the relay backs off up to its one-hour cap
/// on a hand-moved clock, the records wait on disk, and when the city is back everything
/// arrives, in the order the district stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destination_down_for_days_gets_everything_in_order_when_it_returns() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let (city_port, city) = testkit::start_federation_node(&pki, CITY, &dir.path().join("city")).await;
    let running = testkit::federation_node(&pki, DISTRICT, &dir.path().join("district"), &[], |_| {}).await;
    let district = running.node();
    let proxy = FaultProxy::start(city_port).await.expect("fault proxy");
    proxy.set(Fault::Down);
    let clock = credit_gateway::relay::clock::ManualClock::default();
    let node = through(&running, &proxy);
    let config = RelayConfig {
        backoff_base_ms: 1_000,
        backoff_max_ms: 3_600_000,
        batch_max: 500,
        linger_ms: 5,
        ..RelayConfig::default()
    };
    let _relay = Relay::start_with_clock(node, &running.app.relay, config, Arc::new(clock.clone()));
    let deadline = Duration::from_secs(60);
    let failures = || running.app.relay.status.snapshot().get(CITY).map_or(0, |s| s.consecutive_failures);

    // Twelve steps of six hours; a day's worth of records arrives every four steps.
    let mut pushed = 0;
    for step in 0..12 {
        if step % 4 == 0 {
            let batch = synthetic_records(1_000, 100 + step);
            assert_eq!(push(&district, &batch).await["accepted"], 1_000);
            pushed += 1_000;
        }
        testkit::eventually("the sender backing off", deadline, async || clock.sleepers() == 1).await;
        let before = failures();
        clock.advance(Duration::from_secs(6 * 3600));
        testkit::eventually("another failed attempt", deadline, async || failures() > before).await;
    }
    assert_eq!(clock.elapsed(), Duration::from_secs(72 * 3600));
    assert!(failures() >= 12, "one attempt at least every six hours: {}", failures());
    // Everything still waits on disk, nothing was given up.
    assert_eq!(district.ingest.store.outbox_position(CITY).await.expect("cursor"), 0);
    assert_eq!(count(&district).await, pushed);
    assert!(district.ingest.store.dead_letters(None, 10).await.expect("dead letters").is_empty());
    assert_eq!(count(&city).await, 0);

    // The city is back: the next retry delivers everything, in order.
    proxy.set(Fault::None);
    testkit::eventually("the sender backing off", deadline, async || clock.sleepers() == 1).await;
    clock.advance(Duration::from_secs(3600));
    testkit::eventually("the backlog delivered", deadline, async || settled(&district).await).await;
    assert_eq!(count(&city).await, pushed);
    let order =
        |records: Vec<gateway_store::StoredRecord>| records.into_iter().map(|r| r.record_id).collect::<Vec<_>>();
    assert_eq!(
        order(testkit::all_records(&city.ingest.store, 1000).await),
        order(testkit::all_records(&district.ingest.store, 1000).await),
        "the city stored the records in the district's order"
    );
}
