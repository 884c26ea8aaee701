//! The measures catalogue at start-up (#24): a node of the demo federation loads the catalogue
//! `certs init` signed and approved; a copy changed by one byte, an unsigned one, or one the
//! registry does not approve stops the start with the reason.

use gateway_core::crypto::Alg;

fn catalogue_config(
    pki: &std::path::Path,
    dir: &std::path::Path,
    catalogue: std::path::PathBuf,
    signature: std::path::PathBuf,
) -> credit_gateway::config::Config {
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut fed = credit_gateway::config::FederationConfig::from_pki(pki, "cn-370300", listen);
    fed.peers.clear();
    credit_gateway::config::Config {
        member_id: "cn-370300".into(),
        federation: Some(fed),
        measures: credit_gateway::config::MeasuresConfig { catalogue: Some(catalogue), signature: Some(signature) },
        ..testkit::config(dir)
    }
}

async fn start_error(config: credit_gateway::config::Config) -> String {
    match credit_gateway::server::start(config, std::future::pending()).await {
        Ok(_) => panic!("the node started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_catalogue_loads_and_a_tampered_one_stops_the_start() {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let shipped = testkit::repo_dir().join("measures/demo.toml");
    let signature = credit_gateway::pki::catalogue_signature_file(&pki, "cn-credit-measures-demo");

    let node = testkit::start(catalogue_config(&pki, &dir.path().join("ok"), shipped.clone(), signature.clone())).await;
    let loaded = node.app.measures.as_ref().expect("the catalogue is loaded");
    assert_eq!(loaded.heading.id, "cn-credit-measures-demo");
    assert_eq!(loaded.measures.len(), 5);

    // One deadline made longer after signing.
    let text = std::fs::read_to_string(&shipped).expect("read").replacen("response_days = 5", "response_days = 6", 1);
    let tampered = dir.path().join("tampered.toml");
    std::fs::write(&tampered, text).expect("write");
    let err = start_error(catalogue_config(&pki, &dir.path().join("t"), tampered.clone(), signature.clone())).await;
    assert!(err.contains("refused") && err.contains("altered after signing"), "{err}");

    let err = start_error(catalogue_config(&pki, &dir.path().join("u"), tampered, dir.path().join("none.sig"))).await;
    assert!(err.contains("unsigned"), "{err}");

    // Signed by the root, but not approved by the registry in force.
    let unapproved = dir.path().join("unapproved.toml");
    let text =
        std::fs::read_to_string(&shipped).expect("read").replace("cn-credit-measures-demo", "cn-credit-measures-other");
    std::fs::write(&unapproved, text).expect("write");
    let root_key = pki.join("root-signing.key.json");
    let sig = credit_gateway::joint::cli::sign(&unapproved, &root_key, None).expect("sign");
    let err = start_error(catalogue_config(&pki, &dir.path().join("n"), unapproved, sig)).await;
    assert!(err.contains("not approved by registry"), "{err}");

    // The conformance check is the same at start-up.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&shipped).expect("read").replacen("kind = \"punish\"", "kind = \"reward\"", 1),
    )
    .expect("write");
    let err = start_error(catalogue_config(&pki, &dir.path().join("b"), broken, signature)).await;
    assert!(err.contains("conformance"), "{err}");
}
