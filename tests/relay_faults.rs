//! Faults the relay must survive, with real `credit-gateway serve` processes over mutual TLS:
//! `kill -9` of any node at random moments during a relay through 周村区 → 信用淄博 → 信用山东 →
//! 信用中国. National must end with every record exactly once, and every record's trail must be
//! complete at every hop.
//!
//! `FAULT_RECORDS` (default 20,000) and `FAULT_KILLS` (default 10)
//! scale it; `FAULT_SEED` picks another kill schedule (the failing seed is printed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use credit_gateway::bench::synthetic_records;
use serde_json::Value;
use sqlx::Row;

const CHAIN: [&str; 4] = ["cn-370306", "cn-370300", "cn-370000", "cn-000000"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One node of the chain, run as a process that can be killed and restarted on the same ports.
struct Member {
    id: &'static str,
    api: u16,
    fed: u16,
    dir: PathBuf,
    process: Option<testkit::Node>,
}

struct Federation {
    pki: PathBuf,
    config: PathBuf,
    members: Vec<Member>,
}

impl Federation {
    fn new(root: &Path, pki: &Path) -> Self {
        let config = root.join("relay.toml");
        // Short waits so a test runs in seconds; the behaviour is the same at any scale.
        let publication = root.join("publication").display().to_string().replace('\\', "/");
        std::fs::write(
            &config,
            format!(
                "[relay]\nlinger_ms = 5\nbackoff_base_ms = 20\nbackoff_max_ms = 300\nbatch_max = 500\n\
                 publication_dir = \"{publication}\"\n"
            ),
        )
        .expect("config");
        let members = CHAIN
            .iter()
            .map(|id| Member {
                id,
                api: testkit::free_port(),
                fed: testkit::free_port(),
                dir: root.join(id),
                process: None,
            })
            .collect();
        Self { pki: pki.to_owned(), config, members }
    }

    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].api)
    }

    fn start(&mut self, i: usize) {
        let mut args: Vec<String> = vec![
            "--member".into(),
            self.members[i].id.into(),
            "--pki".into(),
            self.pki.display().to_string(),
            "--federation-listen".into(),
            format!("127.0.0.1:{}", self.members[i].fed),
            "--config".into(),
            self.config.display().to_string(),
        ];
        for m in self.members.iter().filter(|m| m.id != CHAIN[i]) {
            args.push("--peer".into());
            args.push(format!("{}=https://localhost:{}", m.id, m.fed));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let m = &mut self.members[i];
        m.process = Some(testkit::Node::start_at(&m.dir, &format!("127.0.0.1:{}", m.api), &args));
    }

    fn kill9(&mut self, i: usize) {
        if let Some(p) = self.members[i].process.take() {
            p.kill9();
        }
    }
}

/// xorshift64*: a seeded schedule, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

async fn push_until_stored(client: &reqwest::Client, base: &str, batch: &[Value], deadline: Instant) {
    loop {
        let sent = client.post(format!("{base}/api/v1/records")).json(&batch).send().await;
        if let Ok(resp) = sent
            && resp.status().is_success()
        {
            let answer: Value = resp.json().await.expect("answer");
            let stored = answer["accepted"].as_u64().unwrap_or(0) + answer["duplicate"].as_u64().unwrap_or(0);
            assert_eq!(stored, batch.len() as u64, "every record of a retried batch is stored once: {answer}");
            return;
        }
        // The district was killed mid-request and is being restarted: try again.
        assert!(Instant::now() < deadline, "the district never took the batch");
        tokio::task::yield_now().await;
    }
}

async fn stored(client: &reqwest::Client, base: &str) -> u64 {
    testkit::metric(client, base, "credit_gateway_records_stored").await.map_or(0, |v| v as u64)
}

/// A node's SQLite database, read-only.
async fn database(dir: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}?mode=ro", dir.join("gateway.sqlite").display());
    sqlx::SqlitePool::connect(&url).await.expect("open node database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_anywhere_during_a_relay_loses_and_doubles_nothing() {
    let total = env_or("FAULT_RECORDS", 20_000) as usize;
    let kills = env_or("FAULT_KILLS", 10);
    let seed = env_or("FAULT_SEED", 0x5eed_2026);
    println!("kill schedule seed {seed} (FAULT_SEED replays it)");
    let (dir, pki) = testkit::demo_pki(gateway_core::crypto::Alg::EdDsa);
    let mut fed = Federation::new(dir.path(), &pki);
    for i in 0..CHAIN.len() {
        fed.start(i);
    }
    let client = reqwest::Client::new();
    let national = fed.base(3);
    let deadline = Instant::now() + Duration::from_secs(600);

    // Progress runs from 0 to 2·total: records pushed at the district plus records at national.
    // Each kill fires when progress passes its random threshold, at a random node.
    let mut rng = Rng(seed | 1);
    let mut thresholds: Vec<u64> =
        (0..kills).map(|_| (total as u64) / 10 + rng.next() % (total as u64 * 18 / 10)).collect();
    thresholds.sort_unstable();
    let mut thresholds = thresholds.into_iter().peekable();
    let records = synthetic_records(total, seed);
    let mut batches = records.chunks(500);
    let mut pushed = 0u64;
    let mut killed = Vec::new();
    loop {
        if let Some(batch) = batches.next() {
            push_until_stored(&client, &fed.base(0), batch, deadline).await;
            pushed += batch.len() as u64;
        }
        let at_national = stored(&client, &national).await;
        while thresholds.next_if(|t| *t <= pushed + at_national).is_some() {
            let victim = (rng.next() % CHAIN.len() as u64) as usize;
            fed.kill9(victim);
            fed.start(victim);
            killed.push(CHAIN[victim]);
        }
        if pushed == total as u64 && at_national >= total as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "national holds {at_national} of {total} after the deadline");
        if pushed == total as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!("killed, in order: {killed:?}");
    assert_eq!(killed.len() as u64, kills, "every scheduled kill ran");
    // A sender settles just after its receiver stores: wait until every queue is settled.
    for (i, parent) in CHAIN.iter().enumerate().skip(1) {
        let base = fed.base(i - 1);
        let backlog = format!("credit_gateway_outbox_backlog{{destination=\"{parent}\"}}");
        testkit::eventually("every sender settled", Duration::from_secs(120), async || {
            testkit::metric(&client, &base, &backlog).await == Some(0.0)
        })
        .await;
    }

    // Exactly once at every level, and every hop of every record acknowledged by its receiver.
    let sample: Vec<String> = {
        let page: Value = client
            .get(format!("{}/api/v1/records?limit=1000", fed.base(0)))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .step_by(97)
            .map(|r| r["record_id"].as_str().expect("id").to_owned())
            .collect()
    };
    for (i, id) in CHAIN.iter().enumerate() {
        assert_eq!(stored(&client, &fed.base(i)).await, total as u64, "{id} holds every record once");
        for record in &sample {
            let trail: Value = client
                .get(format!("{}/api/v1/records/{record}/trail", fed.base(i)))
                .send()
                .await
                .expect("trail")
                .json()
                .await
                .expect("json");
            let v = &trail["versions"][0];
            if i > 0 {
                assert_eq!(v["arrived_from"], CHAIN[i - 1], "{id}: {trail}");
            }
            if i < 3 {
                let acked = v["forwarded"].as_array().expect("forwarded").iter().any(|h| {
                    h["destination"] == CHAIN[i + 1] && matches!(h["status"].as_str(), Some("accepted" | "duplicate"))
                });
                assert!(acked, "{id}: {record} was not acknowledged by {}: {trail}", CHAIN[i + 1]);
            }
        }
    }
    for i in 0..CHAIN.len() {
        fed.kill9(i);
    }
    // Exactly once: every hop's receiver said `accepted` for each record once; every other
    // arrival (a resend after a kill) was a `duplicate`.
    for (member, id) in fed.members.iter().zip(CHAIN).skip(1) {
        let accepted = testkit::received_outcomes(&member.dir).await.matches('a').count();
        assert_eq!(accepted, total, "{id}: records accepted once each");
    }
    for i in 0..3 {
        let db = database(&fed.members[i].dir).await;
        let row = sqlx::query(
            "SELECT COUNT(*) FROM records r WHERE NOT EXISTS (SELECT 1 FROM sent_items s JOIN envelopes e \
             ON e.digest = s.envelope_digest WHERE s.record_id = r.record_id AND s.version = r.version AND e.receiver = $1)",
        )
        .bind(CHAIN[i + 1])
        .fetch_one(&db)
        .await
        .expect("query");
        assert_eq!(row.get::<i64, _>(0), 0, "{}: records without an acknowledged hop to {}", CHAIN[i], CHAIN[i + 1]);
    }
}
