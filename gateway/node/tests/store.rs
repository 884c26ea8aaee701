//! The store suite: every test runs against SQLite and against PostgreSQL.

mod common;

use credit_gateway::bench::synthetic_records;
use std::sync::Arc;

use credit_gateway::store::{
    EnvelopeIn, EnvelopeStored, Incoming, RecordQuery, RelayedItem, RelayedOutcome, Store, Stored,
};
use gateway_core::canonical::Sha256Digest;
use gateway_core::record::{RecordType, RecordValidator, ValidationPolicy};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::date;

fn prepare(records: &[Value]) -> Vec<Incoming> {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("validator");
    records
        .iter()
        .map(|r| Incoming { record: validator.check(r.clone(), date!(2026 - 11 - 22)).expect("valid"), deadline: None })
        .collect()
}

/// Instantiates each store test once per backend.
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$name(crate::common::sqlite_store(dir.path()).await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() {
                let (store, schema) = crate::common::postgres_store().await;
                super::$name(store).await;
                crate::common::drop_postgres_schema(&schema).await;
            })*
        }
    };
}

store_suite!(
    new_records_get_ids_and_resubmissions_are_duplicates,
    changed_content_is_a_new_version_and_both_are_kept,
    a_batch_sees_its_own_earlier_records,
    queries_filter_and_page,
    concurrent_batches_share_commits_without_double_inserts,
    received_envelopes_are_stored_once_with_their_receipt,
);

async fn new_records_get_ids_and_resubmissions_are_duplicates(store: Store) {
    let rows = prepare(&synthetic_records(50, 1));
    let first = store.ingest("cn-370306", rows.clone(), OffsetDateTime::now_utc()).await.expect("ingest");
    assert_eq!(first.len(), 50);
    assert!(first.iter().all(|o| matches!(o, Stored::Accepted { version: 1, .. })));
    let second = store.ingest("cn-370306", rows.clone(), OffsetDateTime::now_utc()).await.expect("ingest again");
    for (a, b) in first.iter().zip(&second) {
        let (Stored::Accepted { record_id: id_a, .. }, Stored::Duplicate { record_id: id_b, version: 1 }) = (a, b)
        else {
            panic!("{a:?} then {b:?}");
        };
        assert_eq!(id_a, id_b);
    }
    assert_eq!(store.count().await.expect("count"), 50);
}

async fn changed_content_is_a_new_version_and_both_are_kept(store: Store) {
    let mut records = synthetic_records(1, 2);
    let original = prepare(&records);
    let Stored::Accepted { record_id, .. } =
        store.ingest("cn-370306", original.clone(), OffsetDateTime::now_utc()).await.expect("v1")[0]
    else {
        panic!("not accepted")
    };
    records[0]["remarks"] = Value::String("更正：处罚内容表述有误".into());
    let changed = prepare(&records);
    let out = store.ingest("cn-370306", changed.clone(), OffsetDateTime::now_utc()).await.expect("v2");
    assert_eq!(out, vec![Stored::NewVersion { record_id, version: 2 }]);
    // Sending the old content again is not a change back: it is the stored version 1.
    let again = store.ingest("cn-370306", original.clone(), OffsetDateTime::now_utc()).await.expect("v1 again");
    assert_eq!(again, vec![Stored::Duplicate { record_id, version: 1 }]);
    let versions = store.versions(record_id).await.expect("versions");
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(versions[0].content_hash, original[0].record.content_hash.to_hex());
    assert_eq!(versions[1].content, changed[0].record.canonical_content);
}

async fn a_batch_sees_its_own_earlier_records(store: Store) {
    let mut records = synthetic_records(2, 3);
    records[1] = records[0].clone();
    let mut changed = records[0].clone();
    changed["remarks"] = Value::String("第二版".into());
    records.push(changed);
    let out = store.ingest("cn-370306", prepare(&records), OffsetDateTime::now_utc()).await.expect("ingest");
    let Stored::Accepted { record_id, version: 1 } = out[0] else { panic!("{:?}", out[0]) };
    assert_eq!(out[1], Stored::Duplicate { record_id, version: 1 });
    assert_eq!(out[2], Stored::NewVersion { record_id, version: 2 });
    assert_eq!(store.count().await.expect("count"), 2);
}

async fn queries_filter_and_page(store: Store) {
    let rows = prepare(&synthetic_records(40, 4));
    store.ingest("cn-370306", rows.clone(), OffsetDateTime::now_utc()).await.expect("ingest");
    let licenses = rows.iter().filter(|r| r.record.record_type == RecordType::AdminLicense).count();
    let q = RecordQuery { record_type: Some(RecordType::AdminLicense), limit: 1000, ..Default::default() };
    assert_eq!(store.query(&q).await.expect("query").len(), licenses);

    let target = rows[5].record.subject_uscc.clone().expect("uscc");
    let q = RecordQuery { subject_uscc: Some(target.clone()), limit: 1000, ..Default::default() };
    let hits = store.query(&q).await.expect("query");
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h.content.contains(&target)));

    let day = rows[7].record.clock_start.expect("date");
    let q = RecordQuery { from: Some(day), to: Some(day), limit: 1000, ..Default::default() };
    let on_day = store.query(&q).await.expect("query");
    let expected = rows.iter().filter(|r| r.record.clock_start == Some(day)).count();
    assert_eq!(on_day.len(), expected);

    // Pages of 7 must together hold every record exactly once.
    let mut seen: Vec<_> = crate::common::all_records(&store, 7).await.into_iter().map(|r| r.record_id).collect();
    assert_eq!(seen.len(), 40);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 40);
}

/// Eight callers push overlapping batches at once; group commit must still give each natural
/// key exactly one record and tell every caller the same record id.
async fn concurrent_batches_share_commits_without_double_inserts(store: Store) {
    let store = Arc::new(store);
    let rows = prepare(&synthetic_records(300, 5));
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..8usize {
        let (store, rows) = (Arc::clone(&store), rows.clone());
        tasks.spawn(async move {
            // Each caller sends an overlapping window of the 300 records.
            let window: Vec<Incoming> = rows.into_iter().skip(caller * 25).take(100).collect();
            let out = store.ingest("cn-370306", window, OffsetDateTime::now_utc()).await.expect("ingest");
            (caller, out)
        });
    }
    let mut ids = std::collections::HashMap::new();
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        let (caller, out) = done.expect("task");
        assert_eq!(out.len(), 100);
        for (k, o) in out.into_iter().enumerate() {
            let (id, version) = match o {
                Stored::Accepted { record_id, version } => {
                    accepted += 1;
                    (record_id, version)
                }
                Stored::Duplicate { record_id, version } => (record_id, version),
                Stored::NewVersion { .. } => panic!("unchanged content became a new version"),
            };
            assert_eq!(version, 1);
            let previous = ids.insert(caller * 25 + k, id);
            assert!(previous.is_none_or(|p| p == id), "record {} got two ids", caller * 25 + k);
        }
    }
    assert_eq!(accepted, ids.len());
    assert_eq!(store.count().await.expect("count"), ids.len() as i64);
}

fn envelope(id: &str, digest: u8, items: Vec<Option<RelayedItem>>) -> EnvelopeIn {
    EnvelopeIn {
        digest: Sha256Digest([digest; 32]),
        envelope_id: id.into(),
        sender: "cn-370306".into(),
        receiver: "cn-370300".into(),
        seq: 1,
        created_at: "2026-11-22T08:30:00.000Z".into(),
        received_at: "2026-11-22T08:30:00.100Z".into(),
        envelope: "{}".into(),
        item_hashes: String::new(),
        items,
    }
}

fn relayed(incoming: Incoming, n: u128, version: i64) -> RelayedItem {
    RelayedItem {
        origin: "cn-370306".into(),
        record_id: uuid::Uuid::from_u128(n),
        version,
        incoming,
        leaf_index: 0,
        origin_proof: None,
    }
}

/// Replay memory, idempotent resends and version conflicts of received envelopes.
async fn received_envelopes_are_stored_once_with_their_receipt(store: Store) {
    let rows = prepare(&synthetic_records(3, 6));
    let items = |v: i64| rows.iter().enumerate().map(|(i, r)| Some(relayed(r.clone(), i as u128 + 1, v))).collect();
    let mut items_with_reject: Vec<Option<RelayedItem>> = items(1);
    items_with_reject.push(None);
    let render = || -> credit_gateway::store::ReceiptFn {
        Box::new(|outcomes: &[Option<RelayedOutcome>]| format!("{outcomes:?}"))
    };
    let EnvelopeStored::New { receipt: first } =
        store.store_envelope(envelope("e-1", 1, items_with_reject.clone()), render()).await.expect("store")
    else {
        panic!("not new")
    };
    assert_eq!(first, "[Some(Accepted), Some(Accepted), Some(Accepted), None]");
    let again = store.store_envelope(envelope("e-1", 1, items_with_reject), render()).await.expect("store");
    assert!(matches!(again, EnvelopeStored::Repeat { receipt } if receipt == first));
    let replay = store.store_envelope(envelope("e-1", 2, items(1)), render()).await.expect("store");
    assert!(matches!(replay, EnvelopeStored::Replay));
    assert_eq!(store.count().await.expect("count"), 3);
    // Same ids and version with other content: conflicts; the next version is new.
    let other = prepare(&synthetic_records(3, 7));
    let conflicting = other.iter().enumerate().map(|(i, r)| Some(relayed(r.clone(), i as u128 + 1, 1))).collect();
    let EnvelopeStored::New { receipt } =
        store.store_envelope(envelope("e-2", 3, conflicting), render()).await.expect("store")
    else {
        panic!("not new")
    };
    assert_eq!(receipt, "[Some(Conflict), Some(Conflict), Some(Conflict)]");
    let next = other.iter().enumerate().map(|(i, r)| Some(relayed(r.clone(), i as u128 + 1, 2))).collect();
    let EnvelopeStored::New { receipt } =
        store.store_envelope(envelope("e-3", 4, next), render()).await.expect("store")
    else {
        panic!("not new")
    };
    assert_eq!(receipt, "[Some(NewVersion), Some(NewVersion), Some(NewVersion)]");
    assert_eq!(store.count().await.expect("count"), 6);

    // Inside one envelope: an item twice, one id and version with two contents, and a decision
    // already held under another id.
    let fresh = prepare(&synthetic_records(2, 8));
    let mixed = vec![
        Some(relayed(fresh[0].clone(), 100, 1)),
        Some(relayed(fresh[0].clone(), 100, 1)),
        Some(relayed(fresh[1].clone(), 101, 1)),
        Some(relayed(fresh[0].clone(), 101, 1)),
        Some(relayed(rows[0].clone(), 102, 1)),
    ];
    let EnvelopeStored::New { receipt } =
        store.store_envelope(envelope("e-4", 5, mixed), render()).await.expect("store")
    else {
        panic!("not new")
    };
    assert_eq!(receipt, "[Some(Accepted), Some(Duplicate), Some(Accepted), Some(Conflict), Some(Duplicate)]");
    assert_eq!(store.count().await.expect("count"), 8);
}
