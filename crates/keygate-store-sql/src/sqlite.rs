//! The embedded default: one SQLite file in WAL mode, so readers never wait for the writer and
//! `keygate admin …` can write to the same file while the server runs.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Executor, Sqlite, SqliteConnection, SqlitePool};

use crate::migrate::{migrations, statements, Migration, CREATE_TABLE};

const MIGRATIONS: &[Migration] = migrations!("sqlite": 1 => "0001_core.sql", 2 => "0002_tokens.sql", 3 => "0003_credits.sql", 4 => "0004_permissions.sql", 5 => "0005_webhooks.sql", 6 => "0006_audit.sql", 7 => "0007_dashboard.sql", 8 => "0008_oauth.sql", 9 => "0009_last_use.sql");

/// The usage connection's page cache: 64 MiB (a negative `cache_size` is in KiB).
const USAGE_CACHE_SIZE: i64 = -65_536;

pub struct SqliteStore {
    pool: SqlitePool,
    options: SqliteConnectOptions,
    /// The connection usage batches are written on, opened on first use (see
    /// [`SqliteStore::usage_connection`]).
    usage: tokio::sync::Mutex<Option<SqliteConnection>>,
}

impl SqliteStore {
    const BACKEND: &'static str = "sqlite";

    pub async fn connect(url: &str) -> keygate_store::StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(crate::map_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only a power loss can
            // take back the last commits, which FULL would cost an fsync per commit to prevent.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .map_err(crate::map_err)?;
        Ok(Self {
            pool,
            options,
            usage: tokio::sync::Mutex::new(None),
        })
    }

    /// Usage batches are background work that can be large (a busy deployment uses most of its
    /// keys between two flushes), and SQLite does that work on the CPU of the process, on the
    /// connection's own worker thread. They get a connection of their own whose worker thread
    /// runs at a lower CPU priority (nice 10, on Linux), so that on a loaded machine requests
    /// come first and the flush takes the time left over. A thread takes its priority from the
    /// thread that starts it, so the connection is opened from a short-lived thread that lowers
    /// its own priority first.
    pub(crate) async fn usage_connection(
        &self,
    ) -> keygate_store::StoreResult<tokio::sync::MutexGuard<'_, Option<SqliteConnection>>> {
        let mut slot = self.usage.lock().await;
        if slot.is_none() {
            // A larger page cache than the pool's (2 MB): a flush touches rows all over the
            // usage table, and pages read from the cache are not read again from the file.
            let options = self
                .options
                .clone()
                .pragma("cache_size", USAGE_CACHE_SIZE.to_string());
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("keygate-usage-open".into())
                .spawn(move || {
                    crate::lower_thread_priority();
                    let opened = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(sqlx::Error::Io)
                        .and_then(|rt| rt.block_on(options.connect()));
                    let _ = tx.send(opened);
                })
                .map_err(|e| keygate_store::StoreError::Backend(format!("a thread: {e}")))?;
            let conn = rx
                .await
                .map_err(|_| {
                    keygate_store::StoreError::Backend("opening the usage connection".into())
                })?
                .map_err(crate::map_err)?;
            *slot = Some(conn);
        }
        Ok(slot)
    }

    /// `BEGIN IMMEDIATE` takes the write lock before reading which migrations ran, so a server
    /// and an admin command starting on a new file together cannot both apply them.
    async fn run_migrations(&self) -> keygate_store::StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(crate::map_err)?;
        conn.execute("BEGIN IMMEDIATE")
            .await
            .map_err(crate::map_err)?;
        let result = apply(&mut conn).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        conn.execute(end).await.map_err(crate::map_err)?;
        result
    }
}

async fn apply(conn: &mut sqlx::SqliteConnection) -> keygate_store::StoreResult<()> {
    conn.execute(CREATE_TABLE).await.map_err(crate::map_err)?;
    for m in MIGRATIONS {
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT version FROM keygate_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *conn)
                .await
                .map_err(crate::map_err)?;
        if seen.is_some() {
            continue;
        }
        for statement in statements(m.sql) {
            conn.execute(statement).await.map_err(crate::map_err)?;
        }
        sqlx::query(
            "INSERT INTO keygate_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(crate::queries::to_ms(time::OffsetDateTime::now_utc()))
        .execute(&mut *conn)
        .await
        .map_err(crate::map_err)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

crate::queries::sql_store!(SqliteStore, Sqlite);
crate::webhook_queries::sql_webhook_store!(SqliteStore, Sqlite, "");
crate::oauth_queries::sql_oauth_store!(SqliteStore, Sqlite);
