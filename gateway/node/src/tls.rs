//! TLS (rustls, ring provider only): mutual TLS between nodes, and HTTPS on the department API.
//!
//! The handshake requires a client certificate that chains to the federation CA. Each request
//! then carries the certificate's pin ([`PeerPin`]); the federation router checks it against the
//! registry held when the request arrives (`tls_cert_sha256`), and only then does the
//! authenticated member id reach the handlers, as the [`Peer`] request extension. A valid
//! certificate that is not pinned gets 403 on every request, and the attempt is logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use gateway_core::canonical::Sha256Digest;
use gateway_core::interchange::registry::Registry;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long requests in flight may take to finish once the node stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent federation connections; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// Installs the ring provider as the process default (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn load_roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(c?)?;
    }
    Ok(roots)
}

/// A certificate and its key, read from PEM files, which a reload replaces in place: new
/// handshakes (served, and to peers) use the renewed certificate, connections already open
/// keep theirs, and the node never stops listening.
#[derive(Debug)]
pub struct CertCell {
    cert: PathBuf,
    key: PathBuf,
    held: RwLock<Held>,
}

#[derive(Debug)]
struct Held {
    certified: Arc<CertifiedKey>,
    expires: Option<OffsetDateTime>,
}

impl CertCell {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let held = RwLock::new(read_certified(cert, key)?);
        Ok(Arc::new(Self { cert: cert.to_owned(), key: key.to_owned(), held }))
    }

    /// Reads the files again; if they do not hold a usable certificate and matching key, the
    /// held one stays and the error says why. Returns the SHA-256 of the certificate now
    /// served (the registry's `tls_cert_sha256` pin).
    pub fn reload(&self) -> anyhow::Result<String> {
        let fresh = read_certified(&self.cert, &self.key)?;
        let pin = fresh.certified.cert.first().map(|c| Sha256Digest::of(c).to_hex()).unwrap_or_default();
        *self.held.write().map_err(|_| anyhow::anyhow!("certificate lock poisoned"))? = fresh;
        Ok(pin)
    }

    /// When the certificate served now expires.
    pub fn expires(&self) -> Option<OffsetDateTime> {
        self.held.read().ok()?.expires
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let held = self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&held.certified)
    }
}

fn read_certified(cert: &Path, key: &Path) -> anyhow::Result<Held> {
    install_crypto_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider)
        .with_context(|| format!("{} and {} do not make a certificate and its key", cert.display(), key.display()))?;
    Ok(Held { certified: Arc::new(certified), expires: crate::pki::certificate_expiry(cert) })
}

impl ResolvesServerCert for CertCell {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertCell {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server side: client certificate required, chaining to the federation CA; serves the
/// certificate `cell` holds.
pub fn server_config(ca: &Path, cell: &Arc<CertCell>) -> anyhow::Result<Arc<ServerConfig>> {
    install_crypto_provider();
    let verifier = WebPkiClientVerifier::builder(Arc::new(load_roots(ca)?)).build()?;
    let mut config =
        ServerConfig::builder().with_client_cert_verifier(verifier).with_cert_resolver(Arc::clone(cell) as _);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: presents the certificate `cell` holds, trusts only the federation CA.
pub fn node_client_config(ca: &Path, cell: &Arc<CertCell>) -> anyhow::Result<ClientConfig> {
    install_crypto_provider();
    Ok(ClientConfig::builder().with_root_certificates(load_roots(ca)?).with_client_cert_resolver(Arc::clone(cell) as _))
}

/// A certificate, its key and the federation CA, for one-off clients (CLI commands, tests).
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Client side for one-off clients: presents the certificate in `files`, trusts only the
/// federation CA.
pub fn client_config(files: &TlsFiles<'_>) -> anyhow::Result<ClientConfig> {
    node_client_config(files.ca, &CertCell::load(files.cert, files.key)?)
}

/// Who is on the other end of a federation connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The certificate is the one pinned for this member.
    Member(String),
    /// A CA-valid certificate that no member has pinned.
    Unpinned { cert_sha256: String },
}

/// The SHA-256 (hex) of the certificate a federation connection presented: its requests carry
/// it, and each is identified against the registry held when it arrives (a registry adopted
/// while the connection is open, re-pinning or removing a member, applies at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPin(pub String);

/// Matches a peer certificate against the pins of the registry.
pub fn identify(cert_der: &[u8], registry: &Registry) -> Peer {
    identify_pin(&Sha256Digest::of(cert_der).to_hex(), registry)
}

/// Matches a certificate's pin against the pins of the registry.
pub fn identify_pin(pin: &str, registry: &Registry) -> Peer {
    match registry.body.members.iter().find(|m| m.tls_cert_sha256 == pin) {
        Some(m) => Peer::Member(m.member_id.clone()),
        None => Peer::Unpinned { cert_sha256: pin.to_owned() },
    }
}

/// What every listener bounds (docs/operations.md, "限制 · Limits").
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most open connections; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time to send a request's headers, and to start the next request on an idle connection.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// The API listener's, from the configured limits.
    pub fn api(limits: &crate::config::Limits) -> Self {
        Self {
            max_connections: limits.max_connections,
            header_read_timeout: limits.header_read_timeout(),
            max_header_bytes: limits.max_header_bytes,
        }
    }

    /// The federation listener's: its peers are a handful of registered nodes.
    pub fn federation(limits: &crate::config::Limits) -> Self {
        Self { max_connections: MAX_CONNECTIONS, ..Self::api(limits) }
    }
}

/// Serves `app` over mutual TLS until `shutdown` resolves. Each connection's [`Peer`] is
/// inserted into its requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    registry: Arc<RwLock<Registry>>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tag: Tagger = Arc::new(move |cert: Option<&[u8]>, remote: SocketAddr| {
        let Some(cert) = cert else { anyhow::bail!("no client certificate") };
        let peer = {
            let registry = registry.read().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
            identify(cert, &registry)
        };
        match &peer {
            Peer::Member(member) => tracing::debug!(%remote, %member, "federation peer authenticated"),
            Peer::Unpinned { cert_sha256 } => {
                tracing::warn!(%remote, %cert_sha256, "federation peer presented a certificate no member has pinned")
            }
        }
        let mut ext = axum::http::Extensions::new();
        ext.insert(PeerPin(Sha256Digest::of(cert).to_hex()));
        Ok(ext)
    });
    accept_loop(listener, Some(TlsAcceptor::from(tls)), app, limits, shutdown, "federation", tag).await
}

/// The department API over HTTPS, serving the certificate `cell` holds: a client certificate
/// is optional (API keys work too); when one is presented it must chain to `client_ca`, and
/// its SHA-256 reaches the access layer.
pub fn api_server_config(cell: &Arc<CertCell>, client_ca: Option<&Path>) -> anyhow::Result<Arc<ServerConfig>> {
    install_crypto_provider();
    let builder = ServerConfig::builder();
    let resolver = Arc::clone(cell) as Arc<dyn ResolvesServerCert>;
    let mut config = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(load_roots(ca)?)).allow_unauthenticated().build()?;
            builder.with_client_cert_verifier(verifier).with_cert_resolver(resolver)
        }
        None => builder.with_no_client_auth().with_cert_resolver(resolver),
    };
    // HTTP/1.1 only: anyone may connect here before authenticating, and only HTTP/1.1 has the
    // header-read timeout that closes silent or slow connections (hyper's HTTP/2 waits for a
    // preface and keeps an answering connection open without a bound).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the department API until `shutdown` resolves: over HTTPS with `tls`, else plain
/// HTTP/1.1 (loopback or behind a TLS-terminating proxy).
pub async fn serve_api(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tag: Tagger = Arc::new(|cert: Option<&[u8]>, remote: SocketAddr| {
        let mut ext = axum::http::Extensions::new();
        ext.insert(axum::extract::ConnectInfo(remote));
        if let Some(cert) = cert {
            ext.insert(crate::api::access::ClientCert(Sha256Digest::of(cert).to_hex()));
        }
        Ok(ext)
    });
    accept_loop(listener, tls.map(TlsAcceptor::from), app, limits, shutdown, "API", tag).await
}

/// Says what a connection's requests carry, from its client certificate (if any) and address;
/// an error ends the connection.
type Tagger = Arc<dyn Fn(Option<&[u8]>, SocketAddr) -> anyhow::Result<axum::http::Extensions> + Send + Sync>;

/// HTTP/2 requests in progress at once on one federation connection (hyper's default is 200).
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    what: &'static str,
    tag: Tagger,
) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (tls, tag, app, watcher) = (tls.clone(), Arc::clone(&tag), app.clone(), graceful.watcher());
        connections.spawn(async move {
            let _slot = slot;
            let served = match tls {
                Some(acceptor) => serve_tls_connection(tcp, remote, acceptor, tag, app, limits, watcher).await,
                None => match tag(None, remote) {
                    Ok(extensions) => serve_io(TokioIo::new(tcp), extensions, false, app, limits, watcher).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "{what} connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    // Stopping: no new connections; requests in flight finish (idle connections close at
    // once), for at most the grace period; whatever is left then is cut off.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("{what}: connections still busy after {SHUTDOWN_GRACE:?}; closing them");
    }
    connections.shutdown().await;
    Ok(())
}

async fn serve_tls_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    tag: Tagger,
    app: Router,
    limits: ConnectionLimits,
    watcher: Watcher,
) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
    let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let extensions = tag(cert.as_deref(), remote)?;
    serve_io(TokioIo::new(stream), extensions, h2, app, limits, watcher).await
}

/// Serves one connection with the protocol its TLS handshake chose (HTTP/1.1 without TLS):
/// never guessed from the first bytes, so that a client that sends nothing, or sends its headers
/// a byte at a time, meets the header-read timeout from its first moment.
async fn serve_io<I>(
    io: TokioIo<I>,
    extensions: axum::http::Extensions,
    h2: bool,
    app: Router,
    limits: ConnectionLimits,
    watcher: Watcher,
) -> anyhow::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().extend(extensions.clone());
        app.clone().oneshot(req)
    });
    let served = if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            // Requests at once on one connection: with `max_connections`, it bounds a peer's work.
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.header_read_timeout);
        watcher.watch(builder.serve_connection(io, service)).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes);
        watcher.watch(builder.serve_connection(io, service)).await
    };
    served.map_err(|e| anyhow::anyhow!("{e}"))
}
