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
