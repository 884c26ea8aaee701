//! Starting a node: open the store, load calendars, bind, serve until shut down.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::calendar::{WorkingCalendar, YearCalendar};
use gateway_core::record::{RecordValidator, ValidationPolicy};
use gateway_store::Store;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::ingest::Gateway;

/// Loads the built-in calendars, then every `*.toml` in `dir` (an operator adds a year by
/// dropping a file there; a file for a built-in year replaces it).
pub fn load_calendar(dir: &Path) -> anyhow::Result<WorkingCalendar> {
    let mut cal = WorkingCalendar::builtin();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cal),
        Err(e) => return Err(e).with_context(|| format!("reading calendar directory {}", dir.display())),
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let year = YearCalendar::parse(&path.display().to_string(), &text)?;
        tracing::info!(year = year.year, file = %path.display(), "calendar loaded");
        cal.insert(year);
    }
    Ok(cal)
}

/// Opens the configured store: PostgreSQL when a URL is set, otherwise SQLite in the data dir.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    match config.postgres_url() {
        Some(url) => Store::open_postgres(url, None).await.context("opening PostgreSQL"),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
            let path = config.sqlite_path();
            Store::open_sqlite(&path, config.sqlite.synchronous)
                .await
                .with_context(|| format!("opening SQLite database {}", path.display()))
        }
    }
}

/// Builds the shared gateway state from a configuration.
pub async fn build_gateway(config: &Config) -> anyhow::Result<Arc<Gateway>> {
    let calendar = load_calendar(&config.calendar_dir())?;
    let validator =
        RecordValidator::new(&ValidationPolicy { uscc_allow_list: config.validation.uscc_allow_list.clone() })?;
    let store = open_store(config).await?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let dashboard = crate::dashboard::Access::load(&config.dashboard.operators, &config.data_dir)?;
    Ok(Arc::new(Gateway {
        member_id: config.member_id.clone(),
        validator,
        calendar,
        store,
        limits: config.limits.clone(),
        federation: std::sync::OnceLock::new(),
        relay_status: crate::relay::StatusBoard::default(),
        pull_acks: tokio::sync::Notify::new(),
        adapters: std::sync::OnceLock::new(),
        imports: crate::adapters::imports::Imports::new(config.data_dir.join("imports")),
        reporting: config.reporting.clone(),
        dashboard,
        queue_history: crate::dashboard::History::default(),
        sla_background: crate::sla::Background::default(),
        evaluations: std::sync::OnceLock::new(),
        evaluation_settings: config.evaluations.clone(),
    }))
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = crate::api::router(Arc::clone(&gateway));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    gateway.store.close().await;
    Ok(())
}

/// A bound, ready federation endpoint.
pub struct FederationEndpoint {
    pub addr: std::net::SocketAddr,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    node: crate::interchange::Node,
    refresh_every: std::time::Duration,
}

impl std::fmt::Debug for FederationEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FederationEndpoint({})", self.addr)
    }
}

impl FederationEndpoint {
    /// The node this endpoint serves (shares its registry).
    pub fn node(&self) -> &crate::interchange::Node {
        &self.node
    }

    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let registry = Arc::clone(&self.node.registry);
        let refresh = tokio::spawn(crate::federation::refresh_loop(
            self.node.clone(),
            self.refresh_every,
            std::future::pending(),
        ));
        let app = crate::federation::router(self.node);
        let served = crate::tls::serve(self.listener, self.tls, registry, app, shutdown).await;
        refresh.abort();
        served
    }
}

/// Loads the federation identity of `member_id`: the registry (verified against the anchor;
/// refused if bad, warned about in its grace period), the signing key, and the mutual-TLS
/// client it calls peers with.
pub fn federation_node(
    member_id: &str,
    fed: &crate::config::FederationConfig,
    gateway: Arc<Gateway>,
) -> anyhow::Result<crate::interchange::Node> {
    use gateway_core::interchange::registry::{Freshness, Registry, RootKey};
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let jws: gateway_core::jws::Jws = serde_json::from_slice(&read(&fed.registry)?).context("registry file")?;
    let anchor: Vec<RootKey> = serde_json::from_slice(&read(&fed.anchor)?).context("anchor file")?;
    let grace = time::Duration::days(i64::from(fed.registry_grace_days));
    let (registry, freshness) = Registry::verify(&jws, &anchor, None, time::OffsetDateTime::now_utc(), grace)
        .with_context(|| format!("registry {}", fed.registry.display()))?;
    if let Freshness::InGrace { expired_for } = freshness {
        tracing::error!(%expired_for, "REGISTRY EXPIRED: running on the grace period; fetch a new registry");
    }
    if registry.member(member_id).is_none() {
        anyhow::bail!("member {member_id} is not in the registry");
    }
    let (key, kid) = crate::pki::SigningKeyFile::load(&fed.signing_key)?;
    let signer = Arc::new(crate::interchange::Signer { key, kid });
    let files = crate::tls::TlsFiles { ca: &fed.ca, cert: &fed.cert, key: &fed.key };
    let client = reqwest::Client::builder().tls_backend_preconfigured(crate::tls::client_config(&files)?).build()?;
    let agreements = crate::evaluations::load_agreements(member_id, &fed.agreements, &registry)?;
    let registry = Arc::new(std::sync::RwLock::new(registry));
    let settings = &gateway.evaluation_settings;
    let _ = gateway.evaluations.set(Arc::new(crate::evaluations::Partners {
        member_id: member_id.to_owned(),
        agreements,
        registry: Arc::clone(&registry),
        signer: Arc::clone(&signer),
        client: client.clone(),
        peers: Arc::new(fed.peers.clone()),
        cache_ttl: time::Duration::seconds(i64::try_from(settings.cache_ttl_secs).unwrap_or(i64::MAX)),
        timeout: std::time::Duration::from_secs(settings.timeout_secs.max(1)),
        verified: std::sync::Mutex::new(None),
    }));
    // The first federation identity of a gateway is the one its metrics report.
    let certificate_expires = certificate_expiry(&fed.cert);
    let _ = gateway.federation.set(crate::ingest::FederationView {
        registry: Arc::clone(&registry),
        grace,
        certificate_expires,
    });
    Ok(crate::interchange::Node {
        gateway,
        registry,
        signer,
        registry_grace: grace,
        client,
        peers: Arc::new(fed.peers.clone()),
    })
}

/// Loads the federation identity and TLS configuration and binds the federation port.
pub async fn bind_federation(
    config: &Config,
    fed: &crate::config::FederationConfig,
    gateway: Arc<Gateway>,
) -> anyhow::Result<FederationEndpoint> {
    let node = federation_node(&config.member_id, fed, gateway)?;
    let files = crate::tls::TlsFiles { ca: &fed.ca, cert: &fed.cert, key: &fed.key };
    let tls = crate::tls::server_config(&files)?;
    let refresh_every = std::time::Duration::from_secs(fed.registry_refresh_secs.max(1));
    let listener = TcpListener::bind(fed.listen).await.with_context(|| format!("binding {}", fed.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "federation endpoint (mTLS) ready");
    Ok(FederationEndpoint { addr, listener, tls, node, refresh_every })
}

/// The `notAfter` of the first certificate in a PEM file (`None` if it cannot be read: the TLS
/// set-up reports that case itself).
fn certificate_expiry(path: &Path) -> Option<time::OffsetDateTime> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_datetime())
}
