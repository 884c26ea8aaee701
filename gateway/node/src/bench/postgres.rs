//! `credit-gateway bench ingest --postgres URL`: the push path on PostgreSQL, each round beside
//! the store's raw write ceilings measured in that round: the same rows as multi-row INSERTs
//! and as COPY, by as many sessions as the HTTP run has clients (`gateway_store::CeilingMethod`).
//! Each round also pushes through two replicas of the node sharing one database. Every phase
//! has a fresh database of its own on the server, made by the bench and dropped afterwards.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gateway_store::{CeilingMethod, Incoming};
use sqlx::Connection as _;

use super::{IngestOptions, rate};
use crate::config::Config;

/// One phase of a round: its rate, and what it cost the whole machine.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub records_per_second: f64,
    /// CPU time of the whole machine (gateway, database server, clients) per record, µs.
    pub cpu_us_per_record: f64,
}

/// One round's phases.
#[derive(Debug, Clone, Copy)]
pub struct PostgresRound {
    pub copy: Phase,
    /// Multi-row INSERTs by as many sessions as the HTTP run has clients.
    pub multi_row_insert: Phase,
    /// The same by one session: the store commits one transaction at a time (see the report).
    pub multi_row_insert_one_session: Phase,
    /// Pre-validated batches through `Store::ingest` (lookup, insert, quality counters).
    pub store: Phase,
    pub http_one: Phase,
    pub http_two: Phase,
    /// Bytes on disk per record after the one-replica HTTP run: the `records` table with its
    /// indexes and TOAST, and the whole database.
    pub records_bytes_per_record: f64,
    pub database_bytes_per_record: f64,
    /// How the one-replica run read `records` (autovacuum off for it).
    pub scans: Scans,
}

/// Scans of the `records` table over a run (`pg_stat_user_tables`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scans {
    pub sequential: i64,
    /// Rows the sequential scans read.
    pub rows_read: i64,
    pub index: i64,
}

impl PostgresRound {
    pub fn http_to_insert(&self) -> f64 {
        self.http_one.records_per_second / self.multi_row_insert.records_per_second
    }

    pub fn two_to_one(&self) -> f64 {
        self.http_two.records_per_second / self.http_one.records_per_second
    }
}

/// Runs `phase` (which returns its rate) and measures the machine's CPU over it.
async fn measured(records: usize, phase: impl Future<Output = anyhow::Result<f64>>) -> anyhow::Result<Phase> {
    let before = super::machine_busy_seconds();
    let records_per_second = phase.await?;
    let cpu = super::machine_busy_seconds().zip(before).map_or(f64::NAN, |(after, before)| after - before);
    Ok(Phase { records_per_second, cpu_us_per_record: cpu * 1e6 / records as f64 })
}

#[derive(Debug)]
pub struct PostgresIngestReport {
    pub records: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub mean_record_bytes: usize,
    pub server_version: String,
    pub validate_rate: f64,
    pub rounds: Vec<PostgresRound>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl PostgresIngestReport {
    fn median_of(&self, f: impl Fn(&PostgresRound) -> f64) -> f64 {
        median(self.rounds.iter().map(f).collect())
    }

    /// HTTP with one replica / the multi-row INSERT ceiling, median over the rounds.
    pub fn ratio(&self) -> f64 {
        self.median_of(PostgresRound::http_to_insert)
    }
}

/// Picks one figure out of a round, for a row of the report.
type Pick<T> = fn(&PostgresRound) -> T;

impl fmt::Display for PostgresIngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## Ingest on PostgreSQL: HTTP push vs the raw write ceilings, 1 and 2 replicas\n")?;
        writeln!(
            f,
            "{} synthetic records (mean {} bytes of JSON), batches of {}, {} concurrent HTTP clients or database \
             sessions, {} on this machine ({} cores; the server shares them with the gateway and the clients). \
             Every phase starts on a fresh database. Rounds run back to back; each ratio is taken within its round.\n",
            self.records,
            self.mean_record_bytes,
            self.batch,
            self.concurrency,
            self.server_version,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        )?;
        write!(f, "| records/s |")?;
        for i in 1..=self.rounds.len() {
            write!(f, " round {i} |")?;
        }
        writeln!(f, " median |")?;
        writeln!(f, "|---|{}---:|", "---:|".repeat(self.rounds.len()))?;
        let phases: [(&str, Pick<Phase>); 6] = [
            ("ceiling: COPY … FROM STDIN, one per batch", |r| r.copy),
            ("**ceiling: multi-row INSERT** (the store's statements, nothing else)", |r| r.multi_row_insert),
            ("multi-row INSERT by one session", |r| r.multi_row_insert_one_session),
            ("store alone: pre-validated batches into `Store::ingest`", |r| r.store),
            ("**HTTP API, one replica**", |r| r.http_one),
            ("HTTP API, two replicas on one database", |r| r.http_two),
        ];
        for (name, get) in phases {
            write!(f, "| {name} |")?;
            for r in &self.rounds {
                write!(f, " {:.0} |", get(r).records_per_second)?;
            }
            writeln!(f, " {:.0} |", self.median_of(|r| get(r).records_per_second))?;
        }
        let ratios: [(&str, Pick<f64>); 3] = [
            ("**HTTP (one replica) / multi-row INSERT**", PostgresRound::http_to_insert),
            ("HTTP (one replica) / COPY", |r| r.http_one.records_per_second / r.copy.records_per_second),
            ("two replicas / one replica", PostgresRound::two_to_one),
        ];
        for (name, get) in ratios {
            write!(f, "| {name} |")?;
            for r in &self.rounds {
                write!(f, " {:.2}× |", get(r))?;
            }
            writeln!(f, " {:.2}× |", self.median_of(get))?;
        }
        writeln!(f, "\n| CPU of the whole machine per record (gateway, database server, clients) | µs, median |")?;
        writeln!(f, "|---|---:|")?;
        for (name, get) in phases {
            writeln!(f, "| {name} | {:.1} |", self.median_of(|r| get(r).cpu_us_per_record))?;
        }
        writeln!(
            f,
            "\nOn disk after the one-replica run: {:.0} bytes per record in `records` with its indexes, {:.0} in \
             the whole database (median). Validation alone (schema, rules, canonical form, hashes; both cores): \
             {:.0} records/s. HTTP / multi-row INSERT, median of {} rounds = **{:.2}×** (target ≥ 0.8×).",
            self.median_of(|r| r.records_bytes_per_record),
            self.median_of(|r| r.database_bytes_per_record),
            self.validate_rate,
            self.rounds.len(),
            self.ratio()
        )?;
        write!(f, "\nReads of `records` during the one-replica HTTP runs, autovacuum off for the table:")?;
        for (i, r) in self.rounds.iter().enumerate() {
            let s = r.scans;
            write!(
                f,
                " round {}: {} sequential scans reading {} rows, {} index scans;",
                i + 1,
                s.sequential,
                s.rows_read,
                s.index
            )?;
        }
        writeln!(f)
    }
}

/// Databases a bench makes on one server, dropped by [`Scratch::drop_all`].
pub(super) struct Scratch {
    admin: String,
    made: Vec<String>,
}

impl Scratch {
    /// Databases on the server at `admin` (a URL of any database there the user may connect to).
    pub(super) fn on(admin: &str) -> Self {
        Self { admin: admin.to_owned(), made: Vec::new() }
    }

    /// A new, empty database: its URL.
    pub(super) async fn create(&mut self) -> anyhow::Result<String> {
        let name = format!("cg_bench_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.context("connecting to PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        self.made.push(name.clone());
        conn.close().await?;
        Ok(with_database(&self.admin, &name))
    }

    /// Asks the server to write its dirty pages now, so one phase's checkpoint does not land in
    /// the next. Needs a superuser; without one the phases share checkpoints as they fall.
    async fn checkpoint(&self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query("CHECKPOINT").execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }

    pub(super) async fn drop_all(self) {
        let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await else {
            tracing::error!(databases = ?self.made, "could not connect to drop the bench's databases");
            return;
        };
        for name in &self.made {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                tracing::error!(database = %name, error = %e, "could not drop a bench database");
            }
        }
    }
}

/// `admin` (a `postgres://` URL) naming the database `name` instead, its parameters kept.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = base[authority..].find('/').map_or(base, |i| &base[..authority + i]);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Runs the ingest benchmark on the PostgreSQL server at `url` (any database there the user
/// may connect to; the bench works in databases of its own).
pub async fn ingest_postgres(opts: &IngestOptions, url: &str) -> anyhow::Result<PostgresIngestReport> {
    if opts.batch == 0 || opts.records < opts.batch || opts.concurrency == 0 || opts.rounds == 0 {
        bail!("need records ≥ batch ≥ 1, concurrency ≥ 1 and rounds ≥ 1");
    }
    let mut scratch = Scratch::on(url);
    let result = rounds(opts, &mut scratch).await;
    scratch.drop_all().await;
    let report = result?;
    super::write_section(&opts.report, "## Ingest on PostgreSQL", "bench ingest --postgres …", &report.to_string())?;
    Ok(report)
}

async fn rounds(opts: &IngestOptions, scratch: &mut Scratch) -> anyhow::Result<PostgresIngestReport> {
    let super::Pushes { texts, mean_record_bytes, bodies } = super::Pushes::synthetic(opts.records, opts.batch);
    let dir = tempfile::tempdir()?;
    let config = |name: &str, database: &str| Config {
        database_url: Some(database.to_owned()),
        ..super::push_only_config(&dir.path().join(name), opts.batch)
    };

    let database = scratch.create().await?;
    let gw = crate::server::open_ingest(&config("validate", &database)).await?;
    let server_version: String = {
        let mut conn = sqlx::PgConnection::connect(&database).await?;
        let v = sqlx::query_scalar("SHOW server_version").fetch_one(&mut conn).await?;
        conn.close().await?;
        v
    };
    let (validated, validate_rate) = super::validate_all(&gw, texts, opts.batch).await?;
    gw.store.close().await;
    drop(gw);

    let batches = |rows: &[Incoming]| rows.chunks(opts.batch).map(<[Incoming]>::to_vec).collect::<Vec<_>>();
    let mut rounds = Vec::new();
    for round in 1..=opts.rounds {
        // The ceilings and the store alone, each into empty tables of a fresh database.
        let database = scratch.create().await?;
        let gw = crate::server::open_ingest(&config(&format!("raw{round}"), &database)).await?;
        let scratch_ref = &*scratch;
        let ceiling = async |method, sessions| {
            let (gw, batches) = (Arc::clone(&gw), batches(&validated));
            scratch_ref.checkpoint().await;
            measured(opts.records, async {
                let took = gw.store.write_ceiling(method, "cn-370306", batches, sessions).await?;
                Ok(rate(opts.records, took))
            })
            .await
        };
        let multi_row_insert = ceiling(CeilingMethod::MultiRowInsert, opts.concurrency).await?;
        let multi_row_insert_one_session = ceiling(CeilingMethod::MultiRowInsert, 1).await?;
        let copy = ceiling(CeilingMethod::Copy, opts.concurrency).await?;
        scratch.checkpoint().await;
        let store =
            measured(opts.records, super::raw_store_rate(&gw, validated.clone(), opts.batch, opts.concurrency)).await?;
        gw.store.close().await;
        drop(gw);

        let mut http = Vec::new();
        let mut sizes = (f64::NAN, f64::NAN);
        let mut scans = Scans::default();
        for replicas in [1, 2] {
            let database = scratch.create().await?;
            scratch.checkpoint().await;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut nodes = Vec::new();
            for i in 0..replicas {
                let mut stopped = stopped.clone();
                let node_config = Config {
                    listen: "127.0.0.1:0".parse()?,
                    ..config(&format!("http{round}-{replicas}-{i}"), &database)
                };
                nodes.push(
                    crate::server::start(node_config, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await?,
                );
            }
            let mut conn = sqlx::PgConnection::connect(&database).await?;
            // As on a fresh database whose autovacuum has not come round: the planner's figures
            // are what the node's own ANALYZE gives it (see the scans below). Both replica
            // counts alike, so that 2 against 1 compares like with like.
            sqlx::query("ALTER TABLE records SET (autovacuum_enabled = false)").execute(&mut conn).await?;
            let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}/api/v1/records", n.api)).collect();
            http.push(
                measured(opts.records, super::http_rate(&urls, bodies.clone(), opts.concurrency, opts.records)).await?,
            );
            let _ = stop.send(true);
            for node in nodes {
                node.stopped().await?;
            }
            // A session's statistics are in once it has ended on the server; the count comes
            // after reading them, so that its own scan is not among them.
            if replicas == 1 {
                let others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                              AND pid <> pg_backend_pid()";
                super::wait_until(
                    "the nodes' sessions ended",
                    Duration::from_millis(20),
                    Duration::from_secs(10),
                    async || sqlx::query_scalar::<_, i64>(others).fetch_one(&mut conn).await.is_ok_and(|n| n == 0),
                )
                .await?;
                let (table, whole, seq_scans, seq_rows, index_scans): (i64, i64, i64, i64, i64) = sqlx::query_as(
                    "SELECT pg_total_relation_size('records'), pg_database_size(current_database()), \
                     seq_scan, seq_tup_read, COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'records'",
                )
                .fetch_one(&mut conn)
                .await?;
                let n = opts.records as f64;
                sizes = (table as f64 / n, whole as f64 / n);
                scans = Scans { sequential: seq_scans, rows_read: seq_rows, index: index_scans };
            }
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM records").fetch_one(&mut conn).await?;
            conn.close().await?;
            if stored != opts.records as i64 {
                bail!("HTTP run with {replicas} replicas stored {stored} records, expected {}", opts.records);
            }
        }
        let r = PostgresRound {
            copy,
            multi_row_insert,
            multi_row_insert_one_session,
            store,
            http_one: http[0],
            http_two: http[1],
            records_bytes_per_record: sizes.0,
            database_bytes_per_record: sizes.1,
            scans,
        };
        tracing::info!(round, ?r, "PostgreSQL ingest round");
        rounds.push(r);
    }
    Ok(PostgresIngestReport {
        records: opts.records,
        batch: opts.batch,
        concurrency: opts.concurrency,
        mean_record_bytes,
        server_version: format!("PostgreSQL {}", server_version.split_whitespace().next().unwrap_or_default()),
        validate_rate,
        rounds,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn a_database_url_names_another_database_with_its_parameters_kept() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
            ("postgres://u:p@h/postgres?sslmode=disable", "postgres://u:p@h/x?sslmode=disable"),
            ("postgres://h:5432", "postgres://h:5432/x"),
        ];
        for (admin, expected) in cases {
            assert_eq!(super::with_database(admin, "x"), expected);
        }
    }
}
