//! Upgrades (#25): databases an earlier version wrote are taken up by today's code. The fixture
//! (`tests/fixtures/upgrade-4d00738`, made by its `make.sh` with the binary of commit 4d00738,
//! migrations 0001–0012) is 信用淄博's database after 周村区 relayed it 100 record versions over
//! mutual TLS, on SQLite and on PostgreSQL. After the upgrade every record version is there with
//! the same content and hashes, the evidence of each still verifies (our verifier, and the
//! Python one for a sample), and the node serves on the upgraded database.

use std::path::{Path, PathBuf};

use credit_gateway::config::Config;
use gateway_core::interchange::evidence;
use gateway_core::interchange::registry::{Registry, RootKey};
use gateway_core::jws::Jws;
use gateway_store::Store;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// The migrations the fixture's version had (0001–0012) and the ones added since.
const FIRST_PENDING: &str = "pending  0013";

fn fixture() -> PathBuf {
    testkit::repo_dir().join("tests/fixtures/upgrade-4d00738")
}

/// A record version as the old node's API showed it.
#[derive(Debug, Deserialize)]
struct Expected {
    record_id: Uuid,
    version: i64,
    record_type: String,
    content_hash: String,
    item_hash: String,
    content: Value,
}

fn expected(backend: &str) -> Vec<Expected> {
    let path = fixture().join(format!("expected.{backend}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("expected records")).expect("json")
}

/// `migrate --check` names the pending migrations and changes nothing (`unchanged` says how
/// to tell); `migrate` applies them; a second `--check` finds none.
async fn migrate(args: &[&str], env: &[(&str, &str)], unchanged: impl AsyncFnOnce() -> bool) {
    let check = [&["migrate", "--check"][..], args].concat();
    let (code, out) = testkit::cli_with_env(&check, env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(FIRST_PENDING) && out.contains("pending  0017"), "{out}");
    assert!(unchanged().await, "migrate --check changed the database");
    let (code, out) = testkit::cli_with_env(&[&["migrate"][..], args].concat(), env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("migration(s) applied"), "{out}");
    let (code, out) = testkit::cli_with_env(&check, env);
    assert_eq!((code, out.contains("0 migration(s) pending")), (0, true), "{out}");
}

/// Every expected record version is in `store`, unchanged, and its evidence verifies.
async fn check_records_and_evidence(store: &Store, expected: &[Expected], scratch: &Path) {
    let anchor_path = fixture().join("anchor.json");
    let anchor: Vec<RootKey> = serde_json::from_slice(&std::fs::read(&anchor_path).expect("anchor")).expect("json");
    let jws: Jws =
        serde_json::from_slice(&std::fs::read(fixture().join("registry.jws.json")).expect("registry")).expect("json");
    // Verified for its signature only: the fixture's registry expired long ago, evidence
    // verification does not depend on it being current.
    let registry = Registry::verify_signed(&jws, &anchor).expect("the fixture's registry");
    assert_eq!(expected.len(), 100);
    assert!(expected.iter().any(|e| e.version == 2), "the fixture holds a new version");
    for (i, e) in expected.iter().enumerate() {
        let versions = store.versions(e.record_id).await.expect("read");
        let held = versions.iter().find(|r| r.version == e.version).unwrap_or_else(|| panic!("{e:?} is missing"));
        assert_eq!(held.record_type, e.record_type);
        assert_eq!(held.content_hash, e.content_hash, "{}", e.record_id);
        assert_eq!(held.item_hash().to_hex(), e.item_hash, "{}", e.record_id);
        // As the API shows it: identity numbers masked (the hashes above cover the rest).
        let mut content: Value = serde_json::from_str(&held.content).expect("content");
        gateway_core::record::mask_identity_numbers(&mut content);
        assert_eq!(content, e.content);
        let bundle = credit_gateway::evidence::export_held(store, &registry, e.record_id, Some(e.version))
            .await
            .unwrap_or_else(|err| panic!("evidence of {} v{}: {err:#}", e.record_id, e.version));
        let bytes = serde_json::to_vec(&bundle).expect("json");
        let verified = evidence::verify(&bytes, &anchor).unwrap_or_else(|err| panic!("{}: {err}", e.record_id));
        assert_eq!(verified.hops[0].sender, "cn-370306");
        if i % 25 == 0 || e.version == 2 {
            let path = scratch.join(format!("{}-{}.json", e.record_id, e.version));
            std::fs::write(&path, &bytes).expect("write");
            let (code, text) = testkit::python_verify(&path, &anchor_path);
            assert_eq!(code, 0, "the Python verifier refused {}: {text}", e.record_id);
        }
    }
}

/// The upgraded database serves: a push is stored beside the old records.
async fn serves(config: Config, before: usize) {
    let node = testkit::start(config).await;
    let record = testkit::repo_dir().join("schemas/admin_penalty/valid/legal_entity_food_fine_confiscation.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(record).expect("example")).expect("json");
    record["decision_doc_no"] = "淄周市监罚〔2026〕升级1号".into();
    let answer = node
        .app
        .ingest
        .push(serde_json::to_vec(&[record]).expect("json").into(), OffsetDateTime::now_utc())
        .await
        .expect("push");
    assert_eq!(answer.accepted, 1, "{:?}", answer.outcomes);
    assert_eq!(testkit::all_records(&node.app.ingest.store, 500).await.len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_of_an_earlier_version_is_upgraded_with_records_and_evidence_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let db = data.join("gateway.sqlite");
    std::fs::copy(fixture().join("city.sqlite"), &db).expect("copy the fixture");
    let original = std::fs::read(&db).expect("read");
    let data_arg = data.to_str().expect("utf-8");
    migrate(&["--data-dir", data_arg], &[], async || std::fs::read(&db).is_ok_and(|now| now == original)).await;

    let store = testkit::sqlite_store(&data).await;
    let expected = expected("sqlite");
    check_records_and_evidence(&store, &expected, dir.path()).await;
    store.close().await;
    serves(testkit::config(&data), expected.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_of_an_earlier_version_is_upgraded_with_records_and_evidence_intact() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = testkit::new_postgres_database().await;
    let dump = std::fs::read_to_string(fixture().join("city.postgres.sql")).expect("dump");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump)).execute(&mut conn).await.expect("load the fixture");
    // The dump leaves the session's search_path empty: tables by their schema.
    let applied = async |conn: &mut sqlx::PgConnection| -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM public._sqlx_migrations").fetch_one(conn).await.expect("count");
        usize::try_from(n).expect("count")
    };
    assert_eq!(applied(&mut conn).await, 12);
    let env = [("CREDIT_GATEWAY_DATABASE_URL", url.as_str())];
    migrate(&["--data-dir", dir.path().to_str().expect("utf-8")], &env, async || applied(&mut conn).await == 12).await;
    let all = std::fs::read_dir(testkit::repo_dir().join("gateway/store/migrations/postgres")).expect("dir").count();
    assert_eq!(applied(&mut conn).await, all);
    conn.close().await.expect("close");

    let store = Store::open_postgres(&url, None).await.expect("open");
    let expected = expected("postgres");
    check_records_and_evidence(&store, &expected, dir.path()).await;
    store.close().await;
    serves(Config { database_url: Some(url.clone()), ..testkit::config(dir.path()) }, expected.len()).await;
    testkit::drop_postgres_database(&url).await;
}
