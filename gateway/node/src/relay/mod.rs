//! Store-and-forward: one sender task per destination (parent, each child, the publication
//! sink) works through its queue in `seq` order (see `store::outbox`).
//!
//! **Invariants:** a record is queued by the commit that stores it, so a record acknowledged to
//! its sender is never lost; a destination's cursor moves only in the transaction that stores
//! what settled the records before it; within a destination, records go in `seq` order and a
//! record waits behind an undelivered earlier version of itself (or of its target), so a
//! correction never overtakes what it amends. Destinations never block each other.

pub mod clock;
pub mod publication;
mod pull;
pub mod routing;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gateway_core::interchange::receipt::ReceiptBody;
use gateway_store::{ArrivalOf, DeadLetter, QueuedRecord, SentEnvelope, Settlement, StoredRecord};
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::config::RelayConfig;
use crate::interchange::{DeliveryError, Node};
pub use routing::{Destination, Link, PUBLICATION, Router, Routes, adapter_destination};

/// Most records scanned per query when looking for what a destination takes.
const SCAN_CHUNK: i64 = 2_000;
/// How long a sender waits for a commit before it looks again anyway (a safety net: commits
/// by another process sharing a PostgreSQL database do not wake it).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often a sender that only skips rows saves its cursor while records keep arriving.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(1);

/// How one destination's deliveries are going, as its sender last saw it.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct DestinationStatus {
    /// Failed attempts since the last success (0 when healthy).
    pub consecutive_failures: u32,
    /// The last failure, if any since the last success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the current run of failures began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    /// Records delivered (or settled) since the process started.
    pub delivered: u64,
}

/// Every destination's [`DestinationStatus`], shared between the senders and the API.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<std::sync::Mutex<std::collections::BTreeMap<String, DestinationStatus>>>);

impl StatusBoard {
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, DestinationStatus> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn update(&self, destination: &str, f: impl FnOnce(&mut DestinationStatus)) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(destination.to_owned()).or_default());
        }
    }

    fn failed(&self, destination: &str, error: &str) {
        let now = gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc());
        self.update(destination, |s| {
            s.consecutive_failures += 1;
            s.last_error = Some(error.to_owned());
            s.failing_since.get_or_insert(now);
        });
    }

    fn succeeded(&self, destination: &str, records: usize) {
        let now = gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc());
        self.update(destination, |s| {
            s.consecutive_failures = 0;
            s.last_error = None;
            s.failing_since = None;
            s.last_success_at = Some(now);
            s.delivered += records as u64;
        });
    }
}

/// What the relay shares with the rest of the node: the destinations it sends to (and what
/// each takes), and how each is doing. SLA tracking, `/metrics`, alerts and the dashboard read
/// both; made at start-up whether or not this process runs the senders (a replica with
/// `relay.enabled = false` still watches the SLAs of the destinations its peer replica serves).
#[derive(Debug, Clone)]
pub struct RelayState {
    pub routes: Arc<Routes>,
    pub status: StatusBoard,
}

/// The running senders of one node.
#[derive(Debug)]
pub struct Relay {
    tasks: JoinSet<()>,
}

impl Relay {
    /// Starts one sender per destination of `state.routes`. They run until the relay is dropped
    /// or aborted; stopping one at any point is safe (it is the same as a crash). `config` gives
    /// the senders' timing and the sink's directory: it must be the `[relay]` the routes were
    /// made from (`server::start` passes both from one config; tests that restart a relay pass
    /// the same section again).
    pub fn start(node: Node, state: &RelayState, config: RelayConfig) -> Self {
        Self::start_with_clock(node, state, config, Arc::new(clock::RealClock))
    }

    /// [`Relay::start`] for the holder of `lease`: a settlement made after another replica
    /// has taken the lease over fails in its own transaction (and the batch is resent by the
    /// new leader, answered `duplicate`).
    pub fn start_fenced(node: Node, state: &RelayState, config: RelayConfig, lease: gateway_store::Lease) -> Self {
        Self::start_inner(node, state, config, Arc::new(clock::RealClock), Some(lease))
    }

    /// [`Relay::start`] with retry waits taken from `clock` (a [`clock::ManualClock`] turns
    /// days of outage into seconds).
    pub fn start_with_clock(node: Node, state: &RelayState, config: RelayConfig, clock: Arc<dyn clock::Clock>) -> Self {
        Self::start_inner(node, state, config, clock, None)
    }

    fn start_inner(
        node: Node,
        state: &RelayState,
        config: RelayConfig,
        clock: Arc<dyn clock::Clock>,
        fence: Option<gateway_store::Lease>,
    ) -> Self {
        let shared = Arc::new(Shared {
            routes: Arc::clone(&state.routes),
            status: state.status.clone(),
            node,
            config,
            clock,
            fence,
        });
        let mut tasks = JoinSet::new();
        for dest in shared.routes.destinations().to_vec() {
            tracing::info!(destination = %dest.name, link = ?dest.link, pull = dest.pull, "relay sender started");
            tasks.spawn(Arc::clone(&shared).run(dest));
        }
        if shared.config.pull_from_parent {
            tasks.spawn(pull::collect_from_parent(shared.node.clone(), shared.config.clone()));
        }
        Self { tasks }
    }

    /// Stops every sender.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

struct Shared {
    node: Node,
    routes: Arc<Routes>,
    status: StatusBoard,
    config: RelayConfig,
    /// Where retry waits come from.
    clock: Arc<dyn clock::Clock>,
    /// The lease this replica runs the relay under (see `leader`): every settlement checks it.
    fence: Option<gateway_store::Lease>,
}

/// What a sender takes next.
#[derive(Debug, Default)]
struct Batch {
    /// To deliver, in `seq` order.
    items: Vec<QueuedRecord>,
    /// Waiting behind a dead letter of the same record: dead-lettered with it.
    held: Vec<QueuedRecord>,
    /// The cursor after this batch, when it covers records after the current one.
    position: Option<i64>,
    /// Whether these are dead letters an operator asked to resend.
    resend: bool,
    /// `items` as sealing reads them, in the same order, when the queue was read with them
    /// (a parent's queue); else empty, and they are read by `seq` when sent.
    forward: Vec<Sealable>,
}

/// A record as sealing it for the next hop reads it: with where it arrived from.
type Sealable = (StoredRecord, Option<ArrivalOf>);

/// A sender's cursor as last stored, and when. A batch that only skips rows (none for its
/// destination: most rows, for a child's sender) moves the cursor in memory only; storing it
/// is a commit, so it is stored at most every [`CURSOR_SAVE_EVERY`] (an idle sender looks again
/// within [`IDLE_POLL`]). Every settlement stores the cursor with what it settled, so a crash
/// only means the last second's skipped rows are judged again (and sent, if the registry or
/// routing changed meanwhile: at least once, as ever).
struct SavedCursor {
    position: i64,
    at: std::time::Instant,
    /// The last attempt to store it failed: try again at the next chance.
    stale: bool,
}

impl SavedCursor {
    fn new(position: i64) -> Self {
        Self { position, at: std::time::Instant::now(), stale: false }
    }

    /// Whether a cursor at `position`, moved only in memory, should be stored now.
    fn due(&self, position: i64) -> bool {
        (self.stale || position != self.position) && self.at.elapsed() >= CURSOR_SAVE_EVERY
    }

    /// `position` was stored (by a settlement or on its own).
    fn stored(&mut self, position: i64) {
        *self = Self::new(position);
    }

    /// Storing failed; `due` says yes again once the interval has passed.
    fn failed(&mut self) {
        self.stale = true;
        self.at = std::time::Instant::now();
    }
}

/// How a delivery attempt ended.
enum Attempt {
    /// Recorded; this many records were taken by the destination.
    Settled(usize),
    /// Retry later.
    Failed(anyhow::Error),
    /// The destination refused the envelope as a whole.
    Refused(serde_json::Value),
}

impl Shared {
    async fn run(self: Arc<Self>, dest: Destination) {
        let board = self.status.clone();
        board.update(&dest.name, |_| {});
        if dest.pull {
            // Envelopes parked by an earlier run are sealed anew from the queue.
            if let Err(e) = self.node.ingest.store.unpark(&dest.name, None).await {
                tracing::warn!(destination = %dest.name, error = %e, "could not clear parked envelopes");
            }
        }
        let mut commits = self.node.ingest.store.watch_commits();
        let mut limit = self.config.batch_max;
        let mut failures: u32 = 0;
        let mut position = loop {
            match self.node.ingest.store.outbox_position(&dest.name).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(destination = %dest.name, error = %e, "relay cannot read its cursor; retrying");
                    tokio::time::sleep(self.backoff(1)).await;
                }
            }
        };
        let mut saved = SavedCursor::new(position);
        loop {
            let batch = match self.next_batch(&dest, position, limit).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(destination = %dest.name, error = %e, "relay cannot read its queue; retrying");
                    tokio::time::sleep(self.backoff(1)).await;
                    continue;
                }
            };
            if batch.items.is_empty() && batch.held.is_empty() && !batch.resend {
                if let Some(p) = batch.position {
                    position = p;
                    // Past a record refused alone: back to full batches.
                    limit = self.config.batch_max;
                    failures = 0;
                }
                if saved.due(position) {
                    match self.save_cursor(&dest, position).await {
                        Ok(()) => {
                            saved.stored(position);
                            board.succeeded(&dest.name, 0);
                        }
                        Err(e) => {
                            saved.failed();
                            tracing::warn!(destination = %dest.name, error = %e, "could not store the relay cursor; will retry");
                        }
                    }
                }
                if batch.position.is_some() {
                    continue;
                }
                // Idle: wait for a commit, then linger so a trickle still fills envelopes.
                let _ = tokio::time::timeout(IDLE_POLL, commits.changed()).await;
                commits.borrow_and_update();
                if self.config.linger_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(self.config.linger_ms)).await;
                }
                continue;
            }
            let attempt = self.deliver(&dest, &batch, failures + 1).await;
            match attempt {
                Attempt::Settled(delivered) => {
                    board.succeeded(&dest.name, delivered);
                    if let Some(p) = batch.position {
                        position = p;
                        saved.stored(p);
                    }
                    failures = 0;
                    limit = self.config.batch_max;
                }
                Attempt::Failed(e) => {
                    failures += 1;
                    board.failed(&dest.name, &format!("{e:#}"));
                    let max = self.config.max_attempts;
                    if max > 0 && failures >= max {
                        tracing::error!(destination = %dest.name, failures, error = %format!("{e:#}"), "giving up: dead-lettering the batch");
                        let reason = reason_json("delivery_failed", &format!("{e:#}"), &[]);
                        if self.dead_letter_all(&dest, &batch, &reason, failures).await {
                            position = batch.position.unwrap_or(position);
                            saved.stored(position);
                            failures = 0;
                        }
                        continue;
                    }
                    let wait = self.backoff(failures);
                    tracing::warn!(destination = %dest.name, failures, retry_in = ?wait, error = %format!("{e:#}"), "delivery failed; will retry");
                    self.clock.sleep(wait).await;
                }
                Attempt::Refused(reason) => {
                    board.failed(&dest.name, &reason.to_string());
                    if batch.items.len() > 1 {
                        // One bad item must not hold the others: halve until it stands alone.
                        limit = batch.items.len().div_ceil(2);
                        tracing::warn!(destination = %dest.name, next_batch = limit, "envelope refused; splitting the batch");
                    } else {
                        tracing::error!(destination = %dest.name, reason = %reason, "record refused: dead-lettered");
                        if self.dead_letter_all(&dest, &batch, &reason, failures + 1).await {
                            position = batch.position.unwrap_or(position);
                            saved.stored(position);
                        }
                        failures = 0;
                    }
                }
            }
        }
    }

    /// Exponential back-off with full jitter: uniform in [0, min(max, base · 2^(n-1))].
    fn backoff(&self, failures: u32) -> Duration {
        let cap = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
            .min(self.config.backoff_max_ms)
            .max(1);
        let mut r = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
        Duration::from_millis(u64::from_le_bytes(r) % (cap + 1))
    }

    /// The next records for `dest`: dead letters queued for resending first, else what the
    /// routing rules select after the cursor. An envelope never holds two rows about one
    /// record (a version and its correction, a record and an event about it): if the receiver
    /// rejected the first, the second must wait behind it, not arrive beside it.
    async fn next_batch(&self, dest: &Destination, position: i64, limit: usize) -> anyhow::Result<Batch> {
        let store = &self.node.ingest.store;
        let resend = store.resend_queue(&dest.name, limit as i64).await?;
        if !resend.is_empty() {
            // A resent event whose record is still dead (not asked for) waits again.
            let dead = store.still_dead_records(&dest.name).await?;
            let (held, items): (Vec<_>, Vec<_>) = resend.into_iter().partition(|r| touches(r, &dead));
            return Ok(Batch { items: isolate(items), held, resend: true, ..Batch::default() });
        }
        let mut blocked: HashSet<String> = store.blocked_records(&dest.name).await?;
        let registry =
            self.node.identity.registry.read().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?.clone();
        let mut batch = Batch::default();
        let mut in_batch: HashSet<String> = HashSet::new();
        let mut after = position;
        // A child takes only lifecycle events and list entries: they are looked up directly
        // (migration 0016's index), and the cursor
        // then jumps to the last record stored when the lookup began (`Store::last_seq`:
        // nothing at or below it can still appear).
        let events_upto = match dest.link {
            Link::Child => Some(store.last_seq().await?),
            Link::Parent | Link::Publication | Link::Adapter => None,
        };
        let mut stopped = false;
        // A parent takes nearly every record, so its queue is read with what sealing needs.
        let with_content = dest.link == Link::Parent;
        let mut contents: HashMap<i64, Sealable> = HashMap::new();
        // Bounded work per call: at most a few chunks scanned, whatever the backlog.
        // Chunks of the batch's size: when every row goes (the common case), each is read once.
        let chunk = i64::try_from(limit).unwrap_or(SCAN_CHUNK).clamp(1, SCAN_CHUNK);
        'scan: for _ in 0..8 {
            let rows: Vec<(QueuedRecord, Option<Sealable>)> = match events_upto {
                Some(upto) => store.queued_events(after, upto, chunk).await?.into_iter().map(|r| (r, None)).collect(),
                None if with_content => store
                    .queued_to_forward(after, chunk)
                    .await?
                    .into_iter()
                    .map(|f| (f.queued, Some((f.record, f.arrival))))
                    .collect(),
                None => store.queued_after(after, chunk).await?.into_iter().map(|r| (r, None)).collect(),
            };
            let full = rows.len() as i64 == chunk;
            for (row, content) in rows {
                if batch.items.len() == limit {
                    stopped = true;
                    break 'scan;
                }
                if !self.routes.router().sends(dest, &row, &registry) {
                    after = row.seq;
                    continue;
                }
                if touches(&row, &in_batch) {
                    stopped = true;
                    break 'scan;
                }
                // A platform takes one dataset per push or package: a batch holds one record
                // type, so a failure never leaves half a batch delivered.
                if dest.link == Link::Adapter && batch.items.first().is_some_and(|f| f.record_type != row.record_type) {
                    stopped = true;
                    break 'scan;
                }
                after = row.seq;
                let id = row.record_id.to_string();
                if touches(&row, &blocked) {
                    blocked.insert(id);
                    batch.held.push(row);
                } else {
                    in_batch.insert(id);
                    in_batch.extend(row.target_record_id.clone());
                    if let Some(content) = content {
                        contents.insert(row.seq, content);
                    }
                    batch.items.push(row);
                }
            }
            if batch.items.len() == limit {
                // Full: what follows waits for the next batch (reading on would only stop there).
                stopped = true;
                break;
            }
            if !full {
                break;
            }
        }
        if let Some(upto) = events_upto
            && !stopped
        {
            after = after.max(upto);
        }
        // An event goes up only if the record it is about went up (a record kept here, e.g.
        // `authorized_query`, is unknown above), and down outside the child's subtree only if
        // its record went down to it (a list entry by a measure's reach).
        let router = self.routes.router();
        let needs: Vec<Option<&String>> = batch
            .items
            .iter()
            .map(|r| r.target_record_id.as_ref().filter(|_| router.needs_target_sent(dest, r, &registry)))
            .collect();
        let targets: Vec<String> = needs.iter().flatten().map(|t| (*t).clone()).collect();
        if !targets.is_empty() {
            let sent = store.sent_to(&dest.name, &targets).await?;
            let keep: Vec<bool> = needs.iter().map(|t| t.is_none_or(|t| sent.contains(t))).collect();
            let mut keep = keep.into_iter();
            batch.items.retain(|_| keep.next().unwrap_or(true));
        }
        batch.position = (after > position).then_some(after);
        if with_content {
            batch.forward = batch.items.iter().filter_map(|r| contents.remove(&r.seq)).collect();
        }
        Ok(batch)
    }

    /// Delivers one batch and settles it. `attempt` counts this try.
    async fn deliver(&self, dest: &Destination, batch: &Batch, attempt: u32) -> Attempt {
        let store = &self.node.ingest.store;
        let now = time::OffsetDateTime::now_utc();
        let at = gateway_core::date::format_timestamp(now);
        let mut dead = held_letters(&batch.held, attempt);
        let seqs: Vec<i64> = batch.items.iter().map(|r| r.seq).collect();
        let result = if batch.items.is_empty() {
            Ok(Sent::default())
        } else if dest.link == Link::Publication {
            self.publish(&seqs, now).await
        } else if dest.link == Link::Adapter {
            self.deliver_to_platform(dest, &batch.items, &seqs, now).await
        } else {
            self.send(dest, batch, &seqs, now).await
        };
        let sent = match result {
            Ok(s) => s,
            Err(Failure::Transient(e)) => return Attempt::Failed(e),
            Err(Failure::Refused(reason)) => return Attempt::Refused(reason),
        };
        let rejected: HashSet<i64> = sent.dead.iter().map(|d| d.seq).collect();
        dead.extend(sent.dead);
        let resent =
            if batch.resend { seqs.iter().copied().filter(|s| !rejected.contains(s)).collect() } else { vec![] };
        let s = Settlement {
            sent: sent.sent.as_ref().map(|(envelope, receipt)| SentEnvelope {
                envelope,
                receipt: receipt.as_str(),
                carried: sent.carried.as_slice(),
            }),
            published: sent.published,
            dead,
            resent,
            position: batch.position,
            at,
            fence: self.fence.as_ref(),
        };
        let delivered = batch.items.len() - rejected.len();
        match store.settle(&dest.name, s).await {
            Ok(()) => {
                if delivered > 0 || !rejected.is_empty() {
                    tracing::info!(destination = %dest.name, delivered, dead_lettered = rejected.len() + batch.held.len(), "batch delivered");
                }
                Attempt::Settled(delivered)
            }
            // Delivered but not recorded: the next attempt resends and the receiver answers
            // `duplicate`, so nothing is lost or doubled.
            Err(e) => Attempt::Failed(anyhow::anyhow!(e).context("recording a delivery")),
        }
    }

    async fn send(
        &self,
        dest: &Destination,
        batch: &Batch,
        seqs: &[i64],
        now: time::OffsetDateTime,
    ) -> Result<Sent, Failure> {
        let transient = |e: anyhow::Error| Failure::Transient(e);
        let url = self
            .node
            .endpoint_of(&dest.name)
            .ok_or_else(|| transient(anyhow::anyhow!("{} has no federation endpoint", dest.name)))?;
        let read;
        // Read with the queue (a parent's), in the items' order; else read now by `seq`.
        let aligned = batch.forward.len() == batch.items.len()
            && batch.forward.iter().zip(&batch.items).all(|((r, _), q)| r.seq == q.seq);
        let records = if aligned {
            &batch.forward
        } else {
            read = self.node.ingest.store.records_to_forward(seqs).await.map_err(|e| transient(e.into()))?;
            &read
        };
        let prepared = self.node.prepare_forwarding(&dest.name, records, now).await.map_err(transient)?;
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let answer = if dest.pull {
            self.node.park_and_wait(&prepared, timeout).await
        } else {
            self.node.post(&url, &prepared, Some(timeout)).await
        };
        let (receipt, text) = match answer {
            Ok(r) => r,
            Err(DeliveryError::Transient(e)) => return Err(transient(e)),
            Err(DeliveryError::Refused { status, body, .. }) => {
                let error: serde_json::Value = serde_json::from_str(&body).unwrap_or(json!({"message_en": body}));
                // Only refusals about the envelope's contents are narrowed down to a record; a
                // refusal of the sender itself (signature, clock, registry, addressing) is
                // retried with back-off while an operator fixes it, and nothing is dead-lettered.
                let code = error["error"]["code"].as_str().unwrap_or_default();
                if status == 413 || matches!(code, "item_refused" | "bad_envelope") {
                    return Err(Failure::Refused(json!({"code": "refused", "status": status, "error": error})));
                }
                return Err(transient(anyhow::anyhow!("{} refused this node's envelope: {status} {error}", dest.name)));
            }
        };
        let dead = rejected_items(&receipt, &batch.items);
        Ok(Sent { sent: Some((prepared.record, text)), carried: prepared.carried, dead, published: Vec::new() })
    }

    async fn publish(&self, seqs: &[i64], now: time::OffsetDateTime) -> Result<Sent, Failure> {
        let Some(dir) = &self.config.publication_dir else {
            return Err(Failure::Transient(anyhow::anyhow!("no publication directory configured")));
        };
        let records = self.node.ingest.store.records_by_seq(seqs).await.map_err(|e| Failure::Transient(e.into()))?;
        let published = publication::write(dir, &records, now).map_err(Failure::Transient)?;
        Ok(Sent { sent: None, carried: Vec::new(), dead: Vec::new(), published })
    }

    /// Translates records through the destination's adapter and hands them to its platform.
    /// A record the platform schema refuses is dead-lettered with the reasons; a refusal by the
    /// platform itself is narrowed down like an envelope refusal.
    async fn deliver_to_platform(
        &self,
        dest: &Destination,
        items: &[QueuedRecord],
        seqs: &[i64],
        now: time::OffsetDateTime,
    ) -> Result<Sent, Failure> {
        let transient = |e: anyhow::Error| Failure::Transient(e);
        let loaded = self
            .routes
            .adapter(&dest.name)
            .ok_or_else(|| transient(anyhow::anyhow!("adapter {} is not loaded", dest.name)))?;
        let records = self.node.ingest.store.records_by_seq(seqs).await.map_err(|e| transient(e.into()))?;
        let outcome = crate::adapters::deliver::deliver(loaded, &records, now).await;
        match outcome {
            Ok(d) => {
                let dead = d
                    .refused
                    .into_iter()
                    .filter_map(|(seq, errors)| {
                        let item = items.iter().find(|r| r.seq == seq)?;
                        let reason = reason_json("platform_schema", "the platform schema refuses this record", &errors);
                        Some(letter(item, reason.to_string(), 1))
                    })
                    .collect();
                Ok(Sent { sent: None, carried: Vec::new(), dead, published: d.delivered })
            }
            Err(crate::adapters::deliver::DeliverError::Transient(e)) => Err(transient(e)),
            Err(crate::adapters::deliver::DeliverError::Refused(reason)) => {
                Err(Failure::Refused(json!({"code": "refused", "platform": loaded.id(), "error": reason})))
            }
        }
    }

    /// Stores `dest`'s cursor at `position` (nothing else settled).
    async fn save_cursor(&self, dest: &Destination, position: i64) -> Result<(), gateway_store::StoreError> {
        let s = Settlement {
            position: Some(position),
            at: gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc()),
            fence: self.fence.as_ref(),
            ..Settlement::default()
        };
        self.node.ingest.store.settle(&dest.name, s).await
    }

    /// Dead-letters every record of a batch with one reason. Returns whether it was recorded.
    async fn dead_letter_all(
        &self,
        dest: &Destination,
        batch: &Batch,
        reason: &serde_json::Value,
        attempts: u32,
    ) -> bool {
        let mut dead = held_letters(&batch.held, attempts);
        dead.extend(batch.items.iter().map(|r| letter(r, reason.to_string(), attempts)));
        let s = Settlement {
            dead,
            position: batch.position,
            at: gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc()),
            fence: self.fence.as_ref(),
            ..Settlement::default()
        };
        match self.node.ingest.store.settle(&dest.name, s).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(destination = %dest.name, error = %e, "could not record dead letters; will retry");
                false
            }
        }
    }
}

/// Whether `row` is about a record in `ids` (as a version of it, or as an event about it).
fn touches(row: &QueuedRecord, ids: &HashSet<String>) -> bool {
    ids.contains(&row.record_id.to_string()) || row.target_record_id.as_ref().is_some_and(|t| ids.contains(t))
}

/// The longest prefix of `rows` in which no two rows are about one record.
fn isolate(mut rows: Vec<QueuedRecord>) -> Vec<QueuedRecord> {
    let mut seen = HashSet::new();
    let cut = rows.iter().position(|r| {
        let clash = touches(r, &seen);
        seen.insert(r.record_id.to_string());
        seen.extend(r.target_record_id.clone());
        clash
    });
    if let Some(cut) = cut {
        rows.truncate(cut);
    }
    rows
}

/// What a successful delivery produced, before it is settled.
#[derive(Default)]
struct Sent {
    sent: Option<(gateway_store::EnvelopeIn, String)>,
    carried: Vec<(Uuid, i64)>,
    dead: Vec<DeadLetter>,
    published: Vec<(i64, Uuid, i64, String)>,
}

enum Failure {
    Transient(anyhow::Error),
    Refused(serde_json::Value),
}

fn letter(r: &QueuedRecord, reason: String, attempts: u32) -> DeadLetter {
    DeadLetter { seq: r.seq, record_id: r.record_id, version: r.version, reason, attempts: i64::from(attempts) }
}

fn held_letters(held: &[QueuedRecord], attempts: u32) -> Vec<DeadLetter> {
    let reason = reason_json(
        "held_behind_dead_letter",
        "an earlier version of this record (or the record this event is about) is in the dead letters at this destination",
        &[],
    );
    held.iter().map(|r| letter(r, reason.to_string(), attempts)).collect()
}

fn reason_json(code: &str, message_en: &str, errors: &[gateway_core::record::FieldError]) -> serde_json::Value {
    let message_zh = match code {
        "held_behind_dead_letter" => "该记录的较早版本（或本事件所针对的记录）在此目的地的死信列表中，需先处理",
        "rejected" => "接收方拒收该记录",
        "platform_schema" => "该记录转换为平台格式后不符合平台数据模式",
        _ => "多次投递失败",
    };
    json!({"code": code, "message_zh": message_zh, "message_en": message_en, "errors": errors})
}

/// Dead letters for the items a receipt rejected, with the receiver's reasons.
fn rejected_items(receipt: &ReceiptBody, items: &[QueuedRecord]) -> Vec<DeadLetter> {
    receipt
        .outcomes
        .iter()
        .filter(|o| o.status == "rejected")
        .filter_map(|o| {
            let item = items.get(usize::try_from(o.index).ok()?)?;
            let reason = reason_json("rejected", "the receiver rejected this record", &o.errors);
            Some(letter(item, reason.to_string(), 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_moved_in_memory_is_stored_at_most_once_a_second_and_again_after_a_failure() {
        let a_while_ago = std::time::Instant::now() - 2 * CURSOR_SAVE_EVERY;
        let mut saved = SavedCursor::new(10);
        assert!(!saved.due(20), "stored just now");
        saved.at = a_while_ago;
        assert!(!saved.due(10), "not moved since");
        assert!(saved.due(20));
        saved.failed();
        assert!(!saved.due(10), "a failed store waits for the interval too");
        saved.at = a_while_ago;
        assert!(saved.due(10), "then is tried again, even where the cursor has not moved");
        saved.stored(10);
        assert!(!saved.due(10) && !saved.stale);
    }
}
