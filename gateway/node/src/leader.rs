//! Leadership among replicas of one node sharing a PostgreSQL database (#27).
//!
//! Every replica serves the API and the federation endpoint. The node's singletons (the relay
//! senders, the SLA tracker, the alerts, the adapters' collectors and the scheduled jobs) run
//! at one replica only: the holder of the store's lease [`LEASE`] (`gateway_store::Lease`).
//! [`watch_lease`] asks for it every third of its time: the holder renews it, the others take it
//! when it has run out. A holder that cannot renew for two thirds of the lease steps down,
//! leaving a third for its singletons to stop (a quarter is given to the ones that finish
//! their work; the rest are aborted) before another can take over. A dead or paused one loses
//! it when it runs out. The relay's settlements are fenced by the lease (checked in the
//! settling transaction), so a former leader that wakes up after a takeover settles nothing.
//! The other singletons are not fenced: a leader paused past its lease may, on waking, finish
//! the step of an SLA catch-up, an alert check or a collector round it was in before it sees
//! the lease gone. SLA tracking rows and collected records are keyed (a repeat is found
//! already there, a record answered `duplicate`); an alert could be delivered twice.
//!
//! On SQLite one process owns the database, so the lease is always its own: the singletons
//! start at once and never stop until the node does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway_store::{Lease, Store};
use tokio::sync::watch;

/// The lease whose holder runs the singletons.
pub const LEASE: &str = "singletons";

/// This process's name as a lease holder: host, process id and a random part (a restarted
/// process, even with the same pid, is a new holder).
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    // A v7 id ends in random bits.
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("{}:{}:{}", host.trim(), std::process::id(), &random[random.len() - 8..])
}

/// Keeps asking for the lease; the receiver holds it while this replica leads, `None` while
/// another does. Ends when every receiver is gone.
pub fn watch_lease(
    store: Arc<Store>,
    holder: String,
    ttl: Duration,
) -> (watch::Receiver<Option<Lease>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let every = ttl / 3;
        // A leader that has not renewed for this long steps down: a third of the lease is left
        // for its singletons to stop before another replica can take over.
        let step_down_after = ttl * 2 / 3;
        let mut renewed = Instant::now();
        loop {
            let asked = Instant::now();
            let leading = tx.borrow().is_some();
            // An ask that hangs (a connection gone silent) fails at the next ask, or, while
            // leading, when it is time to step down.
            let deadline = if leading { (renewed + step_down_after).min(asked + every) } else { asked + every };
            let answer = tokio::time::timeout_at(deadline.into(), store.acquire_lease(LEASE, &holder, ttl))
                .await
                .unwrap_or_else(|_| Err(gateway_store::StoreError::Unavailable("the lease ask timed out".into())));
            match answer {
                Ok(Some(lease)) => {
                    renewed = asked;
                    if tx.borrow().as_ref() != Some(&lease) {
                        tracing::info!(holder = %lease.holder, epoch = lease.epoch, "this replica now leads: singletons start");
                        tx.send_replace(Some(lease));
                    }
                }
                Ok(None) => {
                    if leading {
                        tracing::warn!("another replica holds the lease: singletons stop");
                        tx.send_replace(None);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the lease");
                    if leading && renewed.elapsed() >= step_down_after {
                        tracing::warn!("lease not renewed in time: singletons stop");
                        tx.send_replace(None);
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            let next =
                if tx.borrow().is_some() { (asked + every).min(renewed + step_down_after) } else { asked + every };
            tokio::time::sleep_until(next.into()).await;
        }
    });
    (rx, task)
}

/// What runs while this replica leads.
#[derive(Debug, Default)]
pub struct Singletons {
    pub relay: Option<crate::relay::Relay>,
    /// Aborted when leadership ends: they hold nothing across a stop.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Told to stop through [`Singletons::stop_signal`], then awaited: they finish what they
    /// hold (the alerts, the collectors).
    pub graceful: Vec<tokio::task::JoinHandle<()>>,
    stop: Option<watch::Sender<bool>>,
}

impl Singletons {
    /// The signal that [`Singletons::graceful`] tasks stop on.
    pub fn stop_signal(&mut self) -> watch::Receiver<bool> {
        self.stop.get_or_insert_with(|| watch::channel(false).0).subscribe()
    }

    /// Stops everything: the relay first (stopping mid-delivery is safe: resent later); the
    /// graceful tasks get `grace` to finish, then are aborted like the others.
    pub async fn stop(self, grace: Duration) {
        if let Some(relay) = self.relay {
            relay.stop().await;
        }
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
        for task in self.tasks {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in self.graceful {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Runs what `start` starts while this replica holds the lease (`held`, from [`watch_lease`]), and
/// stops it when the lease is lost, as often as that happens, until `shutdown` or the end of
/// the watch; then gives the lease up, so that a standby replica takes over at once. (Stop the
/// watch first: it would otherwise renew the lease just given up.) Stopping takes at most
/// `grace` for the graceful tasks, and as long again to give the lease up.
pub async fn lead(
    store: Arc<Store>,
    mut held: watch::Receiver<Option<Lease>>,
    leading: Arc<AtomicBool>,
    grace: Duration,
    start: impl Fn(Lease) -> Singletons,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let lease = tokio::select! {
            held = held.wait_for(Option::is_some) => match held.map(|h| h.clone()) {
                Ok(Some(lease)) => lease,
                _ => return,
            },
            () = &mut shutdown => return,
        };
        let running = start(lease.clone());
        leading.store(true, Ordering::Relaxed);
        // Lost to another replica; or, when the lease watch has ended, the node is stopping.
        let lost = tokio::select! {
            changed = held.wait_for(|h| h.as_ref() != Some(&lease)) => changed.is_ok(),
            () = &mut shutdown => false,
        };
        running.stop(grace).await;
        leading.store(false, Ordering::Relaxed);
        if !lost {
            let released = tokio::time::timeout(grace, store.release_lease(&lease)).await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!("could not give the lease up; a standby takes over when it runs out");
            }
            return;
        }
    }
}
