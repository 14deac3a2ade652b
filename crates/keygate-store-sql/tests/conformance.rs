//! Both backends against the shared conformance suite in `keygate_store::conformance`, each on
//! a database of its own that is removed afterwards, pass or fail.

use std::any::Any;
use std::io::Write;
use std::sync::Arc;

use keygate_store::{conformance, Store};
use keygate_store_sql::testing::{drop_postgres_database, fresh_postgres_database};

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let path = std::env::temp_dir().join(format!(
        "keygate-conformance-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = keygate_store_sql::connect(&url)
        .await
        .expect("the SQLite file opens");
    assert_eq!(store.backend_name(), "sqlite");

    let outcome = run_suite(store).await;

    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn postgres_passes_the_conformance_suite() {
    let Some(base_url) = std::env::var("KEYGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        // Written past the test harness's capture, so that a skip shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: postgres conformance (KEYGATE_TEST_DATABASE_URL is not set)"
        );
        return;
    };
    let url = fresh_postgres_database(&base_url).await;
    let store = keygate_store_sql::connect(&url)
        .await
        .expect("the fresh PostgreSQL database accepts connections");
    assert_eq!(store.backend_name(), "postgres");

    let outcome = run_suite(store).await;

    drop_postgres_database(&base_url, &url).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Migrates the store and runs the suite on a task of its own, so that a failed check comes
/// back as a value and the caller can still clean up before failing the test.
async fn run_suite(store: Arc<dyn Store>) -> Result<(), Box<dyn Any + Send>> {
    let task = tokio::spawn(async move {
        store.migrate().await.expect("the migrations apply");
        // Applying them again finds nothing to do.
        store.migrate().await.expect("the migrations re-apply");
        conformance::run_all(store.as_ref()).await;
    });
    task.await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => panic,
        Err(e) => Box::new(e.to_string()),
    })
}

/// The usage connection is one of its own, kept between batches: when the database cuts it,
/// the batch in flight fails (and the server puts its counts back for the next flush), and the
/// next batch opens a new connection rather than fail on the dead one for ever.
#[tokio::test]
async fn postgres_usage_writes_go_on_after_their_connection_is_cut() {
    let Some(base_url) = std::env::var("KEYGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: postgres usage connection (KEYGATE_TEST_DATABASE_URL is not set)"
        );
        return;
    };
    let url = fresh_postgres_database(&base_url).await;
    let store = keygate_store_sql::connect(&url)
        .await
        .expect("the fresh PostgreSQL database accepts connections");
    store.migrate().await.expect("the migrations apply");
    let key_id = keygate_core::id::KeyId::generate();
    let batch = |requests| {
        [keygate_store::UsageIncrement {
            key_id: key_id.clone(),
            account_id: None,
            day: 20_000,
            requests,
            last_used_at: time::OffsetDateTime::now_utc(),
        }]
    };
    store
        .record_usage(&batch(1))
        .await
        .expect("the first batch");
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("an admin connection");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&admin)
    .await
    .expect("the other connections are cut");
    let cut = store.record_usage(&batch(2)).await;
    assert!(cut.is_err(), "the batch on the cut connection fails");
    store
        .record_usage(&batch(4))
        .await
        .expect("the next batch opens a new connection");
    let (requests,): (i64,) = sqlx::query_as("SELECT requests FROM usage_daily WHERE key_id = $1")
        .bind(key_id.as_str())
        .fetch_one(&admin)
        .await
        .expect("the key's usage row");
    assert_eq!(requests, 5, "the failed batch wrote nothing");
    admin.close().await;
    drop(store);
    drop_postgres_database(&base_url, &url).await;
}
