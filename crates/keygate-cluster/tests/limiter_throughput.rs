//! Single-threaded throughput of the limiters, for reports rather than for CI:
//! `cargo test --release -p keygate-cluster --test limiter_throughput -- --ignored --nocapture`
//! (with `KEYGATE_TEST_REDIS_URL` set to include Redis).

use std::time::{Duration, Instant};

use keygate_cluster::{LocalLimiter, Quota, RateLimiter, RedisLimiter, RedisLimiterOptions};

fn quota() -> Quota {
    Quota::parse("1000000/second").expect("a valid quota")
}

/// Runs sequential checks over `keys` distinct keys for about `budget`, returns checks/s.
async fn sequential(limiter: &dyn RateLimiter, keys: &[String], budget: Duration) -> f64 {
    let q = quota();
    let started = Instant::now();
    let mut checks = 0u64;
    while started.elapsed() < budget {
        for key in keys.iter().take(1000) {
            std::hint::black_box(limiter.check(key, &q, 1).await);
        }
        checks += keys.len().min(1000) as u64;
    }
    checks as f64 / started.elapsed().as_secs_f64()
}

/// `in_flight` checks at a time on one thread, to show what pipelining on one connection gives.
async fn pipelined(limiter: &RedisLimiter, keys: &[String], in_flight: usize) -> f64 {
    let q = quota();
    let started = Instant::now();
    let mut checks = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let batch = keys
            .iter()
            .cycle()
            .take(in_flight)
            .map(|key| limiter.check(key, &q, 1));
        for decision in futures_join_all(batch).await {
            std::hint::black_box(decision);
        }
        checks += in_flight as u64;
    }
    checks as f64 / started.elapsed().as_secs_f64()
}

/// Polls all futures on the current task until all are done (`join_all` without `futures`).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a benchmark: run with --ignored --nocapture, preferably in --release"]
async fn limiter_throughput_single_threaded() {
    let keys: Vec<String> = (0..1000).map(|i| format!("bench-key-{i}")).collect();

    let local = LocalLimiter::new();
    sequential(&local, &keys, Duration::from_millis(200)).await;
    let rate = sequential(&local, &keys, Duration::from_secs(2)).await;
    println!("LocalLimiter: {rate:.0} checks/s (sequential, one thread, 1000 keys)");

    let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        println!("RedisLimiter: SKIPPED (KEYGATE_TEST_REDIS_URL is not set)");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let options = RedisLimiterOptions {
        key_prefix: format!("keygate:bench:{nanos}:"),
        ..RedisLimiterOptions::default()
    };
    let redis = RedisLimiter::connect_with(&url, options)
        .await
        .expect("a valid URL");
    assert!(redis.status().healthy, "{:?}", redis.status());
    sequential(&redis, &keys, Duration::from_millis(200)).await;
    let rate = sequential(&redis, &keys, Duration::from_secs(2)).await;
    println!("RedisLimiter: {rate:.0} checks/s (sequential, one thread, one round trip each)");
    let rate = pipelined(&redis, &keys, 64).await;
    println!("RedisLimiter: {rate:.0} checks/s (64 in flight on one thread and one connection)");
    assert!(
        redis.status().healthy,
        "Redis timed out during the benchmark"
    );
}
