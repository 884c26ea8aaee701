//! Registry refresh from the parent over mutual TLS: a newer root-signed registry is adopted;
//! a rollback, a registry signed by a non-root key, or one expired past its grace is refused and
//! the held registry stays; a node whose registry is past its grace refuses federation traffic.

use std::path::Path;

use credit_gateway::interchange::{Node, Refresh};
use credit_gateway::pki::{self, InitOptions, SigningKeyFile};
use gateway_core::crypto::{Alg, SigningKey};
use gateway_core::interchange::format_time;
use gateway_core::interchange::registry::{REGISTRY_TYP, Registry, RegistryBody};
use gateway_core::jws::{self, Jws};
use time::{Duration, OffsetDateTime};

/// A registry like the held one, with another version and expiry, signed by `key`.
fn variant(node: &Node, version: u64, expires_at: OffsetDateTime, key: &SigningKey, kid: &str) -> Jws {
    let mut body: RegistryBody = node.identity.registry.read().expect("lock").body.clone();
    body.version = version;
    body.expires_at = format_time(expires_at);
    jws::sign(REGISTRY_TYP, kid, &serde_json::to_value(&body).expect("json"), key)
}

/// Makes `node` serve `jws` (verified as of `at`, as an operator would load it).
fn serve(node: &Node, jws: &Jws, at: OffsetDateTime) {
    let roots = node.identity.registry.read().expect("lock").body.roots.clone();
    let (registry, _) = Registry::verify(jws, &roots, None, at, Duration::days(7)).expect("valid when loaded");
    *node.identity.registry.write().expect("lock") = registry;
}

fn root(pki_dir: &Path) -> (SigningKey, String) {
    SigningKeyFile::load(&pki_dir.join("root-signing.key.json")).expect("root key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_adopts_newer_and_refuses_the_rest() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = dir.path().join("pki");
    pki::init(&InitOptions::dev(&pki_dir)).expect("certs init");
    let (city_port, city) = testkit::start_federation_node(&pki_dir, "cn-370300", &dir.path().join("city")).await;
    let (_, district) = testkit::start_federation_node(&pki_dir, "cn-370306", &dir.path().join("district")).await;
    let url = format!("https://localhost:{city_port}");
    let client = testkit::federation_client(&pki_dir, "cn-370306");
    let now = OffsetDateTime::now_utc();
    let version = |n: &Node| n.identity.registry.read().expect("lock").body.version;

    assert_eq!(district.refresh_registry(&url, now).await.expect("refresh"), Refresh::Unchanged { version: 1 });

    let (root_key, root_kid) = root(&pki_dir);
    let v1 = city.identity.registry.read().expect("lock").jws.clone();
    serve(&city, &variant(&city, 2, now + Duration::days(30), &root_key, &root_kid), now);
    assert_eq!(district.refresh_registry(&url, now).await.expect("refresh"), Refresh::Updated { from: 1, to: 2 });

    // Rollback: the parent serves version 1 again.
    serve(&city, &v1, now);
    let err = district.refresh_registry(&url, now).await.unwrap_err();
    assert!(err.to_string().contains("rollback"), "{err}");
    assert_eq!(version(&district), 2);

    // Signed by a key that is not a federation root (here: a member's signing key, under the root's kid).
    let member_key = SigningKey::from_secret(Alg::EdDsa, &[42; 32]).expect("key");
    let forged = variant(&city, 3, now + Duration::days(30), &member_key, &root_kid);
    let held = city.identity.registry.read().expect("lock").clone();
    *city.identity.registry.write().expect("lock") = Registry { jws: forged, ..held };
    let err = district.refresh_registry(&url, now).await.unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert_eq!(version(&district), 2);

    // A parent holding a registry that expired ten days ago (grace: seven) refuses federation
    // traffic itself, so the district keeps what it has. (A child refusing such a registry on
    // its own is covered in the core's registry tests.)
    let stale = variant(&city, 4, now - Duration::days(10), &root_key, &root_kid);
    serve(&city, &stale, now - Duration::days(11));
    let err = district.refresh_registry(&url, now).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(version(&district), 2);
    let resp = client.get(format!("{url}/federation/v1/registry")).send().await.expect("TLS ok");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.json::<serde_json::Value>().await.expect("body")["error"]["code"], "registry_expired");
}

/// Reads one gauge from `GET /metrics` of the node's department API.
async fn gauge(node: &testkit::Running, name: &str) -> f64 {
    use tower::ServiceExt;
    let req = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).expect("request");
    let resp = credit_gateway::api::router(node.app.clone()).oneshot(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
    line[name.len() + 1..].parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_registry_shows_in_the_metrics_through_and_after_its_grace() {
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = dir.path().join("pki");
    pki::init(&InitOptions::dev(&pki_dir)).expect("certs init");
    let running = testkit::federation_node(&pki_dir, "cn-370300", &dir.path().join("city"), &[], |_| {}).await;
    let (city_port, city) = (running.federation_port.expect("port"), running.node());
    let url = format!("https://localhost:{city_port}/federation/v1/registry");
    let client = testkit::federation_client(&pki_dir, "cn-370306");
    let now = OffsetDateTime::now_utc();
    assert_eq!(gauge(&running, "credit_gateway_registry_version").await, 1.0);
    assert_eq!(gauge(&running, "credit_gateway_registry_expired").await, 0.0);
    assert!(gauge(&running, "credit_gateway_registry_seconds_to_expiry").await > 0.0);

    // Expired two days ago, grace seven: still serving, and the metric says so.
    let (root_key, root_kid) = root(&pki_dir);
    serve(&city, &variant(&city, 2, now - Duration::days(2), &root_key, &root_kid), now - Duration::days(3));
    assert_eq!(client.get(&url).send().await.expect("TLS ok").status(), 200);
    assert_eq!(gauge(&running, "credit_gateway_registry_expired").await, 1.0);
    assert_eq!(gauge(&running, "credit_gateway_federation_refusing").await, 0.0);
    assert!(gauge(&running, "credit_gateway_registry_seconds_to_expiry").await < -86_400.0);

    // Ten days ago: past the grace, traffic refused, and the metric says that too.
    serve(&city, &variant(&city, 3, now - Duration::days(10), &root_key, &root_kid), now - Duration::days(11));
    assert_eq!(client.get(&url).send().await.expect("TLS ok").status(), 503);
    assert_eq!(gauge(&running, "credit_gateway_federation_refusing").await, 1.0);
}

/// A node stops promptly while its registry refresh waits on a parent that accepted the
/// connection and never answers (the refresh is aborted, not awaited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_while_a_refresh_hangs_on_its_parent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    credit_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = dir.path().join("pki");
    pki::init(&InitOptions::dev(&pki_dir)).expect("certs init");
    let parent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let parent_port = parent.local_addr().expect("addr").port();
    let reached = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&reached);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = parent.accept().await {
            seen.store(true, Ordering::SeqCst);
            held.push(socket); // open, and never a byte back
        }
    });
    let mut fed =
        credit_gateway::config::FederationConfig::from_pki(&pki_dir, "cn-370306", "127.0.0.1:0".parse().expect("addr"));
    fed.peers = [("cn-370300".to_owned(), format!("https://localhost:{parent_port}"))].into();
    fed.registry_refresh_secs = 1;
    let config = credit_gateway::config::Config {
        member_id: "cn-370306".into(),
        federation: Some(fed),
        ..testkit::config(&dir.path().join("district"))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = credit_gateway::server::start(config, async {
        let _ = stopped.await;
    })
    .await
    .expect("starts");
    testkit::eventually("a refresh hanging on the parent", std::time::Duration::from_secs(30), async || {
        reached.load(Ordering::SeqCst)
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), node.stopped())
        .await
        .expect("the node stops within 10 s")
        .expect("and stops cleanly");
}
