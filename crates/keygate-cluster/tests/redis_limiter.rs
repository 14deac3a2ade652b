//! The Redis limiter against a real Redis (`KEYGATE_TEST_REDIS_URL`, e.g. redis://127.0.0.1:6379;
//! without it those tests say SKIPPED and pass), and its degraded mode without one.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygate_cluster::{Quota, RateLimiter, RedisLimiter, RedisLimiterOptions};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn redis_url(test: &str) -> Option<String> {
    match std::env::var("KEYGATE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED: {test}: KEYGATE_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// Options whose key prefix is unique to this test run, so runs sharing a Redis never collide.
/// The timeout is generous so that a busy CI machine does not push a node onto local limits.
fn options(test: &str) -> RedisLimiterOptions {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RedisLimiterOptions {
        key_prefix: format!("keygate:test:{test}:{}-{nanos}:", std::process::id()),
        timeout: Duration::from_secs(2),
        ..RedisLimiterOptions::default()
    }
}

fn quota(s: &str) -> Quota {
    Quota::parse(s).expect("a valid quota")
}

async fn connect(url: &str, options: &RedisLimiterOptions) -> Arc<RedisLimiter> {
    let limiter = RedisLimiter::connect_with(url, options.clone())
        .await
        .expect("a valid URL");
    assert!(limiter.status().healthy, "{:?}", limiter.status());
    Arc::new(limiter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_sharing_redis_admit_the_quota_once_between_them() {
    let Some(url) = redis_url("two_nodes_sharing_redis_admit_the_quota_once_between_them") else {
        return;
    };
    let options = options("two-nodes");
    let nodes = [connect(&url, &options).await, connect(&url, &options).await];
    let q = quota("100/minute");

    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move { node.check("shared-key", &q, 1).await.allowed })
        })
        .collect();
    let mut admitted = 0u128;
    for task in tasks {
        admitted += u128::from(task.await.expect("task ran"));
    }
    let refilled = started.elapsed().as_nanos() / q.emission_interval().as_nanos();
    assert!(
        (100..=100 + refilled).contains(&admitted),
        "admitted {admitted}, refill allows {refilled}"
    );
    for node in &nodes {
        assert!(node.status().healthy, "a node fell back to local limits");
    }
}

#[tokio::test]
async fn redis_decisions_count_down_and_say_when_the_bucket_is_full_again() {
    let Some(url) = redis_url("redis_decisions_count_down_and_say_when_the_bucket_is_full_again")
    else {
        return;
    };
    let options = options("count-down");
    let limiter = connect(&url, &options).await;
    let q = quota("10/minute");

    for expected_remaining in (0..10).rev() {
        let d = limiter.check("k", &q, 1).await;
        assert!(d.allowed);
        assert_eq!(
            (d.limit, d.remaining, d.retry_after),
            (10, expected_remaining, None)
        );
    }
    let denied = limiter.check("k", &q, 1).await;
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    let retry = denied.retry_after.expect("a retry time");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(6),
        "{retry:?}"
    );
    assert!(
        denied.reset_after > Duration::from_secs(54)
            && denied.reset_after <= Duration::from_secs(60)
    );
    assert_eq!(denied.reset_after, retry + Duration::from_secs(54));

    // The TAT lives under the prefixed name, and expires when the bucket is full again.
    let client = redis::Client::open(url.as_str()).expect("valid URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let key = format!("{}k", options.key_prefix);
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!((54_000..=60_001).contains(&ttl_ms), "{ttl_ms}");

    // A cost beyond the limit is refused outright, and spends nothing.
    let huge = limiter.check("other", &q, 11).await;
    assert_eq!(
        (huge.allowed, huge.remaining, huge.retry_after),
        (false, 10, None)
    );
    assert!(limiter.check("other", &q, 10).await.allowed);
}

#[tokio::test]
async fn waiting_the_retry_after_that_redis_gave_is_enough() {
    let Some(url) = redis_url("waiting_the_retry_after_that_redis_gave_is_enough") else {
        return;
    };
    let limiter = connect(&url, &options("retry-after")).await;
    let q = quota("10/second");
    assert!(limiter.check("k", &q, 10).await.allowed);
    let denied = limiter.check("k", &q, 3).await;
    assert!(!denied.allowed);
    let retry = denied.retry_after.expect("a retry time");
    assert!(retry <= Duration::from_millis(300), "{retry:?}");
    tokio::time::sleep(retry).await;
    assert!(limiter.check("k", &q, 3).await.allowed);
}

#[tokio::test]
async fn a_limiter_whose_redis_is_down_still_answers_from_local_limits() {
    let started = Instant::now();
    let limiter = RedisLimiter::connect("redis://127.0.0.1:1")
        .await
        .expect("a valid URL is accepted even when nothing listens");
    assert!(started.elapsed() < Duration::from_secs(2));
    let status = limiter.status();
    assert_eq!((status.backend, status.healthy), ("redis", false));
    assert!(status.detail.is_some_and(|d| d.contains("per node")));

    let q = quota("100/minute");
    let mut admitted = 0;
    for _ in 0..150 {
        admitted += u32::from(limiter.check("k", &q, 1).await.allowed);
    }
    assert_eq!(admitted, 100);
    assert!(!limiter.status().healthy);
}

#[tokio::test]
async fn a_malformed_redis_url_is_an_error() {
    for url in [
        "",
        "not a url",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:6379/notadb",
    ] {
        assert!(RedisLimiter::connect(url).await.is_err(), "{url:?}");
    }
}

/// A TCP proxy in front of Redis that can cut every connection and refuse new ones, to play an
/// outage without touching the real server.
struct Proxy {
    url: String,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("address"));
        let (up, watch_up) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*watch_up.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                let mut watch_up = watch_up.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch_up.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Proxy { url, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_limiter_falls_back_during_an_outage_and_returns_to_redis_by_itself() {
    let Some(url) =
        redis_url("a_limiter_falls_back_during_an_outage_and_returns_to_redis_by_itself")
    else {
        return;
    };
    if !url.starts_with("redis://") || url.contains('@') {
        eprintln!("SKIPPED: the outage test needs a plain redis://host:port URL");
        return;
    }
    let proxy = Proxy::start(&url).await;
    let options = RedisLimiterOptions {
        retry_interval: Duration::from_millis(100),
        ..options("outage")
    };
    let node = connect(&proxy.url, &options).await;
    let witness = connect(&url, &options).await;
    let q = quota("5/minute");

    proxy.set_up(false);
    eventually("the node notices the outage", async || {
        // Checks keep answering throughout, from local limits once Redis is gone.
        node.check("meanwhile", &q, 1).await;
        !node.status().healthy
    })
    .await;
    assert!(
        node.check("during", &q, 5).await.allowed,
        "local limits start fresh"
    );
    assert!(!node.check("during", &q, 1).await.allowed, "and are exact");
    let detail = node.status().detail.unwrap_or_default();
    assert!(detail.contains("Redis unreachable"), "{detail}");

    proxy.set_up(true);
    eventually("the node is back on Redis", async || node.status().healthy).await;
    // Back on Redis: what the node spends, the other node sees.
    assert!(node.check("after", &q, 5).await.allowed);
    assert!(!witness.check("after", &q, 1).await.allowed);
}
