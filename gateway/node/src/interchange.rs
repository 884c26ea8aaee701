//! The node's side of the signed interchange: opening envelopes from peers, validating and
//! storing their items with a signed receipt, and sending envelopes with receipt checking.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use gateway_core::canonical::{Sha256Digest, canonical_hash, canonical_string, item_canonical, parse_strict};
use gateway_core::crypto::SigningKey;
use gateway_core::interchange::envelope::{
    self, Addressing, Envelope, EnvelopeError, OpenedItem, OriginProof, Proof, Receiving, WireItem,
};
use gateway_core::interchange::receipt::{self, ReceiptBody, ReceiptOutcome, Sent};
use gateway_core::interchange::registry::Registry;
use gateway_core::interchange::{format_time, is_uuid};
use gateway_core::jws::Jws;
use gateway_core::merkle;
use gateway_core::record::FieldError;
use gateway_store::{ArrivalOf, EnvelopeIn, EnvelopeStored, OriginRef, RelayedItem, RelayedOutcome, StoredRecord};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::{ErrorKind, ServiceError};
use crate::ingest::Ingest;
use gateway_core::date::today_in_china;

/// How far an envelope's `created_at` may be from our clock.
pub const CLOCK_WINDOW: Duration = Duration::minutes(5);

/// A sealed envelope ready to post, with what the sender must remember of it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: bytes::Bytes,
    pub record: EnvelopeIn,
    pub item_hashes: Vec<Sha256Digest>,
    /// The record versions it carries, in leaf order.
    pub carried: Vec<(Uuid, i64)>,
}

/// An envelope as received: items kept as raw JSON until they are parsed strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope<'a> {
    envelope: Jws,
    #[serde(borrow)]
    items: Vec<WireItemRaw<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireItemRaw<'a> {
    #[serde(borrow)]
    item: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    proof: ProofRaw<'a>,
    /// Kept as received (split into the origin envelope and the proof, see `OriginRef`), and
    /// parsed only to be verified.
    #[serde(default, borrow)]
    origin_proof: Option<&'a serde_json::value::RawValue>,
}

/// An `origin_proof` as received, split into its two members without parsing them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginProofRaw<'a> {
    #[serde(borrow)]
    envelope: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    proof: &'a serde_json::value::RawValue,
}

/// A proof as received: its path borrowed from the body (hex needs no unescaping).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofRaw<'a> {
    index: u64,
    size: u64,
    #[serde(borrow)]
    path: Vec<&'a str>,
}

/// This node's signing identity.
pub struct Signer {
    pub key: SigningKey,
    pub kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.kid)
    }
}

/// This node's federation identity: who it is, the registry it trusts (replaced when a newer
/// one is adopted), its signing key and the mutual-TLS client it calls peers with. Loaded once
/// at start-up; the interchange, evaluation pulls, SLA tracking, metrics and alerts share it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub member_id: String,
    pub registry: Arc<RwLock<Registry>>,
    pub signer: Arc<Signer>,
    /// How long an expired registry is still used (loudly) before traffic is refused.
    pub registry_grace: Duration,
    /// This node's mutual-TLS client for calling peers.
    pub client: reqwest::Client,
    /// Configured federation URLs that replace the registry's endpoints (`[federation.peers]`).
    pub peers: Arc<std::collections::BTreeMap<String, String>>,
    /// When this node's mutual-TLS certificate expires.
    pub certificate_expires: Option<OffsetDateTime>,
}

impl Identity {
    /// A copy of the registry in force.
    pub fn registry_now(&self) -> Result<Registry, ServiceError> {
        self.registry.read().map(|r| r.clone()).map_err(|_| ServiceError::internal(&"registry lock poisoned"))
    }
}

/// The node's side of the interchange: its identity, and the push path received items take.
#[derive(Debug, Clone)]
pub struct Node {
    pub identity: Identity,
    pub ingest: Arc<Ingest>,
    /// Woken when a child returns a receipt for a parked envelope (pull mode).
    pub pull_acks: Arc<tokio::sync::Notify>,
}

/// What a registry refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Unchanged { version: u64 },
    Updated { from: u64, to: u64 },
}

impl Node {
    pub fn member_id(&self) -> &str {
        &self.identity.member_id
    }

    /// Fetches the parent's registry over mutual TLS and adopts it if it is signed by a root
    /// of the registry held now, is not older, and still lists this node. A refused registry
    /// leaves the held one in place.
    pub async fn refresh_registry(&self, parent_url: &str, now: OffsetDateTime) -> anyhow::Result<Refresh> {
        let url = format!("{}/federation/v1/registry", parent_url.trim_end_matches('/'));
        let resp = self.identity.client.get(&url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{url} answered {}", resp.status());
        let jws: Jws = resp.json().await?;
        let (held, trusted) = {
            let r = self.identity.registry.read().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
            (r.body.version, r.trusted_roots().to_vec())
        };
        let (fresh, _) = Registry::verify(&jws, &trusted, Some(held), now, self.identity.registry_grace)?;
        if fresh.body.version == held {
            return Ok(Refresh::Unchanged { version: held });
        }
        anyhow::ensure!(
            fresh.member(self.member_id()).is_some(),
            "registry {} no longer lists {}",
            fresh.body.version,
            self.member_id()
        );
        let to = fresh.body.version;
        *self.identity.registry.write().map_err(|_| anyhow::anyhow!("registry lock poisoned"))? = fresh;
        tracing::info!(from = held, to, "registry updated from the parent");
        Ok(Refresh::Updated { from: held, to })
    }

    /// The parent's federation endpoint.
    pub fn parent_endpoint(&self) -> Option<String> {
        let parent = self.identity.registry.read().ok()?.member(self.member_id())?.parent.clone()?;
        self.endpoint_of(&parent)
    }

    /// A member's federation base URL: the configured override, else the registry's.
    pub fn endpoint_of(&self, member: &str) -> Option<String> {
        if let Some(url) = self.identity.peers.get(member) {
            return Some(url.clone());
        }
        self.identity.registry.read().ok()?.member(member).map(|m| m.endpoint.clone())
    }

    /// Handles `POST /federation/v1/envelopes` from the authenticated member `peer`. Answers
    /// with the signed receipt as JSON text, exactly as stored.
    pub async fn receive(&self, peer: &str, body: bytes::Bytes, now: OffsetDateTime) -> Result<String, ServiceError> {
        // Parsing, hashing, the signature and every record's validation are CPU work: one
        // blocking task, items in parallel, as on the push path, so request I/O keeps flowing.
        let registry = self.identity.registry_now()?;
        let gw = Arc::clone(&self.ingest);
        let peer = peer.to_owned();
        let today = today_in_china(now);
        let checked = tokio::task::spawn_blocking(move || {
            let at = Receiving { registry: &registry, me: &gw.member_id, now, clock_window: CLOCK_WINDOW };
            open_and_check(&gw, &peer, &body, &at, today)
        })
        .await
        .map_err(|e| ServiceError::internal(&e))??;
        let CheckedEnvelope { envelope: envelope_jws, header, digest, item_hashes, items: mut checked } = checked;
        self.ingest.require_targets(&mut checked).await?;

        let mut errors = Vec::with_capacity(checked.len());
        let mut relayed = Vec::with_capacity(checked.len());
        for c in checked {
            match c {
                Ok(item) => {
                    errors.push(Vec::new());
                    relayed.push(Some(item));
                }
                Err(e) => {
                    errors.push(e);
                    relayed.push(None);
                }
            }
        }
        let h = &header;
        let stored_env = EnvelopeIn {
            digest,
            envelope_id: h.envelope_id.clone(),
            sender: h.sender.clone(),
            receiver: h.receiver.clone(),
            seq: i64::try_from(h.seq).unwrap_or(i64::MAX),
            created_at: h.created_at.clone(),
            received_at: format_time(now),
            envelope: serde_json::to_string(&envelope_jws).unwrap_or_default(),
            item_hashes: item_hashes.iter().map(Sha256Digest::to_hex).collect(),
            items: relayed,
        };
        let signer = Arc::clone(&self.identity.signer);
        let (envelope_id, digest, sender, receiver) =
            (h.envelope_id.clone(), digest.to_hex(), h.sender.clone(), h.receiver.clone());
        let make_receipt = move |outcomes: &[Option<RelayedOutcome>]| {
            let body = ReceiptBody {
                envelope_id,
                envelope_digest: digest,
                sender,
                receiver,
                received_at: format_time(now),
                outcomes: outcomes
                    .iter()
                    .zip(&item_hashes)
                    .zip(errors)
                    .enumerate()
                    .map(|(i, ((o, hash), errors))| ReceiptOutcome {
                        index: i as u64,
                        item_hash: hash.to_hex(),
                        status: status(*o).into(),
                        errors: match o {
                            Some(RelayedOutcome::Conflict) => vec![FieldError::new(
                                "/version",
                                "item.version_conflict",
                                "同一记录编号和版本号已存有不同内容",
                                "this record id and version are already stored with other content",
                            )],
                            _ => errors,
                        },
                    })
                    .collect(),
            };
            serde_json::to_string(&receipt::sign_receipt(&body, &signer.key, &signer.kid)).unwrap_or_default()
        };
        let stored = self
            .ingest
            .store
            .store_envelope(stored_env, Box::new(make_receipt))
            .await
            .map_err(|e| ServiceError::internal(&e))?;
        let receipt = match stored {
            EnvelopeStored::New { receipt } => {
                tracing::info!(sender = %h.sender, envelope_id = %h.envelope_id, items = h.count, "envelope stored");
                receipt
            }
            EnvelopeStored::Repeat { receipt } => receipt,
            EnvelopeStored::Replay => {
                tracing::warn!(sender = %h.sender, envelope_id = %h.envelope_id, "envelope id replayed with other content");
                return Err(ServiceError::new(
                    ErrorKind::Conflict,
                    "replay",
                    format!("信封编号 {} 已被该发送方用于另一信封（重放）", h.envelope_id),
                    format!(
                        "envelope id {} was already used by this sender for another envelope (replay)",
                        h.envelope_id
                    ),
                ));
            }
        };
        Ok(receipt)
    }

    /// Sends stored records to `receiver` at `url` as one envelope, verifies the signed
    /// receipt and stores it. Returns the verified receipt body.
    pub async fn send(
        &self,
        receiver: &str,
        url: &str,
        records: &[StoredRecord],
        now: OffsetDateTime,
    ) -> anyhow::Result<ReceiptBody> {
        let prepared = self.prepare(receiver, records, now).await?;
        self.deliver(url, &prepared).await
    }

    /// Builds and signs the envelope for `records` to `receiver`. Records that arrived from
    /// another node travel with their origin's envelope and proof.
    pub async fn prepare(
        &self,
        receiver: &str,
        records: &[StoredRecord],
        now: OffsetDateTime,
    ) -> anyhow::Result<Prepared> {
        let me = self.member_id();
        let relayed: Vec<(Uuid, i64)> =
            records.iter().filter(|r| r.origin != me).map(|r| (r.record_id, r.version)).collect();
        let mut arrivals =
            if relayed.is_empty() { HashMap::new() } else { self.ingest.store.arrivals(&relayed).await? };
        let records: Vec<(StoredRecord, Option<ArrivalOf>)> =
            records.iter().map(|r| (r.clone(), arrivals.remove(&(r.record_id, r.version)))).collect();
        self.prepare_forwarding(receiver, &records, now).await
    }

    /// [`Node::prepare`] for records read with where they arrived from
    /// (`Store::records_to_forward`, one query), as the relay reads them.
    pub async fn prepare_forwarding(
        &self,
        receiver: &str,
        records: &[(StoredRecord, Option<ArrivalOf>)],
        now: OffsetDateTime,
    ) -> anyhow::Result<Prepared> {
        let me = self.member_id().to_owned();
        let origin_proofs = self.origin_proofs(records).await?;
        // Each item's RFC 8785 text straight from the stored canonical content: it is both
        // what is hashed and what is sent, so nothing is parsed or re-serialised.
        let items: Vec<String> = records
            .iter()
            .map(|(r, _)| item_canonical(&r.origin, &r.record_id.to_string(), r.version, &r.record_type, &r.content))
            .collect();
        let item_hashes: Vec<Sha256Digest> = items.iter().map(|i| Sha256Digest::of(i.as_bytes())).collect();
        let envelope_id = Uuid::now_v7().to_string();
        let seq = now.unix_timestamp_nanos() as u64 / 1_000_000;
        let to = Addressing { envelope_id: &envelope_id, sender: &me, receiver, seq, created_at: now };
        let (jws, body) = envelope::seal_text(
            &to,
            &items,
            &origin_proofs,
            &item_hashes,
            &self.identity.signer.key,
            &self.identity.signer.kid,
        );
        Ok(Prepared {
            body: body.into(),
            record: EnvelopeIn {
                digest: jws.digest(),
                envelope_id,
                sender: me,
                receiver: receiver.to_owned(),
                seq: i64::try_from(seq).unwrap_or(i64::MAX),
                created_at: format_time(now),
                received_at: format_time(now),
                envelope: serde_json::to_string(&jws)?,
                item_hashes: item_hashes.iter().map(Sha256Digest::to_hex).collect(),
                items: Vec::new(),
            },
            item_hashes,
            carried: records.iter().map(|(r, _)| (r.record_id, r.version)).collect(),
        })
    }

    /// For each record, the JSON of what proves it came from its origin when this node is not
    /// the origin: the relayed origin proof kept with it (as stored), or the envelope it arrived
    /// in straight from the origin and its proof there (rebuilt from the stored item hashes).
    async fn origin_proofs<'r>(
        &self,
        records: &'r [(StoredRecord, Option<ArrivalOf>)],
    ) -> anyhow::Result<Vec<Option<Cow<'r, str>>>> {
        let me = self.member_id();
        // The envelope's JWS as JSON and every leaf's audit path, per arrival envelope.
        let mut envelopes: HashMap<String, (String, Vec<Vec<Sha256Digest>>)> = HashMap::new();
        let mut proofs = Vec::with_capacity(records.len());
        for (r, arrival) in records {
            if r.origin == me {
                proofs.push(None);
                continue;
            }
            let arrival = arrival.as_ref().ok_or_else(|| {
                anyhow::anyhow!("record {} v{} of {} has no arrival envelope here", r.record_id, r.version, r.origin)
            })?;
            if let Some(json) = &arrival.origin_proof {
                proofs.push(Some(Cow::Borrowed(json.as_str())));
                continue;
            }
            if !envelopes.contains_key(&arrival.envelope_digest) {
                let stored = self.ingest.store.envelope(&arrival.envelope_digest).await?.ok_or_else(|| {
                    anyhow::anyhow!("arrival envelope {} of record {} is missing", arrival.envelope_digest, r.record_id)
                })?;
                let leaves: Vec<Sha256Digest> = stored.item_hashes.iter().map(|h| merkle::leaf_hash(&h.0)).collect();
                let (_, paths) = merkle::root_and_proofs(&leaves);
                // Re-serialised once per envelope, so every proof carries the same canonical text.
                let jws: Jws = serde_json::from_str(&stored.envelope)?;
                envelopes.insert(arrival.envelope_digest.clone(), (serde_json::to_string(&jws)?, paths));
            }
            let (jws, paths) = &envelopes[&arrival.envelope_digest];
            let index = usize::try_from(arrival.leaf_index)?;
            let path = paths.get(index).ok_or_else(|| anyhow::anyhow!("leaf {index} is outside its envelope"))?;
            // The JSON of `OriginProof { envelope, proof }`, without re-serialising the envelope
            // for every record it carried.
            let mut json = Vec::with_capacity(jws.len() + path.len() * 67 + 64);
            json.extend_from_slice(br#"{"envelope":"#);
            json.extend_from_slice(jws.as_bytes());
            json.extend_from_slice(br#","proof":"#);
            envelope::write_proof(&mut json, index as u64, paths.len() as u64, path);
            json.push(b'}');
            proofs.push(Some(Cow::Owned(String::from_utf8(json)?)));
        }
        Ok(proofs)
    }

    /// Posts a prepared envelope, verifies the receipt against what was sent, and stores both.
    pub async fn deliver(&self, url: &str, p: &Prepared) -> anyhow::Result<ReceiptBody> {
        let (body, receipt_text) = self.post(url, p, None).await?;
        self.ingest.store.store_sent(&p.record, &receipt_text, &p.carried).await?;
        Ok(body)
    }

    /// Posts a prepared envelope and verifies the receipt against what was sent. Returns the
    /// receipt's body and its exact text (what gets stored: no second serialisation).
    pub async fn post(
        &self,
        url: &str,
        p: &Prepared,
        timeout: Option<std::time::Duration>,
    ) -> Result<(ReceiptBody, String), DeliveryError> {
        let receiver = &p.record.receiver;
        let mut request = self
            .identity
            .client
            .post(format!("{}/federation/v1/envelopes", url.trim_end_matches('/')))
            .header("content-type", "application/json")
            .body(p.body.clone());
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        let transient = |e: anyhow::Error| DeliveryError::Transient(e.context(format!("delivering to {receiver}")));
        let resp = request.send().await.map_err(|e| transient(e.into()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            // 408 and 429 ask to come back later; other 4xx judge the envelope itself.
            if status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            {
                return Err(DeliveryError::Refused { receiver: receiver.clone(), status: status.as_u16(), body });
            }
            return Err(transient(anyhow::anyhow!("{receiver} answered {status}: {body}")));
        }
        let receipt_text = resp.text().await.map_err(|e| transient(e.into()))?;
        self.check_receipt(p, receipt_text)
    }

    /// Pull mode: parks a prepared envelope for its receiver to collect
    /// (`GET /federation/v1/events`) and waits up to `timeout` for the receipt it returns
    /// (`POST /federation/v1/receipts`), which is verified exactly as a pushed envelope's.
    pub async fn park_and_wait(
        &self,
        p: &Prepared,
        timeout: std::time::Duration,
    ) -> Result<(ReceiptBody, String), DeliveryError> {
        let receiver = &p.record.receiver;
        let digest = p.record.digest.to_hex();
        let store = &self.ingest.store;
        let transient = |e: anyhow::Error| DeliveryError::Transient(e.context(format!("parking for {receiver}")));
        let body = std::str::from_utf8(&p.body).map_err(|e| transient(e.into()))?;
        let at = format_time(OffsetDateTime::now_utc());
        store.park(receiver, &digest, body, &at).await.map_err(|e| transient(e.into()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let answer = loop {
            let acked = self.pull_acks.notified();
            match store.parked_receipt(&digest).await {
                Ok(Some(text)) => break Ok(text),
                Ok(None) => {}
                Err(e) => break Err(transient(e.into())),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Err(transient(anyhow::anyhow!("{receiver} did not collect the envelope within {timeout:?}")));
            }
            // A receipt wakes us; the bounded wait also covers one posted to another replica.
            let _ = tokio::time::timeout((deadline - now).min(std::time::Duration::from_secs(1)), acked).await;
        };
        // Settled or given up: a new attempt parks a new envelope.
        let _ = store.unpark(receiver, Some(&digest)).await;
        let text = answer?;
        if let Ok(refusal) = serde_json::from_str::<PullRefusal>(&text) {
            let status = refusal.refused.status;
            // As for a push: the child's own trouble (5xx, 408, 429) is worth retrying.
            if status >= 500 || status == 408 || status == 429 {
                let error = refusal.refused.error;
                return Err(transient(anyhow::anyhow!("{receiver} could not take the envelope: {status} {error}")));
            }
            return Err(DeliveryError::Refused {
                receiver: receiver.clone(),
                status: refusal.refused.status,
                body: refusal.refused.error.to_string(),
            });
        }
        self.check_receipt(p, text)
    }

    /// Verifies a receipt (JSON text) against the envelope it answers.
    fn check_receipt(&self, p: &Prepared, receipt_text: String) -> Result<(ReceiptBody, String), DeliveryError> {
        let receiver = &p.record.receiver;
        let transient = |e: anyhow::Error| DeliveryError::Transient(e.context(format!("receipt from {receiver}")));
        let receipt_jws: Jws = serde_json::from_str(&receipt_text).map_err(|e| transient(e.into()))?;
        let sent = Sent {
            envelope_id: &p.record.envelope_id,
            digest: p.record.digest,
            sender: &p.record.sender,
            receiver,
            item_hashes: &p.item_hashes,
        };
        let registry =
            self.identity.registry_now().map_err(|_| transient(anyhow::anyhow!("registry lock poisoned")))?;
        // A receipt that does not verify proves nothing: send again (the receiver answers
        // `duplicate` for what it already holds) rather than record an unproven delivery.
        let body = receipt::verify_receipt(&receipt_jws, &sent, &registry).map_err(|e| transient(e.into()))?;
        Ok((body, receipt_text))
    }
}

/// What a child that collects envelopes (pull mode) answers when it refuses one: the status
/// and error body a push would have got.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRefusal {
    pub refused: Refusal,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub envelope_digest: String,
    pub status: u16,
    pub error: Value,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: a transport failure, a timeout, 5xx, 408/429, or a receipt that does not
    /// verify.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// The receiver refused the envelope (a 4xx other than 408/429): the same content will be
    /// refused again.
    #[error("{receiver} refused the envelope: {status} {body}")]
    Refused { receiver: String, status: u16, body: String },
}

fn status(o: Option<RelayedOutcome>) -> &'static str {
    match o {
        Some(RelayedOutcome::Accepted) => "accepted",
        Some(RelayedOutcome::NewVersion) => "new_version",
        Some(RelayedOutcome::Duplicate) => "duplicate",
        Some(RelayedOutcome::Conflict) | None => "rejected",
    }
}

/// A received envelope whose signature, addressing and Merkle root hold, with each item
/// validated (`Err` = rejected with these field errors).
struct CheckedEnvelope {
    envelope: Jws,
    header: envelope::EnvelopeHeader,
    digest: Sha256Digest,
    item_hashes: Vec<Sha256Digest>,
    items: Vec<Result<RelayedItem, Vec<FieldError>>>,
}

/// Parses an envelope body, checks it is the TLS peer's, opens it (signature, addressing,
/// clock, Merkle root, origin proofs, subtree) and validates every item like a pushed record.
fn open_and_check(
    gw: &Ingest,
    peer: &str,
    body: &[u8],
    at: &Receiving<'_>,
    today: time::Date,
) -> Result<CheckedEnvelope, ServiceError> {
    let wire: WireEnvelope<'_> = serde_json::from_slice(body).map_err(|e| {
        ServiceError::bad_request(
            "bad_envelope",
            format!("信封结构错误：{e}"),
            format!("the envelope does not match the schema: {e}"),
        )
    })?;
    // The claimed sender must be the TLS-authenticated peer: checked first, before any other
    // work, so one member can never submit in another's name.
    let claimed = wire.envelope.decode(envelope::ENVELOPE_TYP).map_err(|e| envelope_error(&EnvelopeError::Form(e)))?;
    let claimed = claimed.body.get("sender").and_then(Value::as_str).unwrap_or_default().to_owned();
    if claimed != peer {
        tracing::warn!(peer, sender = %claimed, "envelope sender is not the authenticated TLS peer");
        return Err(ServiceError::new(
            ErrorKind::Forbidden,
            "sender_not_peer",
            format!("信封发送方 {claimed} 与 TLS 认证的成员 {peer} 不一致"),
            format!("the envelope sender {claimed} is not the authenticated TLS peer {peer}"),
        ));
    }
    // Items are parsed strictly (no duplicate member names) and hashed on all cores. The
    // content's canonical form, needed for the item hash, is kept for validation.
    let parsed: Result<Vec<(Value, Sha256Digest, Option<String>)>, _> = wire
        .items
        .par_iter()
        .enumerate()
        .map(|(i, w)| {
            let item = parse_strict(w.item.get().as_bytes()).map_err(|e| (i, e))?;
            Ok(match item_fields(&item) {
                Some((origin, record_id, version, record_type)) => {
                    let content = canonical_string(&item["content"]);
                    let canonical = item_canonical(origin, record_id, version, record_type, &content);
                    (item, Sha256Digest::of(canonical.as_bytes()), Some(content))
                }
                // Not item-shaped: hashed as is; opening the envelope names the fault.
                None => {
                    let hash = canonical_hash(&item);
                    (item, hash, None)
                }
            })
        })
        .collect();
    let parsed = parsed.map_err(|(i, e)| {
        ServiceError::bad_request(
            "bad_envelope",
            format!("第 {i} 个条目不是合法 JSON：{e}"),
            format!("item {i} is not strict JSON: {e}"),
        )
        .with_pointer(format!("/items/{i}/item"))
    })?;
    let mut items = Vec::with_capacity(parsed.len());
    let mut hashes = Vec::with_capacity(parsed.len());
    let mut contents = Vec::with_capacity(parsed.len());
    let mut origin_refs = Vec::with_capacity(parsed.len());
    let mut origin_envelopes: HashMap<&str, (Jws, String, Arc<str>)> = HashMap::new();
    for ((item, hash, content), w) in parsed.into_iter().zip(wire.items) {
        if !w.proof.path.iter().all(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
            let i = items.len();
            return Err(ServiceError::bad_request(
                "bad_envelope",
                format!("第 {i} 个条目的证明路径不是 64 位小写十六进制哈希"),
                format!("item {i}'s proof path is not 64-character lower-case hex hashes"),
            )
            .with_pointer(format!("/items/{i}/proof/path")));
        }
        // The path itself is not kept: the root is recomputed from all the items here, and
        // any item's proof is rebuilt later from the stored item hashes.
        let proof = Proof { index: w.proof.index, size: w.proof.size, path: Vec::new() };
        let i = items.len();
        let bad_origin_proof = |e: serde_json::Error| {
            ServiceError::bad_request(
                "bad_envelope",
                format!("第 {i} 个条目的来源证明结构错误：{e}"),
                format!("item {i}'s origin_proof does not match the schema: {e}"),
            )
            .with_pointer(format!("/items/{i}/origin_proof"))
        };
        // Split without parsing, then parsed once per distinct origin envelope (every item it
        // carried repeats it) and once per item for the proof. Kept as received, in those two
        // parts: the envelope's JSON and digest shared by its items, and this item's proof.
        let (origin_proof, origin_ref) = match w.origin_proof {
            None => (None, None),
            Some(raw) => {
                let parts: OriginProofRaw<'_> = serde_json::from_str(raw.get()).map_err(bad_origin_proof)?;
                let shared = match origin_envelopes.entry(parts.envelope.get()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let jws: Jws = serde_json::from_str(parts.envelope.get()).map_err(bad_origin_proof)?;
                        let digest = jws.digest().to_hex();
                        e.insert((jws, digest, Arc::from(parts.envelope.get())))
                    }
                };
                let (jws, digest, text) = &*shared;
                let proof: Proof = serde_json::from_str(parts.proof.get()).map_err(bad_origin_proof)?;
                let origin_ref = OriginRef {
                    envelope_digest: digest.clone(),
                    envelope: Arc::clone(text),
                    proof: parts.proof.get().to_owned(),
                };
                (Some(OriginProof { envelope: jws.clone(), proof }), Some(origin_ref))
            }
        };
        items.push(WireItem { item, proof, origin_proof });
        hashes.push(hash);
        contents.push(content);
        origin_refs.push(origin_ref);
    }
    let env = Envelope { envelope: wire.envelope, items };
    let opened = envelope::open_owned(env, at, &hashes).map_err(|e| envelope_error(&e))?;
    let envelope::Opened { envelope, header, digest, items } = opened;
    let item_hashes = items.iter().map(|o| o.item_hash).collect();
    let sender = header.sender.as_str();
    let items = items
        .into_par_iter()
        .zip(contents)
        .zip(origin_refs)
        .map(|((o, content), origin_ref)| check_item(gw, o, content, origin_ref, sender, today))
        .collect();
    Ok(CheckedEnvelope { envelope, header, digest, item_hashes, items })
}

/// Validates one item's content like a pushed record, and checks that the origin stored it
/// normalised (its hash must not change here, or signatures would break).
fn check_item(
    gw: &Ingest,
    o: OpenedItem,
    canonical_content: Option<String>,
    origin_proof: Option<OriginRef>,
    sender: &str,
    today: time::Date,
) -> Result<RelayedItem, Vec<FieldError>> {
    let err = |pointer: &str, rule: &str, zh: &str, en: &str| vec![FieldError::new(pointer, rule, zh, en)];
    let mut item = o.item;
    let record_id = item["record_id"].as_str().filter(|s| is_uuid(s)).and_then(|s| Uuid::parse_str(s).ok());
    let Some(record_id) = record_id else {
        return Err(err("/record_id", "item.record_id", "记录编号必须是 UUID", "record_id must be a UUID"));
    };
    let version = item["version"].as_i64().unwrap_or(0);
    if item["content"].get("record_type") != item.get("record_type") {
        return Err(err(
            "/record_type",
            "item.record_type",
            "条目类型与内容类型不一致",
            "record_type differs from the content's",
        ));
    }
    // The content the item hash was computed from (see `open_and_check`), if it was.
    let hashed = canonical_content.clone();
    let valid = gw.validator.check_canonical(item["content"].take(), today, canonical_content).map_err(|errors| {
        errors.into_iter().map(|e| FieldError { pointer: format!("/content{}", e.pointer), ..e }).collect::<Vec<_>>()
    })?;
    // The origin must have sent normalised content: the item rebuilt from the normalised
    // content hashes to the very item hash that was signed. When validation kept the content
    // the item was hashed from, that holds by construction and is not computed again.
    let unchanged = hashed.as_deref() == Some(valid.canonical_content.as_str());
    let rebuilt = || {
        let item = item_canonical(
            &o.origin,
            &record_id.to_string(),
            version,
            valid.record_type.as_str(),
            &valid.canonical_content,
        );
        Sha256Digest::of(item.as_bytes())
    };
    if !unchanged && rebuilt() != o.item_hash {
        return Err(err(
            "/content",
            "item.not_normalised",
            "内容未按规范化形式提交（标识符须先规范化）",
            "the content is not in normalised form (identifiers must be normalised at the origin)",
        ));
    }
    Ok(RelayedItem {
        leaf_index: i64::try_from(o.proof.index).unwrap_or(i64::MAX),
        // For a relay, the origin's own envelope and proof travel on with the record, as received
        // (`open_owned` has verified them).
        origin_proof: origin_proof.filter(|_| o.origin != sender),
        origin: o.origin,
        record_id,
        version,
        incoming: gw.incoming(valid),
    })
}

/// An item's `(origin, record_id, version, record_type)` when it has exactly the five members
/// of interchange-v1 §2 with their types, so that `item_canonical` reproduces its JCS form.
fn item_fields(item: &Value) -> Option<(&str, &str, i64, &str)> {
    let o = item.as_object()?;
    if o.len() != 5 || !o.get("content")?.is_object() {
        return None;
    }
    let version = o.get("version")?;
    // `1.0` is an f64 in serde_json; only a plain integer spells the same in JCS.
    let version = if version.is_i64() { version.as_i64() } else { None }?;
    Some((o.get("origin")?.as_str()?, o.get("record_id")?.as_str()?, version, o.get("record_type")?.as_str()?))
}

/// Maps an envelope refusal to the API error a peer sees.
fn envelope_error(e: &EnvelopeError) -> ServiceError {
    tracing::warn!(error = %e, "envelope refused");
    let (status, code) = match e {
        EnvelopeError::Key(_) | EnvelopeError::BadSignature | EnvelopeError::UnknownSender { .. } => {
            (ErrorKind::Forbidden, "bad_signature")
        }
        EnvelopeError::WrongReceiver { .. } => (ErrorKind::BadRequest, "wrong_receiver"),
        EnvelopeError::OutsideClockWindow { .. } => (ErrorKind::BadRequest, "clock_window"),
        EnvelopeError::Item { .. } => (ErrorKind::Forbidden, "item_refused"),
        EnvelopeError::Form(_)
        | EnvelopeError::Header(_)
        | EnvelopeError::CountMismatch { .. }
        | EnvelopeError::MerkleMismatch => (ErrorKind::BadRequest, "bad_envelope"),
    };
    ServiceError::new(status, code, format!("信封被拒绝：{e}"), format!("envelope refused: {e}"))
}
