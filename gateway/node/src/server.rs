//! Starting a node: the one way `serve`, `demo`, the benchmarks and the tests bring a node up.
//!
//! [`start`] makes each layer's state once, in this order, and never fills anything in later:
//! the push path (calendar, validator, store) → the federation identity (registry verified
//! against the anchor, signing key, mutual-TLS client, partner agreements) → the adapters
//! (verified against that registry) → the relay's routes → SLA tracking → the application
//! state. Then it binds both listeners and starts every task: the API, the federation
//! endpoint and its registry refresh, the relay's senders, the adapters' collectors, the
//! publicity-expiry job, the SLA tracker, the dashboard's sampler and the alerts.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gateway_core::calendar::{WorkingCalendar, YearCalendar};
use gateway_core::interchange::registry::{Freshness, Registry, RootKey};
use gateway_core::record::{RecordValidator, ValidationPolicy};
use gateway_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Config, FederationConfig};
use crate::evaluations::Partners;
use crate::ingest::Ingest;
use crate::interchange::{Identity, Node};
use crate::relay::{Relay, RelayState, Routes, StatusBoard};
use crate::sla::Sla;

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

/// The push path of `config`: its calendar (built-in years and the operator's files), its
/// validator and its store.
pub async fn open_ingest(config: &Config) -> anyhow::Result<Arc<Ingest>> {
    let calendar = load_calendar(&config.calendar_dir())?;
    let validator =
        RecordValidator::new(&ValidationPolicy { uscc_allow_list: config.validation.uscc_allow_list.clone() })?;
    let store = open_store(config).await?;
    Ok(Arc::new(Ingest {
        member_id: config.member_id.clone(),
        validator,
        calendar,
        store: Arc::new(store),
        bodies_in_flight: Ingest::body_budget(&config.limits),
        limits: config.limits.clone(),
    }))
}

/// Loads the federation identity of `member_id`: the registry (verified against the anchor;
/// refused if bad, warned about in its grace period), the signing key, and the mutual-TLS
/// client it calls peers with.
pub fn load_identity(member_id: &str, fed: &FederationConfig) -> anyhow::Result<Identity> {
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
    let keys = crate::interchange::Keyring::load(&fed.signing_key)?;
    let tls = crate::tls::CertCell::load(&fed.cert, &fed.key)?;
    let client =
        reqwest::Client::builder().tls_backend_preconfigured(crate::tls::node_client_config(&fed.ca, &tls)?).build()?;
    Ok(Identity {
        member_id: member_id.to_owned(),
        registry: Arc::new(std::sync::RwLock::new(registry)),
        keys: Arc::new(keys),
        tls,
        registry_grace: grace,
        client,
        peers: Arc::new(fed.peers.clone()),
    })
}

/// Evaluation recognition under `identity`: the partner agreements the node holds (checked
/// against the registry) and the `[evaluations]` settings.
pub fn load_partners(
    config: &Config,
    fed: &FederationConfig,
    identity: &Identity,
    store: Arc<Store>,
) -> anyhow::Result<Partners> {
    let registry = identity.registry_now().map_err(|e| anyhow::anyhow!("{e}"))?;
    let agreements = crate::evaluations::load_agreements(&identity.member_id, &fed.agreements, &registry)?;
    let settings = &config.evaluations;
    Ok(Partners {
        identity: identity.clone(),
        store,
        agreements,
        cache_ttl: time::Duration::seconds(i64::try_from(settings.cache_ttl_secs).unwrap_or(i64::MAX)),
        timeout: std::time::Duration::from_secs(settings.timeout_secs.max(1)),
        verified: std::sync::Mutex::new(None),
    })
}

/// The interchange side of a node on its own, without listeners or tasks: for one-off
/// commands (`evidence export`) that read the store and may ask peers.
pub async fn open_node(config: &Config, fed: &FederationConfig) -> anyhow::Result<Node> {
    let ingest = open_ingest(config).await?;
    let identity = load_identity(&config.member_id, fed)?;
    Ok(Node { identity, ingest, pull_acks: Arc::new(tokio::sync::Notify::new()) })
}

/// Reads the measures catalogue at `path`, checks it (conformance) and verifies that a root of
/// `registry` signed exactly these bytes and the registry approves them. Any failure stops the
/// start: a node never applies measures nobody approved.
pub fn load_catalogue(
    path: &Path,
    settings: &crate::config::MeasuresConfig,
    registry: &Registry,
) -> anyhow::Result<gateway_core::measures::Catalogue> {
    use gateway_core::measures::{Catalogue, CatalogueError};
    let bytes = std::fs::read(path).with_context(|| format!("reading measures catalogue {}", path.display()))?;
    let catalogue = Catalogue::parse(&bytes).with_context(|| format!("measures catalogue {}", path.display()))?;
    let sig_path = settings.signature.clone().unwrap_or_else(|| path.with_extension("sig"));
    let signature = match std::fs::read(&sig_path) {
        Ok(bytes) => serde_json::from_slice::<gateway_core::jws::Jws>(&bytes)
            .map_err(|e| CatalogueError::SignatureForm(format!("{}: {e}", sig_path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CatalogueError::Unsigned(sig_path.display().to_string()))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    signature
        .and_then(|sig| gateway_core::measures::verify_signature(&catalogue, &sig, registry))
        .with_context(|| format!("measures catalogue {} refused", path.display()))?;
    tracing::info!(
        catalogue = %catalogue.heading.id,
        version = %catalogue.heading.version,
        measures = catalogue.measures.len(),
        sha256 = %catalogue.sha256.to_hex(),
        "measures catalogue loaded"
    );
    Ok(catalogue)
}

/// The access layer of `config`'s API: its credentials are in the store; with authentication
/// off (loopback development only, checked when the configuration loaded) it says so, once.
pub async fn open_gate(config: &Config, ingest: &Arc<Ingest>) -> anyhow::Result<crate::api::access::Gate> {
    let store = Arc::clone(&ingest.store);
    if config.auth.required {
        let usable = store.credentials().await?.iter().filter(|c| c.revoked_at.is_none()).count();
        if usable == 0 && config.dashboard.operators.is_empty() {
            tracing::warn!(
                "authentication is required but no credential is issued yet: every call will get 401; \
                 issue one with `credential issue` (docs/operations.md, \"Access\")"
            );
        }
    } else {
        tracing::warn!(
            listen = %config.listen,
            "AUTHENTICATION IS OFF: every caller on this machine acts as the development principal and may do \
             everything; set [auth] required = true before opening the port (docs/operations.md, \"Access\")"
        );
    }
    let auth = crate::auth::Authenticator::new(config.auth.required, Arc::clone(&store));
    let (_, table) = crate::api::routes().into_parts();
    Ok(crate::api::access::Gate::new(auth, store, &config.auth, &table))
}

/// What a reload (SIGHUP to `serve`) takes up while the node serves, without dropping a
/// connection: a newer registry file, signing keys added beside the configured one, and the
/// renewed certificates of the federation endpoint and the HTTPS API. Each part is taken up or
/// refused on its own; a refused part keeps what the node held.
#[derive(Debug, Clone, Default)]
pub struct Reloader {
    federation: Option<(Node, FederationConfig)>,
    api_cert: Option<Arc<crate::tls::CertCell>>,
}

/// What one reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// The registry held after the reload, when the node has a federation identity.
    pub registry: Option<crate::interchange::Refresh>,
    /// The signing keys held after the reload.
    pub keys: Vec<String>,
    /// SHA-256 of the federation certificate served after the reload.
    pub federation_cert: Option<String>,
    /// SHA-256 of the API's HTTPS certificate served after the reload.
    pub api_cert: Option<String>,
    /// What could not be taken up, and why.
    pub errors: Vec<String>,
}

impl Reloader {
    pub fn reload(&self, now: time::OffsetDateTime) -> Reloaded {
        let mut done = Reloaded::default();
        if let Some((node, fed)) = &self.federation {
            match node.reload_registry(&fed.registry, now) {
                Ok(r) => done.registry = Some(r),
                Err(e) => done.errors.push(format!("registry {}: {e:#}", fed.registry.display())),
            }
            match node.identity.keys.reload() {
                Ok(kids) => done.keys = kids,
                Err(e) => done.errors.push(format!("signing keys: {e:#}")),
            }
            match node.identity.tls.reload() {
                Ok(pin) => done.federation_cert = Some(pin),
                Err(e) => done.errors.push(format!("federation certificate: {e:#}")),
            }
        }
        if let Some(cell) = &self.api_cert {
            match cell.reload() {
                Ok(pin) => done.api_cert = Some(pin),
                Err(e) => done.errors.push(format!("API certificate: {e:#}")),
            }
        }
        if done.errors.is_empty() {
            tracing::info!(registry = ?done.registry, keys = ?done.keys, federation_cert = ?done.federation_cert,
                api_cert = ?done.api_cert, "reloaded");
        } else {
            tracing::error!(errors = ?done.errors, "reload: some parts were refused; the node keeps what it held for them");
        }
        done
    }
}

/// A node started by [`start`]. It runs until the `shutdown` given to [`start`] resolves;
/// [`Running::stopped`] then waits until every task has stopped and the store is closed.
#[derive(Debug)]
pub struct Running {
    /// Where the API listens.
    pub api: std::net::SocketAddr,
    /// Where the federation endpoint (mutual TLS) listens, when the node has one.
    pub federation: Option<std::net::SocketAddr>,
    /// The node's state, for the demo, benchmarks and tests to look into.
    pub app: App,
    /// Takes up renewed files while the node serves (`serve` calls it on SIGHUP).
    pub reloader: Reloader,
    supervisor: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the node has stopped (after `shutdown`), and says how its API ended.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.supervisor.await.context("the node's supervisor task failed")?
    }
}

/// Starts a node of `config`: makes its state in order, binds its listeners, starts every
/// task, and returns once it serves. It stops when `shutdown` resolves: the relay's senders
/// first (stopping mid-delivery is safe, the rest is resent), then the listeners drain, the
/// background tasks end and the store closes.
pub async fn start(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Running> {
    let ingest = open_ingest(&config).await?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let identity = match &config.federation {
        Some(fed) => Some(load_identity(&config.member_id, fed)?),
        None => None,
    };
    let registry = identity.as_ref().map(Identity::registry_now).transpose().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Adapters are verified against the registry in force: no registry, no adapters.
    let adapters: Arc<[Arc<crate::adapters::Loaded>]> = match (&registry, config.adapters.is_empty()) {
        (_, true) => Arc::from(Vec::new()),
        (Some(registry), false) => crate::adapters::load_all(&config.adapters, registry, &config.member_id)?.into(),
        (None, false) => anyhow::bail!(
            "[[adapters]] needs the federation registry to verify their signed manifests; configure [federation] or --member"
        ),
    };
    // An adapter that brings records in acts for the units of its binding, as a department's
    // credential would; one bound to none may report for any unit, which production refuses.
    for a in adapters.iter().filter(|a| a.adapter.manifest.platform.direction.ingests() && a.binding.units.is_empty()) {
        if config.mode == crate::config::Mode::Production {
            anyhow::bail!(
                "mode = production: adapter {} brings records in but names no `units` it may report for; \
                 set [[adapters]] units = [\"<USCC>\", …]",
                a.id()
            );
        }
        tracing::warn!(platform = a.id(), "adapter names no `units`: it may report records of any unit");
    }
    if let Some(frontdb) = &config.measures.frontdb {
        anyhow::ensure!(config.measures.catalogue.is_some(), "[measures.frontdb] needs [measures] catalogue");
        anyhow::ensure!(
            !frontdb.units.is_empty(),
            "[measures.frontdb] names no `units`: list the departments (统一社会信用代码) that answer through it"
        );
    }
    let measures = match (&config.measures.catalogue, &registry) {
        (None, _) => None,
        (Some(path), Some(registry)) => Some(Arc::new(load_catalogue(path, &config.measures, registry)?)),
        (Some(_), None) => anyhow::bail!(
            "[measures] needs the federation registry to verify the catalogue's signature; configure [federation] or --member"
        ),
    };
    let routes =
        Arc::new(Routes::new(&config.member_id, registry.as_ref(), &adapters, &config.relay, measures.clone()));
    let relay_state = RelayState { routes: Arc::clone(&routes), status: StatusBoard::default() };
    let sla = Arc::new(Sla::new(Arc::clone(&ingest), routes, identity.clone()));
    let node = identity.map(|identity| Node {
        identity,
        ingest: Arc::clone(&ingest),
        pull_acks: Arc::new(tokio::sync::Notify::new()),
    });
    let partners = match (&node, &config.federation) {
        (Some(node), Some(fed)) => {
            Some(Arc::new(load_partners(&config, fed, &node.identity, Arc::clone(&ingest.store))?))
        }
        _ => None,
    };
    let board = Arc::new(crate::dashboard::Board {
        access: crate::dashboard::Access::load(&config.dashboard.operators, &config.data_dir)?,
        history: crate::dashboard::History::default(),
    });
    let gate = Arc::new(open_gate(&config, &ingest).await?);
    let app = App {
        gate,
        ingest: Arc::clone(&ingest),
        relay: relay_state,
        sla: Arc::clone(&sla),
        reporting: Arc::new(config.reporting.clone()),
        imports: Arc::new(crate::adapters::imports::Imports::new(config.data_dir.join("imports"))),
        adapters: Arc::clone(&adapters),
        dashboard: Arc::clone(&board),
        federation: node.clone(),
        evaluations: partners.clone(),
        measures,
        leading: Arc::default(),
    };

    let api_tls = match &config.api_tls {
        Some(t) => {
            let cell = crate::tls::CertCell::load(&t.cert, &t.key)?;
            Some((crate::tls::api_server_config(&cell, t.client_ca.as_deref())?, cell))
        }
        None => None,
    };
    // Both listeners are bound before any task starts: a port in use fails the start.
    let api_listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let api = api_listener.local_addr()?;
    let federation = match (&node, &partners, &config.federation) {
        (Some(node), Some(partners), Some(fed)) => {
            let tls = crate::tls::server_config(&fed.ca, &node.identity.tls)?;
            let listener = TcpListener::bind(fed.listen).await.with_context(|| format!("binding {}", fed.listen))?;
            let addr = listener.local_addr()?;
            let refresh_every = std::time::Duration::from_secs(fed.registry_refresh_secs.max(1));
            let endpoint = crate::federation::Federation { node: node.clone(), partners: Arc::clone(partners) };
            Some((addr, listener, tls, endpoint, refresh_every))
        }
        _ => None,
    };
    let reloader = Reloader {
        federation: node.clone().zip(config.federation.clone()),
        api_cert: api_tls.as_ref().map(|(_, cell)| Arc::clone(cell)),
    };
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    tracing::info!(%api, %scheme, member_id = %config.member_id, data_dir = %config.data_dir.display(), "credit-gateway listening");

    // Everything that can still fail is done before the first task starts.
    let alerter = crate::alerts::Alerter::new(app.clone(), &config.alerts, &config.data_dir)?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Tasks every replica runs, that hold nothing across a stop: aborted when the node stops
    // (the registry refresh may be waiting on a parent that does not answer).
    let mut background = Vec::new();
    let federation_addr = federation.as_ref().map(|f| f.0);
    let federation_task = federation.map(|(addr, listener, tls, endpoint, refresh_every)| {
        tracing::info!(%addr, "federation endpoint (mutual TLS) ready");
        background.push(tokio::spawn(crate::federation::refresh_loop(endpoint.node.clone(), refresh_every)));
        let registry = Arc::clone(&endpoint.node.identity.registry);
        let router = crate::federation::router(endpoint);
        let limits = crate::tls::ConnectionLimits::federation(&config.limits);
        tokio::spawn(crate::tls::serve(listener, tls, registry, router, limits, when_stopped(stopped.clone())))
    });
    background.push(tokio::spawn(crate::dashboard::sample_loop(Arc::clone(&board), Arc::clone(&ingest))));

    // The singletons run at one replica only: the holder of the store's lease (`leader`; on
    // SQLite, always this process).
    let start_singletons = {
        let (config, ingest, app, sla) = (config.clone(), Arc::clone(&ingest), app.clone(), Arc::clone(&sla));
        move |lease: gateway_store::Lease| {
            let mut running = crate::leader::Singletons::default();
            // Forwarding starts with the federation identity: records flow to the parent,
            // events to the children, public records to the publication sink and the
            // platforms' adapters.
            running.relay = match &node {
                Some(node) if config.relay.enabled => {
                    Some(Relay::start_fenced(node.clone(), &app.relay, config.relay.clone(), lease))
                }
                _ => None,
            };
            let stop = running.stop_signal();
            // 前置库 collectors, inbox watchers and service pullers.
            running.graceful = crate::adapters::start_ingest(&ingest, &adapters, &config.data_dir, &stop);
            if let Some(alerter) = alerter.clone() {
                running.graceful.push(tokio::spawn(alerter.run(when_stopped(stop))));
            }
            if config.publicity.expiry_interval_secs > 0 {
                let every = std::time::Duration::from_secs(config.publicity.expiry_interval_secs);
                running.tasks.push(tokio::spawn(crate::jobs::expiry::run_loop(Arc::clone(&ingest), every)));
            }
            if config.sla.tracking_interval_secs > 0 {
                let every = std::time::Duration::from_secs(config.sla.tracking_interval_secs);
                running.tasks.push(tokio::spawn(crate::sla::track_loop(Arc::clone(&sla), every)));
            }
            if let Some(catalogue) = &app.measures
                && config.measures.opening_interval_secs > 0
            {
                let every = std::time::Duration::from_secs(config.measures.opening_interval_secs);
                running.tasks.push(tokio::spawn(crate::joint::opener::run_loop(
                    Arc::clone(&ingest),
                    Arc::clone(catalogue),
                    every,
                )));
                if let Some(frontdb) = &config.measures.frontdb {
                    running.tasks.push(tokio::spawn(crate::joint::frontdb::run_loop(
                        Arc::clone(&ingest),
                        Arc::clone(catalogue),
                        frontdb.clone(),
                        every,
                    )));
                }
            }
            running
        }
    };
    let (held, lease_task) = crate::leader::watch_lease(
        Arc::clone(&ingest.store),
        crate::leader::holder_name(),
        std::time::Duration::from_secs(config.lease_secs),
    );
    let leading = tokio::spawn(crate::leader::lead(
        Arc::clone(&ingest.store),
        held,
        Arc::clone(&app.leading),
        std::time::Duration::from_secs(config.lease_secs) / 4,
        start_singletons,
        when_stopped(stopped.clone()),
    ));
    let api_task = tokio::spawn({
        let router = crate::api::router(app.clone());
        let stopping = when_stopped(stopped.clone());
        let limits = crate::tls::ConnectionLimits::api(&config.limits);
        async move {
            let tls = api_tls.map(|(tls, _)| tls);
            crate::tls::serve_api(api_listener, tls, router, limits, stopping).await
        }
    });

    let supervisor = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        // The singletons stop (the relay first: stopping mid-delivery is safe, resent later)
        // and the lease is given up, all before the store closes.
        lease_task.abort();
        let _ = lease_task.await;
        let _ = stop.send(true);
        let _ = leading.await;
        let api = api_task.await;
        for task in background {
            task.abort();
        }
        let federation = match federation_task {
            Some(task) => task.await.map_err(anyhow::Error::from).and_then(|served| served),
            None => Ok(()),
        };
        // Closed whatever the listeners' ends were: the last commits are folded in.
        ingest.store.close().await;
        api.context("the API task failed")?.context("the API server failed")?;
        federation.context("the federation endpoint failed")
    });
    Ok(Running { api, federation: federation_addr, app, reloader, supervisor })
}
