//! The node's side of the signed interchange: its federation identity and the `Node` that
//! acts on it. `receive.rs` opens envelopes from peers, validates and stores their items with
//! a signed receipt; `send.rs` seals, posts (or parks, for a child in pull mode) and checks the
//! receipt of what this node sends.

use std::sync::{Arc, RwLock};

use gateway_core::crypto::SigningKey;
use gateway_core::interchange::registry::{Registry, RegistryError};
use gateway_core::jws::Jws;
use time::{Duration, OffsetDateTime};

use crate::error::ServiceError;
use crate::ingest::Ingest;

/// How far an envelope's `created_at` may be from our clock.
pub const CLOCK_WINDOW: Duration = Duration::minutes(5);

mod keys;
mod receive;
pub use receive::check_received_body;
mod send;

pub use keys::Keyring;

pub use send::{DeliveryError, Prepared, PullRefusal, Refusal};

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
/// one is adopted), its signing keys, and its mutual-TLS certificate and the client it calls
/// peers with. Loaded at start-up; a reload (SIGHUP) takes up a newer registry file, new key
/// files and a renewed certificate in place. The interchange, evaluation pulls, SLA tracking,
/// metrics and alerts share it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub member_id: String,
    pub registry: Arc<RwLock<Registry>>,
    pub keys: Arc<Keyring>,
    /// This node's mutual-TLS certificate, served and presented to peers.
    pub tls: Arc<crate::tls::CertCell>,
    /// How long an expired registry is still used (loudly) before traffic is refused.
    pub registry_grace: Duration,
    /// This node's mutual-TLS client for calling peers.
    pub client: reqwest::Client,
    /// Configured federation URLs that replace the registry's endpoints (`[federation.peers]`).
    pub peers: Arc<std::collections::BTreeMap<String, String>>,
}

impl Identity {
    /// A copy of the registry in force.
    pub fn registry_now(&self) -> Result<Registry, ServiceError> {
        self.registry.read().map(|r| r.clone()).map_err(|_| ServiceError::internal(&"registry lock poisoned"))
    }

    /// The key this node signs with at `now` (see [`Keyring::signer`]).
    pub fn signer(&self, now: OffsetDateTime) -> Result<Arc<Signer>, ServiceError> {
        let registry = self.registry.read().map_err(|_| ServiceError::internal(&"registry lock poisoned"))?;
        Ok(self.keys.signer(&registry, &self.member_id, now))
    }

    /// When this node's mutual-TLS certificate expires.
    pub fn certificate_expires(&self) -> Option<OffsetDateTime> {
        self.tls.expires()
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
        self.adopt_registry(&jws, now, "the parent")
    }

    /// Reads the registry file at `path` (an operator put a newer one there; a reload calls
    /// this) and adopts it as [`Node::refresh_registry`] would.
    pub fn reload_registry(&self, path: &std::path::Path, now: OffsetDateTime) -> anyhow::Result<Refresh> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let jws: Jws = serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match self.adopt_registry(&jws, now, "its file") {
            // A node below the root has usually adopted a newer one from its parent since it
            // started: the file being older is no fault.
            Err(e) if matches!(e.downcast_ref(), Some(RegistryError::Rollback { .. })) => {
                let held = self.identity.registry_now().map_err(|e| anyhow::anyhow!("{e}"))?.body.version;
                Ok(Refresh::Unchanged { version: held })
            }
            other => other,
        }
    }

    /// Adopts `jws` if it is signed by a root of the registry held now, is not older, and
    /// still lists this node.
    fn adopt_registry(&self, jws: &Jws, now: OffsetDateTime, from: &str) -> anyhow::Result<Refresh> {
        let (held, trusted) = {
            let r = self.identity.registry.read().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
            (r.body.version, r.trusted_roots().to_vec())
        };
        let (fresh, _) = Registry::verify(jws, &trusted, Some(held), now, self.identity.registry_grace)?;
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
        tracing::info!(from = held, to, "registry updated from {from}");
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
}
