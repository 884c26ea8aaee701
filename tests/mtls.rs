//! `certs init`, then nodes talking over real mutual TLS on loopback: a pinned member gets in;
//! a certificate from another CA fails the handshake; a CA-valid certificate that is not pinned
//! in the registry is refused with 403.

use credit_gateway::pki::{self, InitOptions, NodeFiles};
use credit_gateway::tls::{self, TlsFiles};
use gateway_core::interchange::registry::{Registry, RootKey};
use gateway_core::jws::Jws;
use rcgen::{Issuer, KeyPair};
use std::path::Path;
use std::process::Command;
use time::{Duration, OffsetDateTime};

fn load_registry(dir: &Path) -> Registry {
    let jws: Jws = serde_json::from_slice(&std::fs::read(pki::registry_file(dir)).expect("registry")).expect("json");
    let anchor: Vec<RootKey> =
        serde_json::from_slice(&std::fs::read(pki::anchor_file(dir)).expect("anchor")).expect("json");
    Registry::verify(&jws, &anchor, None, OffsetDateTime::now_utc(), Duration::days(7)).expect("registry verifies").0
}

/// Starts the federation endpoint of `member` and returns its port.
async fn start_node(dir: &Path, member: &str) -> u16 {
    testkit::start_federation_node(dir, member, &dir.join(format!("data-{member}"))).await.0
}

fn client(ca: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    let config = tls::client_config(&TlsFiles { ca, cert, key }).expect("client tls");
    reqwest::Client::builder().tls_backend_preconfigured(config).build().expect("client")
}

#[tokio::test]
async fn only_pinned_members_get_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki::init(&InitOptions::dev(dir.path())).expect("certs init");
    assert!(pki::init(&InitOptions::dev(dir.path())).is_err());
    let port = start_node(dir.path(), "cn-370300").await;
    let url = format!("https://localhost:{port}/federation/v1/registry");
    let ca = pki::ca_cert(dir.path());

    // 周村区, pinned in the registry: a working link.
    let district = NodeFiles::new(dir.path(), "cn-370306");
    let resp = client(&ca, &district.tls_cert(), &district.tls_key()).get(&url).send().await.expect("mTLS link");
    assert_eq!(resp.status(), 200);
    let served: Jws = resp.json().await.expect("registry JWS");
    assert_eq!(served, load_registry(dir.path()).jws);

    // A certificate from another CA: the handshake itself fails.
    let (intruder_ca, _, _) = pki::new_ca("Some other CA").expect("ca");
    let (cert_pem, key_pem, _) = pki::issue_tls_cert(&intruder_ca, "cn-370306").expect("cert");
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("c.pem"), cert_pem).expect("write");
    std::fs::write(other.path().join("k.pem"), key_pem).expect("write");
    let err = client(&ca, &other.path().join("c.pem"), &other.path().join("k.pem")).get(&url).send().await;
    assert!(err.is_err(), "a certificate from another CA connected: {err:?}");

    // The right CA, the right member name, but not the pinned certificate.
    let ca_der = rustls::pki_types::CertificateDer::from(pem_der(&std::fs::read_to_string(&ca).expect("ca pem")));
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("ca.key.pem")).expect("ca key")).expect("key");
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).expect("issuer");
    let (cert_pem, key_pem, _) = pki::issue_tls_cert(&issuer, "cn-370306").expect("cert");
    std::fs::write(other.path().join("c2.pem"), cert_pem).expect("write");
    std::fs::write(other.path().join("k2.pem"), key_pem).expect("write");
    let resp =
        client(&ca, &other.path().join("c2.pem"), &other.path().join("k2.pem")).get(&url).send().await.expect("TLS ok");
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "certificate_not_pinned");
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem").to_vec()
}

/// Real processes: `certs init`, a city node started from the PKI, and the district checking
/// its link with `credit-gateway federation check`; a member not in the PKI cannot.
#[test]
fn certs_init_then_two_processes_link_over_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let bin = &testkit::gateway_bin();
    let out = Command::new(bin).args(["certs", "init", "--out"]).arg(&pki).output().expect("certs init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in
        ["ca.pem", "anchor.json", "registry.jws.json", "nodes/cn-370306/tls.pem", "nodes/cn-370500/signing.key.json"]
    {
        assert!(pki.join(file).exists(), "{file} missing");
    }

    let pki_arg = pki.to_str().expect("utf-8 path");
    let city = testkit::Node::start_with(
        &dir.path().join("city"),
        &["--member", "cn-370300", "--pki", pki_arg, "--federation-listen", "127.0.0.1:0"],
    );
    let url = city.federation.clone().expect("federation endpoint").replace("127.0.0.1", "localhost");
    let check = |member: &str| {
        Command::new(bin)
            .args(["federation", "check", "--member", member, "--url", &url, "--pki", pki_arg])
            .output()
            .expect("run")
    };
    let ok = check("cn-370306");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("registry version 1 verified"));

    // A fresh PKI's district: same name, other CA. The handshake fails.
    let other = dir.path().join("other-pki");
    assert!(Command::new(bin).args(["certs", "init", "--out"]).arg(&other).status().expect("init").success());
    let foreign = Command::new(bin)
        .args(["federation", "check", "--member", "cn-370306", "--url", &url, "--pki"])
        .arg(&other)
        .output()
        .expect("run");
    assert!(!foreign.status.success());
    assert!(
        String::from_utf8_lossy(&foreign.stderr).contains("mutual TLS connection"),
        "{}",
        String::from_utf8_lossy(&foreign.stderr)
    );
}
