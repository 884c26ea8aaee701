//! Sending an envelope: seal (relayed records carry their origin's envelope and proof), post
//! over mutual TLS or park it for a child that collects (pull mode), verify the signed receipt
//! and keep it with the record versions the envelope carried.

use std::borrow::Cow;
use std::collections::HashMap;

use gateway_core::canonical::{Sha256Digest, item_canonical};
use gateway_core::interchange::envelope::{self, Addressing};
use gateway_core::interchange::format_time;
use gateway_core::interchange::receipt::{self, ReceiptBody, Sent};
use gateway_core::jws::Jws;
use gateway_core::merkle;
use gateway_store::{ArrivalOf, EnvelopeIn, StoredRecord};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Node;

/// A sealed envelope ready to post, with what the sender must remember of it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: bytes::Bytes,
    pub record: EnvelopeIn,
    pub item_hashes: Vec<Sha256Digest>,
    /// The record versions it carries, in leaf order.
    pub carried: Vec<(Uuid, i64)>,
}

impl Node {
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
        let signer = self.identity.signer(now)?;
        let (jws, body) = envelope::seal_text(&to, &items, &origin_proofs, &item_hashes, &signer.key, &signer.kid);
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
