//! Keygate's SQL backends: the embedded SQLite default and PostgreSQL for several nodes.
//!
//! Both speak the same SQL here (`$n` placeholders, `ON CONFLICT`, timestamps as Unix
//! milliseconds), so the queries are written once, in [`queries`], and instantiated for each
//! backend's pool type by a macro; each backend keeps its own migrations in `migrations/`.
//! Where the dialects differ (pragmas, locks) the backend module says so.

mod migrate;
mod oauth_queries;
pub mod postgres;
mod queries;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod webhook_queries;

use std::sync::Arc;

use keygate_store::{Store, StoreError, StoreResult};

/// Opens the backend a database URL names: `sqlite://…` or `postgres://…`.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Backend(
            "the database URL must start with sqlite: or postgres://".into(),
        ))
    }
}

/// Maps a driver error to the store's: unique violations become [`StoreError::Conflict`] with
/// the rule's name (PostgreSQL reports the constraint; SQLite only the columns), everything
/// else a backend error.
pub(crate) fn map_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
            let rule = [
                ("users_username", "users.account_id, users.username"),
                ("accounts_name", "accounts.name_lower"),
                ("api_keys_hash", "api_keys.key_hash"),
            ]
            .into_iter()
            .find(|(name, cols)| text.contains(name) || text.contains(cols))
            .map_or("unique", |(name, _)| name);
            StoreError::Conflict(rule)
        }
        _ => StoreError::Backend(err.to_string()),
    }
}

/// Sets the calling thread's nice value (Linux, where it is per thread and inherited by the
/// threads it starts); elsewhere it does nothing. Best effort: a refusal (a value below the
/// current one without CAP_SYS_NICE) leaves the priority as it was, and is logged as a warning
/// when `warn`, otherwise at debug level.
pub fn set_thread_nice(nice: i32, warn: bool) {
    #[cfg(target_os = "linux")]
    {
        // `None`: the calling thread, on Linux.
        if let Err(err) = rustix::process::setpriority_process(None, nice) {
            if warn {
                tracing::warn!(error = %err, nice, "could not set the serving threads' nice value (below 0 needs CAP_SYS_NICE)");
            } else {
                tracing::debug!(error = %err, nice, "could not set a serving thread's nice value");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (nice, warn);
}

/// Lowers the calling thread's CPU priority to nice 10 (Linux, where the nice value is per
/// thread and inherited by the threads it starts); elsewhere it does nothing. Best effort: a
/// refusal leaves the priority as it was.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // `None`: the calling thread, on Linux.
        if let Err(err) = rustix::process::setpriority_process(None, 10) {
            tracing::debug!(error = %err, "could not lower a background thread's priority");
        }
    }
}
