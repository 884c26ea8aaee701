//! Operator endpoints of the relay: a record's trail and state, the queues, the dead letters
//! and resending them.

use crate::api::error::Params;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use gateway_store::{DeadLetterRow, QueueStats, Trail};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ErrorBody, ServiceError};
use crate::auth::Principal;
use crate::ingest::Ingest;
use crate::relay::RelayState;

/// A record's delivery trail at this node: received and stored, every hop onward with the
/// receiver's signed acknowledgement, publication, dead letters, lifecycle events and state.
#[utoipa::path(
    get,
    path = "/api/v1/records/{id}/trail",
    tag = "relay",
    params(("id" = uuid::Uuid, Path, description = "Record id (UUID)")),
    responses((status = 200, body = Trail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub(super) async fn trail(
    State(ingest): State<Arc<Ingest>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Trail>, ServiceError> {
    let id = super::parse_record_id(&id)?;
    super::visible_versions(&ingest, &principal, id).await?;
    match ingest.store.trail(id).await.map_err(|e| ServiceError::internal(&e))? {
        Some(t) => Ok(Json(t)),
        None => Err(ServiceError::not_found("该记录", "record")),
    }
}

/// One destination's queue and how its deliveries are going.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxEntry {
    #[serde(flatten)]
    pub queue: QueueStats,
    /// Absent when no sender runs for it in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::relay::DestinationStatus>,
}

/// Every destination's queue (cursor, records waiting after it, dead letters) and its
/// sender's state (consecutive failures, last error, last success).
#[utoipa::path(get, path = "/api/v1/outbox", tag = "relay", responses((status = 200, body = Vec<OutboxEntry>)))]
pub(super) async fn outbox(
    State(ingest): State<Arc<Ingest>>,
    State(relay): State<RelayState>,
) -> Result<Json<Vec<OutboxEntry>>, ServiceError> {
    let mut queues = ingest.store.queue_stats().await.map_err(|e| ServiceError::internal(&e))?;
    let mut status = relay.status.snapshot();
    // A destination that has not settled anything yet has no cursor row: list it too.
    let last = ingest.store.last_seq().await.map_err(|e| ServiceError::internal(&e))?;
    for name in status.keys() {
        if !queues.iter().any(|q| &q.destination == name) {
            queues.push(QueueStats {
                destination: name.clone(),
                position: 0,
                backlog: last,
                dead: 0,
                oldest_waiting: None,
            });
        }
    }
    queues.sort_by(|a, b| a.destination.cmp(&b.destination));
    Ok(Json(queues.into_iter().map(|q| OutboxEntry { status: status.remove(&q.destination), queue: q }).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadLetterParams {
    /// Only this destination (a member id or `publication`).
    destination: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    limit: Option<i64>,
}

/// Records a destination refused for good, or that wait behind one, with the reason.
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters",
    tag = "relay",
    params(DeadLetterParams),
    responses((status = 200, body = Vec<DeadLetterRow>), (status = 400, body = ErrorBody))
)]
pub(super) async fn dead_letters(
    State(ingest): State<Arc<Ingest>>,
    Params(p): Params<DeadLetterParams>,
) -> Result<Json<Vec<DeadLetterRow>>, ServiceError> {
    let limit = super::page_limit(p.limit)?;
    ingest.store.dead_letters(p.destination.as_deref(), limit).await.map(Json).map_err(|e| ServiceError::internal(&e))
}

/// What to resend.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    /// The destination whose dead letters to resend.
    pub destination: String,
    /// Only this record's dead letters; all of the destination's when absent.
    pub record_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResendAnswer {
    /// Dead letters queued for delivery again (in their original order, before new records).
    pub queued: u64,
}

/// Queues dead letters for delivery again, after their cause is fixed.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/resend",
    tag = "relay",
    request_body = ResendRequest,
    responses((status = 200, body = ResendAnswer), (status = 400, body = ErrorBody))
)]
pub(super) async fn resend(
    State(ingest): State<Arc<Ingest>>,
    body: Result<Json<ResendRequest>, JsonRejection>,
) -> Result<Json<ResendAnswer>, ServiceError> {
    let Json(req) = body.map_err(|e| {
        ServiceError::bad_request("bad_request", format!("请求体错误：{e}"), format!("bad request body: {e}"))
    })?;
    let queued =
        ingest.store.request_resend(&req.destination, req.record_id).await.map_err(|e| ServiceError::internal(&e))?;
    tracing::info!(destination = %req.destination, record_id = ?req.record_id, queued, "dead letters queued for resending");
    Ok(Json(ResendAnswer { queued }))
}
