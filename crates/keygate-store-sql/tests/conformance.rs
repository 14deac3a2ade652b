//! Both backends against the shared conformance suite in `keygate_store::conformance`, each on
//! a database of its own that is removed afterwards, pass or fail.

use std::any::Any;
use std::io::Write;
use std::sync::Arc;

use keygate_store::{conformance, Store};
use keygate_store_sql::testing::{drop_postgres_database, fresh_postgres_database};

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let (path, url) = sqlite_file("keygate-conformance");
    let store = keygate_store_sql::connect(&url)
        .await
        .expect("the SQLite file opens");
    assert_eq!(store.backend_name(), "sqlite");

    let outcome = run_suite(store).await;

    remove_sqlite_file(&path);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn postgres_passes_the_conformance_suite() {
    let Some(base_url) = postgres_server("postgres conformance") else {
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
    let Some(base_url) = postgres_server("postgres usage connection") else {
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

/// A key's last use written by a version before usage rows carried it (on the key's own row,
/// and a usage row without one) still reads after the upgrade, until a newer use replaces it.
#[tokio::test]
async fn a_last_use_written_before_the_upgrade_still_reads() {
    let (path, url) = sqlite_file("keygate-last-use");
    last_use_survives_the_upgrade(&url).await;
    remove_sqlite_file(&path);
    let Some(base_url) = postgres_server("postgres last use upgrade") else {
        return;
    };
    let url = fresh_postgres_database(&base_url).await;
    last_use_survives_the_upgrade(&url).await;
    drop_postgres_database(&base_url, &url).await;
}

async fn last_use_survives_the_upgrade(url: &str) {
    use time::{Duration, OffsetDateTime};

    let store = keygate_store_sql::connect(url)
        .await
        .expect("the database opens");
    store.migrate().await.expect("the migrations apply");
    let ms = |t: OffsetDateTime| {
        t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
            .expect("a whole number of milliseconds is a valid nanosecond")
    };
    let before = ms(OffsetDateTime::now_utc()) - Duration::hours(3);
    let stored = keygate_store::ApiKey {
        created_at: before - Duration::days(1),
        last_used_at: Some(before),
        ..conformance::new_key(None, None, "upgraded")
    };
    store.create_key(&stored).await.expect("create_key");
    let read = || async {
        store
            .get_key(None, &stored.id)
            .await
            .expect("get_key")
            .last_used_at
    };
    assert_eq!(
        read().await,
        Some(before),
        "the key's own row, no usage yet"
    );

    // Today's row as an earlier version wrote it: a count and no time. (Usage rows name the
    // account; the operator key stands in for one of its keys here.)
    let account = keygate_core::AccountId::generate();
    let day = (before.unix_timestamp() / 86_400) as i32;
    keygate_store_sql::testing::execute(
        url,
        &format!(
            "INSERT INTO usage_daily (key_id, account_id, day, requests) VALUES ('{}', '{}', {day}, 3)",
            stored.id.as_str(),
            account.as_str()
        ),
    )
    .await;
    assert_eq!(read().await, Some(before), "a usage row without a time");

    let after = before + Duration::minutes(5);
    store
        .record_usage(&[keygate_store::UsageIncrement {
            key_id: stored.id.clone(),
            account_id: Some(account.clone()),
            day,
            requests: 1,
            last_used_at: after,
        }])
        .await
        .expect("record_usage");
    assert_eq!(read().await, Some(after));
    let rows = store
        .usage_by_day(&account, day, day)
        .await
        .expect("usage_by_day");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].requests, 4, "the old count and the new one");
}

/// The PostgreSQL server the tests may use (`KEYGATE_TEST_DATABASE_URL`), or `None` after
/// saying, past the test harness's capture so that it shows in every run, that `what` is
/// skipped.
fn postgres_server(what: &str) -> Option<String> {
    let url = std::env::var("KEYGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {what} (KEYGATE_TEST_DATABASE_URL is not set)"
        );
    }
    url
}

/// A SQLite database file of its own in the temporary directory, and its URL.
fn sqlite_file(label: &str) -> (std::path::PathBuf, String) {
    let path = std::env::temp_dir().join(format!("{label}-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    (path, url)
}

/// Removes a database [`sqlite_file`] made, with its journal files.
fn remove_sqlite_file(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
