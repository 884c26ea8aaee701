//! `credit-gateway certs init`: a development federation PKI and registry.
//!
//! Writes, under one directory (default `certs/dev/`, git-ignored): the federation TLS CA, the
//! federation root signing key and its public anchor, and for each node of the demo federation
//! (周村区 → 信用淄博 → 信用山东 → 信用中国, plus 信用东营 as 淄博's partner) a TLS certificate
//! naming its member id, a signing key, and the root-signed registry listing them all.
//! Production differs: keys are made on the node, certificates come from the federation's CA
//! process, and the registry from the federation operator (see `certs/README.md`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gateway_core::canonical::Sha256Digest;
use gateway_core::crypto::{Alg, SigningKey};
use gateway_core::interchange::evaluation::{AgreementBody, Band, SchemeMapping, SignedAgreement};
use gateway_core::interchange::format_time;
use gateway_core::interchange::registry::{
    AdapterEntry, Level, Member, MemberKey, REGISTRY_TYP, RegistryBody, RootKey,
};
use gateway_core::jws::{self, b64u};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

mod rotation;

pub use rotation::{KeySwitch, Rotated, renew_tls, rotate_key};

/// One node of the demo federation.
#[derive(Debug, Clone, Copy)]
pub struct DemoNode {
    pub member_id: &'static str,
    pub name: &'static str,
    pub level: Level,
    pub parent: Option<&'static str>,
    pub partners: &'static [&'static str],
    /// Federation (mTLS) port on 127.0.0.1.
    pub port: u16,
    /// Whether `credit-gateway demo` runs it (the others are registered so that every
    /// platform adapter has its gateway in the dev registry).
    pub in_demo: bool,
}

pub const DEMO_FEDERATION: &[DemoNode] = &[
    DemoNode {
        member_id: "cn-370306",
        name: "淄博市周村区公共信用信息平台",
        level: Level::District,
        parent: Some("cn-370300"),
        partners: &[],
        port: 8441,
        in_demo: true,
    },
    DemoNode {
        member_id: "cn-370300",
        name: "信用淄博",
        level: Level::Municipal,
        parent: Some("cn-370000"),
        partners: &["cn-370500"],
        port: 8442,
        in_demo: true,
    },
    DemoNode {
        member_id: "cn-370000",
        name: "信用山东",
        level: Level::Provincial,
        parent: Some("cn-000000"),
        partners: &[],
        port: 8443,
        in_demo: true,
    },
    DemoNode {
        member_id: "cn-000000",
        name: "信用中国",
        level: Level::National,
        parent: None,
        partners: &[],
        port: 8444,
        in_demo: true,
    },
    DemoNode {
        member_id: "cn-370500",
        name: "信用东营",
        level: Level::Municipal,
        parent: Some("cn-370000"),
        partners: &["cn-370300"],
        port: 8445,
        in_demo: true,
    },
    DemoNode {
        member_id: "cn-410000",
        name: "信用河南",
        level: Level::Provincial,
        parent: Some("cn-000000"),
        partners: &[],
        port: 8446,
        in_demo: false,
    },
    DemoNode {
        member_id: "cn-410900",
        name: "信用濮阳",
        level: Level::Municipal,
        parent: Some("cn-410000"),
        partners: &[],
        port: 8447,
        in_demo: false,
    },
    DemoNode {
        member_id: "cn-410100",
        name: "信用郑州",
        level: Level::Municipal,
        parent: Some("cn-410000"),
        partners: &[],
        port: 8448,
        in_demo: false,
    },
    DemoNode {
        member_id: "cn-410102",
        name: "郑州市中原区公共信用信息平台",
        level: Level::District,
        parent: Some("cn-410100"),
        partners: &[],
        port: 8449,
        in_demo: false,
    },
    DemoNode {
        member_id: "cn-370502",
        name: "东营市东营区公共信用信息平台",
        level: Level::District,
        parent: Some("cn-370500"),
        partners: &[],
        port: 8450,
        in_demo: false,
    },
    DemoNode {
        member_id: "cn-210000",
        name: "信用辽宁",
        level: Level::Provincial,
        parent: Some("cn-000000"),
        partners: &[],
        port: 8451,
        in_demo: false,
    },
    DemoNode {
        member_id: "cn-210800",
        name: "信用营口",
        level: Level::Municipal,
        parent: Some("cn-210000"),
        partners: &[],
        port: 8452,
        in_demo: false,
    },
];

/// The federation address of a demo node (127.0.0.1 and its port).
pub fn demo_listen(member: &str) -> Option<std::net::SocketAddr> {
    DEMO_FEDERATION.iter().find(|n| n.member_id == member).map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n.port)))
}

/// A signing key on disk (secret: keep it 0600, never commit it).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyFile {
    pub alg: String,
    pub kid: String,
    /// The 32 secret bytes, hex.
    pub secret: String,
}

impl SigningKeyFile {
    pub fn load(path: &Path) -> anyhow::Result<(SigningKey, String)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: SigningKeyFile = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(&file.secret, &mut secret).context("secret must be 64 hex characters")?;
        Ok((SigningKey::from_secret(file.alg.parse()?, &secret)?, file.kid))
    }
}

/// Paths of one node's files inside the PKI directory.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub dir: PathBuf,
}

impl NodeFiles {
    pub fn new(pki_dir: &Path, member_id: &str) -> Self {
        Self { dir: pki_dir.join("nodes").join(member_id) }
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join("tls.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.dir.join("tls.key.pem")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join("signing.key.json")
    }
}

pub fn ca_cert(pki_dir: &Path) -> PathBuf {
    pki_dir.join("ca.pem")
}
pub fn registry_file(pki_dir: &Path) -> PathBuf {
    pki_dir.join("registry.jws.json")
}
pub fn anchor_file(pki_dir: &Path) -> PathBuf {
    pki_dir.join("anchor.json")
}

/// Options of `certs init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitOptions {
    /// Where to write the PKI.
    #[arg(long, default_value = "certs/dev")]
    pub out: PathBuf,
    /// Replace an existing PKI.
    #[arg(long)]
    pub force: bool,
    /// Signature suite of the node signing keys: EdDSA or SM2SM3.
    #[arg(long, default_value = "EdDSA")]
    pub alg: String,
    /// Adapter manifests to sign with the dev root and approve in the dev registry: every
    /// `<dir>/<platform>/manifest.toml` (signatures go to `<out>/adapters/<platform>.sig`).
    #[arg(long, default_value = "adapters")]
    pub adapters: PathBuf,
    /// Measures catalogues to sign with the dev root and approve in the dev registry: every
    /// `<dir>/*.toml` (signatures go to `<out>/measures/<catalogue id>.sig`).
    #[arg(long, default_value = "measures")]
    pub measures: PathBuf,
}

impl InitOptions {
    /// A fresh Ed25519 dev PKI in `out`, approving the manifests under `adapters/`.
    pub fn dev(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            force: false,
            alg: "EdDSA".into(),
            adapters: PathBuf::from("adapters"),
            measures: PathBuf::from("measures"),
        }
    }
}

/// The signature file `certs init` writes for a measures catalogue.
pub fn catalogue_signature_file(pki_dir: &Path, catalogue_id: &str) -> PathBuf {
    pki_dir.join("measures").join(format!("{catalogue_id}.sig"))
}

/// Signs every catalogue under `dir` as the root; returns the registry's approvals.
fn sign_catalogues(
    dir: &Path,
    out: &Path,
    root: &SigningKey,
    root_kid: &str,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<gateway_core::interchange::registry::MeasuresEntry>> {
    let mut approved = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(approved) };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    std::fs::create_dir_all(out.join("measures"))?;
    for file in files {
        let bytes = std::fs::read(&file)?;
        let catalogue = gateway_core::measures::Catalogue::parse(&bytes).with_context(|| file.display().to_string())?;
        let sig = gateway_core::measures::sign(&catalogue, &format_time(now), root_kid, root);
        std::fs::write(catalogue_signature_file(out, &catalogue.heading.id), serde_json::to_string_pretty(&sig)?)?;
        approved.push(gateway_core::interchange::registry::MeasuresEntry {
            catalogue: catalogue.heading.id.clone(),
            catalogue_sha256: catalogue.sha256.to_hex(),
        });
    }
    Ok(approved)
}

/// The signature file `certs init` writes for a platform's manifest.
pub fn adapter_signature_file(pki_dir: &Path, platform: &str) -> PathBuf {
    pki_dir.join("adapters").join(format!("{platform}.sig"))
}

/// Signs every manifest under `dir` as the root; returns the registry's approvals.
fn sign_adapters(
    dir: &Path,
    out: &Path,
    root: &SigningKey,
    root_kid: &str,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<AdapterEntry>> {
    let mut approved = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(approved) };
    let mut manifests: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path().join("manifest.toml"))).filter(|p| p.is_file()).collect();
    manifests.sort();
    std::fs::create_dir_all(out.join("adapters"))?;
    for manifest in manifests {
        let adapter = crate::adapters::compile(&manifest)?;
        let text = std::fs::read(&manifest)?;
        let sig = gateway_core::adapter::sign_manifest(&text, adapter.id(), &format_time(now), root_kid, root);
        std::fs::write(adapter_signature_file(out, adapter.id()), serde_json::to_string_pretty(&sig)?)?;
        approved.push(AdapterEntry { platform: adapter.id().into(), manifest_sha256: adapter.sha256.to_hex() });
    }
    Ok(approved)
}

pub(crate) fn random_secret(rng: &SystemRandom) -> anyhow::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).map_err(|_| anyhow::anyhow!("system randomness unavailable"))?;
    Ok(secret)
}

pub(crate) fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    // A new file, so it is 0600 from its creation whatever an earlier one was.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("replacing {}", path.display()));
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // Created 0600: the secret is never readable by others, not even for a moment.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// How long a node's TLS certificate is valid: about a year, as a production CA issues them,
/// so that renewal and the expiry alert are exercised (`certs status` shows what is left).
const TLS_CERT_DAYS: i64 = 365;
/// How long the dev CA is valid.
const CA_CERT_DAYS: i64 = 5 * 365;

/// Valid from a day ago (clocks differ a little) for `days`.
fn valid_for(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days);
}

/// The `notAfter` of the first certificate in a PEM file (`None` if it cannot be read).
pub fn certificate_expiry(path: &Path) -> Option<OffsetDateTime> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// One certificate of a PKI directory and the days it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// `ca`, or the member id whose TLS certificate it is.
    pub name: String,
    pub path: PathBuf,
    /// `None` when the file cannot be read as a certificate.
    pub not_after: Option<OffsetDateTime>,
}

impl CertStatus {
    pub fn days_left(&self, now: OffsetDateTime) -> Option<i64> {
        self.not_after.map(|t| (t - now).whole_days())
    }
}

/// The CA and every node's TLS certificate under `pki_dir` (`certs status`), the CA first,
/// then the members in order.
pub fn cert_status(pki_dir: &Path) -> anyhow::Result<Vec<CertStatus>> {
    let status = |name: String, path: PathBuf| CertStatus { name, not_after: certificate_expiry(&path), path };
    let mut out = vec![status("ca".into(), ca_cert(pki_dir))];
    let nodes = pki_dir.join("nodes");
    let mut members: Vec<String> = std::fs::read_dir(&nodes)
        .with_context(|| format!("reading {} (run `credit-gateway certs init` first)", nodes.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    members.sort();
    for member in members {
        let path = NodeFiles::new(pki_dir, &member).tls_cert();
        out.push(status(member, path));
    }
    Ok(out)
}

/// Issues a TLS certificate for `member_id` from the CA: CN and a URI SAN carry the member id;
/// `localhost` and 127.0.0.1 are its names on a dev machine.
pub fn issue_tls_cert(issuer: &Issuer<'_, KeyPair>, member_id: &str) -> anyhow::Result<(String, String, Vec<u8>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.subject_alt_names.push(SanType::URI(format!("urn:credit-gateway:member:{member_id}").try_into()?));
    params.distinguished_name.push(DnType::CommonName, member_id);
    params.distinguished_name.push(DnType::OrganizationName, "Credit Gateway dev federation");
    valid_for(&mut params, TLS_CERT_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

/// Makes a CA: returns its issuer, certificate PEM and key PEM.
pub fn new_ca(name: &str) -> anyhow::Result<(Issuer<'static, KeyPair>, String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    valid_for(&mut params, CA_CERT_DAYS);
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    Ok((Issuer::new(params, key), cert.pem(), key_pem))
}

/// Runs `certs init`.
pub fn init(opts: &InitOptions) -> anyhow::Result<()> {
    let out = &opts.out;
    if registry_file(out).exists() && !opts.force {
        bail!("{} already holds a PKI; pass --force to replace it", out.display());
    }
    let alg: Alg = opts.alg.parse()?;
    std::fs::create_dir_all(out)?;
    let rng = SystemRandom::new();
    let now = OffsetDateTime::now_utc();

    let (issuer, ca_pem, ca_key_pem) = new_ca("Credit Gateway dev federation CA")?;
    std::fs::write(ca_cert(out), ca_pem)?;
    write_secret(&out.join("ca.key.pem"), &ca_key_pem)?;

    let root_secret = random_secret(&rng)?;
    let root = SigningKey::from_secret(Alg::EdDsa, &root_secret)?;
    let root_kid = "root#dev";
    write_secret(
        &out.join("root-signing.key.json"),
        &serde_json::to_string_pretty(&SigningKeyFile {
            alg: "EdDSA".into(),
            kid: root_kid.into(),
            secret: hex::encode(root_secret),
        })?,
    )?;
    let anchor =
        vec![RootKey { kid: root_kid.into(), alg: "EdDSA".into(), public_key: b64u(&root.public_key().bytes) }];
    std::fs::write(anchor_file(out), serde_json::to_string_pretty(&anchor)?)?;

    let mut members = Vec::new();
    for node in DEMO_FEDERATION {
        let files = NodeFiles::new(out, node.member_id);
        std::fs::create_dir_all(&files.dir)?;
        let (cert_pem, key_pem, der) = issue_tls_cert(&issuer, node.member_id)?;
        std::fs::write(files.tls_cert(), cert_pem)?;
        write_secret(&files.tls_key(), &key_pem)?;
        let secret = random_secret(&rng)?;
        let key = SigningKey::from_secret(alg, &secret)?;
        let kid = format!("{}#dev1", node.member_id);
        write_secret(
            &files.signing_key(),
            &serde_json::to_string_pretty(&SigningKeyFile {
                alg: alg.as_str().into(),
                kid: kid.clone(),
                secret: hex::encode(secret),
            })?,
        )?;
        members.push(Member {
            member_id: node.member_id.into(),
            name: node.name.into(),
            level: node.level,
            region_code: node.member_id[3..9].into(),
            parent: node.parent.map(Into::into),
            partners: node.partners.iter().map(|p| (*p).into()).collect(),
            endpoint: format!("https://127.0.0.1:{}", node.port),
            tls_cert_sha256: Sha256Digest::of(&der).to_hex(),
            keys: vec![MemberKey {
                kid,
                alg: alg.as_str().into(),
                public_key: b64u(&key.public_key().bytes),
                valid_from: format_time(now - Duration::days(1)),
                valid_to: format_time(now + Duration::days(365)),
                sm2_id: None,
            }],
            roles: vec!["submit".into(), "relay".into(), "evaluate".into(), "government".into()],
        });
    }
    let agreement = demo_agreement(out, now)?;
    let body = RegistryBody {
        federation: "cn-credit-dev".into(),
        version: 1,
        issued_at: format_time(now),
        expires_at: format_time(now + Duration::days(30)),
        roots: anchor.clone(),
        members,
        agreements: vec![serde_json::json!({
            "agreement_id": agreement.agreement.agreement_id,
            "parties": agreement.agreement.parties,
            "digest": agreement.agreement.digest().to_hex(),
        })],
        adapters: sign_adapters(&opts.adapters, out, &root, root_kid, now)?,
        measures: sign_catalogues(&opts.measures, out, &root, root_kid, now)?,
    };
    let registry = jws::sign(REGISTRY_TYP, root_kid, &serde_json::to_value(&body)?, &root);
    std::fs::write(registry_file(out), serde_json::to_string_pretty(&registry)?)?;
    Ok(())
}

/// The demo partner agreement (信用评价结果互认协议) between 信用淄博 and 信用东营, signed
/// by both with the signing keys just written: 纳税信用 and 公共信用综合评价 are covered, sector
/// schemes are not. Written to `agreements/`; the registry lists its digest.
fn demo_agreement(out: &Path, now: OffsetDateTime) -> anyhow::Result<SignedAgreement> {
    let bands = |pairs: &[(&str, Band)]| pairs.iter().map(|(g, b)| ((*g).to_owned(), *b)).collect();
    let today = now.date();
    let mut signed = SignedAgreement {
        agreement: AgreementBody {
            agreement_id: "zibo-dongying-evaluations".into(),
            title: "淄博市、东营市信用评价结果互认合作协议".into(),
            parties: vec!["cn-370300".into(), "cn-370500".into()],
            schemes: vec![
                SchemeMapping {
                    scheme_id: "tax_credit".into(),
                    versions: vec!["2014".into()],
                    bands: bands(&[("A", Band::Excellent), ("B", Band::Good), ("C", Band::Fair), ("D", Band::Poor)]),
                    not_rated: vec!["M".into()],
                },
                SchemeMapping {
                    scheme_id: "public_credit_composite".into(),
                    versions: vec!["2024.2".into()],
                    bands: bands(&[
                        ("优", Band::Excellent),
                        ("良", Band::Good),
                        ("中", Band::Fair),
                        ("差", Band::Poor),
                    ]),
                    not_rated: vec![],
                },
            ],
            purposes: vec!["administrative_approval".into(), "public_procurement".into(), "credit_supervision".into()],
            valid_from: gateway_core::date::format_date(today),
            valid_to: gateway_core::date::format_date(today + Duration::days(730)),
        },
        signatures: Vec::new(),
    };
    for party in signed.agreement.parties.clone() {
        let (key, kid) = SigningKeyFile::load(&NodeFiles::new(out, &party).signing_key())?;
        signed.sign(&kid, &key);
    }
    std::fs::create_dir_all(out.join("agreements"))?;
    let path = out.join("agreements").join(format!("{}.json", signed.agreement.agreement_id));
    std::fs::write(path, serde_json::to_string_pretty(&signed)?)?;
    Ok(signed)
}

/// The agreement files of a `certs init` PKI (`agreements/*.json`), sorted; a node loads those
/// it is a party to.
pub fn agreement_files(pki_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(pki_dir.join("agreements")) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The demo federation's registry, from a fresh PKI in a temporary directory.
#[cfg(test)]
pub fn demo_registry_for_tests() -> gateway_core::interchange::registry::Registry {
    let dir = tempfile::tempdir().expect("tempdir");
    init(&InitOptions::dev(dir.path())).expect("certs init");
    let jws: jws::Jws =
        serde_json::from_slice(&std::fs::read(registry_file(dir.path())).expect("registry")).expect("jws");
    let anchor: Vec<RootKey> =
        serde_json::from_slice(&std::fs::read(anchor_file(dir.path())).expect("anchor")).expect("anchor");
    gateway_core::interchange::registry::Registry::verify_signed(&jws, &anchor).expect("registry verifies")
}
