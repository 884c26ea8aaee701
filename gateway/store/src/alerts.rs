//! Which alerts the webhook has delivered (migration 0009), so that each fires once.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Row};

use super::{Backend, LOOKUP_CHUNK, Store, StoreError};

impl Store {
    /// Those of `keys` already delivered.
    pub async fn alerts_sent(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        dispatch!(self, pool => {
            for chunk in keys.chunks(LOOKUP_CHUNK) {
                let mut qb = QueryBuilder::new("SELECT alert_key FROM alerts_sent WHERE alert_key IN (");
                let mut list = qb.separated(", ");
                for k in chunk {
                    list.push_bind(k.as_str());
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    out.insert(row.try_get(0)?);
                }
            }
        });
        Ok(out)
    }

    /// Remembers `keys` as delivered at `at`.
    pub async fn mark_alerts_sent(&self, keys: &[String], kind: &str, at: &str) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            for chunk in keys.chunks(super::INSERT_CHUNK) {
                let mut qb = QueryBuilder::new("INSERT INTO alerts_sent (alert_key, kind, sent_at) ");
                qb.push_values(chunk, |mut b, k| {
                    b.push_bind(k.as_str()).push_bind(kind).push_bind(at);
                });
                qb.push(" ON CONFLICT (alert_key) DO NOTHING");
                qb.build().execute(pool).await?;
            }
        });
        Ok(())
    }
}
