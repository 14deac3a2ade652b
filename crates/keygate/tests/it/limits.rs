//! Rate limits: exact under concurrency, on one node and across nodes sharing Redis; the
//! headers of seed 002; 429 with Retry-After; failed authentications limited per address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{with_plan, Backend, TestServer};

/// Fires `n` concurrent GETs with `key` at the given bases (round-robin); returns how many
/// were admitted and how long the burst took.
async fn burst(bases: &[String], key: &str, n: usize) -> (usize, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let key = Arc::new(key.to_owned());
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = format!("{}/api/v1/auth/me", bases[i % bases.len()]);
            let (client, key) = (client.clone(), key.clone());
            tokio::spawn(async move {
                let r = client
                    .get(url)
                    .bearer_auth(key.as_str())
                    .send()
                    .await
                    .expect("send");
                let status = r.status().as_u16();
                assert!(status == 200 || status == 429, "unexpected {status}");
                status == 200
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.expect("task"));
    }
    (admitted, started.elapsed())
}

/// The most a `limit`/`period` GCRA may admit in `elapsed`: the burst, plus the refill.
fn bound(limit: u64, period: Duration, elapsed: Duration) -> usize {
    (limit as f64 + (elapsed.as_secs_f64() / period.as_secs_f64() * limit as f64).ceil()) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_against_a_limit_of_100_admit_100() {
    let _turn = crate::harness::heavy_load_turn().await;
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await; // free: 100/minute
    let (admitted, elapsed) = burst(std::slice::from_ref(&srv.base), &acme.key, 1000).await;
    let most = bound(100, Duration::from_secs(60), elapsed);
    assert!(admitted >= 100, "the whole burst is admitted: {admitted}");
    assert!(
        admitted <= most,
        "admitted {admitted} in {elapsed:?}; at most {most}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_sharing_postgres_and_redis_admit_the_same_total() {
    let (Some(pg), Ok(redis)) = (
        crate::harness::postgres_base_url(),
        std::env::var("KEYGATE_TEST_REDIS_URL"),
    ) else {
        eprintln!("SKIPPED: two_server_processes_sharing_postgres_and_redis_admit_the_same_total (needs KEYGATE_TEST_DATABASE_URL and KEYGATE_TEST_REDIS_URL)");
        return;
    };
    let _turn = crate::harness::heavy_load_turn().await;
    let db = keygate_store_sql::testing::fresh_postgres_database(&pg).await;
    let dir = crate::harness::temp_dir("two-nodes");
    let cfg = crate::harness::cluster_config(&dir);
    let args = |d: &str| {
        vec![
            "--config".to_owned(),
            cfg.clone(),
            "--database-url".to_owned(),
            db.clone(),
            "--redis-url".to_owned(),
            redis.clone(),
            "--data-dir".to_owned(),
            d.to_owned(),
        ]
    };
    let a_dir = dir.join("a").display().to_string();
    let b_dir = dir.join("b").display().to_string();
    let a_args = args(&a_dir);
    let b_args = args(&b_dir);
    let a = crate::cli::serve(
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &dir.join("a.log"),
    )
    .await;
    let b = crate::cli::serve(
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &dir.join("b.log"),
    )
    .await;
    let created = crate::cli::create_account(&[
        "--name",
        "Shared",
        "--email",
        "s@shared.test",
        "--config",
        &cfg,
        "--database-url",
        &db,
        "--data-dir",
        &a_dir,
    ]);
    let key = created["api_key"].as_str().expect("key");
    let (admitted, elapsed) = burst(&[a.base.clone(), b.base.clone()], key, 1000).await;
    let most = bound(100, Duration::from_secs(60), elapsed);
    assert!(
        admitted >= 100 && admitted <= most,
        "two nodes admitted {admitted} in {elapsed:?}; between 100 and {most}"
    );
    for base in [&a.base, &b.base] {
        let ready: serde_json::Value = reqwest::get(format!("{base}/readyz"))
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        assert_eq!(ready["rate_limiter"]["backend"], "redis");
        assert_eq!(ready["rate_limiter"]["healthy"], true);
    }
    drop((a, b));
    keygate_store_sql::testing::drop_postgres_database(&pg, &db).await;
}

#[tokio::test]
async fn limited_answers_carry_the_rate_limit_headers() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let r = srv.get("/api/v1/auth/me", &acme.key).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    let reset: i64 = r
        .header("x-ratelimit-reset")
        .expect("reset")
        .parse()
        .expect("unix seconds");
    assert!(
        reset >= before && reset <= before + 61,
        "reset {reset} is a Unix time within the window"
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"free\";q=100;w=60"));
    let rl = r.header("ratelimit").expect("RateLimit");
    assert!(rl.starts_with("\"free\";r=99;t="), "{rl}");
    let r = srv.get("/api/v1/auth/me", &acme.key).await;
    assert_eq!(r.header("x-ratelimit-remaining"), Some("98"));
    // The Crossbar surface too.
    let (token, _) = srv.api_auth(&acme.key).await;
    let r = srv
        .v2(
            Method::GET,
            &format!("/v2/accounts/{}", acme.id),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    // Unauthenticated routes are not limited.
    let r = srv
        .client
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .expect("send");
    assert!(r.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn a_request_over_the_limit_gets_429_with_retry_after_and_the_window_refills() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        with_plan(c, "burst", "10/second", None)
    })
    .await
    .expect("sqlite");
    let acme = srv.account_on_plan("Acme", Some("burst")).await;
    for i in 0..10 {
        assert_eq!(
            srv.get("/api/v1/auth/me", &acme.key).await.status,
            200,
            "request {i}"
        );
    }
    let r = srv.get("/api/v1/auth/me", &acme.key).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limit_exceeded");
    assert_eq!(
        r.body["error"]["message"],
        "Rate limit exceeded. Please try again later."
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // One emission interval (100 ms) later exactly one more fits.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 200);
    assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 429);
    // A full window later the whole burst is back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..10 {
        assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 200);
    }
    // On /v2 the 429 is a Crossbar envelope.
    let r = srv
        .v2(
            Method::GET,
            &format!("/v2/accounts/{}", acme.id),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"], "429");
    assert_eq!(r.body["status"], "error");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn a_key_may_carry_a_lower_limit_of_its_own_but_not_a_higher_one() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await;
    let (slow, _) = srv
        .create_key(&acme.key, json!({"name": "slow", "rate_limit": "2/minute"}))
        .await;
    assert_eq!(srv.get("/api/v1/auth/me", &slow).await.status, 200);
    let r = srv.get("/api/v1/auth/me", &slow).await;
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"key\";q=2;w=60"),
        "the tighter policy is reported"
    );
    assert_eq!(srv.get("/api/v1/auth/me", &slow).await.status, 429);
    // The account's other keys are unaffected.
    assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 200);
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": "fast", "rate_limit": "1000/minute"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "rate_limit");
    let r = srv
        .send(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(&acme.key),
            Some(json!({"name": "odd", "rate_limit": "lots"})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_flood_of_invented_keys_gets_429_while_a_valid_key_keeps_its_limit() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth_failure_limit = crate::harness::quota("20/minute")
    })
    .await
    .expect("sqlite");
    let acme = srv.account("Acme").await;
    assert_eq!(
        srv.get("/api/v1/auth/me", &acme.key)
            .await
            .header("x-ratelimit-remaining"),
        Some("99")
    );
    let mut first_429 = None;
    for i in 0..60 {
        let fake = keygate_core::key::generate("ak", keygate_core::Environment::Live)
            .expect("key")
            .into_plaintext();
        let r = srv.get("/api/v1/auth/me", &fake).await;
        match r.status {
            401 => assert!(first_429.is_none(), "401 after a 429 at {i}"),
            429 => {
                first_429.get_or_insert(i);
                assert!(r.header("retry-after").is_some());
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(
        first_429,
        Some(20),
        "the 21st invented key is refused with 429"
    );
    let r = srv.get("/api/v1/auth/me", &acme.key).await;
    assert_eq!(
        r.status, 200,
        "a valid key from the same address still works"
    );
    assert_eq!(
        r.header("x-ratelimit-remaining"),
        Some("98"),
        "and the failures did not use its limit"
    );
    // Tokens and Crossbar credentials count too.
    let r = srv
        .v2(
            Method::PUT,
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": "ak_live_invented"}})),
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"], "429");
}

#[tokio::test]
async fn limits_can_be_switched_off_and_operators_are_not_limited() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        with_plan(c, "tiny", "1/minute", None);
        c.rate_limits_enabled = false;
    })
    .await
    .expect("sqlite");
    let acme = srv.account_on_plan("Acme", Some("tiny")).await;
    for _ in 0..5 {
        let r = srv.get("/api/v1/auth/me", &acme.key).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-ratelimit-limit").is_none());
    }
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let op = srv.operator_key().await;
    for _ in 0..150 {
        assert_eq!(srv.get("/api/v1/accounts", &op).await.status, 200);
    }
}

#[tokio::test]
async fn an_unreachable_redis_degrades_to_local_limits_and_says_so() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.redis_url = Some("redis://127.0.0.1:1".into())
    })
    .await
    .expect("sqlite");
    let acme = srv.account("Acme").await;
    let r = srv.get("/api/v1/auth/me", &acme.key).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-remaining"),
        Some("99"),
        "limits still apply, locally"
    );
    let ready: serde_json::Value = srv
        .client
        .get(format!("{}/readyz", srv.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["rate_limiter"]["backend"], "redis");
    assert_eq!(ready["rate_limiter"]["healthy"], false);
}
