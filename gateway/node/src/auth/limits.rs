//! Limits per key (a principal, a source address): token buckets ([`RateLimiter`], `rate`
//! tokens a second up to `burst`; a call takes one, with none left it is refused with the time
//! until the next) and requests in progress at once ([`InFlight`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Buckets kept at most; when full, the ones that have refilled completely are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` per second (0 = unlimited), `burst` at most at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key`, or says how long until one is free.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    /// Whether `key` has a token left, without taking one.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(buckets) = self.buckets.lock() else { return Ok(()) };
        match buckets.get(key) {
            None => Ok(()),
            Some((tokens, at)) => {
                let tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
                if tokens >= 1.0 { Ok(()) } else { Err(Duration::from_secs_f64((1.0 - tokens) / self.rate)) }
            }
        }
    }
}

/// Requests in progress per key, at most `max` each (0 = unlimited). Only keys with requests in
/// progress are kept, so the map is never larger than the requests being served.
#[derive(Debug)]
pub struct InFlight {
    max: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One request in progress; dropping it ends it.
#[derive(Debug)]
pub struct InFlightSlot {
    key: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self { max, counts: Arc::default() }
    }

    /// A slot for one more request of `key`, or `None` when it already has `max` in progress.
    pub fn enter(&self, key: &str) -> Option<InFlightSlot> {
        // The counts stay consistent if a holder panicked: each change is one statement.
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(key.to_owned()).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(InFlightSlot { key: key.to_owned(), counts: Arc::clone(&self.counts) })
    }

    /// Requests of `key` in progress now.
    #[cfg(test)]
    fn current(&self, key: &str) -> usize {
        self.counts.lock().ok().and_then(|c| c.get(key).copied()).unwrap_or(0)
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_refills() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", t0).is_ok());
        }
        let wait = limiter.take("a", t0).expect_err("empty");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limiter.take("b", t0).is_ok(), "buckets are per key");
        assert!(limiter.check("a", t0).is_err());
        assert!(limiter.take("a", t0 + Duration::from_millis(500)).is_ok(), "refilled");
        assert!(RateLimiter::new(0.0, 1).take("a", t0).is_ok(), "0 = unlimited");
    }

    #[test]
    fn in_flight_slots_are_counted_per_key_and_given_back() {
        let limit = InFlight::new(2);
        let a1 = limit.enter("a").expect("first");
        let a2 = limit.enter("a").expect("second");
        assert!(limit.enter("a").is_none(), "a third at once is refused");
        assert!(limit.enter("b").is_some(), "slots are per key");
        drop(a1);
        assert_eq!(limit.current("a"), 1);
        assert!(limit.enter("a").is_some(), "a slot given back is free again");
        drop(a2);
        assert_eq!(limit.counts.lock().map(|c| c.len()).unwrap_or(9), 0, "keys without requests are forgotten");
        let unlimited = InFlight::new(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.enter("a")).collect();
        assert!(held.iter().all(Option::is_some), "0 = unlimited");
    }
}
