//! The gateway in front of a real upstream: scopes, identity headers, stripped credentials,
//! streaming, hop-by-hop headers, 502/504, costs, and revocation seen by a gateway node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::routing::any;
use keygate_server::gateway::{GatewayConfig, RouteRule};
use reqwest::Method;
use serde_json::json;

use crate::harness::{Backend, TestServer};

/// An upstream that records the headers it received and echoes the body back.
#[derive(Clone, Default)]
pub(crate) struct Upstream {
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Upstream {
    /// The fields of the last request the upstream received.
    fn last_seen(&self) -> HeaderMap {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }
}

pub(crate) async fn start_upstream() -> (String, Upstream) {
    let upstream = Upstream::default();
    let seen = upstream.seen.clone();
    let app = axum::Router::new()
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .fallback(any(move |req: Request| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(req.headers().clone());
                let (parts, body) = req.into_parts();
                let bytes: Bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
                axum::response::Response::builder()
                    .header("x-upstream-path", parts.uri.to_string())
                    .header("x-upstream-length", bytes.len().to_string())
                    .header("connection", "x-internal")
                    .header("x-internal", "do-not-leak")
                    .body(Body::from(bytes))
                    .expect("response")
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream") });
    (format!("http://{addr}"), upstream)
}

/// A gateway node on the test server's database.
async fn start_gateway(
    srv: &TestServer,
    upstream: &str,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> String {
    let mut cfg = GatewayConfig::new(upstream.parse().expect("uri"));
    cfg.timeout = Duration::from_secs(1);
    adjust(&mut cfg);
    let node = srv.another_node().await;
    let app = keygate_server::gateway::router(node.state.clone(), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = keygate_server::start_with(node.state.clone(), listener, app).expect("gateway");
    let base = format!("http://{}", running.addr);
    // The gateway lives as long as the test: leak its handle rather than stop it early.
    std::mem::forget(running);
    std::mem::forget(node);
    base
}

async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> crate::harness::Resp {
    let mut req = client.request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    TestServer::read(req.send().await.expect("send")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_applies_scopes_strips_the_credential_and_adds_identity_and_limit_headers() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (up, upstream) = start_upstream().await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    let acme = srv.account("Acme").await;
    let (reader, reader_id) = srv
        .create_key(&acme.key, json!({"name": "ro", "scope": "read"}))
        .await;
    let (writer, _) = srv
        .create_key(&acme.key, json!({"name": "rw", "scope": "write"}))
        .await;
    let c = reqwest::Client::new();

    let r = call(
        &c,
        Method::GET,
        &format!("{gw}/api/posts?page=2"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-upstream-path"), Some("/api/posts?page=2"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    assert!(r.header("x-ratelimit-reset").is_some());
    assert!(
        r.header("x-internal").is_none(),
        "a header the upstream's Connection names is hop-by-hop"
    );
    let seen = upstream.last_seen();
    assert!(
        seen.get("authorization").is_none(),
        "the credential is stripped"
    );
    assert_eq!(seen["x-keygate-account-id"], acme.id.as_str());
    assert_eq!(seen["x-keygate-key-id"], reader_id.as_str());
    assert_eq!(seen["x-keygate-scope"], "read");
    assert!(seen.get("x-forwarded-for").is_some());

    let r = call(
        &c,
        Method::POST,
        &format!("{gw}/api/posts"),
        Some(&reader),
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "forbidden");
    assert!(
        r.header("x-ratelimit-remaining").is_some(),
        "a refused call still shows the limit"
    );
    let r = call(
        &c,
        Method::POST,
        &format!("{gw}/api/posts"),
        Some(&writer),
        Some(b"{\"caption\":\"hi\"}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["caption"], "hi",
        "the body reached the upstream and came back"
    );

    let r = call(&c, Method::GET, &format!("{gw}/api/posts"), None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");
    // X-API-Key and X-Auth-Token work, and are stripped too.
    let (token, _) = srv.api_auth(&reader).await;
    for (h, v) in [
        ("x-api-key", reader.as_str()),
        ("x-auth-token", token.as_str()),
    ] {
        let r = c
            .get(format!("{gw}/api/posts"))
            .header(h, v)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{h}");
        let seen = upstream.last_seen();
        assert!(seen.get(h).is_none(), "{h} is stripped");
    }
    // A spoofed identity header from the client is replaced.
    let r = c
        .get(format!("{gw}/x"))
        .bearer_auth(&reader)
        .header("x-keygate-scope", "admin")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        upstream.seen.lock().expect("lock").last().expect("request")["x-keygate-scope"],
        "read"
    );
    // The client's X-Forwarded-For is extended and its X-Request-Id carried on: each reaches
    // the upstream once, as the gateway wrote it. A new connection: the one above has sent
    // bodies, which moved its upstream connection to hyper's client; a bodiless request on a
    // fresh one goes by the gateway's own.
    let r = reqwest::Client::new()
        .get(format!("{gw}/x"))
        .bearer_auth(&reader)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-request-id", "client-req-1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "client-req-1");
    let seen = upstream.last_seen();
    let all = |name: &str| -> Vec<String> {
        seen.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text").to_owned())
            .collect()
    };
    assert_eq!(all("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(all("x-request-id"), ["client-req-1"]);
    assert_eq!(all("x-keygate-key-id"), [reader_id.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_stream_through_whole_beyond_the_api_limit() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (up, _) = start_upstream().await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    let acme = srv.account("Acme").await;
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = reqwest::Client::new()
        .put(format!("{gw}/upload"))
        .bearer_auth(&acme.key)
        .body(big.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-upstream-length"],
        big.len().to_string().as_str()
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), big.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_or_slow_gets_502_or_504_with_the_error_body() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await;
    let c = reqwest::Client::new();
    let down = start_gateway(&srv, "http://127.0.0.1:1", |_| {}).await;
    let r = call(
        &c,
        Method::GET,
        &format!("{down}/api/posts"),
        Some(&acme.key),
        None,
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "bad_gateway");
    assert!(
        r.header("x-ratelimit-limit").is_some(),
        "rate-limit headers on every answer"
    );
    let (up, _) = start_upstream().await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    let r = call(
        &c,
        Method::GET,
        &format!("{gw}/slow"),
        Some(&acme.key),
        None,
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.error_code(), "gateway_timeout");
}

/// A bare HTTP/1.1 upstream that counts the connections it accepts. It answers every request
/// (bodiless) with `ok`; with `close`, it says `Connection: close` and closes after answering.
async fn counting_upstream(close: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let head = if close { "connection: close\r\n" } else { "" };
                        let answer =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{head}\r\nok");
                        if stream.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

/// Sends `count` GETs one after the other on one client connection (written by hand: a pooling
/// client may open a second connection while its first is being handed back to its pool), and
/// returns each answer's status.
async fn statuses_on_one_connection(gateway: &str, key: &str, count: usize) -> Vec<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut statuses = Vec::new();
    let mut buf = Vec::new();
    for i in 0..count {
        let request = format!(
            "GET /api/posts/{i} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        // Read the head, then as many body bytes as its Content-Length says.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the gateway closed the connection after {i} answers");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head[9..12].parse().expect("status");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("length"))
            .expect("a content-length");
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the body was cut");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + length);
        statuses.push(status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_keeps_one_upstream_connection_and_a_closed_one_is_replaced() {
    use std::sync::atomic::Ordering;
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await;
    let (up, accepted) = counting_upstream(false).await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    assert_eq!(
        statuses_on_one_connection(&gw, &acme.key, 5).await,
        [200; 5]
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the client connection's requests share one upstream connection"
    );

    let (up, accepted) = counting_upstream(true).await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    assert_eq!(
        statuses_on_one_connection(&gw, &acme.key, 3).await,
        [200; 3],
        "each request after the upstream closed its connection"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a connection the upstream closed is replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_routes_change_the_scope_and_charge_credits() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        crate::harness::with_plan(c, "metered", "1000/minute", Some(10))
    })
    .await
    .expect("sqlite");
    let (up, _) = start_upstream().await;
    let gw = start_gateway(&srv, &up, |cfg| {
        cfg.admin_prefixes.push("/api/settings".into());
        cfg.routes.push(RouteRule {
            prefix: "/api/images/generate".into(),
            methods: None,
            scope: None,
            cost: 4,
        });
    })
    .await;
    let acme = srv.account_on_plan("Acme", Some("metered")).await;
    let (writer, _) = srv
        .create_key(&acme.key, json!({"name": "rw", "scope": "write"}))
        .await;
    let c = reqwest::Client::new();
    let r = call(
        &c,
        Method::GET,
        &format!("{gw}/api/settings/billing"),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "admin prefixes need admin");
    assert_eq!(
        call(
            &c,
            Method::GET,
            &format!("{gw}/api/settings/billing"),
            Some(&acme.key),
            None
        )
        .await
        .status,
        200
    );
    for _ in 0..2 {
        assert_eq!(
            call(
                &c,
                Method::POST,
                &format!("{gw}/api/images/generate"),
                Some(&writer),
                None
            )
            .await
            .status,
            200
        );
    }
    let r = call(
        &c,
        Method::POST,
        &format!("{gw}/api/images/generate"),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(r.status, 402);
    assert_eq!(r.body["error"]["details"]["credits_available"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_the_server_is_refused_by_the_gateway_within_a_second() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (up, _) = start_upstream().await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    let acme = srv.account("Acme").await;
    let (k, id) = srv
        .create_key(&acme.key, json!({"name": "soon gone"}))
        .await;
    let c = reqwest::Client::new();
    assert_eq!(
        call(&c, Method::GET, &format!("{gw}/a"), Some(&k), None)
            .await
            .status,
        200
    );
    srv.send(
        Method::DELETE,
        &format!("/api/v1/auth/api-keys/{id}"),
        Some(&acme.key),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        let status = call(&c, Method::GET, &format!("{gw}/a"), Some(&k), None)
            .await
            .status;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the gateway still accepts the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_a_key_revoked_on_one_process_is_refused_by_another_and_by_a_gateway_within_a_second(
) {
    let (Some(pg), Ok(redis)) = (
        crate::harness::postgres_base_url(),
        std::env::var("KEYGATE_TEST_REDIS_URL"),
    ) else {
        eprintln!("SKIPPED: cross-process revocation over PostgreSQL + Redis (needs KEYGATE_TEST_DATABASE_URL and KEYGATE_TEST_REDIS_URL)");
        return;
    };
    let db = keygate_store_sql::testing::fresh_postgres_database(&pg).await;
    let dir = crate::harness::temp_dir("revocation");
    let cfg = crate::harness::cluster_config(&dir);
    let node_args = |name: &str| {
        vec![
            "--config".to_owned(),
            cfg.clone(),
            "--database-url".to_owned(),
            db.clone(),
            "--redis-url".to_owned(),
            redis.clone(),
            "--data-dir".to_owned(),
            dir.join(name).display().to_string(),
        ]
    };
    let as_str = |v: &Vec<String>| v.iter().map(String::clone).collect::<Vec<_>>();
    let a_args = as_str(&node_args("a"));
    let b_args = as_str(&node_args("b"));
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
    let (up, _) = start_upstream().await;
    let gw_port = crate::cli::free_port();
    let gw_log = std::fs::File::create(dir.join("gw.log")).expect("log");
    let mut gw = crate::cli::bin()
        .args([
            "gateway",
            "--upstream",
            &up,
            "--listen",
            &format!("127.0.0.1:{gw_port}"),
        ])
        .args(node_args("gw"))
        .stderr(gw_log)
        .spawn()
        .expect("spawn gateway");
    let gw_base = format!("http://127.0.0.1:{gw_port}");
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
        &dir.join("a").display().to_string(),
    ]);
    let admin = created["api_key"].as_str().expect("key").to_owned();
    let c = reqwest::Client::new();
    let r: serde_json::Value = c
        .post(format!("{}/api/v1/auth/api-keys", a.base))
        .bearer_auth(&admin)
        .json(&json!({"name": "victim"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let (victim, victim_id) = (
        r["key"].as_str().expect("key").to_owned(),
        r["id"].as_str().expect("id").to_owned(),
    );
    // Warm both caches with the key.
    let started = std::time::Instant::now();
    loop {
        let gw_ok = c
            .get(format!("{gw_base}/x"))
            .bearer_auth(&victim)
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false);
        let b_ok = c
            .get(format!("{}/api/v1/auth/me", b.base))
            .bearer_auth(&victim)
            .send()
            .await
            .expect("send")
            .status()
            == 200;
        if gw_ok && b_ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .delete(format!("{}/api/v1/auth/api-keys/{victim_id}", a.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let revoked_at = std::time::Instant::now();
    let (mut b_at, mut gw_at) = (None, None);
    while b_at.is_none() || gw_at.is_none() {
        if b_at.is_none()
            && c.get(format!("{}/api/v1/auth/me", b.base))
                .bearer_auth(&victim)
                .send()
                .await
                .expect("send")
                .status()
                == 401
        {
            b_at = Some(revoked_at.elapsed());
        }
        if gw_at.is_none()
            && c.get(format!("{gw_base}/x"))
                .bearer_auth(&victim)
                .send()
                .await
                .expect("send")
                .status()
                == 401
        {
            gw_at = Some(revoked_at.elapsed());
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "after 1 s: node B refused at {b_at:?}, the gateway at {gw_at:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("revocation seen by node B after {b_at:?}, by the gateway after {gw_at:?}");
    let _ = gw.kill();
    let _ = gw.wait();
    drop((a, b));
    keygate_store_sql::testing::drop_postgres_database(&pg, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_a_base_path_gets_it_in_front_of_every_path() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (up, _) = start_upstream().await;
    let plain = start_gateway(&srv, &up, |_| {}).await;
    let based = start_gateway(&srv, &format!("{up}/v2/"), |_| {}).await;
    let acme = srv.account("Acme").await;
    let c = reqwest::Client::new();
    for (gw, path, seen) in [
        (
            &plain,
            "/api/posts?page=2&q=a%20b",
            "/api/posts?page=2&q=a%20b",
        ),
        (&plain, "/", "/"),
        (&based, "/api/posts?page=2", "/v2/api/posts?page=2"),
        (&based, "/api/posts", "/v2/api/posts"),
        (&based, "/", "/v2/"),
    ] {
        let r = call(
            &c,
            Method::GET,
            &format!("{gw}{path}"),
            Some(&acme.key),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("x-upstream-path"), Some(seen), "{path}");
    }
}

/// A hand-written HTTP/1.1 upstream that answers each request by its path, in the ways a real
/// upstream may: chunked with trailers, written in pieces; a 1xx before the answer; 204 and 304;
/// a body that ends with the connection; HTTP/1.0; an idle connection closed without notice; a
/// cut body; garbage. It counts the connections it accepts.
async fn scripted_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let mut line = head.split(' ');
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let pieces: Vec<&[u8]> = match (method, path) {
                        (_, "/chunked") => vec![
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhel",
                            b"lo\r\n6;ext=1\r\n world\r",
                            b"\n0\r\nx-checksum: 11\r\n\r\n",
                        ],
                        (_, "/early-hints") => vec![
                            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n",
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
                        ],
                        (_, "/no-content") => vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
                        (_, "/not-modified") => {
                            vec![b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n"]
                        }
                        ("HEAD", "/head") => {
                            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"]
                        }
                        (_, "/until-close") => vec![b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it"],
                        (_, "/http10") => vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"],
                        (_, "/idle-close") => {
                            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbye."]
                        }
                        (_, "/cut") => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort"],
                        _ => vec![b"NOT HTTP AT ALL\r\n\r\n"],
                    };
                    for piece in pieces {
                        if stream.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let ends = ["/until-close", "/http10", "/cut", "/garbage"];
                    if path == "/idle-close" {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if ends.contains(&path) || path == "/idle-close" {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

/// One client connection to the gateway, by hyper's HTTP/1.1 client: its requests go one after
/// the other on it, so the upstream connections the gateway opens for it can be counted.
struct OneConnection {
    sender: hyper::client::conn::http1::SendRequest<String>,
    key: String,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Result<Bytes, String>,
    trailers: Option<HeaderMap>,
}

impl OneConnection {
    async fn open(gateway: &str, key: &str) -> Self {
        let io = tokio::net::TcpStream::connect(gateway.trim_start_matches("http://"))
            .await
            .expect("connect");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        OneConnection {
            sender,
            key: key.to_owned(),
        }
    }

    async fn send(&mut self, method: &str, path: &str) -> Answer {
        use http_body_util::BodyExt;
        self.sender.ready().await.expect("the connection is open");
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gateway")
            .header("authorization", format!("Bearer {}", self.key))
            .header("te", "trailers")
            .body(String::new())
            .expect("request");
        let res = self.sender.send_request(req).await.expect("an answer");
        let (parts, body) = res.into_parts();
        let (body, trailers) = match body.collect().await {
            Ok(c) => {
                let trailers = c.trailers().cloned();
                (Ok(c.to_bytes()), trailers)
            }
            Err(e) => (Err(e.to_string()), None),
        };
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            trailers,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_an_upstream_may_frame_its_answer_reaches_the_client_intact() {
    use std::sync::atomic::Ordering;
    let srv = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let acme = srv.account("Acme").await;
    let (up, accepted) = scripted_upstream().await;
    let gw = start_gateway(&srv, &up, |_| {}).await;
    let mut client = OneConnection::open(&gw, &acme.key).await;

    let a = client.send("GET", "/chunked").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.as_deref(), Ok(&b"hello world"[..]));
    assert!(a
        .headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked"));
    assert_eq!(
        a.trailers.as_ref().and_then(|t| t.get("x-checksum")),
        Some(&axum::http::HeaderValue::from_static("11")),
        "trailers are passed on"
    );
    assert!(a.headers.contains_key("x-ratelimit-limit"));

    let a = client.send("GET", "/early-hints").await;
    assert_eq!(a.status, 200, "the 1xx is skipped");
    assert_eq!(a.body.as_deref(), Ok(&b"final"[..]));
    assert!(!a.headers.contains_key("link"));

    let a = client.send("GET", "/no-content").await;
    assert_eq!(a.status, 204);
    assert_eq!(a.body.as_deref(), Ok(&b""[..]));
    let a = client.send("GET", "/not-modified").await;
    assert_eq!(a.status, 304);
    assert_eq!(a.headers["etag"], "\"v1\"");
    let a = client.send("HEAD", "/head").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-length"], "1234", "HEAD keeps the length");
    assert_eq!(a.body.as_deref(), Ok(&b""[..]));
    let a = client.send("GET", "/chunked").await;
    assert_eq!(a.body.as_deref(), Ok(&b"hello world"[..]));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "all of these answers left the upstream connection usable, and it was used again"
    );

    // Closed by the upstream while idle, without a word: noticed, and a new one opened.
    let a = client.send("GET", "/idle-close").await;
    assert_eq!(a.body.as_deref(), Ok(&b"bye."[..]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let a = client.send("GET", "/chunked").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.as_deref(), Ok(&b"hello world"[..]));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // A body that ends with the connection, and an HTTP/1.0 answer: passed on whole, and the
    // connection is not used again.
    let a = client.send("GET", "/until-close").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.as_deref(), Ok(&b"all of it"[..]));
    let a = client.send("GET", "/http10").await;
    assert_eq!(a.body.as_deref(), Ok(&b"ok"[..]));
    let a = client.send("GET", "/chunked").await;
    assert_eq!(a.body.as_deref(), Ok(&b"hello world"[..]));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "the second connection carried the body that ended with it, a third the HTTP/1.0 answer"
    );

    // Garbage is a 502 with the error body; a cut body cuts the client's answer short rather
    // than pass it off as whole.
    let c = reqwest::Client::new();
    let r = call(
        &c,
        Method::GET,
        &format!("{gw}/garbage"),
        Some(&acme.key),
        None,
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "bad_gateway");
    let a = OneConnection::open(&gw, &acme.key)
        .await
        .send("GET", "/cut")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-length"], "100");
    assert!(
        a.body.is_err(),
        "the client sees the answer cut: {:?}",
        a.body
    );
}
