//! Helpers for test suites (feature `testing`): a throwaway PostgreSQL database per test, so
//! suites run in parallel on one server without seeing each other's rows. The databases are
//! named `kg_t_<random hex>`; `scripts/test` drops any that a crashed run left behind.
//!
//! These helpers panic on failure: they only ever run inside tests.

use sqlx::{Connection, Executor, PgConnection};

/// Every throwaway database's name starts with this.
pub const DATABASE_PREFIX: &str = "kg_t_";

/// Creates an empty database on the server `base_url` points at (any database the user can
/// connect to, e.g. `postgres://postgres@127.0.0.1:5432/test`) and returns a URL for it: the
/// same URL with only the database name changed. Migrating it is up to the caller.
pub async fn fresh_postgres_database(base_url: &str) -> String {
    let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin_connection(base_url).await;
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
    let _ = conn.close().await;
    with_database(base_url, &name)
}

/// Drops a database [`fresh_postgres_database`] made, even while pools still hold connections
/// to it (PostgreSQL 13 or later). Refuses any other name.
pub async fn drop_postgres_database(base_url: &str, database_url: &str) {
    let name = database_name(database_url)
        .filter(|n| is_throwaway_name(n))
        .unwrap_or_else(|| panic!("{database_url:?} does not name a throwaway test database"));
    let mut conn = admin_connection(base_url).await;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot drop the test database {name}: {e}"));
    let _ = conn.close().await;
}

async fn admin_connection(base_url: &str) -> PgConnection {
    PgConnection::connect(base_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL test server: {e}"))
}

fn is_throwaway_name(name: &str) -> bool {
    name.strip_prefix(DATABASE_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Splits `scheme://authority/path?query` into (`scheme://authority`, query with its `?`).
fn split_url(url: &str) -> (&str, &str, &str) {
    let (head, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    match head[authority_start..].find('/') {
        Some(i) => {
            let (server, path) = head.split_at(authority_start + i);
            (server, &path[1..], query)
        }
        None => (head, "", query),
    }
}

/// The URL with its database (the path) replaced, keeping the user, host and options.
fn with_database(url: &str, name: &str) -> String {
    let (server, _, query) = split_url(url);
    format!("{server}/{name}{query}")
}

fn database_name(url: &str) -> Option<&str> {
    let (_, path, _) = split_url(url);
    (!path.is_empty()).then_some(path)
}

/// Runs one SQL statement on the database `database_url` names (`sqlite:…` or `postgres://…`),
/// on a connection of its own: for tests that take a table away to make a store fail.
pub async fn execute(database_url: &str, sql: &str) {
    let outcome = if database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database_url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {database_url}: {e}"));
        let done = conn.execute(sql).await.map(|_| ());
        let _ = conn.close().await;
        done
    } else {
        let mut conn = PgConnection::connect(database_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {database_url}: {e}"));
        let done = conn.execute(sql).await.map(|_| ());
        let _ = conn.close().await;
        done
    };
    outcome.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_database_name_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "kg_t_ab"),
            "postgres://postgres@127.0.0.1:5432/kg_t_ab"
        );
        assert_eq!(
            with_database("postgresql://u:p@db:5432/x?sslmode=disable", "kg_t_ab"),
            "postgresql://u:p@db:5432/kg_t_ab?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://localhost", "kg_t_ab"),
            "postgres://localhost/kg_t_ab"
        );
        assert_eq!(
            with_database("postgres://localhost?user=me", "kg_t_ab"),
            "postgres://localhost/kg_t_ab?user=me"
        );
    }

    #[test]
    fn only_throwaway_databases_may_be_dropped() {
        assert_eq!(database_name("postgres://h/kg_t_0af?x=1"), Some("kg_t_0af"));
        assert!(is_throwaway_name("kg_t_0af9"));
        assert!(!is_throwaway_name("test"));
        assert!(!is_throwaway_name("kg_t_"));
        assert!(!is_throwaway_name("kg_t_x\"; DROP"));
        assert_eq!(database_name("postgres://h"), None);
    }
}
