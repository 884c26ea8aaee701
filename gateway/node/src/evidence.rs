//! Evidence export (interchange-v1 §8): gathering a record version's hops, origin first, each
//! with its envelope, the record's proof in it, and the receiver's receipt.
//!
//! A node holds the hop that brought an item to it (its own receipt is stored with the
//! envelope) and the hops it sent onward (the peers' receipts). For an item relayed to it, the
//! earlier hops are held by the node that sent it here: it asks that node over mutual TLS
//! (`GET /federation/v1/evidence/{record_id}/{version}`), which does the same in turn. See ADR
//! 0001 §3 for why the wire format cannot carry them.

use anyhow::{Context, anyhow, bail, ensure};
use gateway_core::canonical::Sha256Digest;
use gateway_core::interchange::envelope::Proof;
use gateway_core::interchange::evidence::{Bundle, Hop};
use gateway_core::interchange::receipt::{RECEIPT_TYP, ReceiptBody};
use gateway_core::interchange::registry::Registry;
use gateway_core::jws::Jws;
use gateway_core::merkle;
use gateway_store::{Store, StoredEnvelope};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::interchange::Node;

/// The answer of `GET /federation/v1/evidence/{record_id}/{version}`: the hops up to and
/// including the one that brought the record version to the answering node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalHops {
    pub hops: Vec<Hop>,
}

/// How a record version reached this store.
enum Arrival {
    /// Pushed here, by one of this node's own departments.
    Own,
    /// Straight from its origin: this hop is the first.
    FromOrigin(Hop),
    /// Relayed: this hop, from `sender`, which holds the earlier ones.
    Relayed { sender: String, here: Hop },
}

async fn arrival(store: &Store, record_id: Uuid, version: i64) -> anyhow::Result<Arrival> {
    let arrivals = store.arrivals(&[(record_id, version)]).await?;
    let Some(arrival) = arrivals.get(&(record_id, version)) else {
        let held = store.versions(record_id).await?;
        ensure!(held.iter().any(|r| r.version == version), "record {record_id} v{version} is not held here");
        return Ok(Arrival::Own);
    };
    let envelope = store
        .envelope(&arrival.envelope_digest)
        .await?
        .ok_or_else(|| anyhow!("arrival envelope {} is missing from the store", arrival.envelope_digest))?;
    let sender = envelope.sender.clone();
    let here = hop_of(envelope, arrival.leaf_index)?;
    Ok(match arrival.origin_proof {
        None => Arrival::FromOrigin(here),
        Some(_) => Arrival::Relayed { sender, here },
    })
}

/// The evidence bundle of a record version from `store` alone, with `registry` as the registry
/// in force: for records pushed here or received straight from their origin (a relayed
/// record's earlier hops are held by the node that sent it; [`Node::export_evidence`] asks it).
/// The upgrade test uses it on a database an earlier version wrote.
pub async fn export_held(
    store: &Store,
    registry: &Registry,
    record_id: Uuid,
    version: Option<i64>,
) -> anyhow::Result<Bundle> {
    assemble(store, registry, record_id, version, async |v| match arrival(store, record_id, v).await? {
        Arrival::Own => Ok(Vec::new()),
        Arrival::FromOrigin(hop) => Ok(vec![hop]),
        Arrival::Relayed { sender, .. } => {
            bail!("record {record_id} v{v} was relayed by {sender}, which holds its earlier hops")
        }
    })
    .await
}

impl Node {
    /// The hops that brought a record version to this node, origin first. Empty for a record
    /// of this node's own departments.
    pub async fn arrival_hops(&self, record_id: Uuid, version: i64) -> anyhow::Result<Vec<Hop>> {
        let (sender, here) = match arrival(&self.ingest.store, record_id, version).await? {
            Arrival::Own => return Ok(Vec::new()),
            Arrival::FromOrigin(hop) => return Ok(vec![hop]),
            Arrival::Relayed { sender, here } => (sender, here),
        };
        let url = self.endpoint_of(&sender).ok_or_else(|| anyhow!("no federation endpoint for {sender}"))?;
        let url = format!("{}/federation/v1/evidence/{record_id}/{version}", url.trim_end_matches('/'));
        let resp =
            self.identity.client.get(&url).send().await.with_context(|| format!("asking {sender} for earlier hops"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("{sender} did not give the earlier hops: {status} {}", resp.text().await.unwrap_or_default());
        }
        let mut earlier: ArrivalHops = resp.json().await.with_context(|| format!("{sender}'s evidence answer"))?;
        // What a peer sends is only checked when the bundle is verified; here it must at
        // least be a non-empty prefix.
        ensure!(!earlier.hops.is_empty(), "{sender} answered no hops for a record it relayed");
        earlier.hops.push(here);
        Ok(earlier.hops)
    }

    /// Exports the evidence bundle of a record version (the latest held if `version` is
    /// `None`): the hops that brought it here, then the first onward hop a receiver accepted.
    pub async fn export_evidence(&self, record_id: Uuid, version: Option<i64>) -> anyhow::Result<Bundle> {
        let registry = self.identity.registry.read().map_err(|_| anyhow!("registry lock poisoned"))?.clone();
        assemble(&self.ingest.store, &registry, record_id, version, async |v| self.arrival_hops(record_id, v).await)
            .await
    }
}

/// A record version's bundle: the hops that brought it here (`arrival_hops`), then the first
/// onward hop a receiver accepted.
async fn assemble(
    store: &Store,
    registry: &Registry,
    record_id: Uuid,
    version: Option<i64>,
    arrival_hops: impl AsyncFnOnce(i64) -> anyhow::Result<Vec<Hop>>,
) -> anyhow::Result<Bundle> {
    let versions = store.versions(record_id).await?;
    let record = match version {
        Some(v) => versions.iter().find(|r| r.version == v),
        None => versions.last(),
    }
    .ok_or_else(|| match version {
        Some(v) => anyhow!("record {record_id} v{v} is not held here"),
        None => anyhow!("record {record_id} is not held here"),
    })?;
    let content: serde_json::Value = serde_json::from_str(&record.content)?;
    let item = json!({"origin": record.origin, "record_id": record.record_id.to_string(), "version": record.version,
                          "record_type": record.record_type, "content": content});
    let mut hops = arrival_hops(record.version).await?;
    for (digest, leaf, _) in store.sent_with(record_id, record.version).await? {
        let Some(envelope) = store.envelope(&digest).await? else { continue };
        let hop = hop_of(envelope, leaf)?;
        if accepted(&hop.receipt, &record.item_hash(), hop.proof.index) {
            hops.push(hop);
            break;
        }
    }
    ensure!(
        !hops.is_empty(),
        "record {record_id} v{} was pushed here and has not been sent in an envelope yet: nothing is signed about it",
        record.version
    );
    Bundle::assemble(item, hops, registry).map_err(|e| anyhow!(e))
}

/// A stored envelope as the hop of the item at `leaf`: its JWS, the rebuilt proof, its receipt.
fn hop_of(envelope: StoredEnvelope, leaf: i64) -> anyhow::Result<Hop> {
    let index = usize::try_from(leaf)?;
    let leaves: Vec<Sha256Digest> = envelope.item_hashes.iter().map(|h| merkle::leaf_hash(&h.0)).collect();
    let path = merkle::audit_path(&leaves, index)
        .ok_or_else(|| anyhow!("leaf {index} is outside envelope {}", envelope.digest))?;
    let receipt = envelope.receipt.ok_or_else(|| anyhow!("envelope {} has no stored receipt", envelope.digest))?;
    Ok(Hop {
        envelope: serde_json::from_str(&envelope.envelope)?,
        proof: Proof {
            index: index as u64,
            size: leaves.len() as u64,
            path: path.iter().map(Sha256Digest::to_hex).collect(),
        },
        receipt: serde_json::from_str(&receipt)?,
    })
}

/// Whether a (stored, already verified) receipt accepted the item at `index`.
fn accepted(receipt: &Jws, item_hash: &Sha256Digest, index: u64) -> bool {
    let Ok(decoded) = receipt.decode(RECEIPT_TYP) else { return false };
    let Ok(body) = serde_json::from_value::<ReceiptBody>(decoded.body) else { return false };
    usize::try_from(index).ok().and_then(|i| body.outcomes.get(i)).is_some_and(|o| {
        o.item_hash == item_hash.to_hex() && matches!(o.status.as_str(), "accepted" | "duplicate" | "new_version")
    })
}
