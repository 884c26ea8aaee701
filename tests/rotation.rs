//! Key and certificate rotation without downtime (#25), between real nodes over mutual TLS:
//! - a member's new signing key, published in the next registry with an overlap window, takes
//!   over on reload; what the old key signed still verifies, by our verifier and the
//!   independent Python one (on SQLite and on PostgreSQL);
//! - a renewed TLS certificate is served after SIGHUP to a `credit-gateway serve` process,
//!   which keeps running and keeps the connections it had open.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use credit_gateway::bench::synthetic_records;
use credit_gateway::config::Config;
use credit_gateway::interchange::{Node, Refresh};
use credit_gateway::pki::{self, KeySwitch, NodeFiles};
use credit_gateway::tls::{self, TlsFiles};
use gateway_core::canonical::Sha256Digest;
use gateway_core::crypto::Alg;
use gateway_core::interchange::evidence::{self, Bundle};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";

/// Pushes `n` records at the district and sends them to the city; returns the ids sent.
async fn push_and_send(district: &Node, city: &Node, city_url: &str, seed: u64) -> Vec<uuid::Uuid> {
    let body = serde_json::to_vec(&synthetic_records(5, seed)).expect("json");
    let answer = district.ingest.push(body.into(), OffsetDateTime::now_utc()).await.expect("push");
    let ids: Vec<uuid::Uuid> = answer.outcomes.iter().filter_map(|o| o.record_id).collect();
    assert_eq!(ids.len(), 5);
    let own = testkit::all_records(&district.ingest.store, 100).await;
    let sending: Vec<_> = own.into_iter().filter(|r| ids.contains(&r.record_id)).collect();
    let receipt = district.send(CITY, city_url, &sending, OffsetDateTime::now_utc()).await.expect("district → city");
    assert!(receipt.outcomes.iter().all(|o| o.status == "accepted"), "{:?}", receipt.outcomes);
    assert_eq!(city.ingest.store.versions(ids[0]).await.expect("read").len(), 1, "stored at the city");
    ids
}

/// The evidence of `record` at the city, verified by both verifiers; returns the key that
/// signed its envelope.
async fn verified_signer(city: &Node, record: uuid::Uuid, pki_dir: &Path, scratch: &Path) -> String {
    let bundle: Bundle = city.export_evidence(record, None).await.expect("export");
    let bytes = serde_json::to_vec(&bundle).expect("json");
    let verified = evidence::verify(&bytes, &testkit::anchor(pki_dir)).unwrap_or_else(|e| panic!("{record}: {e}"));
    assert_eq!(verified.hops.len(), 1);
    let path = scratch.join(format!("{record}.json"));
    std::fs::write(&path, &bytes).expect("write bundle");
    let (code, text) = testkit::python_verify(&path, &pki::anchor_file(pki_dir));
    assert_eq!(code, 0, "the Python verifier refused {record}: {text}");
    bundle.hops[0].envelope.unverified_kid().expect("kid")
}

async fn rotate_signing_key(database: impl Fn() -> Option<String>) {
    let (dir, pki_dir) = testkit::demo_pki(Alg::EdDsa);
    let on = |c: &mut Config| c.database_url = database();
    let district_node = testkit::federation_node(&pki_dir, DISTRICT, &dir.path().join("district"), &[], on).await;
    let city_node = testkit::federation_node(&pki_dir, CITY, &dir.path().join("city"), &[], on).await;
    let (district, city) = (district_node.node(), city_node.node());
    let city_url = format!("https://localhost:{}", city_node.federation_port.expect("port"));
    let old_kid = format!("{DISTRICT}#dev1");

    let before = push_and_send(&district, &city, &city_url, 11).await;
    assert_eq!(verified_signer(&city, before[0], &pki_dir, dir.path()).await, old_kid);

    // The new key signs from now; the old one stays valid a week after.
    let now = OffsetDateTime::now_utc();
    let switch = KeySwitch { at: now, overlap: time::Duration::days(7) };
    let version_1 = std::fs::read(pki::registry_file(&pki_dir)).expect("registry v1");
    let rotated = pki::rotate_key(&pki_dir, DISTRICT, switch, now).expect("rotate");
    assert_eq!(rotated.registry_version, 2);
    // Until a node reloads, nothing changes: the district signs with the key it had.
    let held = district_node.node().identity.signer(now).expect("signer");
    assert_eq!(held.kid, old_kid);
    for node in [&district_node, &city_node] {
        let done = node.reload();
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        assert_eq!(done.registry, Some(Refresh::Updated { from: 1, to: 2 }));
    }
    assert_eq!(district_node.reload().keys, [old_kid.clone(), rotated.kid.clone()]);
    // A registry file older than the one held (a node below the root got a newer one from its
    // parent) is no fault on reload.
    let version_2 = std::fs::read(pki::registry_file(&pki_dir)).expect("registry v2");
    std::fs::write(pki::registry_file(&pki_dir), &version_1).expect("an older file");
    let done = city_node.reload();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(done.registry, Some(Refresh::Unchanged { version: 2 }));
    std::fs::write(pki::registry_file(&pki_dir), version_2).expect("restore");
    let registry = city.identity.registry_now().expect("registry");
    let keys = &registry.member(DISTRICT).expect("member").keys;
    assert_eq!(keys[0].valid_to, gateway_core::interchange::format_time(switch.at + switch.overlap));

    // New envelopes carry the new key, and the city (on the new registry) takes them.
    let after = push_and_send(&district, &city, &city_url, 12).await;
    assert_eq!(verified_signer(&city, after[0], &pki_dir, dir.path()).await, rotated.kid);
    // What the old key signed still verifies, now against registry version 2.
    assert_eq!(verified_signer(&city, before[1], &pki_dir, dir.path()).await, old_kid);

    // A broken renewal (a certificate whose key is not beside it) is refused on reload: the
    // node keeps serving the certificate it had, and says why.
    let files = NodeFiles::new(&pki_dir, CITY);
    let served = std::fs::read(files.tls_cert()).expect("cert");
    std::fs::copy(NodeFiles::new(&pki_dir, DISTRICT).tls_cert(), files.tls_cert()).expect("copy");
    let done = city_node.reload();
    assert!(done.errors.iter().any(|e| e.contains("federation certificate")), "{:?}", done.errors);
    std::fs::write(files.tls_cert(), served).expect("restore");
    let again = push_and_send(&district, &city, &city_url, 13).await;
    assert_eq!(again.len(), 5, "the city still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_takes_over_and_old_evidence_still_verifies_on_sqlite() {
    rotate_signing_key(|| None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_takes_over_and_old_evidence_still_verifies_on_postgres() {
    let (district_db, city_db) = (testkit::new_postgres_database().await, testkit::new_postgres_database().await);
    let urls = std::sync::Mutex::new(vec![city_db.clone(), district_db.clone()]);
    rotate_signing_key(|| urls.lock().expect("lock").pop()).await;
    testkit::drop_postgres_database(&district_db).await;
    testkit::drop_postgres_database(&city_db).await;
}

/// A TLS connection to a node's federation endpoint as 周村区.
async fn connect(pki_dir: &Path, port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let files = NodeFiles::new(pki_dir, DISTRICT);
    let ca = pki::ca_cert(pki_dir);
    let config = tls::client_config(&TlsFiles { ca: &ca, cert: &files.tls_cert(), key: &files.tls_key() })
        .expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("handshake")
}

/// SHA-256 of the certificate a TLS connection was served.
fn served_pin(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let cert = &stream.get_ref().1.peer_certificates().expect("server certificate")[0];
    Sha256Digest::of(cert).to_hex()
}

/// `GET /federation/v1/registry` over an open HTTP/1.1 connection: the registry's version.
async fn registry_version(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> u64 {
    let (status, body) = get_registry(stream).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let jws: gateway_core::jws::Jws = serde_json::from_slice(&body).expect("registry JWS");
    let decoded = jws.decode(gateway_core::interchange::registry::REGISTRY_TYP).expect("registry");
    decoded.body["version"].as_u64().expect("version")
}

/// `GET /federation/v1/registry` over an open HTTP/1.1 connection: status line and body.
async fn get_registry(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> (String, Vec<u8>) {
    stream.write_all(b"GET /federation/v1/registry HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    let mut status = String::new();
    reader.read_line(&mut status).await.expect("status line");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("body");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_sighup_without_dropping_the_node() {
    let (dir, pki_dir) = testkit::demo_pki(Alg::EdDsa);
    let pki_arg = pki_dir.to_str().expect("utf-8");
    let mut node = testkit::Node::start_with(
        &dir.path().join("city"),
        &["--member", CITY, "--pki", pki_arg, "--federation-listen", "127.0.0.1:0"],
    );
    let port: u16 = node.federation.as_deref().and_then(|f| f.rsplit(':').next()?.parse().ok()).expect("port");
    let old_pin = Sha256Digest::of(&pem_der(&NodeFiles::new(&pki_dir, CITY).tls_cert())).to_hex();
    let mut open = connect(&pki_dir, port).await;
    assert_eq!(served_pin(&open), old_pin);
    assert_eq!(registry_version(&mut open).await, 1);

    let out = Command::new(testkit::gateway_bin())
        .args(["certs", "renew-tls", "--member", CITY, "--pki", pki_arg])
        .output()
        .expect("certs renew-tls");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_pin = Sha256Digest::of(&pem_der(&NodeFiles::new(&pki_dir, CITY).tls_cert())).to_hex();
    assert_ne!(new_pin, old_pin);
    let hup = Command::new("kill").args(["-HUP", &node.child.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());

    // New handshakes get the renewed certificate…
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pin = served_pin(&connect(&pki_dir, port).await);
        if pin == new_pin {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still serving {pin} 10 s after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …the process is the same one, and the connection opened before the reload still
    // answers, now with the registry that pins the new certificate.
    assert!(node.child.try_wait().expect("wait").is_none(), "the node exited");
    assert_eq!(registry_version(&mut open).await, 2);
    let fresh = testkit::federation_client(&pki_dir, DISTRICT);
    let resp = fresh.get(format!("https://localhost:{port}/federation/v1/registry")).send().await.expect("link");
    assert_eq!(resp.status(), 200);
    let health = reqwest::get(format!("{}/healthz", node.base)).await.expect("healthz");
    assert_eq!(health.status(), 200);

    // 周村区's certificate renewed and re-pinned: once the city reloads, the connection 周村区
    // opened with its old certificate is refused on its next request, not trusted for its life.
    let out = Command::new(testkit::gateway_bin())
        .args(["certs", "renew-tls", "--member", DISTRICT, "--pki", pki_arg])
        .output()
        .expect("certs renew-tls");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hup = Command::new("kill").args(["-HUP", &node.child.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_registry(&mut open).await;
        if status.starts_with("HTTP/1.1 403") {
            assert!(String::from_utf8_lossy(&body).contains("certificate_not_pinned"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the old certificate still passes: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With its renewed certificate it gets in.
    let renewed = connect(&pki_dir, port).await;
    drop(renewed);
    let fresh = testkit::federation_client(&pki_dir, DISTRICT);
    let resp = fresh.get(format!("https://localhost:{port}/federation/v1/registry")).send().await.expect("link");
    assert_eq!(resp.status(), 200);
}

/// The DER of the first certificate in a PEM file.
fn pem_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_file(path).expect("certificate").to_vec()
}
