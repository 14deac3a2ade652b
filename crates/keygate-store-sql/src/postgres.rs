//! PostgreSQL, for several nodes sharing one database. Migrations run under an advisory lock so
//! that nodes started together apply each one exactly once.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgConnection, Postgres};

use crate::migrate::{migrations, statements, Migration, CREATE_TABLE};

const MIGRATIONS: &[Migration] = migrations!("postgres": 1 => "0001_core.sql", 2 => "0002_tokens.sql", 3 => "0003_credits.sql", 4 => "0004_permissions.sql", 5 => "0005_webhooks.sql", 6 => "0006_audit.sql", 7 => "0007_dashboard.sql", 8 => "0008_oauth.sql", 9 => "0009_last_use.sql");

/// Arbitrary, fixed: the advisory lock every Keygate node takes to migrate.
const MIGRATION_LOCK: i64 = 0x006b_6579_6761_7465;

pub struct PgStore {
    pool: PgPool,
    /// The connection usage batches are written on (see [`PgStore::usage_connection`]).
    usage: tokio::sync::Mutex<Option<PgConnection>>,
}

impl PgStore {
    const BACKEND: &'static str = "postgres";

    pub async fn connect(url: &str) -> keygate_store::StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(crate::map_err)?;
        Ok(Self {
            pool,
            usage: tokio::sync::Mutex::new(None),
        })
    }

    /// Usage batches get a connection of their own, opened on first use, outside the pool. The
    /// server flushes usage from a thread of its own with its own runtime (at a lower CPU
    /// priority), and a connection opened there is driven by that runtime: a pooled one would
    /// then carry API requests at the flush thread's priority. Outside the pool, it is also
    /// never taken from requests for the length of a flush.
    pub(crate) async fn usage_connection(
        &self,
    ) -> keygate_store::StoreResult<tokio::sync::MutexGuard<'_, Option<PgConnection>>> {
        let mut slot = self.usage.lock().await;
        if slot.is_none() {
            let conn = self
                .pool
                .connect_options()
                .connect()
                .await
                .map_err(crate::map_err)?;
            *slot = Some(conn);
        }
        Ok(slot)
    }

    async fn run_migrations(&self) -> keygate_store::StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(crate::map_err)?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(crate::map_err)?;
        let result = apply(&mut conn).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(crate::map_err)?;
        result
    }
}

async fn apply(conn: &mut sqlx::PgConnection) -> keygate_store::StoreResult<()> {
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
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(crate::map_err)?;
        for statement in statements(m.sql) {
            tx.execute(statement).await.map_err(crate::map_err)?;
        }
        sqlx::query(
            "INSERT INTO keygate_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(crate::queries::to_ms(time::OffsetDateTime::now_utc()))
        .execute(&mut *tx)
        .await
        .map_err(crate::map_err)?;
        tx.commit().await.map_err(crate::map_err)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

crate::queries::sql_store!(PgStore, Postgres);
crate::webhook_queries::sql_webhook_store!(PgStore, Postgres, " FOR UPDATE SKIP LOCKED");
crate::oauth_queries::sql_oauth_store!(PgStore, Postgres);
