//! Several replicas of one node on one PostgreSQL database (#27): 信用淄博 runs as three
//! `credit-gateway serve` processes sharing a database, between 周村区 and 信用山东 (each on
//! SQLite). 周村区 reaches 信用淄博 through a proxy standing in for the load balancer.
//! - The relay leader (the holder of the lease) is killed -9 three times while a stream of
//!   records flows: each time another replica takes over within 10 s, and every record reaches
//!   信用山东 exactly once.
//! - A leader paused past its lease (SIGSTOP, then SIGCONT) steps down and is fenced: a
//!   settlement with its old lease fails in the store.
//! - A push retried at another replica is answered `duplicate`; a leader stopped cleanly hands
//!   the lease over at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use credit_gateway::bench::synthetic_records;
use gateway_core::crypto::Alg;
use serde_json::Value;
use testkit::proxy::FaultProxy;

const DISTRICT: &str = "cn-370306";
const CITY: &str = "cn-370300";
const PROVINCE: &str = "cn-370000";

/// Relay waits short, so a test runs in seconds.
const RELAY: &str = "[relay]\nlinger_ms = 5\nbackoff_base_ms = 20\nbackoff_max_ms = 500\nbatch_max = 200\n";

struct Site {
    pki: PathBuf,
    root: PathBuf,
    /// Federation ports: 周村区, 信用山东, and each 信用淄博 replica.
    district_fed: u16,
    province_fed: u16,
    city_feds: Vec<u16>,
    /// The load balancer in front of 信用淄博's federation endpoints.
    balancer: FaultProxy,
    database_url: String,
    /// `lease_secs` of every node (the default, 5, unless a test needs to tell a lease given up
    /// from one run out).
    lease_secs: u64,
}

impl Site {
    fn config(&self, name: &str, database_url: Option<&str>) -> PathBuf {
        let path = self.root.join(format!("{name}.toml"));
        let db = database_url.map(|u| format!("database_url = \"{u}\"\n")).unwrap_or_default();
        std::fs::write(&path, format!("{db}lease_secs = {}\n{RELAY}", self.lease_secs)).expect("config");
        path
    }

    fn start(
        &self,
        member: &str,
        name: &str,
        fed: u16,
        peers: &[(&str, u16)],
        database_url: Option<&str>,
    ) -> testkit::Node {
        let config = self.config(name, database_url);
        let mut args: Vec<String> = vec![
            "--member".into(),
            member.into(),
            "--pki".into(),
            self.pki.display().to_string(),
            "--federation-listen".into(),
            format!("127.0.0.1:{fed}"),
            "--config".into(),
            config.display().to_string(),
        ];
        for (peer, port) in peers {
            args.extend(["--peer".to_owned(), format!("{peer}=https://localhost:{port}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        testkit::Node::start_with(&self.root.join(name), &args)
    }

    fn start_city(&self, replica: usize) -> testkit::Node {
        let peers = [(DISTRICT, self.district_fed), (PROVINCE, self.province_fed)];
        let url = self.database_url.clone();
        self.start(CITY, &format!("city-{replica}"), self.city_feds[replica], &peers, Some(&url))
    }
}

async fn site(
    replicas: usize,
    lease_secs: u64,
) -> (tempfile::TempDir, Site, testkit::Node, testkit::Node, Vec<Option<testkit::Node>>) {
    let (dir, pki) = testkit::demo_pki(Alg::EdDsa);
    let city_feds: Vec<u16> = (0..replicas).map(|_| testkit::free_port()).collect();
    let balancer = FaultProxy::start(city_feds[0]).await.expect("balancer");
    let site = Site {
        pki,
        root: dir.path().to_owned(),
        district_fed: testkit::free_port(),
        province_fed: testkit::free_port(),
        city_feds,
        balancer,
        database_url: testkit::new_postgres_database().await,
        lease_secs,
    };
    let province = site.start(PROVINCE, "province", site.province_fed, &[(CITY, site.city_feds[0])], None);
    let cities = (0..replicas).map(|r| Some(site.start_city(r))).collect();
    let district = site.start(DISTRICT, "district", site.district_fed, &[(CITY, site.balancer.port)], None);
    (dir, site, district, province, cities)
}

/// The lease's holder and epoch now, from the shared database.
async fn leader(store: &gateway_store::Store) -> Option<(String, i64)> {
    store.lease_holder(credit_gateway::leader::LEASE).await.expect("read the lease")
}

/// The replica whose process holds the lease (the holder names its pid).
fn replica_of(holder: &str, cities: &[Option<testkit::Node>]) -> usize {
    let pid: u32 = holder.split(':').nth(1).and_then(|p| p.parse().ok()).expect("a pid in the holder name");
    cities
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| c.child.id() == pid))
        .expect("the holder is a running replica")
}

async fn stored(client: &reqwest::Client, base: &str) -> u64 {
    testkit::metric(client, base, "credit_gateway_records_stored").await.map_or(0, |v| v as u64)
}

/// Records accepted by the receipts of the node whose SQLite database is in `dir` (the resends
/// they answered `duplicate` are printed).
async fn accepted_in_receipts(dir: &Path) -> usize {
    let letters = testkit::received_outcomes(dir).await;
    println!(
        "receipts: {} accepted, {} duplicate (resent)",
        letters.matches('a').count(),
        letters.matches('d').count()
    );
    letters.matches('a').count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_leader_killed_three_times_hands_over_within_10_s_and_nothing_doubles() {
    let (_dir, site, district, province, mut cities) = site(3, 5).await;
    let db = gateway_store::Store::open_postgres(&site.database_url, None).await.expect("the shared database");
    let client = reqwest::Client::new();
    testkit::eventually("a leader", Duration::from_secs(15), async || leader(&db).await.is_some()).await;

    let total_batches = 60;
    let mut pushed = 0;
    let mut takeovers = Vec::new();
    let mut upstream = 0;
    for batch in 0..total_batches {
        let records = synthetic_records(100, 7_000 + batch);
        let resp = client.post(format!("{}/api/v1/records", district.base)).json(&records).send().await.expect("push");
        assert_eq!(resp.status(), 200);
        pushed += records.len() as u64;
        // Three kills, spread through the stream.
        if batch % 20 == 10 {
            let (holder, epoch) = leader(&db).await.expect("a leader");
            let victim = replica_of(&holder, &cities);
            cities[victim].take().expect("running").kill9();
            let killed = Instant::now();
            // The load balancer stops sending to a dead replica.
            if upstream == victim {
                upstream = (victim + 1) % cities.len();
                site.balancer.redirect(site.city_feds[upstream]);
            }
            testkit::eventually("another replica takes the lease", Duration::from_secs(15), async || {
                leader(&db).await.is_some_and(|(h, e)| h != holder && e > epoch)
            })
            .await;
            takeovers.push(killed.elapsed());
            cities[victim] = Some(site.start_city(victim));
        }
    }
    println!("takeovers after kill -9 of the leader: {takeovers:?}");
    assert_eq!(takeovers.len(), 3);
    for t in &takeovers {
        assert!(*t < Duration::from_secs(10), "a new leader within 10 s, not {t:?}");
    }
    testkit::eventually("every record at 信用山东", Duration::from_secs(120), async || {
        stored(&client, &province.base).await >= pushed
    })
    .await;
    assert_eq!(stored(&client, &province.base).await, pushed, "exactly once at 信用山东");
    drop(province);
    assert_eq!(accepted_in_receipts(&site.root.join("province")).await as u64, pushed, "each record accepted once");
    drop(district);
    drop(cities);
    drop(db);
    testkit::drop_postgres_database(&site.database_url).await;
}

/// Sends `signal` (`STOP`, `CONT`) to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Pushes 100 synthetic records of each seed; returns how many were accepted.
async fn push_batches(client: &reqwest::Client, base: &str, seeds: std::ops::Range<u64>) -> u64 {
    let mut accepted = 0;
    for seed in seeds {
        accepted += push(client, base, &synthetic_records(100, seed)).await["accepted"].as_u64().expect("a count");
    }
    accepted
}

async fn push(client: &reqwest::Client, base: &str, records: &[Value]) -> Value {
    let resp = client.post(format!("{base}/api/v1/records")).json(&records).send().await.expect("push");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_steps_down_and_its_old_lease_settles_nothing() {
    let (_dir, site, district, province, cities) = site(2, 5).await;
    let db = gateway_store::Store::open_postgres(&site.database_url, None).await.expect("the shared database");
    let client = reqwest::Client::new();
    testkit::eventually("a leader", Duration::from_secs(15), async || leader(&db).await.is_some()).await;
    let (holder, epoch) = leader(&db).await.expect("a leader");
    let paused = replica_of(&holder, &cities);
    let other = 1 - paused;
    site.balancer.redirect(site.city_feds[other]);
    let pid = cities[paused].as_ref().expect("running").child.id();

    signal(pid, "STOP");
    let stopped = Instant::now();
    testkit::eventually("the other replica takes the lease", Duration::from_secs(15), async || {
        leader(&db).await.is_some_and(|(h, e)| h != holder && e > epoch)
    })
    .await;
    println!("lease taken over {:?} after the leader was paused", stopped.elapsed());
    let mut pushed = push_batches(&client, &district.base, 8_000..8_005).await;
    testkit::eventually("records through the new leader", Duration::from_secs(60), async || {
        stored(&client, &province.base).await >= pushed
    })
    .await;

    // It wakes: it finds the lease gone and stops its singletons.
    signal(pid, "CONT");
    let base = cities[paused].as_ref().expect("running").base.clone();
    testkit::eventually("the woken replica no longer leads", Duration::from_secs(15), async || {
        testkit::metric(&client, &base, "credit_gateway_leader").await == Some(0.0)
    })
    .await;
    let other_base = cities[other].as_ref().expect("running").base.clone();
    testkit::eventually("the other replica leads", Duration::from_secs(15), async || {
        testkit::metric(&client, &other_base, "credit_gateway_leader").await == Some(1.0)
    })
    .await;
    // Whatever it was about to settle under its old lease is refused in the settling
    // transaction: the cursor does not move.
    let old = gateway_store::Lease { name: credit_gateway::leader::LEASE.into(), holder: holder.clone(), epoch };
    let position = db.outbox_position(PROVINCE).await.expect("cursor");
    let settled = db
        .settle(
            PROVINCE,
            gateway_store::Settlement {
                position: Some(position + 1_000_000),
                at: gateway_core::date::format_timestamp(time::OffsetDateTime::now_utc()),
                fence: Some(&old),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(settled, Err(gateway_store::StoreError::Fenced(_))), "{settled:?}");
    assert_eq!(db.outbox_position(PROVINCE).await.expect("cursor"), position, "nothing settled under the old lease");

    // And the stream goes on, exactly once.
    pushed += push_batches(&client, &district.base, 8_005..8_010).await;
    testkit::eventually("every record at 信用山东", Duration::from_secs(60), async || {
        stored(&client, &province.base).await >= pushed
    })
    .await;
    assert_eq!(stored(&client, &province.base).await, pushed);
    drop(province);
    assert_eq!(accepted_in_receipts(&site.root.join("province")).await as u64, pushed, "each record accepted once");
    drop((district, cities, db));
    testkit::drop_postgres_database(&site.database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_retried_at_another_replica_is_a_duplicate_and_a_clean_stop_hands_over() {
    // A long lease: a handover within seconds can only be a lease given up.
    let (_dir, site, district, province, cities) = site(2, 30).await;
    let client = reqwest::Client::new();
    let records = synthetic_records(50, 9_000);
    let bases: Vec<String> = cities.iter().map(|c| c.as_ref().expect("running").base.clone()).collect();
    let first = push(&client, &bases[0], &records).await;
    let again = push(&client, &bases[1], &records).await;
    assert_eq!((first["accepted"].as_u64(), again["duplicate"].as_u64()), (Some(50), Some(50)), "{again}");
    for (a, b) in
        first["outcomes"].as_array().expect("outcomes").iter().zip(again["outcomes"].as_array().expect("outcomes"))
    {
        assert_eq!(a["record_id"], b["record_id"], "the same record ids");
    }
    testkit::eventually("the records at 信用山东, once", Duration::from_secs(60), async || {
        stored(&client, &province.base).await >= 50
    })
    .await;
    assert_eq!(stored(&client, &province.base).await, 50);

    // A leader stopped cleanly gives the lease up: the other takes it at its next ask (within a
    // third of the lease), not after the lease has run out.
    let db = gateway_store::Store::open_postgres(&site.database_url, None).await.expect("the shared database");
    testkit::eventually("a leader", Duration::from_secs(15), async || leader(&db).await.is_some()).await;
    let (holder, epoch) = leader(&db).await.expect("a leader");
    let pid = cities[replica_of(&holder, &cities)].as_ref().expect("running").child.id();
    signal(pid, "TERM");
    let stopped = Instant::now();
    testkit::eventually("the other replica takes the lease", Duration::from_secs(45), async || {
        leader(&db).await.is_some_and(|(h, e)| h != holder && e > epoch)
    })
    .await;
    let handover = stopped.elapsed();
    println!("lease handed over {handover:?} after a clean stop of the leader");
    // Run out, it would be taken 20–40 s after the stop (renewed up to 10 s before it).
    assert!(handover < Duration::from_secs(15), "given up, not run out (the lease is 30 s): {handover:?}");
    drop(db);
    drop((district, province, cities));
    testkit::drop_postgres_database(&site.database_url).await;
}
