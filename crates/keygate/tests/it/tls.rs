//! HTTPS and the client's address: the built-in TLS (a self-signed certificate trusted
//! explicitly by the client, HTTP/2 and HTTP/1.1, certificates reloaded in place), and the
//! forwarded headers believed only from trusted proxies.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate_server::tls::TlsSource;
use reqwest::Method;
use serde_json::json;

use crate::harness::*;
use crate::on_both_backends;

/// One HTTPS connection to `localhost` at `addr` that trusts exactly the certificate in
/// `cert` and offers HTTP/2 (or only HTTP/1.1). Requests reuse it until it is dropped.
pub struct HttpsConn {
    send: Sender,
    authority: String,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

pub struct HttpsResp {
    pub status: u16,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
}

impl HttpsConn {
    pub async fn connect(cert: &Path, http2: bool, addr: SocketAddr) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(certs) = CertificateDer::pem_file_iter(cert) {
            for c in certs {
                roots.add(c.expect("certificate")).expect("root");
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let send = if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(send)
        };
        Ok(HttpsConn {
            send,
            authority: format!("localhost:{}", addr.port()),
        })
    }

    pub async fn get(&mut self, path: &str, bearer: Option<&str>) -> Result<HttpsResp, String> {
        let mut req = hyper::Request::get(format!("https://{}{path}", self.authority))
            .header("host", &self.authority);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let req = req.body(Body::empty()).expect("request");
        let resp = match &mut self.send {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        axum::body::to_bytes(Body::new(body), 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        Ok(HttpsResp {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
        })
    }
}

/// A GET on a new connection.
async fn https_get(
    cert: &Path,
    http2: bool,
    addr: SocketAddr,
    path: &str,
) -> Result<HttpsResp, String> {
    HttpsConn::connect(cert, http2, addr)
        .await?
        .get(path, None)
        .await
}

fn addr_of(srv: &TestServer) -> SocketAddr {
    srv.base
        .rsplit("//")
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address")
}

#[tokio::test]
async fn https_works_with_the_self_signed_certificate_over_http2_and_http1() {
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.tls = Some(TlsSource::SelfSigned))
        .await
        .expect("server");
    let addr = addr_of(&srv);
    let (cert, key) = keygate_server::tls::self_signed_paths(&srv.data_dir);
    assert!(cert.exists() && key.exists(), "made in the data dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the private key is its owner's only");
    }
    let acme = srv.account("Acme").await;
    let mut h2 = HttpsConn::connect(&cert, true, addr)
        .await
        .expect("trusted HTTPS");
    let r = h2
        .get("/api/v1/auth/me", Some(&acme.key))
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.version, hyper::Version::HTTP_2, "ALPN chose HTTP/2");
    assert_eq!(
        r.headers["strict-transport-security"], "max-age=31536000",
        "HSTS over HTTPS"
    );
    assert!(r.headers.get("server").is_none());

    let r = https_get(&cert, false, addr, "/healthz")
        .await
        .expect("HTTPS/1.1");
    assert_eq!(r.status, 200);
    assert_eq!(r.version, hyper::Version::HTTP_11);

    assert!(
        https_get(&srv.data_dir.join("no-such.pem"), true, addr, "/healthz")
            .await
            .is_err(),
        "a client that does not trust the certificate cannot connect"
    );
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err(),
        "plain HTTP is not served on the TLS port"
    );

    // A second start reuses the certificate rather than making a new one.
    let pem = std::fs::read_to_string(&cert).expect("cert");
    let again =
        keygate_server::tls::resolve_files(&TlsSource::SelfSigned, &srv.data_dir).expect("resolve");
    assert_eq!(again.0, cert);
    assert_eq!(std::fs::read_to_string(&cert).expect("cert"), pem);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_changed_certificate_is_served_to_new_connections_without_dropping_open_ones() {
    let dir = temp_dir("certs");
    let (first_cert, first_key) =
        keygate_server::tls::resolve_files(&TlsSource::SelfSigned, &dir.join("first"))
            .expect("first certificate");
    let (second_cert, second_key) =
        keygate_server::tls::resolve_files(&TlsSource::SelfSigned, &dir.join("second"))
            .expect("second certificate");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(&first_cert, &cert).expect("copy");
    std::fs::copy(&first_key, &key).expect("copy");
    let files = TlsSource::Files {
        cert: cert.clone(),
        key: key.clone(),
    };
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.tls = Some(files))
        .await
        .expect("server");
    let addr = addr_of(&srv);
    let mut old_conn = HttpsConn::connect(&first_cert, true, addr)
        .await
        .expect("first");
    assert_eq!(
        old_conn.get("/healthz", None).await.expect("first").status,
        200
    );

    std::fs::copy(&second_key, &key).expect("replace key");
    std::fs::copy(&second_cert, &cert).expect("replace cert");
    let started = Instant::now();
    loop {
        if let Ok(r) = https_get(&second_cert, true, addr, "/healthz").await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        old_conn
            .get("/healthz", None)
            .await
            .expect("the open connection is kept")
            .status,
        200,
        "a connection made with the old certificate goes on working"
    );
    assert!(
        https_get(&first_cert, true, addr, "/healthz")
            .await
            .is_err(),
        "a new handshake gets the new certificate"
    );
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The `client_addr` of the newest audit entry of `account` with this action.
async fn audited_addr(srv: &TestServer, key: &str, action: &str) -> String {
    let entries = srv
        .get_ok(&format!("/api/v1/audit-log?action={action}"), key)
        .await;
    entries[0]["client_addr"]
        .as_str()
        .expect("client_addr")
        .to_owned()
}

async fn create_key_from(srv: &TestServer, key: &str, forwarded_for: &str) -> reqwest::StatusCode {
    srv.client
        .post(format!("{}/api/v1/auth/api-keys", srv.base))
        .bearer_auth(key)
        .header("x-forwarded-for", forwarded_for)
        .header("x-forwarded-proto", "https")
        .json(&json!({"name": "from a proxy"}))
        .send()
        .await
        .expect("request")
        .status()
}

async fn failed_auth_from(srv: &TestServer, forwarded_for: &str) -> u16 {
    srv.client
        .get(format!("{}/api/v1/auth/me", srv.base))
        .bearer_auth("ak_live_0000000000000000000000000000000000000000")
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

on_both_backends! {
    async fn a_forwarded_address_is_believed_from_a_trusted_proxy_only(srv) {
        // This server trusts no proxy: the headers are the client's own words.
        let backend = srv.backend;
        let acme = srv.account("Acme").await;
        assert_eq!(create_key_from(&srv, &acme.key, "203.0.113.9").await, 201);
        assert_eq!(audited_addr(&srv, &acme.key, "key.created").await, "127.0.0.1");
        let r = srv
            .client
            .get(format!("{}/healthz", srv.base))
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .expect("request");
        assert!(r.headers().get("strict-transport-security").is_none(), "not believed: no HSTS");
        srv.shutdown().await;

        let proxied = TestServer::start_with(backend, |c| {
            c.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
            c.auth_failure_limit = quota("2/minute");
        })
        .await
        .expect("server");
        let acme = proxied.account("Acme").await;
        assert_eq!(create_key_from(&proxied, &acme.key, "198.51.100.1, 203.0.113.9").await, 201);
        assert_eq!(
            audited_addr(&proxied, &acme.key, "key.created").await,
            "203.0.113.9",
            "the right-most address the trusted proxy saw"
        );
        let r = proxied
            .client
            .get(format!("{}/healthz", proxied.base))
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .expect("request");
        assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
        // The failed-authentication limit counts the forwarded client, not the proxy.
        assert_eq!(failed_auth_from(&proxied, "203.0.113.50").await, 401);
        assert_eq!(failed_auth_from(&proxied, "203.0.113.50").await, 401);
        assert_eq!(failed_auth_from(&proxied, "203.0.113.50").await, 429);
        assert_eq!(failed_auth_from(&proxied, "203.0.113.51").await, 401, "another client is unaffected");
        proxied.shutdown().await;
    }

    async fn credentials_over_plain_http_can_be_refused(srv) {
        let backend = srv.backend;
        srv.shutdown().await;
        let strict = TestServer::start_with(backend, |c| {
            c.refuse_plaintext_credentials = true;
            c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
        })
        .await
        .expect("server");
        let acme = strict.account("Acme").await;
        let r = strict.get("/api/v1/auth/me", &acme.key).await;
        assert_eq!(r.status, 403);
        assert!(r.body["error"]["message"].as_str().expect("message").contains("HTTPS"));
        let r = strict
            .v2(Method::PUT, "/v2/api_auth", None, Some(json!({"data": {"api_key": acme.key}})))
            .await;
        assert_eq!(r.status, 403, "a credential in a Crossbar body too");
        assert_eq!(r.body["error"], "403");
        assert_eq!(strict.client.get(format!("{}/healthz", strict.base)).send().await.expect("healthz").status(), 200);
        let r = strict
            .client
            .get(format!("{}/api/v1/auth/me", strict.base))
            .bearer_auth(&acme.key)
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "HTTPS at the trusted proxy is HTTPS");
        strict.shutdown().await;
    }
}

#[tokio::test]
async fn the_gateway_serves_https_with_the_same_settings() {
    let srv = TestServer::start(Backend::Sqlite).await.expect("server");
    let node = srv
        .another_node_with(|c| c.tls = Some(TlsSource::SelfSigned))
        .await;
    let closed = crate::cli::free_port();
    let cfg = keygate_server::gateway::GatewayConfig::new(
        format!("http://127.0.0.1:{closed}").parse().expect("uri"),
    );
    let app = keygate_server::gateway::router(node.state.clone(), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway = keygate_server::start_with(node.state.clone(), listener, app).expect("gateway");
    let (cert, _) = keygate_server::tls::self_signed_paths(&srv.data_dir);
    let r = https_get(&cert, true, gateway.addr, "/anything")
        .await
        .expect("HTTPS to the gateway");
    assert_eq!(r.status, 401, "no credential");
    assert_eq!(r.version, hyper::Version::HTTP_2);
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
    gateway.shutdown().await.expect("gateway stops");
    node.shutdown().await;

    // With plaintext credentials refused, the gateway refuses them too.
    let strict = srv
        .another_node_with(|c| c.refuse_plaintext_credentials = true)
        .await;
    let cfg = keygate_server::gateway::GatewayConfig::new(
        format!("http://127.0.0.1:{closed}").parse().expect("uri"),
    );
    let app = keygate_server::gateway::router(strict.state.clone(), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway = keygate_server::start_with(strict.state.clone(), listener, app).expect("gateway");
    let acme = srv.account("Acme").await;
    let r = srv
        .client
        .get(format!("http://{}/anything", gateway.addr))
        .bearer_auth(&acme.key)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    gateway.shutdown().await.expect("gateway stops");
    strict.shutdown().await;
    srv.shutdown().await;
}
