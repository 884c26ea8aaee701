//! `kill -9` of a real `credit-gateway serve` process during a stream of pushes loses no
//! record whose batch was answered 200.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use credit_gateway::bench::synthetic_records;
use serde_json::Value;

const ROUNDS: u64 = 3;
const BATCH: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acknowledged: HashSet<String> = HashSet::new();
    for round in 0..ROUNDS {
        let node = testkit::Node::start(dir.path());
        let url = format!("{}/api/v1/records", node.base);
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let batches_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Kill after a different number of answered batches each round, with pushes in flight.
        let kill_after = 3 + round as usize * 4;
        let mut pushers = tokio::task::JoinSet::new();
        for worker in 0..2u64 {
            let (url, acked, done) = (url.clone(), Arc::clone(&acked), Arc::clone(&batches_done));
            pushers.spawn(async move {
                credit_gateway::tls::install_crypto_provider();
                let client = reqwest::Client::new();
                for n in 0.. {
                    let seed = 1_000 + round * 100_000 + worker * 10_000 + n;
                    let body = serde_json::to_vec(&synthetic_records(BATCH, seed)).expect("json");
                    let Ok(resp) = client.post(&url).header("content-type", "application/json").body(body).send().await
                    else {
                        return; // the node is gone
                    };
                    if resp.status() != 200 {
                        return;
                    }
                    let Ok(answer) = resp.json::<Value>().await else { return };
                    let ids = answer["outcomes"].as_array().expect("outcomes").iter().map(|o| {
                        assert_eq!(o["status"], "accepted", "{o}");
                        o["record_id"].as_str().expect("id").to_owned()
                    });
                    acked.lock().expect("lock").extend(ids);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        testkit::eventually("enough answered batches", std::time::Duration::from_secs(60), async || {
            batches_done.load(std::sync::atomic::Ordering::SeqCst) >= kill_after
        })
        .await;
        node.kill9();
        while pushers.join_next().await.is_some() {}
        acknowledged.extend(acked.lock().expect("lock").drain(..));
        assert!(acknowledged.len() >= kill_after * BATCH);
    }

    // After the last kill the node must start again on the same data (it opens and migrates
    // the database), and the database must hold every acknowledged record.
    testkit::Node::start(dir.path()).kill9();
    let store = testkit::sqlite_store(dir.path()).await;
    let stored: HashSet<String> =
        testkit::all_records(&store, 5_000).await.into_iter().map(|r| r.record_id.to_string()).collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged records lost, e.g. {:?}", lost.len(), lost.first());
}
