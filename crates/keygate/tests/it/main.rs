//! Keygate's integration suite: each test starts the real server on 127.0.0.1:0 and talks HTTP
//! to it. Tests written with `on_both_backends!` run once on SQLite and once on PostgreSQL
//! (when `KEYGATE_TEST_DATABASE_URL` is set; otherwise the PostgreSQL variant says it skipped).

mod harness;

mod accounts;
mod audit;
mod browser_safety;
mod cli;
mod credits;
mod crossbar;
mod dashboard;
mod errors;
mod gateway;
mod keys;
mod limits;
mod process;
mod secrets;
mod tls;
mod tokens;
mod usage;
mod verify;
mod webhook_durability;
mod webhooks;
