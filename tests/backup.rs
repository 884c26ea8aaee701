//! Backups of a node in a federation (#25): 信用淄博 is backed up while 周村区 relays records
//! to it, then restored into a new database. Every record the city had acknowledged before the
//! backup began is in the restored copy, and its evidence (周村区's signed envelope and the
//! city's signed receipt) still verifies, by our verifier and, for a sample, the Python one.
//! On SQLite with `credit-gateway backup` and `restore`; on PostgreSQL with the procedure
//! docs/operations.md gives (`pg_dump -Fc` while serving, `pg_restore` into a new database).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use credit_gateway::bench::synthetic_records;
use credit_gateway::config::Config;
use credit_gateway::pki;
use gateway_core::crypto::Alg;
use gateway_core::interchange::evidence;
use gateway_core::interchange::registry::Registry;
use gateway_core::jws::Jws;
use gateway_store::Store;
use time::OffsetDateTime;
use uuid::Uuid;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";

/// Which backend the city runs on, and how it is backed up and restored.
enum Backend {
    Sqlite,
    Postgres { live: String },
}

impl Backend {
    /// Takes the backup into `dir` while the city serves; returns the restored store.
    async fn backup_and_restore(&self, city_data: &Path, dir: &Path) -> (Store, Option<String>) {
        match self {
            Backend::Sqlite => {
                let copy = dir.join("city-backup.sqlite");
                let restored = dir.join("city-restored");
                let mut backup = Command::new(testkit::gateway_bin());
                backup.arg("backup").arg("--data-dir").arg(city_data).arg("--out").arg(&copy);
                tokio::task::spawn_blocking(move || testkit::run_ok(&mut backup)).await.expect("backup");
                testkit::run_ok(
                    Command::new(testkit::gateway_bin())
                        .arg("restore")
                        .arg("--from")
                        .arg(&copy)
                        .arg("--data-dir")
                        .arg(&restored),
                );
                (testkit::sqlite_store(&restored).await, None)
            }
            Backend::Postgres { live } => {
                let dump = dir.join("city.dump");
                let mut backup = Command::new("pg_dump");
                backup.args(["-Fc", "-d", live, "-f"]).arg(&dump);
                tokio::task::spawn_blocking(move || testkit::run_ok(&mut backup)).await.expect("pg_dump");
                let restored = testkit::new_postgres_database().await;
                testkit::run_ok(Command::new("pg_restore").args(["--no-owner", "-d", &restored]).arg(&dump));
                let check = testkit::run_ok(
                    Command::new(testkit::gateway_bin())
                        .args(["migrate", "--check", "--data-dir"])
                        .arg(dir)
                        .env("CREDIT_GATEWAY_DATABASE_URL", &restored),
                );
                assert!(check.contains("0 migration(s) pending"), "{check}");
                (Store::open_postgres(&restored, None).await.expect("restored store"), Some(restored))
            }
        }
    }
}

async fn backup_while_relaying(backend: Backend) {
    let (dir, pki_dir) = testkit::demo_pki(Alg::EdDsa);
    let city_url = match &backend {
        Backend::Postgres { live } => Some(live.clone()),
        Backend::Sqlite => None,
    };
    let (running, _nodes, _relays) =
        testkit::federation(dir.path(), &pki_dir, &[DISTRICT, CITY], |member, c: &mut Config| {
            if member == CITY {
                c.database_url.clone_from(&city_url);
            }
        })
        .await;
    let (district, city) = (running[0].app.ingest.clone(), running[1].app.ingest.clone());
    let push = async |seed: u64| {
        let body = serde_json::to_vec(&synthetic_records(200, seed)).expect("json");
        let answer = district.push(body.into(), OffsetDateTime::now_utc()).await.expect("push");
        assert_eq!(answer.accepted, 200);
    };
    push(7001).await;
    testkit::eventually("the first records at the city", Duration::from_secs(20), async || {
        city.store.count().await.expect("count") >= 200
    })
    .await;
    // What the city had acknowledged (stored with its signed receipt) when the backup began.
    let acknowledged: Vec<(Uuid, i64)> =
        testkit::all_records(&city.store, 1000).await.iter().map(|r| (r.record_id, r.version)).collect();

    let pushing = tokio::spawn({
        let district = district.clone();
        async move {
            for round in 0..10 {
                let body = serde_json::to_vec(&synthetic_records(200, 7100 + round)).expect("json");
                district.push(body.into(), OffsetDateTime::now_utc()).await.expect("push");
            }
        }
    });
    let city_data = dir.path().join(CITY);
    let (restored, restored_url) = backend.backup_and_restore(&city_data, dir.path()).await;
    pushing.await.expect("pushes went on");

    let anchor_path = pki::anchor_file(&pki_dir);
    let anchor = testkit::anchor(&pki_dir);
    let jws: Jws =
        serde_json::from_slice(&std::fs::read(pki::registry_file(&pki_dir)).expect("registry")).expect("json");
    let registry = Registry::verify_signed(&jws, &anchor).expect("registry");
    assert!(acknowledged.len() >= 200);
    for (i, (id, version)) in acknowledged.iter().enumerate() {
        let bundle = credit_gateway::evidence::export_held(&restored, &registry, *id, Some(*version))
            .await
            .unwrap_or_else(|e| panic!("{id} v{version} in the restored copy: {e:#}"));
        let bytes = serde_json::to_vec(&bundle).expect("json");
        let verified = evidence::verify(&bytes, &anchor).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!((verified.hops[0].sender.as_str(), verified.hops[0].receiver.as_str()), (DISTRICT, CITY));
        if i % 100 == 0 {
            let path = dir.path().join(format!("{id}.json"));
            std::fs::write(&path, &bytes).expect("write");
            let (code, text) = testkit::python_verify(&path, &anchor_path);
            assert_eq!(code, 0, "the Python verifier refused {id}: {text}");
        }
    }
    let held = restored.count().await.expect("count");
    assert!(held >= i64::try_from(acknowledged.len()).expect("count"), "{held}");
    restored.close().await;
    if let Some(url) = restored_url {
        testkit::drop_postgres_database(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_node_backed_up_while_relaying_restores_with_its_evidence() {
    backup_while_relaying(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_node_backed_up_while_relaying_restores_with_its_evidence() {
    let live = testkit::new_postgres_database().await;
    backup_while_relaying(Backend::Postgres { live: live.clone() }).await;
    testkit::drop_postgres_database(&live).await;
}
