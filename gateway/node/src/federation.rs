//! The node-to-node API under `/federation/v1/` (interchange-v1 §9), served only over mutual
//! TLS. Every route requires a peer whose certificate is pinned in the registry.

use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use gateway_core::interchange::registry::Registry;
use gateway_core::jws::Jws;

use crate::api::{ErrorKind, ServiceError};
use crate::evaluations::Partners;
use crate::interchange::Node;
use crate::tls::Peer;

/// What the federation endpoints serve from: the interchange side of the node and evaluation
/// recognition (both made from the one federation identity at start-up).
#[derive(Debug, Clone)]
pub struct Federation {
    pub node: Node,
    pub partners: Arc<Partners>,
}

impl FromRef<Federation> for Node {
    fn from_ref(f: &Federation) -> Self {
        f.node.clone()
    }
}

impl FromRef<Federation> for Arc<Partners> {
    fn from_ref(f: &Federation) -> Self {
        Arc::clone(&f.partners)
    }
}

/// The federation router. Peers must be pinned members; others get 403.
pub fn router(federation: Federation) -> Router {
    Router::new()
        .route("/federation/v1/registry", get(registry))
        .route("/federation/v1/envelopes", post(envelopes))
        .route("/federation/v1/evidence/{record_id}/{version}", get(evidence))
        .route("/federation/v1/events", get(events))
        .route("/federation/v1/receipts", post(receipts))
        .route("/federation/v1/evaluations/lookup", post(evaluations_lookup))
        .route("/federation/v1/evaluations/{uscc}", get(evaluations_single))
        .fallback(|| async { ServiceError::not_found("该路径", "path") })
        .layer(middleware::from_fn_with_state(federation.node.clone(), require_current_registry))
        .layer(middleware::from_fn_with_state(federation.node.clone(), require_member))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .layer(middleware::from_fn_with_state(
            federation.node.ingest.limits.discard_bytes,
            crate::api::drain::drain_unread_bodies,
        ))
        .with_state(federation)
}

/// Identifies the TLS peer of each request against the registry held now (see
/// [`crate::tls::PeerPin`]) and refuses it unless the certificate is a member's pin.
async fn require_member(
    State(node): State<Node>,
    pin: Option<Extension<crate::tls::PeerPin>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = match (pin, node.identity.registry.read()) {
        (Some(Extension(pin)), Ok(registry)) => Some(crate::tls::identify_pin(&pin.0, &registry)),
        (Some(_), Err(_)) => return ServiceError::internal(&"registry lock poisoned").into_response(),
        (None, _) => None,
    };
    match peer {
        Some(Peer::Member(member)) => {
            request.extensions_mut().insert(Peer::Member(member));
            next.run(request).await
        }
        Some(Peer::Unpinned { cert_sha256 }) => {
            tracing::warn!(%cert_sha256, "federation peer presented a certificate no member has pinned");
            ServiceError::new(
                ErrorKind::Forbidden,
                "certificate_not_pinned",
                "客户端证书未在联盟注册表中登记（证书指纹不匹配）",
                format!("the client certificate (sha-256 {cert_sha256}) is not pinned for any member in the registry"),
            )
            .into_response()
        }
        None => ServiceError::new(
            ErrorKind::Forbidden,
            "mtls_required",
            "联盟接口只接受双向 TLS 连接",
            "federation endpoints require mutual TLS",
        )
        .into_response(),
    }
}

/// Refuses federation traffic once the held registry is past its grace period; warns loudly
/// while it is inside it. (X-Road halts on a stale configuration at once; we degrade first.)
async fn require_current_registry(State(node): State<Node>, request: Request, next: Next) -> Response {
    let freshness = match node.identity.registry.read() {
        Ok(r) => r.freshness(time::OffsetDateTime::now_utc(), node.identity.registry_grace),
        Err(_) => return ServiceError::internal(&"registry lock poisoned").into_response(),
    };
    match freshness {
        Ok(gateway_core::interchange::registry::Freshness::Current) => next.run(request).await,
        Ok(gateway_core::interchange::registry::Freshness::InGrace { expired_for }) => {
            tracing::error!(%expired_for, "REGISTRY EXPIRED: serving within the grace period; refresh the registry");
            next.run(request).await
        }
        Err(e) => {
            tracing::error!(error = %e, "registry past its grace period: refusing federation traffic");
            ServiceError::new(
                ErrorKind::Unavailable,
                "registry_expired",
                "联盟注册表已过期且超过宽限期，暂停联盟通信，请更新注册表",
                format!("{e}; federation traffic is refused until a newer registry is loaded"),
            )
            .into_response()
        }
    }
}

/// Refreshes the registry from the parent every `every`, until the task is aborted (it holds
/// nothing across a stop, and a refresh may wait on a parent that does not answer).
pub async fn refresh_loop(node: Node, every: std::time::Duration) {
    let Some(parent) = node.parent_endpoint() else { return };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the registry was just loaded
    loop {
        tick.tick().await;
        match node.refresh_registry(&parent, time::OffsetDateTime::now_utc()).await {
            Ok(r) => tracing::debug!(?r, "registry refresh"),
            Err(e) => tracing::warn!(error = %e, %parent, "registry refresh failed; keeping the held registry"),
        }
    }
}

/// The registry this node holds (children refresh from it).
async fn registry(State(node): State<Node>) -> Result<Json<Jws>, ServiceError> {
    let registry = node.identity.registry.read().map_err(|_| ServiceError::internal(&"registry lock poisoned"))?;
    Ok(Json(registry.jws.clone()))
}

/// Receives an envelope; answers with the signed receipt after the items are committed.
async fn envelopes(
    State(node): State<Node>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let Peer::Member(member) = peer else { return Err(ServiceError::internal(&"unpinned peer passed the guard")) };
    let receipt = node.receive(&member, body, time::OffsetDateTime::now_utc()).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], receipt).into_response())
}

/// A partner's pull of this node's evaluations of one subject (answer: a signed JWS).
async fn evaluations_single(
    State(partners): State<Arc<Partners>>,
    Extension(peer): Extension<Peer>,
    axum::extract::Path(uscc): axum::extract::Path<String>,
) -> Result<Response, ServiceError> {
    answer_pull(&partners, peer, &[uscc], None).await.map_err(crate::evaluations::path_subject_error)
}

/// A partner's bulk pull: `{"subjects": [up to 1,000 USCCs]}`.
async fn evaluations_lookup(
    State(partners): State<Arc<Partners>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Response, ServiceError> {
    let request: crate::evaluations::LookupRequest = ServiceError::strict_body(&body)?;
    answer_pull(&partners, peer, &request.subjects, request.officer.as_deref()).await
}

/// Answers a pull, and writes it to this node's audit log too: which member asked, for which
/// of its officers, about how many subjects, and how it ended.
async fn answer_pull(
    partners: &Partners,
    peer: Peer,
    subjects: &[String],
    officer: Option<&str>,
) -> Result<Response, ServiceError> {
    let Peer::Member(member) = peer else { return Err(ServiceError::internal(&"unpinned peer passed the guard")) };
    let now = time::OffsetDateTime::now_utc();
    let answered = crate::evaluations::answer(partners, &member, officer, subjects, now).await;
    let status = answered.as_ref().map_or_else(|e| e.kind.status(), |_| 200);
    let officer: String = officer.unwrap_or("-").chars().filter(|c| !c.is_control()).take(100).collect();
    let event = gateway_store::audit::AuditEvent {
        at: gateway_core::interchange::format_time(now),
        principal: member.clone(),
        role: "federation_member".into(),
        action: "federation.evaluation_pull".into(),
        target: "/federation/v1/evaluations".into(),
        status: i64::from(status),
        outcome: if status == 200 { "ok" } else { "rejected" }.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        source: member,
        detail: format!("officer {officer} subjects {}", subjects.len()),
    };
    partners.store.audit(event).await.map_err(|e| ServiceError::internal(&e))?;
    let text = answered?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// The hops that brought a record version here, for the node this one sent it to (it is
/// exporting evidence). Only a receiver of the record may ask; anyone else learns nothing.
async fn evidence(
    State(node): State<Node>,
    Extension(peer): Extension<Peer>,
    axum::extract::Path((record_id, version)): axum::extract::Path<(String, i64)>,
) -> Result<Json<crate::evidence::ArrivalHops>, ServiceError> {
    let Peer::Member(member) = peer else { return Err(ServiceError::internal(&"unpinned peer passed the guard")) };
    let not_found = || ServiceError::not_found("发送给您的该记录版本", "a version of this record sent to you");
    let record_id = uuid::Uuid::parse_str(&record_id).map_err(|_| not_found())?;
    let sent = node.ingest.store.sent_with(record_id, version).await.map_err(|e| ServiceError::internal(&e))?;
    if !sent.iter().any(|(_, _, receiver)| *receiver == member) {
        tracing::warn!(peer = %member, %record_id, version, "evidence asked for a record not sent to the peer");
        return Err(not_found());
    }
    match node.arrival_hops(record_id, version).await {
        Ok(hops) => Ok(Json(crate::evidence::ArrivalHops { hops })),
        Err(e) => Err(ServiceError::new(
            ErrorKind::BadGateway,
            "evidence_incomplete",
            format!("无法汇集该记录此前各跳的证据：{e:#}"),
            format!("the earlier hops of this record could not be gathered: {e:#}"),
        )),
    }
}

/// Envelopes waiting for the calling member (pull mode), oldest first.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
}

/// Most envelopes in one `GET events` answer.
const EVENTS_PAGE: i64 = 10;

/// `GET /federation/v1/events?after=<cursor>` (interchange-v1 §9): the envelopes parked for the
/// caller after `cursor`, oldest first, as `{"envelopes": [{"cursor", "envelope"}]}` where
/// `envelope` is the body a push would have posted. The caller answers each with
/// `POST /federation/v1/receipts`.
async fn events(
    State(node): State<Node>,
    Extension(peer): Extension<Peer>,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ServiceError> {
    let Peer::Member(member) = peer else { return Err(ServiceError::internal(&"unpinned peer passed the guard")) };
    let axum::extract::Query(q) = query.map_err(|e| {
        ServiceError::bad_request("bad_query", format!("查询参数错误：{e}"), format!("bad query parameters: {e}"))
    })?;
    let parked =
        node.ingest.store.parked_after(&member, q.after, EVENTS_PAGE).await.map_err(|e| ServiceError::internal(&e))?;
    // The bodies are JSON already: written out as they are.
    let mut out = String::from("{\"envelopes\":[");
    for (i, p) in parked.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"cursor\":{},\"envelope\":{}}}", p.cursor, p.body));
    }
    out.push_str("]}");
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// `POST /federation/v1/receipts` (pull mode; proposed in ADR 0003): the caller's signed
/// receipt for an envelope it collected, or its refusal. Handed to the waiting sender, which
/// verifies it as it would a pushed envelope's.
async fn receipts(
    State(node): State<Node>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ServiceError> {
    let Peer::Member(member) = peer else { return Err(ServiceError::internal(&"unpinned peer passed the guard")) };
    let text = std::str::from_utf8(&body).map_err(|_| {
        ServiceError::bad_request("bad_receipt", "回执不是 UTF-8 文本", "the receipt is not UTF-8 text")
    })?;
    let digest = match serde_json::from_str::<crate::interchange::PullRefusal>(text) {
        Ok(r) => r.refused.envelope_digest,
        Err(_) => {
            let jws: Jws = serde_json::from_str(text).map_err(|e| {
                ServiceError::bad_request(
                    "bad_receipt",
                    format!("回执不是 JWS：{e}"),
                    format!("the receipt is not a JWS: {e}"),
                )
            })?;
            let decoded = jws.decode(gateway_core::interchange::receipt::RECEIPT_TYP).map_err(|e| {
                ServiceError::bad_request(
                    "bad_receipt",
                    format!("回执格式错误：{e}"),
                    format!("malformed receipt: {e}"),
                )
            })?;
            decoded.body["envelope_digest"].as_str().unwrap_or_default().to_owned()
        }
    };
    let waiting =
        node.ingest.store.parked_receipt_in(&member, &digest, text).await.map_err(|e| ServiceError::internal(&e))?;
    if !waiting {
        return Err(ServiceError::not_found("等待该回执的信封", "an envelope waiting for this receipt"));
    }
    node.pull_acks.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// `credit-gateway federation check`: fetches a peer's registry over mutual TLS as `member`
/// and verifies it against the anchor. Returns the peer's registry version.
pub async fn check_link(pki_dir: &std::path::Path, member: &str, url: &str) -> anyhow::Result<u64> {
    use anyhow::Context;
    let node = crate::pki::NodeFiles::new(pki_dir, member);
    let ca = crate::pki::ca_cert(pki_dir);
    let tls =
        crate::tls::client_config(&crate::tls::TlsFiles { ca: &ca, cert: &node.tls_cert(), key: &node.tls_key() })?;
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build()?;
    let resp = client
        .get(format!("{}/federation/v1/registry", url.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("mutual TLS connection to {url} failed"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        anyhow::bail!("{url} refused {member}: {status} {}", resp.text().await.unwrap_or_default());
    }
    let jws: Jws = resp.json().await.context("registry answer")?;
    let anchor: Vec<gateway_core::interchange::registry::RootKey> =
        serde_json::from_slice(&std::fs::read(crate::pki::anchor_file(pki_dir))?)?;
    let (registry, _) =
        Registry::verify(&jws, &anchor, None, time::OffsetDateTime::now_utc(), time::Duration::days(7))?;
    Ok(registry.body.version)
}
