//! 数据库方式 (前置库) on a real PostgreSQL: departments stage rows for 信用濮阳, a real
//! `credit-gateway serve` process collects them through the signed xinyong-puyang adapter and is
//! killed with SIGKILL several times mid-collection. In the end every staged row is collected
//! once (stored once, marked collected) and has exactly one feedback row: accepted, or
//! rejected with its reasons.
//!
//! `QZK_ROWS` (default 10,000) and `QZK_KILLS` (default 4) scale it.

use std::path::Path;
use std::time::Duration;

use credit_gateway::bench::synthetic_records;
use gateway_core::crypto::Alg;
use serde_json::Value;
use sqlx::{Connection, Row};

const MEMBER: &str = "cn-410900";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A fresh database for one run (the department's 前置库), dropped at the end.
struct StagingDb {
    name: String,
    url: String,
}

impl StagingDb {
    async fn create() -> Self {
        let name = format!("qzk_{}", uuid::Uuid::now_v7().simple());
        let admin = testkit::postgres_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL is required for this test");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create db");
        let url = format!("{}/{name}", admin.rsplit_once('/').expect("url").0);
        Self { name, url }
    }

    async fn drop(self) {
        let mut conn = sqlx::PgConnection::connect(&testkit::postgres_url()).await.expect("connect");
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("drop db");
    }
}

/// The staging tables as a department's DBA would create them: the platform's columns, a
/// numeric amount, the key and the gateway's collected mark.
async fn stage(db: &StagingDb, rows: usize) -> (usize, usize) {
    let adapter = credit_gateway::adapters::compile(&testkit::repo_dir().join("adapters/xinyong-puyang/manifest.toml"))
        .expect("manifest");
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    for ds in &adapter.datasets {
        let columns: Vec<String> = ds
            .columns()
            .iter()
            .map(|c| {
                let numeric = ds.platform_schema["properties"][c]["type"] == "number";
                format!("\"{c}\" {}", if numeric { "NUMERIC(18,6)" } else { "TEXT" })
            })
            .collect();
        let sql = format!(
            "CREATE TABLE \"{}\" (\"ID\" BIGSERIAL PRIMARY KEY, {}, \"GW_COLLECTED_AT\" TIMESTAMPTZ)",
            ds.spec.name,
            columns.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("create staging table");
    }
    // The feedback table as the DBA made it (the gateway creates it only when missing), on a
    // slow disk: each insert statement takes 50 ms, which widens the window between "stored at
    // the gateway" and "fed back" so that kills land inside it.
    for sql in [
        "CREATE TABLE \"GW_FEEDBACK\" (\"ID\" BIGSERIAL PRIMARY KEY, \"DATASET\" VARCHAR(64) NOT NULL, \"SOURCE_ID\" BIGINT NOT NULL, \"STATUS\" VARCHAR(16) NOT NULL, \"RECORD_ID\" VARCHAR(64), \"VERSION\" BIGINT, \"MESSAGE\" TEXT, \"ERRORS\" TEXT, \"CREATED_AT\" VARCHAR(40) NOT NULL, UNIQUE (\"DATASET\", \"SOURCE_ID\"))",
        "CREATE FUNCTION slow_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$",
        "CREATE TRIGGER slow_feedback BEFORE INSERT ON \"GW_FEEDBACK\" FOR EACH STATEMENT EXECUTE FUNCTION slow_disk()",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect("feedback table");
    }
    let mut invalid = 0;
    let mut records = synthetic_records(rows, 4109);
    for (i, r) in records.iter_mut().enumerate() {
        r["region_code"] = "410900".into();
        if i % 25 == 7 {
            // A wrong check character: the department typed one character wrong.
            let uscc = r["party_uscc"].as_str().expect("uscc").to_owned();
            let last = if uscc.ends_with('0') { '1' } else { '0' };
            r["party_uscc"] = format!("{}{last}", &uscc[..17]).into();
            invalid += 1;
        }
    }
    let mut tx = conn.begin().await.expect("tx");
    for r in &records {
        let ds = adapter
            .dataset_for(r["record_type"].as_str().expect("type").parse().expect("record type"))
            .expect("dataset");
        let row = ds.to_platform(r).expect("translates");
        let names: Vec<String> = row.keys().map(|k| format!("\"{k}\"")).collect();
        let params: Vec<String> = (1..=row.len())
            .zip(row.keys())
            .map(|(n, k)| {
                if ds.platform_schema["properties"][k]["type"] == "number" {
                    format!("${n}::NUMERIC")
                } else {
                    format!("${n}")
                }
            })
            .collect();
        let sql = format!("INSERT INTO \"{}\" ({}) VALUES ({})", ds.spec.name, names.join(", "), params.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in row.values() {
            q = q.bind(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        q.execute(&mut *tx).await.expect("stage row");
    }
    tx.commit().await.expect("commit");
    (rows - invalid, invalid)
}

async fn count(db: &StagingDb, sql: &'static str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query(sql).fetch_one(&mut conn).await.map(|r| r.get::<i64, _>(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn start(dir: &Path, api: u16, pki: &Path, config: &Path) -> testkit::Node {
    let fed = format!("127.0.0.1:{}", testkit::free_port());
    let pki = pki.display().to_string();
    let config = config.display().to_string();
    testkit::Node::start_at(
        dir,
        &format!("127.0.0.1:{api}"),
        &["--member", MEMBER, "--pki", &pki, "--federation-listen", &fed, "--config", &config],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_staged_row_is_collected_once_with_one_feedback_row_despite_kills() {
    let rows = env_or("QZK_ROWS", 10_000) as usize;
    let kills = env_or("QZK_KILLS", 4);
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let db = StagingDb::create().await;
    let (valid, invalid) = stage(&db, rows).await;

    let config = tmp.path().join("node.toml");
    let manifest = testkit::repo_dir().join("adapters/xinyong-puyang/manifest.toml");
    let signature = credit_gateway::pki::adapter_signature_file(&pki, "xinyong-puyang");
    std::fs::write(
        &config,
        format!(
            "[relay]\nenabled = false\n\n[[adapters]]\nmanifest = {:?}\nsignature = {:?}\ndatabase_url = {:?}\npoll_interval_ms = 50\n",
            manifest.display().to_string(),
            signature.display().to_string(),
            db.url
        ),
    )
    .expect("config");
    let data = tmp.path().join("puyang");
    let api = testkit::free_port();
    let feedback = || count(&db, "SELECT COUNT(*) FROM \"GW_FEEDBACK\"");

    let client = reqwest::Client::new();
    let mut node = start(&data, api, &pki, &config);
    for k in 1..=kills {
        let at = (rows as i64) * k as i64 / (kills as i64 + 2);
        testkit::eventually("collection to progress", Duration::from_secs(120), async || feedback().await >= at).await;
        if k % 2 == 1 {
            // Odd kills land in the worst place: rows stored at the gateway, feedback not yet
            // committed in the 前置库.
            let base = node.base.clone();
            testkit::eventually("rows stored but not yet fed back", Duration::from_secs(120), async || {
                let fed_ok = count(&db, "SELECT COUNT(*) FROM \"GW_FEEDBACK\" WHERE \"STATUS\" <> 'rejected'").await;
                let stored = testkit::metric(&client, &base, "credit_gateway_records_stored").await.unwrap_or(0.0);
                stored as i64 > fed_ok
            })
            .await;
        }
        node.kill9();
        eprintln!("kill {k}: killed with {} of {rows} rows fed back", feedback().await);
        node = start(&data, api, &pki, &config);
    }
    testkit::eventually("every row collected", Duration::from_secs(300), async || {
        feedback().await == rows as i64
            && count(&db, "SELECT (SELECT COUNT(*) FROM \"CF\" WHERE \"GW_COLLECTED_AT\" IS NULL) + (SELECT COUNT(*) FROM \"XK\" WHERE \"GW_COLLECTED_AT\" IS NULL)").await == 0
    })
    .await;

    // One feedback row per staged row, no more (the unique key would refuse a second, and the
    // count shows none is missing).
    let staged = count(&db, "SELECT (SELECT COUNT(*) FROM \"CF\") + (SELECT COUNT(*) FROM \"XK\")").await;
    assert_eq!(staged, rows as i64);
    assert_eq!(feedback().await, rows as i64);
    let rejected = count(
        &db,
        "SELECT COUNT(*) FROM \"GW_FEEDBACK\" WHERE \"STATUS\" = 'rejected' AND \"ERRORS\" LIKE '%uscc.check_char%'",
    )
    .await;
    assert_eq!(rejected, invalid as i64);
    let stored_ok =
        count(&db, "SELECT COUNT(*) FROM \"GW_FEEDBACK\" WHERE \"STATUS\" IN ('accepted', 'duplicate') AND \"RECORD_ID\" IS NOT NULL").await;
    assert_eq!(stored_ok, valid as i64);
    let replayed = count(&db, "SELECT COUNT(*) FROM \"GW_FEEDBACK\" WHERE \"STATUS\" = 'duplicate'").await;
    eprintln!("{rows} rows: {valid} stored, {invalid} rejected; {replayed} answered duplicate after a kill");
    // Each feedback row names its staged row, in its own dataset.
    let orphans = count(
        &db,
        "SELECT COUNT(*) FROM \"GW_FEEDBACK\" f WHERE NOT EXISTS (SELECT 1 FROM \"CF\" s WHERE f.\"DATASET\" = 'CF' AND s.\"ID\" = f.\"SOURCE_ID\") AND NOT EXISTS (SELECT 1 FROM \"XK\" s WHERE f.\"DATASET\" = 'XK' AND s.\"ID\" = f.\"SOURCE_ID\")",
    )
    .await;
    assert_eq!(orphans, 0);

    // The gateway holds each valid row once: as many records as valid rows, one version each.
    let stored = testkit::metric(&client, &node.base, "credit_gateway_records_stored").await;
    assert_eq!(stored, Some(valid as f64), "records stored at 信用濮阳");
    drop(node);
    db.drop().await;
}

/// The same collector on a SQLite 前置库 (a small department without a database server): the
/// gateway creates the feedback table, collects, and a second round finds nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_staging_database_is_collected_the_same_way() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("qzk.sqlite").display());
    small_collection(&url).await;
}

/// And on MySQL/MariaDB (`tests/run` starts the local MariaDB; `CREDIT_GATEWAY_TEST_MYSQL`
/// points elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_staging_database_is_collected_the_same_way() {
    testkit::with_mysql_database(async |url| small_collection(url).await).await;
}

async fn small_collection(url: &str) {
    sqlx::any::install_default_drivers();
    let mysql = url.starts_with("mysql:");
    let (tmp, pki) = testkit::demo_pki(Alg::EdDsa);
    let (_, node) = testkit::start_federation_node(&pki, MEMBER, &tmp.path().join("node")).await;
    let binding = credit_gateway::adapters::AdapterBinding {
        manifest: testkit::repo_dir().join("adapters/xinyong-puyang/manifest.toml"),
        signature: Some(credit_gateway::pki::adapter_signature_file(&pki, "xinyong-puyang")),
        url: None,
        inbox: None,
        outbox: None,
        database_url: Some(url.to_owned()),
        poll_interval_ms: 50,
        units: Vec::new(),
    };
    let registry = node.identity.registry.read().expect("registry").clone();
    let loaded = credit_gateway::adapters::load_all(&[binding], &registry, MEMBER).expect("loads");
    let ds = loaded[0].adapter.dataset("CF").expect("CF");
    let q = |name: &str| if mysql { format!("`{name}`") } else { format!("\"{name}\"") };
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("staging database");
    for d in &loaded[0].adapter.datasets {
        let cols: Vec<String> = d.columns().iter().map(|c| format!("{} TEXT", q(c))).collect();
        let id = if mysql { "BIGINT AUTO_INCREMENT PRIMARY KEY" } else { "INTEGER PRIMARY KEY" };
        let stamp = if mysql { "DATETIME NULL" } else { "TEXT" };
        let sql = format!(
            "CREATE TABLE {} ({} {id}, {}, {} {stamp})",
            q(&d.spec.name),
            q("ID"),
            cols.join(", "),
            q("GW_COLLECTED_AT")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("staging table");
    }
    let rows: Vec<Value> = synthetic_records(200, 9)
        .into_iter()
        .filter(|r| r["record_type"] == "admin_penalty")
        .map(|mut r| {
            r["region_code"] = "410900".into();
            Value::Object(ds.to_platform(&r).expect("row"))
        })
        .collect();
    for row in &rows {
        let row = row.as_object().expect("object");
        let names: Vec<String> = row.keys().map(|k| q(k)).collect();
        let params: Vec<String> = (1..=row.len()).map(|n| if mysql { "?".into() } else { format!("${n}") }).collect();
        let sql = format!("INSERT INTO {} ({}) VALUES ({})", q("CF"), names.join(", "), params.join(", "));
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in row.values() {
            insert = insert.bind(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        insert.execute(&mut conn).await.expect("stage");
    }
    let collector = credit_gateway::adapters::database::Collector::connect(&loaded[0]).await.expect("connect");
    let mut collected = 0;
    loop {
        let n = collector.round(&node.ingest).await.expect("round");
        if n == 0 {
            break;
        }
        collected += n;
    }
    assert_eq!(collected, rows.len());
    let sql = format!("SELECT COUNT(*) FROM {} WHERE {} = 'accepted'", q("GW_FEEDBACK"), q("STATUS"));
    let fed: i64 = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.expect("count").get(0);
    assert_eq!(fed, rows.len() as i64);
    assert_eq!(node.ingest.store.count().await.expect("count"), rows.len() as i64);
}
