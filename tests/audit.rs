//! The audit log's hash chain, on SQLite and on PostgreSQL: `credit-gateway audit verify` (the
//! real binary) finds it intact, then names the entry that was deleted, the one whose content
//! was edited, and the one after an entry whose hash was recomputed to hide an edit.

use std::process::Command;

use gateway_store::Store;
use gateway_store::audit::AuditEvent;
use sqlx::Connection;

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        at: format!("2026-12-07T08:00:{:02}Z", n % 60),
        principal: "淄博市周村区市场监督管理局".into(),
        role: "department".into(),
        action: "POST /api/v1/records".into(),
        target: "/api/v1/records".into(),
        status: 200,
        outcome: "ok".into(),
        request_id: format!("req-{n}"),
        source: "127.0.0.1".into(),
        detail: format!("received {n} accepted {n} new_version 0 duplicate 0 rejected 0"),
    }
}

/// Appends `n` entries at once, from concurrent tasks (they share group commits).
async fn append(store: &std::sync::Arc<Store>, n: usize) {
    let mut writes = tokio::task::JoinSet::new();
    for i in 1..=n {
        let store = std::sync::Arc::clone(store);
        writes.spawn(async move { store.audit(event(i)).await });
    }
    let mut seqs: Vec<i64> = writes.join_all().await.into_iter().map(|r| r.expect("append")).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n as i64).collect::<Vec<_>>(), "every entry got its own place in the chain");
}

/// Runs `credit-gateway audit verify` against a node's store; returns (success, stdout).
fn verify(data_dir: &std::path::Path, database_url: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(testkit::gateway_bin());
    cmd.args(["audit", "verify", "--data-dir"]).arg(data_dir);
    match database_url {
        Some(url) => cmd.env("CREDIT_GATEWAY_DATABASE_URL", url),
        None => cmd.env_remove("CREDIT_GATEWAY_DATABASE_URL"),
    };
    let out = cmd.output().expect("run credit-gateway audit verify");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() || out.status.code() == Some(1), "verify failed to run: {text}");
    (out.status.success(), text)
}

/// What the checks do to the database behind the store's back: SQL on its own connection.
async fn tamper<C: Connection>(conn: &mut C)
where
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
{
    sqlx::query("DELETE FROM audit_log WHERE seq = 4").execute(&mut *conn).await.expect("delete");
    sqlx::query("UPDATE audit_log SET detail = 'received 0 accepted 0' WHERE seq = 7")
        .execute(&mut *conn)
        .await
        .expect("edit");
}

fn assert_named(text: &str) {
    assert!(text.contains("BROKEN"), "{text}");
    assert!(text.contains("entry 4: entry 4 is missing (deleted)"), "{text}");
    assert!(text.contains("entry 7: entry 7 was altered"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_deleted_and_edited_entries_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(testkit::sqlite_store(dir.path()).await);
    append(&store, 12).await;
    let check = store.verify_audit().await.expect("verify");
    assert_eq!((check.entries, check.problems.len()), (12, 0));
    store.close().await;
    let (ok, text) = verify(dir.path(), None);
    assert!(ok && text.contains("12 entries") && text.contains("intact"), "{text}");

    let url = format!("sqlite://{}", dir.path().join("gateway.sqlite").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    tamper(&mut conn).await;
    conn.close().await.expect("close");
    let (ok, text) = verify(dir.path(), None);
    assert!(!ok, "{text}");
    assert_named(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_deleted_and_edited_entries_on_postgres() {
    let (store, schema) = testkit::postgres_store().await;
    let store = std::sync::Arc::new(store);
    append(&store, 12).await;
    store.close().await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", testkit::postgres_url());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, text) = verify(dir.path(), Some(&url));
    assert!(ok && text.contains("12 entries"), "{text}");

    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    tamper(&mut conn).await;
    let (ok, text) = verify(dir.path(), Some(&url));
    assert!(!ok, "{text}");
    assert_named(&text);

    // Editing an entry and recomputing its hash moves the break to the next entry.
    sqlx::query("UPDATE audit_log SET principal = 'someone else' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect("edit");
    let row: (String, String, String, String, String, String, i64, String, String, String, String) = sqlx::query_as(
        "SELECT at, principal, role, action, target, outcome, status, request_id, source, detail, prev_hash FROM audit_log WHERE seq = 2",
    )
    .fetch_one(&mut conn)
    .await
    .expect("read");
    let edited = AuditEvent {
        at: row.0,
        principal: row.1,
        role: row.2,
        action: row.3,
        target: row.4,
        outcome: row.5,
        status: row.6,
        request_id: row.7,
        source: row.8,
        detail: row.9,
    };
    let hash = gateway_store::audit::chain_hash(2, &edited, &row.10);
    sqlx::query("UPDATE audit_log SET hash = $1 WHERE seq = 2").bind(hash).execute(&mut conn).await.expect("rehash");
    conn.close().await.expect("close");
    let (ok, text) = verify(dir.path(), Some(&url));
    assert!(!ok, "{text}");
    assert!(text.contains("entry 3: entry 3 does not follow entry 2"), "{text}");
    testkit::drop_postgres_schema(&schema).await;
}
