//! A small migrator: numbered SQL files compiled into the binary, applied in order inside one
//! transaction each, and recorded in `keygate_migrations`. We keep it rather than sqlx's
//! because it needs no macros, and because the PostgreSQL backend must hold an advisory lock
//! around it so that nodes starting together do not race (see `postgres.rs`).

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS keygate_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Splits a migration file into statements. Our migrations hold no semicolons inside literals
/// or bodies, which keeps this honest; a test checks every file.
pub(crate) fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|s| {
        s.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with("--")
        })
    })
}

macro_rules! migrations {
    ($dir:literal: $($version:literal => $file:literal),* $(,)?) => {
        &[$($crate::migrate::Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $dir, "/", $file)),
        }),*]
    };
}
pub(crate) use migrations;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_skip_comments_and_blank_parts() {
        let sql = "-- a comment\nCREATE TABLE a (x INT);\n\n-- trailing\n";
        assert_eq!(
            statements(sql).collect::<Vec<_>>(),
            vec!["-- a comment\nCREATE TABLE a (x INT)"]
        );
    }
}
