//! A record's delivery trail and lifecycle state, read from what the interchange and the relay
//! already write (no extra writes on the hot path): arrival (records, envelopes), every hop
//! onward (sent_items + the receiver's receipt), publication, dead letters, and events.

use gateway_core::interchange::receipt::{RECEIPT_TYP, ReceiptBody};
use gateway_core::jws::Jws;
use serde::Serialize;
use sqlx::{QueryBuilder, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Backend, DeadLetterRow, Store, StoreError};

/// Everything known here about one record's journey.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Trail {
    pub record_id: Uuid,
    /// Current state: `active`, `disputed`, `withdrawn`, `repaired` or `expired`.
    pub state: StateView,
    /// Oldest version first.
    pub versions: Vec<VersionTrail>,
    /// Lifecycle events about this record held here, oldest first.
    pub events: Vec<EventRef>,
}

/// A record's state as the lifecycle events held here left it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StateView {
    pub state: String,
    /// Whether sanctions based on the record are suspended (objection under verification).
    pub sanctions_suspended: bool,
    /// The correction (record id) whose replacement is the current content, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// One version's trail at this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionTrail {
    pub version: i64,
    pub origin: String,
    /// Received and stored here (one commit: the receipt or push answer follows it).
    pub received_at: String,
    /// The member it came from; absent when a department pushed it here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrived_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival_envelope: Option<String>,
    /// Every envelope that carried it onward, with the receiver's signed acknowledgement.
    pub forwarded: Vec<Hop>,
    /// The first publication here (by the publication sink or a platform adapter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// Every local publication: the sink and each delivering platform adapter.
    pub publications: Vec<Publication>,
    pub dead_letters: Vec<DeadLetterRow>,
}

/// One local publication of a record version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Publication {
    /// `publication` (the sink) or `adapter:<platform>`.
    pub destination: String,
    pub published_at: String,
    /// The sink's file, the platform's URL or the package name.
    pub place: String,
}

/// One onward hop.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Hop {
    pub destination: String,
    pub envelope_digest: String,
    pub envelope_id: String,
    /// When the envelope was sealed and sent.
    pub forwarded_at: String,
    /// When the receiver stored it, from its signed receipt.
    pub acknowledged_at: String,
    /// The receiver's outcome for this record: accepted, new_version, duplicate or rejected.
    pub status: String,
}

/// A lifecycle event about the record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventRef {
    pub record_id: String,
    pub event_type: String,
    pub origin: String,
    pub received_at: String,
}

impl Store {
    /// The trail of `record_id`, or `None` when neither it nor any event about it is held.
    pub async fn trail(&self, record_id: Uuid) -> Result<Option<Trail>, StoreError> {
        let id = record_id.to_string();
        let mut versions = Vec::new();
        let mut events = Vec::new();
        let mut state = None;
        dispatch!(self, pool => {
            let rows = sqlx::query(
                "SELECT r.version, r.origin, r.received_at, r.envelope_digest, e.sender FROM records r \
                 LEFT JOIN envelopes e ON e.digest = r.envelope_digest WHERE r.record_id = $1 ORDER BY r.version",
            )
            .bind(id.as_str())
            .fetch_all(pool)
            .await?;
            for row in rows {
                versions.push(VersionTrail {
                    version: row.try_get(0)?,
                    origin: row.try_get(1)?,
                    received_at: row.try_get(2)?,
                    arrival_envelope: row.try_get(3)?,
                    arrived_from: row.try_get(4)?,
                    forwarded: Vec::new(),
                    published_at: None,
                    publications: Vec::new(),
                    dead_letters: Vec::new(),
                });
            }
            let hops = sqlx::query(
                "SELECT s.version, s.leaf_index, e.receiver, e.digest, e.envelope_id, e.created_at, e.receipt \
                 FROM sent_items s JOIN envelopes e ON e.digest = s.envelope_digest WHERE s.record_id = $1 \
                 ORDER BY e.created_at",
            )
            .bind(id.as_str())
            .fetch_all(pool)
            .await?;
            for row in hops {
                let version: i64 = row.try_get(0)?;
                let leaf: i64 = row.try_get(1)?;
                let receipt: Option<String> = row.try_get(6)?;
                let (acknowledged_at, status) = receipt_outcome(receipt.as_deref(), leaf);
                let hop = Hop {
                    destination: row.try_get(2)?,
                    envelope_digest: row.try_get(3)?,
                    envelope_id: row.try_get(4)?,
                    forwarded_at: row.try_get(5)?,
                    acknowledged_at,
                    status,
                };
                if let Some(v) = versions.iter_mut().find(|v| v.version == version) {
                    v.forwarded.push(hop);
                }
            }
            let published = sqlx::query(
                "SELECT version, destination, published_at, file FROM publications WHERE record_id = $1 \
                 ORDER BY published_at, destination",
            )
            .bind(id.as_str())
            .fetch_all(pool)
            .await?;
            for row in published {
                let version: i64 = row.try_get(0)?;
                if let Some(v) = versions.iter_mut().find(|v| v.version == version) {
                    let p = Publication {
                        destination: row.try_get(1)?,
                        published_at: row.try_get(2)?,
                        place: row.try_get(3)?,
                    };
                    v.published_at.get_or_insert_with(|| p.published_at.clone());
                    v.publications.push(p);
                }
            }
            let mut qb = QueryBuilder::new("SELECT record_id, record_type, origin, received_at FROM records WHERE target_record_id = ");
            qb.push_bind(id.as_str()).push(" ORDER BY seq");
            for row in qb.build().fetch_all(pool).await? {
                events.push(EventRef {
                    record_id: row.try_get(0)?,
                    event_type: row.try_get(1)?,
                    origin: row.try_get(2)?,
                    received_at: row.try_get(3)?,
                });
            }
            let row = sqlx::query(
                "SELECT state, sanctions_suspended, corrected_by, last_event, last_event_type, updated_at \
                 FROM record_states WHERE record_id = $1",
            )
            .bind(id.as_str())
            .fetch_optional(pool)
            .await?;
            if let Some(row) = row {
                state = Some(StateView {
                    state: row.try_get(0)?,
                    sanctions_suspended: row.try_get::<i64, _>(1)? != 0,
                    corrected_by: row.try_get(2)?,
                    last_event: row.try_get(3)?,
                    last_event_type: row.try_get(4)?,
                    updated_at: row.try_get(5)?,
                });
            }
        });
        let letters = self.dead_letters_of(record_id).await?;
        for letter in letters {
            if let Some(v) = versions.iter_mut().find(|v| v.version == letter.version) {
                v.dead_letters.push(letter);
            }
        }
        if versions.is_empty() && events.is_empty() && state.is_none() {
            return Ok(None);
        }
        let state = state.unwrap_or(StateView {
            state: "active".into(),
            sanctions_suspended: false,
            corrected_by: None,
            last_event: None,
            last_event_type: None,
            updated_at: None,
        });
        Ok(Some(Trail { record_id, state, versions, events }))
    }
}

/// The receipt's time and the outcome at `leaf`, from a stored receipt JWS.
fn receipt_outcome(receipt: Option<&str>, leaf: i64) -> (String, String) {
    let body = receipt
        .and_then(|r| serde_json::from_str::<Jws>(r).ok())
        .and_then(|jws| jws.decode(RECEIPT_TYP).ok())
        .and_then(|d| serde_json::from_value::<ReceiptBody>(d.body).ok());
    match body {
        Some(b) => {
            let status = usize::try_from(leaf)
                .ok()
                .and_then(|i| b.outcomes.get(i))
                .map_or_else(|| "unknown".to_owned(), |o| o.status.clone());
            (b.received_at, status)
        }
        None => (String::new(), "unknown".into()),
    }
}
