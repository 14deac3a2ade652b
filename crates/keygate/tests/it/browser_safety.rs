//! What a browser and the open internet see: CORS closed unless configured (and never with
//! credentials), security headers on every answer, no server banner, idle connections closed
//! and a cap on connections served at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

async fn preflight(srv: &TestServer, origin: &str) -> reqwest::Response {
    srv.client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/auth/api-keys", srv.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight")
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("server");
    let r = preflight(&srv, "https://evil.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let acme = srv.account("Acme").await;
    let r = srv
        .client
        .get(format!("{}/api/v1/auth/me", srv.base))
        .bearer_auth(&acme.key)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn cors_admits_the_configured_origins_only_and_never_credentials() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.cors_allowed_origins = vec!["https://app.example".into()];
    })
    .await
    .expect("server");
    let r = preflight(&srv, "https://evil.example").await;
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "a preflight from an unlisted origin gets no Access-Control-Allow-Origin"
    );
    let r = preflight(&srv, "https://app.example").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let acme = srv.account("Acme").await;
    let r = srv
        .client
        .get(format!("{}/api/v1/auth/me", srv.base))
        .bearer_auth(&acme.key)
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-ratelimit-remaining"), "{exposed}");
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_banner() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("server");
    for path in [
        "/healthz",
        "/api/v1/auth/me",
        "/no/such/route",
        "/v2/accounts/x",
    ] {
        let r = srv
            .client
            .get(format!("{}{path}", srv.base))
            .send()
            .await
            .expect("request");
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(h.get("server").is_none(), "{path}: no banner");
        assert!(
            h.get("strict-transport-security").is_none(),
            "{path}: no HSTS over plain HTTP"
        );
    }
    srv.shutdown().await;
}

/// Sends one keep-alive HTTP/1.1 request on `stream` and reads its whole answer.
async fn one_request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return head.to_owned();
            }
        }
    }
}

/// Reads until the server closes `stream`, which it must do within 5 s.
async fn assert_closed_by_the_server(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: not closed within 5 s"));
    assert_eq!(read.expect("read"), 0, "{what}: closed by the server");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.idle_timeout = Duration::from_millis(500);
    })
    .await
    .expect("server");
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    assert!(one_request(&mut stream).await.starts_with("HTTP/1.1 200"));
    assert_closed_by_the_server(&mut stream, "the idle connection").await;
    srv.shutdown().await;
}

/// A client that sends part of a request head and then nothing (slowloris) holds no request:
/// its connection is idle and closed like any other, whether it answered a request before or
/// not.
#[tokio::test]
async fn a_connection_left_halfway_through_a_request_head_is_closed_after_the_idle_timeout() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.idle_timeout = Duration::from_millis(500);
    })
    .await
    .expect("server");
    let addr = srv.base.trim_start_matches("http://").to_owned();
    for answered_one_first in [false, true] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        if answered_one_first {
            assert!(one_request(&mut stream).await.starts_with("HTTP/1.1 200"));
        }
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate.test\r\nX-Slow: ")
            .await
            .expect("write");
        let why = format!("a half-sent head (after a request: {answered_one_first})");
        assert_closed_by_the_server(&mut stream, &why).await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.max_connections = 1)
        .await
        .expect("server");
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut first = TcpStream::connect(&addr).await.expect("connect");
    assert!(one_request(&mut first).await.starts_with("HTTP/1.1 200"));
    let url = format!("{}/healthz", srv.base);
    let waiting = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection is not served while the first is open"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once the first closed")
        .expect("task")
        .expect("request");
    assert_eq!(status, 200);
    srv.shutdown().await;
}
