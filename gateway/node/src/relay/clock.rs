//! The relay's waits between retries come from a [`Clock`]: real time in production, or a
//! [`ManualClock`] that a test (or a simulation of a long outage) moves by hand, so days of
//! retries run in seconds without changing how the relay behaves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Something the relay can wait on.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real time (tokio's timer).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when [`ManualClock::advance`] is called.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<tokio::sync::watch::Sender<Duration>>,
    sleeping: Arc<AtomicUsize>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self { now: Arc::new(tokio::sync::watch::Sender::new(Duration::ZERO)), sleeping: Arc::default() }
    }
}

impl ManualClock {
    /// Moves time forward, waking every sleeper whose time has come.
    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|now| *now += d);
    }

    /// Time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        *self.now.borrow()
    }

    /// How many waits are in progress.
    pub fn sleepers(&self) -> usize {
        self.sleeping.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let mut rx = self.now.subscribe();
            let until = *rx.borrow_and_update() + d;
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            let _ = rx.wait_for(|now| *now >= until).await;
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        })
    }
}
