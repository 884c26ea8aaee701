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

use gateway_core::date::format_date;

use super::{Backend, INSERT_CHUNK, Incoming, NewRow, Store, StoreError, all_inserted, short};

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
                                copy_line(row, &mut text);
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

/// One row of `COPY … FROM STDIN` in text format: the columns of [`super::records::INSERT_COLUMNS`].
fn copy_line(row: &NewRow<'_>, out: &mut String) {
    let r = &row.incoming.record;
    let target = r.target.as_ref();
    let fields: [Option<std::borrow::Cow<'_, str>>; 21] = [
        Some(row.record_id.to_string().into()),
        Some(row.version.to_string().into()),
        Some(row.origin.into()),
        Some(r.record_type.as_str().into()),
        Some(r.natural_key.to_hex().into()),
        Some(short(&r.natural_key).to_string().into()),
        Some(short(&r.content_hash).to_string().into()),
        Some(r.content_hash.to_hex().into()),
        r.subject_uscc.as_deref().map(Into::into),
        r.clock_start.map(|d| format_date(d).into()),
        row.incoming.deadline.map(|d| format_date(d).into()),
        Some(row.received_at.into()),
        Some(r.canonical_content.as_str().into()),
        row.arrival.map(|a| a.envelope_digest.into()),
        row.arrival.map(|a| a.leaf_index.to_string().into()),
        Some(r.disclosure.as_str().into()),
        target.map(|t| t.origin.as_str().into()),
        target.map(|t| t.record_id.as_str().into()),
        target.map(|t| t.version.to_string().into()),
        row.incoming.intake.as_deref().map(Into::into),
        Some(r.quality.department_uscc.as_str()).filter(|d| !d.is_empty()).map(Into::into),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match field {
            None => out.push_str("\\N"),
            Some(text) => escape_copy_text(text, out),
        }
    }
    out.push('\n');
}

/// A value in `COPY`'s text format: backslash, tab, newline and carriage return escaped.
fn escape_copy_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `copy_line` writes a fixed array of 21 values, one per column of the INSERTs' list.
    #[test]
    fn copy_writes_one_value_per_insert_column() {
        assert_eq!(crate::records::INSERT_COLUMNS.split(',').count(), 21);
    }

    #[test]
    fn copy_text_escapes_what_the_format_reserves() {
        let mut out = String::new();
        super::escape_copy_text("a\\b\tc\nd\re 中", &mut out);
        assert_eq!(out, "a\\\\b\\tc\\nd\\re 中");
    }
}
