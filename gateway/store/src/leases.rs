//! Leases: which replica of a node sharing one PostgreSQL database runs its singletons (#27).
//!
//! A lease is a row taken with one statement: it goes to the asker when it is free, expired
//! or the asker's own (a renewal), and its `epoch` grows with every new holder. Time is the
//! database's `now()`, so the replicas' clocks never need to agree. The holder renews well
//! within the lease's time; a holder that cannot (dead, paused, cut off) loses it when it runs
//! out, and the next asker takes it.
//!
//! Fencing: a write that only the leader may make checks its [`Lease`] inside its own
//! transaction ([`FENCE`]), holding the row (`FOR SHARE`) until it commits, so a takeover
//! waits for that write, and a write after a takeover fails with [`StoreError::Fenced`].
//!
//! On SQLite one process owns the database: every lease is held at once, by whoever asks.

use std::time::Duration;

use crate::{Backend, Store, StoreError};

/// A lease held: checked by every fenced write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

impl Store {
    /// Takes or renews the lease `name` for `holder` for `ttl`. `None`: another holder's lease
    /// has not run out.
    pub async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(Some(Lease { name: name.to_owned(), holder: holder.to_owned(), epoch: 1 }));
        };
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, epoch, expires_at) \
             VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET \
                 epoch = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.epoch ELSE leases.epoch + 1 END, \
                 holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now() \
             RETURNING epoch",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        Ok(epoch.map(|epoch| Lease { name: name.to_owned(), holder: holder.to_owned(), epoch }))
    }

    /// Gives the lease up (a clean stop): another replica can take it at once instead of after
    /// it runs out. Nothing happens if it is no longer held.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        if let Backend::Postgres(pool) = &self.backend {
            sqlx::query("UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2 AND epoch = $3")
                .bind(&lease.name)
                .bind(&lease.holder)
                .bind(lease.epoch)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The holder of lease `name` now, and its epoch, if it has not run out.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else { return Ok(None) };
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, epoch FROM leases WHERE name = $1 AND expires_at > now()")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        Ok(row)
    }
}

/// A fenced write's check, run first in its transaction (PostgreSQL only; binds the lease's
/// name, holder and epoch): a row when the lease is still held, which stays locked until the
/// transaction ends, so no takeover comes between the check and the commit.
pub(crate) const FENCE: &str =
    "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now() FOR SHARE";

/// The error of a fenced write whose lease is gone.
pub(crate) fn fenced(lease: &Lease) -> StoreError {
    StoreError::Fenced(format!("lease {} (epoch {}) is no longer held by {}", lease.name, lease.epoch, lease.holder))
}
