//! At-least-once delivery across a crash: the real binary, killed with SIGKILL while it has
//! deliveries in flight and many more queued, then started again on the same database. Every
//! event must reach the receiver (a delivery caught mid-attempt may arrive twice; none may be
//! lost).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{create_account, serve};
use crate::harness::{fresh_database, temp_dir, Backend};
use crate::webhooks::{signed_by, Receiver, Reply};

const EVENTS: usize = 120;

async fn survives(backend: Backend) {
    let dir = temp_dir("kill9");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let data_s = data.to_str().expect("utf8").to_owned();
    let Some(database_url) = fresh_database(backend, &data).await else {
        eprintln!("SKIPPED: webhook deliveries survive kill -9 on PostgreSQL");
        return;
    };
    // Few attempts at once, each slow: when the process dies some are in flight, most queued.
    let config = dir.join("keygate.toml");
    std::fs::write(
        &config,
        "rate_limits = false\n[webhooks]\nconcurrency = 4\npoll_interval_ms = 100\ntimeout_seconds = 2\nlease_seconds = 3\n",
    )
    .expect("config");
    let args = [
        "--data-dir",
        data_s.as_str(),
        "--database-url",
        database_url.as_str(),
        "--config",
        config.to_str().expect("utf8"),
        "--webhooks-allow-private",
    ];
    let mut rx = Receiver::start().await;
    let mut slow = Reply::status(200);
    slow.delay = Duration::from_millis(150);
    rx.by_default(slow);

    let mut server = serve(&args, &dir.join("first.log")).await;
    let account = create_account(&[
        "--name",
        "Durable",
        "--email",
        "ops@durable.test",
        "--data-dir",
        &data_s,
        "--database-url",
        &database_url,
    ]);
    let key = account["api_key"].as_str().expect("key").to_owned();
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{}/api/v1/webhooks", server.base))
        .bearer_auth(&key)
        .json(&json!({"url": rx.base, "events": ["order.*"]}))
        .send()
        .await
        .expect("create endpoint")
        .json()
        .await
        .expect("json");
    let secret = created["secret"].as_str().expect("secret").to_owned();

    let mut published = BTreeSet::new();
    for i in 0..EVENTS {
        let out: serde_json::Value = client
            .post(format!("{}/api/v1/events", server.base))
            .bearer_auth(&key)
            .json(&json!({"type": "order.paid", "data": {"order": i}}))
            .send()
            .await
            .expect("publish")
            .json()
            .await
            .expect("json");
        assert_eq!(out["deliveries"], 1, "{out}");
        published.insert(out["id"].as_str().expect("id").to_owned());
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    while seen.len() < 8 {
        let got = rx.next(Duration::from_secs(10)).await;
        assert!(signed_by(&secret, &got));
        *seen.entry(got.header("webhook-id").to_owned()).or_default() += 1;
    }
    // SIGKILL: no shutdown code runs, leases stay taken, nothing is flushed.
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
    let before_restart = seen.len();
    assert!(before_restart < EVENTS, "the crash came mid-way");

    let _restarted = serve(&args, &dir.join("second.log")).await;
    let started = Instant::now();
    while !published.iter().all(|id| seen.contains_key(id)) {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "events lost: {} of {EVENTS} arrived",
            seen.len()
        );
        let got = rx.next(left).await;
        assert!(signed_by(&secret, &got));
        *seen.entry(got.header("webhook-id").to_owned()).or_default() += 1;
    }
    let ids: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(ids, published, "every event arrived, and only those");
    let twice = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "kill -9 on {backend:?}: {before_restart} of {EVENTS} delivered before the crash, all after the restart; {twice} delivered twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_kill_9_on_sqlite() {
    survives(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_kill_9_on_postgres() {
    survives(Backend::Postgres).await
}
