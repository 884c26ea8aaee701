//! 数据库方式: a 前置库 (staging database) that departments write and the gateway collects.
//!
//! Each dataset is a staging table named like the dataset (`"CF"`, `"XK"`), keyed by the
//! manifest's `id_column`, with a `collected_column` the gateway fills. One round:
//! 1. read the oldest uncollected rows (collected column NULL);
//! 2. store them through the adapter (validated; stored once — the store is idempotent);
//! 3. in **one** 前置库 transaction: write one feedback row per input row (unique per dataset
//!    and source id, so a replay inserts nothing) and mark the rows collected.
//!
//! **Invariant:** a kill at any point loses nothing and counts nothing twice. Before step 3
//! commits, the rows are still uncollected and are read again; the store answers `duplicate`
//! for records it already holds, and the feedback then says so. After it commits, they are
//! never read again.

use std::sync::Arc;

use anyhow::Context;
use gateway_core::adapter::Dataset;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row as _};
use time::OffsetDateTime;

use super::Loaded;
use crate::ingest::{Ingest, RecordOutcome, Status};

/// Rows taken per round and dataset.
const ROUND_ROWS: i64 = 500;

/// SQL spelling of the three supported databases (the cases' 前置库, `joint::frontdb`, shares it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
    MySql,
}

impl Dialect {
    pub(crate) fn of(url: &str) -> anyhow::Result<Self> {
        Ok(match url.split(':').next().unwrap_or_default() {
            "postgres" | "postgresql" => Self::Postgres,
            "sqlite" => Self::Sqlite,
            "mysql" | "mariadb" => Self::MySql,
            other => anyhow::bail!("前置库 URL scheme {other:?} is not supported (postgres, mysql, sqlite)"),
        })
    }

    /// Quotes an identifier (names come from the signed manifest and match `^[A-Za-z_]\w*$`
    /// or a platform column name; quotes inside are refused, never escaped).
    pub(crate) fn ident(self, name: &str) -> anyhow::Result<String> {
        anyhow::ensure!(!name.contains(['"', '`', '\0']), "identifier {name:?} contains a quote");
        Ok(match self {
            Self::MySql => format!("`{name}`"),
            _ => format!("\"{name}\""),
        })
    }

    pub(crate) fn text(self) -> &'static str {
        if self == Self::MySql { "CHAR" } else { "TEXT" }
    }

    pub(crate) fn param(self, n: usize) -> String {
        if self == Self::MySql { "?".into() } else { format!("${n}") }
    }

    /// An auto-numbered `ID` primary key column.
    pub(crate) fn serial_id(self) -> &'static str {
        match self {
            Self::Postgres => "\"ID\" BIGSERIAL PRIMARY KEY",
            Self::Sqlite => "\"ID\" INTEGER PRIMARY KEY AUTOINCREMENT",
            Self::MySql => "`ID` BIGINT AUTO_INCREMENT PRIMARY KEY",
        }
    }
}

/// Collects one database-mode adapter until `stop` fires (connecting again while the 前置库 is
/// unreachable).
pub async fn run(gateway: Arc<Ingest>, loaded: Arc<Loaded>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut collector: Option<Collector> = None;
    while !*stop.borrow() {
        if collector.is_none() {
            match Collector::connect(&loaded).await {
                Ok(c) => collector = Some(c),
                Err(e) => {
                    tracing::warn!(platform = loaded.id(), error = %format!("{e:#}"), "前置库 not reachable; retrying")
                }
            }
        }
        let round = match &collector {
            Some(c) => c.round(&gateway).await,
            None => Ok(0),
        };
        let busy = super::busy(&loaded, "前置库 round", round);
        super::pause(&loaded, busy, &mut stop).await;
    }
}

/// A connection to one 前置库 and the SQL for its datasets.
#[derive(Debug)]
pub struct Collector {
    pool: AnyPool,
    dialect: Dialect,
    loaded: Arc<Loaded>,
}

impl Collector {
    pub async fn connect(loaded: &Arc<Loaded>) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = loaded.binding.database_url.as_deref().context("no database_url")?;
        let dialect = Dialect::of(url)?;
        let pool = AnyPoolOptions::new().max_connections(2).connect(url).await.context("connecting to the 前置库")?;
        let c = Self { pool, dialect, loaded: Arc::clone(loaded) };
        c.ensure_feedback_table().await?;
        Ok(c)
    }

    fn settings(&self) -> &gateway_core::adapter::DatabaseSettings {
        // `Adapter::compile` refuses database mode without these settings.
        self.loaded.adapter.manifest.transport.database.as_ref().expect("database settings checked at load")
    }

    /// Creates the feedback table when the 前置库 does not have it yet (the DDL is in
    /// `docs/adapters.md`; a DBA may create it beforehand with the same columns).
    async fn ensure_feedback_table(&self) -> anyhow::Result<()> {
        let d = self.dialect;
        let t = d.ident(&self.settings().feedback_table)?;
        let id = d.serial_id();
        let q = |c: &str| d.ident(c).unwrap_or_default();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {t} ({id}, {} VARCHAR(64) NOT NULL, {} BIGINT NOT NULL, {} VARCHAR(16) NOT NULL, \
             {} VARCHAR(64), {} BIGINT, {} TEXT, {} TEXT, {} VARCHAR(40) NOT NULL, UNIQUE ({}, {}))",
            q("DATASET"),
            q("SOURCE_ID"),
            q("STATUS"),
            q("RECORD_ID"),
            q("VERSION"),
            q("MESSAGE"),
            q("ERRORS"),
            q("CREATED_AT"),
            q("DATASET"),
            q("SOURCE_ID"),
        );
        sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await.context("creating the feedback table")?;
        Ok(())
    }

    /// One round over every dataset. Returns how many rows were collected.
    pub async fn round(&self, gateway: &Arc<Ingest>) -> anyhow::Result<usize> {
        let mut collected = 0;
        for ds in &self.loaded.adapter.datasets {
            collected += self.collect(gateway, ds).await.with_context(|| format!("dataset {}", ds.spec.name))?;
        }
        Ok(collected)
    }

    async fn collect(&self, gateway: &Arc<Ingest>, ds: &Arc<Dataset>) -> anyhow::Result<usize> {
        let d = self.dialect;
        let s = self.settings();
        let table = d.ident(&ds.spec.name)?;
        let id = d.ident(&s.id_column)?;
        let collected = d.ident(&s.collected_column)?;
        let columns = ds.columns();
        let mut select = format!("SELECT {id}");
        for c in &columns {
            select.push_str(&format!(", CAST({} AS {})", d.ident(c)?, d.text()));
        }
        select.push_str(&format!(" FROM {table} WHERE {collected} IS NULL ORDER BY {id} LIMIT {ROUND_ROWS}"));
        let rows: Vec<AnyRow> = sqlx::query(AssertSqlSafe(select)).fetch_all(&self.pool).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut staged = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get::<i64, _>(0)?);
            let mut cells = Vec::with_capacity(columns.len());
            for (i, c) in columns.iter().enumerate() {
                if let Some(v) = row.try_get::<Option<String>, _>(i + 1)? {
                    cells.push(((*c).to_owned(), v));
                }
            }
            staged.push(ds.row_from_text(cells));
        }
        let result = gateway
            .push_rows(self.loaded.id(), Arc::clone(ds), staged, OffsetDateTime::now_utc(), &self.loaded.scope(), None)
            .await
            .map_err(|e| anyhow::anyhow!("storing rows: {e:?}"))?;
        self.settle(ds, &ids, &result.outcomes).await?;
        tracing::info!(
            platform = self.loaded.id(),
            dataset = %ds.spec.name,
            rows = ids.len(),
            accepted = result.accepted,
            rejected = result.rejected,
            "前置库 rows collected"
        );
        Ok(ids.len())
    }

    /// Step 3: feedback rows and the collected mark, together or not at all.
    async fn settle(&self, ds: &Dataset, ids: &[i64], outcomes: &[RecordOutcome]) -> anyhow::Result<()> {
        let d = self.dialect;
        let s = self.settings();
        let q = |c: &str| d.ident(c);
        let now = gateway_core::date::format_timestamp(OffsetDateTime::now_utc());
        let mut tx = self.pool.begin().await?;
        for chunk in ids.iter().zip(outcomes).collect::<Vec<_>>().chunks(100) {
            let mut sql = format!(
                "INSERT {}INTO {} ({}, {}, {}, {}, {}, {}, {}, {}) VALUES ",
                if d == Dialect::MySql { "IGNORE " } else { "" },
                q(&s.feedback_table)?,
                q("DATASET")?,
                q("SOURCE_ID")?,
                q("STATUS")?,
                q("RECORD_ID")?,
                q("VERSION")?,
                q("MESSAGE")?,
                q("ERRORS")?,
                q("CREATED_AT")?
            );
            // Eight placeholders per feedback row, numbered on across rows.
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| format!("({})", (1..=8).map(|k| d.param(row * 8 + k)).collect::<Vec<_>>().join(", ")))
                .collect();
            sql.push_str(&rows.join(", "));
            if d != Dialect::MySql {
                sql.push_str(&format!(" ON CONFLICT ({}, {}) DO NOTHING", q("DATASET")?, q("SOURCE_ID")?));
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (source_id, o) in chunk {
                let (status, message) = describe(o);
                query = query
                    .bind(ds.spec.name.clone())
                    .bind(**source_id)
                    .bind(status)
                    .bind(o.record_id.map(|id| id.to_string()))
                    .bind(o.version)
                    .bind(message)
                    .bind((!o.errors.is_empty()).then(|| serde_json::to_string(&o.errors).unwrap_or_default()))
                    .bind(now.clone());
            }
            query.execute(&mut *tx).await.context("writing feedback rows")?;
        }
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let sql = format!(
                "UPDATE {} SET {} = CURRENT_TIMESTAMP WHERE {} IN ({})",
                q(&ds.spec.name)?,
                q(&s.collected_column)?,
                q(&s.id_column)?,
                list.join(", ")
            );
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await.context("marking rows collected")?;
        }
        tx.commit().await.context("committing feedback")?;
        Ok(())
    }
}

/// Feedback status and a readable message (Chinese, then English) for one row.
fn describe(o: &RecordOutcome) -> (&'static str, Option<String>) {
    match o.status {
        Status::Accepted => ("accepted", None),
        Status::Duplicate => ("duplicate", Some("与已入库记录相同，未重复入库 / identical to a stored record".into())),
        Status::NewVersion => ("new_version", None),
        Status::Rejected => (
            "rejected",
            Some(
                o.errors
                    .iter()
                    .map(|e| format!("{} {}：{} / {}", e.pointer, e.rule, e.message_zh, e.message_en))
                    .collect::<Vec<_>>()
                    .join("；"),
            ),
        ),
    }
}
