//! The raw write ceilings of a PostgreSQL store, for `credit-gateway bench ingest`: the rows
//! the store's ingest writes, written straight into scratch copies of the `records` table
//! (same columns, same indexes) by `concurrency` sessions at once, one transaction per batch,
//! with nothing else: no natural-key lookup, no lock shared between sessions, no quality
//! counters. Once as multi-row `INSERT`s, the statements [`Store::ingest`] runs, and once as
//! `COPY … FROM STDIN`, PostgreSQL's fastest way in. The scratch tables are dropped afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Backend, INSERT_CHUNK, Incoming, NewRow, Store, StoreError, all_inserted};

/// How a write ceiling puts the rows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeilingMethod {
    /// Multi-row `INSERT`s of [`INSERT_CHUNK`] rows, as the store's ingest writes them.
    MultiRowInsert,
    /// One `COPY … FROM STDIN` (text format) per batch.
    Copy,
}

impl Store {
    /// Writes `batches` (each committed in its own transaction) into a scratch copy of
    /// `records` with `concurrency` sessions, and says how long it took. PostgreSQL only.
    pub async fn write_ceiling(
        &self,
        method: CeilingMethod,
        origin: &str,
        batches: Vec<Vec<Incoming>>,
        concurrency: usize,
    ) -> Result<Duration, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Refused("the write ceilings are measured on PostgreSQL only".into()));
        };
        let table = format!("ceiling_{}", Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {table} (LIKE records INCLUDING ALL)")))
            .execute(pool)
            .await?;
        let queue = Arc::new(std::sync::Mutex::new(batches));
        let received_at = gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc());
        let started = Instant::now();
        let mut sessions = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (pool, queue, table, origin, received_at) =
                (pool.clone(), Arc::clone(&queue), table.clone(), origin.to_owned(), received_at.clone());
            sessions.spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
                    let Some(batch) = next else { return Ok::<(), StoreError>(()) };
                    let rows: Vec<NewRow<'_>> = batch
                        .iter()
                        .map(|incoming| NewRow {
                            origin: &origin,
                            received_at: &received_at,
                            incoming,
                            record_id: Uuid::now_v7(),
                            version: 1,
                            arrival: None,
                        })
                        .collect();
                    let mut tx = pool.begin().await?;
                    match method {
                        CeilingMethod::MultiRowInsert => {
                            for chunk in rows.chunks(INSERT_CHUNK) {
                                let inserted = insert_rows!(@statement_into table, chunk, ("INSERT INTO", ""))
                                    .build()
                                    .execute(&mut *tx)
                                    .await?
                                    .rows_affected();
                                all_inserted(inserted, chunk.len(), || "ceiling rows".to_owned())?;
                            }
                        }
                        CeilingMethod::Copy => {
                            let mut text = String::with_capacity(rows.len() * 1_600);
                            for row in &rows {
                                super::records::copy_line(row, &mut text);
                            }
                            let statement = format!("COPY {table} ({}) FROM STDIN", super::records::INSERT_COLUMNS);
                            let mut copy = tx.copy_in_raw(&statement).await?;
                            copy.send(text.into_bytes()).await?;
                            let copied = copy.finish().await?;
                            all_inserted(copied, rows.len(), || "ceiling rows".to_owned())?;
                        }
                    }
                    tx.commit().await?;
                }
            });
        }
        let mut result = Ok(());
        while let Some(done) = sessions.join_next().await {
            let outcome = done.map_err(|e| StoreError::GroupCommit(format!("a ceiling session panicked: {e}")));
            if result.is_ok() {
                result = outcome.and_then(|r| r);
            }
        }
        let elapsed = started.elapsed();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(pool).await?;
        result.map(|()| elapsed)
    }
}
