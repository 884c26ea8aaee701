//! The store suite: every test runs against SQLite and against PostgreSQL.

use credit_gateway::bench::synthetic_records;
use std::sync::Arc;

use gateway_core::canonical::Sha256Digest;
use gateway_core::record::{RecordType, RecordValidator, ValidationPolicy};
use gateway_store::{
    EnvelopeIn, EnvelopeStored, Incoming, OriginRef, RecordQuery, RelayedItem, RelayedOutcome, Store, Stored,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::date;

fn prepare(records: &[Value]) -> Vec<Incoming> {
    let validator = RecordValidator::new(&ValidationPolicy::default()).expect("validator");
    records
        .iter()
        .map(|r| Incoming {
            record: validator.check(r.clone(), date!(2026 - 11 - 22)).expect("valid"),
            deadline: None,
            intake: None,
        })
        .collect()
}

/// Instantiates each store test once per backend.
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$name(testkit::sqlite_store(dir.path()).await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() {
                let (store, schema) = testkit::postgres_store().await;
                super::$name(store).await;
                testkit::drop_postgres_schema(&schema).await;
            })*
        }
    };
}

store_suite!(
    new_records_get_ids_and_resubmissions_are_duplicates,
    changed_content_is_a_new_version_and_both_are_kept,
    a_department_never_adds_a_version_to_another_departments_record,
    joint_cases_open_once_per_subject_measure_and_department,
    joint_cases_are_answered_counted_and_lifted,
    a_batch_sees_its_own_earlier_records,
    queries_filter_and_page,
    concurrent_batches_share_commits_without_double_inserts,
    received_envelopes_are_stored_once_with_their_receipt,
    the_outbox_settles_dead_letters_resends_and_trails,
    lifecycle_events_set_the_state_of_their_target,
    parked_envelopes_wait_for_their_receipt,
    sla_rows_read_records_due_by_a_horizon_with_their_publication,
    evaluations_answer_cache_and_audit_log,
    relayed_origin_proofs_come_back_as_received,
    a_push_cancelled_while_committing_still_commits_its_group,
    a_received_envelope_cancelled_while_committing_is_still_stored,
);

/// A client that hangs up while its batch is being committed drops its request: the group's
/// commit goes on in its own task, so the batch is stored (and a resend is all duplicates)
/// instead of rolled back with every other batch of the group.
async fn a_push_cancelled_while_committing_still_commits_its_group(store: Store) {
    let records = prepare(&synthetic_records(3_000, 41));
    let now = OffsetDateTime::now_utc();
    let push = store.ingest("cn-370306", records.clone(), now);
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1), push).await;
    assert!(cancelled.is_err(), "3,000 records are not committed within a millisecond");
    // Waited for before the resend: on PostgreSQL a resend's group may commit beside it, and
    // either could store the records first.
    testkit::eventually("the cancelled push's group to commit", std::time::Duration::from_secs(20), async || {
        store.count().await.expect("count") == 3_000
    })
    .await;
    let again = store.ingest("cn-370306", records, now).await.expect("ingest");
    let duplicates = again.iter().filter(|s| matches!(s, Stored::Duplicate { .. })).count();
    assert_eq!(duplicates, 3_000, "the cancelled push's group was committed");
    assert_eq!(store.count().await.expect("count"), 3_000);
}

/// The same for a received envelope whose sender hangs up: its group commits in its own task,
/// so a resend finds it stored with its receipt.
async fn a_received_envelope_cancelled_while_committing_is_still_stored(store: Store) {
    let rows = prepare(&synthetic_records(3_000, 43));
    let items = || rows.iter().enumerate().map(|(i, r)| Some(relayed(r.clone(), i as u128 + 1, 1))).collect();
    let render = || -> gateway_store::ReceiptFn {
        Box::new(|outcomes: &[Option<RelayedOutcome>]| format!("{}", outcomes.len()))
    };
    let store_it = store.store_envelope(envelope("e-cancelled", 7, items()), render());
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1), store_it).await;
    assert!(cancelled.is_err(), "3,000 items are not committed within a millisecond");
    let again = store.store_envelope(envelope("e-cancelled", 7, items()), render()).await.expect("store");
    assert!(matches!(again, EnvelopeStored::Repeat { ref receipt } if receipt == "3000"), "{again:?}");
    assert_eq!(store.count().await.expect("count"), 3_000);
}

/// What evaluation pulls read and write: a subject's results, the audit log (concurrent pulls
/// all committed, newest first, the signed answer kept), the answer cache (newer replaces).
async fn evaluations_answer_cache_and_audit_log(store: Store) {
    use credit_gateway::bench::{synthetic_evaluations, uscc_in};
    use gateway_store::evaluations::{CachedAnswer, Pull};
    let rows = prepare(&synthetic_evaluations(0..3, date!(2026 - 11 - 22)));
    store.ingest("cn-370500", rows, OffsetDateTime::now_utc()).await.expect("ingest");
    let subject = uscc_in("91", "370500", 1);
    let held = store.evaluations_of(&[subject.clone(), uscc_in("91", "370500", 9)]).await.expect("evaluations");
    assert_eq!(held.len(), 2, "two schemes of one company, none of the other");
    assert!(held.iter().all(|h| h.state == "active" && h.content.contains(&subject)));

    let store = Arc::new(store);
    let pulls: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let pull = Pull {
                    pull_id: format!("pull-{i:02}"),
                    direction: if i % 10 == 0 { "out" } else { "in" }.into(),
                    at: format!("2026-11-23T08:00:{i:02}.000Z"),
                    asker: "cn-370300".into(),
                    answerer: "cn-370500".into(),
                    officer: None,
                    subjects: vec![uscc_in("91", "370500", i)],
                    outcome: "answered".into(),
                    reason: None,
                    answer_id: Some(format!("answer-{i:02}")),
                    answer: Some(format!("{{\"jws\":{i}}}")),
                };
                store.record_pull(pull).await
            })
        })
        .collect();
    for p in pulls {
        p.await.expect("task").expect("audited");
    }
    let incoming = store.pulls(Some("in"), "", 100).await.expect("pulls");
    assert_eq!(incoming.len(), 45);
    assert_eq!((incoming[0].pull_id.as_str(), incoming[44].pull_id.as_str()), ("pull-49", "pull-01"));
    let recent = store.pulls(None, "2026-11-23T08:00:45.000Z", 100).await.expect("since");
    assert_eq!(recent.len(), 5);
    assert_eq!(store.pulled_answer("answer-07").await.expect("answer").as_deref(), Some("{\"jws\":7}"));
    assert_eq!(store.pulled_answer("answer-99").await.expect("none"), None);

    let cached = |answer_id: &str| CachedAnswer {
        subject_uscc: subject.clone(),
        answer_id: answer_id.into(),
        fetched_at: "2026-11-23T08:00:00.000Z".into(),
        entry: "{}".into(),
    };
    store.cache_answers("cn-370500", &[cached("a1")]).await.expect("cache");
    store.cache_answers("cn-370500", &[cached("a2")]).await.expect("cache again");
    let got = store.cached_answers("cn-370500", std::slice::from_ref(&subject)).await.expect("cached");
    assert_eq!(got.iter().map(|c| c.answer_id.as_str()).collect::<Vec<_>>(), ["a2"]);
    assert!(store.cached_answers("cn-410900", &[subject]).await.expect("other partner").is_empty());
}

async fn sla_rows_read_records_due_by_a_horizon_with_their_publication(store: Store) {
    use gateway_store::{Settlement, SlaCounts, SlaRows, SlaScope, SlaWindow, quality};
    let mut incoming = prepare(&synthetic_records(3, 41));
    for (inc, day) in incoming.iter_mut().zip([date!(2026 - 10 - 08), date!(2026 - 10 - 13), date!(2026 - 10 - 21)]) {
        inc.deadline = Some(day);
    }
    let now = OffsetDateTime::now_utc();
    let first_received = gateway_core::date::format_timestamp(now);
    store.ingest("cn-370306", incoming, now).await.expect("ingest");
    let queued = store.queued_after(0, 10).await.expect("queue");
    let first = &queued[0];
    let s = Settlement {
        published: vec![(first.seq, first.record_id, first.version, "f".into())],
        at: "2026-10-08T01:00:00.000Z".into(),
        ..Settlement::default()
    };
    store.settle("publication", s).await.expect("settle");
    let window = |destination| SlaWindow {
        destination,
        since: "2026-10-01",
        horizon: "2026-10-15",
        department: None,
        record_type: None,
    };
    let scopes = || vec!["public".to_owned(), "gov_shared".to_owned(), "authorized_query".to_owned()];
    let every = SlaScope {
        takes: vec![(RecordType::ALL.iter().map(|t| t.as_str().to_owned()).collect(), scopes())],
        ..SlaScope::default()
    };
    // Tracking catches up on what was stored (up to a `seq` when asked), with the publication
    // settled before it.
    assert_eq!(store.track_sla("publication", &every, Some(first.seq)).await.expect("track"), 1);
    assert_eq!(store.track_sla("publication", &every, Some(first.seq)).await.expect("track"), 0, "up to first");
    assert_eq!(store.track_sla("publication", &every, None).await.expect("track"), 2, "the rest");
    assert_eq!(store.track_sla("publication", &every, None).await.expect("track"), 0, "nothing new");
    assert_eq!(store.track_sla("adapter:xinyong-zibo", &every, None).await.expect("track"), 3);
    let rows = store.sla_rows(&window("publication"), SlaRows::All, false, 10).await.expect("rows");
    let got: Vec<(&str, Option<&str>)> =
        rows.iter().map(|r| (r.deadline.as_str(), r.published_at.as_deref())).collect();
    assert_eq!(got, [("2026-10-08", Some("2026-10-08T01:00:00.000Z")), ("2026-10-13", None)]);
    // On 10-12 the first is on time and the second at risk; on 10-14 the second is breached.
    let counts = store.sla_counts(&window("publication"), "2026-10-12").await.expect("counts");
    assert_eq!(counts, SlaCounts { on_time: 1, at_risk: 1, breached: 0 });
    let counts = store.sla_counts(&window("publication"), "2026-10-14").await.expect("counts");
    assert_eq!(counts, SlaCounts { on_time: 1, at_risk: 0, breached: 1 });
    let problems = store.sla_rows(&window("publication"), SlaRows::Problems, false, 10).await.expect("rows");
    assert_eq!(problems.len(), 1, "only the unpublished one");
    let elsewhere = store.sla_rows(&window("adapter:xinyong-zibo"), SlaRows::All, false, 10).await.expect("rows");
    assert!(elsewhere.iter().all(|r| r.published_at.is_none()));
    // A delivery settled after tracking stamps the tracked row in the same transaction.
    let second = &queued[1];
    let late = Settlement {
        published: vec![(second.seq, second.record_id, second.version, "z".into())],
        at: "2026-10-14T01:00:00.000Z".into(),
        ..Settlement::default()
    };
    store.settle("adapter:xinyong-zibo", late).await.expect("settle");
    let breached = store
        .sla_rows(&window("adapter:xinyong-zibo"), SlaRows::Breached { today: "2026-10-14" }, true, 10)
        .await
        .expect("rows");
    let got: Vec<(&str, bool)> = breached.iter().map(|r| (r.deadline.as_str(), r.published_at.is_some())).collect();
    assert_eq!(got, [("2026-10-13", true), ("2026-10-08", false)], "late, then never; newest first");
    // The sink's first publication counts toward timeliness once, however often it is settled.
    let again = Settlement {
        published: vec![(first.seq, first.record_id, first.version, "f".into())],
        at: "2026-10-08T02:00:00.000Z".into(),
        ..Settlement::default()
    };
    store.settle("publication", again).await.expect("settle again");
    let month = store.quality_month(&quality::period_of(&first_received)).await.expect("quality");
    let published: i64 = month.departments.values().map(|m| m.published).sum();
    let on_time: i64 = month.departments.values().map(|m| m.published_on_time).sum();
    assert_eq!((published, on_time), (1, 1));
}

async fn the_outbox_settles_dead_letters_resends_and_trails(store: Store) {
    use gateway_store::{DeadLetter, Settlement};
    let now = OffsetDateTime::now_utc();
    let stored = store.ingest("cn-370306", prepare(&synthetic_records(5, 31)), now).await.expect("ingest");
    let queued = store.queued_after(0, 100).await.expect("queue");
    assert_eq!(queued.len(), 5);
    assert!(queued.windows(2).all(|w| w[0].seq < w[1].seq), "in seq order");
    assert_eq!(queued[0].disclosure.as_deref(), Some("public"));
    assert_eq!(queued[0].arrived_from, None, "pushed here by a department");
    assert_eq!(store.outbox_position("cn-370300").await.expect("cursor"), 0);

    // The third is refused; the cursor passes all five in the same transaction.
    let dead = DeadLetter {
        seq: queued[2].seq,
        record_id: queued[2].record_id,
        version: 1,
        reason: r#"{"code":"rejected"}"#.into(),
        attempts: 1,
    };
    let at = "2026-11-22T08:00:00.000Z".to_owned();
    let settled =
        Settlement { dead: vec![dead], position: Some(queued[4].seq), at: at.clone(), ..Settlement::default() };
    store.settle("cn-370300", settled).await.expect("settle");
    assert_eq!(store.outbox_position("cn-370300").await.expect("cursor"), queued[4].seq);
    assert_eq!(store.blocked_records("cn-370300").await.expect("blocked").len(), 1);
    let letters = store.dead_letters(Some("cn-370300"), 10).await.expect("letters");
    assert_eq!(
        (letters.len(), letters[0].state.as_str(), &letters[0].reason["code"]),
        (1, "dead", &Value::from("rejected"))
    );

    // Resent: it comes back first, and once delivered it is marked resent and unblocks.
    assert_eq!(store.request_resend("cn-370300", None).await.expect("resend"), 1);
    let again = store.resend_queue("cn-370300", 10).await.expect("resend queue");
    assert_eq!(again.iter().map(|q| q.seq).collect::<Vec<_>>(), [queued[2].seq]);
    let done = Settlement { resent: vec![queued[2].seq], at, ..Settlement::default() };
    store.settle("cn-370300", done).await.expect("settle");
    assert!(store.blocked_records("cn-370300").await.expect("blocked").is_empty());
    assert_eq!(store.dead_letters(Some("cn-370300"), 10).await.expect("letters")[0].state, "resent");

    let stats = store.queue_stats().await.expect("stats");
    assert_eq!((stats[0].destination.as_str(), stats[0].backlog, stats[0].dead), ("cn-370300", 0, 0));
    let Stored::Accepted { record_id, .. } = stored[2] else { panic!("{:?}", stored[2]) };
    let trail = store.trail(record_id).await.expect("trail").expect("held");
    assert_eq!(trail.state.state, "active");
    assert_eq!(trail.versions[0].dead_letters.len(), 1);
    assert!(store.trail(uuid::Uuid::now_v7()).await.expect("trail").is_none());

    // Published by two local destinations (the sink and a platform adapter): both are kept,
    // and the trail shows the first.
    let first = queued[0].clone();
    for (destination, at) in
        [("publication", "2026-11-22T09:00:00.000Z"), ("adapter:xinyong-zibo", "2026-11-22T10:00:00.000Z")]
    {
        let s = Settlement {
            published: vec![(first.seq, first.record_id, first.version, format!("{destination}.file"))],
            at: at.into(),
            ..Settlement::default()
        };
        store.settle(destination, s).await.expect("settle");
    }
    let trail = store.trail(first.record_id).await.expect("trail").expect("held");
    assert_eq!(trail.versions[0].published_at.as_deref(), Some("2026-11-22T09:00:00.000Z"));
    let places: Vec<(&str, &str)> =
        trail.versions[0].publications.iter().map(|p| (p.destination.as_str(), p.place.as_str())).collect();
    assert_eq!(places, [("publication", "publication.file"), ("adapter:xinyong-zibo", "adapter:xinyong-zibo.file")]);

    // A child's queue holds list entries too (ADR 0008), not other records, with what routing
    // them down reads of their content: the subject's region from its USCC, or for a person
    // from the identity number (not the listing platform's `region_code`).
    let before = store.last_seq().await.expect("seq");
    let entry = credit_gateway::demo::active_black_list_entry(date!(2026 - 11 - 20)).expect("entry");
    let person = include_str!("../../../schemas/credit_list_entry/valid/watch_wage_arrears_natural_person.json");
    let mut person: Value = serde_json::from_str(person).expect("example");
    person["region_code"] = Value::from("370300");
    let penalty = synthetic_records(1, 77).remove(0);
    store.ingest("cn-000000", prepare(&[entry, penalty, person]), now).await.expect("ingest");
    let down = store.queued_events(before, store.last_seq().await.expect("seq"), 10).await.expect("queue");
    let facts: Vec<(String, String, String)> = down
        .iter()
        .map(|q| q.listed.clone().expect("list facts"))
        .map(|f| (f.list_type, f.domain, f.subject_region))
        .collect();
    let fact = |l: &str, d: &str, r: &str| (l.to_owned(), d.to_owned(), r.to_owned());
    assert_eq!(facts, [fact("black", "政府采购", "370306"), fact("watch", "劳动保障", "370306")]);
    let all = store.queued_after(before, 10).await.expect("queue");
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|q| q.listed.is_some() == (q.record_type == "credit_list_entry")), "{all:?}");
}

async fn lifecycle_events_set_the_state_of_their_target(store: Store) {
    let now = OffsetDateTime::now_utc();
    let stored = store.ingest("cn-370306", prepare(&synthetic_records(1, 32)), now).await.expect("ingest");
    let Stored::Accepted { record_id, .. } = stored[0] else { panic!("{:?}", stored[0]) };
    let event = |example: &str, f: &dyn Fn(&mut Value)| {
        let path = testkit::repo_dir().join("schemas").join(example);
        let mut v: Value = serde_json::from_slice(&std::fs::read(path).expect("example")).expect("json");
        v["target_record_id"] = Value::from(record_id.to_string());
        v["target_origin"] = Value::from("cn-370306");
        f(&mut v);
        v
    };
    let state = async |store: &Store| store.trail(record_id).await.expect("trail").expect("held").state;
    let opened =
        event("objection_opened/valid/provincial_list_suspended.json", &|v| v["sanctions_suspended"] = true.into());
    store.ingest("cn-370300", prepare(&[opened]), now).await.expect("objection");
    let s = state(&store).await;
    assert_eq!((s.state.as_str(), s.sanctions_suspended), ("disputed", true));
    let corrected = event("correction/valid/penalty_violation_facts.json", &|v| v["decided_on"] = "2026-11-05".into());
    store.ingest("cn-370306", prepare(&[corrected]), now).await.expect("correction");
    let s = state(&store).await;
    assert_eq!(s.state, "disputed", "a correction changes the content, not the state");
    assert!(s.corrected_by.is_some() && s.sanctions_suspended);
    let rejected =
        event("objection_resolved/valid/watch_list_rejected.json", &|v| v["decided_on"] = "2026-11-10".into());
    store.ingest("cn-370300", prepare(&[rejected]), now).await.expect("resolution");
    let s = state(&store).await;
    assert_eq!(
        (s.state.as_str(), s.sanctions_suspended, s.last_event_type.as_deref()),
        ("active", false, Some("objection_resolved"))
    );
    let events = store.trail(record_id).await.expect("trail").expect("held").events;
    assert_eq!(
        events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["objection_opened", "correction", "objection_resolved"]
    );
}

async fn parked_envelopes_wait_for_their_receipt(store: Store) {
    let at = "2026-11-22T08:00:00.000Z";
    store.park("cn-370306", "d1", r#"{"envelope":1}"#, at).await.expect("park");
    store.park("cn-370306", "d2", r#"{"envelope":2}"#, at).await.expect("park");
    store.park("cn-370500", "d3", r#"{"envelope":3}"#, at).await.expect("park");
    let waiting = store.parked_after("cn-370306", 0, 10).await.expect("parked");
    assert_eq!(waiting.iter().map(|p| p.body.as_str()).collect::<Vec<_>>(), [r#"{"envelope":1}"#, r#"{"envelope":2}"#]);
    assert_eq!(store.parked_after("cn-370306", waiting[0].cursor, 10).await.expect("parked").len(), 1);
    assert!(
        !store.parked_receipt_in("cn-370500", "d1", "r").await.expect("other member"),
        "only its receiver answers it"
    );
    assert!(store.parked_receipt_in("cn-370306", "d1", "receipt").await.expect("receipt"));
    assert_eq!(store.parked_receipt("d1").await.expect("read").as_deref(), Some("receipt"));
    assert_eq!(
        store.parked_after("cn-370306", 0, 10).await.expect("parked").len(),
        1,
        "answered ones are not offered again"
    );
    store.unpark("cn-370306", None).await.expect("unpark");
    assert!(store.parked_receipt("d1").await.expect("read").is_none());
    assert_eq!(store.parked_after("cn-370500", 0, 10).await.expect("parked").len(), 1);
}

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

async fn a_department_never_adds_a_version_to_another_departments_record(store: Store) {
    let records = synthetic_records(1, 41);
    let owner = records[0]["source_unit_uscc"].as_str().expect("unit").to_owned();
    let now = OffsetDateTime::now_utc();
    let out = store.ingest("cn-370306", prepare(&records), now).await.expect("ingest");
    let Stored::Accepted { record_id, .. } = out[0] else { panic!("{:?}", out[0]) };
    let mut changed = records[0].clone();
    changed["penalty_content"] = serde_json::json!("另一单位送来的新版本");
    let other = Some(vec!["11370306004217500P".to_owned()]);
    let q = || gateway_store::QualityCounts::default();
    let refused = store.ingest_scoped("cn-370306", other, prepare(&[changed.clone()]), q(), now).await.expect("ingest");
    assert_eq!(refused, vec![Stored::OtherDepartment { record_id }]);
    let same =
        store.ingest_scoped("cn-370306", Some(vec![owner]), prepare(&[changed]), q(), now).await.expect("ingest");
    assert_eq!(same, vec![Stored::NewVersion { record_id, version: 2 }]);
    assert_eq!(store.versions(record_id).await.expect("versions").len(), 2);
}

async fn joint_cases_open_once_per_subject_measure_and_department(store: Store) {
    use gateway_store::cases::NewCase;
    let case = |n: u32, subject: &str, measure: &str, department: &str| NewCase {
        case_id: format!("case-{n:03}"),
        subject_key: subject.into(),
        subject_name: "淄博周村某商贸有限公司".into(),
        measure_id: measure.into(),
        catalogue: "cn-credit-measures-demo".into(),
        department_uscc: department.into(),
        entry_origin: "cn-000000".into(),
        entry_record_id: "0190a5b2-0000-7000-8000-000000000001".into(),
        list_type: "black".into(),
        opened_at: "2026-12-07T08:00:00.000Z".into(),
        opened_on: "2026-12-07".into(),
        response_due: Some("2026-12-14".into()),
        feedback_due: None,
        valid_until: None,
        reports: false,
    };
    let (finance, market) = ("11370300MB0000001A", "11370300MB0000002B");
    let first = [
        case(1, "91370303MA3C8Q2X1Y", "restrict-government-procurement", finance),
        case(2, "91370303MA3C8Q2X1Y", "strict-market-inspection", market),
    ];
    assert_eq!(store.joint_cursor().await.expect("cursor"), 0);
    assert_eq!(store.open_cases(&first, &[], "2026-12-07T08:00:00.000Z", Some(17)).await.expect("open"), 2);
    assert_eq!(store.joint_cursor().await.expect("cursor"), 17);
    // The same entry again (re-sent, relayed twice, imported again), under new case ids, with
    // one case that is new: only that one opens.
    let again = [
        case(3, "91370303MA3C8Q2X1Y", "restrict-government-procurement", finance),
        case(4, "91370303MA3C8Q2X1Y", "strict-market-inspection", market),
        case(5, "91370303MA3C8Q2X1Y", "strict-market-inspection", finance),
    ];
    assert_eq!(store.open_cases(&again, &[], "2026-12-07T08:00:00.000Z", None).await.expect("open"), 1);
    let of_finance = store.cases(Some(finance), None, "", 100).await.expect("cases");
    assert_eq!(of_finance.iter().map(|c| c.case.case_id.as_str()).collect::<Vec<_>>(), ["case-001", "case-005"]);
    assert!(of_finance.iter().all(|c| c.state == "opened" && c.case.department_uscc == finance));
    assert_eq!(of_finance[0].case.response_due.as_deref(), Some("2026-12-14"));
    let all = store.cases(None, Some("opened"), "", 100).await.expect("cases");
    assert_eq!(all.len(), 3);
    let page = store.cases(None, None, "case-001", 1).await.expect("cases");
    assert_eq!(page.iter().map(|c| c.case.case_id.as_str()).collect::<Vec<_>>(), ["case-002"]);
}

/// 响应 → 反馈 → 解除 in the store: answers only in the states that take them and only by the
/// case's department; overdue cases by due date; the loop counted per department and month;
/// lifting when the entry is removed or its 有效期至 passes, then acknowledged.
async fn joint_cases_are_answered_counted_and_lifted(store: Store) {
    use gateway_store::cases::{Answer, Answered, Feedback, NewCase};
    let (finance, market) = ("11370300MB0000001A", "11370300MB0000002B");
    let case = |n: u32, department: &str, entry: &str, valid_until: Option<&str>| NewCase {
        case_id: format!("case-{n:03}"),
        subject_key: "91370303MA3C8Q2X1Y".into(),
        subject_name: "淄博周村某商贸有限公司".into(),
        measure_id: format!("measure-{n}"),
        catalogue: "cn-credit-measures-demo".into(),
        department_uscc: department.into(),
        entry_origin: "cn-000000".into(),
        entry_record_id: entry.into(),
        list_type: "black".into(),
        opened_at: "2026-11-20T08:00:00.000Z".into(),
        opened_on: "2026-11-20".into(),
        response_due: Some("2026-11-27".into()),
        feedback_due: Some("2026-12-11".into()),
        valid_until: valid_until.map(Into::into),
        // The entry came from 信用中国: the cases report upward.
        reports: true,
    };
    let (entry_a, entry_b) = ("0190a5b2-0000-7000-8000-00000000000a", "0190a5b2-0000-7000-8000-00000000000b");
    let cases = [
        case(1, finance, entry_a, None),
        case(2, finance, entry_a, None),
        case(3, market, entry_a, None),
        case(4, market, entry_b, Some("2026-11-28")),
    ];
    let at = "2026-11-20T08:00:00.000Z";
    assert_eq!(store.open_cases(&cases, &[], at, None).await.expect("open"), 4);

    let answer = async |id: &str, dept: &str, a: &Answer| {
        store.answer_case(id, Some(dept), a, "cred-1", "2026-11-24T09:00:00.000Z").await.expect("answer")
    };
    let Answered::Done(c) = answer("case-001", finance, &Answer::Accepted).await else { panic!("accept") };
    assert_eq!((c.state.as_str(), c.answers.responded_by.as_deref()), ("accepted", Some("cred-1")));
    // Another unit's case is not found; an answer twice is a conflict naming the state.
    assert_eq!(answer("case-002", market, &Answer::Accepted).await, Answered::NotFound);
    let Answered::Conflict(c) = answer("case-001", finance, &Answer::Accepted).await else { panic!("twice") };
    assert_eq!(c.state, "accepted");
    let na = Answer::NotApplicable { reason: "该主体无政府采购活动".into() };
    let Answered::Done(c) = answer("case-003", market, &na).await else { panic!("not applicable") };
    assert_eq!((c.state.as_str(), c.answers.reason.as_deref()), ("not_applicable", Some("该主体无政府采购活动")));
    let feedback = Feedback {
        executed_on: "2026-11-25".into(),
        action_taken: "限制参加政府采购活动".into(),
        effect: Some("已拒绝其投标".into()),
        document_no: Some("淄财采〔2026〕12号".into()),
        attachment_sha256: None,
        check_id: Some("chk-1".into()),
    };
    let Answered::Done(c) = answer("case-001", finance, &Answer::Executed(feedback.clone())).await else {
        panic!("feedback")
    };
    assert_eq!((c.state.as_str(), c.answers.feedback.as_ref()), ("executed", Some(&feedback)));
    assert!(matches!(answer("case-003", market, &Answer::Executed(feedback.clone())).await, Answered::Conflict(_)));

    // On 2026-11-30: case-002 (opened, due 11-27) is overdue; case-004 too; 001 and 003 not.
    let overdue = store.overdue_cases("2026-11-30", None, None, false, 100).await.expect("overdue");
    assert_eq!(overdue.iter().map(|c| c.case.case_id.as_str()).collect::<Vec<_>>(), ["case-002", "case-004"]);
    let of_market =
        store.overdue_cases("2026-11-30", Some(market), Some("2026-11"), false, 100).await.expect("overdue");
    assert_eq!(of_market.len(), 1);
    let counts = store.case_loop("2026-11-30").await.expect("loop");
    let f = counts.iter().find(|c| c.department_uscc == finance).expect("finance");
    assert_eq!((f.month.as_str(), f.opened, f.responded, f.fed_back, f.response_overdue), ("2026-11", 2, 1, 1, 1));
    let m = counts.iter().find(|c| c.department_uscc == market).expect("market");
    assert_eq!((m.opened, m.responded, m.not_applicable, m.response_overdue), (2, 1, 1, 1));

    // The check sees the measures in force.
    let held = store.subject_cases("91370303MA3C8Q2X1Y", Some(finance)).await.expect("check");
    assert_eq!(held.len(), 2);

    // Entry A removed: its cases in force lift (not the not-applicable one); entry B expires.
    store.open_cases(&[], &[entry_a.to_owned()], "2026-11-30T08:00:00.000Z", None).await.expect("removed");
    assert_eq!(store.lift_ended_cases("2026-11-30", "2026-11-30T08:00:00.000Z").await.expect("expiry"), 1);
    let states: Vec<(String, String, Option<String>)> = store
        .cases(None, None, "", 100)
        .await
        .expect("cases")
        .into_iter()
        .map(|c| (c.case.case_id, c.state, c.answers.lift_reason))
        .collect();
    let lifting = |id: &str, why: &str| (id.to_owned(), "lifting".to_owned(), Some(why.to_owned()));
    assert_eq!(
        states,
        [
            lifting("case-001", "removed"),
            lifting("case-002", "removed"),
            ("case-003".into(), "not_applicable".into(), None),
            lifting("case-004", "expired"),
        ]
    );
    assert!(store.subject_cases("91370303MA3C8Q2X1Y", None).await.expect("check").is_empty());
    let Answered::Done(c) = answer("case-001", finance, &Answer::LiftAcknowledged).await else { panic!("ack") };
    assert_eq!((c.state.as_str(), c.answers.lifted_at.is_some()), ("lifted", true));
    assert_eq!(store.case_loop("2026-11-30").await.expect("loop").iter().map(|c| c.lifted).sum::<i64>(), 1);

    // The subject listed again: new cases open beside the lifted and the lifting ones; the
    // standing not-applicable answer holds.
    let entry_c = "0190a5b2-0000-7000-8000-00000000000c";
    let relisted = [
        NewCase { case_id: "case-101".into(), ..case(1, finance, entry_c, None) },
        NewCase { case_id: "case-102".into(), ..case(2, finance, entry_c, None) },
        NewCase { case_id: "case-103".into(), ..case(3, market, entry_c, None) },
    ];
    assert_eq!(store.open_cases(&relisted, &[], "2026-12-01T08:00:00.000Z", None).await.expect("relisted"), 2);
    assert_eq!(store.subject_cases("91370303MA3C8Q2X1Y", Some(finance)).await.expect("check").len(), 2);
    // Overdue on 2026-12-31: newest due first for alerts, oldest first for the 督办清单.
    let oldest = store.overdue_cases("2026-12-31", None, None, false, 1).await.expect("overdue");
    let newest = store.overdue_cases("2026-12-31", None, None, true, 1).await.expect("overdue");
    assert_eq!((oldest.len(), newest.len()), (1, 1));
    assert!(oldest[0].case.case_id < newest[0].case.case_id, "{oldest:?} {newest:?}");

    // Reporting upward (ADR 0008): each change is reported once; a case reported in its state
    // stays quiet until it changes again.
    let unreported = store.unreported_cases(100).await.expect("unreported");
    assert_eq!(unreported.len(), 6);
    let marks: Vec<(String, String)> = unreported.iter().map(|c| (c.case.case_id.clone(), c.state.clone())).collect();
    store.mark_reported(&marks).await.expect("mark");
    assert!(store.unreported_cases(100).await.expect("unreported").is_empty());
    let Answered::Done(_) = answer("case-101", finance, &Answer::Accepted).await else { panic!("accept") };
    let unreported = store.unreported_cases(100).await.expect("unreported");
    assert_eq!(unreported.iter().map(|c| c.case.case_id.as_str()).collect::<Vec<_>>(), ["case-101"]);

    // Reports read at a node above: the highest version of each case wins, whatever the order
    // of arrival, and the loop counts them per reporting node.
    let report = |version: i64, state: &str| gateway_store::cases::CaseReport {
        reporter: "cn-370306".into(),
        case_id: "case-900".into(),
        entry_origin: "cn-000000".into(),
        entry_record_id: entry_c.into(),
        measure_id: "measure-1".into(),
        department_uscc: "11370306MB0000001A".into(),
        state: state.into(),
        opened_on: "2026-12-01".into(),
        response_due: Some("2026-12-08".into()),
        feedback_due: None,
        responded_at: (state != "opened").then(|| "2026-12-02T08:00:00.000Z".into()),
        not_applicable: false,
        fed_back_at: None,
        lift_requested_at: None,
        lifted_at: None,
        report_version: version,
    };
    store.take_case_reports(&[report(2, "accepted"), report(1, "opened")], 10).await.expect("reports");
    store.take_case_reports(&[report(1, "opened")], 11).await.expect("a late old report");
    assert_eq!(store.report_cursor().await.expect("cursor"), 11);
    let rows = store.reported_loop("2026-12-31").await.expect("loop");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].reporter.as_str(), rows[0].counts.opened, rows[0].counts.responded, rows[0].counts.response_overdue),
        ("cn-370306", 1, 1, 0)
    );
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
    let mut seen: Vec<_> = testkit::all_records(&store, 7).await.into_iter().map(|r| r.record_id).collect();
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
                other => panic!("unchanged content became {other:?}"),
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
    let render =
        || -> gateway_store::ReceiptFn { Box::new(|outcomes: &[Option<RelayedOutcome>]| format!("{outcomes:?}")) };
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

/// A relayed item's origin proof is stored as its origin envelope (once for all the items it
/// carried) and its own proof, and read back — by `arrivals` for evidence and by
/// `records_to_forward` for the next hop — as the `origin_proof` JSON it came in.
async fn relayed_origin_proofs_come_back_as_received(store: Store) {
    let rows = prepare(&synthetic_records(3, 9));
    let origin_envelope: Arc<str> = Arc::from(r#"{"protected":"eyJ0eXAiOiJ4In0","payload":"e30","signature":"c2ln"}"#);
    let proof = |i: usize| format!(r#"{{"index":{i},"size":3,"path":["{}"]}}"#, "ab".repeat(32));
    let with_proof = |i: usize, r: &Incoming| RelayedItem {
        origin_proof: Some(OriginRef {
            envelope_digest: "cd".repeat(32),
            envelope: Arc::clone(&origin_envelope),
            proof: proof(i),
        }),
        ..relayed(r.clone(), 200 + i as u128, 1)
    };
    let items = rows.iter().enumerate().map(|(i, r)| Some(with_proof(i, r))).collect();
    let render = || -> gateway_store::ReceiptFn { Box::new(|o: &[Option<RelayedOutcome>]| format!("{o:?}")) };
    store.store_envelope(envelope("e-origin", 9, items), render()).await.expect("store");
    // The same record versions again in another envelope: duplicates, nothing written twice.
    let again = rows.iter().enumerate().map(|(i, r)| Some(with_proof(i, r))).collect();
    let EnvelopeStored::New { receipt } =
        store.store_envelope(envelope("e-origin-2", 10, again), render()).await.expect("store")
    else {
        panic!("not new")
    };
    assert_eq!(receipt, "[Some(Duplicate), Some(Duplicate), Some(Duplicate)]");

    let expected = |i: usize| format!(r#"{{"envelope":{origin_envelope},"proof":{}}}"#, proof(i));
    let keys: Vec<(uuid::Uuid, i64)> = (0..3).map(|i| (uuid::Uuid::from_u128(200 + i as u128), 1)).collect();
    let arrivals = store.arrivals(&keys).await.expect("arrivals");
    for (i, key) in keys.iter().enumerate() {
        let arrival = &arrivals[key];
        assert_eq!(arrival.origin_proof.as_deref(), Some(expected(i).as_str()), "arrival of item {i}");
        let parsed: Value = serde_json::from_str(arrival.origin_proof.as_deref().expect("proof")).expect("JSON");
        assert_eq!(parsed["proof"]["index"], i);
    }
    let seqs: Vec<i64> = store
        .query(&RecordQuery { after: 0, limit: 10, ..Default::default() })
        .await
        .expect("query")
        .iter()
        .map(|r| r.seq)
        .collect();
    let forwarded = store.records_to_forward(&seqs).await.expect("records to forward");
    assert_eq!(forwarded.len(), 3);
    for (record, arrival) in &forwarded {
        let i = (record.record_id.as_u128() - 200) as usize;
        let arrival = arrival.as_ref().expect("arrived in an envelope");
        assert_eq!(arrival.leaf_index, 0);
        assert_eq!(arrival.origin_proof.as_deref(), Some(expected(i).as_str()));
    }
    // A parent's sender reads the same with the routing facts, in one query.
    let queued = store.queued_after(0, 10).await.expect("queue");
    let with_content = store.queued_to_forward(0, 10).await.expect("queue with what sealing needs");
    assert_eq!(with_content.len(), 3);
    for (f, q) in with_content.iter().zip(&queued) {
        assert_eq!(&f.queued, q);
        let (record, arrival) = forwarded.iter().find(|(r, _)| r.seq == q.seq).expect("forwarded");
        assert_eq!(format!("{:?}", f.record), format!("{record:?}"));
        assert_eq!(&f.arrival, arrival);
    }
}

/// A record relayed before migration 0012 kept its whole origin proof in `records.origin_proof`
/// and has no `origin_proofs` row: readers still get that proof, as stored.
#[tokio::test]
async fn origin_proofs_kept_in_the_row_before_migration_0012_are_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = testkit::sqlite_store(dir.path()).await;
    let rows = prepare(&synthetic_records(2, 11));
    let items = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Some(RelayedItem {
                origin_proof: Some(OriginRef {
                    envelope_digest: "ef".repeat(32),
                    envelope: Arc::from(r#"{"protected":"a","payload":"b","signature":"c"}"#),
                    proof: format!(r#"{{"index":{i},"size":2,"path":[]}}"#),
                }),
                ..relayed(r.clone(), 300 + i as u128, 1)
            })
        })
        .collect();
    let render = || -> gateway_store::ReceiptFn { Box::new(|o: &[Option<RelayedOutcome>]| format!("{o:?}")) };
    store.store_envelope(envelope("e-legacy", 11, items), render()).await.expect("store");

    // Make record 300 look as a node before 0012 stored it.
    let legacy =
        r#"{"envelope":{"protected":"old","payload":"old","signature":"old"},"proof":{"index":0,"size":2,"path":[]}}"#;
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("gateway.sqlite").display()))
        .await
        .expect("open");
    let id = uuid::Uuid::from_u128(300).to_string();
    sqlx::query("UPDATE records SET origin_proof = $1 WHERE record_id = $2")
        .bind(legacy)
        .bind(&id)
        .execute(&db)
        .await
        .expect("update");
    sqlx::query("DELETE FROM origin_proofs WHERE record_id = $1").bind(&id).execute(&db).await.expect("delete");
    db.close().await;

    let keys = [(uuid::Uuid::from_u128(300), 1), (uuid::Uuid::from_u128(301), 1)];
    let arrivals = store.arrivals(&keys).await.expect("arrivals");
    assert_eq!(arrivals[&keys[0]].origin_proof.as_deref(), Some(legacy));
    assert_eq!(
        arrivals[&keys[1]].origin_proof.as_deref(),
        Some(r#"{"envelope":{"protected":"a","payload":"b","signature":"c"},"proof":{"index":1,"size":2,"path":[]}}"#)
    );
    // A parent's sender reads the same with its queue.
    let queued = store.queued_to_forward(0, 10).await.expect("queue with what sealing needs");
    let proofs: Vec<Option<&str>> =
        queued.iter().map(|f| f.arrival.as_ref().and_then(|a| a.origin_proof.as_deref())).collect();
    assert_eq!(proofs, [arrivals[&keys[0]].origin_proof.as_deref(), arrivals[&keys[1]].origin_proof.as_deref()]);
}

/// The store folds SQLite's write-ahead log into the database file by itself, in the
/// background: what was committed reaches `gateway.sqlite` although the log stays far below
/// the size at which SQLite would checkpoint on its own.
#[tokio::test]
async fn the_write_ahead_log_is_folded_into_the_database_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = testkit::sqlite_store(dir.path()).await;
    let db = dir.path().join("gateway.sqlite");
    let size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    store.ingest("cn-370306", prepare(&synthetic_records(1_000, 13)), OffsetDateTime::now_utc()).await.expect("ingest");
    // The batch is well over 1 MB in pages, all in the log at commit; the empty schema is a few
    // hundred KB. Nothing else checkpoints while the store's connections stay open.
    testkit::eventually("a background checkpoint", std::time::Duration::from_secs(10), async || size() > 1024 * 1024)
        .await;
}

/// Under steady commits the log is started again from its beginning instead of growing: SQLite
/// restarts it only once every frame is copied, which the background checkpointer's second
/// pass (under the write lock) reaches. SQLite counts restarts in the log's header (the
/// checkpoint sequence, bytes 12–15). Without the second pass the log grew to SQLite's own
/// 256 MiB backstop before its first restart.
#[tokio::test]
async fn the_write_ahead_log_restarts_under_steady_writes() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(testkit::sqlite_store(dir.path()).await);
    let wal = dir.path().join("gateway.sqlite-wal");
    let restarts = || {
        let mut header = [0u8; 16];
        std::fs::File::open(&wal)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_or(0, |()| u32::from_be_bytes([header[12], header[13], header[14], header[15]]))
    };
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for seed in 1_000.. {
                let batch = prepare(&synthetic_records(200, seed));
                store.ingest("cn-370306", batch, OffsetDateTime::now_utc()).await.expect("ingest");
            }
        })
    };
    testkit::eventually(
        "three restarts of the log while records keep arriving",
        std::time::Duration::from_secs(60),
        async || restarts() >= 3,
    )
    .await;
    writer.abort();
    let wal_mib = std::fs::metadata(&wal).expect("log").len() / (1024 * 1024);
    assert!(wal_mib < 128, "the log grew to {wal_mib} MiB between restarts");
}

/// A connection to a test schema of PostgreSQL, standing for another replica's transaction.
async fn postgres_session(schema: &str) -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    let options: sqlx::postgres::PgConnectOptions = testkit::postgres_url().parse().expect("url");
    options.options([("search_path", schema)]).connect().await.expect("connect")
}

/// Begins as a push group of another replica does (`gateway_store::horizon`): lock 7301
/// shared, then the in-flight mark at the next `seq`.
async fn begin_side_by_side(conn: &mut sqlx::PgConnection) {
    use gateway_store::horizon;
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.expect("begin");
    sqlx::query(horizon::ENTER_SHARED).execute(&mut *conn).await.expect("lock 7301 shared");
    sqlx::query(horizon::MARK_IN_FLIGHT).bind(horizon::MARK_TAG).execute(&mut *conn).await.expect("mark");
}

/// Push groups on PostgreSQL commit side by side, so a higher `seq` may commit before a lower
/// one. Every reader that pages by `seq` stops below a writer still in flight, and reads on
/// once it has ended.
#[tokio::test]
async fn postgres_readers_stop_below_a_record_writer_still_in_flight() {
    let (store, schema) = testkit::postgres_store().await;
    let rows = prepare(&synthetic_records(4, 31));
    store.ingest("cn-370306", rows[..2].to_vec(), OffsetDateTime::now_utc()).await.expect("first");
    let settled = store.last_seq().await.expect("last seq");
    assert_eq!(store.query(&RecordQuery { limit: 100, ..Default::default() }).await.expect("query").len(), 2);

    // Another replica's group: marked in flight, holding the next seq, not committed.
    let mut writer = postgres_session(&schema).await;
    begin_side_by_side(&mut writer).await;
    let held: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('records', 'seq'))")
        .fetch_one(&mut writer)
        .await
        .expect("take a seq");
    assert!(held > settled);

    // A group beside it commits records above that seq ...
    let out = store.ingest("cn-370306", rows[2..].to_vec(), OffsetDateTime::now_utc()).await.expect("second");
    assert!(out.iter().all(|o| matches!(o, Stored::Accepted { .. })), "{out:?}");
    assert_eq!(store.count().await.expect("count"), 4);
    // ... which no reader passes the held seq to reach.
    let all = RecordQuery { limit: 100, ..Default::default() };
    assert_eq!(store.last_seq().await.expect("last seq"), settled);
    assert_eq!(store.query(&all).await.expect("query").len(), 2);
    assert_eq!(store.queued_after(0, 100).await.expect("queue").len(), 2);
    assert_eq!(store.queued_to_forward(0, 100).await.expect("forward").len(), 2);

    sqlx::raw_sql("ROLLBACK").execute(&mut writer).await.expect("rollback");
    assert!(store.last_seq().await.expect("last seq") > held);
    assert_eq!(store.query(&all).await.expect("query").len(), 4);
    assert_eq!(store.queued_to_forward(0, 100).await.expect("forward").len(), 4);
    drop(writer);
    testkit::drop_postgres_schema(&schema).await;
}

/// Two push groups side by side, each given a new natural key the other is storing: the one
/// that inserts second waits for the first, fails on the pushed-natural-key index, and commits
/// again alone, when it sees the first one's record. One record with two versions, not two
/// records.
#[tokio::test]
async fn postgres_push_groups_that_clash_commit_again_alone() {
    let (store, schema) = testkit::postgres_store().await;
    let mut records = synthetic_records(1, 32);
    let first = prepare(&records).remove(0);
    records[0]["remarks"] = Value::String("更正：处罚内容表述有误".into());
    let second = prepare(&records);
    let short = |d: &Sha256Digest| i64::from_be_bytes(d.0[..8].try_into().expect("8 bytes"));

    // Another replica's group stores the first content as version 1 of a record, uncommitted.
    let mut writer = postgres_session(&schema).await;
    begin_side_by_side(&mut writer).await;
    let record_id = uuid::Uuid::now_v7();
    let r = &first.record;
    sqlx::query(
        "INSERT INTO records (record_id, version, origin, record_type, natural_key, nk, ch, content_hash, \
         received_at, content, disclosure, department_uscc) VALUES ($1, 1, 'cn-370306', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(record_id.to_string())
    .bind(r.record_type.as_str())
    .bind(r.natural_key.to_hex())
    .bind(short(&r.natural_key))
    .bind(short(&r.content_hash))
    .bind(r.content_hash.to_hex())
    .bind(gateway_core::date::format_timestamp(OffsetDateTime::now_utc()))
    .bind(r.canonical_content.as_str())
    .bind(r.disclosure.as_str())
    .bind(r.quality.department_uscc.as_str())
    .execute(&mut writer)
    .await
    .expect("insert");
    let xid: i64 =
        sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint").fetch_one(&mut writer).await.expect("xid");

    // This store's group, not seeing that row, stores the changed content as a new record ...
    let store = Arc::new(store);
    let pushing = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.ingest("cn-370306", second, OffsetDateTime::now_utc()).await }
    });
    // ... until its insert waits for the other transaction's key.
    testkit::eventually("the push to wait for the other group", std::time::Duration::from_secs(20), async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted \
             AND transactionid::text::bigint = $1",
        )
        .bind(xid)
        .fetch_one(&mut writer)
        .await
        .expect("pg_locks")
            > 0
    })
    .await;
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.expect("commit");

    let out = pushing.await.expect("task").expect("push");
    assert_eq!(out, vec![Stored::NewVersion { record_id, version: 2 }]);
    let versions = store.versions(record_id).await.expect("versions");
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(store.count().await.expect("count"), 2);
    drop(writer);
    testkit::drop_postgres_schema(&schema).await;
}
